//! Route hooks: what runs on a request's head before its body is read.
//!
//! - [`Authenticator`]: per-route authentication (API keys, a JWT verifier; implementations in
//!   `api::auth`). A route without one is open.
//! - [`BodyLimits`]: per-route body size and body deadline (a route without its own takes the
//!   server's `max_body_bytes` and `body_timeout_ms`).
//! - [`RequestGuard`]: server-wide admission hooks: each may refuse a request or hand back a
//!   token held until its response is sent. [`MemoryBudget`] and [`BatcherGate`] are always
//!   installed.
//!
//! A hook's refusal is an [`EdgeError`], rendered by the route's dialect like any other error.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hyper::http::request::Parts;
use hyper::Method;

use crate::batcher::Batcher;
use crate::telemetry as tm;

/// A served route, as handlers and metrics see it.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// HTTP method.
    pub method: Method,
    /// Path it is served at (a pattern for routes with `{name}` segments).
    pub path: String,
    /// Dialect that serves it.
    pub dialect: &'static str,
    /// Route name.
    pub name: &'static str,
}

/// Who a request was authenticated as (handed to the handler in the request context).
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// Authentication scheme that admitted the request (`api_key`, `jwt`).
    pub scheme: &'static str,
    /// Stable identity: the API key's configured name, or the JWT `sub` claim (may be empty).
    pub subject: String,
    /// Verified JWT claims (None for API keys).
    pub claims: Option<serde_json::Value>,
}

/// Why a request was refused. Messages are shown to clients: they never contain the credential.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthFailure {
    /// No credential was presented (HTTP 401).
    Missing(String),
    /// A credential was presented but is wrong, expired or not yet valid (HTTP 401).
    Invalid(String),
}

impl AuthFailure {
    /// The client-facing message.
    pub fn message(&self) -> &str {
        match self {
            AuthFailure::Missing(m) | AuthFailure::Invalid(m) => m,
        }
    }
}

/// A per-route authentication mechanism, run on the request head before the body is read.
pub trait Authenticator: Send + Sync {
    /// Mechanism name for logs and metrics (`api_key`, `jwt`).
    fn scheme(&self) -> &'static str;
    /// Admits or refuses a request from its head.
    fn authenticate(&self, head: &Parts) -> Result<Principal, AuthFailure>;
}

/// Body bounds of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body, bytes (from `Content-Length` before reading when declared, else counted).
    pub max_bytes: usize,
    /// Longest wait for the whole body once the headers arrived, ms.
    pub timeout_ms: u64,
}

/// A token a [`RequestGuard`] hands back; dropped when the request's response is done.
pub type GuardToken = Box<dyn Any + Send>;

/// A server-wide admission hook, run after routing and authentication and before the body is
/// read.
pub trait RequestGuard: Send + Sync {
    /// Admits a request or refuses it. `declared_len`: the body's length when known before
    /// reading (its `Content-Length`, already within the route's limit, or 0 for a request
    /// without a body); `max_len`: the route's body limit, what an unknown length may reach.
    fn admit(
        &self,
        route: &RouteInfo,
        head: &Parts,
        declared_len: Option<u64>,
        max_len: usize,
    ) -> Result<GuardToken, EdgeError>;
}

/// The cheap refusal: with the batcher full (`queue_bound` images admitted), a dialect's POST
/// (an analysis, as good as every one is) is refused from its head as overloaded, with
/// `Retry-After: 1`, before its body is read. The server installs it over its batcher.
pub struct BatcherGate {
    batcher: Batcher,
}

impl BatcherGate {
    /// The gate in front of `batcher`.
    pub fn new(batcher: Batcher) -> Self {
        Self { batcher }
    }
}

impl RequestGuard for BatcherGate {
    fn admit(
        &self,
        route: &RouteInfo,
        _head: &Parts,
        _declared_len: Option<u64>,
        _max_len: usize,
    ) -> Result<GuardToken, EdgeError> {
        if route.method == Method::POST && route.dialect != "server" {
            let bound = self.batcher.config().queue_bound;
            if self.batcher.depth() >= bound {
                return Err(EdgeError::Overloaded {
                    what: format!("the batcher holds {bound} images, its queue_bound"),
                    retry_after_s: 1,
                });
            }
        }
        Ok(Box::new(()))
    }
}

/// The memory budget: request bodies held at once (being read, or held by their handler)
/// stay within `cap` bytes. Each request reserves its declared length (or, streamed without
/// one, its route's limit) before a byte of its body is read, and releases it when its answer
/// is done; one that does not fit is refused at once as overloaded, in its dialect, with
/// `Retry-After`.
pub struct MemoryBudget {
    /// Bound, bytes.
    cap: u64,
    /// Bytes reserved now.
    held: Arc<AtomicU64>,
}

impl MemoryBudget {
    /// A budget of `cap` bytes.
    pub fn new(cap: u64) -> Self {
        Self {
            cap,
            held: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes reserved now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

/// One request's reservation, released on drop.
struct Reservation {
    held: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let now = self.held.fetch_sub(self.bytes, Ordering::AcqRel) - self.bytes;
        metrics::gauge!(tm::BODY_BYTES_HELD).set(now as f64);
    }
}

impl RequestGuard for MemoryBudget {
    fn admit(
        &self,
        _route: &RouteInfo,
        _head: &Parts,
        declared_len: Option<u64>,
        max_len: usize,
    ) -> Result<GuardToken, EdgeError> {
        let bytes = declared_len.unwrap_or(max_len as u64);
        let reserved = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&n| n <= self.cap)
            });
        match reserved {
            Ok(before) => {
                metrics::gauge!(tm::BODY_BYTES_HELD).set((before + bytes) as f64);
                Ok(Box::new(Reservation {
                    held: self.held.clone(),
                    bytes,
                }))
            }
            Err(held) => {
                metrics::counter!(tm::BUDGET_REFUSALS, "budget" => "memory").increment(1);
                Err(EdgeError::Overloaded {
                    what: format!(
                        "memory budget for request bodies of {} bytes \
                         (server.max_body_bytes_held): {held} held, this request needs {bytes}",
                        self.cap
                    ),
                    retry_after_s: 1,
                })
            }
        }
    }
}

/// An error met at the HTTP edge, before a handler runs. Each names its bound.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EdgeError {
    /// The body is larger than the route accepts.
    #[error("request body too large: the limit is {limit} bytes (max_body_bytes)")]
    BodyTooLarge {
        /// The route's limit.
        limit: usize,
    },
    /// The body did not arrive in time.
    #[error("request body not received within {ms} ms (body_timeout_ms)")]
    BodyTimeout {
        /// The route's limit.
        ms: u64,
    },
    /// The body could not be read (the connection broke, malformed chunking).
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// The route requires authentication and the request did not pass it.
    #[error("unauthorized: {}", .0.message())]
    Unauthorized(AuthFailure),
    /// The request head could not be parsed or broke a head bound (answered for hyper, which
    /// would send an empty body; see `server::malformed`).
    #[error("malformed request: {what}")]
    MalformedHead {
        /// The status hyper chose: 400, 414 (URI too long) or 431 (head too large).
        status: u16,
        /// What was wrong, with the bound broken.
        what: String,
    },
    /// A guard refused the request for lack of capacity; the client may retry.
    #[error("overloaded: {what}")]
    Overloaded {
        /// What ran out, with its bound.
        what: String,
        /// Seconds the client should wait (the `Retry-After` header).
        retry_after_s: u64,
    },
}

impl EdgeError {
    /// Short stable name for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            EdgeError::BodyTooLarge { .. } => "body_too_large",
            EdgeError::BodyTimeout { .. } => "body_timeout",
            EdgeError::BodyRead(_) => "body_read",
            EdgeError::MalformedHead { .. } => "malformed_head",
            EdgeError::Unauthorized(_) => "unauthorized",
            EdgeError::Overloaded { .. } => "overloaded",
        }
    }
}
