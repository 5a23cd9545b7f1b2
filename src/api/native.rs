//! facegate's native API.
//!
//! `POST /facegate/v1/analyze`
//! - body `image/jpeg`, `image/png` or `application/octet-stream`: one image; answers the
//!   document `facegate check` prints (the engine's `Analysis` plus `verdict`);
//! - body `multipart/form-data`: one image per part; answers
//!   `{"results":[{"name": ..., <analysis + verdict> | "error": {"kind","message"}}]}` in part
//!   order (status 200 even when some parts failed);
//! - query: `calibration=SOFT|REGULAR|HARDENED`, `template=true|false`.
//!
//! Errors are `{"error":{"kind","message"}}`, mapped from the engine error by
//! [`error_response`], the dialect's only mapping.

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::{max_times, multipart_parts, timing_headers};
use crate::cli::verdict;
use crate::engine::{Analysis, AnalyzeOptions, Calibration};
use crate::server::{handler, json_response, Ctx, HttpResponse, Mount, RouteSpec};
use crate::telemetry as tm;
use crate::Error;

/// Most image parts in one multipart request.
pub const MAX_PARTS: usize = 64;

/// The native dialect's routes.
pub fn routes() -> Vec<RouteSpec> {
    vec![RouteSpec::new(
        Method::POST,
        "/facegate/v1/analyze",
        "facegate",
        "facegate.analyze",
        Mount::Exact,
        handler(analyze),
    )
    .errors(|e, _| error_response(e))]
}

/// The one mapping from an engine error to this dialect's status and body; counts the error.
pub fn error_response(e: &Error) -> HttpResponse {
    let status = match e {
        Error::EmptyImage | Error::InvalidArgument(_) | Error::Bundle { .. } => {
            StatusCode::BAD_REQUEST
        }
        Error::BodyTooLarge { .. } | Error::ImageTooLarge { .. } | Error::TooManyPixels { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        Error::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        Error::UnsupportedFormat | Error::CorruptImage(_) | Error::ImageTooSmall { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Error::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Model { .. } | Error::Inference(_) | Error::Io(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    metrics::counter!(tm::ERRORS, "kind" => e.kind()).increment(1);
    if status.is_server_error() {
        tracing::warn!(kind = e.kind(), error = %e, "request failed");
    }
    let mut r = json_response(status, &json!({"error": error_body(e)}));
    if matches!(e, Error::Overloaded { .. } | Error::Unavailable(_)) {
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// `{"kind","message"}` for an error.
fn error_body(e: &Error) -> Value {
    json!({"kind": e.kind(), "message": e.to_string()})
}

/// The analysis document plus `verdict`.
fn analysis_doc(a: &Analysis) -> Value {
    let mut v =
        serde_json::to_value(a).unwrap_or_else(|e| json!({"serialization_error": e.to_string()}));
    v["verdict"] = json!(verdict(a));
    v
}

/// Parses `calibration` and `template`.
fn options(query: Option<&str>) -> Result<AnalyzeOptions, Error> {
    let mut opts = AnalyzeOptions::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "calibration" => {
                opts.calibration = Calibration::parse(v).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "unknown calibration {v}: use SOFT, REGULAR or HARDENED"
                    ))
                })?
            }
            "template" => {
                opts.template = match v {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(Error::InvalidArgument(format!(
                            "template must be true or false, not {v}"
                        )))
                    }
                }
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown query parameter {k}"
                )))
            }
        }
    }
    Ok(opts)
}

/// `POST /facegate/v1/analyze` (public so tests and other mounts can reuse it).
pub async fn analyze(req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    let opts = match options(req.uri().query()) {
        Ok(o) => o,
        Err(e) => return error_response(&e),
    };
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "image/jpeg" | "image/jpg" | "image/png" | "application/octet-stream" => {
            match ctx
                .app
                .batcher
                .submit(req.into_body(), opts, ctx.route.name)
                .await
            {
                Ok(p) => {
                    let mut r = json_response(StatusCode::OK, &analysis_doc(&p.analysis));
                    timing_headers(&mut r, p.queue_ms, p.inference_ms);
                    r
                }
                Err(e) => error_response(&e),
            }
        }
        "multipart/form-data" => {
            let (parts, body) = req.into_parts();
            multipart(&parts.headers, body, opts, &ctx).await
        }
        other => {
            let e = Error::InvalidArgument(format!(
                "unsupported Content-Type {other}: send image/jpeg, image/png, application/octet-stream or multipart/form-data"
            ));
            let mut r = error_response(&e);
            *r.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            r
        }
    }
}

/// Several images, one per multipart part.
async fn multipart(
    headers: &hyper::HeaderMap,
    body: Bytes,
    opts: AnalyzeOptions,
    ctx: &Ctx,
) -> HttpResponse {
    let parts = match multipart_parts(headers, body, MAX_PARTS).await {
        Ok(p) if p.is_empty() => return error_response(&Error::EmptyImage),
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    // Each part is named by its file name, else its field name, else `part<N>`.
    let (names, images): (Vec<String>, Vec<Bytes>) = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            (
                p.file_name.or(p.name).unwrap_or_else(|| format!("part{i}")),
                p.bytes,
            )
        })
        .unzip();
    let results = ctx
        .app
        .batcher
        .submit_many(images, opts, ctx.route.name)
        .await;
    let (q, i) = max_times(results.iter().filter_map(|r| r.as_ref().ok()));
    let docs: Vec<Value> = names
        .into_iter()
        .zip(&results)
        .map(|(name, r)| {
            let mut v = match r {
                Ok(p) => analysis_doc(&p.analysis),
                Err(e) => {
                    metrics::counter!(tm::ERRORS, "kind" => e.kind()).increment(1);
                    json!({"error": error_body(e)})
                }
            };
            v["name"] = json!(name);
            v
        })
        .collect();
    let mut r = json_response(StatusCode::OK, &json!({"results": docs}));
    timing_headers(&mut r, q, i);
    r
}
