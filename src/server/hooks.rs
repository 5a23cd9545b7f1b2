//! Route hooks: what runs on a request's head before its body is read.
//!
//! - [`Authenticator`]: per-route authentication (API keys, a JWT verifier; implementations in
//!   `api::auth`). A route without one is open.
//! - [`BodyLimits`]: per-route body size and body deadline (a route without its own takes the
//!   server's `max_body_bytes` and `body_timeout_ms`).
//! - [`RequestGuard`]: server-wide admission hooks (connection and memory budgets plug in
//!   here): each may refuse a request or hand back a token held until its response is sent.
//!
//! A hook's refusal is an [`EdgeError`], rendered by the route's dialect like any other error.

use std::any::Any;

use hyper::http::request::Parts;
use hyper::Method;

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
/// read (the reliability issue's connection and memory budgets plug in here).
pub trait RequestGuard: Send + Sync {
    /// Admits a request (`declared_len`: its `Content-Length`, if any, already within the
    /// route's limit) or refuses it.
    fn admit(
        &self,
        route: &RouteInfo,
        head: &Parts,
        declared_len: Option<u64>,
    ) -> Result<GuardToken, EdgeError>;
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
            EdgeError::Unauthorized(_) => "unauthorized",
            EdgeError::Overloaded { .. } => "overloaded",
        }
    }
}
