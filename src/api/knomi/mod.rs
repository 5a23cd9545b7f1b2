//! The Aware Knomi FaceLiveness dialect (`../shared/seeds/003_*.txt`), prefix `/knomi`.
//!
//! - `POST /analyze`, `/checkLiveness`: one `faceLivenessRequest` (a workflow and its frames)
//!   -> `liveness_result` (and, for analyze, `autocapture_result` with the best frame);
//! - `POST /checkActiveLiveness`: an array of exactly three requests, one passive workflow and
//!   two head-movement challenges -> the combined result with `details`;
//! - each of the three with an `...Encrypted` twin taking a `{key, iv, p}` package
//!   ([`package`], `docs/knomi-packages.md`), and `POST /decrypt` returning the package's JSON;
//! - `GET /version`: the library version as text.
//!
//! Requests are JSON sent as `text/plain` (as Knomi clients do; `application/json` is taken
//! too); answers are JSON labelled `text/plain`, as the reference shows. Every decision is the
//! engine's ([`crate::engine::workflow`], [`crate::engine::autocapture`]); this module parses,
//! decodes the frames (rotation, equal sizes), calls the batcher and renders.

pub mod cli;
mod frames;
pub mod package;
pub mod request;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{ApiError, DialectError, ErrorClass, ErrorTable};
use super::input::media_type;
use super::{max_times, route, timing_headers, Dialect, Edge};
use crate::batcher::Input;
use crate::bi::now_ms;
use crate::engine::autocapture::{self, Feedback};
use crate::engine::frr::FrrTable;
use crate::engine::workflow::{
    active_options, check_clock, combine, decide_active, CaptureResult, Challenge, ClockBounds,
};
use crate::engine::Analysis;
use crate::server::{BodyLimits, Ctx, EdgeError, HttpResponse, Mount, RouteInfo, RouteSpec};
use crate::Error;
use frames::{analysed, captured_frame, decode_all};
use package::{PackageError, PackageOpener, PackageSettings};
use request::{parse_json, parse_request, LivenessRequest, ParseLimits, Workflow};

/// Dialect name and path prefix.
pub const DIALECT: &str = "knomi";
/// How many requests `/checkActiveLiveness` takes.
pub const ACTIVE_REQUESTS: usize = 3;
/// JPEG quality of the captured frame (the reference recommends 90 for its inputs).
pub const CAPTURED_JPEG_QUALITY: u8 = 90;

/// A Knomi error code, with the status the reference gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// -1: unknown error.
    Unknown,
    /// -2: the request was not valid JSON.
    InvalidJson,
    /// -3: a mandatory field is missing.
    MissingField,
    /// -4: a field has the wrong type.
    WrongType,
    /// -5: a base64 string does not decode.
    InvalidBase64,
    /// -6: a value is not acceptable.
    InvalidValue,
    /// -7: a frame is not an image.
    InvalidImageData,
    /// -8: a frame's size is out of bounds.
    InvalidImageSize,
    /// 118: minimum face size out of [0 1].
    MinSize,
    /// 119: maximum face size out of [0 1].
    MaxSize,
    /// 120: minimum face size over the maximum.
    MinOverMax,
    /// 121: sensitivity out of [0 1].
    Sensitivity,
    /// 122: granularity out of [0 1].
    Granularity,
    /// 141: a timestamp is negative or not after the previous one.
    Timestamp,
    /// 153: the frames are not all of one size.
    FrameSizes,
    /// 312: rotation other than 0, 90, 180, 270.
    Rotation,
}

/// Every code: (code, its `kind` label, its number, its status).
const CODES: [(Code, &str, i32, StatusCode); 16] = [
    (Code::Unknown, "knomi_unknown", -1, StatusCode::BAD_REQUEST),
    (
        Code::InvalidJson,
        "knomi_invalid_json",
        -2,
        StatusCode::BAD_REQUEST,
    ),
    (
        Code::MissingField,
        "knomi_missing_field",
        -3,
        StatusCode::BAD_REQUEST,
    ),
    (
        Code::WrongType,
        "knomi_wrong_type",
        -4,
        StatusCode::BAD_REQUEST,
    ),
    (
        Code::InvalidBase64,
        "knomi_invalid_base64",
        -5,
        StatusCode::BAD_REQUEST,
    ),
    (
        Code::InvalidValue,
        "knomi_invalid_value",
        -6,
        StatusCode::BAD_REQUEST,
    ),
    (
        Code::InvalidImageData,
        "knomi_invalid_image_data",
        -7,
        StatusCode::BAD_REQUEST,
    ),
    (
        Code::InvalidImageSize,
        "knomi_invalid_image_size",
        -8,
        StatusCode::BAD_REQUEST,
    ),
    (
        Code::MinSize,
        "knomi_min_size",
        118,
        StatusCode::INTERNAL_SERVER_ERROR,
    ),
    (
        Code::MaxSize,
        "knomi_max_size",
        119,
        StatusCode::INTERNAL_SERVER_ERROR,
    ),
    (
        Code::MinOverMax,
        "knomi_min_over_max",
        120,
        StatusCode::INTERNAL_SERVER_ERROR,
    ),
    (
        Code::Sensitivity,
        "knomi_sensitivity",
        121,
        StatusCode::INTERNAL_SERVER_ERROR,
    ),
    (
        Code::Granularity,
        "knomi_granularity",
        122,
        StatusCode::INTERNAL_SERVER_ERROR,
    ),
    (
        Code::Timestamp,
        "knomi_timestamp",
        141,
        StatusCode::INTERNAL_SERVER_ERROR,
    ),
    (
        Code::FrameSizes,
        "knomi_frame_sizes",
        153,
        StatusCode::INTERNAL_SERVER_ERROR,
    ),
    (
        Code::Rotation,
        "knomi_rotation",
        312,
        StatusCode::INTERNAL_SERVER_ERROR,
    ),
];

impl Code {
    fn row(self) -> (&'static str, i32, StatusCode) {
        CODES.iter().find(|(c, ..)| *c == self).map_or(
            ("knomi_unknown", -1, StatusCode::BAD_REQUEST),
            |(_, k, n, s)| (k, *n, *s),
        )
    }

    /// Its `kind` label (errors metric, logs).
    pub fn kind(self) -> &'static str {
        self.row().0
    }

    /// Its number.
    pub fn number(self) -> i32 {
        self.row().1
    }
}

/// A Knomi request error: the client's fault, shown with `message`.
pub fn knomi_error(code: Code, message: String) -> ApiError {
    ApiError::Dialect(DialectError {
        kind: code.kind(),
        class: ErrorClass::BadRequest,
        message,
        detail: String::new(),
    })
}

/// Kinds of the package errors that are not request codes.
const PACKAGES_OFF: &str = "knomi_packages_disabled";
const PACKAGE_BUSY: &str = "knomi_packages_busy";

/// The `[knomi]` configuration section. `Debug` shows the key's path, never key material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnomiConfig {
    /// Oldest accepted package or frame timestamp, seconds before now (0: no bound).
    pub allowed_timestamp_seconds: u64,
    /// Furthest accepted timestamp, seconds after now (0: no bound).
    pub allowed_future_timestamp_seconds: u64,
    /// PEM file (PKCS#1 or PKCS#8) of the RSA key packages are wrapped for; none: the
    /// encrypted endpoints answer 500 code -1.
    pub private_key: Option<PathBuf>,
    /// Most packages whose decryption starts per second.
    pub max_decryptions_per_s: u32,
    /// Most package keys remembered to refuse replays.
    pub max_packages_remembered: usize,
    /// Most frames of one request.
    pub max_frames: usize,
    /// Most pixels of all frames of one call together.
    pub max_total_pixels: u64,
    /// Largest request body, bytes (frames travel as base64).
    pub max_body_bytes: usize,
    /// Longest wait for a request body, ms.
    pub body_timeout_ms: u64,
    /// The `version` string and `GET /version` body.
    pub version: String,
}

impl Default for KnomiConfig {
    fn default() -> Self {
        Self {
            allowed_timestamp_seconds: 300,
            allowed_future_timestamp_seconds: 60,
            private_key: None,
            max_decryptions_per_s: 100,
            max_packages_remembered: 100_000,
            max_frames: 16,
            max_total_pixels: 40_000_000,
            max_body_bytes: 48 << 20,
            body_timeout_ms: 60_000,
            version: format!(
                "facegate FaceLiveness Library (Aware Knomi API), version {}",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

impl KnomiConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(format!("knomi.{m}")));
        if self.max_frames == 0 || self.max_total_pixels == 0 {
            return bad("max_frames and max_total_pixels must be positive");
        }
        if self.max_body_bytes == 0 || self.body_timeout_ms == 0 {
            return bad("max_body_bytes and body_timeout_ms must be positive");
        }
        if self.max_decryptions_per_s == 0 || self.max_packages_remembered == 0 {
            return bad("max_decryptions_per_s and max_packages_remembered must be positive");
        }
        if self.version.is_empty() || self.version.chars().any(char::is_control) {
            return bad("version must be a non-empty line of text");
        }
        Ok(())
    }

    /// How long a package key is remembered: as long as a package's timestamps are accepted
    /// (at least an hour when they are unbounded).
    fn remember_s(&self) -> u64 {
        let window = self.allowed_timestamp_seconds + self.allowed_future_timestamp_seconds;
        if self.allowed_timestamp_seconds == 0 {
            window.max(3600)
        } else {
            window
        }
    }
}

/// Flags and environment over `[knomi]`, named as Knomi's own server options are.
#[derive(Debug, Clone, Default, Args)]
pub struct KnomiArgs {
    /// Oldest accepted package or frame timestamp, seconds (0: no bound) [default: 300].
    #[arg(
        long = "knomi-allowed-timestamp-seconds",
        env = "FACEGATE_KNOMI_ALLOWED_TIMESTAMP_SECONDS"
    )]
    pub allowed_timestamp_seconds: Option<u64>,
    /// Furthest accepted future timestamp, seconds (0: no bound) [default: 60].
    #[arg(
        long = "knomi-allowed-future-timestamp-seconds",
        env = "FACEGATE_KNOMI_ALLOWED_FUTURE_TIMESTAMP_SECONDS"
    )]
    pub allowed_future_timestamp_seconds: Option<u64>,
    /// RSA private key (PEM, PKCS#1 or PKCS#8) for encrypted packages [default: none,
    /// encrypted endpoints off].
    #[arg(long = "knomi-private-key", env = "FACEGATE_KNOMI_PRIVATE_KEY")]
    pub private_key: Option<PathBuf>,
}

impl KnomiArgs {
    /// Applies the flags/environment on top of `cfg`.
    pub fn apply(&self, mut cfg: KnomiConfig) -> crate::Result<KnomiConfig> {
        if let Some(v) = self.allowed_timestamp_seconds {
            cfg.allowed_timestamp_seconds = v;
        }
        if let Some(v) = self.allowed_future_timestamp_seconds {
            cfg.allowed_future_timestamp_seconds = v;
        }
        if let Some(p) = &self.private_key {
            cfg.private_key = Some(p.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The Knomi dialect: its settings and its package opener.
pub struct Knomi {
    /// Settings in force.
    cfg: KnomiConfig,
    /// Opens encrypted packages; `None` without a private key.
    opener: Option<PackageOpener>,
}

impl Knomi {
    /// The dialect for `cfg` (the private key, if any, is read now), its used package keys in
    /// `ledger` (`None`: this process's memory).
    pub fn new(
        cfg: KnomiConfig,
        ledger: Option<Arc<dyn crate::replay::ReplayLedger>>,
    ) -> crate::Result<Arc<Self>> {
        cfg.validate()?;
        FrrTable::builtin()?;
        let opener = match &cfg.private_key {
            Some(path) => Some(PackageOpener::from_pem_file(
                path,
                PackageSettings {
                    max_decryptions_per_s: cfg.max_decryptions_per_s,
                    remember_s: cfg.remember_s(),
                    max_remembered: cfg.max_packages_remembered,
                    max_p_bytes: cfg.max_body_bytes,
                },
            )?),
            None => None,
        };
        let opener = match (opener, ledger) {
            (Some(o), Some(l)) => Some(o.with_ledger(l)),
            (o, _) => o,
        };
        Ok(Arc::new(Self { cfg, opener }))
    }

    fn limits(&self) -> BodyLimits {
        BodyLimits {
            max_bytes: self.cfg.max_body_bytes,
            timeout_ms: self.cfg.body_timeout_ms,
        }
    }
}

/// What a liveness route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `/analyze`: liveness and autocapture.
    Analyze,
    /// `/checkLiveness`: liveness.
    Check,
    /// `/checkActiveLiveness`: passive and active liveness.
    Active,
}

impl Dialect for Knomi {
    fn default_bare_paths(&self) -> &'static [&'static str] {
        &["/version"]
    }

    fn routes(self: Arc<Self>, edge: &Edge) -> Vec<RouteSpec> {
        let d = Mount::Dialect;
        let limits = self.limits();
        let post = |path: &'static str, name: &'static str, kind: Kind, encrypted: bool| {
            route(
                &self,
                edge,
                Method::POST,
                path,
                name,
                d,
                move |k, req, ctx| k.liveness(req, ctx, kind, encrypted),
            )
            .limits(limits)
        };
        vec![
            post("/analyze", "knomi.analyze", Kind::Analyze, false),
            post(
                "/analyzeEncrypted",
                "knomi.analyze_encrypted",
                Kind::Analyze,
                true,
            ),
            post("/checkLiveness", "knomi.check_liveness", Kind::Check, false),
            post(
                "/checkLivenessEncrypted",
                "knomi.check_liveness_encrypted",
                Kind::Check,
                true,
            ),
            post(
                "/checkActiveLiveness",
                "knomi.check_active_liveness",
                Kind::Active,
                false,
            ),
            post(
                "/checkActiveLivenessEncrypted",
                "knomi.check_active_liveness_encrypted",
                Kind::Active,
                true,
            ),
            route(
                &self,
                edge,
                Method::POST,
                "/decrypt",
                "knomi.decrypt",
                d,
                Self::decrypt,
            )
            .limits(limits),
            route(
                &self,
                edge,
                Method::GET,
                "/version",
                "knomi.version",
                d,
                Self::version,
            ),
        ]
    }
}

impl ErrorTable for Knomi {
    fn dialect(&self) -> &'static str {
        DIALECT
    }

    /// `{"error":{"code","description"}}` as text/plain: 400 with -1..-8 for the request's
    /// faults, 500 with the reference's library codes (118-122, 141, 153, 312), 500 code -1
    /// for server faults, overload and disabled packages (their detail only in the logs), 401
    /// code -1 when the API keys refuse.
    fn render(&self, e: &ApiError, _route: &RouteInfo) -> HttpResponse {
        let (status, code, message) = match e {
            ApiError::Dialect(d) => match CODES.iter().find(|(_, k, ..)| *k == d.kind) {
                Some((_, _, n, s)) => (*s, *n, d.message.clone()),
                None => (StatusCode::INTERNAL_SERVER_ERROR, -1, d.message.clone()),
            },
            ApiError::Engine(err) => engine_code(err),
            ApiError::Edge(EdgeError::Unauthorized(_)) => (
                StatusCode::UNAUTHORIZED,
                -1,
                "The request does not carry a valid API key.".to_string(),
            ),
            ApiError::Edge(EdgeError::BodyTooLarge { .. }) => {
                (StatusCode::BAD_REQUEST, -6, format!("{e}."))
            }
            ApiError::Edge(EdgeError::Overloaded { .. }) => {
                (StatusCode::INTERNAL_SERVER_ERROR, -1, format!("{e}."))
            }
            ApiError::Edge(_) => (StatusCode::BAD_REQUEST, -1, format!("{e}.")),
            ApiError::UnsupportedMedia(t) => (
                StatusCode::BAD_REQUEST,
                -2,
                format!(
                    "Request was not valid JSON: Content-Type {t} (send the JSON as text/plain \
                     or application/json)."
                ),
            ),
        };
        text_json(
            status,
            &json!({"error": {"code": code, "description": message}}),
        )
    }
}

/// Status, code and description of an engine error.
fn engine_code(e: &Error) -> (StatusCode, i32, String) {
    match e {
        Error::EmptyImage | Error::UnsupportedFormat | Error::CorruptImage(_) => (
            StatusCode::BAD_REQUEST,
            -7,
            format!("Invalid image data: {e}."),
        ),
        Error::ImageTooLarge { .. } | Error::TooManyPixels { .. } | Error::ImageTooSmall { .. } => {
            (
                StatusCode::BAD_REQUEST,
                -8,
                format!("Invalid image size: {e}."),
            )
        }
        Error::InvalidArgument(m) => (StatusCode::BAD_REQUEST, -6, format!("Invalid value: {m}.")),
        Error::Overloaded { .. } | Error::Unavailable(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            -1,
            format!("The server cannot take the request now: {e}; retry later."),
        ),
        Error::Model { .. } | Error::Inference(_) | Error::Io(_) | Error::Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            -1,
            "Internal error.".to_string(),
        ),
    }
}

/// A JSON body labelled `text/plain`, as the reference answers.
fn text_json(status: StatusCode, body: &Value) -> HttpResponse {
    text(status, Bytes::from(body.to_string()))
}

fn text(status: StatusCode, body: Bytes) -> HttpResponse {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// The package error as the dialect answers it (`docs/knomi-packages.md`).
fn package_error(e: PackageError) -> ApiError {
    let (code, message) = match &e {
        PackageError::InvalidJson(m) => (
            Code::InvalidJson,
            format!("Request was not valid JSON: {m}."),
        ),
        PackageError::MissingField(f) => {
            (Code::MissingField, format!("Missing mandatory field {f}."))
        }
        PackageError::WrongType(f) => (
            Code::WrongType,
            format!("Field {f} has the wrong type: expected a string."),
        ),
        PackageError::InvalidBase64(f) => (
            Code::InvalidBase64,
            format!("Invalid base64 string in {f}."),
        ),
        PackageError::InvalidValue(m) | PackageError::TooLarge(m) => {
            (Code::InvalidValue, format!("Invalid value: {m}."))
        }
        PackageError::Undecryptable => (
            Code::InvalidValue,
            "The package could not be decrypted.".to_string(),
        ),
        PackageError::Replayed => (
            Code::InvalidValue,
            "The package was already used.".to_string(),
        ),
        PackageError::Busy(m) => {
            return ApiError::Dialect(DialectError {
                kind: PACKAGE_BUSY,
                class: ErrorClass::Overloaded,
                message: format!("The server cannot decrypt more packages now: {m}; retry later."),
                detail: String::new(),
            })
        }
    };
    knomi_error(code, message)
}

/// Refuses bodies that are not text (Knomi clients send `text/plain`; JSON is taken too).
fn check_media(req: &Request<Bytes>) -> Result<(), ApiError> {
    let t = media_type(req.headers());
    match t.as_str() {
        "" | "text/plain" | "application/json" => Ok(()),
        _ => Err(ApiError::UnsupportedMedia(t)),
    }
}

impl Knomi {
    /// `GET /version`: the version line.
    async fn version(
        self: Arc<Self>,
        _req: Request<Bytes>,
        _ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        Ok(text(StatusCode::OK, Bytes::from(self.cfg.version.clone())))
    }

    /// The opener, or the documented answer when packages are off.
    fn opener(&self) -> Result<&PackageOpener, ApiError> {
        self.opener.as_ref().ok_or_else(|| {
            ApiError::Dialect(DialectError {
                kind: PACKAGES_OFF,
                // A setting, not a transient state: no Retry-After.
                class: ErrorClass::BadRequest,
                message: "Encrypted requests are not enabled on this server.".into(),
                detail: "no --knomi-private-key configured".into(),
            })
        })
    }

    /// `POST /decrypt`: the package's JSON, as sent.
    async fn decrypt(
        self: Arc<Self>,
        req: Request<Bytes>,
        _ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        check_media(&req)?;
        let plain = self
            .opener()?
            .open(req.body())
            .await
            .map_err(package_error)?;
        Ok(text(StatusCode::OK, Bytes::from(plain)))
    }

    /// The three liveness routes and their encrypted twins.
    async fn liveness(
        self: Arc<Self>,
        req: Request<Bytes>,
        ctx: Ctx,
        kind: Kind,
        encrypted: bool,
    ) -> Result<HttpResponse, ApiError> {
        check_media(&req)?;
        let body = if encrypted {
            Bytes::from(
                self.opener()?
                    .open(req.body())
                    .await
                    .map_err(package_error)?,
            )
        } else {
            req.body().clone()
        };
        let engine = ctx
            .app
            .batcher
            .engine()
            .cloned()
            .ok_or_else(|| Error::Unavailable("models are loading".into()))?;
        if !engine.config().load_landmarks
            || (kind == Kind::Active && !engine.config().load_descriptor)
        {
            return Err(Error::Unavailable(
                "Knomi workflows need the landmark model (and the descriptor for active liveness): load_landmarks, load_descriptor"
                    .into(),
            )
            .into());
        }
        let doc = parse_json(&body)?;
        let limits = ParseLimits {
            max_frames: self.cfg.max_frames,
            max_frame_bytes: engine.config().decode.max_bytes,
        };
        let requests = match kind {
            Kind::Active => active_requests(&doc, limits)?,
            _ => vec![parse_request(&doc, "", limits)?],
        };
        for (i, r) in requests.iter().enumerate() {
            if let Workflow::Passive(w) = &r.workflow {
                let need = w.min_frames(&engine.config().workflows);
                if r.frames.len() < need {
                    return Err(knomi_error(
                        Code::InvalidValue,
                        format!(
                            "Invalid value: the workflow of request {i} needs at least {need} frames, {} were sent.",
                            r.frames.len()
                        ),
                    ));
                }
            }
        }
        let opts = match kind {
            Kind::Active => active_options(),
            _ => match &requests[0].workflow {
                Workflow::Passive(w) => w.options(),
                Workflow::Active(_) => {
                    return Err(knomi_error(
                        Code::InvalidValue,
                        "Invalid value: an active workflow belongs in /checkActiveLiveness.".into(),
                    ))
                }
            },
        };
        let bounds = ClockBounds {
            max_age_s: self.cfg.allowed_timestamp_seconds,
            max_ahead_s: self.cfg.allowed_future_timestamp_seconds,
        };
        let stamps: Vec<i64> = requests.iter().flat_map(|r| r.timestamps()).collect();
        let clock = check_clock(bounds, now_ms(), &stamps);
        if let (Some(d), true) = (clock, kind != Kind::Analyze) {
            // A stale or early request is refused before any model runs.
            let r = CaptureResult::undecided(d, None, vec![]);
            return Ok(self.render(kind, &r, None, None));
        }
        let decoded = decode_all(&engine, &requests, self.cfg.max_total_pixels).await?;
        let inputs: Vec<Input> = decoded
            .into_iter()
            .flatten()
            .map(|d| Input::Frame(d.image))
            .collect();
        let results = ctx
            .app
            .batcher
            .submit_many(inputs, opts, ctx.route.name)
            .await;
        let processed = analysed(results)?;
        let (q_ms, i_ms) = max_times(&processed);
        // Split the analyses back into their requests.
        let mut at = 0;
        let mut per_request: Vec<Vec<&Analysis>> = Vec::with_capacity(requests.len());
        for r in &requests {
            per_request.push(
                processed[at..at + r.frames.len()]
                    .iter()
                    .map(|p| &p.analysis)
                    .collect(),
            );
            at += r.frames.len();
        }
        let ecfg = engine.config();
        let feedback_of = |r: &LivenessRequest, frames: &[&Analysis]| -> Vec<Vec<Feedback>> {
            frames
                .iter()
                .map(|a| autocapture::feedback(a, &ecfg.autocapture, r.window))
                .collect()
        };
        let decider = ctx.app.batcher.decider();
        let table = FrrTable::builtin()?;
        let passive_index = requests
            .iter()
            .position(|r| matches!(r.workflow, Workflow::Passive(_)))
            .unwrap_or(0);
        let preq = &requests[passive_index];
        let Workflow::Passive(workflow) = preq.workflow else {
            return Err(Error::Internal("no passive workflow after parsing".into()).into());
        };
        let pframes = &per_request[passive_index];
        let pfeedback = feedback_of(preq, pframes);
        let pairs: Vec<(&Analysis, &[Feedback])> = pframes
            .iter()
            .zip(&pfeedback)
            .map(|(a, f)| (*a, f.as_slice()))
            .collect();
        let best = autocapture::best_frame(&pairs).unwrap_or(0);
        let passive = workflow.decide(&ecfg.workflows, &decider, table, pframes, &pfeedback, best);
        let mut active_result = None;
        let mut overall = passive.clone();
        if kind == Kind::Active {
            let challenges: Vec<Challenge<'_>> = requests
                .iter()
                .zip(&per_request)
                .filter_map(|(r, frames)| match r.workflow {
                    Workflow::Active(direction) => Some(Challenge {
                        direction,
                        frames: frames.clone(),
                        feedback: feedback_of(r, frames),
                    }),
                    Workflow::Passive(_) => None,
                })
                .collect();
            let reference = pframes
                .get(best)
                .copied()
                .ok_or_else(|| Error::Internal("the passive request has no frame".into()))?;
            let a = decide_active(
                &ecfg.workflows,
                ecfg.active,
                &decider,
                table,
                &workflow,
                reference,
                &challenges,
            );
            for (c, o) in challenges.iter().zip(&a.outcomes) {
                tracing::debug!(direction = ?c.direction, live = o.live, motion = ?o.motion, challenge = ?o.challenge, same = ?o.same_person, "knomi: active challenge");
            }
            overall = combine(&passive, &a.result);
            active_result = Some(a.result);
        }
        if let Some(d) = clock {
            overall = CaptureResult::undecided(d, None, vec![]);
        }
        let capture = match kind {
            Kind::Analyze => Some(
                captured_frame(
                    &engine,
                    preq,
                    best,
                    pfeedback.get(best).cloned().unwrap_or_default(),
                )
                .await?,
            ),
            _ => None,
        };
        let details = active_result.map(|a| (passive, a));
        let mut r = self.render(kind, &overall, details.as_ref(), capture.as_ref());
        timing_headers(&mut r, q_ms, i_ms);
        Ok(r)
    }

    /// The 200 answer.
    fn render(
        &self,
        kind: Kind,
        overall: &CaptureResult,
        details: Option<&(CaptureResult, CaptureResult)>,
        capture: Option<&Value>,
    ) -> HttpResponse {
        let mut liveness = liveness_json(overall);
        if kind == Kind::Active {
            let (p, a) = match details {
                Some((p, a)) => (liveness_json(p), liveness_json(a)),
                None => (liveness_json(overall), liveness_json(overall)),
            };
            liveness["details"] = json!({"active_liveness": a, "passive_liveness": p});
        }
        let mut video = json!({"liveness_result": liveness, "version": self.cfg.version});
        if kind == Kind::Analyze {
            video["autocapture_result"] = capture.cloned().unwrap_or_else(|| {
                json!({"captured_frame": "", "captured_frame_is_constructed": false, "feedback": []})
            });
        }
        text_json(StatusCode::OK, &json!({"video": video}))
    }
}

/// A `liveness_result` object.
fn liveness_json(r: &CaptureResult) -> Value {
    let feedback: Vec<&str> = r.feedback.iter().map(|f| f.code()).collect();
    json!({
        "decision": r.decision.name(),
        "feedback": feedback,
        "score": r.decision.score(),
        "score_frr": r.frr.unwrap_or(-1.0),
    })
}

/// The three requests of `/checkActiveLiveness`: exactly one passive, two active.
fn active_requests(doc: &Value, limits: ParseLimits) -> Result<Vec<LivenessRequest>, ApiError> {
    let list = doc.as_array().ok_or_else(|| {
        knomi_error(
            Code::WrongType,
            format!(
                "The request has the wrong type: expected an array of {ACTIVE_REQUESTS} requests."
            ),
        )
    })?;
    if list.len() != ACTIVE_REQUESTS {
        return Err(knomi_error(
            Code::InvalidValue,
            format!(
                "Invalid value: the array has {} requests, it must have {ACTIVE_REQUESTS} (one passive workflow, two active).",
                list.len()
            ),
        ));
    }
    let requests = list
        .iter()
        .enumerate()
        .map(|(i, v)| parse_request(v, &format!("[{i}]"), limits))
        .collect::<Result<Vec<_>, _>>()?;
    let passive = requests
        .iter()
        .filter(|r| matches!(r.workflow, Workflow::Passive(_)))
        .count();
    if passive != 1 {
        return Err(knomi_error(
            Code::InvalidValue,
            format!("Invalid value: {passive} requests have a passive workflow; exactly 1 must (and 2 an active one)."),
        ));
    }
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_row() {
        for (c, k, n, _) in CODES {
            assert_eq!((c.kind(), c.number()), (k, n));
        }
        let mut kinds: Vec<&str> = CODES.iter().map(|r| r.1).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), CODES.len());
    }

    #[test]
    fn the_config_is_validated() {
        assert!(KnomiConfig::default().validate().is_ok());
        let bad = KnomiConfig {
            max_frames: 0,
            ..KnomiConfig::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(KnomiConfig::default().remember_s(), 360);
    }
}
