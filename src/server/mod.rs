//! The HTTP server: hyper 1 on tokio, HTTP/1.1 with keep-alive and HTTP/2 over cleartext
//! (prior knowledge, `h2c`) on the same port.
//!
//! - The listener is bound before the models load, so `/health` answers 503 while loading.
//! - The connection budget ([`conns`]) caps open connections (`max_connections`, and
//!   `max_connections_per_peer`), closes a connection that completes no request head within
//!   `first_request_timeout_ms` or sits idle for `idle_timeout_ms` (h1 and h2 alike), and at a
//!   cap closes the most idle connection for the new one; h1 clients get `header_timeout_ms`
//!   for each request's headers; h2 connections are bounded in streams and header size and
//!   pinged when quiet.
//! - Per request, after routing: the route's authenticator, then the server-wide guards
//!   ([`hooks`]), then the body within the route's bounds (its own [`hooks::BodyLimits`], else
//!   `max_body_bytes` and `body_timeout_ms`). A refusal or a body over the bound or late is
//!   answered in the route's dialect (its error table, see [`RouteSpec::errors`]), naming the
//!   bound.
//! - The server knows transport, limits, the batcher and metrics, and no dialect: dialects hand
//!   it their rows through a [`Registry`].
//! - Shutdown (SIGTERM/SIGINT for `facegate serve`, [`ServerHandle::shutdown`] in tests) stops
//!   accepting, lets in-flight requests finish (at most `drain_timeout_ms`), then stops the
//!   batcher.
//! - Every response carries `x-request-id` (the client's, or a generated one); every request is
//!   counted and timed by route and status (see [`crate::telemetry`]).

pub mod conns;
pub mod cors;
pub mod hooks;
pub mod malformed;
pub mod priority;
pub mod routes;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::batcher::{Batcher, Status};
use crate::config::ServerConfig;
use crate::telemetry as tm;
use crate::{Error, Result};
use conns::{ConnLimits, Conns};
pub use hooks::{
    AuthFailure, Authenticator, BatcherGate, BodyLimits, EdgeError, GuardToken, MemoryBudget,
    Principal, RequestGuard,
};
use routes::Resolved;
pub use routes::{
    handler, Ctx, ErrorRenderer, HttpResponse, Mount, Registry, RouteInfo, RouteSpec, Router,
    Served,
};

/// Most concurrent streams on one HTTP/2 connection (each stream is one request; admission
/// to the batcher is still capped by `queue_bound`).
const H2_MAX_STREAMS: u32 = 256;
/// Largest HTTP/2 header list, bytes (h1 heads are bounded by hyper's read buffer).
const H2_MAX_HEADER_LIST: u32 = 64 << 10;
/// An HTTP/2 connection quiet this long is pinged...
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// ...and closed when the ping is not answered this soon.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Server-wide state handed to every handler (dialect state lives with each dialect).
pub struct AppState {
    /// The batcher every analysis goes through.
    pub batcher: Batcher,
    /// Renders `/metrics`; `None` if another metrics recorder owns the process.
    pub metrics: Option<PrometheusHandle>,
    /// Settings in force.
    pub cfg: ServerConfig,
    /// The CORS policy (`None`: off, no CORS header is sent).
    pub cors: Option<cors::Cors>,
    /// TLS on the listener (`None`: cleartext HTTP/1.1 and h2c).
    pub tls: Option<Arc<tls::Tls>>,
    /// Requests answered since the last summary log line.
    pub summary: Summary,
}

/// Requests answered since the last summary line, by status class: each request is logged at
/// debug, and once a second one info line sums them up (a flood makes one line a second, not
/// one per request).
#[derive(Debug, Default)]
pub struct Summary {
    /// 1xx-3xx answers.
    ok: AtomicU64,
    /// 4xx answers but 429.
    client: AtomicU64,
    /// 5xx answers but 503.
    server: AtomicU64,
    /// Overload and unavailability refusals (429, 503): logged one by one only at debug.
    refused: AtomicU64,
}

impl Summary {
    /// Counts one answer.
    pub fn count(&self, status: StatusCode) {
        let c = if matches!(status.as_u16(), 429 | 503) {
            &self.refused
        } else if status.is_server_error() {
            &self.server
        } else if status.is_client_error() {
            &self.client
        } else {
            &self.ok
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Logs and resets the counts (nothing when there were none).
    fn flush(&self) {
        let (ok, client, server, refused) = (
            self.ok.swap(0, Ordering::Relaxed),
            self.client.swap(0, Ordering::Relaxed),
            self.server.swap(0, Ordering::Relaxed),
            self.refused.swap(0, Ordering::Relaxed),
        );
        if ok + client + server + refused > 0 {
            tracing::info!(
                requests = ok + client + server + refused,
                ok,
                client_errors = client,
                server_errors = server,
                refused,
                "requests answered in the last second"
            );
        }
    }
}

/// `/health` and `/metrics`, served once.
pub fn server_routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(
            Method::GET,
            "/health",
            "server",
            "health",
            Mount::Exact,
            handler(health),
        ),
        RouteSpec::new(
            Method::GET,
            "/metrics",
            "server",
            "metrics",
            Mount::Exact,
            handler(metrics_page),
        ),
    ]
}

/// A running server.
pub struct ServerHandle {
    /// Bound address.
    addr: SocketAddr,
    /// Shutdown signal.
    shutdown: watch::Sender<bool>,
    /// The accept loop (ends after draining).
    task: JoinHandle<()>,
    /// The batcher behind it.
    batcher: Batcher,
    /// TLS state, when on.
    tls: Option<Arc<tls::Tls>>,
}

impl ServerHandle {
    /// The listener's TLS state, when TLS is on.
    pub fn tls(&self) -> Option<Arc<tls::Tls>> {
        self.tls.clone()
    }

    /// Reads the TLS certificate, key and client CA files again for new connections (what
    /// SIGHUP does in `facegate serve`); established connections keep their sessions. Fails
    /// without TLS, or with the reason the files are unusable (the old ones stay in force).
    pub fn reload_tls(&self) -> Result<()> {
        match &self.tls {
            Some(t) => t.reload(),
            None => Err(Error::InvalidArgument(
                "TLS is not on (--tls-cert, --tls-key)".into(),
            )),
        }
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The batcher behind the server.
    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    /// Starts a graceful shutdown: stop accepting, drain in-flight requests, stop the batcher.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the server has drained and stopped.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Binds `cfg.listen` and serves `registry` in front of `batcher` until shut down. Contested
/// bare paths are given to the dialects of `cfg.bare_owners`.
pub async fn start(
    cfg: ServerConfig,
    registry: &Registry,
    batcher: Batcher,
) -> Result<ServerHandle> {
    let mut router = registry
        .build(&cfg.bare_owners)
        .map_err(Error::InvalidArgument)?;
    router.guard(Arc::new(BatcherGate::new(batcher.clone())));
    let router = Arc::new(router);
    let listener = TcpListener::bind(&cfg.listen).await?;
    let addr = listener.local_addr()?;
    for (m, p, d, n) in router.table() {
        tracing::debug!(method = %m, path = %p, dialect = d, route = n, "route");
    }
    let app = Arc::new(AppState {
        batcher: batcher.clone(),
        metrics: tm::install(),
        cors: cors::Cors::from_config(&cfg.cors)?,
        tls: tls::Tls::from_config(&cfg.tls)?,
        cfg,
        summary: Summary::default(),
    });
    let summary_of = Arc::downgrade(&app);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            match summary_of.upgrade() {
                Some(app) => app.summary.flush(),
                None => break,
            }
        }
    });
    let (tx, rx) = watch::channel(false);
    let tls = app.tls.clone();
    let task = tokio::spawn(accept_loop(listener, app, router, rx));
    tracing::info!(%addr, tls = tls.is_some(), "listening");
    Ok(ServerHandle {
        addr,
        shutdown: tx,
        task,
        batcher,
        tls,
    })
}

/// Accepts connections until the shutdown signal, then drains.
async fn accept_loop(
    listener: TcpListener,
    app: Arc<AppState>,
    router: Arc<Router>,
    mut stop: watch::Receiver<bool>,
) {
    let conns = Conns::new(ConnLimits {
        max_connections: app.cfg.max_connections.max(1),
        max_per_peer: app.cfg.max_connections_per_peer.max(1),
        first_request: Duration::from_millis(app.cfg.first_request_timeout_ms),
        idle: Duration::from_millis(app.cfg.idle_timeout_ms),
    });
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 with keep-alive, and HTTP/2 (cleartext, prior knowledge) on the same port.
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .max_headers(malformed::H1_MAX_HEADERS)
        .max_buf_size(malformed::H1_MAX_HEAD_BYTES)
        .header_read_timeout(Duration::from_millis(app.cfg.header_timeout_ms))
        .keep_alive(true);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        // Admission: room is made from the most idle connection; refused (closed) only when
        // every connection in the way has a request in flight.
        let Some(ticket) = conns.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        metrics::gauge!(tm::CONNECTIONS_OPEN).set(conns.open() as f64);
        let _ = stream.set_nodelay(true);
        let handshake = app.tls.as_ref().map(|t| t.acceptor());
        let first_request = Duration::from_millis(app.cfg.first_request_timeout_ms);
        let app = app.clone();
        let router = router.clone();
        let owners = router.clone();
        let activity = ticket.activity.clone();
        let svc = service_fn(move |req| {
            let guard = activity.begin();
            let fut = dispatch(app.clone(), router.clone(), req);
            async move {
                let r = fut.await;
                drop(guard);
                r
            }
        });
        let (http, watcher, conns) = (http.clone(), graceful.watcher(), conns.clone());
        tokio::spawn(async move {
            // With TLS the handshake comes first, within the first-request bound (a silent or
            // failing client is dropped; ALPN picks h2 or HTTP/1.1 for the auto builder).
            let stream: Box<dyn Io> = match handshake {
                None => Box::new(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(first_request, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            metrics::counter!(tm::TLS_HANDSHAKE_FAILURES, "reason" => "refused")
                                .increment(1);
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            metrics::counter!(tm::TLS_HANDSHAKE_FAILURES, "reason" => "timeout")
                                .increment(1);
                            return;
                        }
                    }
                }
            };
            let io = TokioIo::new(malformed::HeadErrors::new(stream, owners));
            let conn = watcher.watch(http.serve_connection(io, svc));
            tokio::pin!(conn);
            tokio::select! {
                r = &mut conn => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                reason = ticket.until_closed() => {
                    tracing::debug!(%peer, reason, "connection closed by the server");
                    if reason != "evicted" {
                        metrics::counter!(tm::CONNECTIONS_CLOSED, "reason" => reason).increment(1);
                    }
                }
            }
            drop(ticket);
            metrics::gauge!(tm::CONNECTIONS_OPEN).set(conns.open() as f64);
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    let drain = Duration::from_millis(app.cfg.drain_timeout_ms);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ms = app.cfg.drain_timeout_ms,
            "drain timeout: closing remaining connections"
        );
    }
    app.batcher.shutdown().await;
    tracing::info!("stopped");
}

/// A connection's byte stream: plain TCP or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Resolves once the shutdown flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Decrements the in-flight gauge when a request ends (also when its client goes away).
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        metrics::gauge!(tm::IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(tm::IN_FLIGHT).decrement(1.0);
    }
}

/// The client's `x-request-id` if usable, else a generated one.
fn request_id(req: &Request<Incoming>) -> Arc<str> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(Arc::from)
        .unwrap_or_else(|| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            Arc::from(format!("fg-{:08x}-{n}", std::process::id()))
        })
}

/// Routes one request, reads its body and runs its handler; adds ids, logs and metrics.
async fn dispatch(
    app: Arc<AppState>,
    router: Arc<Router>,
    req: Request<Incoming>,
) -> std::result::Result<HttpResponse, Infallible> {
    let t0 = Instant::now();
    let _in_flight = InFlight::enter();
    let id = request_id(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!("request", id = %id, method = %method, path = %path);
    let origin = req.headers().get(ORIGIN).cloned();
    async move {
        let preflight = app
            .cors
            .as_ref()
            .filter(|_| cors::Cors::is_preflight(&method, req.headers()));
        let resolved = match preflight {
            Some(c) => Err(c.preflight(&router, &path, req.headers())),
            None => Ok(router.resolve(&method, &path)),
        };
        let (route, dialect, mut resp) = match resolved {
            Err(answer) => ("preflight", "server", answer),
            Ok(Resolved::NotFound) => (
                "unmatched",
                "server",
                server_error(StatusCode::NOT_FOUND, "not_found", format!("no route for {path}")),
            ),
            Ok(Resolved::MethodNotAllowed(allowed)) => {
                let list = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
                let mut r = server_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{method} is not allowed on {path}; allowed: {list}"),
                );
                if let Ok(v) = HeaderValue::from_str(&list) {
                    r.headers_mut().insert(ALLOW, v);
                }
                ("unmatched", "server", r)
            }
            Ok(Resolved::Found(entry, params)) => {
                let resp = run_route(&app, &router, entry, params, id.clone(), req).await;
                (entry.info.name, entry.info.dialect, resp)
            }
        };
        if let Some(c) = &app.cors {
            if route != "preflight" {
                c.decorate(origin.as_ref(), &mut resp);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        let status = resp.status();
        let secs = t0.elapsed().as_secs_f64();
        metrics::counter!(tm::REQUESTS, "route" => route, "dialect" => dialect, "method" => method.to_string(), "status" => status.as_u16().to_string()).increment(1);
        metrics::histogram!(tm::REQUEST_SECONDS, "route" => route).record(secs);
        tracing::debug!(route, status = status.as_u16(), ms = secs * 1e3, "request");
        app.summary.count(status);
        Ok(resp)
    }
    .instrument(span)
    .await
}

/// Runs a matched route: authentication, guards, body within the route's bounds, handler.
/// Every refusal is rendered by the route's dialect.
async fn run_route(
    app: &Arc<AppState>,
    router: &Router,
    entry: &routes::Entry,
    params: Vec<(String, String)>,
    request_id: Arc<str>,
    req: Request<Incoming>,
) -> HttpResponse {
    let refuse = |e: EdgeError| (entry.on_error)(&e, &entry.info);
    let (parts, body) = req.into_parts();
    let principal = match &entry.auth {
        None => None,
        Some(auth) => match auth.authenticate(&parts) {
            Ok(p) => Some(Arc::new(p)),
            Err(f) => {
                tracing::info!(
                    scheme = auth.scheme(),
                    reason = f.message(),
                    "authentication refused"
                );
                return refuse(EdgeError::Unauthorized(f));
            }
        },
    };
    let limits = entry.limits.unwrap_or(BodyLimits {
        max_bytes: app.cfg.max_body_bytes,
        timeout_ms: app.cfg.body_timeout_ms,
    });
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return refuse(EdgeError::BodyTooLarge {
            limit: limits.max_bytes,
        });
    }
    // Known before reading: no body at all (h1 without length or chunking, h2 END_STREAM on
    // the headers), else its Content-Length.
    let known = if body.is_end_stream() {
        Some(0)
    } else {
        declared
    };
    let mut tokens: Vec<GuardToken> = Vec::with_capacity(router.guards().len());
    for g in router.guards() {
        match g.admit(&entry.info, &parts, known, limits.max_bytes) {
            Ok(t) => tokens.push(t),
            Err(e) => return refuse(e),
        }
    }
    let body = match read_body(body, limits).await {
        Ok(b) => b,
        Err(e) => return refuse(e),
    };
    let ctx = Ctx {
        app: app.clone(),
        route: entry.info.clone(),
        request_id,
        principal,
        params: params.into(),
    };
    let resp = (entry.handler)(Request::from_parts(parts, body), ctx).await;
    drop(tokens);
    resp
}

/// Reads a body within `limits` (bytes, and time from now).
async fn read_body(body: Incoming, limits: BodyLimits) -> std::result::Result<Bytes, EdgeError> {
    let read = Limited::new(body, limits.max_bytes).collect();
    match tokio::time::timeout(Duration::from_millis(limits.timeout_ms), read).await {
        Err(_) => Err(EdgeError::BodyTimeout {
            ms: limits.timeout_ms,
        }),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(EdgeError::BodyTooLarge {
            limit: limits.max_bytes,
        }),
        Ok(Err(e)) => Err(EdgeError::BodyRead(e.to_string())),
    }
}

/// Server-format rendering of an error met before a handler ran (routes without a dialect
/// table: `/health`, `/metrics`).
pub fn error_page(e: &EdgeError, _route: &RouteInfo) -> HttpResponse {
    error_page_for(e)
}

/// [`error_page`] without a route (a head refused before any route was known).
fn error_page_for(e: &EdgeError) -> HttpResponse {
    let status = match e {
        EdgeError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        EdgeError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        EdgeError::BodyRead(_) => StatusCode::BAD_REQUEST,
        EdgeError::MalformedHead { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
        }
        EdgeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        EdgeError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    server_error(status, e.kind(), e.to_string())
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A server-level error (routing, body limits) as `{"error":{"kind","message"}}`; counted in
/// the errors metric.
pub fn server_error(status: StatusCode, kind: &'static str, message: String) -> HttpResponse {
    metrics::counter!(tm::ERRORS, "kind" => kind, "dialect" => "server").increment(1);
    json_response(
        status,
        &json!({"error": {"kind": kind, "message": message}}),
    )
}

/// `GET /health`: 503 while loading or after the worker died, 200 when serving.
async fn health(_req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    let b = &ctx.app.batcher;
    match b.status() {
        Status::Ready => {
            let mut v = json!({
                "status": "ok",
                "models": b.info().map(|i| i.models.clone()).unwrap_or_default(),
                "device": b.device(),
                "kernels": b.info().map(|i| i.kernels).unwrap_or("unknown"),
                "threads": b.info().map(|i| i.threads).unwrap_or(0),
                "max_batch": b.config().max_batch,
                "queue_bound": b.config().queue_bound,
                "queue_depth": b.depth(),
            });
            // Only when the networks run on CPU instead of the configured device: why.
            if let Some(note) = b.device_note() {
                v["device_note"] = note.into();
            }
            json_response(StatusCode::OK, &v)
        }
        Status::Loading => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "loading"}),
        ),
        Status::Failed => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "failed", "error": b.failure().unwrap_or_default()}),
        ),
        Status::Stopped => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "stopping"}),
        ),
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics_page(_req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    let text = match &ctx.app.metrics {
        Some(h) => h.render(),
        None => String::from("# metrics recorder not installed in this process\n"),
    };
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Reloads `tls` (a listener's TLS files) on every SIGHUP (unix), logging the outcome; with
/// TLS off, SIGHUP is only logged.
pub fn reload_tls_on_sighup(tls: Option<Arc<tls::Tls>>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be watched: TLS files are not reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            match tls.as_ref().map(|t| t.reload()) {
                None => tracing::info!("SIGHUP: TLS is off, nothing to reload"),
                Some(Ok(())) => {
                    tracing::info!("SIGHUP: TLS certificate, key and client CA reloaded")
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "SIGHUP: TLS reload failed; the files in force stay")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = tls;
}

/// Resolves on SIGINT or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
