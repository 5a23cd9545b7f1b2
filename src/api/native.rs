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
//! `POST /facegate/v1/active`
//! - body `multipart/form-data`: 2 to [`MAX_FRAMES`] image parts, in capture order;
//! - query: `challenge=left|right|up|down` (comma-separated: the head movement asked for
//!   between the first and the last frame), `calibration`;
//! - answers one engine [`ActiveSession`]: per-frame checks with their analyses (PAD scores per
//!   network, quality, rejection), the 3-D motion of each pair, the challenge and the
//!   same-person check, `live` and `score` (what the capture console shows).
//!
//! Errors are `{"error":{"kind","message"}}` with the status of their class ([`Native`]'s
//! error table).

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::error::{note, ApiError, ErrorClass, ErrorTable};
use super::input::{image_parts, is_raw_image, media_type};
use super::query::Query;
use super::{max_times, route, timing_headers, Dialect, Edge};
use crate::engine::active::{ActiveSession, Direction, FrameCheck};
use crate::engine::{Analysis, AnalyzeOptions, Calibration};
use crate::server::{json_response, Ctx, HttpResponse, Mount, RouteInfo, RouteSpec};

/// Most image parts in one multipart request.
pub const MAX_PARTS: usize = 64;
/// Most frames of one active check.
pub const MAX_FRAMES: usize = 8;
/// Dialect name of the native API.
pub const DIALECT: &str = "facegate";
/// Route name of the analysis.
pub const ANALYZE_ROUTE: &str = "facegate.analyze";
/// Route name of the active check.
pub const ACTIVE_ROUTE: &str = "facegate.active";

/// The native dialect: one analysis route.
pub struct Native {
    /// Dialect name (metrics label).
    dialect: &'static str,
    /// Route name.
    name: &'static str,
    /// Where the route is served.
    path: &'static str,
    /// How it is mounted.
    mount: Mount,
}

impl Default for Native {
    fn default() -> Self {
        Self {
            dialect: DIALECT,
            name: ANALYZE_ROUTE,
            path: "/facegate/v1/analyze",
            mount: Mount::Exact,
        }
    }
}

impl Native {
    /// The native API at `/facegate/v1/analyze`.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The same analysis route as another dialect `dialect`, route `name`, at
    /// `/{dialect}{path}` (and the bare path), as a new dialect module would mount it (tests,
    /// demos).
    pub fn mounted(dialect: &'static str, path: &'static str, name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            dialect,
            name,
            path,
            mount: Mount::Dialect,
        })
    }

    /// `POST /facegate/v1/analyze`.
    async fn analyze(
        self: Arc<Self>,
        req: Request<Bytes>,
        ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let opts = options(&Query::parse(req.uri().query())?)?;
        let media = media_type(req.headers());
        if is_raw_image(&media) {
            let p = ctx
                .app
                .batcher
                .submit(req.into_body(), opts, ctx.route.name)
                .await?;
            let mut r = json_response(StatusCode::OK, &analysis_doc(&p.analysis));
            timing_headers(&mut r, p.queue_ms, p.inference_ms);
            return Ok(r);
        }
        if media != "multipart/form-data" {
            return Err(ApiError::UnsupportedMedia(format!(
                "{media}: send image/jpeg, image/png, application/octet-stream or multipart/form-data"
            )));
        }
        let (parts, body) = req.into_parts();
        let images = image_parts(&parts.headers, body, MAX_PARTS)
            .await
            .map_err(|e| match e {
                ApiError::Engine(crate::Error::InvalidArgument(m)) if m.starts_with("no image") => {
                    ApiError::Engine(crate::Error::EmptyImage)
                }
                other => other,
            })?;
        let (names, inputs): (Vec<String>, Vec<_>) =
            images.into_iter().map(|n| (n.name, n.input)).unzip();
        let results = ctx
            .app
            .batcher
            .submit_many(inputs, opts, ctx.route.name)
            .await;
        let (q, i) = max_times(results.iter().filter_map(|r| r.as_ref().ok()));
        let docs: Vec<Value> = names
            .into_iter()
            .zip(results)
            .map(|(name, r)| {
                let mut v = match r {
                    Ok(p) => analysis_doc(&p.analysis),
                    Err(e) => {
                        let e = ApiError::Engine(e);
                        note(self.dialect, &e);
                        json!({"error": error_body(&e)})
                    }
                };
                v["name"] = json!(name);
                v
            })
            .collect();
        let mut r = json_response(StatusCode::OK, &json!({"results": docs}));
        timing_headers(&mut r, q, i);
        Ok(r)
    }
}

impl Native {
    /// `POST /facegate/v1/active`.
    async fn active(
        self: Arc<Self>,
        req: Request<Bytes>,
        ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let q = Query::parse(req.uri().query())?;
        q.only(&["calibration", "challenge"])?;
        let calibration = calibration(&q)?;
        let challenge = match q.get("challenge").map(str::trim).filter(|c| !c.is_empty()) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|d| {
                    Direction::parse(d.trim()).ok_or_else(|| {
                        ApiError::invalid(format!(
                            "unknown challenge direction {d:?}: use left, right, up or down"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if media_type(req.headers()) != "multipart/form-data" {
            return Err(ApiError::UnsupportedMedia(format!(
                "{}: send multipart/form-data with {MAX_FRAMES} image parts at most",
                media_type(req.headers())
            )));
        }
        let engine = ctx
            .app
            .batcher
            .engine()
            .ok_or_else(|| crate::Error::Unavailable("models are loading".into()))?;
        let ecfg = engine.config();
        if !(ecfg.load_descriptor && ecfg.load_landmarks) {
            return Err(crate::Error::Unavailable(
                "the active check needs the descriptor and landmark models (load_descriptor, load_landmarks)"
                    .into(),
            )
            .into());
        }
        let session = ActiveSession {
            cfg: ecfg.active,
            challenge,
            calibration,
            passive_threshold: None,
        };
        let (parts, body) = req.into_parts();
        let frames = image_parts(&parts.headers, body, MAX_FRAMES).await?;
        if frames.len() < 2 {
            return Err(ApiError::invalid(format!(
                "{} image part: send 2 to {MAX_FRAMES} frames in capture order",
                frames.len()
            )));
        }
        let (names, inputs): (Vec<String>, Vec<_>) =
            frames.into_iter().map(|n| (n.name, n.input)).unzip();
        let results = ctx
            .app
            .batcher
            .submit_many(inputs, session.options(), ctx.route.name)
            .await;
        let mut processed = Vec::with_capacity(results.len());
        for (name, r) in names.iter().zip(results) {
            match r {
                Ok(p) => processed.push(p),
                Err(e) => {
                    let class = ErrorClass::of_engine(&e);
                    if class.is_server_fault() {
                        return Err(e.into());
                    }
                    return Err(ApiError::Dialect(super::DialectError {
                        kind: e.kind(),
                        class,
                        message: format!("frame {name}: {e}"),
                        detail: String::new(),
                    }));
                }
            }
        }
        let analyses: Vec<&Analysis> = processed.iter().map(|p| &p.analysis).collect();
        let decider = ctx.app.batcher.decider();
        let outcome = session.decide(&decider, &analyses);
        let frames: Vec<Value> = names
            .iter()
            .zip(&analyses)
            .zip(&outcome.frames)
            .map(|((name, a), c)| {
                let mut doc = analysis_doc(a);
                // The templates stay on the server: the console shows scores, not biometrics.
                doc["template"] = Value::Null;
                let check = match c {
                    FrameCheck::Judged { passive, live } => json!({
                        "check": "judged", "live": live, "probability": passive.probability,
                        "score": passive.score,
                    }),
                    FrameCheck::Rejected(code) => json!({"check": "rejected", "rejection": code}),
                    FrameCheck::Incomplete => json!({"check": "incomplete"}),
                };
                json!({"name": name, "check": check, "analysis": doc})
            })
            .collect();
        let mut r = json_response(
            StatusCode::OK,
            &json!({
                "live": outcome.live,
                "score": if outcome.score.is_finite() { outcome.score } else { 0.0 },
                "frames": frames,
                "motion": outcome.motion,
                "challenge": outcome.challenge,
                "same_person": outcome.same_person,
            }),
        );
        let (q, i) = max_times(&processed);
        timing_headers(&mut r, q, i);
        Ok(r)
    }
}

impl ErrorTable for Native {
    fn dialect(&self) -> &'static str {
        self.dialect
    }

    fn render(&self, e: &ApiError, _route: &RouteInfo) -> HttpResponse {
        let status = match e.class() {
            ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
            ErrorClass::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorClass::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorClass::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorClass::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorClass::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorClass::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        json_response(status, &json!({"error": error_body(e)}))
    }
}

impl Dialect for Native {
    fn routes(self: Arc<Self>, edge: &Edge) -> Vec<RouteSpec> {
        let mut rows = vec![route(
            &self,
            edge,
            Method::POST,
            self.path,
            self.name,
            self.mount,
            Self::analyze,
        )];
        // The native API proper also has the active check (not the test mounts).
        if self.mount == Mount::Exact {
            rows.push(route(
                &self,
                edge,
                Method::POST,
                "/facegate/v1/active",
                ACTIVE_ROUTE,
                Mount::Exact,
                Self::active,
            ));
        }
        rows
    }
}

/// `{"kind","message"}` for an error.
fn error_body(e: &ApiError) -> Value {
    json!({"kind": e.kind(), "message": e.to_string()})
}

/// The analysis document plus `verdict`.
fn analysis_doc(a: &Analysis) -> Value {
    let mut v =
        serde_json::to_value(a).unwrap_or_else(|e| json!({"serialization_error": e.to_string()}));
    v["verdict"] = json!(a.verdict());
    v
}

/// Parses `calibration` (default REGULAR).
fn calibration(q: &Query) -> Result<Calibration, ApiError> {
    match q.get("calibration") {
        None => Ok(AnalyzeOptions::default().calibration),
        Some(v) => Calibration::parse(v).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown calibration {v}: use SOFT, REGULAR or HARDENED"
            ))
        }),
    }
}

/// Parses `calibration` and `template`.
fn options(q: &Query) -> Result<AnalyzeOptions, ApiError> {
    q.only(&["calibration", "template"])?;
    let mut opts = AnalyzeOptions {
        calibration: calibration(q)?,
        ..AnalyzeOptions::default()
    };
    if let Some(t) = q.flag("template")? {
        opts.template = t;
    }
    Ok(opts)
}
