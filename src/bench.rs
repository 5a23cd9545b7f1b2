//! `facegate bench`: a loopback load generator for the native analyze endpoint.
//!
//! - closed loop: `--concurrency N` connections, each sending its next request when the
//!   previous one is answered, for `--requests M` requests or `--duration S` seconds;
//! - open loop: `--rate R` requests per second on a fixed schedule; latency is measured from
//!   each request's scheduled send time, so queueing in the client counts;
//! - `--spawn-server` starts the server in-process on 127.0.0.1 (with the engine and server
//!   flags, e.g. `--max-batch 1`), so one command compares batching on and off.
//!
//! Only 127.0.0.1 is ever targeted. Prints one JSON object on stdout and a human line on stderr.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

use crate::batcher::{Batcher, Status};
use crate::config::{EngineArgs, ServerArgs};
use crate::{Error, Result};

/// Most requests one run may send.
const MAX_REQUESTS: u64 = 1_000_000;
/// Longest run, seconds.
const MAX_DURATION_S: f64 = 3600.0;
/// Most concurrent connections (closed loop) or outstanding requests (open loop).
const MAX_CONCURRENCY: usize = 1024;
/// A request unanswered after this long counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// `facegate bench` (no `Debug`: it may hold an API key).
#[derive(Args)]
pub struct BenchArgs {
    /// File to send as the body: a JPEG or PNG image, or a JSON request (`.json`, sent as
    /// `application/json`, for the JSON dialects) (repeatable; requests cycle through them).
    #[arg(long = "image", required = true)]
    pub images: Vec<PathBuf>,
    /// Resample each image so that its longer side is this many pixels (aspect kept; Lanczos),
    /// and send it as a JPEG of quality 92: large phone-sized photos made from the fixtures
    /// (3264 for 8 MP, 4032 for 12 MP from a 4:3 image).
    #[arg(long, value_parser = clap::value_parser!(u32).range(32..=12_000))]
    pub scale_to: Option<u32>,
    /// Also write each body sent to `PATH` (`PATH.1`, `PATH.2` for the second and later ones),
    /// so that another pipeline can be measured on the same file.
    #[arg(long)]
    pub save_body: Option<PathBuf>,
    /// Port of a server already running on 127.0.0.1 (instead of --spawn-server).
    #[arg(long, required_unless_present = "spawn_server")]
    pub port: Option<u16>,
    /// Start the server in-process on 127.0.0.1 (an ephemeral port) for this run.
    #[arg(long)]
    pub spawn_server: bool,
    /// Closed loop: connections, each with one request outstanding.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Requests to send (measured; default 200 when --duration is not given).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Seconds to run.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Open loop: requests per second on a fixed schedule.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Requests sent (sequentially) before measuring.
    #[arg(long, default_value_t = 4)]
    pub warmup: u64,
    /// Path to request.
    #[arg(long, default_value = "/facegate/v1/analyze")]
    pub path: String,
    /// API key sent as `X-API-Key` (with --spawn-server and keys in the configuration file,
    /// the first of them by default).
    #[arg(
        long = "api-key",
        env = "FACEGATE_BENCH_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Engine options (with --spawn-server).
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Server options (with --spawn-server; --listen is ignored).
    #[command(flatten)]
    pub server: ServerArgs,
}

impl Payload {
    /// The request headers: content type, and the API key when one is set.
    fn headers(&self) -> Vec<(&'static str, &str)> {
        let mut h = vec![("content-type", self.content_type)];
        if let Some(k) = &self.api_key {
            h.push(("x-api-key", k));
        }
        h
    }
}

/// One answered (or failed) request.
struct Sample {
    /// Latency, ms.
    ms: f64,
    /// HTTP status, or `None` when there was no answer (see `failure`).
    status: Option<u16>,
    /// Why there was no answer: `transport` (connection failed; on a reused keep-alive
    /// connection, the server closed it while idle), `timeout`, or `not_sent` (open loop over
    /// its outstanding-request cap).
    failure: Option<&'static str>,
}

impl Sample {
    /// A request that got no answer.
    fn failed(ms: f64, why: &'static str) -> Self {
        Self {
            ms,
            status: None,
            failure: Some(why),
        }
    }
}

/// A request payload.
#[derive(Clone)]
struct Payload {
    /// Image bytes.
    body: Bytes,
    /// Its content type.
    content_type: &'static str,
    /// API key to send, if any.
    api_key: Option<Arc<str>>,
}

/// Opens an HTTP/1.1 connection to a loopback address.
pub async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    if !addr.ip().is_loopback() {
        return Err(Error::InvalidArgument(format!(
            "{addr} is not a loopback address"
        )));
    }
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::Unavailable(format!("handshake with {addr}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request on a connection and reads the whole answer.
pub async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes)> {
    let io = |e: hyper::Error| Error::Unavailable(format!("http: {e}"));
    sender.ready().await.map_err(io)?;
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "127.0.0.1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| Error::InvalidArgument(format!("request: {e}")))?;
    let resp = sender.send_request(req).await.map_err(io)?;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map_err(io)?.to_bytes();
    Ok((parts.status, parts.headers, bytes))
}

/// Runs the benchmark and prints its report.
pub fn bench(args: &BenchArgs) -> Result<std::process::ExitCode> {
    if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
        return Err(Error::InvalidArgument(format!(
            "--concurrency must be within 1..={MAX_CONCURRENCY}"
        )));
    }
    if args.requests.is_some_and(|n| n == 0 || n > MAX_REQUESTS) {
        return Err(Error::InvalidArgument(format!(
            "--requests must be within 1..={MAX_REQUESTS}"
        )));
    }
    if args
        .duration
        .is_some_and(|d| !(d > 0.0 && d <= MAX_DURATION_S))
    {
        return Err(Error::InvalidArgument(format!(
            "--duration must be within 0..={MAX_DURATION_S} s"
        )));
    }
    if args
        .rate
        .is_some_and(|r| !(r.is_finite() && r > 0.0 && r <= 10_000.0))
    {
        return Err(Error::InvalidArgument(
            "--rate must be within 0..=10000 requests/s".into(),
        ));
    }
    let mut payloads = Vec::new();
    for p in &args.images {
        let mut body = std::fs::read(p)
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", p.display())))?;
        let mut ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if let Some(side) = args.scale_to {
            body = rescaled_jpeg(&body, side)
                .map_err(|e| Error::InvalidArgument(format!("{}: {e}", p.display())))?;
            ext = Some("jpg".into());
        }
        if let Some(out) = &args.save_body {
            let out = match payloads.len() {
                0 => out.clone(),
                n => PathBuf::from(format!("{}.{n}", out.display())),
            };
            std::fs::write(&out, &body)
                .map_err(|e| Error::InvalidArgument(format!("{}: {e}", out.display())))?;
        }
        payloads.push(Payload {
            body: Bytes::from(body),
            content_type: match ext.as_deref() {
                Some("png") => "image/png",
                Some("json") => "application/json",
                _ => "image/jpeg",
            },
            api_key: None,
        });
    }
    // A spawned server's runtime runs below its inference threads, as `serve`'s does (the
    // client shares that runtime); a client alone keeps the normal priority.
    let nice = if args.spawn_server {
        let cfg = crate::app::Config::load(args.engine.config.as_deref())?;
        args.server.apply(cfg.server)?.network_nice
    } else {
        0
    };
    let rt = crate::server::priority::runtime(nice).map_err(Error::Io)?;
    rt.block_on(run(args, payloads))
}

/// `bytes` (a JPEG or PNG) resampled so that its longer side is `side` pixels, as a JPEG of
/// quality 92 that keeps the source's EXIF segment: stored the way the source is (a phone's
/// photo stored sideways stays sideways, with its orientation tag), as cameras write them.
pub fn rescaled_jpeg(bytes: &[u8], side: u32) -> Result<Vec<u8>> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| Error::InvalidArgument(format!("not an image: {e}")))?
        .into_rgb8();
    let (w, h) = img.dimensions();
    let k = f64::from(side) / f64::from(w.max(h));
    let (nw, nh) = (
        ((f64::from(w) * k).round() as u32).max(1),
        ((f64::from(h) * k).round() as u32).max(1),
    );
    let out = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Lanczos3);
    let jpeg = crate::preprocess::decode::encode_jpeg(&out, 92)?;
    Ok(match exif_segment(bytes) {
        Some(app1) => [&jpeg[..2], app1, &jpeg[2..]].concat(),
        None => jpeg,
    })
}

/// The whole APP1 `Exif` segment (marker included) of a JPEG, if it has one before its scan.
fn exif_segment(bytes: &[u8]) -> Option<&[u8]> {
    let mut i = 2;
    while bytes.get(i) == Some(&0xFF) {
        let m = *bytes.get(i + 1)?;
        if m == 0xDA {
            return None;
        }
        let len = usize::from(*bytes.get(i + 2)?) << 8 | usize::from(*bytes.get(i + 3)?);
        let seg = bytes.get(i..i + 2 + len)?;
        if m == 0xE1 && seg.get(4..10) == Some(b"Exif\0\0") {
            return Some(seg);
        }
        i += 2 + len.max(2);
    }
    None
}

async fn run(args: &BenchArgs, mut payloads: Vec<Payload>) -> Result<std::process::ExitCode> {
    let mut spawned = None;
    let mut api_key = args.api_key.clone();
    let addr = if args.spawn_server {
        let mut cfg = crate::app::Config::load(args.engine.config.as_deref())?;
        // The spawned server's own first key, unless one was given (`NAME:KEY` or `KEY`).
        if api_key.is_none() {
            api_key = cfg
                .auth
                .api_keys
                .first()
                .map(|e| e.split_once(':').map_or(e.as_str(), |(_, k)| k).to_string());
        }
        cfg.engine = args.engine.apply(cfg.engine)?;
        cfg.server = args.server.apply(cfg.server)?;
        cfg.server.listen = "127.0.0.1:0".into();
        let loaders = crate::app::engine_loaders(&cfg.engine);
        let batcher = Batcher::start_workers(cfg.server.batcher(), loaders)?;
        let handle = crate::app::start(&cfg, batcher, crate::app::Services::default()).await?;
        wait_ready(handle.batcher()).await?;
        let addr = handle.local_addr();
        spawned = Some(handle);
        addr
    } else {
        SocketAddr::from((Ipv4Addr::LOCALHOST, args.port.unwrap_or(8080)))
    };
    let key: Option<Arc<str>> = api_key.map(Arc::from);
    for p in &mut payloads {
        p.api_key = key.clone();
    }
    let path: Arc<str> = Arc::from(args.path.as_str());
    // Warm-up, sequential.
    if args.warmup > 0 {
        let mut c = connect(addr).await?;
        for i in 0..args.warmup {
            let p = &payloads[i as usize % payloads.len()];
            send(&mut c, Method::POST, &path, &p.headers(), p.body.clone()).await?;
        }
    }
    let requests = match (args.requests, args.duration) {
        (Some(n), _) => n,
        (None, Some(_)) => MAX_REQUESTS,
        (None, None) => 200,
    };
    let deadline = args.duration.map(Duration::from_secs_f64);
    let stats_before = spawned.as_ref().map(|h| h.batcher().stats());
    let t0 = Instant::now();
    let samples = match args.rate {
        None => closed_loop(addr, path, &payloads, args.concurrency, requests, deadline).await,
        Some(rate) => open_loop(addr, path, &payloads, rate, requests, deadline).await,
    };
    let elapsed = t0.elapsed().as_secs_f64();
    let mut report = summarize(&samples, elapsed);
    report["mode"] = json!(if args.rate.is_some() {
        "open"
    } else {
        "closed"
    });
    report["concurrency"] = json!(args.rate.map_or(Some(args.concurrency), |_| None));
    report["rate"] = json!(args.rate);
    report["images"] = json!(args
        .images
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>());
    if let (Some(h), Some(before)) = (&spawned, stats_before) {
        let after = h.batcher().stats();
        let c = h.batcher().config();
        let detect_batches = after.batches[0] - before.batches[0];
        report["server"] = json!({
            "max_batch": c.max_batch,
            "max_queue_delay_ms": c.max_queue_delay_ms,
            "queue_bound": c.queue_bound,
            "detect_batches": detect_batches,
            "mean_detect_batch": if detect_batches > 0 { samples.iter().filter(|s| s.status == Some(200)).count() as f64 / detect_batches as f64 } else { 0.0 },
            "largest_batch": after.largest,
        });
    }
    if let Some(h) = spawned {
        h.shutdown();
        h.stopped().await;
    }
    let l = &report["latency_ms"];
    eprintln!(
        "{} loop{}: {} requests in {:.1} s, {:.2} ok/s, latency p50 {:.1} ms p95 {:.1} ms p99 {:.1} ms max {:.1} ms, errors {} (refusals p99 {:.1} ms)",
        report["mode"].as_str().unwrap_or(""),
        match args.rate {
            Some(r) => format!(" at {r} req/s"),
            None => format!(" x{}", args.concurrency),
        },
        samples.len(),
        elapsed,
        report["ok_per_s"].as_f64().unwrap_or(0.0),
        l["p50"].as_f64().unwrap_or(0.0),
        l["p95"].as_f64().unwrap_or(0.0),
        l["p99"].as_f64().unwrap_or(0.0),
        l["max"].as_f64().unwrap_or(0.0),
        report["errors"],
        report["refused_latency_ms"]["p99"].as_f64().unwrap_or(0.0),
    );
    println!("{report}");
    // Exit 1 when nothing succeeded (e.g. no server on the port).
    Ok(if report["ok"].as_u64().unwrap_or(0) == 0 {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// Polls the batcher until it is ready (or failed).
async fn wait_ready(b: &Batcher) -> Result<()> {
    let t = Instant::now();
    loop {
        match b.status() {
            Status::Ready => return Ok(()),
            Status::Loading if t.elapsed() < Duration::from_secs(600) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            _ => {
                return Err(Error::Unavailable(
                    b.failure()
                        .unwrap_or_else(|| "the server did not become ready".into()),
                ))
            }
        }
    }
}

/// Sends one request and times it from `from`.
async fn one(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
    p: &Payload,
    from: Instant,
) -> Sample {
    let r = tokio::time::timeout(
        REQUEST_TIMEOUT,
        send(sender, Method::POST, path, &p.headers(), p.body.clone()),
    )
    .await;
    let ms = from.elapsed().as_secs_f64() * 1e3;
    match r {
        Ok(Ok((s, _, _))) => Sample {
            ms,
            status: Some(s.as_u16()),
            failure: None,
        },
        Ok(Err(_)) => Sample::failed(ms, "transport"),
        Err(_) => Sample::failed(ms, "timeout"),
    }
}

async fn closed_loop(
    addr: SocketAddr,
    path: Arc<str>,
    payloads: &[Payload],
    concurrency: usize,
    requests: u64,
    deadline: Option<Duration>,
) -> Vec<Sample> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, path, payloads) = (next.clone(), path.clone(), payloads.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut conn = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || deadline.is_some_and(|d| start.elapsed() >= d) {
                    break;
                }
                if conn.is_none() {
                    conn = connect(addr).await.ok();
                }
                let p = &payloads[i as usize % payloads.len()];
                let s = match conn.as_mut() {
                    Some(c) => one(c, &path, p, Instant::now()).await,
                    None => Sample::failed(0.0, "transport"),
                };
                if s.status.is_none() {
                    conn = None;
                }
                out.push(s);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(v) = t.await {
            all.extend(v);
        }
    }
    all
}

async fn open_loop(
    addr: SocketAddr,
    path: Arc<str>,
    payloads: &[Payload],
    rate: f64,
    requests: u64,
    deadline: Option<Duration>,
) -> Vec<Sample> {
    let pool: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>> = Arc::new(Mutex::new(Vec::new()));
    let outstanding = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    let mut skipped = 0u64;
    for i in 0..requests {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        if deadline.is_some_and(|d| at.duration_since(start) >= d) {
            break;
        }
        tokio::time::sleep_until(at).await;
        if outstanding.load(Ordering::Relaxed) >= MAX_CONCURRENCY as u64 {
            skipped += 1;
            continue;
        }
        outstanding.fetch_add(1, Ordering::Relaxed);
        let (pool, path, outstanding) = (pool.clone(), path.clone(), outstanding.clone());
        let p = payloads[i as usize % payloads.len()].clone();
        let scheduled = at.into_std();
        tasks.push(tokio::spawn(async move {
            // An idle pooled connection may have been closed by the server meanwhile (its
            // keep-alive timeout): like any HTTP client, retry such a failure once on a fresh
            // connection. Latency still counts from the scheduled send time.
            let mut idle = pool.lock().ok().and_then(|mut v| v.pop());
            let s = loop {
                let reused = idle.is_some();
                let conn = match idle.take() {
                    Some(c) => Some(c),
                    None => connect(addr).await.ok(),
                };
                let Some(mut c) = conn else {
                    break Sample::failed(0.0, "transport");
                };
                let s = one(&mut c, &path, &p, scheduled).await;
                if s.status.is_some() {
                    if let Ok(mut v) = pool.lock() {
                        v.push(c);
                    }
                }
                if !(reused && s.failure == Some("transport")) {
                    break s;
                }
            };
            outstanding.fetch_sub(1, Ordering::Relaxed);
            s
        }));
    }
    let mut all: Vec<Sample> = (0..skipped)
        .map(|_| Sample::failed(0.0, "not_sent"))
        .collect();
    for t in tasks {
        if let Ok(s) = t.await {
            all.push(s);
        }
    }
    all
}

/// Throughput, latency percentiles (successful requests) and errors by status.
fn summarize(samples: &[Sample], elapsed_s: f64) -> serde_json::Value {
    let mut ok: Vec<f64> = samples
        .iter()
        .filter(|s| s.status == Some(200))
        .map(|s| s.ms)
        .collect();
    ok.sort_by(f64::total_cmp);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.status != Some(200)) {
        *errors
            .entry(s.status.map_or_else(
                || s.failure.unwrap_or("transport").to_string(),
                |c| c.to_string(),
            ))
            .or_default() += 1;
    }
    let mean = if ok.is_empty() {
        0.0
    } else {
        ok.iter().sum::<f64>() / ok.len() as f64
    };
    // How fast overload answers (429, 503) come: a refusal is only cheap if it is also quick.
    let mut refused: Vec<f64> = samples
        .iter()
        .filter(|s| matches!(s.status, Some(429 | 503)))
        .map(|s| s.ms)
        .collect();
    refused.sort_by(f64::total_cmp);
    json!({
        "requests": samples.len(),
        "ok": ok.len(),
        "errors": errors,
        "elapsed_s": elapsed_s,
        "ok_per_s": ok.len() as f64 / elapsed_s.max(1e-9),
        "latency_ms": {"p50": pct(&ok, 0.50), "p95": pct(&ok, 0.95), "p99": pct(&ok, 0.99), "max": ok.last().copied().unwrap_or(0.0), "mean": mean},
        "refused_latency_ms": {"p50": pct(&refused, 0.50), "p99": pct(&refused, 0.99), "max": refused.last().copied().unwrap_or(0.0)},
    })
}

/// The `q` quantile of sorted `v` (nearest rank; 0 when empty).
fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_error_counts() {
        let mut s: Vec<Sample> = (1..=100)
            .map(|i| Sample {
                ms: i as f64,
                status: Some(200),
                failure: None,
            })
            .collect();
        s.push(Sample {
            ms: 3.0,
            status: Some(429),
            failure: None,
        });
        s.push(Sample::failed(1.0, "transport"));
        s.push(Sample::failed(1.0, "timeout"));
        let r = summarize(&s, 2.0);
        assert_eq!(r["latency_ms"]["p50"], 50.0);
        assert_eq!(r["latency_ms"]["p99"], 99.0);
        assert_eq!(r["latency_ms"]["max"], 100.0);
        assert_eq!(r["errors"]["429"], 1);
        assert_eq!(r["refused_latency_ms"]["p99"], 3.0);
        assert_eq!(r["errors"]["transport"], 1);
        assert_eq!(r["errors"]["timeout"], 1);
        assert_eq!(r["ok_per_s"], 50.0);
    }
}
