//! The IAD Server dialect over a real socket: nonce and public key extensions, capture
//! liveness with face liveness, tampering, replay, bundle errors and face errors in the
//! reference's error shape, extraction, and BI records.

mod common;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use common::http::*;
use facegate::api::iad::capture::{
    self, bundle::to_base64, seal, BundlePayload, CaptureConfig, CaptureMeta, CaptureVerifier,
};
use facegate::app::Services;
use facegate::bi::now_ms;
use facegate::server::ServerHandle;
use hyper::{Method, StatusCode};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};

const SDK: &str = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5061728394a5b6c7d8e";
const ERROR_KEYS: &[&str] = &[
    "timestamp",
    "status",
    "error",
    "message",
    "path",
    "error_code",
];

fn key() -> &'static RsaPrivateKey {
    static K: OnceLock<RsaPrivateKey> = OnceLock::new();
    K.get_or_init(|| capture::generate_key(2048).unwrap())
}

fn services() -> Services {
    let cfg = CaptureConfig {
        sdk_digests: vec![SDK.to_string()],
        ..CaptureConfig::default()
    };
    Services {
        bi: None,
        capture: Some(Arc::new(CaptureVerifier::new(cfg, key().clone()).unwrap())),
        ledger: None,
    }
}

async fn post_bundle(h: &ServerHandle, path: &str, body: Vec<u8>) -> Answer {
    request(
        h,
        Method::POST,
        path,
        &[("content-type", "application/octet-stream")],
        Bytes::from(body),
    )
    .await
}

/// A nonce from the server's extension endpoint.
async fn nonce(h: &ServerHandle) -> String {
    let a = request(h, Method::POST, "/iad/nonce", &[], Bytes::new()).await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(keys(&v), key_set(&["nonce", "expires_at"]));
    v["nonce"].as_str().unwrap().to_string()
}

/// A bundle of fixture `name` as a desktop web capture, sealed for the server's public key
/// (fetched from `/iad/public_key`).
async fn bundle(h: &ServerHandle, name: &str) -> (Vec<u8>, BundlePayload) {
    let pem = get(h, "/iad/public_key").await;
    assert_eq!(pem.status, StatusCode::OK);
    let public = capture::parse_public_key(std::str::from_utf8(&pem.body).unwrap()).unwrap();
    let image = fixture_bytes(name);
    let (w, hgt) = match name {
        "group-1.jpg" => (1920, 1440),
        _ => (480, 640),
    };
    let p = BundlePayload {
        image,
        meta: CaptureMeta {
            os: "Windows".into(),
            os_version: "11".into(),
            camera_label: "Integrated Webcam".into(),
            app_id: "com.example.kyc".into(),
            sdk_version: "1.0.0".into(),
            sdk_digest: SDK.into(),
            capture_time_ms: now_ms() - 1500,
            nonce: nonce(h).await,
            image_width: w,
            image_height: hgt,
            ..CaptureMeta::default()
        },
        external: Some(json!({"session": "abc-123", "step": 2})),
    };
    (seal(&public, &p).unwrap(), p)
}

fn assert_error(a: &Answer, status: u16, message: &str, code: &str, path: &str) {
    assert_eq!(
        a.status.as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let v = a.json();
    assert_eq!(keys(&v), key_set(ERROR_KEYS), "{v}");
    assert_eq!(v["status"], status);
    assert_eq!(v["message"], message, "{v}");
    assert_eq!(v["error_code"], code, "{v}");
    assert_eq!(v["path"], path);
    let ts = v["timestamp"].as_str().unwrap();
    assert!(ts.ends_with("+00:00") && ts.contains('T'), "{ts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_liveness_verdicts_replay_and_tampering() {
    let h = start(config(|_| {}), services()).await;
    let v = get(&h, "/iad/api_version").await.json();
    assert_eq!(keys(&v), key_set(&["product", "version", "expirationDate"]));
    assert_eq!(v["product"], "IADServer");

    let (live, _) = bundle(&h, "image_T1.jpg").await;
    let a = post_bundle(&h, "/check_capture_liveness", live.clone()).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let v = a.json();
    assert_eq!(keys(&v), key_set(&["capture_liveness", "face_liveness"]));
    assert_eq!(
        v["capture_liveness"],
        json!({"probability": 1.0, "score": 1.0, "rejection": []})
    );
    assert_eq!(keys(&v["face_liveness"]), key_set(&["probability"]));
    assert!(v["face_liveness"]["probability"].as_f64().unwrap() > 0.5);

    // The same bundle again: its nonce is spent.
    let v = post_bundle(&h, "/iad/check_capture_liveness", live.clone())
        .await
        .json();
    let rej = v["capture_liveness"]["rejection"].as_array().unwrap();
    assert!(rej.contains(&json!("SUSPICIOUS_ACTIVITY")), "{v}");
    assert!(v["capture_liveness"]["probability"].as_f64().unwrap() < 0.5);

    // A flipped ciphertext byte.
    let (mut tampered, _) = bundle(&h, "image_T1.jpg").await;
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    let v = post_bundle(&h, "/check_capture_liveness", tampered.clone())
        .await
        .json();
    assert_eq!(
        v["capture_liveness"],
        json!({"probability": 0.0, "score": -1.0, "rejection": ["UNTRUSTED_CORRUPTED_PAYLOAD"]})
    );
    assert!(v.get("face_liveness").is_none());

    // Not a bundle at all.
    for (body, path) in [
        (b"garbage".to_vec(), "/check_capture_liveness"),
        (Vec::new(), "/iad/check_capture_liveness"),
    ] {
        let a = post_bundle(&h, path, body).await;
        assert_error(&a, 400, "Failed to parse file", "UNKNOWN", path);
        assert_eq!(a.json()["error"], "Bad Request");
    }

    // A face error: the reference's shape with the image validation code.
    let (group, _) = bundle(&h, "group-1.jpg").await;
    let a = post_bundle(&h, "/check_capture_liveness", group).await;
    assert_error(
        &a,
        400,
        "Too many faces detected",
        "TOO_MANY_FACES",
        "/check_capture_liveness",
    );

    // BI: one record per decision, the IAD dialect only.
    let rs = get(&h, "/iad/bi_records").await.json();
    let rs = rs.as_array().unwrap();
    assert_eq!(rs.len(), 6, "{rs:?}");
    assert!(rs
        .iter()
        .all(|r| r["dialect"] == "iad" && r["pipeline"] == "iad"));
    assert_eq!(rs[0]["route"], "/check_capture_liveness");
    assert_eq!(rs[0]["os"], "DESKTOP");
    assert_eq!(rs[0]["probability"], 1.0);
    assert_eq!(rs[0]["error_code"], Value::Null);
    assert_eq!(rs[1]["error_code"], "SUSPICIOUS_ACTIVITY");
    assert_eq!(rs[2]["error_code"], "UNTRUSTED_CORRUPTED_PAYLOAD");
    assert_eq!(rs[3]["error_code"], "UNKNOWN");
    assert_eq!(rs[5]["error_code"], "TOO_MANY_FACES");
    // The bare /bi_records belongs to IDLive by default: no IAD records there.
    assert_eq!(get(&h, "/bi_records").await.json(), json!([]));
    let a = get(&h, "/iad/bi_records?date_from=2024-02-30").await;
    assert_error(
        &a,
        400,
        "date_from: invalid date \"2024-02-30\": expected yyyy-MM-dd, e.g. 2024-03-31",
        "UNKNOWN",
        "/iad/bi_records",
    );
    let today = facegate::bi::Date::from_unix_ms(now_ms()).to_string();
    let n = get(
        &h,
        &format!("/iad/bi_records?date_from={today}&date_to={today}"),
    )
    .await
    .json();
    assert_eq!(n.as_array().unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extraction_and_its_errors() {
    let h = start(config(|_| {}), services()).await;
    let (b, p) = bundle(&h, "image_T1.jpg").await;
    let a = post_bundle(&h, "/extract_image", b.clone()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers.get("content-type").unwrap(), "image/jpeg");
    assert_eq!(&a.body[..], &p.image[..]);

    let v = post_bundle(&h, "/extract_data?types=photo,external", b.clone())
        .await
        .json();
    assert_eq!(keys(&v), key_set(&["photo", "external"]));
    assert_eq!(v["photo"], to_base64(&p.image));
    assert_eq!(v["external"], json!({"session": "abc-123", "step": 2}));
    let v = post_bundle(&h, "/iad/extract_data?types=external", b.clone())
        .await
        .json();
    assert_eq!(v, json!({"external": {"session": "abc-123", "step": 2}}));
    let v = post_bundle(&h, "/extract_data?types=photo%2Cexternal", b.clone())
        .await
        .json();
    assert_eq!(keys(&v), key_set(&["photo", "external"]));
    let v = post_bundle(&h, "/extract_data?types=photo&types=external", b.clone())
        .await
        .json();
    assert_eq!(keys(&v), key_set(&["photo", "external"]));

    for q in ["types=selfie", "", "types="] {
        let path = format!("/extract_data?{q}");
        let a = post_bundle(&h, &path, b.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{q}");
        let v = a.json();
        assert_eq!(keys(&v), key_set(ERROR_KEYS));
        assert_eq!(v["error_code"], "UNKNOWN");
        assert_eq!(v["path"], "/extract_data");
    }
    for path in ["/extract_image", "/extract_data"] {
        let full = if path == "/extract_data" {
            "/extract_data?types=photo"
        } else {
            path
        };
        let a = post_bundle(&h, full, b"junk".to_vec()).await;
        assert_error(&a, 400, "Failed to parse file", "UNKNOWN", path);
        let mut t = b.clone();
        let last = t.len() - 1;
        t[last] ^= 0x01;
        let a = post_bundle(&h, full, t).await;
        assert_error(&a, 400, "Failed to decrypt message", "UNKNOWN", path);
    }
    // Extraction does not spend the nonce: the bundle still verifies.
    let v = post_bundle(&h, "/check_capture_liveness", b).await.json();
    assert_eq!(v["capture_liveness"]["rejection"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn face_liveness_can_be_off_and_a_server_without_a_key_answers_503() {
    let h = start(config(|c| c.iad.face_liveness = false), services()).await;
    let (b, _) = bundle(&h, "image_T1.jpg").await;
    let v = post_bundle(&h, "/check_capture_liveness", b).await.json();
    assert_eq!(keys(&v), key_set(&["capture_liveness"]));
    assert_eq!(v["capture_liveness"]["probability"], 1.0);
    // Without face liveness the group photo is not a face error.
    let (g, _) = bundle(&h, "group-1.jpg").await;
    let a = post_bundle(&h, "/check_capture_liveness", g).await;
    assert_eq!(a.status, StatusCode::OK);
    h.shutdown();
    h.stopped().await;

    let h = start(config(|_| {}), Services::default()).await;
    for (m, path) in [
        (Method::POST, "/check_capture_liveness"),
        (Method::POST, "/extract_image"),
        (Method::POST, "/iad/nonce"),
        (Method::GET, "/iad/public_key"),
    ] {
        let a = request(&h, m, path, &[], Bytes::from_static(b"x")).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(a.headers.get("retry-after").unwrap(), "1");
        let v = a.json();
        assert_eq!(keys(&v), key_set(ERROR_KEYS));
        assert_eq!(v["error"], "Service Unavailable");
    }
}

/// A JPEG of the fixture re-encoded without any EXIF block (as an injected frame would be).
fn jpeg_without_exif(name: &str) -> Vec<u8> {
    let img = image::load_from_memory(&fixture_bytes(name))
        .unwrap()
        .to_rgb8();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// Every capture rejection reason reaches the client over HTTP in the reference's shape:
/// 200, `capture_liveness.probability < 0.5`, the reason listed in `rejection`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_reason_is_answered_over_http() {
    let h = start(config(|_| {}), services()).await;
    let public = rsa::RsaPublicKey::from(key());
    type Edit = fn(&mut BundlePayload);
    let cases: [(&str, Edit); 6] = [
        ("UNTRUSTED_ENVIRONMENT", |p| {
            p.meta.camera_label = "OBS Virtual Camera".into()
        }),
        ("SDK_INTEGRITY_VIOLATION", |p| {
            p.meta.sdk_digest = "0".repeat(64)
        }),
        ("UNTRUSTED_DEVICE", |p| p.meta.image_width = 999),
        ("SUSPICIOUS_ACTIVITY", |p| {
            p.meta.capture_time_ms = now_ms() + 600_000
        }),
        // The fixture's EXIF names a desktop photo tool (Shotwell) while a phone is claimed.
        ("UNTRUSTED_CONTENT", |p| {
            p.meta.os = "Android".into();
            p.meta.os_version = "14".into();
        }),
        // A phone capture without any EXIF block.
        ("UNTRUSTED_CONTENT_LOW_CONFIDENCE", |p| {
            p.image = jpeg_without_exif("image_T1.jpg");
            p.meta.os = "Android".into();
            p.meta.os_version = "14".into();
        }),
    ];
    for (reason, edit) in cases {
        let (_, mut p) = bundle(&h, "image_T1.jpg").await;
        edit(&mut p);
        let a = post_bundle(&h, "/check_capture_liveness", seal(&public, &p).unwrap()).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{reason}: {}",
            String::from_utf8_lossy(&a.body)
        );
        let v = a.json();
        let cl = &v["capture_liveness"];
        let reasons: Vec<&str> = cl["rejection"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert!(reasons.contains(&reason), "{reason}: got {reasons:?}");
        assert!(cl["probability"].as_f64().unwrap() < 0.5, "{reason}: {cl}");
    }
    h.shutdown();
    h.stopped().await;
}

/// The capture's face analysis runs through the micro-batcher like every other route: it is
/// counted in the detector's batches and the answer carries the batcher's timing headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_face_liveness_goes_through_the_batcher() {
    let h = start(config(|_| {}), services()).await;
    let before = h.batcher().stats().batches[0];
    let (b, _) = bundle(&h, "image_T1.jpg").await;
    let a = post_bundle(&h, "/check_capture_liveness", b).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert!(a.json()["face_liveness"]["probability"].as_f64().unwrap() > 0.5);
    assert_eq!(h.batcher().stats().batches[0], before + 1);
    assert!(a.headers.contains_key("x-queue-time") && a.headers.contains_key("x-inference-time"));
    h.shutdown();
    h.stopped().await;
}
