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
//! Every verdict or rejection is recorded as a BI record. Errors are rendered by
//! [`error_response`], the dialect's one mapping from an engine error.

use std::time::Instant;

use bytes::Bytes;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::timing_headers;
use super::{max_times, multipart_parts, query_get, query_pairs, read_bi, reference_path};
use crate::batcher::Processed;
use crate::bi::{self, BiRecord};
use crate::engine::calibration::{self, Calibration, Calibrations};
use crate::engine::pipeline::{self, Pipeline};
use crate::engine::AnalyzeOptions;
use crate::server::{handler, json_response, Ctx, HttpResponse, Mount, RouteSpec};
use crate::telemetry as tm;
use crate::Error;

/// Dialect name and path prefix.
pub const DIALECT: &str = "idlive";
/// `product` of `/api_version`.
pub const PRODUCT: &str = "IDLive Face Server";
/// The reference's message for a `pipeline` this server does not have.
pub const UNSUPPORTED_PIPELINE: &str = "The request contains an unsupported pipeline, rejecting";
/// Most parts in one multipart request.
pub const MAX_PARTS: usize = 64;
/// Error code of an image that cannot be decoded (or exceeds the decode limits).
pub const FAILED_TO_READ_IMAGE: &str = "FAILED_TO_READ_IMAGE";
/// Error code of an image below the smallest side the detector accepts.
pub const IMAGE_TOO_SMALL: &str = "IMAGE_TOO_SMALL";

/// The IDLive dialect's routes.
pub fn routes() -> Vec<RouteSpec> {
    // A body over the limit or late is one more request error: 200 with `error`, as always.
    let row = |method, path, name, h| {
        RouteSpec::new(method, path, DIALECT, name, Mount::Dialect, h)
            .errors(|e, _| error_response(e, false))
    };
    vec![
        row(
            Method::GET,
            "/api_version",
            "idlive.api_version",
            handler(api_version),
        ),
        row(
            Method::POST,
            "/check_liveness",
            "idlive.check_liveness",
            handler(check_liveness),
        ),
        row(
            Method::POST,
            "/check_image",
            "idlive.check_image",
            handler(check_image),
        ),
        row(
            Method::POST,
            "/check_liveness_batch",
            "idlive.check_liveness_batch",
            handler(check_liveness_batch),
        ),
        row(
            Method::GET,
            "/bi_report",
            "idlive.bi_report",
            handler(bi_report),
        ),
        row(
            Method::GET,
            "/bi_records",
            "idlive.bi_records",
            handler(bi_records),
        ),
    ]
}

/// `error` and `error_code` of an engine error: request problems and server faults have a
/// null code, undecodable images `FAILED_TO_READ_IMAGE`, too small ones `IMAGE_TOO_SMALL`.
fn error_fields(e: &Error) -> (String, Option<&'static str>) {
    match e {
        Error::InvalidArgument(m) => (m.clone(), None),
        Error::ImageTooSmall { .. } => (e.to_string(), Some(IMAGE_TOO_SMALL)),
        Error::EmptyImage
        | Error::BodyTooLarge { .. }
        | Error::UnsupportedFormat
        | Error::CorruptImage(_)
        | Error::ImageTooLarge { .. }
        | Error::TooManyPixels { .. } => (e.to_string(), Some(FAILED_TO_READ_IMAGE)),
        _ => (e.to_string(), None),
    }
}

/// Whether the client should retry later (the response then carries `Retry-After: 1`).
fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Overloaded { .. } | Error::Unavailable(_))
}

/// Counts and logs an engine error.
fn note_error(e: &Error) {
    metrics::counter!(tm::ERRORS, "kind" => e.kind()).increment(1);
    if !e.is_client_error() {
        tracing::warn!(kind = e.kind(), error = %e, "request failed");
    }
}

/// The one mapping from an engine error to this dialect's response: `{"error","error_code"}`
/// with status 200 (the reference's "always 200"), except 400 for malformed request data where
/// the endpoint allows it (`malformed_is_400`). Overload and loading add `Retry-After: 1`.
pub fn error_response(e: &Error, malformed_is_400: bool) -> HttpResponse {
    note_error(e);
    let status = if malformed_is_400 && matches!(e, Error::InvalidArgument(_)) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let (message, code) = error_fields(e);
    let mut r = json_response(status, &json!({"error": message, "error_code": code}));
    if is_transient(e) {
        retry_after(&mut r);
    }
    r
}

fn retry_after(r: &mut HttpResponse) {
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
}

/// A liveness verdict under one pipeline and calibration.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    score: f32,
    probability: f32,
    quality: f32,
}

/// What one image produced under one pipeline.
#[derive(Debug, Clone)]
enum Outcome {
    /// A verdict.
    Verdict(Verdict),
    /// A rejection or an error: message, code, and whether the client should retry later.
    Error {
        message: String,
        code: Option<&'static str>,
        transient: bool,
        server_fault: bool,
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
}

/// The outcome of an analysed image under `pipeline` and `cal`.
fn outcome(
    r: &crate::Result<Processed>,
    pipeline: Pipeline,
    cal: Calibration,
    dual: &Calibrations,
) -> Outcome {
    match r {
        Ok(p) => {
            let a = &p.analysis;
            if let Some(rej) = &a.rejection {
                return Outcome::Error {
                    message: rej.message.clone(),
                    code: Some(rej.code.code()),
                    transient: false,
                    server_fault: false,
                };
            }
            match &a.liveness {
                Some(l) => {
                    let l = pipeline::apply(l, pipeline, cal, dual);
                    Outcome::Verdict(Verdict {
                        score: l.score,
                        probability: l.probability,
                        quality: a.quality.as_ref().map_or(0.0, |q| q.score),
                    })
                }
                None => Outcome::Error {
                    message: "no liveness result for this image".into(),
                    code: None,
                    transient: false,
                    server_fault: true,
                },
            }
        }
        Err(e) => {
            note_error(e);
            let (message, code) = error_fields(e);
            Outcome::Error {
                message,
                code,
                transient: is_transient(e),
                server_fault: !e.is_client_error(),
            }
        }
    }
}

/// One result for a series: the first server fault if any (so the client retries the whole
/// series), else the mean raw score and mean quality of the verdicts with the probability of
/// that mean score under `cal`, else the first image's error.
fn accumulate(
    outcomes: &[Outcome],
    pipeline: Pipeline,
    cal: Calibration,
    dual: &Calibrations,
) -> Outcome {
    if let Some(fault) = outcomes.iter().find(|o| {
        matches!(
            o,
            Outcome::Error {
                server_fault: true,
                ..
            }
        )
    }) {
        return fault.clone();
    }
    let verdicts: Vec<&Verdict> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Verdict(v) => Some(v),
            Outcome::Error { .. } => None,
        })
        .collect();
    if verdicts.is_empty() {
        return outcomes.first().cloned().unwrap_or(Outcome::Error {
            message: "no image in the request".into(),
            code: None,
            transient: false,
            server_fault: false,
        });
    }
    let n = verdicts.len() as f32;
    let score = verdicts.iter().map(|v| v.score).sum::<f32>() / n;
    let quality = verdicts.iter().map(|v| v.quality).sum::<f32>() / n;
    let cals = pipeline.single_network_calibrations().unwrap_or(*dual);
    Outcome::Verdict(Verdict {
        score,
        probability: calibration::probability(score, cals.profile(cal)),
        quality,
    })
}

/// The dual pipeline's calibrations in force (the engine's configuration).
fn dual_calibrations(ctx: &Ctx) -> Calibrations {
    ctx.app
        .batcher
        .engine()
        .map(|e| e.config().calibrations)
        .unwrap_or_default()
}

/// The `pipeline` query parameter (default pipeline when absent or empty).
fn pipeline_param(query: Option<&str>) -> Result<Pipeline, Error> {
    match query_get(&query_pairs(query), "pipeline").map(str::trim) {
        None | Some("") => Ok(Pipeline::default()),
        Some(name) => Pipeline::parse(name)
            .ok_or_else(|| Error::InvalidArgument(UNSUPPORTED_PIPELINE.to_string())),
    }
}

/// The OS named by the `Meta` header (UNKNOWN when absent or unreadable).
fn meta_os(req: &Request<Bytes>) -> &'static str {
    bi::os_from_meta(req.headers().get("meta").and_then(|v| v.to_str().ok()))
}

/// Records one decision.
#[allow(clippy::too_many_arguments)]
fn record(
    ctx: &Ctx,
    t0: Instant,
    pipeline: Pipeline,
    cal: Calibration,
    domain: Option<&str>,
    os: &str,
    o: &Outcome,
) {
    let (probability, quality, error_code) = match o {
        Outcome::Verdict(v) => (Some(v.probability), Some(v.quality), None),
        Outcome::Error { code, .. } => (None, None, Some(code.unwrap_or("UNKNOWN").to_string())),
    };
    ctx.app.bi.submit(BiRecord {
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
    });
}

/// The image parts of a multipart request, with their `file_name` (file name, else field
/// name, else `image<N>`).
async fn image_parts(req: &Request<Bytes>) -> Result<(Vec<String>, Vec<Bytes>), Error> {
    let parts = multipart_parts(req.headers(), req.body().clone(), MAX_PARTS).await?;
    if parts.is_empty() {
        return Err(Error::InvalidArgument(
            "no image in the request: send one or more multipart image parts".into(),
        ));
    }
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let name = p
                .file_name
                .or(p.name)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("image{i}"));
            (name, p.bytes)
        })
        .unzip())
}

/// `GET /api_version`.
async fn api_version(_req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    json_response(
        StatusCode::OK,
        &json!({
            "product": PRODUCT,
            "version": env!("CARGO_PKG_VERSION"),
            "defaultPipeline": Pipeline::default().name(),
            "availablePipelines": Pipeline::ALL.iter().map(|p| p.name()).collect::<Vec<_>>(),
            "expirationDate": ctx.app.cfg.license_expiration,
        }),
    )
}

/// What both liveness endpoints share: the `Meta` OS, the `pipeline` parameter, and every
/// image part analysed in one submission to the batcher (names in part order).
async fn analyze_parts(
    req: &Request<Bytes>,
    ctx: &Ctx,
) -> Result<
    (
        &'static str,
        Pipeline,
        Vec<String>,
        Vec<Result<Processed, Error>>,
    ),
    HttpResponse,
> {
    let os = meta_os(req);
    let pipeline = pipeline_param(req.uri().query()).map_err(|e| error_response(&e, false))?;
    let (names, images) = image_parts(req)
        .await
        .map_err(|e| error_response(&e, false))?;
    let results = ctx
        .app
        .batcher
        .submit_many(images, AnalyzeOptions::default(), ctx.route.name)
        .await;
    Ok((os, pipeline, names, results))
}

/// `POST /check_liveness`: one result for one image or a series.
async fn check_liveness(req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    let t0 = Instant::now();
    let (os, pipeline, _, results) = match analyze_parts(&req, &ctx).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let dual = dual_calibrations(&ctx);
    let cal = Calibration::Regular;
    let outcomes: Vec<Outcome> = results
        .iter()
        .map(|r| outcome(r, pipeline, cal, &dual))
        .collect();
    let result = accumulate(&outcomes, pipeline, cal, &dual);
    record(&ctx, t0, pipeline, cal, None, os, &result);
    let mut r = json_response(StatusCode::OK, &Value::Object(result.fields()));
    if result.transient() {
        retry_after(&mut r);
    }
    let (q, i) = max_times(results.iter().filter_map(|r| r.as_ref().ok()));
    timing_headers(&mut r, q, i);
    r
}

/// `POST /check_liveness_batch`: one entry per image, keyed by `file_name`.
async fn check_liveness_batch(req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    let t0 = Instant::now();
    let (os, pipeline, names, results) = match analyze_parts(&req, &ctx).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let dual = dual_calibrations(&ctx);
    let cal = Calibration::Regular;
    let mut transient = false;
    let entries: Vec<Value> = names
        .into_iter()
        .zip(&results)
        .map(|(name, r)| {
            let o = outcome(r, pipeline, cal, &dual);
            record(&ctx, t0, pipeline, cal, None, os, &o);
            transient |= o.transient();
            let mut m = Map::new();
            m.insert("file_name".into(), json!(name));
            m.extend(o.fields());
            Value::Object(m)
        })
        .collect();
    let mut r = json_response(StatusCode::OK, &Value::Array(entries));
    if transient {
        retry_after(&mut r);
    }
    let (q, i) = max_times(results.iter().filter_map(|r| r.as_ref().ok()));
    timing_headers(&mut r, q, i);
    r
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

/// Parses the `data` and `image` parts; every problem is an [`Error::InvalidArgument`].
async fn parse_check_image(req: &Request<Bytes>) -> Result<CheckImageRequest, Error> {
    let bad = |m: String| Error::InvalidArgument(m);
    let parts = multipart_parts(req.headers(), req.body().clone(), MAX_PARTS).await?;
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
    let mut runs = Vec::new();
    for p in data.pipelines.unwrap_or_default() {
        let pipeline = Pipeline::parse(p.pipeline.trim())
            .ok_or_else(|| bad(UNSUPPORTED_PIPELINE.to_string()))?;
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

/// `POST /check_image`: one image, several pipelines and calibrations.
async fn check_image(req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    let t0 = Instant::now();
    let os = meta_os(&req);
    let parsed = match parse_check_image(&req).await {
        Ok(p) => p,
        Err(e) => return error_response(&e, true),
    };
    let result = ctx
        .app
        .batcher
        .submit(parsed.image, AnalyzeOptions::default(), ctx.route.name)
        .await;
    let dual = dual_calibrations(&ctx);
    let mut transient = false;
    let results: Vec<Value> = parsed
        .runs
        .iter()
        .map(|&(pipeline, cal)| {
            let o = outcome(&result, pipeline, cal, &dual);
            record(&ctx, t0, pipeline, cal, Some(parsed.domain), os, &o);
            transient |= o.transient();
            let mut m = Map::new();
            m.insert("pipeline".into(), json!(pipeline.name()));
            m.insert("calibration".into(), json!(cal.name()));
            m.extend(o.fields());
            Value::Object(m)
        })
        .collect();
    let license = &ctx.app.cfg.license_expiration;
    let mut r = json_response(
        StatusCode::OK,
        &json!({
            "serverVersion": env!("CARGO_PKG_VERSION"),
            "licenseExpirationDate": license.get(..10).unwrap_or(license),
            "results": results,
        }),
    );
    if transient {
        retry_after(&mut r);
    }
    if let Ok(p) = &result {
        timing_headers(&mut r, p.queue_ms, p.inference_ms);
    }
    r
}

/// `GET /bi_records`: this dialect's records within the dates, oldest first.
async fn bi_records(req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    match read_bi(&ctx.app, DIALECT, req.uri().query()).await {
        Ok(records) => json_response(StatusCode::OK, &json!(records)),
        Err(e) => error_response(&e, true),
    }
}

/// `GET /bi_report`: the reference's histogram keys over this dialect's records.
async fn bi_report(req: Request<Bytes>, ctx: Ctx) -> HttpResponse {
    match read_bi(&ctx.app, DIALECT, req.uri().query()).await {
        Ok(records) => json_response(
            StatusCode::OK,
            &Value::Object(bi::bi_report(&records, Pipeline::default().name())),
        ),
        Err(e) => error_response(&e, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(score: f32, quality: f32) -> Outcome {
        Outcome::Verdict(Verdict {
            score,
            probability: 0.0,
            quality,
        })
    }

    fn rejected(code: &'static str) -> Outcome {
        Outcome::Error {
            message: code.into(),
            code: Some(code),
            transient: false,
            server_fault: false,
        }
    }

    #[test]
    fn series_means_the_verdicts_and_falls_back_to_the_first_error() {
        let cals = Calibrations::default();
        let p = Pipeline::Dual;
        let c = Calibration::Regular;
        match accumulate(
            &[v(1.0, 0.4), rejected("FACE_TOO_SMALL"), v(3.0, 0.8)],
            p,
            c,
            &cals,
        ) {
            Outcome::Verdict(x) => {
                assert!((x.score - 2.0).abs() < 1e-6);
                assert!((x.quality - 0.6).abs() < 1e-6);
                let want = calibration::probability(2.0, cals.regular);
                assert!((x.probability - want).abs() < 1e-6);
            }
            o => panic!("{o:?}"),
        }
        match accumulate(
            &[rejected("TOO_MANY_FACES"), rejected("FACE_NOT_FOUND")],
            p,
            c,
            &cals,
        ) {
            Outcome::Error { code, .. } => assert_eq!(code, Some("TOO_MANY_FACES")),
            o => panic!("{o:?}"),
        }
        let fault = Outcome::Error {
            message: "overloaded".into(),
            code: None,
            transient: true,
            server_fault: true,
        };
        assert!(accumulate(&[v(1.0, 0.5), fault], p, c, &cals).transient());
    }

    #[test]
    fn pipeline_parameter() {
        assert_eq!(pipeline_param(None).unwrap(), Pipeline::Dual);
        assert_eq!(
            pipeline_param(Some("pipeline=minifasnet-v2")).unwrap(),
            Pipeline::V2
        );
        let e = pipeline_param(Some("pipeline=astraea")).unwrap_err();
        assert_eq!(error_fields(&e), (UNSUPPORTED_PIPELINE.to_string(), None));
    }
}
