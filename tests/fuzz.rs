//! Property-based fuzzing of every parser of untrusted bytes (templates, archives, multipart,
//! images, IAD bundles, query strings, base64, Knomi requests and packages, bearer JWTs,
//! videos): arbitrary inputs and mutations (byte flips, truncations, insertions, splices) of
//! valid seeds made from the fixtures. Each parser must answer `Ok` or a clean error, never
//! panic, and keep its stated bounds.
//!
//! CI runs the default 256 cases per property. The long run:
//! `PROPTEST_CASES=200000 cargo test --release --features video --test fuzz`. A failing case
//! is saved under `tests/fuzz.proptest-regressions` and replayed first on every later run (a
//! crash found becomes a regression test).

mod common;

use std::sync::OnceLock;

use bytes::Bytes;
use common::fixture;
use facegate::api::iad::capture::bundle::{parse_envelope, parse_payload};
use facegate::api::iad::capture::checks::inspect_jpeg;
use facegate::api::input::{base64_image, multipart, zip_entries, ArchiveLimits};
use facegate::api::knomi::package::{PackageOpener, PackageSettings};
use facegate::api::knomi::request::{parse_json, parse_request, ParseLimits};
use facegate::api::query::Query;
use facegate::engine::template::TEMPLATE_VERSION;
use facegate::engine::FaceTemplate;
use facegate::preprocess::decode::{
    decode_region, decode_rgb, decode_scaled, jpeg_is_complete, DecodeLimits, REDUCTIONS,
};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::HeaderMap;
use proptest::prelude::*;

/// A mutation of a seed: flip, truncate, insert, overwrite a run, or splice two halves.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Overwrite(usize, Vec<u8>),
    Duplicate(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let one = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Edit::Flip(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Edit::Overwrite(i, v)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Duplicate(a, b)),
    ];
    prop::collection::vec(one, 1..6)
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for e in edits {
        let n = v.len().max(1);
        match e {
            Edit::Flip(i, b) => {
                if !v.is_empty() {
                    v[i % n] ^= b;
                }
            }
            Edit::Truncate(i) => v.truncate(i % n),
            Edit::Insert(i, bytes) => {
                let at = i % (v.len() + 1);
                v.splice(at..at, bytes.iter().copied());
            }
            Edit::Overwrite(i, bytes) => {
                for (k, b) in bytes.iter().enumerate() {
                    if let Some(x) = v.get_mut((i % n) + k) {
                        *x = *b;
                    }
                }
            }
            Edit::Duplicate(a, b) => {
                let (a, b) = ((a % n).min(b % n), (a % n).max(b % n));
                if b <= v.len() {
                    let run: Vec<u8> = v[a..b].iter().copied().take(4096).collect();
                    v.splice(a..a, run);
                }
            }
        }
    }
    v
}

/// Seeds from the fixtures: a JPEG and a PNG of the live photo.
fn images() -> &'static [Vec<u8>; 2] {
    static S: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    S.get_or_init(|| {
        let jpeg = std::fs::read(fixture("image_T1.jpg")).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        let small = image::imageops::thumbnail(&img, 96, 128);
        let mut png = std::io::Cursor::new(Vec::new());
        small.write_to(&mut png, image::ImageFormat::Png).unwrap();
        [jpeg, png.into_inner()]
    })
}

fn template_seed() -> Vec<u8> {
    FaceTemplate {
        version: TEMPLATE_VERSION.into(),
        descriptor: (0..128).map(|i| (i as f32 * 0.37).sin() * 0.1).collect(),
    }
    .to_bytes()
}

fn zip_seed() -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in [("a.jpg", &images()[1]), ("dir/b.png", &images()[1])] {
        w.start_file(name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn multipart_seed() -> (String, Vec<u8>) {
    let b = "fuzz-boundary";
    let mut body = Vec::new();
    for (name, file, data) in [
        (
            "payload",
            None,
            &br#"{"analyses":[{"type":"quality"}]}"#[..],
        ),
        ("media", Some("x.png"), &images()[1][..200]),
    ] {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(f) = file {
            body.extend_from_slice(
                format!("; filename=\"{f}\"\r\nContent-Type: image/png").as_bytes(),
            );
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

fn small_limits() -> DecodeLimits {
    DecodeLimits {
        max_bytes: 1 << 20,
        max_pixels: 1 << 20,
        min_side: 8,
        ..DecodeLimits::default()
    }
}

proptest! {
    #[test]
    fn templates_parse_or_refuse(e in edits(), raw in prop::collection::vec(any::<u8>(), 0..700)) {
        let seed = template_seed();
        let mutated = apply(&seed, &e);
        match FaceTemplate::from_bytes(&mutated, TEMPLATE_VERSION) {
            // A mutation the checksum cannot see must still give a well-formed template.
            Ok(t) => prop_assert!(t.descriptor.len() == 128 && t.descriptor.iter().all(|v| v.is_finite())),
            Err(err) => prop_assert!(err.to_string().starts_with("invalid argument: biometric template")),
        }
        let _ = FaceTemplate::from_bytes(&raw, TEMPLATE_VERSION);
    }

    #[test]
    fn archives_inflate_within_their_bounds(e in edits(), max_entries in 1usize..4, max_total in 1u64..20_000) {
        let limits = ArchiveLimits { max_entries, max_entry_bytes: max_total, max_total_bytes: max_total };
        if let Ok(entries) = zip_entries(&apply(&zip_seed(), &e), &limits) {
            prop_assert!(entries.len() <= max_entries);
            let total: u64 = entries.iter().map(|(_, b)| b.len() as u64).sum();
            prop_assert!(total <= max_total);
        }
    }

    #[test]
    fn multipart_bodies_parse_or_refuse(e in edits(), max_parts in 1usize..4) {
        let (ct, body) = multipart_seed();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(&ct).unwrap());
        let fut = multipart(&headers, Bytes::from(apply(&body, &e)), max_parts);
        // The whole body is in memory: the parser never waits.
        let parsed = futures_util::FutureExt::now_or_never(fut);
        prop_assert!(parsed.is_some());
        if let Some(Ok(parts)) = parsed {
            prop_assert!(parts.len() <= max_parts);
        }
    }

    #[test]
    fn images_decode_within_their_bounds(e in edits(), which in 0usize..2, k in 0usize..4) {
        let bytes = apply(&images()[which], &e);
        let _ = jpeg_is_complete(&bytes);
        if let Ok(img) = decode_rgb(&bytes, &small_limits()) {
            prop_assert!(u64::from(img.width()) * u64::from(img.height()) <= 1 << 20);
            prop_assert!(img.width() >= 8 && img.height() >= 8);
        }
        // Reduced in the DCT domain: within the bounds of the full-resolution size.
        let s = REDUCTIONS[k];
        if let Ok(d) = decode_scaled(&bytes, &small_limits(), |_| s) {
            let (w, h) = d.full_size;
            prop_assert!(u64::from(w) * u64::from(h) <= 1 << 20 && w.min(h) >= 8);
            prop_assert!(d.image.width() <= w.div_ceil(d.scale) + 1);
            prop_assert!(d.image.height() <= h.div_ceil(d.scale) + 1);
            // A region of it, through libjpeg-turbo's cropping region where it applies.
            let region = [w / 3, h / 4, w / 3 + w / 2, h];
            if let Ok((img, origin)) = decode_region(&bytes, &small_limits(), s, region) {
                prop_assert!(origin[0] <= region[0] && origin[1] <= region[1]);
                prop_assert!(img.width() <= w.div_ceil(d.scale) && img.height() <= h.div_ceil(d.scale));
            }
        }
        let _ = inspect_jpeg(&bytes);
    }

    #[test]
    fn query_strings_and_base64_parse_or_refuse(q in ".{0,200}", b in "[A-Za-z0-9+/=_\\- \n:;,.a-z]{0,300}") {
        if let Ok(parsed) = Query::parse(Some(&q)) {
            let _ = parsed.only(&["calibration", "template"]);
            let _ = parsed.flag("template");
        }
        if let Ok(bytes) = base64_image(&b, 64, "field") {
            prop_assert!(bytes.len() <= 64);
        }
    }

    #[test]
    fn knomi_requests_parse_or_refuse(json in knomi_json()) {
        if let Ok(doc) = parse_json(json.as_bytes()) {
            let _ = parse_request(&doc, "", ParseLimits { max_frames: 4, max_frame_bytes: 1 << 16 });
        }
    }

    #[test]
    fn bundles_and_packages_parse_or_refuse(raw in prop::collection::vec(any::<u8>(), 0..600), json in knomi_json()) {
        if let Ok(_env) = parse_envelope(&raw) {}
        let _ = parse_payload(&raw);
        let _ = opener().open_blocking(json.as_bytes());
        let _ = opener().open_blocking(&raw);
    }
}

proptest! {
    #[test]
    fn bearer_tokens_verify_or_refuse(token in jwt_ish(), e in edits()) {
        use facegate::server::Authenticator;
        let mutated = String::from_utf8_lossy(&apply(token.as_bytes(), &e)).into_owned();
        for t in [token, mutated] {
            let Ok(req) = hyper::Request::builder()
                .header("authorization", format!("Bearer {t}"))
                .body(())
            else {
                continue;
            };
            let (parts, ()) = req.into_parts();
            // Random tokens never verify: no signature can be guessed.
            prop_assert!(verifier().authenticate(&parts).is_err());
        }
    }
}

/// Three dot-separated base64url segments, the first a JSON header sometimes.
fn jwt_ish() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9".to_string()),
            Just("eyJhbGciOiJub25lIn0".to_string()),
            "[A-Za-z0-9_-]{0,60}",
        ],
        "[A-Za-z0-9_-]{0,120}",
        "[A-Za-z0-9_-]{0,60}",
        0usize..4,
    )
        .prop_map(|(h, p, s, dots)| match dots {
            0 => format!("{h}.{p}.{s}"),
            1 => format!("{h}.{p}"),
            2 => format!("{h}..{s}"),
            _ => format!("{h}.{p}.{s}.{s}"),
        })
}

fn verifier() -> &'static facegate::api::auth::JwtVerifier {
    static V: OnceLock<facegate::api::auth::JwtVerifier> = OnceLock::new();
    V.get_or_init(|| {
        facegate::api::auth::JwtVerifier::new(facegate::api::auth::JwtConfig {
            secret: Some("a-32-byte-long-shared-secret-0123".into()),
            ..Default::default()
        })
        .unwrap()
    })
}

/// JSON-ish documents around Knomi's request and package shapes, often malformed.
fn knomi_json() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        (-1e12f64..1e12).prop_map(|f| f.to_string()),
        "[a-zA-Z0-9+/=]{0,40}".prop_map(|s| format!("\"{s}\"")),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ];
    let key = prop_oneof![
        Just("video"),
        Just("workflow_data"),
        Just("workflow"),
        Just("frames"),
        Just("data"),
        Just("timestamp"),
        Just("tags"),
        Just("rotation"),
        Just("security_level"),
        Just("key"),
        Just("iv"),
        Just("p"),
    ];
    let leaf = prop::collection::vec((key, value), 0..6).prop_map(|kv| {
        let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    });
    (leaf.clone(), leaf, any::<usize>()).prop_map(|(a, b, cut)| {
        let nested = format!(
            "{{\"video\":{{\"workflow_data\":{{\"workflow\":\"charlie4\",\"frames\":[{a}]}}}},\"x\":{b}}}"
        );
        // Sometimes cut short, to be malformed.
        if cut % 4 == 0 {
            nested[..cut % (nested.len() + 1)].to_string()
        } else {
            nested
        }
    })
}

fn opener() -> &'static PackageOpener {
    static O: OnceLock<PackageOpener> = OnceLock::new();
    O.get_or_init(|| {
        let key = facegate::api::iad::capture::generate_key(2048).unwrap();
        PackageOpener::new(
            key,
            PackageSettings {
                max_decryptions_per_s: 0,
                remember_s: 60,
                max_remembered: 1000,
                max_p_bytes: 1 << 16,
            },
        )
    })
}

#[cfg(feature = "video")]
mod video {
    use super::*;
    use facegate::preprocess::video::{decode_sampled, encode_h264_mp4, VideoLimits};

    fn seed() -> &'static Vec<u8> {
        static S: OnceLock<Vec<u8>> = OnceLock::new();
        S.get_or_init(|| {
            let frames: Vec<image::RgbImage> = (0..6)
                .map(|i| {
                    image::RgbImage::from_fn(64, 48, |x, y| {
                        image::Rgb([(x * 4) as u8, (y * 5) as u8, (i * 40) as u8])
                    })
                })
                .collect();
            encode_h264_mp4(&frames, 10).unwrap()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases / 4, ..ProptestConfig::default() })]
        #[test]
        fn videos_decode_within_their_bounds(e in edits()) {
            let limits = VideoLimits { max_decoded_frames: 30, sample_frames: 3, ..VideoLimits::default() };
            if let Ok(v) = decode_sampled(&apply(seed(), &e), &limits) {
                prop_assert!(v.frames.len() <= 3 && v.decoded <= 30);
                prop_assert_eq!(v.frames.len(), v.timestamps_s.len());
            }
        }
    }
}

/// A server whose models never load, on a runtime of its own: every dialect still parses,
/// bounds and refuses its requests as usual, and a request that would reach the engine is
/// answered at once as unavailable, so each case costs one loopback exchange.
fn dead_server() -> &'static (tokio::runtime::Runtime, facegate::server::ServerHandle) {
    static S: OnceLock<(tokio::runtime::Runtime, facegate::server::ServerHandle)> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let h = rt.block_on(async {
            let cfg = common::http::config(|c| {
                c.bioid.clients = vec![format!("app={}", B64.encode(BWS_KEY))];
            });
            let loader: facegate::batcher::Loader = Box::new(|| {
                Err(facegate::Error::Unavailable(
                    "no models in this test".into(),
                ))
            });
            let batcher = facegate::batcher::Batcher::start(cfg.server.batcher(), loader).unwrap();
            facegate::app::start(&cfg, batcher, Default::default())
                .await
                .unwrap()
        });
        (rt, h)
    })
}

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// The BWS client key of [`dead_server`].
const BWS_KEY: [u8; 32] = [0x5a; 32];

/// Posts `body` to `path` on [`dead_server`]: the answer must come, never be a 500, and be
/// JSON whenever it says so.
fn answered_cleanly(
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(), TestCaseError> {
    let (rt, h) = dead_server();
    let a = rt.block_on(common::http::request(
        h,
        hyper::Method::POST,
        path,
        headers,
        Bytes::from(body),
    ));
    let text = String::from_utf8_lossy(&a.body);
    prop_assert!(
        a.status.as_u16() < 500 || a.status.as_u16() == 503,
        "{path}: {} {text}",
        a.status
    );
    let json = a
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if json {
        prop_assert!(
            serde_json::from_slice::<serde_json::Value>(&a.body).is_ok(),
            "{path}: {text}"
        );
    }
    Ok(())
}

fn bws_token() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({"sub": "app", "aud": "BWS", "exp": now + 86_400, "nbf": now - 5, "iat": now});
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&BWS_KEY),
        )
        .unwrap();
        format!("Bearer {jwt}")
    })
}

/// Two small JPEGs as a BWS `livenessdetection` body.
fn bws_seed() -> &'static Vec<u8> {
    static S: OnceLock<Vec<u8>> = OnceLock::new();
    S.get_or_init(|| {
        let img = image::load_from_memory(&images()[1]).unwrap().to_rgb8();
        let jpeg = facegate::preprocess::decode::encode_jpeg(&img, 80).unwrap();
        serde_json::to_vec(&serde_json::json!({"liveImages": [
            {"image": format!("data:image/jpeg;base64,{}", B64.encode(&jpeg)), "tags": ["up"]},
            {"image": B64.encode(&jpeg), "tags": []}
        ]}))
        .unwrap()
    })
}

proptest! {
    // 64 loopback exchanges per property by default; PROPTEST_CASES sets the long run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    /// BioID's JSON body, mutated, over HTTP.
    #[test]
    fn bws_bodies_are_answered_cleanly(e in edits()) {
        let body = apply(bws_seed(), &e);
        answered_cleanly(
            "/api/v1/livenessdetection",
            &[("content-type", "application/json"), ("authorization", bws_token())],
            body,
        )?;
    }

    /// IDLive's `/check_image` `data` part (its JSON), mutated, beside a valid image part.
    #[test]
    fn idlive_check_image_data_is_answered_cleanly(e in edits()) {
        let seed = br#"{"domain":"GENERAL","pipelines":[{"pipeline":"minifasnet-dual","calibration":"REGULAR"},{"pipeline":"minifasnet-v2"}]}"#;
        let data = apply(seed, &e);
        let (ct, body) = common::http::multipart(&[
            common::http::field("data", &data),
            common::http::file("image", "t1.png", &images()[1]),
        ]);
        answered_cleanly("/check_image", &[("content-type", ct.as_str())], body.to_vec())?;
    }

    /// Oz's `payload` part (its JSON), mutated, beside a valid media part.
    #[test]
    fn oz_payloads_are_answered_cleanly(e in edits()) {
        let seed = br#"{"analyses":[{"type":"quality","source_media":["m"]}],"media:tags":{"m":["photo_selfie"]}}"#;
        let payload = apply(seed, &e);
        let (ct, body) = common::http::multipart(&[
            common::http::file("m", "m.png", &images()[1]),
            common::http::field("payload", &payload),
        ]);
        answered_cleanly("/v1/face/liveness/detect", &[("content-type", ct.as_str())], body.to_vec())?;
    }
}

/// The HTTP properties reach each dialect's parser: the seed itself gets as far as the engine
/// (unavailable here) and a broken document is refused by the parser, naming JSON.
#[test]
fn the_http_properties_reach_the_parsers() {
    let (rt, h) = dead_server();
    let post = |path: &str, headers: &[(&str, &str)], body: Vec<u8>| {
        let a = rt.block_on(common::http::request(
            h,
            hyper::Method::POST,
            path,
            headers,
            Bytes::from(body),
        ));
        (
            a.status.as_u16(),
            String::from_utf8_lossy(&a.body).to_string(),
        )
    };
    let bws = [
        ("content-type", "application/json"),
        ("authorization", bws_token()),
    ];
    let (status, text) = post("/api/v1/livenessdetection", &bws, bws_seed().clone());
    assert_eq!(status, 503, "{text}");
    let (status, text) = post(
        "/api/v1/livenessdetection",
        &bws,
        b"{\"liveImages\": [".to_vec(),
    );
    assert!(status == 400 && text.contains("JSON"), "{status} {text}");
    let image = common::http::file("image", "t1.png", &images()[1]);
    for (data, unavailable) in [
        (
            &br#"{"pipelines":[{"pipeline":"minifasnet-dual"}]}"#[..],
            true,
        ),
        (b"{\"pipelines\": [", false),
    ] {
        let (ct, body) = common::http::multipart(&[common::http::field("data", data), image]);
        let (_, text) = post(
            "/check_image",
            &[("content-type", ct.as_str())],
            body.to_vec(),
        );
        assert!(
            text.contains(if unavailable { "unavailable" } else { "JSON" }),
            "{text}"
        );
    }
    let media = common::http::file("m", "m.png", &images()[1]);
    // Oz answers an unavailable engine with its 400 LDE-001002 (the reference's TFSS error).
    for (payload, unavailable) in [
        (&br#"{"analyses":[{"type":"quality"}]}"#[..], true),
        (b"{\"analyses\": [", false),
    ] {
        let (ct, body) = common::http::multipart(&[media, common::http::field("payload", payload)]);
        let (got, text) = post(
            "/v1/face/liveness/detect",
            &[("content-type", ct.as_str())],
            body.to_vec(),
        );
        assert_eq!(got, 400, "{text}");
        assert_eq!(text.contains("engine unavailable"), unavailable, "{text}");
    }
}
