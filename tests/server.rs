//! The server over a real socket on 127.0.0.1: results equal the in-process engine (HTTP/1.1
//! and h2c), batches mix routes, overload answers 429, shutdown drains, metrics and health, and
//! bad input.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use candle_core::Device;
use common::http::{config, request, Answer, PATIENCE};
use common::*;
use facegate::api::native::Native;
use facegate::api::Dialect;
use facegate::app::{self, Config, Services};
use facegate::batcher::{Batcher, Loader, Status};
use facegate::bench::{connect, send};
use facegate::config::ServerConfig;
use facegate::engine::{AnalyzeOptions, Calibration, Engine, EngineConfig};
use facegate::server::{self, ServerHandle};
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let cfg = EngineConfig {
            models_dir: models_dir(),
            ..EngineConfig::default()
        };
        Arc::new(
            Engine::load(cfg, Device::Cpu).expect("engine loads (run `facegate models fetch`)"),
        )
    })
    .clone()
}

fn t1() -> Bytes {
    Bytes::from(std::fs::read(fixture("image_T1.jpg")).unwrap())
}

/// Starts every dialect, plus `extra` ones, with the shared engine and waits until ready.
/// The OpenAPI document describes the product's dialects, not ad-hoc ones mounted by a test:
/// with `extra` dialects the document is off (and so are the answers' conformance checks).
async fn start(mut cfg: Config, extra: &[Arc<dyn Dialect>]) -> ServerHandle {
    if !extra.is_empty() {
        cfg.server.docs = false;
    }
    let e = engine();
    let loader: Loader = Box::new(move || Ok(e));
    let batcher = Batcher::start(cfg.server.batcher(), loader).unwrap();
    let mut dialects = app::dialects(&cfg, Services::default()).unwrap();
    dialects.extend(extra.iter().cloned());
    let (registry, owners) = app::registry(&cfg, &dialects).unwrap();
    let server_cfg = ServerConfig {
        bare_owners: owners,
        ..cfg.server.clone()
    };
    let h = server::start(server_cfg, &registry, batcher).await.unwrap();
    wait_until("ready", || h.batcher().status() == Status::Ready).await;
    h
}

/// Polls a condition (state, not time) until it holds, failing after [`PATIENCE`].
async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn post_jpeg(h: &ServerHandle, path: &str, body: Bytes) -> Answer {
    request(
        h,
        Method::POST,
        path,
        &[("content-type", "image/jpeg")],
        body,
    )
    .await
}

fn multipart(parts: &[(&str, &[u8])]) -> (String, Bytes) {
    let boundary = "facegate-test-boundary";
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_over_http_matches_the_engine() {
    let h = start(config(|_| {}), &[]).await;
    for cal in [
        Calibration::Regular,
        Calibration::Soft,
        Calibration::Hardened,
    ] {
        let opts = AnalyzeOptions {
            calibration: cal,
            template: true,
            ..AnalyzeOptions::default()
        };
        let want = engine().analyze(&t1(), &opts).unwrap();
        let path = format!(
            "/facegate/v1/analyze?calibration={}&template=true",
            cal.name()
        );
        let a = post_jpeg(&h, &path, t1()).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        for name in ["x-queue-time", "x-inference-time", "x-request-id"] {
            assert!(a.headers.contains_key(name), "missing {name}");
        }
        let got = a.json();
        let wl = want.liveness.as_ref().unwrap();
        let gl = &got["liveness"];
        assert_eq!(gl["calibration"], cal.name());
        for (k, w) in [
            ("score", wl.score),
            ("probability", wl.probability),
            ("fused_live", wl.fused_live),
        ] {
            let g = gl[k].as_f64().unwrap() as f32;
            assert!((g - w).abs() <= 1e-5, "{k}: http {g} vs engine {w}");
        }
        assert_eq!(got["verdict"], "LIVE");
        assert_eq!(got["faces"].as_array().unwrap().len(), want.faces.len());
        let gt: Vec<f32> = serde_json::from_value(got["template"]["descriptor"].clone()).unwrap();
        let wt = &want.template.as_ref().expect("engine template").descriptor;
        assert_eq!(gt.len(), wt.len());
        assert!(max_abs_diff(&gt, wt) <= 1e-5);
    }
    // The request id is echoed back when given.
    let a = request(
        &h,
        Method::GET,
        "/health",
        &[("x-request-id", "abc-123")],
        Bytes::new(),
    )
    .await;
    assert_eq!(a.headers["x-request-id"], "abc-123");
    // The Batcher handle gives the same answer in-process.
    let b = h
        .batcher()
        .analyze(t1(), AnalyzeOptions::default())
        .await
        .unwrap();
    let w = engine().analyze(&t1(), &AnalyzeOptions::default()).unwrap();
    assert!((b.liveness.unwrap().score - w.liveness.unwrap().score).abs() <= 1e-5);
    h.shutdown();
    h.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_answers_each_part_in_order() {
    let h = start(config(|_| {}), &[]).await;
    let f1 = std::fs::read(fixture("image_F1.jpg")).unwrap();
    let (ct, body) = multipart(&[("live", &t1()), ("junk", b"not an image"), ("spoof", &f1)]);
    let a = request(
        &h,
        Method::POST,
        "/facegate/v1/analyze",
        &[("content-type", &ct)],
        body,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["name"], "live.jpg");
    assert_eq!(r[0]["verdict"], "LIVE");
    assert_eq!(r[1]["error"]["kind"], "unsupported_format");
    assert_eq!(r[2]["verdict"], "SPOOF");
    h.shutdown();
    h.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_two_routes_share_a_batch() {
    // A second route, as a dialect module would add it.
    let test_dialect: Arc<dyn Dialect> = Native::mounted("test", "/v1/score", "test.analyze");
    // Batches of two, and a delay long enough that the first image always waits for the second.
    let h = start(
        config(|c| {
            c.server.max_batch = 2;
            c.server.max_queue_delay_ms = 60_000;
            c.server.adaptive_delay = false;
        }),
        &[test_dialect],
    )
    .await;
    let (a, b) = tokio::join!(
        post_jpeg(&h, "/facegate/v1/analyze", t1()),
        post_jpeg(&h, "/test/v1/score", t1())
    );
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(a.json()["liveness"]["score"], b.json()["liveness"]["score"]);
    let s = h.batcher().stats();
    assert_eq!(s.batches[0], 1, "{s:?}");
    assert_eq!(s.largest[0], 2, "{s:?}");
    assert_eq!(
        s.mixed_routes[0], 1,
        "detector batch mixed the two routes: {s:?}"
    );
    assert_eq!(
        s.mixed_routes[1], 1,
        "liveness batch mixed the two routes: {s:?}"
    );
    let m = request(&h, Method::GET, "/metrics", &[], Bytes::new()).await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("facegate_batches_mixed_routes_total{stage=\"detect\"}"),
        "{text}"
    );
    assert!(text.contains("route=\"test.analyze\""), "{text}");
    h.shutdown();
    h.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_429_while_admitted_requests_complete() {
    // Two images fit; they wait (batch of 4 never fills) while everything else is refused.
    let h = start(
        config(|c| {
            c.server.queue_bound = 2;
            c.server.max_batch = 4;
            c.server.max_queue_delay_ms = 5_000;
            c.server.adaptive_delay = false;
        }),
        &[],
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = h.local_addr();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr).await.unwrap();
            let path = "/facegate/v1/analyze";
            send(
                &mut c,
                Method::POST,
                path,
                &[("content-type", "image/jpeg")],
                t1(),
            )
            .await
            .unwrap()
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (status, headers, body) = tokio::time::timeout(PATIENCE, t).await.unwrap().unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        match status {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(v["verdict"], "LIVE");
            }
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(v["error"]["kind"], "overloaded");
                assert!(headers.contains_key("retry-after"));
            }
            s => panic!("unexpected {s}: {v}"),
        }
    }
    assert!(
        ok >= 2,
        "admitted requests complete: ok={ok} refused={refused}"
    );
    assert!(
        refused >= 1,
        "a full queue refuses: ok={ok} refused={refused}"
    );
    assert_eq!(ok + refused, 10);
    // Once drained, the server admits again.
    wait_until("queue drained", || h.batcher().depth() == 0).await;
    let a = post_jpeg(&h, "/facegate/v1/analyze", t1()).await;
    assert_eq!(a.status, StatusCode::OK);
    h.shutdown();
    h.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests() {
    // The request waits in the detect queue (delay 2 s, batch never full) while we shut down.
    let h = start(
        config(|c| {
            c.server.max_batch = 8;
            c.server.max_queue_delay_ms = 2_000;
            c.server.adaptive_delay = false;
        }),
        &[],
    )
    .await;
    let addr = h.local_addr();
    let in_flight = tokio::spawn(async move {
        let mut c = connect(addr).await.unwrap();
        send(
            &mut c,
            Method::POST,
            "/facegate/v1/analyze",
            &[("content-type", "image/jpeg")],
            t1(),
        )
        .await
        .unwrap()
    });
    wait_until("request admitted", || h.batcher().depth() == 1).await;
    let batcher = h.batcher().clone();
    h.shutdown();
    let (status, _, body) = tokio::time::timeout(PATIENCE, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    tokio::time::timeout(PATIENCE, h.stopped())
        .await
        .expect("server stops after draining");
    assert_eq!(batcher.status(), Status::Stopped);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_multiplexes_requests_on_one_connection() {
    use http_body_util::{BodyExt, Full};
    let h = start(config(|_| {}), &[]).await;
    let stream = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake (prior knowledge)");
    tokio::spawn(conn);
    let want = engine()
        .analyze(&t1(), &AnalyzeOptions::default())
        .unwrap()
        .liveness
        .unwrap()
        .probability;
    // Six streams at once on the one connection.
    let streams = (0..6).map(|_| {
        let mut sender = sender.clone();
        async move {
            let req = hyper::Request::post("http://127.0.0.1/facegate/v1/analyze")
                .header("content-type", "image/jpeg")
                .body(Full::new(t1()))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.version(), hyper::Version::HTTP_2);
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    });
    let answers = tokio::time::timeout(PATIENCE, futures_util::future::join_all(streams))
        .await
        .expect("h2 requests timed out");
    for (status, body) in answers {
        assert_eq!(status, StatusCode::OK, "{body}");
        let got = body["liveness"]["probability"].as_f64().unwrap() as f32;
        assert!((got - want).abs() <= 1e-5, "h2 {got} vs engine {want}");
    }
    h.shutdown();
    h.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_series() {
    let h = start(config(|_| {}), &[]).await;
    assert_eq!(
        post_jpeg(&h, "/facegate/v1/analyze", t1()).await.status,
        StatusCode::OK
    );
    assert_eq!(
        post_jpeg(&h, "/facegate/v1/analyze", Bytes::new())
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let m = request(&h, Method::GET, "/metrics", &[], Bytes::new()).await;
    assert_eq!(m.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&m.body);
    for series in [
        "facegate_requests_total{route=\"facegate.analyze\",dialect=\"facegate\",method=\"POST\",status=\"200\"}",
        "facegate_errors_total{kind=\"empty_image\",dialect=\"facegate\"}",
        "facegate_license_expiration_seconds{dialect=\"idlive\"} 32503679999",
        "facegate_license_expiration_seconds{dialect=\"iad\"} 32503679999",
        "facegate_request_duration_seconds_bucket{route=\"facegate.analyze\"",
        "facegate_prepare_duration_seconds_bucket",
        "facegate_queue_wait_seconds_bucket{stage=\"detect\"",
        "facegate_inference_duration_seconds_bucket{stage=\"detect\"",
        "facegate_inference_duration_seconds_bucket{stage=\"liveness\"",
        "facegate_batch_size_bucket{stage=\"detect\"",
        "facegate_queue_depth{stage=\"detect\"}",
        "facegate_in_flight_requests",
        "facegate_model_info{model=\"retinaface\",device=\"cpu\",kernels=\"",
        "facegate_inference_threads",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    h.shutdown();
    h.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_until_the_models_are_ready() {
    // A loader held back by the test: the listener is up, the models are not.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let e = engine();
    let loader: Loader = Box::new(move || {
        let _ = wait.recv();
        Ok(e)
    });
    let cfg = config(|_| {});
    let batcher = Batcher::start(cfg.server.batcher(), loader).unwrap();
    let h = app::start(&cfg, batcher, Services::default())
        .await
        .unwrap();
    let a = request(&h, Method::GET, "/health", &[], Bytes::new()).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["status"], "loading");
    let a = post_jpeg(&h, "/facegate/v1/analyze", t1()).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["error"]["kind"], "unavailable");
    go.send(()).unwrap();
    wait_until("ready", || h.batcher().status() == Status::Ready).await;
    let a = request(&h, Method::GET, "/health", &[], Bytes::new()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "ok");
    assert_eq!(a.json()["device"], "cpu");
    assert_eq!(
        a.json()["kernels"],
        facegate::nn::cpu::Isa::detect().name(),
        "{}",
        a.json()
    );
    assert!(a.json()["threads"].as_u64().is_some_and(|t| t >= 1));
    h.shutdown();
    h.stopped().await;

    // A worker that failed to load reports it.
    let loader: Loader = Box::new(|| Err(facegate::Error::Unavailable("no models here".into())));
    let cfg = config(|_| {});
    let batcher = Batcher::start(cfg.server.batcher(), loader).unwrap();
    let h = app::start(&cfg, batcher, Services::default())
        .await
        .unwrap();
    wait_until("failed", || h.batcher().status() == Status::Failed).await;
    let a = request(&h, Method::GET, "/health", &[], Bytes::new()).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["status"], "failed");
    assert!(a.json()["error"]
        .as_str()
        .unwrap()
        .contains("no models here"));
    h.shutdown();
    h.stopped().await;
}

/// Several device workers pull from one channel: one whose engine did not load leaves the
/// others serving (and is in the batcher's failure note), and the batcher fails only when every
/// worker has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_queue_and_one_failing_leaves_the_others_serving() {
    let e = engine();
    let failing =
        || -> Loader { Box::new(|| Err(facegate::Error::Unavailable("GPU 1 is gone".into()))) };
    let (a, b) = (e.clone(), e.clone());
    let loaders: Vec<Loader> = vec![failing(), Box::new(move || Ok(a)), Box::new(move || Ok(b))];
    let cfg = config(|_| {});
    let batcher = Batcher::start_workers(cfg.server.batcher(), loaders).unwrap();
    let h = app::start(&cfg, batcher, Services::default())
        .await
        .unwrap();
    wait_until("ready", || h.batcher().status() == Status::Ready).await;
    // Enough concurrent images that both live workers can take some.
    let answers =
        futures_util::future::join_all((0..8).map(|_| post_jpeg(&h, "/facegate/v1/analyze", t1())))
            .await;
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{}", a.json());
        assert_eq!(
            a.json()["faces"].as_array().map(Vec::len),
            Some(1),
            "{}",
            a.json()
        );
    }
    assert_eq!(h.batcher().status(), Status::Ready);
    assert!(h.batcher().failure().unwrap().contains("GPU 1 is gone"));
    let batcher = h.batcher().clone();
    h.shutdown();
    h.stopped().await;
    batcher.shutdown().await;
    assert_eq!(batcher.status(), Status::Stopped);

    let cfg = config(|_| {});
    let batcher = Batcher::start_workers(cfg.server.batcher(), vec![failing(), failing()]).unwrap();
    wait_until("failed", || batcher.status() == Status::Failed).await;
    assert!(batcher.failure().unwrap().contains("GPU 1 is gone"));
    assert!(Batcher::start_workers(cfg.server.batcher(), Vec::new()).is_err());
}

/// Sends headers with `Expect: 100-continue` over a raw socket and reads the early answer.
async fn oversized_without_sending(h: &ServerHandle, length: usize) -> String {
    raw_exchange(h, "/facegate/v1/analyze", length, b"").await
}

/// Sends a POST to `path` declaring `length` body bytes but sending only `sent`, then reads
/// whatever the server answers before closing.
async fn raw_exchange(h: &ServerHandle, path: &str, length: usize, sent: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: {length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(sent).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8_lossy(&out).into_owned();
    // The interim answer to `Expect: 100-continue` (sent before the body is read) comes first.
    match raw.strip_prefix("HTTP/1.1 100 Continue\r\n\r\n") {
        Some(rest) => rest.to_string(),
        None => raw,
    }
}

/// The JSON body of a raw HTTP/1.1 answer.
fn raw_json(raw: &str) -> Value {
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_errors_are_answered_in_each_dialects_format() {
    let h = start(
        config(|c| {
            c.server.max_body_bytes = 100_000;
            c.server.body_timeout_ms = 300;
        }),
        &[],
    )
    .await;
    // Too large, refused from the headers.
    let raw = raw_exchange(&h, "/facegate/v1/analyze", 250_000, b"").await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert_eq!(raw_json(&raw)["error"]["kind"], "body_too_large");
    // IDLive: 200 with `error` and `error_code`, as for any unreadable image.
    let raw = raw_exchange(&h, "/check_liveness", 250_000, b"").await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let j = raw_json(&raw);
    assert_eq!(j["error_code"], "FAILED_TO_READ_IMAGE", "{raw}");
    assert!(
        j["error"].as_str().unwrap().contains("100000 bytes"),
        "{raw}"
    );
    // IAD: its error document, 400.
    let raw = raw_exchange(&h, "/check_capture_liveness", 250_000, b"").await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    let j = raw_json(&raw);
    assert_eq!(j["path"], "/check_capture_liveness", "{raw}");
    assert!(
        j["message"].as_str().unwrap().contains("100000 bytes"),
        "{raw}"
    );
    // A body that stops arriving: answered after body_timeout_ms, naming the bound.
    let t = Instant::now();
    let raw = raw_exchange(&h, "/facegate/v1/analyze", 5_000, &[0xFF, 0xD8, 0xFF]).await;
    assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
    let j = raw_json(&raw);
    assert_eq!(j["error"]["kind"], "body_timeout");
    assert!(
        j["error"]["message"].as_str().unwrap().contains("300 ms"),
        "{raw}"
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    let raw = raw_exchange(&h, "/idlive/check_liveness", 5_000, &[0xFF]).await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw_json(&raw)["error"]
        .as_str()
        .unwrap()
        .contains("body_timeout_ms"));
    // Still serving.
    assert_eq!(
        post_jpeg(&h, "/facegate/v1/analyze", t1()).await.status,
        StatusCode::OK
    );
    h.shutdown();
    h.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clean_json_errors() {
    let h = start(config(|c| c.server.max_body_bytes = 100_000), &[]).await;
    let path = "/facegate/v1/analyze";
    let jpeg = t1();
    let cases: Vec<(&str, Answer, StatusCode, &str)> = vec![
        (
            "empty",
            post_jpeg(&h, path, Bytes::new()).await,
            StatusCode::BAD_REQUEST,
            "empty_image",
        ),
        (
            "not an image",
            post_jpeg(
                &h,
                path,
                Bytes::from_static(b"hello, this is not a picture"),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_format",
        ),
        (
            "truncated jpeg",
            post_jpeg(&h, path, jpeg.slice(..1000)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "corrupt_image",
        ),
        (
            "wrong method",
            request(&h, Method::GET, path, &[], Bytes::new()).await,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "unknown path",
            request(&h, Method::GET, "/nope", &[], Bytes::new()).await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "bad calibration",
            post_jpeg(&h, "/facegate/v1/analyze?calibration=LOOSE", jpeg.clone()).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            "unsupported content type",
            request(
                &h,
                Method::POST,
                path,
                &[("content-type", "text/plain")],
                jpeg.slice(..10),
            )
            .await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "malformed multipart",
            request(
                &h,
                Method::POST,
                path,
                &[("content-type", "multipart/form-data; boundary=x")],
                Bytes::from_static(b"garbage"),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
    ];
    for (what, a, status, kind) in cases {
        assert_eq!(
            a.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.json()["error"]["kind"], kind, "{what}");
        assert!(
            a.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    // Oversized: refused from the headers, naming the bound.
    let raw = oversized_without_sending(&h, 250_000).await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(
        raw.contains("\"kind\":\"body_too_large\"") && raw.contains("100000 bytes"),
        "{raw}"
    );
    // Still serving.
    let a = request(&h, Method::GET, "/health", &[], Bytes::new()).await;
    assert_eq!(a.status, StatusCode::OK);
    h.shutdown();
    h.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_of_a_departed_client_is_dropped_before_it_runs() {
    // The image waits 1.5 s for a batch that never fills; its client leaves meanwhile.
    let h = start(
        config(|c| {
            c.server.max_batch = 4;
            c.server.max_queue_delay_ms = 1_500;
            c.server.adaptive_delay = false;
        }),
        &[],
    )
    .await;
    let jpeg = t1();
    let mut s = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .unwrap();
    let head = format!(
        "POST /facegate/v1/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
        jpeg.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&jpeg).await.unwrap();
    wait_until("request admitted", || h.batcher().depth() == 1).await;
    drop(s);
    wait_until("cancelled", || h.batcher().stats().cancelled[0] == 1).await;
    wait_until("slot released", || h.batcher().depth() == 0).await;
    assert_eq!(h.batcher().stats().batches, [0; 4], "nothing ran");
    assert_eq!(
        post_jpeg(&h, "/facegate/v1/analyze", t1()).await.status,
        StatusCode::OK
    );
    h.shutdown();
    h.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_request_does_not_wait_for_a_batch_partner() {
    // With adaptive waiting a lone image runs at once even with a 10-minute queue delay (the
    // request would otherwise outlast PATIENCE and fail).
    let h = start(
        config(|c| {
            c.server.max_batch = 8;
            c.server.max_queue_delay_ms = 600_000;
            c.server.adaptive_delay = true;
        }),
        &[],
    )
    .await;
    let a = post_jpeg(&h, "/facegate/v1/analyze", t1()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(h.batcher().stats().batches[0], 1);
    h.shutdown();
    h.stopped().await;
}

/// Refuses requests that carry `x-refuse`, and counts the tokens it has handed out and not
/// yet seen dropped.
struct TestGuard(Arc<std::sync::atomic::AtomicUsize>);

/// Held for the life of one admitted request.
struct Held(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl server::RequestGuard for TestGuard {
    fn admit(
        &self,
        _route: &server::RouteInfo,
        head: &hyper::http::request::Parts,
        _declared: Option<u64>,
        _max: usize,
    ) -> Result<server::GuardToken, server::EdgeError> {
        if head.headers.contains_key("x-refuse") {
            return Err(server::EdgeError::Overloaded {
                what: "test budget of 0 bytes".into(),
                retry_after_s: 7,
            });
        }
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Box::new(Held(self.0.clone())))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_hooks_bound_bodies_per_route_and_guards_refuse_in_the_dialect() {
    let cfg = config(|_| {});
    let dialects = app::dialects(&cfg, Services::default()).unwrap();
    let (mut registry, owners) = app::registry(&cfg, &dialects).unwrap();
    // A route with its own 16-byte body limit, answering the length it read.
    registry.extend([server::RouteSpec::new(
        Method::POST,
        "/small",
        "test",
        "test.small",
        server::Mount::Exact,
        server::handler(|req: hyper::Request<Bytes>, _ctx| async move {
            server::json_response(
                StatusCode::OK,
                &serde_json::json!({"len": req.body().len()}),
            )
        }),
    )
    .limits(server::BodyLimits {
        max_bytes: 16,
        timeout_ms: 30_000,
    })]);
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    registry.guard(Arc::new(TestGuard(live.clone())));
    let e = engine();
    let loader: Loader = Box::new(move || Ok(e));
    let batcher = Batcher::start(cfg.server.batcher(), loader).unwrap();
    let server_cfg = ServerConfig {
        bare_owners: owners,
        ..cfg.server.clone()
    };
    let h = server::start(server_cfg, &registry, batcher).await.unwrap();
    wait_until("ready", || h.batcher().status() == Status::Ready).await;

    let a = request(
        &h,
        Method::POST,
        "/small",
        &[],
        Bytes::from_static(b"0123456789"),
    )
    .await;
    assert_eq!(
        (a.status, a.json()["len"].clone()),
        (StatusCode::OK, 10.into())
    );
    let a = request(&h, Method::POST, "/small", &[], Bytes::from(vec![b'x'; 17])).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("16 bytes"));
    // Other routes keep the server's limit.
    let a = post_jpeg(&h, "/facegate/v1/analyze", t1()).await;
    assert_eq!(a.status, StatusCode::OK);
    // A guard's refusal is rendered by the route's dialect, with its retry hint.
    let a = request(
        &h,
        Method::POST,
        "/facegate/v1/analyze",
        &[("content-type", "image/jpeg"), ("x-refuse", "1")],
        t1(),
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.json()["error"]["kind"], "overloaded");
    assert_eq!(a.headers.get("retry-after").unwrap(), "7");
    let a = request(
        &h,
        Method::POST,
        "/check_liveness",
        &[("x-refuse", "1")],
        Bytes::new(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "IDLive answers 200 with an error");
    assert_eq!(a.json()["error_code"], Value::Null);
    assert_eq!(a.headers.get("retry-after").unwrap(), "7");
    // Every token was released with its response.
    assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 0);
    h.shutdown();
    h.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_frames_go_through_the_batcher_like_encoded_images() {
    let h = start(config(|_| {}), &[]).await;
    let b = h.batcher();
    let rgb = facegate::preprocess::decode::decode_rgb(
        &t1(),
        &facegate::preprocess::decode::DecodeLimits::default(),
    )
    .unwrap();
    let opts = AnalyzeOptions::default();
    let encoded = b.submit(t1(), opts, "test.encoded").await.unwrap();
    let frame = b
        .submit(facegate::batcher::Input::Frame(rgb), opts, "test.frame")
        .await
        .unwrap();
    assert_eq!(frame.analysis.faces.len(), 1);
    assert_eq!(frame.analysis.faces[0].bbox, encoded.analysis.faces[0].bbox);
    assert_eq!(frame.analysis.liveness, encoded.analysis.liveness);
    // Frames meet the engine's pixel bounds like decoded images do.
    let tiny = image::RgbImage::new(20, 20);
    let e = b
        .submit(facegate::batcher::Input::Frame(tiny), opts, "test.frame")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "image_too_small", "{e}");
    assert!(e.to_string().contains("32"), "{e}");
    h.shutdown();
    h.stopped().await;
}

/// A CUDA device asked for where there is none (this build has no CUDA): the engine loads
/// on CPU and says why in `/health`; the choice is read from the configuration file, and a
/// device that is no device is refused naming the forms.
#[tokio::test]
async fn a_device_that_does_not_open_falls_back_to_cpu_and_says_why() {
    let cfg = Config::parse(
        "device = \"cuda:1\"\nprecision = \"f16\"\nload_landmarks = false\n",
        "test.toml",
    )
    .unwrap();
    assert_eq!(cfg.engine.device.to_string(), "cuda:1");
    assert_eq!(cfg.engine.precision, facegate::nn::device::Precision::F16);
    let err = Config::parse("precision = \"f8\"\n", "test.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("f8"), "{err}");
    let err = Config::parse("device = \"gpu\"\n", "test.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
    let engine_cfg = EngineConfig {
        models_dir: models_dir(),
        ..cfg.engine.clone()
    };
    let e = tokio::task::spawn_blocking(move || Engine::load_configured(engine_cfg))
        .await
        .unwrap()
        .unwrap();
    let note = e.device_note().unwrap().to_string();
    assert!(
        note.starts_with("cuda:1: ") && note.ends_with("serving on CPU"),
        "{note}"
    );
    let h = common::http::start_with_engine(config(|_| {}), Services::default(), Arc::new(e)).await;
    let v = common::http::get(&h, "/health").await.json();
    assert_eq!(
        (v["status"].as_str(), v["device"].as_str()),
        (Some("ok"), Some("cpu")),
        "{v}"
    );
    assert_eq!(v["device_note"], note.as_str());
    // The networks listed are those loaded (the optional CelebA one is off by default).
    let models: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    assert!(
        models.contains(&"minifasnet-v2") && !models.contains(&"minifasnet-celeba"),
        "{models:?}"
    );
    // Where the device is the one configured, there is no note.
    let h2 = common::http::start_with_engine(config(|_| {}), Services::default(), engine()).await;
    assert!(common::http::get(&h2, "/health")
        .await
        .json()
        .get("device_note")
        .is_none());
    h.shutdown();
    h2.shutdown();
}
