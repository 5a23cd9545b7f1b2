//! The ID R&D IAD Server dialect (`../shared/seeds/001_*.txt`), prefix `/iad`.
//!
//! - `GET /api_version`: product, version, licence expiry.
//! - `POST /check_capture_liveness`: an FGCB bundle (`application/octet-stream`) ->
//!   `{"capture_liveness":{...}}` plus `face_liveness` when `iad.face_liveness` is on.
//! - `POST /extract_image`: the bundle's JPEG (`image/jpeg`).
//! - `POST /extract_data?types=photo,external`: `{"photo": base64, "external": ...}`.
//! - `GET /bi_records` (`date_from`, `date_to`: `yyyy-MM-dd`, inclusive).
//! - facegate extensions: `POST /nonce` (a single-use nonce for the next capture) and
//!   `GET /public_key` (the SPKI PEM bundles are sealed for).
//!
//! Errors use the reference's shape `{"timestamp","status","error","message","path",
//! "error_code"}`: image validation errors are 400 with their `FACE_*` code, bundle errors 400
//! with `UNKNOWN` and the reference's message ([`Iad`]'s error table).
//!
//! The capture-bundle format and its checks live in [`capture`]; the client-side tools
//! (`facegate keys`, `facegate bundle`) in [`cli`].

pub mod capture;
pub mod cli;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{note, ApiError, DialectError, ErrorClass, ErrorTable};
use super::idrnd::{bi_records, export_license, validate_license, Licensed};
use super::query::Query;
use super::{reference_path, route, timing_headers, Dialect, Edge};
use crate::bi::{self, now_ms, BiRecord, BiWriter};
use crate::server::{json_response, Ctx, HttpResponse, Mount, RouteInfo, RouteSpec};
use crate::Error;
use capture::{
    check_capture, CaptureArgs, CaptureConfig, CaptureError, CaptureReport, CaptureVerifier,
};

/// Dialect name and path prefix.
pub const DIALECT: &str = "iad";
/// `product` of `/api_version`.
pub const PRODUCT: &str = "IADServer";
/// The `pipeline` recorded in BI for capture checks.
pub const BI_PIPELINE: &str = "iad";
/// `error_code` of every error that is not an image validation error.
pub const UNKNOWN: &str = "UNKNOWN";

/// The `[iad]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IadConfig {
    /// Licence expiry reported by `/api_version`.
    #[serde(flatten)]
    pub licensed: Licensed,
    /// `/check_capture_liveness` also runs passive face liveness (`face_liveness`).
    pub face_liveness: bool,
    /// Capture-bundle checks (`[iad.capture]`).
    pub capture: CaptureConfig,
}

impl Default for IadConfig {
    fn default() -> Self {
        Self {
            licensed: Licensed::default(),
            face_liveness: true,
            capture: CaptureConfig::default(),
        }
    }
}

impl IadConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> crate::Result<()> {
        validate_license("iad.license_expiration", &self.licensed.license_expiration)?;
        self.capture.validate()
    }
}

/// Command-line/environment overrides of [`IadConfig`].
#[derive(Debug, Clone, Default, Args)]
pub struct IadArgs {
    /// Licence expiry IAD reports, ISO 8601 [default: 2999-12-31T23:59:59Z].
    #[arg(
        long = "iad-license-expiration",
        env = "FACEGATE_IAD_LICENSE_EXPIRATION"
    )]
    pub license_expiration: Option<String>,
    /// check_capture_liveness also runs face liveness (true|false) [default: true].
    #[arg(long = "iad-face-liveness", env = "FACEGATE_IAD_FACE_LIVENESS")]
    pub face_liveness: Option<bool>,
    /// Capture bundle options.
    #[command(flatten)]
    pub capture: CaptureArgs,
}

impl IadArgs {
    /// Applies the flags/environment on top of `cfg` (defaults or the `[iad]` section).
    pub fn apply(&self, mut cfg: IadConfig) -> crate::Result<IadConfig> {
        if let Some(v) = &self.license_expiration {
            cfg.licensed.license_expiration = v.clone();
        }
        if let Some(v) = self.face_liveness {
            cfg.face_liveness = v;
        }
        cfg.capture = self.capture.apply(cfg.capture)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The IAD dialect: its configuration, its capture verifier (key, nonces) and its BI writer.
pub struct Iad {
    /// Settings in force.
    cfg: IadConfig,
    /// Opens and checks capture bundles; `None` leaves the bundle endpoints at 503.
    capture: Option<Arc<CaptureVerifier>>,
    /// BI records (shared with IDLive's, filtered by dialect).
    bi: Arc<BiWriter>,
}

impl Iad {
    /// The dialect with `capture` (None: bundle endpoints answer 503) over `bi`; exports its
    /// licence expiry.
    pub fn new(
        cfg: IadConfig,
        capture: Option<Arc<CaptureVerifier>>,
        bi: Arc<BiWriter>,
    ) -> crate::Result<Arc<Self>> {
        cfg.validate()?;
        export_license(DIALECT, &cfg.licensed.license_expiration);
        Ok(Arc::new(Self { cfg, capture, bi }))
    }

    /// A verifier for the configured `iad.capture.private_key`, or, without one, an ephemeral
    /// 2048-bit key generated now (clients must then fetch `GET /iad/public_key` after every
    /// start; a warning says so).
    pub async fn verifier_from_config(cfg: &CaptureConfig) -> crate::Result<CaptureVerifier> {
        if cfg.private_key.is_some() {
            return CaptureVerifier::from_config(cfg.clone());
        }
        let key = tokio::task::spawn_blocking(|| capture::generate_key(2048))
            .await
            .map_err(|e| Error::Unavailable(format!("key generation task: {e}")))??;
        tracing::warn!(
            "no iad.capture.private_key configured: generated an ephemeral RSA key; capture \
             clients must fetch its public key from GET /iad/public_key after every start"
        );
        CaptureVerifier::new(cfg.clone(), key)
    }

    /// The verifier, or the error to answer when the server has none.
    fn verifier(&self) -> Result<&Arc<CaptureVerifier>, ApiError> {
        self.capture.as_ref().ok_or_else(|| {
            Error::Unavailable("capture verification is not configured on this server".into())
                .into()
        })
    }

    /// Records one capture decision (or a refused bundle: `report` is `None`).
    #[must_use]
    fn record(&self, ctx: &Ctx, t0: Instant, report: Option<&CaptureReport>) -> bi::Ticket {
        let (os, probability, quality, error_code) = match report {
            Some(r) => (
                r.os,
                Some(r.capture_liveness.probability),
                r.quality,
                r.bi_error_code().map(str::to_string),
            ),
            None => ("UNKNOWN", None, None, Some(UNKNOWN.to_string())),
        };
        self.bi.record(BiRecord {
            time_ms: bi::now_ms(),
            route: reference_path(ctx),
            dialect: DIALECT.into(),
            pipeline: BI_PIPELINE.into(),
            calibration: self.cfg.face_liveness.then(|| "REGULAR".to_string()),
            domain: None,
            os: os.to_string(),
            probability,
            quality,
            error_code,
            latency_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// `GET /api_version`.
    async fn api_version(
        self: Arc<Self>,
        _req: Request<Bytes>,
        _ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "product": PRODUCT,
                "version": env!("CARGO_PKG_VERSION"),
                "expirationDate": self.cfg.licensed.license_expiration,
            }),
        ))
    }

    /// `POST /check_capture_liveness`: the capture checks and, when on, face liveness through
    /// the micro-batcher ([`check_capture`]).
    async fn check_capture_liveness(
        self: Arc<Self>,
        req: Request<Bytes>,
        ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let t0 = Instant::now();
        let v = self.verifier()?;
        let batcher = self.cfg.face_liveness.then_some(&ctx.app.batcher);
        let out = match check_capture(v, batcher, req.into_body(), now_ms(), ctx.route.name).await {
            Ok(o) => o,
            Err(e) => {
                if matches!(e, CaptureError::Bundle { .. }) {
                    self.record(&ctx, t0, None).settle().await?;
                }
                return Err(e.into());
            }
        };
        self.record(&ctx, t0, Some(&out.report)).settle().await?;
        let mut r = match out.report.face_error {
            Some(fe) => {
                note(
                    DIALECT,
                    &ApiError::Dialect(DialectError {
                        kind: "face_error",
                        class: ErrorClass::BadRequest,
                        message: fe.message.into(),
                        detail: fe.error_code.into(),
                    }),
                );
                render_error(
                    StatusCode::BAD_REQUEST,
                    fe.message,
                    fe.error_code,
                    &ctx.route.path,
                )
            }
            None => json_response(StatusCode::OK, &out.report.response()),
        };
        if let Some((q, i)) = out.times {
            timing_headers(&mut r, q, i);
        }
        Ok(r)
    }

    /// `POST /extract_image`: the JPEG inside the bundle.
    async fn extract_image(
        self: Arc<Self>,
        req: Request<Bytes>,
        _ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let v = self.verifier()?.clone();
        let body = req.into_body();
        let jpeg = blocking(move || v.extract_image(&body)).await?;
        let mut r = Response::new(Full::new(Bytes::from(jpeg)));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
        Ok(r)
    }

    /// `POST /extract_data?types=photo,external` (also `types=photo&types=external`).
    async fn extract_data(
        self: Arc<Self>,
        req: Request<Bytes>,
        _ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let v = self.verifier()?.clone();
        let types = Query::parse(req.uri().query())?
            .all("types")
            .collect::<Vec<_>>()
            .join(",");
        capture::parse_types(&types)?;
        let body = req.into_body();
        let map = blocking(move || v.extract_data(&body, &types)).await?;
        Ok(json_response(
            StatusCode::OK,
            &serde_json::Value::Object(map),
        ))
    }

    /// `GET /bi_records`: this dialect's records within the dates, oldest first.
    async fn bi_records(
        self: Arc<Self>,
        req: Request<Bytes>,
        _ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        bi_records(&self.bi, DIALECT, &req).await
    }

    /// `POST /nonce` (facegate extension): a single-use nonce for the next capture bundle.
    async fn nonce(
        self: Arc<Self>,
        _req: Request<Bytes>,
        _ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let v = Arc::clone(self.verifier()?);
        let n = blocking(move || Ok(v.issue_nonce()?)).await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({"nonce": n.nonce, "expires_at": bi::format_iso_ms(n.expires_at_ms)}),
        ))
    }

    /// `GET /public_key` (facegate extension): the SPKI PEM capture clients seal bundles for.
    async fn public_key(
        self: Arc<Self>,
        _req: Request<Bytes>,
        _ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let pem = self.verifier()?.public_key_pem()?;
        let mut r = Response::new(Full::new(Bytes::from(pem)));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-pem-file"),
        );
        Ok(r)
    }
}

impl Dialect for Iad {
    fn routes(self: Arc<Self>, edge: &Edge) -> Vec<RouteSpec> {
        let d = Mount::Dialect;
        vec![
            route(
                &self,
                edge,
                Method::GET,
                "/api_version",
                "iad.api_version",
                d,
                Self::api_version,
            ),
            route(
                &self,
                edge,
                Method::POST,
                "/check_capture_liveness",
                "iad.check_capture_liveness",
                d,
                Self::check_capture_liveness,
            ),
            route(
                &self,
                edge,
                Method::POST,
                "/extract_image",
                "iad.extract_image",
                d,
                Self::extract_image,
            ),
            route(
                &self,
                edge,
                Method::POST,
                "/extract_data",
                "iad.extract_data",
                d,
                Self::extract_data,
            ),
            route(
                &self,
                edge,
                Method::GET,
                "/bi_records",
                "iad.bi_records",
                d,
                Self::bi_records,
            ),
            route(
                &self,
                edge,
                Method::POST,
                "/nonce",
                "iad.nonce",
                d,
                Self::nonce,
            ),
            route(
                &self,
                edge,
                Method::GET,
                "/public_key",
                "iad.public_key",
                d,
                Self::public_key,
            ),
        ]
    }
}

impl From<CaptureError> for ApiError {
    fn from(e: CaptureError) -> Self {
        match e {
            CaptureError::Bundle { failure, detail } => ApiError::Dialect(DialectError {
                kind: "bundle",
                class: ErrorClass::BadRequest,
                message: failure.message().to_string(),
                detail,
            }),
            CaptureError::Engine(e) => ApiError::Engine(e),
        }
    }
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

impl ErrorTable for Iad {
    fn dialect(&self) -> &'static str {
        DIALECT
    }

    /// The reference's error body with `UNKNOWN`: bundle errors, bad parameters and unusable
    /// input 400 (bundle errors with the reference's message), a refused credential 401,
    /// overload 429, loading 503, server faults 500.
    fn render(&self, e: &ApiError, route: &RouteInfo) -> HttpResponse {
        let status = match e.class() {
            ErrorClass::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorClass::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorClass::BadRequest
            | ErrorClass::PayloadTooLarge
            | ErrorClass::Timeout
            | ErrorClass::UnsupportedMedia
            | ErrorClass::Unprocessable => StatusCode::BAD_REQUEST,
        };
        let message = match e {
            ApiError::Engine(Error::InvalidArgument(m)) => m.clone(),
            other => other.to_string(),
        };
        render_error(status, &message, UNKNOWN, &route.path)
    }
}

/// Runs a CPU-bound closure on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> capture::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Engine(Error::Unavailable(format!("worker task: {e}"))))?
        .map_err(ApiError::from)
}
