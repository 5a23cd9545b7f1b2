//! The ID R&D IAD Server dialect (`../shared/seeds/001_*.txt`), prefix `/iad`.
//!
//! - `GET /api_version`: product, version, licence expiry.
//! - `POST /check_capture_liveness`: an FGCB bundle (`application/octet-stream`) ->
//!   `{"capture_liveness":{...}}` plus `face_liveness` when `server.iad_face_liveness` is on.
//! - `POST /extract_image`: the bundle's JPEG (`image/jpeg`).
//! - `POST /extract_data?types=photo,external`: `{"photo": base64, "external": ...}`.
//! - `GET /bi_records` (`date_from`, `date_to`: `yyyy-MM-dd`, inclusive).
//! - facegate extensions: `POST /nonce` (a single-use nonce for the next capture) and
//!   `GET /public_key` (the SPKI PEM bundles are sealed for).
//!
//! Errors use the reference's shape `{"timestamp","status","error","message","path",
//! "error_code"}`: image validation errors are 400 with their `FACE_*` code, bundle errors 400
//! with `UNKNOWN` and the reference's message. [`error_response`] is the one mapping from an
//! engine error.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::{query_pairs, read_bi, reference_path, timing_headers};
use crate::bi::{self, now_ms, BiRecord};
use crate::capture::{face_options, BundleFailure, CaptureReport, CaptureVerifier, Checked};
use crate::server::{handler, json_response, Ctx, HttpResponse, Mount, RouteSpec};
use crate::telemetry as tm;
use crate::Error;

/// Dialect name and path prefix.
pub const DIALECT: &str = "iad";
/// `product` of `/api_version`.
pub const PRODUCT: &str = "IADServer";
/// The `pipeline` recorded in BI for capture checks.
pub const BI_PIPELINE: &str = "iad";
/// `error_code` of every error that is not an image validation error.
pub const UNKNOWN: &str = "UNKNOWN";

/// The IAD dialect's routes.
pub fn routes() -> Vec<RouteSpec> {
    let row = |method, path, name, h| {
        RouteSpec::new(method, path, DIALECT, name, Mount::Dialect, h)
            .errors(|e, route| error_response(e, &route.path))
    };
    vec![
        row(
            Method::GET,
            "/api_version",
            "iad.api_version",
            handler(api_version),
        ),
        row(
            Method::POST,
            "/check_capture_liveness",
            "iad.check_capture_liveness",
            handler(check_capture_liveness),
        ),
        row(
            Method::POST,
            "/extract_image",
            "iad.extract_image",
            handler(extract_image),
        ),
        row(
            Method::POST,
            "/extract_data",
            "iad.extract_data",
            handler(extract_data),
        ),
        row(
            Method::GET,
            "/bi_records",
            "iad.bi_records",
            handler(bi_records),
        ),
        row(Method::POST, "/nonce", "iad.nonce", handler(nonce)),
        row(
            Method::GET,
            "/public_key",
            "iad.public_key",
            handler(public_key),
        ),
    ]
}

/// Renders the reference's error body.
fn render_error(status: StatusCode, message: &str, code: &str, path: &str) -> HttpResponse {
    let timestamp = bi::format_iso_ms(bi::now_ms()).replace('Z', "+00:00");
    json_response(
        status,
        &json!({
            "timestamp": timestamp,
            "status": status.as_u16(),
            "error": status.canonical_reason().unwrap_or(""),
            "message": message,
            "path": path,
            "error_code": code,
        }),
    )
}

/// The one mapping from an engine error to this dialect's response: bundle errors are 400 with
/// the reference's message and `UNKNOWN`; bad parameters 400; overload 429 and loading 503
/// (both with `Retry-After: 1`); server faults 500.
pub fn error_response(e: &Error, path: &str) -> HttpResponse {
    metrics::counter!(tm::ERRORS, "kind" => e.kind()).increment(1);
    let (status, message) = match e {
        Error::Bundle { failure, detail } => {
            tracing::debug!(detail = %detail, "bundle refused");
            (StatusCode::BAD_REQUEST, failure.message().to_string())
        }
        Error::InvalidArgument(m) => (StatusCode::BAD_REQUEST, m.clone()),
        Error::Overloaded { .. } => (StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        other if other.is_client_error() => (StatusCode::BAD_REQUEST, e.to_string()),
        _ => {
            tracing::warn!(kind = e.kind(), error = %e, "request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    };
    let mut r = render_error(status, &message, UNKNOWN, path);
    if matches!(e, Error::Overloaded { .. } | Error::Unavailable(_)) {
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// The verifier, or the error to answer when the server has none.
fn verifier(ctx: &Ctx) -> Result<Arc<CaptureVerifier>, Error> {
    ctx.app.capture.clone().ok_or_else(|| {
        Error::Unavailable("capture verification is not configured on this server".into())
    })
}

/// Runs a CPU-bound closure on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("worker task: {e}")))?
}

/// `GET /api_version`.
async fn api_version(_req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    json_response(
        StatusCode::OK,
        &json!({
            "product": PRODUCT,
            "version": env!("CARGO_PKG_VERSION"),
            "expirationDate": ctx.app.cfg.license_expiration,
        }),
    )
}

/// Records one capture decision (or a refused bundle: `report` is `None`).
fn record(ctx: &Ctx, t0: Instant, report: Option<&CaptureReport>, face: bool) {
    let (os, probability, quality, error_code) = match report {
        Some(r) => (
            r.os,
            Some(r.capture_liveness.probability),
            r.quality,
            r.bi_error_code().map(str::to_string),
        ),
        None => ("UNKNOWN", None, None, Some(UNKNOWN.to_string())),
    };
    ctx.app.bi.submit(BiRecord {
        time_ms: bi::now_ms(),
        route: reference_path(ctx),
        dialect: DIALECT.into(),
        pipeline: BI_PIPELINE.into(),
        calibration: face.then(|| "REGULAR".to_string()),
        domain: None,
        os: os.to_string(),
        probability,
        quality,
        error_code,
        latency_ms: t0.elapsed().as_secs_f64() * 1e3,
    });
}

/// `POST /check_capture_liveness`: the engine-free checks on the decode pool, then (face
/// liveness on) the payload's image through the micro-batcher like every other route.
async fn check_capture_liveness(req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    let t0 = Instant::now();
    let path = ctx.route.path.clone();
    let v = match verifier(&ctx) {
        Ok(v) => v,
        Err(e) => return error_response(&e, &path),
    };
    let face = ctx.app.cfg.iad_face_liveness;
    let body = req.into_body();
    let checker = v.clone();
    let checked = match blocking(move || checker.check_bundle_at(&body, now_ms())).await {
        Ok(c) => c,
        Err(e) => {
            if matches!(e, Error::Bundle { .. }) {
                record(&ctx, t0, None, face);
            }
            return error_response(&e, &path);
        }
    };
    let (report, times) = match checked {
        Checked::Final(report) => (report, None),
        Checked::Pending(pending) if face => {
            let image = Bytes::from(pending.image.clone());
            match ctx
                .app
                .batcher
                .submit(image, face_options(), ctx.route.name)
                .await
            {
                Ok(p) => (
                    v.finish(pending, Some(&p.analysis)),
                    Some((p.queue_ms, p.inference_ms)),
                ),
                Err(e) if e.is_client_error() => {
                    let e = Error::Bundle {
                        failure: BundleFailure::Metadata,
                        detail: format!("payload image: {e}"),
                    };
                    record(&ctx, t0, None, face);
                    return error_response(&e, &path);
                }
                Err(e) => return error_response(&e, &path),
            }
        }
        Checked::Pending(pending) => (v.finish(pending, None), None),
    };
    record(&ctx, t0, Some(&report), face);
    let mut r = match report.face_error {
        Some(fe) => {
            metrics::counter!(tm::ERRORS, "kind" => "face_error").increment(1);
            render_error(StatusCode::BAD_REQUEST, fe.message, fe.error_code, &path)
        }
        None => json_response(StatusCode::OK, &report.response()),
    };
    if let Some((q, i)) = times {
        timing_headers(&mut r, q, i);
    }
    r
}

/// `POST /extract_image`: the JPEG inside the bundle.
async fn extract_image(req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    let path = ctx.route.path.clone();
    let v = match verifier(&ctx) {
        Ok(v) => v,
        Err(e) => return error_response(&e, &path),
    };
    let body = req.into_body();
    match blocking(move || v.extract_image(&body)).await {
        Ok(jpeg) => {
            let mut r = Response::new(Full::new(Bytes::from(jpeg)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
            r
        }
        Err(e) => error_response(&e, &path),
    }
}

/// `POST /extract_data?types=photo,external` (also `types=photo&types=external`).
async fn extract_data(req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    let path = ctx.route.path.clone();
    let v = match verifier(&ctx) {
        Ok(v) => v,
        Err(e) => return error_response(&e, &path),
    };
    let types = query_pairs(req.uri().query())
        .into_iter()
        .filter(|(k, _)| k == "types")
        .map(|(_, v)| v)
        .collect::<Vec<_>>()
        .join(",");
    if let Err(e) = crate::capture::parse_types(&types) {
        return error_response(&e, &path);
    }
    let body = req.into_body();
    match blocking(move || v.extract_data(&body, &types)).await {
        Ok(map) => json_response(StatusCode::OK, &serde_json::Value::Object(map)),
        Err(e) => error_response(&e, &path),
    }
}

/// `GET /bi_records`: this dialect's records within the dates, oldest first.
async fn bi_records(req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    match read_bi(&ctx.app, DIALECT, req.uri().query()).await {
        Ok(records) => json_response(StatusCode::OK, &json!(records)),
        Err(e) => error_response(&e, &ctx.route.path),
    }
}

/// `POST /nonce` (facegate extension): a single-use nonce for the next capture bundle.
async fn nonce(_req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    let issued = verifier(&ctx).and_then(|v| v.issue_nonce());
    match issued {
        Ok(n) => json_response(
            StatusCode::OK,
            &json!({"nonce": n.nonce, "expires_at": bi::format_iso_ms(n.expires_at_ms)}),
        ),
        Err(e) => error_response(&e, &ctx.route.path),
    }
}

/// `GET /public_key` (facegate extension): the SPKI PEM capture clients seal bundles for.
async fn public_key(_req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    match verifier(&ctx).and_then(|v| v.public_key_pem()) {
        Ok(pem) => {
            let mut r = Response::new(Full::new(Bytes::from(pem)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            );
            r
        }
        Err(e) => error_response(&e, &ctx.route.path),
    }
}
