//! The Aware Knomi dialect over real HTTP: `/analyze`, `/checkLiveness`,
//! `/checkActiveLiveness`, their `...Encrypted` twins, `/decrypt` and `/version`; every
//! decision from a model run on real fixture photos (and edits of them: blurred, shrunk,
//! flattened, rotated, a synthetic head turn and nod as in `tests/active.rs`); every error code
//! of the reference; encrypted packages for both OAEP hashes and both AES modes, tampered,
//! wrongly keyed and replayed.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use common::http::*;
use common::warp::{geometry, head_move, jpeg, upright};
use facegate::api::iad::capture::{generate_key, private_key_pem};
use facegate::api::knomi::package::{seal, Mode, OaepHash};
use facegate::server::ServerHandle;
use hyper::{Method, StatusCode};
use image::RgbImage;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The live fixture upright (480x640), and its analysis with landmarks and template.
fn live() -> &'static (RgbImage, facegate::engine::Analysis) {
    static F: OnceLock<(RgbImage, facegate::engine::Analysis)> = OnceLock::new();
    F.get_or_init(|| upright(&engine_full(), "image_T1.jpg"))
}

fn live_jpeg() -> &'static Vec<u8> {
    static J: OnceLock<Vec<u8>> = OnceLock::new();
    J.get_or_init(|| jpeg(&live().0))
}

/// A replay attack fixture, upright, same size as the live one.
fn attack_jpeg() -> Vec<u8> {
    let e = engine_full();
    jpeg(&e.prepare(&fixture_bytes("image_F2.jpg")).unwrap().image)
}

/// The key packages are wrapped for, and its PEM file.
fn key() -> &'static (RsaPrivateKey, PathBuf) {
    static K: OnceLock<(RsaPrivateKey, PathBuf)> = OnceLock::new();
    K.get_or_init(|| {
        let k = generate_key(2048).unwrap();
        let dir = std::env::temp_dir().join(format!("facegate-knomi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("private.pem");
        std::fs::write(&path, private_key_pem(&k).unwrap()).unwrap();
        (k, path)
    })
}

async fn server() -> ServerHandle {
    start_with_engine(
        config(|c| c.knomi.private_key = Some(key().1.clone())),
        Default::default(),
        engine_full(),
    )
    .await
}

fn frame(bytes: &[u8], ts: i64, tags: &[&str]) -> Value {
    json!({"data": STANDARD.encode(bytes), "tags": tags, "timestamp": ts})
}

fn request_for(workflow: &str, frames: Vec<Value>) -> Value {
    json!({"video": {
        "meta_data": {"client_device_brand": "Apple", "client_device_model": "iPhone 8",
            "client_version": "KnomiSLive_v:2.4.1_b:0.0.0_sdk_v:2.4.1_b:0.0.0", "username": "test"},
        "workflow_data": {"workflow": workflow, "frames": frames}}})
}

/// One workflow over `images`, frames 40 ms apart ending now.
fn request_of(workflow: &str, images: &[&[u8]]) -> Value {
    let t0 = now_ms() - 40 * images.len() as i64;
    request_for(
        workflow,
        images
            .iter()
            .enumerate()
            .map(|(i, b)| frame(b, t0 + 40 * i as i64, &[]))
            .collect(),
    )
}

async fn post_text(h: &ServerHandle, path: &str, body: impl Into<Bytes>) -> Answer {
    request(
        h,
        Method::POST,
        path,
        &[("content-type", "text/plain")],
        body.into(),
    )
    .await
}

async fn post(h: &ServerHandle, path: &str, body: &Value) -> Answer {
    post_text(h, path, body.to_string()).await
}

/// A 200 answer as JSON, labelled text/plain as the reference shows.
fn ok(a: &Answer) -> Value {
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.headers["content-type"], "text/plain");
    a.json()
}

/// An error answer: its status, and the body's code and description.
fn error(a: &Answer) -> (StatusCode, i64, String) {
    assert_eq!(a.headers["content-type"], "text/plain");
    let v = a.json();
    assert_eq!(keys(&v), key_set(&["error"]), "{v}");
    assert_eq!(keys(&v["error"]), key_set(&["code", "description"]), "{v}");
    (
        a.status,
        v["error"]["code"].as_i64().unwrap(),
        v["error"]["description"].as_str().unwrap().to_string(),
    )
}

/// Checks a `liveness_result` and returns (decision, feedback).
fn liveness(l: &Value) -> (String, Vec<String>) {
    let decision = l["decision"].as_str().unwrap().to_string();
    let score = l["score"].as_f64().unwrap();
    let frr = l["score_frr"].as_f64().unwrap();
    let want = match decision.as_str() {
        "LIVE" => 100.0,
        "SPOOF" => 0.0,
        _ => -1.0,
    };
    assert_eq!(score, want, "score goes with the decision: {l}");
    if score >= 0.0 {
        assert!((0.0..=1.0).contains(&frr), "{l}");
    } else {
        assert_eq!(frr, -1.0, "{l}");
    }
    let feedback = l["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    (decision, feedback)
}

fn map_luma(img: &RgbImage, f: impl Fn(f32) -> f32) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let p = img.get_pixel(x, y).0;
        image::Rgb(p.map(|c| f(f32::from(c)).round().clamp(0.0, 255.0) as u8))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_decides_live_and_spoof_with_autocapture() {
    let h = server().await;
    let v = ok(&post(&h, "/analyze", &request_of("foxtrot4", &[live_jpeg()])).await);
    let video = &v["video"];
    assert_eq!(
        keys(video),
        key_set(&["autocapture_result", "liveness_result", "version"])
    );
    assert!(video["version"]
        .as_str()
        .unwrap()
        .contains(env!("CARGO_PKG_VERSION")));
    let (d, fb) = liveness(&video["liveness_result"]);
    assert_eq!((d.as_str(), fb.len()), ("LIVE", 0), "{v}");
    let frr = video["liveness_result"]["score_frr"].as_f64().unwrap();
    assert!(
        frr > 0.5,
        "a clearly live photo is above most live scores: {frr}"
    );
    let ac = &video["autocapture_result"];
    assert_eq!(
        keys(ac),
        key_set(&[
            "captured_frame",
            "captured_frame_is_constructed",
            "feedback"
        ])
    );
    assert_eq!(ac["captured_frame_is_constructed"], false);
    assert!(ac["feedback"].is_array());
    let captured = STANDARD
        .decode(ac["captured_frame"].as_str().unwrap())
        .unwrap();
    let img = image::load_from_memory(&captured).unwrap();
    assert_eq!((img.width(), img.height()), (480, 640));

    // A sequence workflow: the mean over the frames; the best frame is captured.
    let mirrored = jpeg(&image::imageops::flip_horizontal(&live().0));
    let v = ok(&post(
        &h,
        "/knomi/analyze",
        &request_of("charlie4", &[live_jpeg(), &mirrored, live_jpeg()]),
    )
    .await);
    assert_eq!(liveness(&v["video"]["liveness_result"]).0, "LIVE", "{v}");

    let v = ok(&post(
        &h,
        "/checkLiveness",
        &request_of("foxtrot4", &[&attack_jpeg()]),
    )
    .await);
    assert_eq!(keys(&v["video"]), key_set(&["liveness_result", "version"]));
    assert_eq!(liveness(&v["video"]["liveness_result"]).0, "SPOOF", "{v}");
    // The same attack under the usability workflow's own threshold, then under a client
    // security level that rejects almost no live face: the threshold moves with the level.
    let lenient = {
        let mut r = request_of("foxtrot6", &[&attack_jpeg()]);
        r["video"]["workflow_data"]["security_level"] = json!(0);
        r
    };
    let v = ok(&post(&h, "/checkLiveness", &lenient).await);
    assert_eq!(liveness(&v["video"]["liveness_result"]).0, "LIVE", "{v}");
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_frames_get_their_own_decisions() {
    let h = server().await;
    let img = &live().0;
    let cases: Vec<(&str, Vec<u8>, &str, Option<&str>)> = vec![
        (
            "blurred",
            jpeg(&image::imageops::blur(img, 6.0)),
            "TOO_BLURRY",
            Some("TOO_MUCH_BLUR"),
        ),
        (
            "shrunk",
            jpeg(&image::imageops::resize(
                img,
                240,
                320,
                image::imageops::FilterType::Triangle,
            )),
            "FACE_TOO_LOW_RESOLUTION",
            None,
        ),
        (
            "flattened",
            jpeg(&map_luma(img, |c| 128.0 + (c - 128.0) * 0.2)),
            "TOO_LOW_FACIAL_DYNAMIC_RANGE",
            None,
        ),
        (
            "no face",
            blank_jpeg(480, 640),
            "UNABLE_TO_CALCULATE_LIVENESS",
            Some("NO_FACE_DETECTED"),
        ),
    ];
    for (name, bytes, want, feedback) in cases {
        let v = ok(&post(&h, "/analyze", &request_of("foxtrot4", &[&bytes])).await);
        let (d, fb) = liveness(&v["video"]["liveness_result"]);
        assert_eq!(d, want, "{name}: {v}");
        if let Some(f) = feedback {
            assert!(fb.iter().any(|x| x == f), "{name}: {fb:?}");
            let ac: Vec<&str> = v["video"]["autocapture_result"]["feedback"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            assert!(ac.contains(&f), "{name}: autocapture {ac:?}");
        }
    }
    // The shrunk face is fine for a back-camera workflow's lower minimum only if its IOD
    // reaches it: the decision follows the measurement, not the workflow name.
    let small = jpeg(&image::imageops::resize(
        img,
        288,
        384,
        image::imageops::FilterType::Triangle,
    ));
    let front = ok(&post(&h, "/checkLiveness", &request_of("foxtrot4", &[&small])).await);
    let back = ok(&post(&h, "/checkLiveness", &request_of("hotel4", &[&small])).await);
    assert_eq!(
        liveness(&front["video"]["liveness_result"]).0,
        "FACE_TOO_LOW_RESOLUTION",
        "{front}"
    );
    assert_eq!(
        liveness(&back["video"]["liveness_result"]).0,
        "LIVE",
        "{back}"
    );
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_applied_before_analysis() {
    let h = server().await;
    // The photo turned a quarter counter-clockwise; rotation 90 (clockwise) makes it upright.
    let turned = jpeg(&image::imageops::rotate270(&live().0));
    let mut r = request_of("foxtrot4", &[&turned]);
    r["video"]["workflow_data"]["rotation"] = json!(90);
    let v = ok(&post(&h, "/analyze", &r).await);
    assert_eq!(liveness(&v["video"]["liveness_result"]).0, "LIVE", "{v}");
    let captured = STANDARD
        .decode(
            v["video"]["autocapture_result"]["captured_frame"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let img = image::load_from_memory(&captured).unwrap();
    assert_eq!((img.width(), img.height()), (480, 640));
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_are_checked_against_the_clock() {
    let h = server().await;
    let old = now_ms() - 3_600_000;
    let ahead = now_ms() + 3_600_000;
    for (ts, want) in [(old, "TIMESTAMP_TOO_OLD"), (ahead, "TIMESTAMP_IN_FUTURE")] {
        let r = request_for("foxtrot4", vec![frame(live_jpeg(), ts, &[])]);
        let v = ok(&post(&h, "/checkLiveness", &r).await);
        assert_eq!(liveness(&v["video"]["liveness_result"]).0, want, "{v}");
        // analyze still gives autocapture feedback, but not liveness.
        let v = ok(&post(&h, "/analyze", &r).await);
        assert_eq!(liveness(&v["video"]["liveness_result"]).0, want, "{v}");
        assert!(!v["video"]["autocapture_result"]["captured_frame"]
            .as_str()
            .unwrap()
            .is_empty());
    }
    // The package's own timestamp counts too.
    let mut r = request_of("foxtrot4", &[live_jpeg()]);
    r["video"]["workflow_data"]["timestamp"] = json!(old);
    let v = ok(&post(&h, "/checkLiveness", &r).await);
    assert_eq!(
        liveness(&v["video"]["liveness_result"]).0,
        "TIMESTAMP_TOO_OLD"
    );
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_in_the_reference_shape() {
    let h = server().await;
    let t = now_ms();
    let img = live_jpeg();
    let wd = |extra: Value| {
        let mut r = request_of("foxtrot4", &[img]);
        if let Value::Object(m) = extra {
            for (k, v) in m {
                r["video"]["workflow_data"][k] = v;
            }
        }
        r
    };
    let cases: Vec<(&str, Bytes, StatusCode, i64)> = vec![
        ("not JSON", Bytes::from("{\"video\": "), StatusCode::BAD_REQUEST, -2),
        ("empty", Bytes::new(), StatusCode::BAD_REQUEST, -2),
        (
            "no workflow_data",
            Bytes::from(json!({"video": {}}).to_string()),
            StatusCode::BAD_REQUEST,
            -3,
        ),
        (
            "frames not an array",
            Bytes::from(wd(json!({"frames": "x"})).to_string()),
            StatusCode::BAD_REQUEST,
            -4,
        ),
        (
            "bad base64",
            Bytes::from(wd(json!({"frames": [{"data": "%%%", "timestamp": t}]})).to_string()),
            StatusCode::BAD_REQUEST,
            -5,
        ),
        (
            "unknown workflow",
            Bytes::from(wd(json!({"workflow": "delta4"})).to_string()),
            StatusCode::BAD_REQUEST,
            -6,
        ),
        (
            "too few frames for a sequence",
            Bytes::from(wd(json!({"workflow": "charlie4"})).to_string()),
            StatusCode::BAD_REQUEST,
            -6,
        ),
        (
            "not an image",
            Bytes::from(
                wd(json!({"frames": [frame(b"hello, not a jpeg", t, &[])]})).to_string(),
            ),
            StatusCode::BAD_REQUEST,
            -7,
        ),
        (
            "image too small",
            Bytes::from(wd(json!({"frames": [frame(&blank_jpeg(8, 8), t, &[])]})).to_string()),
            StatusCode::BAD_REQUEST,
            -8,
        ),
        (
            "mixed sizes",
            Bytes::from(
                wd(json!({"frames": [frame(img, t - 50, &[]), frame(&blank_jpeg(320, 240), t, &[])]}))
                    .to_string(),
            ),
            StatusCode::INTERNAL_SERVER_ERROR,
            153,
        ),
        (
            "out of order",
            Bytes::from(
                wd(json!({"frames": [frame(img, t, &[]), frame(img, t - 50, &[])]})).to_string(),
            ),
            StatusCode::INTERNAL_SERVER_ERROR,
            141,
        ),
        (
            "rotation",
            Bytes::from(wd(json!({"rotation": 45})).to_string()),
            StatusCode::INTERNAL_SERVER_ERROR,
            312,
        ),
        (
            "min size",
            Bytes::from(wd(json!({"face_detection_min_size": 1.5})).to_string()),
            StatusCode::INTERNAL_SERVER_ERROR,
            118,
        ),
        (
            "max size",
            Bytes::from(wd(json!({"face_detection_max_size": -1})).to_string()),
            StatusCode::INTERNAL_SERVER_ERROR,
            119,
        ),
        (
            "min over max",
            Bytes::from(
                wd(json!({"face_detection_min_size": 0.7, "face_detection_max_size": 0.2}))
                    .to_string(),
            ),
            StatusCode::INTERNAL_SERVER_ERROR,
            120,
        ),
        (
            "sensitivity",
            Bytes::from(wd(json!({"face_detection_sensitivity": 3})).to_string()),
            StatusCode::INTERNAL_SERVER_ERROR,
            121,
        ),
        (
            "granularity",
            Bytes::from(wd(json!({"face_detection_granularity": 2})).to_string()),
            StatusCode::INTERNAL_SERVER_ERROR,
            122,
        ),
    ];
    for (name, body, status, code) in cases {
        let (s, c, d) = error(&post_text(&h, "/checkLiveness", body).await);
        assert_eq!((s, c), (status, code), "{name}: {d}");
        assert!(!d.is_empty(), "{name}");
    }
    // A body that is not text.
    let a = request(
        &h,
        Method::POST,
        "/checkLiveness",
        &[("content-type", "image/jpeg")],
        Bytes::from(img.clone()),
    )
    .await;
    let (s, c, _) = error(&a);
    assert_eq!((s, c), (StatusCode::BAD_REQUEST, -2));
    // An active workflow outside /checkActiveLiveness, and a wrong array there.
    let (s, c, _) = error(&post(&h, "/checkLiveness", &request_of("active_up", &[img])).await);
    assert_eq!((s, c), (StatusCode::BAD_REQUEST, -6));
    let two = json!([
        request_of("foxtrot4", &[img]),
        request_of("active_up", &[img])
    ]);
    let (s, c, d) = error(&post(&h, "/checkActiveLiveness", &two).await);
    assert_eq!((s, c), (StatusCode::BAD_REQUEST, -6), "{d}");
    let (_, c, _) = error(&post(&h, "/checkActiveLiveness", &request_of("foxtrot4", &[img])).await);
    assert_eq!(c, -4);
    // Version, bare and under the prefix, as text.
    for path in ["/version", "/knomi/version"] {
        let a = get(&h, path).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.headers["content-type"], "text/plain");
        assert!(String::from_utf8_lossy(&a.body).contains("version"));
    }
    h.shutdown();
}

/// The passive request and two challenges over the live photo and synthetic moves of it.
fn active_body(passive: &[u8], up: (&str, &[u8]), second: (&str, &[u8])) -> Value {
    let t = now_ms() - 1000;
    let tag = |w: &str| match w {
        "active_left" => "ACTIVE_HEAD_LEFT",
        "active_right" => "ACTIVE_HEAD_RIGHT",
        "active_down" => "ACTIVE_HEAD_DOWN",
        _ => "ACTIVE_HEAD_UP",
    };
    json!([
        request_for("foxtrot4", vec![frame(passive, t, &[])]),
        request_for(up.0, vec![frame(up.1, t + 200, &[tag(up.0)])]),
        request_for(second.0, vec![frame(second.1, t + 400, &[tag(second.0)])]),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_liveness_needs_the_asked_head_movements() {
    let h = server().await;
    let (img, a) = live();
    let g = geometry(a);
    let turned_left = jpeg(&head_move(img, &g, 12.0, 0.0));
    let nod_down = jpeg(&head_move(img, &g, 0.0, 12.0));
    let still = live_jpeg();

    let v = ok(&post(
        &h,
        "/checkActiveLiveness",
        &active_body(
            still,
            ("active_left", &turned_left),
            ("active_down", &nod_down),
        ),
    )
    .await);
    let l = &v["video"]["liveness_result"];
    assert_eq!(liveness(l).0, "LIVE", "{v}");
    assert_eq!(
        keys(&l["details"]),
        key_set(&["active_liveness", "passive_liveness"])
    );
    assert_eq!(liveness(&l["details"]["passive_liveness"]).0, "LIVE");
    assert_eq!(liveness(&l["details"]["active_liveness"]).0, "LIVE");

    // The same request as an encrypted package.
    let body = active_body(
        still,
        ("active_left", &turned_left),
        ("active_down", &nod_down),
    );
    let v = ok(&post(
        &h,
        "/checkActiveLivenessEncrypted",
        &sealed(&body, OaepHash::Sha256Mgf1Sha1, Mode::Gcm),
    )
    .await);
    assert_eq!(liveness(&v["video"]["liveness_result"]).0, "LIVE", "{v}");

    // An unusable passive capture leaves the challenges nothing to compare with.
    let blurred = jpeg(&image::imageops::blur(img, 6.0));
    let v = ok(&post(
        &h,
        "/checkActiveLiveness",
        &active_body(
            &blurred,
            ("active_left", &turned_left),
            ("active_down", &nod_down),
        ),
    )
    .await);
    let l = &v["video"]["liveness_result"];
    assert_eq!(liveness(l).0, "TOO_BLURRY", "{v}");
    assert_eq!(
        liveness(&l["details"]["active_liveness"]).0,
        "TOO_BLURRY",
        "{v}"
    );

    // The head does not move: the same still in every request.
    let v = ok(&post(
        &h,
        "/checkActiveLiveness",
        &active_body(still, ("active_left", still), ("active_down", still)),
    )
    .await);
    let l = &v["video"]["liveness_result"];
    assert_eq!(liveness(l).0, "SPOOF", "{v}");
    assert_eq!(liveness(&l["details"]["passive_liveness"]).0, "LIVE");
    assert_eq!(liveness(&l["details"]["active_liveness"]).0, "SPOOF");

    // The head moves, but not as asked (a turn to the left sent as a turn to the right).
    let v = ok(&post(
        &h,
        "/knomi/checkActiveLiveness",
        &active_body(
            still,
            ("active_right", &turned_left),
            ("active_down", &nod_down),
        ),
    )
    .await);
    assert_eq!(
        liveness(&v["video"]["liveness_result"]["details"]["active_liveness"]).0,
        "SPOOF",
        "{v}"
    );
    h.shutdown();
}

fn public() -> RsaPublicKey {
    RsaPublicKey::from(&key().0)
}

fn sealed(body: &Value, hash: OaepHash, mode: Mode) -> Value {
    serde_json::to_value(seal(&public(), body.to_string().as_bytes(), hash, mode).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_packages_round_trip_once() {
    let h = server().await;
    let plain = request_of("foxtrot4", &[live_jpeg()]);
    for hash in [OaepHash::Sha256, OaepHash::Sha256Mgf1Sha1, OaepHash::Sha1] {
        for mode in [Mode::Cbc, Mode::Gcm] {
            let pkg = sealed(&plain, hash, mode);
            let v = ok(&post(&h, "/checkLivenessEncrypted", &pkg).await);
            assert_eq!(
                liveness(&v["video"]["liveness_result"]).0,
                "LIVE",
                "{hash:?} {mode:?}: {v}"
            );
            // Single use: the same package again is refused before decryption.
            let (s, c, d) = error(&post(&h, "/checkLivenessEncrypted", &pkg).await);
            assert_eq!((s, c), (StatusCode::BAD_REQUEST, -6));
            assert!(d.contains("already used"), "{d}");
        }
    }
    let v = ok(&post(
        &h,
        "/analyzeEncrypted",
        &sealed(&plain, OaepHash::Sha256, Mode::Gcm),
    )
    .await);
    assert!(v["video"]["autocapture_result"].is_object());

    // /decrypt gives the request back as it was sealed.
    let small = json!({"video": {"workflow_data": {"workflow": "foxtrot4", "frames": []}}});
    let a = post(&h, "/decrypt", &sealed(&small, OaepHash::Sha1, Mode::Cbc)).await;
    assert_eq!(ok(&a), small);

    // Tampering, a wrong key and bad base64: one answer for every failure to decrypt.
    let mut failures = Vec::new();
    for mode in [Mode::Cbc, Mode::Gcm] {
        let mut pkg = sealed(&small, OaepHash::Sha256, mode);
        let mut p = STANDARD.decode(pkg["p"].as_str().unwrap()).unwrap();
        p[3] ^= 0x40;
        pkg["p"] = json!(STANDARD.encode(p));
        failures.push(error(&post(&h, "/decrypt", &pkg).await));
    }
    let stranger = RsaPublicKey::from(&generate_key(2048).unwrap());
    let wrong = seal(
        &stranger,
        small.to_string().as_bytes(),
        OaepHash::Sha256,
        Mode::Cbc,
    )
    .unwrap();
    failures.push(error(
        &post(&h, "/decrypt", &serde_json::to_value(wrong).unwrap()).await,
    ));
    for f in &failures {
        assert_eq!(f, &failures[0]);
    }
    assert_eq!(
        (failures[0].0, failures[0].1),
        (StatusCode::BAD_REQUEST, -6)
    );
    assert!(
        failures[0].2.contains("could not be decrypted"),
        "{:?}",
        failures[0]
    );
    let mut pkg = sealed(&small, OaepHash::Sha256, Mode::Cbc);
    pkg["iv"] = json!("not base64!");
    assert_eq!(error(&post(&h, "/decrypt", &pkg).await).1, -5);
    let (_, c, _) = error(&post_text(&h, "/decrypt", "{\"key\": \"AAAA\"}").await);
    assert_eq!(c, -3);
    h.shutdown();

    // Without a private key the encrypted endpoints say so.
    let plain_server = start_with_engine(config(|_| {}), Default::default(), engine_full()).await;
    let (s, c, d) = error(
        &post(
            &plain_server,
            "/checkLivenessEncrypted",
            &sealed(&small, OaepHash::Sha256, Mode::Cbc),
        )
        .await,
    );
    assert_eq!((s, c), (StatusCode::INTERNAL_SERVER_ERROR, -1));
    assert!(d.contains("not enabled"), "{d}");
    plain_server.shutdown();

    // With API keys configured, the dialect's routes need one; the answer is Knomi-shaped.
    let guarded = start_with_engine(
        config(|c| c.auth.api_keys = vec!["ops:0123456789abcdef0123".into()]),
        Default::default(),
        engine_full(),
    )
    .await;
    let (s, c, _) = error(&post(&guarded, "/checkLiveness", &small).await);
    assert_eq!((s, c), (StatusCode::UNAUTHORIZED, -1));
    guarded.shutdown();
}
