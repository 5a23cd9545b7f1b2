//! Errors at the API edge: one class per failure, decided once here; each dialect's table
//! renders the class as its status and body; metrics, logs and `Retry-After` are done once, in
//! [`respond`] (or [`note`] for errors a dialect folds into a 200 answer).
//!
//! | class | engine errors | edge errors |
//! |---|---|---|
//! | `BadRequest` | `empty_image`, `invalid_argument` | `body_read` |
//! | `Unauthorized` | | `unauthorized` |
//! | `PayloadTooLarge` | `image_too_large`, `too_many_pixels` | `body_too_large` |
//! | `Timeout` | | `body_timeout` |
//! | `UnsupportedMedia` | | (a dialect's Content-Type check) |
//! | `Unprocessable` | `unsupported_format`, `corrupt_image`, `image_too_small` | |
//! | `Overloaded` | `overloaded` | `overloaded` (a guard) |
//! | `Unavailable` | `unavailable` | |
//! | `Internal` | `model`, `inference`, `io`, `internal` | |

use hyper::header::{HeaderValue, RETRY_AFTER};

use crate::server::{EdgeError, HttpResponse, RouteInfo};
use crate::telemetry as tm;
use crate::Error;

/// What kind of failure an error is, independent of any dialect's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request is malformed or names something invalid.
    BadRequest,
    /// The route requires credentials the request did not carry.
    Unauthorized,
    /// The body or an image is over a configured bound.
    PayloadTooLarge,
    /// The body did not arrive in time.
    Timeout,
    /// The body is of a type the route does not take.
    UnsupportedMedia,
    /// The image cannot be used (not an image, corrupt, too small).
    Unprocessable,
    /// The server is at a capacity bound; retry later.
    Overloaded,
    /// The engine is not serving (loading, stopping, failed); retry later.
    Unavailable,
    /// A server-side fault.
    Internal,
}

impl ErrorClass {
    /// The class of an engine error (the one table of the API edge).
    pub fn of_engine(e: &Error) -> ErrorClass {
        match e {
            Error::EmptyImage | Error::InvalidArgument(_) => ErrorClass::BadRequest,
            Error::ImageTooLarge { .. } | Error::TooManyPixels { .. } => {
                ErrorClass::PayloadTooLarge
            }
            Error::UnsupportedFormat | Error::CorruptImage(_) | Error::ImageTooSmall { .. } => {
                ErrorClass::Unprocessable
            }
            Error::Overloaded { .. } => ErrorClass::Overloaded,
            Error::Unavailable(_) => ErrorClass::Unavailable,
            Error::Model { .. } | Error::Inference(_) | Error::Io(_) | Error::Internal(_) => {
                ErrorClass::Internal
            }
        }
    }

    /// The class of an edge error.
    pub fn of_edge(e: &EdgeError) -> ErrorClass {
        match e {
            EdgeError::BodyTooLarge { .. } => ErrorClass::PayloadTooLarge,
            EdgeError::BodyTimeout { .. } => ErrorClass::Timeout,
            EdgeError::BodyRead(_) | EdgeError::MalformedHead { .. } => ErrorClass::BadRequest,
            EdgeError::Unauthorized(_) => ErrorClass::Unauthorized,
            EdgeError::Overloaded { .. } => ErrorClass::Overloaded,
        }
    }

    /// The client should retry later (`Retry-After` is set).
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorClass::Overloaded | ErrorClass::Unavailable)
    }

    /// The server, not the client, is at fault (logged as a warning).
    pub fn is_server_fault(self) -> bool {
        matches!(
            self,
            ErrorClass::Overloaded | ErrorClass::Unavailable | ErrorClass::Internal
        )
    }
}

/// A dialect's own failure that no engine error describes (IAD's bundle errors).
#[derive(Debug, Clone, PartialEq)]
pub struct DialectError {
    /// Metrics label and log field.
    pub kind: &'static str,
    /// Its class.
    pub class: ErrorClass,
    /// What the client is told.
    pub message: String,
    /// What only the logs get (never sent to clients).
    pub detail: String,
}

/// Every error a handler or the edge can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The engine (or batcher) refused or failed.
    #[error(transparent)]
    Engine(#[from] Error),
    /// The HTTP edge refused the request before the handler ran.
    #[error(transparent)]
    Edge(#[from] EdgeError),
    /// The body's Content-Type is not one the route takes.
    #[error("unsupported Content-Type {0}")]
    UnsupportedMedia(String),
    /// A dialect's own failure.
    #[error("{}", .0.message)]
    Dialect(DialectError),
}

impl ApiError {
    /// Its class.
    pub fn class(&self) -> ErrorClass {
        match self {
            ApiError::Engine(e) => ErrorClass::of_engine(e),
            ApiError::Edge(e) => ErrorClass::of_edge(e),
            ApiError::UnsupportedMedia(_) => ErrorClass::UnsupportedMedia,
            ApiError::Dialect(d) => d.class,
        }
    }

    /// Short stable name for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Engine(e) => e.kind(),
            ApiError::Edge(e) => e.kind(),
            ApiError::UnsupportedMedia(_) => "unsupported_media_type",
            ApiError::Dialect(d) => d.kind,
        }
    }

    /// Shorthand for an engine `InvalidArgument`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::Engine(Error::InvalidArgument(message.into()))
    }

    /// Seconds a client should wait before retrying, for transient errors.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            ApiError::Edge(EdgeError::Overloaded { retry_after_s, .. }) => {
                Some((*retry_after_s).max(1))
            }
            e if e.class().is_transient() => Some(1),
            _ => None,
        }
    }
}

/// A dialect's error table: how each error is rendered in its wire format.
pub trait ErrorTable: Send + Sync {
    /// Dialect name (the `dialect` label of the errors metric).
    fn dialect(&self) -> &'static str;
    /// Status and body for `e` on `route` (no metrics, logs or `Retry-After`: [`respond`] adds
    /// those).
    fn render(&self, e: &ApiError, route: &RouteInfo) -> HttpResponse;
}

/// Counts and logs an error once: `facegate_errors_total{kind, dialect}`; server faults are
/// logged as warnings, the rest at debug (with any dialect detail, never sent to clients).
/// Overload and unavailability refusals are debug too: under a storm they come by the ten
/// thousand a second, and the server's per-second summary line counts them.
pub fn note(dialect: &'static str, e: &ApiError) {
    metrics::counter!(tm::ERRORS, "kind" => e.kind(), "dialect" => dialect).increment(1);
    let detail = match e {
        ApiError::Dialect(d) => d.detail.as_str(),
        _ => "",
    };
    let class = e.class();
    if class.is_server_fault() && !class.is_transient() {
        tracing::warn!(kind = e.kind(), dialect, error = %e, detail, "request failed");
    } else {
        tracing::debug!(kind = e.kind(), dialect, error = %e, detail, "request refused");
    }
}

/// Sets `Retry-After` to `secs`.
pub fn set_retry_after(r: &mut HttpResponse, secs: u64) {
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(RETRY_AFTER, v);
    }
}

/// The response for `e` in `table`'s format: rendered, counted, logged, and with
/// `Retry-After` when the error is transient.
pub fn respond(table: &dyn ErrorTable, e: &ApiError, route: &RouteInfo) -> HttpResponse {
    note(table.dialect(), e);
    let mut r = table.render(e, route);
    if let Some(s) = e.retry_after_s() {
        set_retry_after(&mut r, s);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::AuthFailure;

    #[test]
    fn classes_and_retry_hints() {
        assert_eq!(
            ApiError::from(Error::ImageTooSmall {
                width: 1,
                height: 1,
                min: 32
            })
            .class(),
            ErrorClass::Unprocessable
        );
        let e = ApiError::from(EdgeError::Overloaded {
            what: "memory budget of 1 bytes".into(),
            retry_after_s: 3,
        });
        assert_eq!(
            (e.class(), e.retry_after_s()),
            (ErrorClass::Overloaded, Some(3))
        );
        assert_eq!(
            ApiError::from(Error::Unavailable("x".into())).retry_after_s(),
            Some(1)
        );
        let e = ApiError::from(EdgeError::Unauthorized(AuthFailure::Missing("key".into())));
        assert_eq!(
            (e.class(), e.retry_after_s(), e.kind()),
            (ErrorClass::Unauthorized, None, "unauthorized")
        );
        assert!(
            ErrorClass::Internal.is_server_fault() && !ErrorClass::BadRequest.is_server_fault()
        );
    }
}
