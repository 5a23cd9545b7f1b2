//! The ID R&D IDLive Face Server dialect (`../shared/seeds/000_*.txt`), prefix `/idlive`.
//!
//! - `GET /api_version`: product, version, default and available pipelines, licence expiry.
//! - `POST /check_liveness[?pipeline=]`: multipart, one image or a series accumulated into one
//!   result (mean raw score of the images that got a verdict, probability from that mean under
//!   REGULAR, mean quality; when none got a verdict, the first image's error). Always 200;
//!   errors are `{"error","error_code"}`.
//! - `POST /check_image`: multipart `data` (JSON: `domain`, `pipelines[{pipeline,
//!   calibration}]`) and `image`; one result per pipeline. 400 for malformed request data.
//! - `POST /check_liveness_batch[?pipeline=]`: multipart, one entry per image keyed by
//!   `file_name`. Always 200.
//! - `GET /bi_report`, `GET /bi_records` (`date_from`, `date_to`: `yyyy-MM-dd`, inclusive).
//!
//! Every verdict or rejection is recorded as a BI record. Errors are rendered by [`IdLive`]'s
//! error table; the series is one engine session (policy `mean_score`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::{note, set_retry_after, ApiError, ErrorClass, ErrorTable};
use super::idrnd::{bi_records, export_license, read_tally, validate_license, Licensed};
use super::input::{image_parts, multipart};
use super::query::Query;
use super::{max_times, reference_path, route, timing_headers, Dialect, Edge};
use crate::batcher::Processed;
use crate::bi::{self, BiRecord, BiWriter};
use crate::engine::{
    AnalyzeOptions, Calibration, Decider, FrameOutcome, FrameState, Pipeline, Session,
    SessionOutcome, SessionPolicy,
};
use crate::server::{json_response, Ctx, HttpResponse, Mount, RouteInfo, RouteSpec};
use crate::Error;

/// Dialect name and path prefix.
pub const DIALECT: &str = "idlive";
/// `product` of `/api_version`.
pub const PRODUCT: &str = "IDLive Face Server";
/// The reference's message for a `pipeline` this server does not have.
pub const UNSUPPORTED_PIPELINE: &str = "The request contains an unsupported pipeline, rejecting";
/// Most parts in one multipart request.
pub const MAX_PARTS: usize = 64;
/// Most `pipelines` entries of one `/check_image` request: every pipeline under every
/// calibration once.
pub const MAX_PIPELINE_RUNS: usize = Pipeline::ALL.len() * Calibration::ALL.len();
/// Error code of an image that cannot be decoded (or exceeds the decode limits).
pub const FAILED_TO_READ_IMAGE: &str = "FAILED_TO_READ_IMAGE";
/// Error code of an image below the smallest side the detector accepts.
pub const IMAGE_TOO_SMALL: &str = "IMAGE_TOO_SMALL";
/// Routes that answer malformed request data with 400 (the reference's `/check_image`; the BI
/// reads); every other error of every route is a 200 with `error`.
const MALFORMED_IS_400: [&str; 3] = [
    "idlive.check_image",
    "idlive.bi_records",
    "idlive.bi_report",
];

/// The `[idlive]` configuration section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdliveConfig {
    /// Licence expiry reported by `/api_version` and `/check_image`.
    #[serde(flatten)]
    pub licensed: Licensed,
}

impl IdliveConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> crate::Result<()> {
        validate_license(
            "idlive.license_expiration",
            &self.licensed.license_expiration,
        )
    }
}

/// The IDLive Face dialect: its configuration and where it records its decisions.
pub struct IdLive {
    /// Settings in force.
    cfg: IdliveConfig,
    /// BI records (shared with IAD's, filtered by dialect).
    bi: Arc<BiWriter>,
}

impl IdLive {
    /// The dialect over `bi`; exports its licence expiry.
    pub fn new(cfg: IdliveConfig, bi: Arc<BiWriter>) -> crate::Result<Arc<Self>> {
        cfg.validate()?;
        export_license(DIALECT, &cfg.licensed.license_expiration);
        Ok(Arc::new(Self { cfg, bi }))
    }
}

impl Dialect for IdLive {
    fn default_bare_paths(&self) -> &'static [&'static str] {
        &["/api_version", "/bi_records"]
    }

    fn routes(self: Arc<Self>, edge: &Edge) -> Vec<RouteSpec> {
        let d = Mount::Dialect;
        vec![
            route(
                &self,
                edge,
                Method::GET,
                "/api_version",
                "idlive.api_version",
                d,
                Self::api_version,
            ),
            route(
                &self,
                edge,
                Method::POST,
                "/check_liveness",
                "idlive.check_liveness",
                d,
                Self::check_liveness,
            ),
            route(
                &self,
                edge,
                Method::POST,
                "/check_image",
                "idlive.check_image",
                d,
                Self::check_image,
            ),
            route(
                &self,
                edge,
                Method::POST,
                "/check_liveness_batch",
                "idlive.check_liveness_batch",
                d,
                Self::check_liveness_batch,
            ),
            route(
                &self,
                edge,
                Method::GET,
                "/bi_report",
                "idlive.bi_report",
                d,
                Self::bi_report,
            ),
            route(
                &self,
                edge,
                Method::GET,
                "/bi_records",
                "idlive.bi_records",
                d,
                Self::bi_records,
            ),
        ]
    }
}

/// `error` and `error_code` of an error: request problems and server faults have a null code,
/// undecodable images (or over the decode or body limits) `FAILED_TO_READ_IMAGE`, too small
/// ones `IMAGE_TOO_SMALL`.
fn error_fields(e: &ApiError) -> (String, Option<&'static str>) {
    match e {
        ApiError::Engine(Error::InvalidArgument(m)) => (m.clone(), None),
        ApiError::Engine(Error::ImageTooSmall { .. }) => (e.to_string(), Some(IMAGE_TOO_SMALL)),
        ApiError::Engine(
            Error::EmptyImage
            | Error::UnsupportedFormat
            | Error::CorruptImage(_)
            | Error::ImageTooLarge { .. }
            | Error::TooManyPixels { .. },
        )
        | ApiError::Edge(crate::server::EdgeError::BodyTooLarge { .. }) => {
            (e.to_string(), Some(FAILED_TO_READ_IMAGE))
        }
        _ => (e.to_string(), None),
    }
}

impl ErrorTable for IdLive {
    fn dialect(&self) -> &'static str {
        DIALECT
    }

    /// `{"error","error_code"}` with status 200 (the reference's "always 200"), except 400 for
    /// malformed request data where the route allows it, and 401 when the route's
    /// authentication refused the request.
    fn render(&self, e: &ApiError, route: &RouteInfo) -> HttpResponse {
        let status = match e.class() {
            ErrorClass::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorClass::BadRequest if MALFORMED_IS_400.contains(&route.name) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::OK,
        };
        let (message, code) = error_fields(e);
        json_response(status, &json!({"error": message, "error_code": code}))
    }
}

/// What one image produced under one pipeline.
#[derive(Debug, Clone)]
enum Outcome {
    /// A verdict.
    Verdict(crate::engine::FrameVerdict),
    /// A rejection or an error: message, code, and whether the client should retry later.
    Error {
        message: String,
        code: Option<&'static str>,
        transient: bool,
    },
}

impl Outcome {
    /// The reference's fields: `probability`, `quality`, `score` or `error`, `error_code`.
    fn fields(&self) -> Map<String, Value> {
        let v = match self {
            Outcome::Verdict(v) => {
                json!({"probability": v.probability, "quality": v.quality, "score": v.score})
            }
            Outcome::Error { message, code, .. } => json!({"error": message, "error_code": code}),
        };
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn transient(&self) -> bool {
        matches!(
            self,
            Outcome::Error {
                transient: true,
                ..
            }
        )
    }

    /// The outcome of an error (counted and logged once, here).
    fn of_error(e: ApiError) -> Outcome {
        note(DIALECT, &e);
        let (message, code) = error_fields(&e);
        Outcome::Error {
            message,
            code,
            transient: e.class().is_transient(),
        }
    }
}

/// The outcome of an analysed image under `pipeline` and `cal`.
fn outcome(
    decider: &Decider,
    r: &Result<Processed, Error>,
    pipeline: Pipeline,
    cal: Calibration,
) -> Outcome {
    match r {
        Ok(p) => match decider.frame(&p.analysis, pipeline, cal) {
            Ok(FrameOutcome::Verdict(v)) => Outcome::Verdict(v),
            Ok(FrameOutcome::Rejected(rej)) => Outcome::Error {
                message: rej.message.clone(),
                code: Some(rej.code.code()),
                transient: false,
            },
            Ok(FrameOutcome::NoLiveness) => Outcome::of_error(ApiError::Engine(Error::Internal(
                "no liveness result for this image".into(),
            ))),
            Err(e) => Outcome::of_error(ApiError::Engine(e)),
        },
        Err(e) => Outcome::of_error(ApiError::Engine(e.copied())),
    }
}

/// A liveness endpoint's 200: `Retry-After: 1` when a result says to retry, and the largest
/// queue and inference times of its images.
fn answer(body: &Value, transient: bool, results: &[Result<Processed, Error>]) -> HttpResponse {
    let mut r = json_response(StatusCode::OK, body);
    if transient {
        set_retry_after(&mut r, 1);
    }
    let (q, i) = max_times(results.iter().filter_map(|r| r.as_ref().ok()));
    timing_headers(&mut r, q, i);
    r
}

/// `p` when the loaded engine serves it (all its networks loaded); a pipeline whose optional
/// network is not loaded is unsupported here, as an unknown name is.
fn served(ctx: &Ctx, p: Pipeline) -> Result<Pipeline, ApiError> {
    match ctx.app.batcher.engine() {
        Some(e) if !e.pipelines().contains(&p) => Err(ApiError::invalid(UNSUPPORTED_PIPELINE)),
        _ => Ok(p),
    }
}

/// The `pipeline` query parameter (default pipeline when absent or empty).
fn pipeline_param(q: &Query) -> Result<Pipeline, ApiError> {
    match q.get_nonempty("pipeline") {
        None => Ok(Pipeline::default()),
        Some(name) => Pipeline::parse(name).ok_or_else(|| ApiError::invalid(UNSUPPORTED_PIPELINE)),
    }
}

/// The OS named by the `Meta` header (UNKNOWN when absent or unreadable).
fn meta_os(req: &Request<Bytes>) -> &'static str {
    bi::os_from_meta(req.headers().get("meta").and_then(|v| v.to_str().ok()))
}

/// What the parsing of a liveness request produced.
struct Analysed {
    /// OS of the `Meta` header.
    os: &'static str,
    /// Requested pipeline.
    pipeline: Pipeline,
    /// Image names, in part order.
    names: Vec<String>,
    /// One result per image.
    results: Vec<Result<Processed, Error>>,
}

impl IdLive {
    /// Records one decision; the answer settles the ticket first (`bi.durable`).
    #[allow(clippy::too_many_arguments)]
    #[must_use]
    fn record(
        &self,
        ctx: &Ctx,
        t0: Instant,
        pipeline: Pipeline,
        cal: Calibration,
        domain: Option<&str>,
        os: &str,
        o: &Outcome,
    ) -> bi::Ticket {
        let (probability, quality, error_code) = match o {
            Outcome::Verdict(v) => (Some(v.probability), Some(v.quality), None),
            Outcome::Error { code, .. } => {
                (None, None, Some(code.unwrap_or("UNKNOWN").to_string()))
            }
        };
        self.bi.record(BiRecord {
            time_ms: bi::now_ms(),
            route: reference_path(ctx),
            dialect: DIALECT.into(),
            pipeline: pipeline.name().into(),
            calibration: Some(cal.name().into()),
            domain: domain.map(str::to_string),
            os: os.to_string(),
            probability,
            quality,
            error_code,
            latency_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// What both liveness endpoints share: the `Meta` OS, the `pipeline` parameter, and every
    /// image part analysed in one submission to the batcher (names in part order).
    async fn analyze_parts(req: Request<Bytes>, ctx: &Ctx) -> Result<Analysed, ApiError> {
        let os = meta_os(&req);
        let pipeline = served(ctx, pipeline_param(&Query::parse(req.uri().query())?)?)?;
        let (parts, body) = req.into_parts();
        let images = image_parts(&parts.headers, body, MAX_PARTS).await?;
        let (names, inputs): (Vec<String>, Vec<_>) =
            images.into_iter().map(|n| (n.name, n.input)).unzip();
        let results = ctx
            .app
            .batcher
            .submit_many(inputs, AnalyzeOptions::default(), ctx.route.name)
            .await;
        Ok(Analysed {
            os,
            pipeline,
            names,
            results,
        })
    }

    /// `GET /api_version`.
    async fn api_version(
        self: Arc<Self>,
        _req: Request<Bytes>,
        ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        // The pipelines the loaded networks serve (while loading: those of the default set).
        let available: Vec<&str> = match ctx.app.batcher.engine() {
            Some(e) => e.pipelines().iter().map(|p| p.name()).collect(),
            None => Pipeline::ALL
                .iter()
                .filter(|p| p.networks().iter().all(|n| !n.is_optional()))
                .map(|p| p.name())
                .collect(),
        };
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "product": PRODUCT,
                "version": env!("CARGO_PKG_VERSION"),
                "defaultPipeline": Pipeline::default().name(),
                "availablePipelines": available,
                "expirationDate": self.cfg.licensed.license_expiration,
            }),
        ))
    }

    /// `POST /check_liveness`: one result for one image or a series (one engine session).
    async fn check_liveness(
        self: Arc<Self>,
        req: Request<Bytes>,
        ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let t0 = Instant::now();
        let a = Self::analyze_parts(req, &ctx).await?;
        let decider = ctx.app.batcher.decider();
        let cal = Calibration::Regular;
        let session = Session {
            policy: SessionPolicy::MeanScore,
            pipeline: a.pipeline,
            calibration: cal,
        };
        let states: Vec<FrameState> = a
            .results
            .iter()
            .map(|r| FrameState::of(&decider, r.as_ref().map(|p| &p.analysis), a.pipeline, cal))
            .collect();
        let result = match session.decide(&decider, &states) {
            SessionOutcome::Verdict { verdict, .. } => Outcome::Verdict(verdict),
            SessionOutcome::Frame(i) => outcome(&decider, &a.results[i], a.pipeline, cal),
            SessionOutcome::Empty => {
                Outcome::of_error(ApiError::invalid("no image in the request"))
            }
        };
        self.record(&ctx, t0, a.pipeline, cal, None, a.os, &result)
            .settle()
            .await?;
        let body = Value::Object(result.fields());
        Ok(answer(&body, result.transient(), &a.results))
    }

    /// `POST /check_liveness_batch`: one entry per image, keyed by `file_name`.
    async fn check_liveness_batch(
        self: Arc<Self>,
        req: Request<Bytes>,
        ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let t0 = Instant::now();
        let a = Self::analyze_parts(req, &ctx).await?;
        let decider = ctx.app.batcher.decider();
        let cal = Calibration::Regular;
        let mut transient = false;
        let mut tickets = Vec::new();
        let entries: Vec<Value> = a
            .names
            .into_iter()
            .zip(&a.results)
            .map(|(name, r)| {
                let o = outcome(&decider, r, a.pipeline, cal);
                tickets.push(self.record(&ctx, t0, a.pipeline, cal, None, a.os, &o));
                transient |= o.transient();
                let mut m = Map::new();
                m.insert("file_name".into(), json!(name));
                m.extend(o.fields());
                Value::Object(m)
            })
            .collect();
        bi::Ticket::settle_all(tickets).await?;
        Ok(answer(&Value::Array(entries), transient, &a.results))
    }

    /// `POST /check_image`: one image, several pipelines and calibrations.
    async fn check_image(
        self: Arc<Self>,
        req: Request<Bytes>,
        ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let t0 = Instant::now();
        let os = meta_os(&req);
        let (parts, body) = req.into_parts();
        let parsed = parse_check_image(&parts.headers, body).await?;
        for (p, _) in &parsed.runs {
            served(&ctx, *p)?;
        }
        let result = ctx
            .app
            .batcher
            .submit(parsed.image, AnalyzeOptions::default(), ctx.route.name)
            .await;
        let decider = ctx.app.batcher.decider();
        let mut transient = false;
        let mut tickets = Vec::new();
        let results: Vec<Value> = parsed
            .runs
            .iter()
            .map(|&(pipeline, cal)| {
                let o = outcome(&decider, &result, pipeline, cal);
                tickets.push(self.record(&ctx, t0, pipeline, cal, Some(parsed.domain), os, &o));
                transient |= o.transient();
                let mut m = Map::new();
                m.insert("pipeline".into(), json!(pipeline.name()));
                m.insert("calibration".into(), json!(cal.name()));
                m.extend(o.fields());
                Value::Object(m)
            })
            .collect();
        bi::Ticket::settle_all(tickets).await?;
        let license = &self.cfg.licensed.license_expiration;
        let mut r = json_response(
            StatusCode::OK,
            &json!({
                "serverVersion": env!("CARGO_PKG_VERSION"),
                "licenseExpirationDate": license.get(..10).unwrap_or(license),
                "results": results,
            }),
        );
        if transient {
            set_retry_after(&mut r, 1);
        }
        if let Ok(p) = &result {
            timing_headers(&mut r, p.queue_ms, p.inference_ms);
        }
        Ok(r)
    }

    /// `GET /bi_records`: this dialect's records within the dates, oldest first.
    async fn bi_records(
        self: Arc<Self>,
        req: Request<Bytes>,
        _ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        bi_records(&self.bi, DIALECT, &req).await
    }

    /// `GET /bi_report`: the reference's histogram keys over this dialect's records.
    async fn bi_report(
        self: Arc<Self>,
        req: Request<Bytes>,
        _ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let tally = read_tally(&self.bi, DIALECT, &Query::parse(req.uri().query())?).await?;
        Ok(json_response(
            StatusCode::OK,
            &Value::Object(bi::report_from_tally(&tally, Pipeline::default().name())),
        ))
    }
}

/// The `data` part of `/check_image`.
#[derive(Debug, Deserialize)]
struct CheckImageData {
    /// `GENERAL` or `DESKTOP`.
    domain: Option<String>,
    /// Pipelines to run.
    pipelines: Option<Vec<PipelineRequest>>,
}

/// One entry of `pipelines`.
#[derive(Debug, Deserialize)]
struct PipelineRequest {
    /// Pipeline name.
    pipeline: String,
    /// Calibration name (REGULAR when absent).
    calibration: Option<String>,
}

/// What `/check_image` was asked: the domain, the (pipeline, calibration) list and the image.
struct CheckImageRequest {
    domain: &'static str,
    runs: Vec<(Pipeline, Calibration)>,
    image: Bytes,
}

/// Parses the `data` and `image` parts; every problem is an invalid argument.
async fn parse_check_image(
    headers: &hyper::HeaderMap,
    body: Bytes,
) -> Result<CheckImageRequest, ApiError> {
    let bad = |m: String| ApiError::invalid(m);
    let parts = multipart(headers, body, MAX_PARTS).await?;
    let find = |n: &str| parts.iter().find(|p| p.name.as_deref() == Some(n));
    let data = find("data").ok_or_else(|| bad("missing the multipart part \"data\"".into()))?;
    let image = find("image").ok_or_else(|| bad("missing the multipart part \"image\"".into()))?;
    let data: CheckImageData = serde_json::from_slice(&data.bytes)
        .map_err(|e| bad(format!("malformed JSON in the \"data\" part: {e}")))?;
    let domain = match data.domain.as_deref().map(str::trim) {
        None | Some("") => "GENERAL",
        Some(d) if d.eq_ignore_ascii_case("GENERAL") => "GENERAL",
        Some(d) if d.eq_ignore_ascii_case("DESKTOP") => "DESKTOP",
        Some(d) => return Err(bad(format!("unknown domain {d:?}: use GENERAL or DESKTOP"))),
    };
    let entries = data.pipelines.unwrap_or_default();
    if entries.len() > MAX_PIPELINE_RUNS {
        return Err(bad(format!(
            "{} pipelines entries: at most {MAX_PIPELINE_RUNS} per request (each pipeline under each calibration once)",
            entries.len()
        )));
    }
    let mut runs = Vec::new();
    for p in entries {
        let pipeline =
            Pipeline::parse(p.pipeline.trim()).ok_or_else(|| bad(UNSUPPORTED_PIPELINE.into()))?;
        let cal = match p.calibration.as_deref().map(str::trim) {
            None | Some("") => Calibration::Regular,
            Some(c) => Calibration::parse(c).ok_or_else(|| {
                bad(format!(
                    "unknown calibration {c:?}: use SOFT, REGULAR or HARDENED"
                ))
            })?,
        };
        runs.push((pipeline, cal));
    }
    if runs.is_empty() {
        runs.push((Pipeline::default(), Calibration::Regular));
    }
    if image.bytes.is_empty() {
        return Err(bad("the \"image\" part is empty".into()));
    }
    Ok(CheckImageRequest {
        domain,
        runs,
        image: image.bytes.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_parameter() {
        let q = |s: &str| Query::parse(Some(s)).unwrap();
        assert_eq!(pipeline_param(&q("")).unwrap(), Pipeline::Dual);
        assert_eq!(
            pipeline_param(&q("pipeline=minifasnet-v2")).unwrap(),
            Pipeline::V2
        );
        let e = pipeline_param(&q("pipeline=astraea")).unwrap_err();
        assert_eq!(error_fields(&e), (UNSUPPORTED_PIPELINE.to_string(), None));
    }

    #[test]
    fn image_errors_carry_the_reference_codes() {
        let code = |e: Error| error_fields(&ApiError::Engine(e)).1;
        assert_eq!(code(Error::UnsupportedFormat), Some(FAILED_TO_READ_IMAGE));
        assert_eq!(
            code(Error::ImageTooSmall {
                width: 1,
                height: 1,
                min: 32
            }),
            Some(IMAGE_TOO_SMALL)
        );
        assert_eq!(code(Error::Unavailable("loading".into())), None);
        let edge = ApiError::Edge(crate::server::EdgeError::BodyTooLarge { limit: 1 });
        assert_eq!(error_fields(&edge).1, Some(FAILED_TO_READ_IMAGE));
    }
}
