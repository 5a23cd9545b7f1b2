//! FGCB capture bundles end to end: sealing, every IAD rejection reason from its own crafted
//! bundle, the bundle errors, extraction, the engine's face liveness, and the CLI tools.
//!
//! Every check goes through the production path of `/check_capture_liveness`
//! (`capture::check_capture`: the checks on the blocking pool, then, with face liveness on,
//! the payload image through the micro-batcher, then `finish`).

mod common;

use std::sync::{Arc, OnceLock};

use candle_core::Device;
use common::*;
use facegate::api::iad::capture::checks::{insert_exif, ExifTags};
use facegate::api::iad::capture::{
    self, check_capture, seal, BundleFailure, BundlePayload, CaptureConfig, CaptureError,
    CaptureMeta, CaptureRejection as R, CaptureReport, CaptureVerifier,
};
use facegate::batcher::{Batcher, BatcherConfig, Loader, Status};
use facegate::bi::now_ms;
use facegate::engine::{Engine, EngineConfig};
use facegate::Error;
use rsa::RsaPrivateKey;

const SDK: &str = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5061728394a5b6c7d8e";

fn key() -> &'static RsaPrivateKey {
    static K: OnceLock<RsaPrivateKey> = OnceLock::new();
    K.get_or_init(|| capture::generate_key(2048).unwrap())
}

fn verifier() -> Arc<CaptureVerifier> {
    let cfg = CaptureConfig {
        sdk_digests: vec![SDK.to_string()],
        ..CaptureConfig::default()
    };
    Arc::new(CaptureVerifier::new(cfg, key().clone()).unwrap())
}

/// `/check_capture_liveness` as the server runs it, at `now` (Unix ms), with face liveness
/// through `batcher` when given.
fn check_at(
    v: &Arc<CaptureVerifier>,
    bytes: &[u8],
    batcher: Option<&Batcher>,
    now: i64,
) -> Result<CaptureReport, CaptureError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(check_capture(
        v,
        batcher,
        bytes::Bytes::copy_from_slice(bytes),
        now,
        "test.capture",
    ))
    .map(|o| o.report)
}

/// [`check_at`] now.
fn check(
    v: &Arc<CaptureVerifier>,
    bytes: &[u8],
    batcher: Option<&Batcher>,
) -> Result<CaptureReport, CaptureError> {
    check_at(v, bytes, batcher, now_ms())
}

/// A 640x480 JPEG with EXIF Make/Model, as a phone camera writes it.
fn phone_jpeg(make: &str, model: &str) -> Vec<u8> {
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x / 3) as u8, (y / 2) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    let tags = ExifTags {
        make: Some(make.into()),
        model: Some(model.into()),
        software: None,
    };
    insert_exif(&out.into_inner(), &tags).unwrap()
}

/// A payload that passes every check against `v` (fresh nonce, known SDK, consistent claims).
fn good_payload(v: &CaptureVerifier) -> BundlePayload {
    BundlePayload {
        image: phone_jpeg("Google", "Pixel 8"),
        meta: CaptureMeta {
            device_model: "Pixel 8".into(),
            manufacturer: "Google".into(),
            os: "Android".into(),
            os_version: "14".into(),
            camera_label: "camera2 1, facing front".into(),
            app_id: "com.example.kyc".into(),
            sdk_version: "1.0.0".into(),
            sdk_digest: SDK.into(),
            capture_time_ms: now_ms() - 1500,
            nonce: v.issue_nonce().unwrap().nonce,
            image_width: 640,
            image_height: 480,
            ..CaptureMeta::default()
        },
        external: Some(serde_json::json!({"session": "abc-123", "step": 2})),
    }
}

fn verify(v: &Arc<CaptureVerifier>, p: &BundlePayload) -> CaptureReport {
    check(v, &seal(&key().to_public_key(), p).unwrap(), None).unwrap()
}

/// Asserts that the report rejects with exactly `reasons`, below 0.5.
fn assert_rejects(r: &CaptureReport, reasons: &[R]) {
    assert_eq!(r.capture_liveness.rejection, reasons, "{:#?}", r.findings);
    assert!(
        r.capture_liveness.probability < 0.5,
        "{:?}",
        r.capture_liveness
    );
}

fn bundle_failure(e: CaptureError) -> BundleFailure {
    match e {
        CaptureError::Bundle { failure, .. } => failure,
        other => panic!("expected a bundle error, got {other:?}"),
    }
}

#[test]
fn round_trip_passes_every_check_and_extracts() {
    let v = verifier();
    let p = good_payload(&v);
    let bytes = seal(&key().to_public_key(), &p).unwrap();
    assert_eq!(&bytes[..5], b"FGCB\x01");
    let r = check(&v, &bytes, None).unwrap();
    assert!(r.capture_liveness.rejection.is_empty(), "{:#?}", r.findings);
    assert_eq!(
        (r.capture_liveness.probability, r.capture_liveness.score),
        (1.0, 1.0)
    );
    assert_eq!(r.os, "ANDROID");
    assert_eq!(r.face_error, None);
    assert_eq!(
        r.response(),
        serde_json::json!({"capture_liveness": {"probability": 1.0, "score": 1.0, "rejection": []}})
    );
    assert_eq!(v.extract_image(&bytes).unwrap(), p.image);
    let d = v.extract_data(&bytes, "photo,external").unwrap();
    assert_eq!(
        d["photo"],
        serde_json::Value::from(capture::bundle::to_base64(&p.image))
    );
    assert_eq!(d["external"], p.external.clone().unwrap());
    let only = v.extract_data(&bytes, "external").unwrap();
    assert_eq!(only.len(), 1);
}

#[test]
fn virtual_camera_and_emulators_are_untrusted_environments() {
    let v = verifier();
    let mut p = good_payload(&v);
    p.meta.camera_label = "OBS Virtual Camera".into();
    assert_rejects(&verify(&v, &p), &[R::UntrustedEnvironment]);

    let mut p = good_payload(&v);
    p.meta.camera_label = "Dummy video device (0x0000) v4l2loopback".into();
    assert_rejects(&verify(&v, &p), &[R::UntrustedEnvironment]);

    let mut p = good_payload(&v);
    p.meta.environment.is_rooted = true;
    p.meta.environment.hooking_framework = true;
    let r = verify(&v, &p);
    assert_rejects(&r, &[R::UntrustedEnvironment]);
    assert!(
        r.findings[0]
            .detail
            .contains("is_rooted, hooking_framework"),
        "{:?}",
        r.findings
    );

    // An emulator whose EXIF agrees with its claims is still an emulator.
    let mut p = good_payload(&v);
    p.meta.device_model = "sdk_gphone64_x86_64".into();
    p.image = phone_jpeg("Google", "sdk_gphone64_x86_64");
    assert_rejects(&verify(&v, &p), &[R::UntrustedEnvironment]);
}

#[test]
fn unknown_or_malformed_sdk_digest_is_an_integrity_violation() {
    let v = verifier();
    let mut p = good_payload(&v);
    p.meta.sdk_digest = "00".repeat(32);
    let r = verify(&v, &p);
    assert_rejects(&r, &[R::SdkIntegrityViolation]);
    assert_eq!(r.capture_liveness.probability, 0.05);
    let mut p = good_payload(&v);
    p.meta.sdk_digest = "patched".into();
    assert_rejects(&verify(&v, &p), &[R::SdkIntegrityViolation]);
    // Digests compare case-insensitively.
    let mut p = good_payload(&v);
    p.meta.sdk_digest = SDK.to_uppercase();
    assert!(verify(&v, &p).capture_liveness.rejection.is_empty());
}

#[test]
fn replayed_unknown_and_expired_nonces_are_suspicious() {
    let v = verifier();
    let p = good_payload(&v);
    let bytes = seal(&key().to_public_key(), &p).unwrap();
    assert!(check(&v, &bytes, None)
        .unwrap()
        .capture_liveness
        .rejection
        .is_empty());
    let again = check(&v, &bytes, None).unwrap();
    assert_rejects(&again, &[R::SuspiciousActivity]);
    assert_eq!(again.findings[0].check, "nonce_replayed");

    let mut p = good_payload(&v);
    p.meta.nonce = "0123456789abcdef0123456789abcdef".into();
    let r = verify(&v, &p);
    assert_rejects(&r, &[R::SuspiciousActivity]);
    assert_eq!(r.findings[0].check, "nonce_unknown");

    let mut p = good_payload(&v);
    p.meta.nonce = String::new();
    assert_eq!(verify(&v, &p).findings[0].check, "nonce_missing");

    // Issued six minutes ago (TTL five), captured just now.
    let now = now_ms();
    let mut p = good_payload(&v);
    p.meta.nonce = v.issue_nonce_at(now - 360_000).unwrap().nonce;
    let r = check_at(&v, &seal(&key().to_public_key(), &p).unwrap(), None, now).unwrap();
    assert_rejects(&r, &[R::SuspiciousActivity]);
    assert_eq!(r.findings[0].check, "nonce_expired");
}

#[test]
fn implausible_capture_times_are_suspicious() {
    let v = verifier();
    let mut p = good_payload(&v);
    p.meta.capture_time_ms = now_ms() - 10 * 60_000;
    let r = verify(&v, &p);
    assert_rejects(&r, &[R::SuspiciousActivity]);
    assert_eq!(r.findings[0].check, "capture_time_stale");

    let mut p = good_payload(&v);
    p.meta.capture_time_ms = now_ms() + 5 * 60_000;
    assert_eq!(verify(&v, &p).findings[0].check, "capture_time_future");

    // Within the 30 s skew is fine.
    let mut p = good_payload(&v);
    p.meta.capture_time_ms = now_ms() + 10_000;
    assert!(verify(&v, &p).capture_liveness.rejection.is_empty());

    // Captured well before its nonce existed.
    let now = now_ms();
    let mut p = good_payload(&v);
    p.meta.nonce = v.issue_nonce_at(now).unwrap().nonce;
    p.meta.capture_time_ms = now - 120_000;
    let r = check_at(&v, &seal(&key().to_public_key(), &p).unwrap(), None, now).unwrap();
    assert_eq!(r.findings[0].check, "capture_before_nonce");
}

#[test]
fn device_claims_that_contradict_the_image_are_untrusted_devices() {
    let v = verifier();
    let mut p = good_payload(&v);
    p.meta.image_width = 1280;
    p.meta.image_height = 720;
    let r = verify(&v, &p);
    assert_rejects(&r, &[R::UntrustedDevice]);
    assert_eq!(r.findings[0].check, "declared_size");

    let mut p = good_payload(&v);
    p.image = phone_jpeg("Canon", "Canon EOS 5D");
    let r = verify(&v, &p);
    assert_rejects(&r, &[R::UntrustedDevice]);
    let checks: Vec<&str> = r.findings.iter().map(|f| f.check).collect();
    assert_eq!(checks, ["exif_make", "exif_model"]);

    let mut p = good_payload(&v);
    p.meta.os = "iOS".into();
    let r = verify(&v, &p);
    assert_rejects(&r, &[R::UntrustedDevice]);
    assert_eq!(r.findings[0].check, "os_manufacturer");
}

#[test]
fn jpeg_provenance_reveals_reencoded_or_synthetic_content() {
    let v = verifier();
    let mut p = good_payload(&v);
    let tags = ExifTags {
        make: Some("Google".into()),
        model: Some("Pixel 8".into()),
        software: Some("Adobe Photoshop 25.0 (Windows)".into()),
    };
    p.image = insert_exif(&p.image, &tags).unwrap();
    assert_rejects(&verify(&v, &p), &[R::UntrustedContent]);

    // A phone capture without any EXIF block: low confidence.
    let mut p = good_payload(&v);
    let img = image::RgbImage::from_pixel(640, 480, image::Rgb([90, 90, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    p.image = out.into_inner();
    let r = verify(&v, &p);
    assert_rejects(&r, &[R::UntrustedContentLowConfidence]);
    assert_eq!(r.capture_liveness.probability, 0.4);

    // The same image from a desktop web capture is normal.
    let mut d = good_payload(&v);
    d.image = p.image.clone();
    d.meta.os = "Windows".into();
    d.meta.manufacturer = String::new();
    d.meta.device_model = String::new();
    let r = verify(&v, &d);
    assert!(r.capture_liveness.rejection.is_empty(), "{:#?}", r.findings);
    assert_eq!(r.os, "DESKTOP");
}

#[test]
fn tampering_with_any_byte_is_caught() {
    let v = verifier();
    let p = good_payload(&v);
    let bytes = seal(&key().to_public_key(), &p).unwrap();
    let corrupted = |r: &CaptureReport| {
        r.capture_liveness.rejection == [R::UntrustedCorruptedPayload]
            && r.capture_liveness.probability == 0.0
    };
    // A ciphertext byte and the tag.
    for at in [bytes.len() / 2, bytes.len() - 1] {
        let mut t = bytes.clone();
        t[at] ^= 0x01;
        let r = check(&v, &t, None).unwrap();
        assert!(corrupted(&r), "byte {at}: {:?}", r.capture_liveness);
        assert_eq!(r.capture_liveness.score, -1.0);
        assert_eq!(
            bundle_failure(v.extract_image(&t).unwrap_err()),
            BundleFailure::Decrypt
        );
    }
    // Header bytes: flags, wrapped key, GCM nonce are authenticated -> corrupted payload.
    let header_len = 16 + 256 + 12;
    for at in [5, 16, 100, 271, 272, 283] {
        let mut t = bytes.clone();
        t[at] ^= 0x80;
        assert!(corrupted(&check(&v, &t, None).unwrap()), "header byte {at}");
    }
    // Magic, version, length -> cannot parse; key id -> sealed for another key.
    for (at, want) in [
        (0, BundleFailure::Parse),
        (4, BundleFailure::Parse),
        (8, BundleFailure::Decrypt),
        (14, BundleFailure::Parse),
    ] {
        let mut t = bytes.clone();
        t[at] ^= 0x80;
        assert_eq!(
            bundle_failure(check(&v, &t, None).unwrap_err()),
            want,
            "byte {at}"
        );
    }
    // No header byte flip is ever accepted.
    for at in 0..header_len {
        let mut t = bytes.clone();
        t[at] ^= 0x04;
        if let Ok(r) = check(&v, &t, None) {
            assert!(corrupted(&r), "header byte {at} accepted");
        }
    }
    // Truncation.
    assert_eq!(
        bundle_failure(check(&v, &bytes[..header_len + 8], None).unwrap_err()),
        BundleFailure::Parse
    );
}

#[test]
fn wrong_key_garbage_and_bad_payloads_are_errors() {
    let v = verifier();
    let p = good_payload(&v);
    let other = capture::generate_key(2048).unwrap();
    let foreign = seal(&other.to_public_key(), &p).unwrap();
    let e = check(&v, &foreign, None).unwrap_err();
    assert_eq!(
        e.to_string().split(':').next(),
        Some("Failed to decrypt message")
    );
    assert_eq!(bundle_failure(e), BundleFailure::Decrypt);
    assert_eq!(
        bundle_failure(v.extract_data(&foreign, "photo").unwrap_err()),
        BundleFailure::Decrypt
    );

    assert_eq!(
        bundle_failure(check(&v, b"\xFF\xD8\xFF\xE0 a JPEG, not a bundle", None).unwrap_err()),
        BundleFailure::Parse
    );
    assert_eq!(
        bundle_failure(v.extract_image(b"").unwrap_err()),
        BundleFailure::Parse
    );

    let mut not_jpeg = good_payload(&v);
    not_jpeg.image = b"GIF89a...".to_vec();
    let e = check(&v, &seal(&key().to_public_key(), &not_jpeg).unwrap(), None).unwrap_err();
    assert_eq!(bundle_failure(e), BundleFailure::Metadata);

    let e = v
        .extract_data(&seal(&key().to_public_key(), &p).unwrap(), "selfie")
        .unwrap_err();
    assert!(
        matches!(e, CaptureError::Engine(Error::InvalidArgument(_))),
        "{e:?}"
    );
}

#[test]
fn images_below_480p_are_too_small() {
    let v = verifier();
    let mut p = good_payload(&v);
    let img = image::RgbImage::from_pixel(640, 360, image::Rgb([90, 90, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    p.image = insert_exif(
        &out.into_inner(),
        &ExifTags {
            make: Some("Google".into()),
            model: Some("Pixel 8".into()),
            software: None,
        },
    )
    .unwrap();
    p.meta.image_height = 360;
    let r = verify(&v, &p);
    let e = r.face_error.expect("IMAGE_TOO_SMALL");
    assert_eq!(
        (e.error_code, e.message),
        ("IMAGE_TOO_SMALL", "Image too small to be processed")
    );
    assert_eq!(r.bi_error_code(), Some("IMAGE_TOO_SMALL"));
}

/// A batcher over the real engine, started once per test binary (face liveness on).
fn engine() -> &'static Batcher {
    static B: OnceLock<Batcher> = OnceLock::new();
    B.get_or_init(|| {
        let loader: Loader = Box::new(|| {
            let cfg = EngineConfig {
                models_dir: models_dir(),
                load_descriptor: false,
                ..EngineConfig::default()
            };
            Engine::load(cfg, Device::Cpu).map(Arc::new)
        });
        let b = Batcher::start(BatcherConfig::default(), loader).unwrap();
        let t = std::time::Instant::now();
        while b.status() == Status::Loading {
            assert!(t.elapsed().as_secs() < 300, "engine never loaded");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(b.status(), Status::Ready, "{:?}", b.failure());
        b
    })
}

/// A fixture photo as a desktop web capture (the fixtures carry a desktop editor's EXIF).
fn fixture_payload(v: &Arc<CaptureVerifier>, name: &str) -> BundlePayload {
    let mut p = good_payload(v);
    p.image = std::fs::read(fixture(name)).unwrap();
    p.meta.os = "Windows".into();
    p.meta.manufacturer = String::new();
    p.meta.device_model = String::new();
    p.meta.camera_label = "Integrated Webcam".into();
    (p.meta.image_width, p.meta.image_height) = (480, 640);
    p
}

#[test]
fn engine_face_liveness_live_and_replay() {
    let v = verifier();
    let seal_it = |p: &BundlePayload| seal(&key().to_public_key(), p).unwrap();

    let live = check(
        &v,
        &seal_it(&fixture_payload(&v, "image_T1.jpg")),
        Some(engine()),
    )
    .unwrap();
    assert!(
        live.capture_liveness.rejection.is_empty(),
        "{:#?}",
        live.findings
    );
    let fl = live.face_liveness.as_ref().expect("face_liveness");
    assert!(fl.probability > 0.9, "{fl:?}");
    assert!(live.quality.unwrap() > 0.3);
    let body = live.response();
    assert_eq!(body["capture_liveness"]["probability"], 1.0);
    assert!(body["face_liveness"]["probability"].as_f64().unwrap() > 0.9);

    let replay = check(
        &v,
        &seal_it(&fixture_payload(&v, "image_F2.jpg")),
        Some(engine()),
    )
    .unwrap();
    let fl = replay.face_liveness.as_ref().expect("face_liveness");
    assert!(fl.probability < 0.5, "{fl:?}");
    let rej = &replay.capture_liveness.rejection;
    assert!(
        rej == &[R::UntrustedContent] || rej == &[R::UntrustedContentLowConfidence],
        "{:#?}",
        replay.findings
    );
    assert_eq!(replay.findings[0].check, "passive_liveness");

    // The same live photo claimed as a phone capture: its EXIF names a desktop editor.
    let mut phone = fixture_payload(&v, "image_T1.jpg");
    phone.meta.os = "Android".into();
    let r = check(&v, &seal_it(&phone), Some(engine())).unwrap();
    assert_eq!(
        r.capture_liveness.rejection,
        [R::UntrustedContent],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.findings[0].check, "reencoder_signature");
    assert!(r.face_liveness.unwrap().probability > 0.9);

    // No face at all: the IAD image error.
    let r = check(&v, &seal_it(&good_payload(&v)), Some(engine())).unwrap();
    let e = r.face_error.expect("face error");
    assert_eq!(
        (e.error_code, e.message),
        ("FACE_NOT_FOUND", "Face not found")
    );
    assert!(r.face_liveness.is_none());
}

#[test]
fn cli_generates_keys_and_seals_bundles() {
    let dir = std::env::temp_dir().join(format!("facegate-capture-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_facegate");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let d = dir.to_str().unwrap();
    run(&["keys", "generate", "--out", d, "--bits", "2048"]);
    let again = std::process::Command::new(bin)
        .args(["keys", "generate", "--out", d])
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "existing keys are not overwritten silently"
    );
    let private = std::fs::read_to_string(dir.join("private.pem")).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(std::fs::read_to_string(dir.join("public.pem"))
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));

    let cfg = CaptureConfig {
        private_key: Some(dir.join("private.pem")),
        sdk_digests: vec![SDK.into()],
        ..CaptureConfig::default()
    };
    let v = Arc::new(CaptureVerifier::from_config(cfg).unwrap());
    let nonce = v.issue_nonce().unwrap().nonce;
    let plain = image::RgbImage::from_pixel(640, 480, image::Rgb([90, 90, 90]));
    plain.save(dir.join("capture.jpg")).unwrap();
    std::fs::write(dir.join("external.json"), r#"{"ref": 7}"#).unwrap();
    let bundle = dir.join("capture.fgcb");
    #[rustfmt::skip]
    run(&[
        "bundle", "create",
        "--public-key", dir.join("public.pem").to_str().unwrap(),
        "--image", dir.join("capture.jpg").to_str().unwrap(),
        "--os", "Android", "--manufacturer", "samsung", "--model", "SM-S918B",
        "--camera-label", "camera2 1", "--sdk-version", "1.0.0", "--sdk-digest", SDK,
        "--nonce", &nonce, "--external", dir.join("external.json").to_str().unwrap(),
        "--stamp-exif",
        "--out", bundle.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&bundle).unwrap();
    let r = check(&v, &bytes, None).unwrap();
    assert!(r.capture_liveness.rejection.is_empty(), "{:#?}", r.findings);
    let facts = r.jpeg.unwrap();
    assert_eq!(facts.exif_make.as_deref(), Some("samsung"));
    assert_eq!(
        v.extract_data(&bytes, "external").unwrap()["external"]["ref"],
        7
    );
    let _ = std::fs::remove_dir_all(&dir);
}
