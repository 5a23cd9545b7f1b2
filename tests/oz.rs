//! The Oz API Lite dialect over real HTTP: every biometry method in plain and base64 modes,
//! 1:N with 100 templates and with 20 images, liveness on an image, on an archive, on a video
//! the test encodes itself from a fixture photo (feature `video`), a zip bomb, and every error
//! code of the reference, each triggered by the case it names. Every score comes from the
//! models run on real photos (`../shared/fixtures/faces`, `../shared/datasets/nuaa-dev`).

mod common;

use std::io::Write;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use common::http::*;
use common::shared_dir;
use facegate::api::oz::{Oz, OzConfig};
use facegate::api::{ApiError, ErrorTable};
use facegate::engine::template::TEMPLATE_VERSION;
use facegate::engine::FaceTemplate;
use facegate::server::{RouteInfo, ServerHandle};
use facegate::Error;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

async fn server() -> ServerHandle {
    start_with_engine(config(|_| {}), Default::default(), engine_full()).await
}

fn live(name: &str) -> Vec<u8> {
    std::fs::read(shared_dir().join("datasets/nuaa-dev/live").join(name)).unwrap()
}

/// `n` nuaa-dev live crops of subject `subject`, by file name.
fn subject(subject: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(shared_dir().join("datasets/nuaa-dev/live"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(subject))
        .collect();
    names.sort();
    names
        .into_iter()
        .take(n)
        .map(|n| {
            let b = live(&n);
            (n, b)
        })
        .collect()
}

/// One part of a multipart body with an explicit Content-Type.
struct P<'a> {
    name: &'a str,
    file: Option<&'a str>,
    ctype: Option<&'a str>,
    data: Vec<u8>,
}

fn part<'a>(name: &'a str, file: Option<&'a str>, ctype: Option<&'a str>, data: &[u8]) -> P<'a> {
    P {
        name,
        file,
        ctype,
        data: data.to_vec(),
    }
}

fn form(parts: &[P]) -> (String, Bytes) {
    let boundary = "oz-test-boundary-7f3a";
    let mut body = Vec::new();
    for p in parts {
        let mut h = format!("Content-Disposition: form-data; name=\"{}\"", p.name);
        if let Some(f) = p.file {
            h.push_str(&format!("; filename=\"{f}\""));
        }
        if let Some(t) = p.ctype {
            h.push_str(&format!("\r\nContent-Type: {t}"));
        }
        body.extend_from_slice(format!("--{boundary}\r\n{h}\r\n\r\n").as_bytes());
        body.extend_from_slice(&p.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

async fn post_form(h: &ServerHandle, path: &str, parts: &[P<'_>], b64: bool) -> Answer {
    let (ct, body) = form(parts);
    let mut headers = vec![("content-type", ct.as_str())];
    if b64 {
        headers.push(("content-transfer-encoding", "base64"));
    }
    request(h, Method::POST, path, &headers, body).await
}

async fn post_body(h: &ServerHandle, path: &str, ctype: &str, body: &[u8], b64: bool) -> Answer {
    let mut headers = vec![("content-type", ctype)];
    if b64 {
        headers.push(("content-transfer-encoding", "base64"));
    }
    request(h, Method::POST, path, &headers, Bytes::from(body.to_vec())).await
}

/// Asserts an Oz error answer and returns its message.
fn oz_error(a: &Answer, status: u16, code: &str) -> String {
    let v = a.json();
    assert_eq!(
        (a.status.as_u16(), v["code"].as_str()),
        (status, Some(code)),
        "{v}"
    );
    assert_eq!(keys(&v), key_set(&["code", "message"]), "{v}");
    v["message"].as_str().unwrap().to_string()
}

/// `v` without its base64 images, for failure messages.
fn brief(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let x = if k == "image_b64" {
                        json!("...")
                    } else {
                        brief(x)
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(brief).collect()),
        x => x.clone(),
    }
}

fn b64(b: &[u8]) -> Vec<u8> {
    STANDARD.encode(b).into_bytes()
}

/// A uniform grey JPEG (no face).
fn blank_jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([128, 128, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in files {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// The template of the live fixture, extracted once.
async fn template_of(h: &ServerHandle, jpeg: &[u8]) -> Vec<u8> {
    let a = post_body(h, "/v1/face/pattern/extract", "image/jpeg", jpeg, false).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    a.body.to_vec()
}

/// `verify` of a sample (sent with `ctype`) against a template.
async fn verify(
    h: &ServerHandle,
    sample: &[u8],
    ctype: Option<&str>,
    t: &[u8],
    b64: bool,
) -> Answer {
    let parts = [
        part("sample", Some("s.jpg"), ctype, sample),
        part(
            "bio_template",
            Some("t"),
            Some("application/octet-stream"),
            t,
        ),
    ];
    post_form(h, "/v1/face/pattern/verify", &parts, b64).await
}

/// `compare` of two binary templates.
async fn compare(h: &ServerHandle, a: &[u8], b: &[u8]) -> Value {
    let oct = Some("application/octet-stream");
    let parts = [
        part("bio_feature", Some("a"), oct, a),
        part("bio_template", Some("b"), oct, b),
    ];
    post_form(h, "/v1/face/pattern/compare", &parts, false)
        .await
        .json()
}

fn t1() -> &'static Vec<u8> {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| fixture_bytes("image_T1.jpg"))
}

#[tokio::test]
async fn version_and_health_come_from_the_engine() {
    let h = server().await;
    let v = get(&h, "/oz/version").await.json();
    assert_eq!(keys(&v), key_set(&["core", "tfss", "models"]), "{v}");
    assert_eq!(v["core"], env!("CARGO_PKG_VERSION"));
    let models = v["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    for want in [
        "retinaface",
        "minifasnet-v2",
        "minifasnet-v1se",
        "face-descriptor",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    // Versions are the manifest's pinned packages.
    let retina = models.iter().find(|m| m["name"] == "retinaface").unwrap();
    assert!(
        retina["version"].as_str().unwrap().contains(' '),
        "{retina}"
    );
    for path in [
        "/v1/face/pattern/health",
        "/oz/v1/face/pattern/health",
        "/v1/face/liveness/health",
    ] {
        let v = get(&h, path).await.json();
        assert_eq!(v, json!({"status": 0, "message": ""}), "{path}");
    }
    h.shutdown();
}

#[tokio::test]
async fn biometry_without_the_descriptor_is_inoperative() {
    // The shared test engine without the descriptor: health says 3, methods BPE-001002.
    let h = start(config(|_| {}), Default::default()).await;
    let v = get(&h, "/v1/face/pattern/health").await.json();
    assert_eq!(v["status"], 3, "{v}");
    assert!(v["message"].as_str().unwrap().contains("descriptor"), "{v}");
    assert_eq!(
        get(&h, "/v1/face/liveness/health").await.json()["status"],
        0
    );
    let a = post_body(&h, "/v1/face/pattern/extract", "image/jpeg", t1(), false).await;
    oz_error(&a, 400, "BPE-001002");
    h.shutdown();
}

#[tokio::test]
async fn templates_are_extracted_and_compared_in_both_encodings() {
    let h = server().await;
    let t = template_of(&h, t1()).await;
    assert_eq!(&t[..4], b"FGTM");
    let parsed = FaceTemplate::from_bytes(&t, TEMPLATE_VERSION).unwrap();
    assert_eq!(parsed.descriptor.len(), 128);

    // Base64 in, base64 out: the same template (the engine is deterministic).
    let a = post_body(
        &h,
        "/v1/face/pattern/extract",
        "image/jpeg",
        &b64(t1()),
        true,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-transfer-encoding"], "base64");
    assert_eq!(STANDARD.decode(&a.body).unwrap(), t);

    // A JPEG labelled image/png (and an upper-case media type) is still read.
    let linda = fixture_bytes("person-linda.jpg");
    let a = post_body(&h, "/v1/face/pattern/extract", "IMAGE/PNG", &linda, false).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let other = a.body.to_vec();

    let same = compare(&h, &t, &t).await;
    assert_eq!(keys(&same), key_set(&["score", "decision"]));
    assert!(same["score"].as_f64().unwrap() > 0.999, "{same}");
    assert_eq!(same["decision"], "approved");
    let diff = compare(&h, &t, &other).await;
    let s = diff["score"].as_f64().unwrap();
    assert!((0.0..0.57).contains(&s), "{diff}");
    assert_eq!(diff["decision"], "declined");
    // Base64 parts give the same answer.
    let b = post_form(
        &h,
        "/v1/face/pattern/compare",
        &[
            part("bio_feature", Some("a"), Some("text/plain"), &b64(&t)),
            part("bio_template", Some("b"), None, &b64(&other)),
        ],
        true,
    )
    .await
    .json();
    assert_eq!(b, diff);

    // extract_and_compare: two photos of one nuaa-dev subject, then two people.
    let s1 = subject("0001", 2);
    let s7 = subject("0007", 1);
    let pair = |a: &[u8], b: &[u8], b64mode: bool| {
        let (a, b) = if b64mode {
            (b64(a), b64(b))
        } else {
            (a.to_vec(), b.to_vec())
        };
        vec![
            part("sample_1", Some("1.jpg"), Some("image/jpeg"), &a),
            part("sample_2", Some("2.jpg"), Some("image/jpeg"), &b),
        ]
    };
    let genuine = post_form(
        &h,
        "/v1/face/pattern/extract_and_compare",
        &pair(&s1[0].1, &s1[1].1, false),
        false,
    )
    .await
    .json();
    let impostor = post_form(
        &h,
        "/v1/face/pattern/extract_and_compare",
        &pair(&s1[0].1, &s7[0].1, false),
        false,
    )
    .await
    .json();
    assert!(
        genuine["score"].as_f64().unwrap() > impostor["score"].as_f64().unwrap() + 0.1,
        "{genuine} {impostor}"
    );
    assert_eq!(genuine["decision"], "approved", "{genuine}");
    assert_eq!(impostor["decision"], "declined", "{impostor}");
    let genuine_b64 = post_form(
        &h,
        "/oz/v1/face/pattern/extract_and_compare",
        &pair(&s1[0].1, &s1[1].1, true),
        true,
    )
    .await
    .json();
    assert_eq!(genuine_b64, genuine);
    h.shutdown();
}

/// The `score` and `bio_feature` parts of a verify answer.
async fn verify_parts(a: &Answer) -> (f64, Vec<u8>, bool) {
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let ct = a.headers["content-type"].to_str().unwrap().to_string();
    let boundary = multer::parse_boundary(&ct).unwrap();
    let body = a.body.clone();
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let (mut score, mut feature, mut encoded) = (None, None, false);
    while let Some(f) = mp.next_field().await.unwrap() {
        match f.name() {
            Some("score") => score = Some(f.text().await.unwrap().parse::<f64>().unwrap()),
            Some("bio_feature") => {
                encoded = f.headers().get("content-transfer-encoding").is_some();
                feature = Some(f.bytes().await.unwrap().to_vec());
            }
            other => panic!("unexpected part {other:?}"),
        }
    }
    (score.unwrap(), feature.unwrap(), encoded)
}

#[tokio::test]
async fn verify_answers_multipart_with_the_new_template() {
    let h = server().await;
    let t = template_of(&h, t1()).await;
    let a = verify(&h, t1(), Some("image/jpeg"), &t, false).await;
    let (score, feature, encoded) = verify_parts(&a).await;
    assert!(score > 0.999 && !encoded, "{score}");
    assert_eq!(feature, t);
    let a = verify(&h, &b64(t1()), Some("image/jpeg"), &b64(&t), true).await;
    let (score_b, feature_b, encoded) = verify_parts(&a).await;
    assert!(encoded);
    assert_eq!((score_b, STANDARD.decode(&feature_b).unwrap()), (score, t));
    h.shutdown();
}

#[tokio::test]
async fn one_to_n_with_100_templates_and_with_20_images() {
    let h = server().await;
    let s1 = subject("0001", 5);
    let s4 = subject("0004", 5);
    let mut templates = Vec::new();
    for (_, img) in s1.iter().chain(&s4) {
        templates.push(template_of(&h, img).await);
    }
    let probe = templates[0].clone();
    let names: Vec<String> = (0..100).map(|i| format!("t{i:03}.bin")).collect();
    let oct = Some("application/octet-stream");
    let mut parts = vec![part("template_1", Some("probe"), oct, &probe)];
    for (i, n) in names.iter().enumerate() {
        parts.push(part("templates_n", Some(n), oct, &templates[i % 10]));
    }
    let v = post_form(&h, "/v1/face/pattern/compare_n", &parts, false)
        .await
        .json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 100);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(keys(r), key_set(&["filename", "score", "decision"]));
        assert_eq!(r["filename"], names[i]);
        // Each equals the 1:1 comparison of the same pair.
        if i < 10 {
            let one = compare(&h, &probe, &templates[i % 10]).await;
            assert!(
                (one["score"].as_f64().unwrap() - r["score"].as_f64().unwrap()).abs() < 1e-4,
                "{one} {r}"
            );
            assert_eq!(one["decision"], r["decision"]);
        }
    }
    // Same person scores above the other person, on average.
    let mean = |range: std::ops::Range<usize>| {
        range
            .clone()
            .map(|i| results[i]["score"].as_f64().unwrap())
            .sum::<f64>()
            / range.len() as f64
    };
    assert!(
        mean(1..5) > mean(5..10) + 0.1,
        "{} {}",
        mean(1..5),
        mean(5..10)
    );

    // compare_n again in base64 mode: the same results.
    let mut parts = vec![part("template_1", Some("probe"), oct, &b64(&probe))];
    for (i, n) in names.iter().enumerate() {
        parts.push(part("templates_n", Some(n), None, &b64(&templates[i % 10])));
    }
    let vb = post_form(&h, "/v1/face/pattern/compare_n", &parts, true)
        .await
        .json();
    assert_eq!(vb, v);

    // verify_n: the probe as an image, base64 mode.
    let mut parts = vec![part(
        "sample_1",
        Some("probe.jpg"),
        Some("image/jpeg"),
        &b64(&s1[0].1),
    )];
    for (i, n) in names.iter().enumerate() {
        parts.push(part("templates_n", Some(n), oct, &b64(&templates[i % 10])));
    }
    let vn = post_form(&h, "/v1/face/pattern/verify_n", &parts, true)
        .await
        .json();
    assert_eq!(vn, v);

    // extract_and_compare_n: 20 images in one request, one batched run.
    let before = h.batcher().stats().largest[2];
    let mut images = subject("0006", 10);
    images.extend(subject("0007", 10));
    let mut parts = vec![part(
        "sample_1",
        Some("probe.jpg"),
        Some("image/jpeg"),
        &s1[0].1,
    )];
    for (n, b) in &images {
        parts.push(part("samples_n", Some(n), Some("image/jpeg"), b));
    }
    let v = post_form(&h, "/v1/face/pattern/extract_and_compare_n", &parts, false)
        .await
        .json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 20);
    for (r, (n, _)) in results.iter().zip(&images) {
        assert_eq!(&r["filename"], n);
        assert_eq!(r["decision"], "declined", "{r}");
    }
    let after = h.batcher().stats().largest[2];
    assert!(
        after >= 2 && before <= after,
        "descriptor batches stayed single: {after}"
    );
    h.shutdown();
}

#[tokio::test]
async fn every_biometry_error_code() {
    let h = server().await;
    let t = template_of(&h, t1()).await;
    let oct = Some("application/octet-stream");
    let compare = |a: Vec<u8>, ctype: Option<&'static str>| {
        vec![
            part("bio_feature", Some("a"), oct, &t),
            P {
                name: "bio_template",
                file: Some("b"),
                ctype,
                data: a,
            },
        ]
    };
    // BPE-002001: wrong Content-Type of the request.
    let a = post_body(&h, "/v1/face/pattern/extract", "text/plain", t1(), false).await;
    assert!(oz_error(&a, 400, "BPE-002001").contains("text/plain"));
    let a = post_body(
        &h,
        "/v1/face/pattern/compare",
        "application/json",
        b"{}",
        false,
    )
    .await;
    oz_error(&a, 400, "BPE-002001");
    // BPE-002002: wrong method, a 400 (not 405), on bare and prefixed paths.
    for (m, path) in [
        (Method::GET, "/v1/face/pattern/extract"),
        (Method::PUT, "/oz/v1/face/pattern/compare_n"),
        (Method::POST, "/v1/face/pattern/health"),
    ] {
        let a = request(&h, m, path, &[], Bytes::new()).await;
        oz_error(&a, 400, "BPE-002002");
    }
    // BPE-002003: empty, unreadable, too large a sample; a missing sample part.
    let a = post_body(&h, "/v1/face/pattern/extract", "image/jpeg", b"", false).await;
    oz_error(&a, 400, "BPE-002003");
    let a = post_body(
        &h,
        "/v1/face/pattern/extract",
        "image/png",
        b"not an image",
        false,
    )
    .await;
    oz_error(&a, 400, "BPE-002003");
    let a = post_body(&h, "/v1/face/pattern/extract", "image/jpeg", b"%%%", true).await;
    assert!(oz_error(&a, 400, "BPE-002003").contains("base64"));
    let a = post_form(
        &h,
        "/v1/face/pattern/verify",
        &[part("bio_template", Some("t"), oct, &t)],
        false,
    )
    .await;
    assert!(oz_error(&a, 400, "BPE-002003").contains("sample part is missing"));
    // BPE-002004: foreign, truncated, corrupt, other-model templates; a missing one.
    let mut corrupt = t.clone();
    corrupt[40] ^= 0x55;
    let other = FaceTemplate {
        version: "another-model-v9".into(),
        descriptor: vec![0.1; 128],
    }
    .to_bytes();
    for (what, bytes, says) in [
        ("foreign", t1().clone(), "not a facegate template"),
        ("truncated", t[..t.len() - 9].to_vec(), "truncated"),
        ("corrupt", corrupt, "checksum"),
        ("other model", other, "another-model-v9"),
    ] {
        let a = post_form(&h, "/v1/face/pattern/compare", &compare(bytes, oct), false).await;
        let m = oz_error(&a, 400, "BPE-002004");
        assert!(m.contains(says), "{what}: {m}");
    }
    let a = post_form(
        &h,
        "/v1/face/pattern/compare",
        &[part("bio_feature", Some("a"), oct, &t)],
        false,
    )
    .await;
    assert!(oz_error(&a, 400, "BPE-002004").contains("bio_template part is missing"));
    let a = post_form(
        &h,
        "/v1/face/pattern/compare_n",
        &[
            part("template_1", Some("a"), oct, &t),
            part("templates_n", None, oct, &t),
        ],
        false,
    )
    .await;
    assert!(oz_error(&a, 400, "BPE-002004").contains("no filename"));
    // BPE-002005: a part of the wrong type.
    let a = post_form(
        &h,
        "/v1/face/pattern/compare",
        &compare(t.clone(), Some("image/gif")),
        false,
    )
    .await;
    assert!(oz_error(&a, 400, "BPE-002005").contains("image/gif"));
    let a = verify(&h, t1(), Some("video/mp4"), &t, false).await;
    oz_error(&a, 400, "BPE-002005");
    // BPE-003002: no face.
    let a = post_body(
        &h,
        "/v1/face/pattern/extract",
        "image/jpeg",
        &blank_jpeg(320, 240),
        false,
    )
    .await;
    assert!(oz_error(&a, 400, "BPE-003002").contains("no face"));
    // BPE-003003: several people.
    let group = fixture_bytes("group-1.jpg");
    let a = post_body(&h, "/v1/face/pattern/extract", "image/jpeg", &group, false).await;
    oz_error(&a, 400, "BPE-003003");
    // The N bound is named.
    let tight = start_with_engine(
        config(|c| c.oz.max_templates = 3),
        Default::default(),
        engine_full(),
    )
    .await;
    let mut parts = vec![part("template_1", Some("p"), oct, &t)];
    for n in ["a", "b", "c", "d"] {
        parts.push(part("templates_n", Some(n), oct, &t));
    }
    let a = post_form(&tight, "/v1/face/pattern/compare_n", &parts, false).await;
    assert!(oz_error(&a, 400, "BPE-002004").contains("the limit is 3"));
    tight.shutdown();
    h.shutdown();
}

#[test]
fn internal_errors_render_as_the_reference_says_without_their_detail() {
    // No request can make the engine fail on purpose; the table row is checked directly.
    let oz = Oz::new(OzConfig::default()).unwrap();
    for (path, code) in [
        ("/v1/face/pattern/extract", "BPE-001001"),
        ("/v1/face/liveness/detect", "LDE-001001"),
    ] {
        let route = RouteInfo {
            method: Method::POST,
            path: path.into(),
            dialect: "oz",
            name: "oz.test",
        };
        let r = oz.render(
            &ApiError::Engine(Error::Internal("secret detail".into())),
            &route,
        );
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body =
            futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(r.into_body()))
                .unwrap()
                .unwrap()
                .to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], code);
        assert!(!v["message"].as_str().unwrap().contains("secret"), "{v}");
    }
}

#[tokio::test]
async fn an_engine_still_loading_is_not_ready() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let e = engine_full();
    let cfg = config(|_| {});
    let loader: facegate::batcher::Loader = Box::new(move || {
        let _ = rx.recv();
        Ok(e)
    });
    let batcher = facegate::batcher::Batcher::start(cfg.server.batcher(), loader).unwrap();
    let h = facegate::app::start(&cfg, batcher, Default::default())
        .await
        .unwrap();
    let v = get(&h, "/v1/face/liveness/health").await.json();
    assert_eq!(v["status"], 3, "{v}");
    let a = post_body(&h, "/v1/face/pattern/extract", "image/jpeg", t1(), false).await;
    oz_error(&a, 400, "BPE-001002");
    assert!(a.headers.contains_key("retry-after"));
    let a = post_body(&h, "/v1/face/liveness/detect", "image/jpeg", t1(), false).await;
    oz_error(&a, 400, "LDE-001002");
    tx.send(()).unwrap();
    h.shutdown();
}

#[tokio::test]
async fn detect_on_images_and_archives_and_every_liveness_error() {
    let h = server().await;
    // One image body: Oz's spoof score, passed below the default threshold 0.5.
    let v = post_body(&h, "/v1/face/liveness/detect", "image/jpeg", t1(), false)
        .await
        .json();
    assert_eq!(keys(&v), key_set(&["passed", "score"]), "{v}");
    assert_eq!(v["passed"], true, "{v}");
    assert!(v["score"].as_f64().unwrap() < 0.5);
    let attack = fixture_bytes("image_F2.jpg");
    let v = post_body(&h, "/v1/face/liveness/detect", "image/jpeg", &attack, false)
        .await
        .json();
    assert_eq!(v["passed"], false, "{v}");
    assert!(v["score"].as_f64().unwrap() >= 0.5);
    let vb = post_body(
        &h,
        "/v1/face/liveness/detect",
        "image/png",
        &b64(&attack),
        true,
    )
    .await
    .json();
    assert_eq!(vb, v);

    // Multipart: an image, an archive of three live photos, a payload with best shots and a
    // laxer threshold for the second analysis.
    let linda = fixture_bytes("person-linda.jpg");
    let archive = zip_of(&[("a/1.jpg", t1()), ("a/2.jpg", &linda), ("a/3.jpg", t1())]);
    let payload = json!({
        "analyses": [
            {"type": "quality", "source_media": ["selfie", "burst"], "params": {"extract_best_shot": true}},
            {"type": "quality", "source_media": ["attack"], "params": {"threshold_spoofing": 0.9}}
        ]
    })
    .to_string();
    let parts = [
        part("selfie", Some("t1.jpg"), Some("image/jpeg"), t1()),
        part(
            "burst",
            Some("burst.zip"),
            Some("application/zip"),
            &archive,
        ),
        part("attack", Some("f2.jpg"), Some("image/jpeg"), &attack),
        part(
            "payload",
            None,
            Some("application/json"),
            payload.as_bytes(),
        ),
    ];
    let v = post_form(&h, "/v1/face/liveness/detect", &parts, false)
        .await
        .json();
    let analyses = v["analyses"].as_array().unwrap();
    assert_eq!(analyses.len(), 2, "{}", brief(&v));
    let first = &analyses[0];
    let media = first["results_media"].as_array().unwrap();
    assert_eq!(media.len(), 2);
    assert_eq!(media[0]["media_type"], "image");
    assert_eq!(media[1]["media_type"], "archive");
    assert_eq!(media[1]["frames_analysed"], 3, "{}", brief(&v));
    for m in media {
        let img = STANDARD
            .decode(m["output_images"][0]["image_b64"].as_str().unwrap())
            .unwrap();
        assert!(image::load_from_memory(&img).is_ok());
    }
    assert!(first["output_images"][0]["image_b64"].is_string());
    let second = &analyses[1];
    assert_eq!(second["threshold_spoofing"], 0.9);
    let attack_score = second["score"].as_f64().unwrap();
    assert_eq!(second["passed"], attack_score < 0.9);
    assert_eq!(
        second["resolution_status"],
        if attack_score < 0.9 {
            "SUCCESS"
        } else {
            "DECLINED"
        }
    );
    // Overall: the worst media of all analyses.
    let worst = analyses
        .iter()
        .map(|a| a["score"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(v["score"].as_f64().unwrap(), worst);

    // LDE-002001, LDE-002002.
    let a = post_body(
        &h,
        "/v1/face/liveness/detect",
        "application/json",
        b"{}",
        false,
    )
    .await;
    oz_error(&a, 400, "LDE-002001");
    let a = request(
        &h,
        Method::GET,
        "/v1/face/liveness/detect",
        &[],
        Bytes::new(),
    )
    .await;
    oz_error(&a, 400, "LDE-002002");
    // LDE-002004: no face, an unreadable image, a duplicate media name, a bad payload.
    let a = post_body(
        &h,
        "/v1/face/liveness/detect",
        "image/jpeg",
        &blank_jpeg(320, 240),
        false,
    )
    .await;
    oz_error(&a, 400, "LDE-002004");
    let a = post_body(
        &h,
        "/v1/face/liveness/detect",
        "image/jpeg",
        b"garbage",
        false,
    )
    .await;
    oz_error(&a, 400, "LDE-002004");
    let twice = [
        part("m", Some("1.jpg"), Some("image/jpeg"), t1()),
        part("m", Some("2.jpg"), Some("image/jpeg"), t1()),
    ];
    let a = post_form(&h, "/v1/face/liveness/detect", &twice, false).await;
    assert!(oz_error(&a, 400, "LDE-002004").contains("two media named"));
    let bad = [
        part("m", Some("1.jpg"), Some("image/jpeg"), t1()),
        part(
            "payload",
            None,
            None,
            br#"{"analyses": [{"type": "biometry"}]}"#,
        ),
    ];
    let a = post_form(&h, "/v1/face/liveness/detect", &bad, false).await;
    assert!(oz_error(&a, 400, "LDE-002004").contains("biometry"));
    let unknown = [
        part("m", Some("1.jpg"), Some("image/jpeg"), t1()),
        part("payload", None, None, br#"{"extract_bestshot": true}"#),
    ];
    let a = post_form(&h, "/v1/face/liveness/detect", &unknown, false).await;
    assert!(oz_error(&a, 400, "LDE-002004").contains("extract_bestshot"));
    // LDE-002005: a media part of a type no media has.
    let a = post_form(
        &h,
        "/v1/face/liveness/detect",
        &[part("m", Some("1.txt"), Some("text/html"), t1())],
        false,
    )
    .await;
    oz_error(&a, 400, "LDE-002005");
    // A zip bomb: 64 MiB of zeros deflated to about 64 KiB, refused at the per-file bound.
    let bomb = zip_of(&[("zeros.jpg", &vec![0u8; 64 << 20])]);
    assert!(bomb.len() < 1 << 20);
    let a = post_form(
        &h,
        "/v1/face/liveness/detect",
        &[part(
            "bomb",
            Some("bomb.zip"),
            Some("application/zip"),
            &bomb,
        )],
        false,
    )
    .await;
    let m = oz_error(&a, 400, "LDE-002004");
    assert!(m.contains("limit per file is 16777216"), "{m}");
    // Too many files in an archive.
    let many: Vec<(String, Vec<u8>)> = (0..65).map(|i| (format!("{i}.jpg"), vec![1u8])).collect();
    let many_refs: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let a = post_form(
        &h,
        "/v1/face/liveness/detect",
        &[part("many", Some("many.zip"), None, &zip_of(&many_refs))],
        false,
    )
    .await;
    assert!(oz_error(&a, 400, "LDE-002004").contains("more than 64 files"));
    h.shutdown();
    // The request-wide frame bound, over several media.
    let tight = start_with_engine(
        config(|c| c.oz.max_frames = 2),
        Default::default(),
        engine_full(),
    )
    .await;
    let three = zip_of(&[("1.jpg", t1()), ("2.jpg", t1()), ("3.jpg", t1())]);
    let a = post_form(
        &tight,
        "/v1/face/liveness/detect",
        &[
            part("one", Some("1.jpg"), None, t1()),
            part("three", Some("3.zip"), None, &three),
        ],
        false,
    )
    .await;
    let m = oz_error(&a, 400, "LDE-002004");
    assert!(m.contains("three: more than 2 frames"), "{m}");
    tight.shutdown();
}

#[cfg(feature = "video")]
#[tokio::test]
async fn detect_on_a_video_the_test_encodes_from_a_photo() {
    use facegate::preprocess::video::{decode_sampled, encode_h264_mp4, VideoLimits};
    // How the video is made: the live fixture, upright, resized to 480x640 and shifted by a
    // few pixels per frame (a hand-held selfie), 30 frames at 15 fps, encoded by libx264 as
    // H.264 High with B-frames into an in-memory MP4.
    let e = engine_full();
    let base = e.prepare(t1()).unwrap().image;
    let base = image::imageops::resize(&base, 480, 640, image::imageops::FilterType::Triangle);
    let frames: Vec<image::RgbImage> = (0..30)
        .map(|i| {
            let dx = (i % 6) as i64 * 2;
            let mut f = image::RgbImage::from_pixel(480, 640, image::Rgb([0, 0, 0]));
            image::imageops::overlay(&mut f, &base, dx, (i % 4) as i64);
            f
        })
        .collect();
    let mp4 = encode_h264_mp4(&frames, 15).unwrap();
    let probe = decode_sampled(&mp4, &VideoLimits::default()).unwrap();
    assert!(
        probe.has_b_frames && probe.decoded == 30,
        "{:?}",
        probe.profile
    );

    let h = server().await;
    let payload = json!({"analyses": [{"type": "quality", "params": {"extract_best_shot": true}}]})
        .to_string();
    let parts = [
        part("video", Some("selfie.mp4"), Some("video/mp4"), &mp4),
        part(
            "payload",
            None,
            Some("application/json"),
            payload.as_bytes(),
        ),
    ];
    let v = post_form(&h, "/v1/face/liveness/detect", &parts, false)
        .await
        .json();
    let m = &v["analyses"][0]["results_media"][0];
    assert_eq!(m["media_type"], "video", "{v}");
    assert_eq!(m["frames_analysed"], VideoLimits::default().sample_frames);
    assert_eq!(v["passed"], true, "{v}");
    let shot = STANDARD
        .decode(m["output_images"][0]["image_b64"].as_str().unwrap())
        .unwrap();
    let shot = image::load_from_memory(&shot).unwrap();
    assert_eq!((shot.width(), shot.height()), (480, 640));
    // Base64 mode: the same video as text.
    let parts = [part("video", Some("selfie.mp4"), None, &b64(&mp4))];
    let vb = post_form(&h, "/v1/face/liveness/detect", &parts, true)
        .await
        .json();
    assert_eq!(vb["score"], v["score"]);
    // A truncated video is refused by name.
    let parts = [part(
        "video",
        Some("cut.mp4"),
        Some("video/mp4"),
        &mp4[..mp4.len() / 3],
    )];
    let a = post_form(&h, "/v1/face/liveness/detect", &parts, false).await;
    assert!(oz_error(&a, 400, "LDE-002004")
        .starts_with("Failed to extract the biometric sample: video"));
    h.shutdown();
}

#[cfg(not(feature = "video"))]
#[tokio::test]
async fn without_the_video_feature_videos_are_refused_by_name() {
    let h = server().await;
    let fake_mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    let parts = [part("video", Some("v.mp4"), Some("video/mp4"), &fake_mp4)];
    let a = post_form(&h, "/v1/face/liveness/detect", &parts, false).await;
    assert!(oz_error(&a, 400, "LDE-002004").contains("feature"));
    h.shutdown();
}
