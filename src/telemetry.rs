//! Prometheus metrics: the series names in one place, and the process-wide recorder that
//! `GET /metrics` renders on request (the exporter runs no HTTP listener of its own).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `route`, `method` and `status`.
pub const REQUESTS: &str = "facegate_requests_total";
/// Errors returned to clients, by `kind` (the engine or edge error kind, or a server-level
/// kind) and `dialect`.
pub const ERRORS: &str = "facegate_errors_total";
/// End-to-end request latency, seconds, by `route`.
pub const REQUEST_SECONDS: &str = "facegate_request_duration_seconds";
/// Decode and downscale time per image, seconds.
pub const PREPARE_SECONDS: &str = "facegate_prepare_duration_seconds";
/// Time an image waited in a stage queue before its batch ran, seconds, by `stage`.
pub const QUEUE_WAIT_SECONDS: &str = "facegate_queue_wait_seconds";
/// Forward time of one batch, seconds, by `stage`.
pub const INFERENCE_SECONDS: &str = "facegate_inference_duration_seconds";
/// Images per batch, by `stage`.
pub const BATCH_SIZE: &str = "facegate_batch_size";
/// Batches that mixed images from more than one route, by `stage`.
pub const BATCH_MIXED: &str = "facegate_batches_mixed_routes_total";
/// Images dropped before running because their client had gone, by `stage`.
pub const CANCELLED: &str = "facegate_cancelled_total";
/// Images waiting in a stage queue, by `stage`.
pub const QUEUE_DEPTH: &str = "facegate_queue_depth";
/// Images admitted into the batcher and not yet answered (the quantity `queue_bound` caps).
pub const ADMITTED: &str = "facegate_admitted_images";
/// HTTP requests being served.
pub const IN_FLIGHT: &str = "facegate_in_flight_requests";
/// Constant 1, labelled with each loaded `model`, the `device` it runs on and the CPU
/// `kernels` instruction set.
pub const MODEL_INFO: &str = "facegate_model_info";
/// 1 when the networks run on CPU instead of the configured device (`/health` says why).
pub const DEVICE_FALLBACK: &str = "facegate_device_fallback";
/// TLS handshakes that failed (`reason`: `refused`, `timeout`).
pub const TLS_HANDSHAKE_FAILURES: &str = "facegate_tls_handshake_failures_total";
/// Devices taken out at run time (their worker went on on the CPU).
pub const DEVICE_FAILURES: &str = "facegate_device_failures_total";
/// Connections the server closed early, by `reason` (`evicted`: to make room at a cap,
/// `first_request_timeout`, `idle_timeout`).
pub const CONNECTIONS_CLOSED: &str = "facegate_connections_closed_total";
/// Connections refused at accept, by `reason` (`max_connections`, `per_peer`: every
/// connection in the way had a request in flight).
pub const CONNECTIONS_REFUSED: &str = "facegate_connections_refused_total";
/// Request body bytes reserved by the memory budget now.
pub const BODY_BYTES_HELD: &str = "facegate_body_bytes_held";
/// Requests a budget refused before reading their body, by `budget`.
pub const BUDGET_REFUSALS: &str = "facegate_budget_refusals_total";
/// BI records dropped because the writer's queue was full.
pub const BI_DROPPED: &str = "facegate_bi_records_dropped_total";
/// BI records whose write to the store failed.
pub const BI_FAILED: &str = "facegate_bi_records_failed_total";
/// Open client connections.
pub const CONNECTIONS_OPEN: &str = "facegate_connections_open";
/// Threads the networks run on.
pub const INFERENCE_THREADS: &str = "facegate_inference_threads";
/// The licence expiry a dialect reports, Unix seconds, by `dialect` (ID R&D's references say
/// operators monitor it through `/metrics`).
pub const LICENSE_EXPIRATION: &str = "facegate_license_expiration_seconds";

/// Latency buckets, seconds: 1 ms .. 30 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.35, 0.5, 1.0, 2.5, 10.0, 30.0,
];
/// Batch size buckets.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 64.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the global `metrics` recorder (once per process) and
/// returns its render handle; `None` if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &BATCH_BUCKETS)
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!("metrics buckets rejected: {e}");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(e) => {
                    tracing::warn!("metrics recorder not installed: {e}");
                    None
                }
            }
        })
        .clone()
}
