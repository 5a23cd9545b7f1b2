//! Route authentication over a real socket: with API keys configured every dialect route
//! answers 401 in its own format without a valid key and serves with one; `/health` and
//! `/metrics` stay open; no key, right or wrong, ever reaches the logs.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use common::http::*;
use facegate::app::Services;
use hyper::{Method, StatusCode};
use serde_json::json;

const KEY: &str = "k3y-0123456789-abcdef-secret";
const WRONG: &str = "n0t-the-key-0123456789-zzzz";

/// Everything the process logged, at every level.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .init();
        buf
    })
}

/// A log writer appending to the shared buffer.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_every_dialect_route_and_never_reach_the_logs() {
    let logs = logs();
    let h = start(
        config(|c| c.auth.api_keys = vec![format!("ops:{KEY}")]),
        Services::default(),
    )
    .await;
    let jpeg = fixture_bytes("image_T1.jpg");
    let analyze = |key: Option<(&'static str, String)>| {
        let jpeg = Bytes::from(jpeg.clone());
        let h = &h;
        async move {
            let mut headers = vec![("content-type", "image/jpeg".to_string())];
            headers.extend(key);
            let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            request(h, Method::POST, "/facegate/v1/analyze", &hs, jpeg).await
        }
    };

    // Native: 401 in its own error shape without a key or with a wrong one.
    let a = analyze(None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["error"]["kind"], "unauthorized");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("API key"));
    let a = analyze(Some(("x-api-key", WRONG.into()))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(!String::from_utf8_lossy(&a.body).contains(WRONG));
    // With the key, in either header: served.
    let a = analyze(Some(("x-api-key", KEY.into()))).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.json()["verdict"], "LIVE");
    let a = analyze(Some(("authorization", format!("Bearer {KEY}")))).await;
    assert_eq!(a.status, StatusCode::OK);

    // IDLive: 401 with its {"error","error_code"} shape, also on the data endpoints.
    for path in ["/check_liveness", "/bi_records", "/idlive/bi_report"] {
        let method = if path == "/check_liveness" {
            Method::POST
        } else {
            Method::GET
        };
        let a = request(&h, method, path, &[], Bytes::new()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(keys(&a.json()), key_set(&["error", "error_code"]), "{path}");
        assert_eq!(a.json()["error_code"], json!(null));
    }
    let a = request(
        &h,
        Method::GET,
        "/bi_records",
        &[("x-api-key", KEY)],
        Bytes::new(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    // IAD: 401 in the reference's error document; the nonce extension is protected too.
    let a = request(&h, Method::POST, "/iad/nonce", &[], Bytes::new()).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let v = a.json();
    assert_eq!(
        (v["status"].clone(), v["error"].clone()),
        (json!(401), json!("Unauthorized"))
    );
    assert_eq!(v["path"], "/iad/nonce");

    // Health and metrics stay open.
    assert_eq!(get(&h, "/health").await.status, StatusCode::OK);
    let m = get(&h, "/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&m.body)
        .contains("facegate_errors_total{kind=\"unauthorized\",dialect=\"facegate\"}"));
    h.shutdown();
    h.stopped().await;

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains("authentication refused"),
        "refusals are logged:\n{text}"
    );
    assert!(!text.contains(KEY), "the key reached the logs");
    assert!(!text.contains(WRONG), "a presented key reached the logs");
}

/// A dialect's own keys (`auth.dialect_keys`) open that dialect's routes only, the global
/// keys (here stored hashed: `NAME:sha256:HEX`) open every dialect's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialect_keys_open_their_dialect_and_hashed_global_keys_open_all() {
    let web = "web-0123456789abcdef";
    let h = start(
        config(|c| {
            c.auth.api_keys = vec![facegate::api::auth::hashed_entry("ops", KEY)];
            c.auth.dialect_keys = [("idlive".to_string(), vec![format!("web:{web}")])].into();
        }),
        Services::default(),
    )
    .await;
    let get = |path: &'static str, key: &'static str| {
        let h = &h;
        async move {
            request(h, Method::GET, path, &[("x-api-key", key)], Bytes::new())
                .await
                .status
        }
    };
    assert_eq!(get("/idlive/api_version", web).await, StatusCode::OK);
    assert_eq!(get("/idlive/api_version", KEY).await, StatusCode::OK);
    assert_eq!(get("/iad/api_version", KEY).await, StatusCode::OK);
    assert_eq!(get("/iad/api_version", web).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get("/idlive/api_version", WRONG).await,
        StatusCode::UNAUTHORIZED
    );
    h.shutdown();
    h.stopped().await;
}
