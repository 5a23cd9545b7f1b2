//! The API edge and the REST dialects.
//!
//! Shared modules, used by every dialect:
//! - [`dialect`]: the plug-in trait and the route builder;
//! - [`input`]: raw bodies, multipart, base64 in JSON and frame lists, as batcher inputs;
//! - [`query`]: the one query-string parser;
//! - [`error`]: error classes, per-dialect error tables, metrics, logs and `Retry-After`;
//! - [`auth`]: API keys and a JWT verifier for the routes' authentication hook;
//!
//! Dialects, each a thin module of parse -> engine -> render: [`native`], [`idlive`] and
//! [`iad`] (ID R&D; [`idrnd`] holds what the two share: BI records and the licence date), and
//! [`bioid`] (BioID BWS LivenessDetection, with BWS's JWT authentication), [`knomi`] (Aware
//! Knomi) and [`oz`] (Oz API Lite).
//!
//! About the server itself: [`openapi`] (the OpenAPI 3.1 document of every mounted route, each
//! dialect describing its own) and [`docs`] (serving it, Swagger UI and the capture console).

pub mod auth;
pub mod bioid;
pub mod dialect;
pub mod docs;
pub mod error;
pub mod iad;
pub mod idlive;
pub mod idrnd;
pub mod input;
pub mod knomi;
pub mod native;
pub mod openapi;
pub mod oz;
pub mod query;

use hyper::header::HeaderValue;

use crate::batcher::Processed;
use crate::server::{Ctx, HttpResponse};

pub use dialect::{route, Dialect, Edge};
pub use error::{ApiError, DialectError, ErrorClass, ErrorTable};

/// Adds `x-queue-time` and `x-inference-time` (ms, three decimals) to a response.
pub fn timing_headers(resp: &mut HttpResponse, queue_ms: f64, inference_ms: f64) {
    for (name, v) in [
        ("x-queue-time", queue_ms),
        ("x-inference-time", inference_ms),
    ] {
        if let Ok(v) = HeaderValue::from_str(&format!("{v:.3}")) {
            resp.headers_mut().insert(name, v);
        }
    }
}

/// The largest queue and inference times of several processed images.
pub fn max_times<'a>(items: impl IntoIterator<Item = &'a Processed>) -> (f64, f64) {
    items.into_iter().fold((0.0, 0.0), |(q, i), p| {
        (f64::max(q, p.queue_ms), f64::max(i, p.inference_ms))
    })
}

/// The reference's path of a route (`/check_liveness` for `/idlive/check_liveness`).
pub fn reference_path(ctx: &Ctx) -> String {
    let prefix = format!("/{}", ctx.route.dialect);
    match ctx.route.path.strip_prefix(&prefix) {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => ctx.route.path.clone(),
    }
}
