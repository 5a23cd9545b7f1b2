//! A real server on 127.0.0.1:0 in front of the shared engine, and an HTTP client for it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use candle_core::Device;
use facegate::app::{self, Config, Services};
use facegate::batcher::{Batcher, Loader, Status};
use facegate::bench::{connect, send};
use facegate::engine::{Engine, EngineConfig};
use facegate::server::ServerHandle;
use hyper::{Method, StatusCode};
use serde_json::Value;

/// Generous bound for anything that should finish (a loaded 2-core CI box).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The engine, loaded once per test binary.
pub fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let cfg = EngineConfig {
            models_dir: super::models_dir(),
            load_descriptor: false,
            ..EngineConfig::default()
        };
        Arc::new(
            Engine::load(cfg, Device::Cpu).expect("engine loads (run `facegate models fetch`)"),
        )
    })
    .clone()
}

/// The engine with every model loaded (descriptor included, for sessions that compare
/// templates), loaded once per test binary.
pub fn engine_full() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let cfg = EngineConfig {
            models_dir: super::models_dir(),
            ..EngineConfig::default()
        };
        Arc::new(
            Engine::load(cfg, Device::Cpu).expect("engine loads (run `facegate models fetch`)"),
        )
    })
    .clone()
}

/// The engine with the third PAD network (`load_celeba`) and no descriptor, loaded once per
/// test binary.
pub fn engine_celeba() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let cfg = EngineConfig {
            models_dir: super::models_dir(),
            load_descriptor: false,
            load_celeba: true,
            ..EngineConfig::default()
        };
        Arc::new(
            Engine::load(cfg, Device::Cpu).expect("engine loads (run `facegate models fetch`)"),
        )
    })
    .clone()
}

/// A configuration with the server on 127.0.0.1:0, edited by `edit`.
pub fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut cfg = Config::default();
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.server.prepare_threads = 2;
    edit(&mut cfg);
    cfg
}

/// Starts every dialect with the shared engine and `services`; waits until ready.
pub async fn start(cfg: Config, services: Services) -> ServerHandle {
    start_with_engine(cfg, services, engine()).await
}

/// Starts every dialect in front of engine `e` and `services`; waits until ready.
pub async fn start_with_engine(cfg: Config, services: Services, e: Arc<Engine>) -> ServerHandle {
    let loader: Loader = Box::new(move || Ok(e));
    let batcher = Batcher::start(cfg.server.batcher(), loader).unwrap();
    let h = app::start(&cfg, batcher, services).await.unwrap();
    let t = Instant::now();
    while h.batcher().status() != Status::Ready {
        assert!(t.elapsed() < PATIENCE, "server never became ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h
}

/// A response.
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one request on a fresh connection.
pub async fn request(
    h: &ServerHandle,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Answer {
    let fut = async {
        let mut c = connect(h.local_addr()).await.unwrap();
        send(&mut c, method.clone(), path, headers, body)
            .await
            .unwrap()
    };
    let (status, headers, body) = tokio::time::timeout(PATIENCE, fut)
        .await
        .expect("request timed out");
    conform(h, &method, path, status, &headers, &body).await;
    Answer {
        status,
        headers,
        body,
    }
}

/// Checks an answer against the server's own `/openapi.json` (see [`super::openapi::check`]),
/// panicking on a difference. Nothing to check when the server serves no document (docs off)
/// or is no longer reachable (a test that shut it down or filled its connections).
async fn conform(
    h: &ServerHandle,
    method: &Method,
    path: &str,
    status: StatusCode,
    headers: &hyper::HeaderMap,
    body: &[u8],
) {
    if path.starts_with("/openapi.json") || *method == Method::OPTIONS {
        return;
    }
    let fetch = async {
        let mut c = connect(h.local_addr()).await.ok()?;
        send(&mut c, Method::GET, "/openapi.json", &[], Bytes::new())
            .await
            .ok()
    };
    let Ok(Some((s, _, spec))) = tokio::time::timeout(PATIENCE, fetch).await else {
        return;
    };
    if s != StatusCode::OK {
        return;
    }
    let spec: Value = serde_json::from_slice(&spec).expect("/openapi.json is not JSON");
    if let Err(e) = super::openapi::check(&spec, method, path, status.as_u16(), headers, body) {
        panic!("the answer contradicts /openapi.json: {e}");
    }
}

/// `GET path`.
pub async fn get(h: &ServerHandle, path: &str) -> Answer {
    request(h, Method::GET, path, &[], Bytes::new()).await
}

/// One multipart part: field name, optional file name, bytes.
#[derive(Clone, Copy)]
pub struct Part<'a> {
    /// Field name.
    pub name: &'a str,
    /// File name, if a file upload.
    pub file_name: Option<&'a str>,
    /// Content.
    pub data: &'a [u8],
}

/// A file part.
pub fn file<'a>(name: &'a str, file_name: &'a str, data: &'a [u8]) -> Part<'a> {
    Part {
        name,
        file_name: Some(file_name),
        data,
    }
}

/// A plain field part.
pub fn field<'a>(name: &'a str, data: &'a [u8]) -> Part<'a> {
    Part {
        name,
        file_name: None,
        data,
    }
}

/// Content-Type and body of a multipart/form-data request.
pub fn multipart(parts: &[Part]) -> (String, Bytes) {
    let boundary = "facegate-test-boundary";
    let mut body = Vec::new();
    for p in parts {
        let disp = match p.file_name {
            Some(f) => format!(
                "Content-Disposition: form-data; name=\"{}\"; filename=\"{f}\"\r\nContent-Type: image/jpeg\r\n",
                p.name
            ),
            None => format!("Content-Disposition: form-data; name=\"{}\"\r\n", p.name),
        };
        body.extend_from_slice(format!("--{boundary}\r\n{disp}\r\n").as_bytes());
        body.extend_from_slice(p.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

/// POSTs a multipart body with extra headers.
pub async fn post_multipart(
    h: &ServerHandle,
    path: &str,
    parts: &[Part<'_>],
    extra: &[(&str, &str)],
) -> Answer {
    let (ct, body) = multipart(parts);
    let mut headers = vec![("content-type", ct.as_str())];
    headers.extend_from_slice(extra);
    request(h, Method::POST, path, &headers, body).await
}

/// The sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// `keys` as written, sorted.
pub fn key_set(k: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A fixture image's bytes.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(super::fixture(name)).unwrap()
}

/// A uniform grey JPEG of `w` x `h` (no face in it).
pub fn blank_jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([128, 128, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}
