//! The BioID BWS dialect over real HTTP: `POST /api/v1/livenessdetection` with one image
//! (passive) or two (active: 3-D motion, same person, challenge), BWS's JWT authentication,
//! the gRPC-status error bodies, the BWS headers and the health probes. Two-image frames are
//! built as in `tests/active.rs` (`common::warp`) and sent as JPEG (quality 95).

mod common;

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use common::http::*;
use common::warp::{geometry, head_move, jpeg, upright};
use facegate::server::ServerHandle;
use hyper::{Method, StatusCode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const PATH: &str = "/api/v1/livenessdetection";
const APP_KEY: [u8; 32] = [0x5a; 32];
const OTHER_KEY: [u8; 64] = [0x33; 64];

fn clients() -> Vec<String> {
    vec![
        format!("app={}", STANDARD.encode(APP_KEY)),
        format!("other={}", STANDARD.encode(OTHER_KEY)),
    ]
}

async fn server() -> ServerHandle {
    start_with_engine(
        config(|c| c.bioid.clients = clients()),
        Default::default(),
        engine_full(),
    )
    .await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, key: &[u8], claims: &Value) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
}

fn claims(client: &str) -> Value {
    json!({"sub": client, "aud": "BWS", "exp": now() + 600, "nbf": now() - 5, "iat": now()})
}

fn app_token() -> String {
    sign(Algorithm::HS256, &APP_KEY, &claims("app"))
}

/// The fixture as the engine sees it (upright) and a 12° head turn to the person's left of
/// it, both as JPEG.
fn turn_frames() -> &'static (Vec<u8>, Vec<u8>) {
    static F: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    F.get_or_init(|| {
        let (img, a) = upright(&engine_full(), "image_T1.jpg");
        let turned = head_move(&img, &geometry(&a), 12.0, 0.0);
        (jpeg(&img), jpeg(&turned))
    })
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn body(images: &[(&[u8], &[&str])]) -> Value {
    json!({"liveImages": images
        .iter()
        .map(|(img, tags)| json!({"image": b64(img), "tags": tags}))
        .collect::<Vec<_>>()})
}

async fn post(h: &ServerHandle, path: &str, body: &Value, token: Option<&str>) -> Answer {
    post_with(h, path, body, token, &[]).await
}

async fn post_with(
    h: &ServerHandle,
    path: &str,
    body: &Value,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    headers.extend_from_slice(extra);
    request(
        h,
        Method::POST,
        path,
        &headers,
        Bytes::from(body.to_string()),
    )
    .await
}

fn codes(v: &Value) -> Vec<String> {
    v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors is not an array: {v}"))
        .iter()
        .map(|e| e["errorCode"].as_str().unwrap().to_string())
        .collect()
}

/// Every field of the reference, with its type.
fn assert_shape(v: &Value, images: usize) {
    assert_eq!(
        keys(v),
        key_set(&[
            "status",
            "errors",
            "imageProperties",
            "live",
            "livenessScore"
        ]),
        "{v}"
    );
    assert_eq!(v["status"], "SUCCEEDED");
    assert!(
        v["live"].is_boolean() && v["livenessScore"].is_number(),
        "{v}"
    );
    for e in v["errors"].as_array().unwrap() {
        assert_eq!(keys(e), key_set(&["errorCode", "message"]), "{e}");
    }
    let props = v["imageProperties"].as_array().unwrap();
    assert_eq!(props.len(), images, "{v}");
    for (i, p) in props.iter().enumerate() {
        assert_eq!(
            keys(p),
            key_set(&[
                "rotated",
                "faces",
                "qualityScore",
                "qualityAssessments",
                "frameNumber"
            ]),
            "{p}"
        );
        assert_eq!(p["rotated"], 0);
        assert_eq!(p["frameNumber"], i);
        assert!(p["qualityScore"].is_number());
        let checks: Vec<&str> = p["qualityAssessments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| {
                assert_eq!(keys(q), key_set(&["check", "score", "message"]), "{q}");
                assert!(q["score"].is_number() && q["message"].is_string(), "{q}");
                q["check"].as_str().unwrap()
            })
            .collect();
        for c in ["ImageSize", "SuitableFace", "FullyVisibleFace"] {
            assert!(checks.contains(&c), "{c} missing: {p}");
        }
        for f in p["faces"].as_array().unwrap() {
            assert_eq!(
                keys(f),
                key_set(&[
                    "leftEye",
                    "rightEye",
                    "textureLivenessScore",
                    "motionLivenessScore",
                    "movementDirection"
                ]),
                "{f}"
            );
            for eye in ["leftEye", "rightEye"] {
                assert_eq!(keys(&f[eye]), key_set(&["x", "y"]));
                assert!(f[eye]["x"].is_number() && f[eye]["y"].is_number());
            }
            // The person's left eye is on the image's right.
            assert!(
                f["leftEye"]["x"].as_f64() > f["rightEye"]["x"].as_f64(),
                "{f}"
            );
        }
    }
}

/// The 200 answer's body, checked field by field for `images` images.
fn answered(a: &Answer, images: usize) -> Value {
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let v = a.json();
    assert_shape(&v, images);
    v
}

fn assert_bws_headers(a: &Answer) {
    let h = |n: &str| {
        a.headers
            .get(n)
            .unwrap_or_else(|| panic!("no {n} header"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let job: Vec<usize> = h("jobid").split('-').map(str::len).collect();
    assert_eq!(job, [8, 4, 4, 4, 12]);
    assert_eq!(h("bws-version"), env!("CARGO_PKG_VERSION"));
    let date = h("date");
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
}

fn grpc(a: &Answer, status: StatusCode, code: u64) -> String {
    assert_eq!(a.status, status, "{}", String::from_utf8_lossy(&a.body));
    let v = a.json();
    assert_eq!(keys(&v), key_set(&["code", "message"]), "{v}");
    assert_eq!(v["code"], code, "{v}");
    v["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn one_live_photo_is_live_with_every_field_and_header() {
    let h = server().await;
    let photo = fixture_bytes("image_T1.jpg");
    let a = post_with(
        &h,
        PATH,
        &body(&[(&photo, &[])]),
        Some(&app_token()),
        &[("reference-number", "case-42")],
    )
    .await;
    let v = answered(&a, 1);
    assert_eq!(v["live"], true, "{v}");
    assert_eq!(v["errors"], json!([]));
    let face = &v["imageProperties"][0]["faces"][0];
    assert!(face["textureLivenessScore"].as_f64().unwrap() >= 0.5, "{v}");
    assert_eq!(face["textureLivenessScore"], v["livenessScore"]);
    assert_eq!(face["motionLivenessScore"], 0.0);
    assert_eq!(face["movementDirection"], 0.0);
    assert_bws_headers(&a);
    assert_eq!(a.headers["reference-number"], "case-42");

    // PascalCase keys (BWS forwarders), under the dialect prefix, a reference number too long
    // to echo.
    let pascal = json!({"LiveImages": [{"Image": b64(&photo), "Tags": []}]});
    let long = "r".repeat(129);
    let b = post_with(
        &h,
        "/bioid/api/v1/livenessdetection",
        &pascal,
        Some(&app_token()),
        &[("reference-number", &long)],
    )
    .await;
    assert_eq!(
        b.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&b.body)
    );
    assert_eq!(b.json()["live"], true);
    assert!(b.headers.get("reference-number").is_none());
    assert_ne!(a.headers["jobid"], b.headers["jobid"]);
}

#[tokio::test]
async fn the_same_image_twice_is_refused_by_the_active_check() {
    let h = server().await;
    let photo = fixture_bytes("image_T1.jpg");
    let a = post(
        &h,
        PATH,
        &body(&[(&photo, &[]), (&photo, &[])]),
        Some(&app_token()),
    )
    .await;
    let v = answered(&a, 2);
    assert_eq!(v["live"], false, "{v}");
    assert!(
        codes(&v).contains(&"RejectedByActiveLiveDetection".into()),
        "{v}"
    );
    assert_eq!(
        v["imageProperties"][1]["faces"][0]["motionLivenessScore"],
        0.0
    );
}

#[tokio::test]
async fn a_head_turn_passes_the_asked_challenge_and_fails_the_other() {
    let h = server().await;
    let (still, turned) = turn_frames();
    let a = post(
        &h,
        PATH,
        &body(&[(still, &[]), (turned, &["LEFT"])]),
        Some(&app_token()),
    )
    .await;
    let v = answered(&a, 2);
    let errors = codes(&v);
    assert!(
        !errors.contains(&"RejectedByChallengeResponse".into()),
        "{v}"
    );
    assert!(
        !errors.contains(&"RejectedByActiveLiveDetection".into()),
        "{v}"
    );
    let second = &v["imageProperties"][1]["faces"][0];
    let direction = second["movementDirection"].as_f64().unwrap();
    assert!(direction > 0.0 && direction <= 360.0, "{v}");
    // The nose moved to the image's right: near 0 (or 360) degrees.
    assert!(!(45.0..=315.0).contains(&direction), "{v}");
    assert!(second["motionLivenessScore"].as_f64().unwrap() > 0.5, "{v}");
    assert_eq!(
        v["imageProperties"][0]["faces"][0]["movementDirection"],
        0.0
    );
    assert_eq!(v["live"], true, "{v}");
    assert!(errors.is_empty(), "{v}");

    let b = post(
        &h,
        PATH,
        &body(&[(still, &[]), (turned, &["right"])]),
        Some(&app_token()),
    )
    .await;
    let w = b.json();
    assert_shape(&w, 2);
    assert_eq!(w["live"], false, "{w}");
    assert!(
        codes(&w).contains(&"RejectedByChallengeResponse".into()),
        "{w}"
    );
}

#[tokio::test]
async fn a_different_person_in_the_second_image_is_not_live() {
    let h = server().await;
    let (a, b) = (
        fixture_bytes("image_T1.jpg"),
        fixture_bytes("person-linda.jpg"),
    );
    let r = post(&h, PATH, &body(&[(&a, &[]), (&b, &[])]), Some(&app_token())).await;
    let v = answered(&r, 2);
    assert_eq!(v["live"], false, "{v}");
    assert!(
        codes(&v).contains(&"RejectedByActiveLiveDetection".into()),
        "{v}"
    );
}

#[tokio::test]
async fn bws_tokens_are_verified_and_refusals_give_no_hint() {
    let h = server().await;
    let photo = fixture_bytes("image_T1.jpg");
    let req = body(&[(&photo, &[])]);
    let c = claims("app");
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(c.to_string());
    let refused: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("garbage", Some("not-a-token".into())),
        (
            "bad signature",
            Some({
                let t = app_token();
                let (rest, _) = t.rsplit_once('.').unwrap();
                format!("{rest}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]))
            }),
        ),
        (
            "expired",
            Some(sign(
                Algorithm::HS256,
                &APP_KEY,
                &json!({"sub": "app", "aud": "BWS", "exp": now() - 3600}),
            )),
        ),
        (
            "not yet valid",
            Some(sign(
                Algorithm::HS256,
                &APP_KEY,
                &json!({"sub": "app", "aud": "BWS", "exp": now() + 7200, "nbf": now() + 3600}),
            )),
        ),
        (
            "wrong audience",
            Some(sign(
                Algorithm::HS256,
                &APP_KEY,
                &json!({"sub": "app", "aud": "other", "exp": now() + 600}),
            )),
        ),
        (
            "no audience",
            Some(sign(
                Algorithm::HS256,
                &APP_KEY,
                &json!({"sub": "app", "exp": now() + 600}),
            )),
        ),
        (
            "no exp",
            Some(sign(
                Algorithm::HS256,
                &APP_KEY,
                &json!({"sub": "app", "aud": "BWS"}),
            )),
        ),
        ("alg none", Some(format!("{none_header}.{payload}."))),
        (
            "unknown client",
            Some(sign(Algorithm::HS256, &APP_KEY, &claims("ghost"))),
        ),
        (
            "foreign key",
            Some(sign(Algorithm::HS256, &OTHER_KEY, &claims("app"))),
        ),
    ];
    let mut messages = Vec::new();
    for (what, token) in &refused {
        let a = post(&h, PATH, &req, token.as_deref()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}");
        messages.push(grpc(&a, StatusCode::UNAUTHORIZED, 16));
        assert_bws_headers(&a);
    }
    messages.dedup();
    assert_eq!(messages.len(), 1, "refusals differ: {messages:?}");

    // Valid tokens: HS256 and HS512 (each client's own key).
    for (alg, key, client) in [
        (Algorithm::HS256, &APP_KEY[..], "app"),
        (Algorithm::HS512, &OTHER_KEY[..], "other"),
    ] {
        let a = post(&h, PATH, &req, Some(&sign(alg, key, &claims(client)))).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{alg:?}: {}",
            String::from_utf8_lossy(&a.body)
        );
    }
    // `iss` names the client when there is no `sub`; HS384 too (a 400 past authentication).
    let iss = sign(
        Algorithm::HS384,
        &APP_KEY,
        &json!({"iss": "app", "aud": "BWS", "exp": now() + 600}),
    );
    let a = post(&h, PATH, &json!({"liveImages": []}), Some(&iss)).await;
    grpc(&a, StatusCode::BAD_REQUEST, 3);
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments_naming_the_problem() {
    let h = server().await;
    let t = app_token();
    let img = b64(&blank_jpeg(64, 64));
    let cases = [
        (json!({"liveImages": [{"image": "***"}]}), "base64"),
        (json!({"liveImages": []}), "1 to 2"),
        (
            json!({"liveImages": [{"image": img}, {"image": img}, {"image": img}]}),
            "1 to 2",
        ),
        (
            json!({"liveImages": [{"image": img}, {"image": img, "tags": ["sideways"]}]}),
            "sideways",
        ),
        (json!({"liveImages": [{"tags": []}]}), "image is required"),
        (json!({"images": []}), "unknown field"),
        (json!([1, 2]), "JSON object"),
    ];
    for (req, needle) in cases {
        let a = post(&h, PATH, &req, Some(&t)).await;
        let m = grpc(&a, StatusCode::BAD_REQUEST, 3);
        assert!(m.contains(needle), "{req}: {m}");
        assert_bws_headers(&a);
    }
    // An image that is not one: 400 naming the image.
    let a = post(
        &h,
        PATH,
        &json!({"liveImages": [{"image": b64(b"not an image at all")}]}),
        Some(&t),
    )
    .await;
    let m = grpc(&a, StatusCode::BAD_REQUEST, 3);
    assert!(m.contains("liveImages[0]"), "{m}");
    h.shutdown();
    h.stopped().await;

    // The route's own body bound (not the server's), refused in BWS's form naming it.
    let h = start_with_engine(
        config(|c| {
            c.bioid.clients = clients();
            c.bioid.max_body_bytes = 1000;
        }),
        Default::default(),
        engine_full(),
    )
    .await;
    let big = json!({"liveImages": [{"image": b64(&fixture_bytes("image_T1.jpg"))}]});
    let a = post(&h, PATH, &big, Some(&t)).await;
    let m = grpc(&a, StatusCode::BAD_REQUEST, 3);
    assert!(m.contains("1000 bytes"), "{m}");
    // Other routes keep the server's bound.
    assert_eq!(get(&h, "/livez").await.status, StatusCode::OK);
}

#[tokio::test]
async fn health_probes_are_open() {
    let h = server().await;
    for p in ["/livez", "/readyz", "/bioid/livez", "/bioid/readyz"] {
        let a = get(&h, p).await;
        assert_eq!(a.status, StatusCode::OK, "{p}");
        assert_eq!(&a.body[..], b"Healthy", "{p}");
    }
}
