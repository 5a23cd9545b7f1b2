//! The Oz API Lite dialect (`../shared/seeds/004_*.txt`), prefix `/oz`.
//!
//! - Biometry under `/v1/face/pattern/`: `health`, `extract` (image -> template), `compare`,
//!   `verify`, `extract_and_compare` (1:1), `compare_n`, `verify_n`, `extract_and_compare_n`
//!   (1:N) ([`biometry`]);
//! - Liveness under `/v1/face/liveness/`: `health`, `detect` on one image or on a multipart of
//!   images, videos and zip archives with a `payload` ([`liveness`], [`media`]);
//! - `GET /version`: core, engine and model versions from the model manifest.
//!
//! `Content-Transfer-Encoding: base64` on a request switches its inputs (body or parts) and
//! its template outputs to base64, on every method. Errors are `{"code", "message"}` with the
//! reference's BPE (biometry) or LDE (liveness) codes; a method a path does not serve is a 400
//! with BPE-002002 / LDE-002002, not a 405. Templates are [`crate::engine::FaceTemplate`]'s
//! binary format; decisions (match recommendation, spoof verdict, fusion over frames) are the
//! engine's.

pub mod biometry;
pub mod liveness;
pub mod media;

use std::future::Future;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{ApiError, DialectError, ErrorClass, ErrorTable};
use super::input::{base64_image, ArchiveLimits};
use super::{route, Dialect, Edge};
use crate::batcher::Status;
use crate::engine::MatchPolicy;
use crate::models::Manifest;
use crate::preprocess::video::VideoLimits;
use crate::server::{
    json_response, BodyLimits, Ctx, EdgeError, HttpResponse, Mount, RouteInfo, RouteSpec,
};
use crate::Error;
use biometry::Pattern;

/// Dialect name and path prefix.
pub const DIALECT: &str = "oz";

/// What went wrong, in the reference's terms; the code depends on the processor (biometry or
/// liveness) of the route, see [`CODES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The request's Content-Type is not one the method takes.
    ContentType,
    /// The path does not serve this HTTP method.
    Method,
    /// A sample (image, video, archive) is missing, empty, unreadable or over a bound.
    Sample,
    /// A template is missing, foreign, truncated, corrupt or from another model.
    Template,
    /// A multipart part's Content-Type is not one its field takes.
    PartType,
    /// A face was found but no template could be computed from it.
    Extract,
    /// The sample shows no face.
    NoFace,
    /// The sample shows more than one person.
    ManyFaces,
    /// A server-side fault.
    Internal,
    /// The engine is not serving (loading, failed, overloaded).
    NotReady,
}

/// Every failure: (failure, metrics kind, biometry code, liveness code, status).
pub const CODES: [(Failure, &str, &str, &str, StatusCode); 10] = [
    (
        Failure::ContentType,
        "oz_content_type",
        "BPE-002001",
        "LDE-002001",
        StatusCode::BAD_REQUEST,
    ),
    (
        Failure::Method,
        "oz_method",
        "BPE-002002",
        "LDE-002002",
        StatusCode::BAD_REQUEST,
    ),
    (
        Failure::Sample,
        "oz_sample",
        "BPE-002003",
        "LDE-002004",
        StatusCode::BAD_REQUEST,
    ),
    (
        Failure::Template,
        "oz_template",
        "BPE-002004",
        "LDE-002004",
        StatusCode::BAD_REQUEST,
    ),
    (
        Failure::PartType,
        "oz_part_type",
        "BPE-002005",
        "LDE-002005",
        StatusCode::BAD_REQUEST,
    ),
    (
        Failure::Extract,
        "oz_extract",
        "BPE-003001",
        "LDE-002004",
        StatusCode::BAD_REQUEST,
    ),
    (
        Failure::NoFace,
        "oz_no_face",
        "BPE-003002",
        "LDE-002004",
        StatusCode::BAD_REQUEST,
    ),
    (
        Failure::ManyFaces,
        "oz_many_faces",
        "BPE-003003",
        "LDE-002004",
        StatusCode::BAD_REQUEST,
    ),
    (
        Failure::Internal,
        "oz_internal",
        "BPE-001001",
        "LDE-001001",
        StatusCode::INTERNAL_SERVER_ERROR,
    ),
    (
        Failure::NotReady,
        "oz_not_ready",
        "BPE-001002",
        "LDE-001002",
        StatusCode::BAD_REQUEST,
    ),
];

/// A row of [`CODES`].
type CodeRow = (
    Failure,
    &'static str,
    &'static str,
    &'static str,
    StatusCode,
);

impl Failure {
    fn row(self) -> &'static CodeRow {
        // Every failure has its row (a unit test checks it); Internal's is the fallback.
        CODES.iter().find(|r| r.0 == self).unwrap_or(&CODES[8])
    }

    /// Metrics label.
    pub fn kind(self) -> &'static str {
        self.row().1
    }

    /// The reference's description, the start of every message.
    pub fn description(self, liveness: bool) -> &'static str {
        match (self, liveness) {
            (Failure::ContentType, _) => "Invalid Content-Type of HTTP request",
            (Failure::Method, _) => "Invalid HTTP request method",
            (Failure::PartType, _) => "Invalid Content-Type of the multiparted HTTP request part",
            (Failure::Sample, false) => "Failed to read the biometric sample",
            (Failure::Template, false) => "Failed to read the biometric template",
            (Failure::Extract, false) => "Failed to retrieve the biometric template",
            (Failure::NoFace, false) => "The biometric sample is missing face",
            (Failure::ManyFaces, false) => {
                "More than one person is present on the biometric sample"
            }
            (Failure::Internal, false) => "Internal bioprocessor error",
            (Failure::NotReady, false) => "TFSS error. Call the biometry health method",
            (Failure::Internal, true) => "Liveness detection processor internal error",
            (Failure::NotReady, true) => "TFSS error. Call the Liveness health method",
            (_, true) => "Failed to extract the biometric sample",
        }
    }
}

/// An Oz error of `failure`; `detail` is shown after the reference's description.
pub fn oz_error(failure: Failure, detail: impl Into<String>) -> ApiError {
    let class = match failure {
        Failure::Internal => ErrorClass::Internal,
        Failure::NotReady => ErrorClass::Unavailable,
        Failure::ContentType | Failure::PartType => ErrorClass::UnsupportedMedia,
        _ => ErrorClass::BadRequest,
    };
    ApiError::Dialect(DialectError {
        kind: failure.kind(),
        class,
        message: detail.into(),
        detail: String::new(),
    })
}

/// The failure an error is, with what the client is told about it.
fn failure_of(e: &ApiError) -> (Failure, String) {
    if let ApiError::Dialect(d) = e {
        if let Some(r) = CODES.iter().find(|r| r.1 == d.kind) {
            return (r.0, d.message.clone());
        }
    }
    match e.class() {
        ErrorClass::UnsupportedMedia => (Failure::ContentType, e.to_string()),
        ErrorClass::Overloaded | ErrorClass::Unavailable => (Failure::NotReady, e.to_string()),
        // Server faults are logged with their detail; the client gets the description only.
        ErrorClass::Internal => (Failure::Internal, String::new()),
        _ => (Failure::Sample, e.to_string()),
    }
}

/// The `[oz]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OzConfig {
    /// Lowest similarity answered `approved`: the nuaa-dev FAR 0.1 % point rounded to two
    /// decimals (there FAR 0.12 %, FRR 17.8 %, in-sample; docs/calibration.md).
    pub approve_score: f32,
    /// Lowest similarity answered `operator_required`: the nuaa-dev FAR 1 % point rounded
    /// (there FAR 1.1 %, FRR 13.0 %).
    pub review_score: f32,
    /// Spoof-score threshold of `detect` when the payload names none: at or above it the
    /// analysis is declined.
    pub threshold_spoofing: f32,
    /// Most templates of one 1:N request (`templates_n`).
    pub max_templates: usize,
    /// Most images of one `extract_and_compare_n` (`samples_n`).
    pub max_samples: usize,
    /// Most media of one `detect`.
    pub max_media: usize,
    /// Most frames `detect` analyses over all media of one request (images, archive files
    /// and sampled video frames together).
    pub max_frames: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Longest wait for a request body, ms.
    pub body_timeout_ms: u64,
    /// Bounds on each video.
    pub video: VideoLimits,
    /// Bounds on each zip archive.
    pub archive: ArchiveLimits,
    /// JPEG quality of best shots.
    pub best_shot_quality: u8,
}

impl Default for OzConfig {
    fn default() -> Self {
        Self {
            approve_score: 0.60,
            review_score: 0.57,
            threshold_spoofing: 0.5,
            max_templates: 10_000,
            max_samples: 50,
            max_media: 16,
            max_frames: 64,
            max_body_bytes: 64 << 20,
            body_timeout_ms: 60_000,
            video: VideoLimits::default(),
            archive: ArchiveLimits::default(),
            best_shot_quality: 90,
        }
    }
}

impl OzConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> crate::Result<()> {
        self.policy()
            .validate()
            .map_err(|e| Error::InvalidArgument(format!("oz: {e}")))?;
        let bad = |m: &str| Err(Error::InvalidArgument(format!("oz.{m}")));
        if !(self.threshold_spoofing > 0.0 && self.threshold_spoofing <= 1.0) {
            return bad("threshold_spoofing must be in (0, 1]");
        }
        if self.max_templates == 0
            || self.max_samples == 0
            || self.max_media == 0
            || self.max_frames == 0
        {
            return bad("max_templates, max_samples, max_media and max_frames must be positive");
        }
        if self.max_body_bytes == 0 || self.body_timeout_ms == 0 {
            return bad("max_body_bytes and body_timeout_ms must be positive");
        }
        if self.video.sample_frames == 0 || self.archive.max_entries == 0 {
            return bad("video.sample_frames and archive.max_entries must be positive");
        }
        if !(1..=100).contains(&self.best_shot_quality) {
            return bad("best_shot_quality must be in 1..=100");
        }
        Ok(())
    }

    /// The match recommendation thresholds.
    pub fn policy(&self) -> MatchPolicy {
        MatchPolicy {
            approve_score: self.approve_score,
            review_score: self.review_score,
        }
    }
}

/// The Oz dialect: its settings.
pub struct Oz {
    /// Settings in force.
    cfg: OzConfig,
}

impl Oz {
    /// The dialect for `cfg`.
    pub fn new(cfg: OzConfig) -> crate::Result<Arc<Self>> {
        cfg.validate()?;
        Ok(Arc::new(Self { cfg }))
    }

    /// Settings in force.
    pub fn config(&self) -> &OzConfig {
        &self.cfg
    }

    /// `GET /v1/face/pattern/health`, `/v1/face/liveness/health`: 0 when the engine serves
    /// (and, for biometry, the descriptor is loaded), else 3 and why.
    async fn health(
        self: Arc<Self>,
        _req: Request<Bytes>,
        ctx: Ctx,
        biometry: bool,
    ) -> Result<HttpResponse, ApiError> {
        let b = &ctx.app.batcher;
        let (status, message) = match (b.status(), b.info()) {
            (Status::Ready, Some(info)) => {
                if biometry && !info.models.contains(&"face-descriptor") {
                    (
                        3,
                        "the face descriptor is not loaded (load_descriptor = false)".to_string(),
                    )
                } else {
                    (0, String::new())
                }
            }
            (Status::Loading, _) | (Status::Ready, None) => (3, "models are loading".to_string()),
            (Status::Failed, _) => (
                3,
                format!(
                    "the engine failed: {}",
                    b.failure().unwrap_or_else(|| "unknown".into())
                ),
            ),
            (Status::Stopped, _) => (3, "the engine is stopping".to_string()),
        };
        Ok(json_response(
            StatusCode::OK,
            &json!({"status": status, "message": message}),
        ))
    }

    /// `GET /version`: this server's version, the engine's and each loaded model's (name and
    /// pinned package version from the model manifest).
    async fn version(
        self: Arc<Self>,
        _req: Request<Bytes>,
        ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let manifest = Manifest::embedded()?;
        let loaded = ctx
            .app
            .batcher
            .info()
            .map(|i| i.models.clone())
            .unwrap_or_default();
        let models: Vec<_> = loaded
            .iter()
            .filter_map(|name| {
                let prefix = format!("{name}-");
                let entry = manifest
                    .model
                    .iter()
                    .find(|m| m.name == *name || m.name.starts_with(&prefix))?;
                let source = manifest.source.iter().find(|s| s.id == entry.source)?;
                Some(json!({
                    "name": name,
                    "version": format!("{} {}", source.package, source.version),
                }))
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "core": env!("CARGO_PKG_VERSION"),
                "tfss": format!("facegate engine {} (candle)", env!("CARGO_PKG_VERSION")),
                "models": models,
            }),
        ))
    }

    /// Any method a path does not serve: BPE-002002 / LDE-002002.
    async fn wrong_method(
        self: Arc<Self>,
        req: Request<Bytes>,
        ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        Err(oz_error(
            Failure::Method,
            format!("{} is not served on {}", req.method(), ctx.route.path),
        ))
    }

    fn limits(&self) -> BodyLimits {
        BodyLimits {
            max_bytes: self.cfg.max_body_bytes,
            timeout_ms: self.cfg.body_timeout_ms,
        }
    }
}

/// A score as JSON: the `f32`'s shortest decimal form (0.30623937, not 0.30623936653137207).
pub fn score(x: f32) -> serde_json::Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Whether a request asks for base64 (`Content-Transfer-Encoding: base64`).
pub fn base64_mode(headers: &HeaderMap) -> bool {
    headers
        .get("content-transfer-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("base64"))
}

/// The bytes of an input: as sent, or base64-decoded (at most `max` bytes) in base64 mode;
/// `failure` is what an undecodable input is.
pub fn input_bytes(
    raw: Bytes,
    base64: bool,
    max: usize,
    what: &str,
    failure: Failure,
) -> Result<Bytes, ApiError> {
    if !base64 {
        return Ok(raw);
    }
    let text = std::str::from_utf8(&raw)
        .map_err(|_| oz_error(failure, format!("{what} is not base64 text")))?;
    base64_image(text, max, what).map_err(|e| oz_error(failure, e.to_string()))
}

/// An output in the request's encoding (base64 text in base64 mode).
pub fn output_bytes(bytes: Vec<u8>, base64: bool) -> Bytes {
    if base64 {
        Bytes::from(STANDARD.encode(bytes))
    } else {
        Bytes::from(bytes)
    }
}

/// A response of `content_type` (marked `Content-Transfer-Encoding: base64` when the body
/// is base64).
pub fn binary(content_type: &str, body: Bytes, base64: bool) -> HttpResponse {
    let mut r = Response::new(Full::new(body));
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    if base64 {
        r.headers_mut().insert(
            "content-transfer-encoding",
            HeaderValue::from_static("base64"),
        );
    }
    r
}

/// Every path with the method it serves.
pub const PATHS: [(&str, Method); 11] = [
    ("/version", Method::GET),
    ("/v1/face/pattern/health", Method::GET),
    ("/v1/face/pattern/extract", Method::POST),
    ("/v1/face/pattern/compare", Method::POST),
    ("/v1/face/pattern/verify", Method::POST),
    ("/v1/face/pattern/extract_and_compare", Method::POST),
    ("/v1/face/pattern/compare_n", Method::POST),
    ("/v1/face/pattern/verify_n", Method::POST),
    ("/v1/face/pattern/extract_and_compare_n", Method::POST),
    ("/v1/face/liveness/health", Method::GET),
    ("/v1/face/liveness/detect", Method::POST),
];

/// The methods answered with BPE-002002 / LDE-002002 where a path does not serve them.
const OTHER_METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// A row serving `f` on `path` with the dialect's body limits.
fn row<F, Fut>(
    oz: &Arc<Oz>,
    edge: &Edge,
    method: Method,
    path: &'static str,
    name: &'static str,
    f: F,
) -> RouteSpec
where
    F: Fn(Arc<Oz>, Request<Bytes>, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<HttpResponse, ApiError>> + Send + 'static,
{
    route(oz, edge, method, path, name, Mount::Dialect, f).limits(oz.limits())
}

impl Dialect for Oz {
    fn routes(self: Arc<Self>, edge: &Edge) -> Vec<RouteSpec> {
        let (get, post) = (Method::GET, Method::POST);
        let pattern = |path: &'static str, name: &'static str, p: Pattern| {
            row(&self, edge, Method::POST, path, name, move |o, r, c| {
                o.pattern(r, c, p)
            })
        };
        let mut rows = vec![
            row(
                &self,
                edge,
                get.clone(),
                PATHS[0].0,
                "oz.version",
                Self::version,
            ),
            row(
                &self,
                edge,
                get.clone(),
                PATHS[1].0,
                "oz.pattern.health",
                |o, r, c| o.health(r, c, true),
            ),
            pattern(PATHS[2].0, "oz.pattern.extract", Pattern::Extract),
            pattern(PATHS[3].0, "oz.pattern.compare", Pattern::Compare),
            pattern(PATHS[4].0, "oz.pattern.verify", Pattern::Verify),
            pattern(
                PATHS[5].0,
                "oz.pattern.extract_and_compare",
                Pattern::ExtractAndCompare,
            ),
            pattern(PATHS[6].0, "oz.pattern.compare_n", Pattern::CompareN),
            pattern(PATHS[7].0, "oz.pattern.verify_n", Pattern::VerifyN),
            pattern(
                PATHS[8].0,
                "oz.pattern.extract_and_compare_n",
                Pattern::ExtractAndCompareN,
            ),
            row(
                &self,
                edge,
                get,
                PATHS[9].0,
                "oz.liveness.health",
                |o, r, c| o.health(r, c, false),
            ),
            row(
                &self,
                edge,
                post,
                PATHS[10].0,
                "oz.liveness.detect",
                Self::detect,
            ),
        ];
        for (path, served) in PATHS {
            for other in OTHER_METHODS.iter().filter(|m| **m != served) {
                rows.push(row(
                    &self,
                    edge,
                    other.clone(),
                    path,
                    "oz.wrong_method",
                    Self::wrong_method,
                ));
            }
        }
        rows
    }
}

impl ErrorTable for Oz {
    fn dialect(&self) -> &'static str {
        DIALECT
    }

    /// `{"code", "message"}`: the route's processor picks BPE (biometry, `/version`) or LDE
    /// (liveness) codes; 401 `{"code": "UNAUTHORIZED"}` when API keys are configured and
    /// refuse (the reference has no authentication).
    fn render(&self, e: &ApiError, route: &RouteInfo) -> HttpResponse {
        if let ApiError::Edge(EdgeError::Unauthorized(_)) = e {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"code": "UNAUTHORIZED", "message": e.to_string()}),
            );
        }
        let liveness = route.path.contains("/face/liveness/");
        let (failure, detail) = failure_of(e);
        let row = failure.row();
        let code = if liveness { row.3 } else { row.2 };
        let description = failure.description(liveness);
        let message = if detail.is_empty() {
            description.to_string()
        } else {
            format!("{description}: {detail}")
        };
        json_response(row.4, &json!({"code": code, "message": message}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_its_own_row() {
        for f in [
            Failure::ContentType,
            Failure::Method,
            Failure::Sample,
            Failure::Template,
            Failure::PartType,
            Failure::Extract,
            Failure::NoFace,
            Failure::ManyFaces,
            Failure::Internal,
            Failure::NotReady,
        ] {
            assert_eq!(f.row().0, f);
        }
        let kinds: std::collections::BTreeSet<_> = CODES.iter().map(|r| r.1).collect();
        assert_eq!(kinds.len(), CODES.len());
    }

    #[test]
    fn defaults_validate_and_base64_mode_is_read() {
        assert!(OzConfig::default().validate().is_ok());
        let bad = OzConfig {
            review_score: 0.9,
            ..OzConfig::default()
        };
        assert!(bad.validate().is_err());
        let mut h = HeaderMap::new();
        assert!(!base64_mode(&h));
        h.insert(
            "content-transfer-encoding",
            HeaderValue::from_static("Base64"),
        );
        assert!(base64_mode(&h));
    }
}
