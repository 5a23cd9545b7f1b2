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

use super::{max_times, timing_headers};
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
    )]
}

/// The one mapping from an engine error to this dialect's status and body; counts the error.
pub fn error_response(e: &Error) -> HttpResponse {
    let status = match e {
        Error::EmptyImage | Error::InvalidArgument(_) | Error::Bundle { .. } => {
            StatusCode::BAD_REQUEST
        }
        Error::ImageTooLarge { .. } | Error::TooManyPixels { .. } => StatusCode::PAYLOAD_TOO_LARGE,
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
        "multipart/form-data" => multipart(&content_type, req.into_body(), opts, &ctx).await,
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
    content_type: &str,
    body: Bytes,
    opts: AnalyzeOptions,
    ctx: &Ctx,
) -> HttpResponse {
    let parts = match read_parts(content_type, body).await {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let (names, images): (Vec<String>, Vec<Bytes>) = parts.into_iter().unzip();
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

/// (name, bytes) of every part: the file name, else the field name, else `part<N>`.
async fn read_parts(content_type: &str, body: Bytes) -> Result<Vec<(String, Bytes)>, Error> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        Error::InvalidArgument(format!(
            "multipart/form-data without a usable boundary: {e}"
        ))
    })?;
    let stream =
        futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "malformed multipart body: {e}"
                )))
            }
        };
        if parts.len() == MAX_PARTS {
            return Err(Error::InvalidArgument(format!(
                "too many parts: at most {MAX_PARTS} images per request"
            )));
        }
        let name = field
            .file_name()
            .or(field.name())
            .map(str::to_string)
            .unwrap_or_else(|| format!("part{}", parts.len()));
        let bytes = field
            .bytes()
            .await
            .map_err(|e| Error::InvalidArgument(format!("malformed multipart part {name}: {e}")))?;
        parts.push((name, bytes));
    }
    if parts.is_empty() {
        return Err(Error::EmptyImage);
    }
    Ok(parts)
}
