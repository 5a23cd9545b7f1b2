//! The BioID BWS LivenessDetection dialect (`../shared/seeds/002_*.txt`), prefix `/bioid`.
//!
//! - `POST /api/v1/livenessdetection`: `{"liveImages":[{"image","tags"}]}` with one image
//!   (passive liveness) or two (passive on both, 3-D motion between them, the same person in
//!   both, and a head-movement challenge when the second image is tagged `up`, `down`, `left`
//!   or `right`): one engine [`ActiveSession`]. JSON keys are read case-insensitively. Always
//!   `status: SUCCEEDED` with 200 once the images were analysed; request errors are gRPC-status
//!   bodies `{"code","message"}` ([`BioId`]'s error table).
//! - `GET /livez`, `GET /readyz`: open health probes (readyz 503 while the models load).
//!
//! Authentication is BWS's: a bearer JWT HMAC-signed with the key of the client named in `sub`
//! (else `iss`), audience `BWS` ([`BwsAuth`]). Every answer of the liveness route carries
//! `jobid`, `bws-version`, `date` and an echoed `reference-number`.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::auth::MAX_LEEWAY_S;
use super::error::{respond, ApiError, DialectError, ErrorClass, ErrorTable};
use super::input::{base64_image, json};
use super::{max_times, route, timing_headers, Dialect, Edge};
use crate::batcher::{Input, Processed, Status};
use crate::engine::active::{ActiveOutcome, ActiveSession, Direction, FrameCheck};
use crate::engine::{
    Analysis, AnalyzeOptions, Calibration, FrameOutcome, Pipeline, Rejection, RejectionInfo,
};
use crate::server::{
    json_response, AuthFailure, Authenticator, BodyLimits, Ctx, HttpResponse, Mount, Principal,
    RouteInfo, RouteSpec,
};
use crate::Error;

/// Dialect name and path prefix.
pub const DIALECT: &str = "bioid";
/// Name of the liveness route.
pub const LIVENESS_ROUTE: &str = "bioid.livenessdetection";
/// Most images of one request.
pub const MAX_IMAGES: usize = 2;
/// Most tags of one image.
pub const MAX_TAGS: usize = 8;
/// Longest tag accepted, bytes.
pub const MAX_TAG_BYTES: usize = 32;
/// Longest bearer token accepted, bytes.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Longest `reference-number` echoed, bytes.
pub const MAX_REFERENCE_BYTES: usize = 128;
/// Shortest client key accepted, decoded bytes (the HS256 minimum of RFC 7518 §3.2).
pub const MIN_KEY_BYTES: usize = 32;
/// The only audience a BWS token may carry.
pub const AUDIENCE: &str = "BWS";
/// Default decoded-image bound when the engine is not loaded yet.
const DEFAULT_MAX_IMAGE_BYTES: usize = 15 << 20;
/// The one answer to every refused credential (no hint which part failed).
const UNAUTHENTICATED: &str = "the request does not have valid authentication credentials";

/// gRPC status codes of the error bodies.
mod grpc {
    /// The client cancelled (the body did not arrive in time).
    pub const CANCELLED: u16 = 1;
    /// A malformed request or an argument over a bound.
    pub const INVALID_ARGUMENT: u16 = 3;
    /// A server-side fault.
    pub const INTERNAL: u16 = 13;
    /// Overloaded or not serving; retry later.
    pub const UNAVAILABLE: u16 = 14;
    /// No valid credential.
    pub const UNAUTHENTICATED: u16 = 16;
}

/// The `[bioid]` configuration section. `Debug` shows the client ids, never their keys.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BioidConfig {
    /// BWS clients, each `CLIENT_ID=KEY` with the client's base64 key (split at the first
    /// `=`); none: every liveness request is refused.
    pub clients: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds (default 60).
    pub leeway_s: u64,
    /// Largest liveness request body, bytes: two images at `decode.max_bytes` travel as
    /// base64 (4/3 larger), so this route's bound is its own (default 48 MiB).
    pub max_body_bytes: usize,
    /// Longest wait for a liveness request's body, ms (default 60000).
    pub body_timeout_ms: u64,
}

impl Default for BioidConfig {
    fn default() -> Self {
        Self {
            clients: Vec::new(),
            leeway_s: 60,
            max_body_bytes: 48 << 20,
            body_timeout_ms: 60_000,
        }
    }
}

impl fmt::Debug for BioidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self
            .clients
            .iter()
            .map(|c| c.split_once('=').map_or("<malformed>", |(id, _)| id.trim()))
            .collect();
        f.debug_struct("BioidConfig")
            .field("clients", &ids)
            .field("leeway_s", &self.leeway_s)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("body_timeout_ms", &self.body_timeout_ms)
            .finish()
    }
}

impl BioidConfig {
    /// Rejects settings that cannot work (errors name the client, never its key).
    pub fn validate(&self) -> crate::Result<()> {
        if self.max_body_bytes == 0 || self.body_timeout_ms == 0 {
            return Err(crate::Error::InvalidArgument(
                "bioid.max_body_bytes and bioid.body_timeout_ms must be positive".into(),
            ));
        }
        self.parse_clients().map(|_| ())
    }

    /// The `(id, decoded key)` pairs, validated.
    fn parse_clients(&self) -> crate::Result<Vec<(String, Vec<u8>)>> {
        let bad = |m: String| Error::InvalidArgument(format!("bioid.{m}"));
        if self.leeway_s > MAX_LEEWAY_S {
            return Err(bad(format!(
                "leeway_s must be at most {MAX_LEEWAY_S} seconds"
            )));
        }
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, entry) in self.clients.iter().enumerate() {
            let n = i + 1;
            let (id, key) = entry
                .split_once('=')
                .ok_or_else(|| bad(format!("clients entry {n} is not CLIENT_ID=KEY")))?;
            let (id, key) = (id.trim(), key.trim());
            if id.is_empty() || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(bad(format!(
                    "clients entry {n} has an empty client id or one with blanks"
                )));
            }
            if out.iter().any(|(known, _)| known == id) {
                return Err(bad(format!("clients: client `{id}` is listed twice")));
            }
            let key = STANDARD_PAD_INDIFFERENT
                .decode(key)
                .map_err(|_| bad(format!("clients: the key of client `{id}` is not base64")))?;
            if key.len() < MIN_KEY_BYTES {
                return Err(bad(format!(
                    "clients: the key of client `{id}` is too short: at least {MIN_KEY_BYTES} bytes are required"
                )));
            }
            out.push((id.to_string(), key));
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

/// BWS authentication: `Authorization: Bearer <JWT>`, HS256/HS384/HS512-signed with the
/// base64-decoded key of the client named in `sub` (else `iss`), `aud` = `BWS`, `exp` required
/// and in the future, `nbf` not in the future. Client ids are looked up in constant time; an
/// unknown client is verified against a random key so that it costs what a known one costs.
/// `Debug` shows the client ids only.
pub struct BwsAuth {
    /// Client ids, in configuration order.
    ids: Vec<String>,
    /// SHA-256 of each id (what the lookup compares).
    digests: Vec<[u8; 32]>,
    /// Each client's key.
    keys: Vec<DecodingKey>,
    /// A random key for tokens naming an unknown client.
    decoy: DecodingKey,
    /// Clock skew allowed, seconds.
    leeway_s: u64,
}

impl fmt::Debug for BwsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BwsAuth")
            .field("clients", &self.ids)
            .field("leeway_s", &self.leeway_s)
            .finish_non_exhaustive()
    }
}

impl BwsAuth {
    /// The authenticator of a validated `[bioid]` section.
    pub fn new(cfg: &BioidConfig) -> crate::Result<BwsAuth> {
        let clients = cfg.parse_clients()?;
        let mut decoy = [0u8; 64];
        OsRng.fill_bytes(&mut decoy);
        Ok(BwsAuth {
            digests: clients
                .iter()
                .map(|(id, _)| Sha256::digest(id.as_bytes()).into())
                .collect(),
            keys: clients
                .iter()
                .map(|(_, k)| DecodingKey::from_secret(k))
                .collect(),
            ids: clients.into_iter().map(|(id, _)| id).collect(),
            decoy: DecodingKey::from_secret(&decoy),
            leeway_s: cfg.leeway_s,
        })
    }

    /// How many clients are configured.
    pub fn clients(&self) -> usize {
        self.ids.len()
    }

    /// Index of the client whose id hashes to `digest` (constant time).
    fn find(&self, digest: &[u8; 32]) -> Option<usize> {
        super::auth::ct_position(&self.digests, digest)
    }

    /// The verified client id and claims of `token`; `None` for any refusal.
    fn verify(&self, token: &[u8]) -> Option<(String, Value)> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        // Refuse `none` (not an Algorithm: the header does not parse) and RS/ES before any
        // key lookup.
        let header = jsonwebtoken::decode_header(token).ok()?;
        if !matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return None;
        }
        let unverified = unverified_claims(token)?;
        let client = match (unverified.get("sub"), unverified.get("iss")) {
            (Some(Value::String(s)), _) => s.as_str(),
            (None, Some(Value::String(s))) => s.as_str(),
            _ => return None,
        };
        let digest: [u8; 32] = Sha256::digest(client.as_bytes()).into();
        let index = self.find(&digest);
        let key = index.and_then(|i| self.keys.get(i)).unwrap_or(&self.decoy);
        let mut v = Validation::new(header.alg);
        v.set_audience(&[AUDIENCE]);
        v.leeway = self.leeway_s;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = true;
        v.required_spec_claims = HashSet::from(["exp".to_string(), "aud".to_string()]);
        let data = jsonwebtoken::decode::<Value>(token, key, &v).ok()?;
        let id = self.ids.get(index?)?.clone();
        Some((id, data.claims))
    }
}

/// The claims of a compact JWT before any verification (only to find whose key verifies it).
fn unverified_claims(token: &[u8]) -> Option<Value> {
    let mut parts = token.split(|b| *b == b'.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The token of the single `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(head: &Parts) -> Option<&[u8]> {
    let mut values = head.headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token.as_bytes())
}

impl Authenticator for BwsAuth {
    fn scheme(&self) -> &'static str {
        "bws_jwt"
    }

    fn authenticate(&self, head: &Parts) -> Result<Principal, AuthFailure> {
        let Some(token) = bearer(head) else {
            return Err(AuthFailure::Missing(UNAUTHENTICATED.to_string()));
        };
        let (subject, claims) = self
            .verify(token)
            .ok_or_else(|| AuthFailure::Invalid(UNAUTHENTICATED.to_string()))?;
        Ok(Principal {
            scheme: "bws_jwt",
            subject,
            claims: Some(claims),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The dialect
// ---------------------------------------------------------------------------------------------

/// The BioID BWS dialect: its settings and its authenticator.
pub struct BioId {
    /// The authenticator of the liveness route.
    auth: Arc<BwsAuth>,
    /// The liveness route's body bounds.
    limits: BodyLimits,
}

impl BioId {
    /// The dialect for `cfg` (validated); warns when no client is configured.
    pub fn new(cfg: BioidConfig) -> crate::Result<Arc<Self>> {
        cfg.validate()?;
        let auth = BwsAuth::new(&cfg)?;
        if auth.clients() == 0 {
            tracing::warn!(
                "bioid: no BWS client configured (--bioid-clients, [bioid] clients): every \
                 livenessdetection request is refused with 401"
            );
        }
        Ok(Arc::new(Self {
            auth: Arc::new(auth),
            limits: BodyLimits {
                max_bytes: cfg.max_body_bytes,
                timeout_ms: cfg.body_timeout_ms,
            },
        }))
    }
}

impl Dialect for BioId {
    fn routes(self: Arc<Self>, edge: &Edge) -> Vec<RouteSpec> {
        let d = Mount::Dialect;
        let auth: Arc<dyn Authenticator> = self.auth.clone();
        vec![
            route(
                &self,
                edge,
                Method::POST,
                "/api/v1/livenessdetection",
                LIVENESS_ROUTE,
                d,
                Self::livenessdetection,
            )
            .auth(Some(auth))
            .limits(self.limits),
            route(
                &self,
                edge,
                Method::GET,
                "/livez",
                "bioid.livez",
                d,
                Self::livez,
            )
            .auth(None),
            route(
                &self,
                edge,
                Method::GET,
                "/readyz",
                "bioid.readyz",
                d,
                Self::readyz,
            )
            .auth(None),
        ]
    }
}

impl ErrorTable for BioId {
    fn dialect(&self) -> &'static str {
        DIALECT
    }

    /// A gRPC-status body `{"code","message"}`: 400 (3) for bad requests and bounds, 401 (16)
    /// without a hint, 408 (1) for a late body, 503 (14) when overloaded or loading, 500 (13)
    /// for internal faults (their detail only in the logs). The liveness route's answers carry
    /// the BWS headers.
    fn render(&self, e: &ApiError, route: &RouteInfo) -> HttpResponse {
        let (status, code, message) = match e.class() {
            ErrorClass::BadRequest
            | ErrorClass::PayloadTooLarge
            | ErrorClass::UnsupportedMedia
            | ErrorClass::Unprocessable => (
                StatusCode::BAD_REQUEST,
                grpc::INVALID_ARGUMENT,
                e.to_string(),
            ),
            ErrorClass::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                grpc::UNAUTHENTICATED,
                UNAUTHENTICATED.to_string(),
            ),
            ErrorClass::Timeout => (StatusCode::REQUEST_TIMEOUT, grpc::CANCELLED, e.to_string()),
            ErrorClass::Overloaded | ErrorClass::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                grpc::UNAVAILABLE,
                e.to_string(),
            ),
            ErrorClass::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                grpc::INTERNAL,
                "the server experienced an unexpected error".to_string(),
            ),
        };
        let mut r = json_response(status, &json!({"code": code, "message": message}));
        if route.name == LIVENESS_ROUTE {
            bws_headers(r.headers_mut(), SystemTime::now(), None);
        }
        r
    }
}

/// A plain-text answer (the health probes).
fn text(status: StatusCode, body: &'static str) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

impl BioId {
    /// `GET /livez`: the process serves.
    async fn livez(
        self: Arc<Self>,
        _req: Request<Bytes>,
        _ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        Ok(text(StatusCode::OK, "Healthy"))
    }

    /// `GET /readyz`: 200 once the models serve, 503 before (or after a failure).
    async fn readyz(
        self: Arc<Self>,
        _req: Request<Bytes>,
        ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        Ok(match ctx.app.batcher.status() {
            Status::Ready => text(StatusCode::OK, "Healthy"),
            _ => text(StatusCode::SERVICE_UNAVAILABLE, "Unhealthy"),
        })
    }

    /// `POST /api/v1/livenessdetection`: the answer (or the error), with the BWS headers.
    async fn livenessdetection(
        self: Arc<Self>,
        req: Request<Bytes>,
        ctx: Ctx,
    ) -> Result<HttpResponse, ApiError> {
        let received = SystemTime::now();
        let reference = reference_number(req.headers());
        let mut r = match Self::detect(req, &ctx).await {
            Ok(r) => r,
            Err(e) => respond(&*self, &e, &ctx.route),
        };
        bws_headers(r.headers_mut(), received, reference.as_deref());
        Ok(r)
    }

    /// Parse, analyse, decide, render.
    async fn detect(req: Request<Bytes>, ctx: &Ctx) -> Result<HttpResponse, ApiError> {
        let max_bytes = ctx
            .app
            .batcher
            .engine()
            .map_or(DEFAULT_MAX_IMAGE_BYTES, |e| e.config().decode.max_bytes);
        let images = parse_request(req.body(), max_bytes)?;
        let decider = ctx.app.batcher.decider();
        let inputs: Vec<Input> = images
            .iter()
            .map(|i| Input::Encoded(i.bytes.clone()))
            .collect();
        if images.len() == 1 {
            let opts = AnalyzeOptions {
                calibration: Calibration::Regular,
                liveness: true,
                template: false,
                landmarks: true,
                ignore_quality: false,
            };
            let results = ctx
                .app
                .batcher
                .submit_many(inputs, opts, ctx.route.name)
                .await;
            let processed = analysed(results)?;
            let a = &processed[0].analysis;
            let (live, score, errors, texture) =
                match decider.frame(a, Pipeline::Dual, Calibration::Regular)? {
                    FrameOutcome::Rejected(r) => (false, 0.0, vec![rejection_error(0, r)], 0.0),
                    FrameOutcome::Verdict(v) => {
                        // The engine's verdict rule (Liveness::is_live, FrameCheck::Judged).
                        let live = v.is_live();
                        let errors = if live { vec![] } else { vec![passive_error(0)] };
                        (live, v.probability, errors, v.probability)
                    }
                    FrameOutcome::NoLiveness => {
                        return Err(
                            Error::Internal("no liveness result for the image".into()).into()
                        )
                    }
                };
            let props = vec![image_properties(0, a, texture, 0.0, 0.0)];
            return Ok(answer(
                live && errors.is_empty(),
                score,
                errors,
                props,
                &processed,
            ));
        }
        let engine = ctx
            .app
            .batcher
            .engine()
            .ok_or_else(|| Error::Unavailable("models are loading".into()))?;
        let ecfg = engine.config();
        if !(ecfg.load_descriptor && ecfg.load_landmarks) {
            return Err(Error::Unavailable(
                "two-image liveness needs the descriptor and landmark models (load_descriptor, load_landmarks)"
                    .into(),
            )
            .into());
        }
        let session = ActiveSession {
            cfg: ecfg.active,
            challenge: images[1].tags.clone(),
            calibration: Calibration::Regular,
            passive_threshold: None,
        };
        let results = ctx
            .app
            .batcher
            .submit_many(inputs, session.options(), ctx.route.name)
            .await;
        let processed = analysed(results)?;
        let frames: Vec<&Analysis> = processed.iter().map(|p| &p.analysis).collect();
        let outcome = session.decide(&decider, &frames);
        let errors = active_errors(&session, &outcome, &frames);
        let props: Vec<Value> = frames
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let texture = match outcome.frames.get(i) {
                    Some(FrameCheck::Judged { passive, .. }) => passive.probability,
                    _ => 0.0,
                };
                let motion = outcome
                    .motion
                    .iter()
                    .find(|m| m.frame == i)
                    .map_or(0.0, |m| m.score);
                let direction = match (&outcome.challenge, i) {
                    (Some(c), 1) if c.movement_deg == 0.0 => 360.0,
                    (Some(c), 1) => c.movement_deg,
                    _ => 0.0,
                };
                image_properties(i, a, texture, motion, direction)
            })
            .collect();
        let live = outcome.live && errors.is_empty();
        Ok(answer(live, outcome.score, errors, props, &processed))
    }
}

/// One parsed live image.
#[derive(Debug)]
struct LiveImage {
    /// The decoded image bytes.
    bytes: Bytes,
    /// Its tags, as directions (duplicates dropped, order kept).
    tags: Vec<Direction>,
}

/// The value of `key` in `obj`, matched case-insensitively; two keys that differ only by case
/// are ambiguous. Any other key is refused, naming it.
fn fields<'a>(
    obj: &'a Map<String, Value>,
    known: &[&str],
    what: &str,
) -> Result<Vec<Option<&'a Value>>, ApiError> {
    let mut out: Vec<Option<&Value>> = vec![None; known.len()];
    for (k, v) in obj {
        let Some(i) = known.iter().position(|n| n.eq_ignore_ascii_case(k)) else {
            return Err(ApiError::invalid(format!(
                "unknown field {k:?} in {what}: it takes {}",
                known.join(", ")
            )));
        };
        if out[i].is_some() {
            return Err(ApiError::invalid(format!(
                "field {} is given twice in {what}",
                known[i]
            )));
        }
        out[i] = Some(v);
    }
    Ok(out)
}

/// Parses and bounds a request body: 1..=[`MAX_IMAGES`] images, each base64 within
/// `max_bytes`, at most [`MAX_TAGS`] known tags each.
fn parse_request(body: &[u8], max_bytes: usize) -> Result<Vec<LiveImage>, ApiError> {
    let doc: Value = json(body)?;
    let obj = doc
        .as_object()
        .ok_or_else(|| ApiError::invalid("the request body must be a JSON object"))?;
    let top = fields(obj, &["liveImages"], "the request")?;
    let list = match top[0] {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(format!(
                "liveImages is required: send 1 to {MAX_IMAGES} images"
            )))
        }
        Some(_) => return Err(ApiError::invalid("liveImages must be an array")),
    };
    if list.is_empty() || list.len() > MAX_IMAGES {
        return Err(ApiError::invalid(format!(
            "liveImages has {} images: send 1 to {MAX_IMAGES}",
            list.len()
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let what = format!("liveImages[{i}]");
        let obj = item
            .as_object()
            .ok_or_else(|| ApiError::invalid(format!("{what} must be an object")))?;
        let f = fields(obj, &["image", "tags"], &what)?;
        let image = match f[0] {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => {
                return Err(ApiError::invalid(format!("{what}.image is required")))
            }
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "{what}.image must be a base64 string"
                )))
            }
        };
        let bytes = base64_image(image, max_bytes, &format!("{what}.image"))?;
        let tags = match f[1] {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(t)) => t.as_slice(),
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "{what}.tags must be an array of strings"
                )))
            }
        };
        if tags.len() > MAX_TAGS {
            return Err(ApiError::invalid(format!(
                "{what}.tags has {} tags: at most {MAX_TAGS}",
                tags.len()
            )));
        }
        let mut dirs = Vec::new();
        for t in tags {
            let s = t.as_str().ok_or_else(|| {
                ApiError::invalid(format!("{what}.tags must be an array of strings"))
            })?;
            let d = Direction::parse(s).ok_or_else(|| {
                let shown: String = s.chars().take(MAX_TAG_BYTES).collect();
                ApiError::invalid(format!(
                    "unknown tag {shown:?} in {what}.tags: use up, down, left or right"
                ))
            })?;
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        out.push(LiveImage { bytes, tags: dirs });
    }
    Ok(out)
}

/// Every frame's analysis, or the first failure: a client's fault (an undecodable image) as
/// a bad request naming the image, a server's as itself.
fn analysed(results: Vec<crate::Result<Processed>>) -> Result<Vec<Processed>, ApiError> {
    let mut out = Vec::with_capacity(results.len());
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(p) => out.push(p),
            Err(e) => {
                let class = ErrorClass::of_engine(&e);
                if class.is_server_fault() {
                    return Err(e.into());
                }
                return Err(ApiError::Dialect(DialectError {
                    kind: e.kind(),
                    class,
                    message: format!("liveImages[{i}].image: {e}"),
                    detail: String::new(),
                }));
            }
        }
    }
    Ok(out)
}

/// A BWS error entry.
fn error(code: &str, message: String) -> Value {
    json!({"errorCode": code, "message": message})
}

/// The BWS error of a quality-gate rejection of image `i`.
fn rejection_error(i: usize, r: &RejectionInfo) -> Value {
    rejection_code_error(i, r.code, &r.message)
}

fn rejection_code_error(i: usize, code: Rejection, message: &str) -> Value {
    match code {
        Rejection::TooManyFaces => error(
            "MultipleFacesFound",
            format!("More than one face was found in image {i}: {message}"),
        ),
        Rejection::FaceCropped | Rejection::FaceCloseToBorder | Rejection::FaceTooClose => error(
            "ThumbnailExtractionFailed",
            format!("The face in image {i} could not be extracted: {message}"),
        ),
        Rejection::FaceNotFound
        | Rejection::FaceTooSmall
        | Rejection::FaceAngleTooLarge
        | Rejection::FaceTooBlurry
        | Rejection::FaceBadExposure => error(
            "FaceNotFound",
            format!("No suitable face was found in image {i}: {message}"),
        ),
    }
}

/// The BWS error of image `i`'s passive verdict being a spoof.
fn passive_error(i: usize) -> Value {
    error(
        "RejectedByPassiveLiveDetection",
        format!("Image {i} seems not to be recorded from a live person"),
    )
}

/// The BWS errors of an active session, each from the check it names, in frame order then
/// motion, same person and challenge.
fn active_errors(session: &ActiveSession, o: &ActiveOutcome, frames: &[&Analysis]) -> Vec<Value> {
    let mut errors = Vec::new();
    for (i, c) in o.frames.iter().enumerate() {
        match c {
            FrameCheck::Rejected(code) => {
                let message = frames
                    .get(i)
                    .and_then(|a| a.rejection.as_ref())
                    .map_or_else(|| code.message().to_string(), |r| r.message.clone());
                errors.push(rejection_code_error(i, *code, &message));
            }
            FrameCheck::Judged { live: false, .. } => errors.push(passive_error(i)),
            FrameCheck::Judged { live: true, .. } => {}
            FrameCheck::Incomplete => errors.push(error(
                "FaceNotFound",
                format!("No suitable face was found in image {i}: its landmarks or template could not be measured"),
            )),
        }
    }
    for m in o.motion.iter().filter(|m| !m.live) {
        let what = if m.motion < session.cfg.min_motion {
            "the face did not move"
        } else {
            "the face moved like a flat picture"
        };
        errors.push(error(
            "RejectedByActiveLiveDetection",
            format!(
                "The 3D detector observed unnatural motion between images {} and {}: {what}",
                m.frame - 1,
                m.frame
            ),
        ));
    }
    if o.same_person.is_some_and(|s| !s.same) {
        errors.push(error(
            "RejectedByActiveLiveDetection",
            "The images show different persons".to_string(),
        ));
    }
    if let Some(c) = o.challenge.as_ref().filter(|c| !c.passed) {
        let asked: Vec<&str> = c.asked.iter().map(|d| direction_name(*d)).collect();
        errors.push(error(
            "RejectedByChallengeResponse",
            format!(
                "The head did not move as requested ({}) between the images",
                asked.join(", ")
            ),
        ));
    }
    if !o.live && errors.is_empty() {
        errors.push(error(
            "RejectedByActiveLiveDetection",
            "The active liveness detection did not find a live person".to_string(),
        ));
    }
    errors
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Up => "up",
        Direction::Down => "down",
        Direction::Left => "left",
        Direction::Right => "right",
    }
}

/// Where a quality check sits in the engine's gate (`engine::quality::assess` tests in this
/// order and reports the first failure): `None` for FaceNotFound, which precedes them all.
fn gate_rank(r: Rejection) -> Option<u8> {
    match r {
        Rejection::FaceNotFound => None,
        Rejection::TooManyFaces => Some(0),
        Rejection::FaceTooSmall => Some(1),
        Rejection::FaceCropped | Rejection::FaceCloseToBorder | Rejection::FaceTooClose => Some(2),
        Rejection::FaceAngleTooLarge | Rejection::FaceTooBlurry | Rejection::FaceBadExposure => {
            Some(3)
        }
    }
}

/// `qualityAssessments`: `ImageSize` (the face is large enough), `FullyVisibleFace` (inside
/// the image, not too close) and `SuitableFace` (found, frontal, sharp, well exposed), each 1
/// when the engine's gate passed it, 0 when it failed (with the gate's message) or did not get
/// to it (an earlier check failed).
fn quality_assessments(a: &Analysis) -> Vec<Value> {
    let checks: [(&str, u8, &str); 3] = [
        ("ImageSize", 1, "The face is large enough"),
        ("FullyVisibleFace", 2, "The face is fully visible"),
        ("SuitableFace", 3, "A suitable face was found"),
    ];
    checks
        .iter()
        .map(|&(check, rank, ok)| {
            let (score, message) = match &a.rejection {
                None if a.quality.is_some() => (1.0, ok.to_string()),
                None => (0.0, "Not assessed".to_string()),
                Some(r) => match gate_rank(r.code) {
                    None if check == "SuitableFace" => (0.0, r.message.clone()),
                    Some(k) if k == rank => (0.0, r.message.clone()),
                    Some(k) if k > rank => (1.0, ok.to_string()),
                    _ => (0.0, format!("Not assessed: {}", r.message)),
                },
            };
            json!({"check": check, "score": score, "message": message})
        })
        .collect()
}

/// One entry of `imageProperties`.
fn image_properties(i: usize, a: &Analysis, texture: f32, motion: f32, direction: f32) -> Value {
    let faces: Vec<Value> = eyes(a)
        .map(|(left, right)| {
            vec![json!({
                "leftEye": {"x": left[0], "y": left[1]},
                "rightEye": {"x": right[0], "y": right[1]},
                "textureLivenessScore": texture,
                "motionLivenessScore": motion,
                "movementDirection": direction,
            })]
        })
        .unwrap_or_default();
    json!({
        "rotated": 0,
        "faces": faces,
        "qualityScore": a.quality.as_ref().map_or(0.0, |q| q.score),
        "qualityAssessments": quality_assessments(a),
        "frameNumber": i,
    })
}

/// The judged face's (person's left, person's right) eye centres, image pixels: the
/// landmarks' eye on the image's right is the person's left. Falls back to the detector's
/// five points without landmarks; `None` when no face was selected.
fn eyes(a: &Analysis) -> Option<([f32; 2], [f32; 2])> {
    if let Some(s) = &a.shape {
        return Some((s.eye_centers[1], s.eye_centers[0]));
    }
    let f = a.faces.get(a.selected_face?)?;
    let (p, q) = (f.landmarks[0], f.landmarks[1]);
    Some(if p[0] >= q[0] { (p, q) } else { (q, p) })
}

/// The 200 answer, with the largest queue and inference times of the images.
fn answer(
    live: bool,
    score: f32,
    errors: Vec<Value>,
    props: Vec<Value>,
    processed: &[Processed],
) -> HttpResponse {
    for e in &errors {
        tracing::debug!(code = %e["errorCode"], "bioid: not live");
    }
    let mut r = json_response(
        StatusCode::OK,
        &json!({
            "status": "SUCCEEDED",
            "errors": errors,
            "imageProperties": props,
            "live": live,
            "livenessScore": if score.is_finite() { score } else { 0.0 },
        }),
    );
    let (q, i) = max_times(processed);
    timing_headers(&mut r, q, i);
    r
}

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

/// The request's `reference-number`, when it is at most [`MAX_REFERENCE_BYTES`] printable
/// ASCII characters.
fn reference_number(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("reference-number")?.to_str().ok()?;
    (!v.is_empty()
        && v.len() <= MAX_REFERENCE_BYTES
        && v.bytes().all(|b| (0x20..0x7f).contains(&b)))
    .then(|| v.to_string())
}

/// Sets `jobid` (a new GUID), `bws-version`, `date` (of `received`) and `reference-number`.
fn bws_headers(h: &mut HeaderMap, received: SystemTime, reference: Option<&str>) {
    let pairs = [
        ("jobid", Some(job_id())),
        ("bws-version", Some(env!("CARGO_PKG_VERSION").to_string())),
        ("date", Some(imf_fixdate(received))),
        ("reference-number", reference.map(str::to_string)),
    ];
    for (name, value) in pairs {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(name, v);
        }
    }
}

/// A random (version 4) GUID, `8-4-4-4-12` lower-case hex.
pub fn job_id() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `t` as an IMF-fixdate (RFC 9110 §5.6.7): `Tue, 01 Dec 2026 09:30:00 GMT`.
pub fn imf_fixdate(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::bi::civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        imf_fixdate(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn imf_fixdate_formats_known_instants() {
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(at(1_796_117_400), "Tue, 01 Dec 2026 09:30:00 GMT");
    }

    #[test]
    fn job_ids_are_v4_guids() {
        let (a, b) = (job_id(), job_id());
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn clients_are_validated_without_showing_keys() {
        let key = STANDARD_PAD_INDIFFERENT.encode([7u8; 32]);
        let cfg = |clients: Vec<String>| BioidConfig {
            clients,
            ..BioidConfig::default()
        };
        assert!(cfg(vec![format!("app={key}")]).validate().is_ok());
        let short = STANDARD_PAD_INDIFFERENT.encode([7u8; 8]);
        for bad in [
            vec![format!("app={short}")],
            vec!["app".to_string()],
            vec![format!("={key}")],
            vec![format!("app=not base64!")],
            vec![format!("app={key}"), format!("app={key}")],
        ] {
            let e = cfg(bad).validate().unwrap_err().to_string();
            assert!(!e.contains(&key) && !e.contains(&short), "{e}");
        }
        let shown = format!("{:?}", cfg(vec![format!("app={key}")]));
        assert!(shown.contains("app") && !shown.contains(&key), "{shown}");
        let late = BioidConfig {
            leeway_s: MAX_LEEWAY_S + 1,
            ..BioidConfig::default()
        };
        assert!(late.validate().is_err());
    }

    #[test]
    fn requests_are_bounded_and_read_case_insensitively() {
        let img = STANDARD_PAD_INDIFFERENT.encode(b"\xff\xd8\xffjpeg");
        let ok = format!(
            r#"{{"LiveImages":[{{"Image":"{img}"}},{{"image":"{img}","Tags":["UP","up","left"]}}]}}"#
        );
        let parsed = parse_request(ok.as_bytes(), 100).unwrap();
        assert_eq!(parsed[1].tags, [Direction::Up, Direction::Left]);
        let err = |body: String| parse_request(body.as_bytes(), 100).unwrap_err().to_string();
        assert!(err(r#"{"liveImages":[]}"#.into()).contains("1 to 2"));
        assert!(err(format!(
            r#"{{"liveImages":[{{"image":"{img}","tags":["sideways"]}}]}}"#
        ))
        .contains("sideways"));
        assert!(err(format!(
            r#"{{"liveImages":[{{"image":"{img}","tags":{}}}]}}"#,
            serde_json::to_string(&vec!["up"; 9]).unwrap()
        ))
        .contains("at most 8"));
        assert!(err(format!(
            r#"{{"liveImages":[{{"image":"{img}","IMAGE":"{img}"}}]}}"#
        ))
        .contains("twice"));
        assert!(err(r#"{"images":[]}"#.into()).contains("unknown field"));
        assert_eq!(
            parse_request(
                format!(r#"{{"liveImages":[{{"image":"{img}"}}]}}"#).as_bytes(),
                4
            )
            .err()
            .map(|e| e.kind()),
            Some("image_too_large")
        );
    }
}
