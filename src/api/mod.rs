//! The REST dialects. Each module parses its requests, calls the batcher and renders the
//! engine's answer in its own wire format; none holds model logic. Each exposes
//! `pub fn routes() -> Vec<RouteSpec>` for the registry (see `server::routes`).

pub mod native;

use hyper::header::HeaderValue;

use crate::batcher::Processed;
use crate::server::HttpResponse;

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
