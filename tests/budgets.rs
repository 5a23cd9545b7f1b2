//! The connection and memory budgets over real sockets: silent connections are closed after
//! `first_request_timeout_ms`, idle keep-alive connections after `idle_timeout_ms`, at the
//! connection cap a new client is served at once because the most idle connection makes room
//! (before: silent sockets held every slot and a normal request waited for the header
//! timeout), and request bodies are admitted against `max_body_bytes_held` before a byte of
//! them is read (before: admission came after the whole body was buffered).

mod common;

use std::time::{Duration, Instant};

use common::http::*;
use facegate::server::ServerHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the socket; `None` if it stays open for `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(t.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

async fn server(edit: impl FnOnce(&mut facegate::app::Config)) -> ServerHandle {
    start(config(edit), Default::default()).await
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_first_request_timeout() {
    let h = server(|c| c.server.first_request_timeout_ms = 300).await;
    let mut s = TcpStream::connect(h.local_addr()).await.unwrap();
    let took = closed_within(&mut s, PATIENCE).await;
    assert!(took.is_some(), "the silent socket stayed open");
    // A half-sent head counts as silent too.
    let mut s = TcpStream::connect(h.local_addr()).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut s, PATIENCE).await.is_some());
    // A client that sends a request is served.
    assert_eq!(get(&h, "/health").await.status.as_u16(), 200);
    h.shutdown();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let h = server(|c| c.server.idle_timeout_ms = 300).await;
    let mut s = TcpStream::connect(h.local_addr()).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut s, PATIENCE).await.is_some());
    h.shutdown();
}

#[tokio::test]
async fn silent_sockets_at_the_cap_make_room_for_a_real_client() {
    // The first-request timeout is long, so only the cap's eviction can help.
    let h = server(|c| {
        c.server.max_connections = 16;
        c.server.first_request_timeout_ms = 600_000;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(TcpStream::connect(h.local_addr()).await.unwrap());
    }
    // Without eviction this request would wait 10 minutes for a slot.
    let a = tokio::time::timeout(Duration::from_secs(30), get(&h, "/health"))
        .await
        .expect("a real client was starved by silent sockets");
    assert_eq!(a.status.as_u16(), 200);
    // The silent sockets admitted first were the ones closed to make room.
    let mut closed = 0;
    for s in silent.iter_mut().take(24) {
        if closed_within(s, Duration::from_secs(5)).await.is_some() {
            closed += 1;
        }
    }
    assert!(
        closed >= 24,
        "only {closed} of the oldest 24 silent sockets were closed"
    );
    h.shutdown();
}

#[tokio::test]
async fn bodies_are_admitted_against_the_memory_budget_before_they_are_read() {
    let h = server(|c| {
        c.server.max_body_bytes = 1 << 20;
        c.server.max_body_bytes_held = 1 << 20;
    })
    .await;
    // A request announcing 700 KiB and sending nothing holds its reservation...
    let mut slow = TcpStream::connect(h.local_addr()).await.unwrap();
    slow.write_all(
        b"POST /facegate/v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 716800\r\n\r\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so a second one of the same size is refused at once from its head, in its dialect
    // (native: 429 with Retry-After), naming the budget; its body is never sent.
    let mut second = TcpStream::connect(h.local_addr()).await.unwrap();
    second
        .write_all(
            b"POST /facegate/v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 716800\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(PATIENCE, second.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(
        answer.contains("memory budget for request bodies of 1048576 bytes"),
        "{answer}"
    );
    // A small request still fits beside the held one.
    let jpeg = fixture_bytes("image_T1.jpg");
    let a = request(
        &h,
        hyper::Method::POST,
        "/facegate/v1/analyze",
        &[("content-type", "image/jpeg")],
        bytes::Bytes::from(jpeg),
    )
    .await;
    assert_eq!(a.status.as_u16(), 200);
    // Once the held request is gone, its reservation is released.
    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut third = TcpStream::connect(h.local_addr()).await.unwrap();
    third
        .write_all(
            b"POST /facegate/v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 716800\r\n\r\n",
        )
        .await
        .unwrap();
    // Admitted: the server now waits for the body (no answer within a short while).
    let n = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(n.is_err(), "the third request was answered at once: {n:?}");
    h.shutdown();
}

#[tokio::test]
async fn with_the_batcher_full_an_analysis_is_refused_from_its_head() {
    // One image fits and waits (a batch of 4 never fills within 5 s).
    let h = server(|c| {
        c.server.queue_bound = 1;
        c.server.max_batch = 4;
        c.server.max_queue_delay_ms = 5_000;
        c.server.adaptive_delay = false;
    })
    .await;
    let addr = h.local_addr();
    let held = tokio::spawn(async move {
        let mut c = facegate::bench::connect(addr).await.unwrap();
        facegate::bench::send(
            &mut c,
            hyper::Method::POST,
            "/facegate/v1/analyze",
            &[("content-type", "image/jpeg")],
            bytes::Bytes::from(fixture_bytes("image_T1.jpg")),
        )
        .await
        .unwrap()
        .0
    });
    while h.batcher().depth() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A head announcing 10 MB, and no body: answered 429 at once, in the dialect's format.
    let mut s = TcpStream::connect(h.local_addr()).await.unwrap();
    s.write_all(
        b"POST /idlive/check_liveness HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 10000000\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    // IDLive answers overload with 200 and its error document, as its reference mandates.
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("queue_bound"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert_eq!(
        tokio::time::timeout(PATIENCE, held).await.unwrap().unwrap(),
        hyper::StatusCode::OK
    );
    h.shutdown();
}

#[tokio::test]
async fn a_failed_model_load_names_no_server_path_to_clients() {
    use facegate::batcher::{Batcher, Loader, Status};
    use facegate::engine::{Engine, EngineConfig};
    let secret = std::env::temp_dir().join(format!("facegate-no-models-{}", std::process::id()));
    let dir = secret.clone();
    let loader: Loader = Box::new(move || {
        Engine::load(
            EngineConfig {
                models_dir: dir,
                ..EngineConfig::default()
            },
            candle_core::Device::Cpu,
        )
        .map(std::sync::Arc::new)
    });
    let cfg = config(|_| {});
    let batcher = Batcher::start(cfg.server.batcher(), loader).unwrap();
    let h = facegate::app::start(&cfg, batcher, Default::default())
        .await
        .unwrap();
    while h.batcher().status() == Status::Loading {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.batcher().status(), Status::Failed);
    let path = secret.display().to_string();
    let health = get(&h, "/health").await;
    let text = String::from_utf8_lossy(&health.body).to_string();
    assert_eq!(health.status.as_u16(), 503, "{text}");
    assert!(text.contains("models fetch"), "{text}");
    assert!(!text.contains(&path), "{text}");
    let a = request(
        &h,
        hyper::Method::POST,
        "/facegate/v1/analyze",
        &[("content-type", "image/jpeg")],
        bytes::Bytes::from(fixture_bytes("image_T1.jpg")),
    )
    .await;
    let text = String::from_utf8_lossy(&a.body).to_string();
    assert_eq!(a.status.as_u16(), 503, "{text}");
    assert!(!text.contains(&path), "{text}");
    h.shutdown();
}

/// Nice values of this process's threads whose name starts with `prefix` (`/proc/self/task`).
fn thread_nices(prefix: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name start at `state` (field 3); nice is field 19.
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        out.push(after.split_whitespace().nth(16).unwrap().parse().unwrap());
    }
    out
}

#[test]
fn network_threads_run_below_the_decoding_threads() {
    use facegate::batcher::{Batcher, BatcherConfig, Loader};
    use facegate::server::priority::{current_nice, runtime};
    let base = current_nice().unwrap();
    let rt = runtime(7).unwrap();
    let (worker, blocking) = rt.block_on(async {
        // Started where `serve` starts it: in `block_on`, on the building thread.
        let loader: Loader = Box::new(|| Err(facegate::Error::Unavailable("no models".into())));
        let cfg = BatcherConfig {
            prepare_threads: 3,
            ..BatcherConfig::default()
        };
        let batcher = Batcher::start(cfg, loader).unwrap();
        let worker = tokio::spawn(async { current_nice().unwrap() })
            .await
            .unwrap();
        let blocking = tokio::task::spawn_blocking(|| current_nice().unwrap())
            .await
            .unwrap();
        let decoders = thread_nices("facegate-decode");
        assert!(decoders.len() >= 3, "{decoders:?}");
        assert!(
            decoders.iter().all(|&n| n == base),
            "{decoders:?} vs {base}"
        );
        batcher.shutdown().await;
        (worker, blocking)
    });
    let lowered = (base + 7).min(19);
    assert_eq!((worker, blocking), (lowered, lowered));
    assert_eq!(current_nice().unwrap(), base);
}

/// Sends raw bytes on a fresh connection and reads until the server closes it: (status line,
/// head, body) of each answer.
async fn raw_exchange(h: &ServerHandle, bytes: &[u8]) -> Vec<(u16, String, String)> {
    let mut s = TcpStream::connect(h.local_addr()).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut all))
        .await
        .expect("the server did not close the connection")
        .unwrap();
    let mut text = String::from_utf8_lossy(&all).to_string();
    let mut out = Vec::new();
    while let Some(end) = text.find("\r\n\r\n") {
        let head = text[..end].to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let body = text[end + 4..end + 4 + len].to_string();
        let status = head[9..12].parse().unwrap();
        text = text[end + 4 + len..].to_string();
        out.push((status, head, body));
    }
    out
}

#[tokio::test]
async fn heads_hyper_refuses_are_answered_in_the_dialects_format() {
    let h = server(|_| {}).await;
    // A broken header line on an IDLive route: IDLive's error shape, the bound named.
    let a = raw_exchange(
        &h,
        b"POST /check_liveness HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    )
    .await;
    assert_eq!(a.len(), 1, "{a:?}");
    let (status, head, body) = &a[0];
    // IDLive answers its errors with 200 (the reference's "always 200").
    assert_eq!(*status, 200, "{head}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(v.get("error_code").is_some(), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not valid HTTP/1.1"),
        "{v}"
    );
    assert!(head.contains("connection: close"), "{head}");
    // Over the head's bound of header fields: the bound in the message.
    let mut many = b"POST /check_liveness HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..120 {
        many.extend_from_slice(format!("x-h{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let a = raw_exchange(&h, &many).await;
    let v: serde_json::Value = serde_json::from_str(&a[0].2).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("at most 100 header fields"),
        "{v}"
    );
    // No route's path (a TLS hello on the cleartext port): the server's own JSON error.
    let a = raw_exchange(&h, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n").await;
    let (status, _, body) = &a[0];
    assert_eq!(*status, 400);
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["kind"], "malformed_head", "{v}");
    // After a routed answer on the same connection, the next broken head is answered too,
    // and the routed answer is untouched.
    let a = raw_exchange(
        &h,
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost x\r\n\r\n",
    )
    .await;
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(a[0].1.contains("x-request-id"), "{a:?}");
    let v: serde_json::Value = serde_json::from_str(&a[1].2).unwrap();
    assert_eq!(
        (a[1].0, &v["error"]["kind"]),
        (400, &serde_json::json!("malformed_head"))
    );
    h.shutdown();
}

/// One HTTP/2 connection opens 16 streams, each announcing a 10 MiB body and sending its first
/// MiB: only what fits the 32 MiB budget is admitted (and then waits for the rest of its body);
/// every other stream is refused at once from its head, so the bytes held stay within the
/// budget however many streams come (before: 256 such streams grew the server by 2.5 GB).
#[tokio::test]
async fn an_h2_body_flood_is_held_to_the_memory_budget() {
    use http_body_util::channel::Channel;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let h = server(|c| {
        c.server.max_body_bytes = 10 << 20;
        c.server.max_body_bytes_held = 32 << 20;
    })
    .await;
    let tcp = TcpStream::connect(h.local_addr()).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut answers = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..16 {
        let (mut tx, body) = Channel::<bytes::Bytes, std::convert::Infallible>::new(4);
        let req = hyper::Request::post(format!("http://{}/facegate/v1/analyze", h.local_addr()))
            .header("content-type", "image/jpeg")
            .header("content-length", (10u64 << 20).to_string())
            .body(body)
            .unwrap();
        let mut send = send.clone();
        answers.push(tokio::spawn(async move {
            send.ready().await.ok()?;
            let r = tokio::time::timeout(Duration::from_secs(3), send.send_request(req)).await;
            r.ok().and_then(|r| r.ok()).map(|r| r.status().as_u16())
        }));
        senders.push(tokio::spawn(async move {
            let _ = tx.send_data(bytes::Bytes::from(vec![0xff; 1 << 20])).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(tx);
        }));
    }
    let mut refused = 0;
    let mut waiting = 0;
    for a in answers {
        match a.await.unwrap() {
            Some(429) => refused += 1,
            None => waiting += 1,
            Some(other) => panic!("a stream was answered {other}"),
        }
    }
    // 32 MiB hold three 10 MiB bodies: three wait for their bodies, thirteen are refused.
    assert_eq!((waiting, refused), (3, 13));
    for s in senders {
        s.abort();
    }
    h.shutdown();
}
