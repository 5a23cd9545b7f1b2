//! Configuration: embedded defaults, overridden by an optional TOML file, overridden by clap
//! flags (each with an environment-variable fallback).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use serde::{Deserialize, Serialize};

use crate::batcher::BatcherConfig;
use crate::engine::EngineConfig;
use crate::{Error, Result};

/// Server settings: the `[server]` section of the TOML file (see docs/operations.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the listener binds, `HOST:PORT`.
    pub listen: String,
    /// Largest accepted request body, bytes (a route may set its own).
    pub max_body_bytes: usize,
    /// Longest wait for a request's headers, ms (slow clients are disconnected).
    pub header_timeout_ms: u64,
    /// Longest wait for a request's body once its headers arrived, ms (answered with the
    /// dialect's timeout error; a route may set its own).
    pub body_timeout_ms: u64,
    /// Most open client connections; at the cap the most idle connection is closed for a new
    /// one (see `server::conns`).
    pub max_connections: usize,
    /// Most open connections of one peer address.
    pub max_connections_per_peer: usize,
    /// Most request body bytes held at once over all requests (reserved before a body is
    /// read: its Content-Length, else its route's limit); a request that does not fit is
    /// refused as overloaded at once.
    pub max_body_bytes_held: u64,
    /// Longest time from accepting a connection to its first complete request head, ms (h1
    /// and h2; a silent socket is closed).
    pub first_request_timeout_ms: u64,
    /// Longest time a connection may stay open without a request in flight, ms.
    pub idle_timeout_ms: u64,
    /// Longest wait for in-flight requests after a shutdown signal, ms.
    pub drain_timeout_ms: u64,
    /// Owner dialect of each bare path claimed by several dialects (`"/api_version" =
    /// "iad"`), over the dialects' own defaults; every dialect stays reachable under its own
    /// prefix.
    pub bare_owners: BTreeMap<String, String>,
    /// Most images per network batch (1 disables batching).
    pub max_batch: usize,
    /// Longest a detector batch shorter than `max_batch` waits for more images, ms.
    pub max_queue_delay_ms: u64,
    /// Wait only while other admitted images are still decoding.
    pub adaptive_delay: bool,
    /// Most images inside the batcher at once (decoding, queued or running).
    pub queue_bound: usize,
    /// Most images decoded at the same time.
    pub prepare_threads: usize,
    /// Nice steps the async runtime's threads (network, refusals) run below the inference and
    /// decoding threads, 0..=19 (see `server::priority`); 0 keeps them level.
    pub network_nice: i32,
    /// Cross-origin requests from browsers (`[server.cors]`; off until origins are listed).
    pub cors: CorsConfig,
    /// TLS on the listener (`[server.tls]`; off until a certificate and key are set).
    pub tls: TlsConfig,
    /// Serve the OpenAPI document (`/openapi.json`) and Swagger UI (`/swagger-ui/index.html`).
    pub docs: bool,
    /// Serve the capture console (`/console/`).
    pub console: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let b = BatcherConfig::default();
        Self {
            listen: "0.0.0.0:8080".into(),
            max_body_bytes: 32 << 20,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 1024,
            max_connections_per_peer: 1024,
            max_body_bytes_held: 2 << 30,
            first_request_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            drain_timeout_ms: 30_000,
            bare_owners: BTreeMap::new(),
            max_batch: b.max_batch,
            max_queue_delay_ms: b.max_queue_delay_ms,
            adaptive_delay: b.adaptive_delay,
            queue_bound: b.queue_bound,
            prepare_threads: b.prepare_threads,
            network_nice: 7,
            cors: CorsConfig::default(),
            tls: TlsConfig::default(),
            docs: true,
            console: true,
        }
    }
}

impl ServerConfig {
    /// The batching settings of this section.
    pub fn batcher(&self) -> BatcherConfig {
        BatcherConfig {
            max_batch: self.max_batch,
            max_queue_delay_ms: self.max_queue_delay_ms,
            adaptive_delay: self.adaptive_delay,
            queue_bound: self.queue_bound,
            prepare_threads: self.prepare_threads,
        }
    }
}

/// Server options of `facegate serve` (flags and environment override the `[server]` section).
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// Listen address HOST:PORT [default: 0.0.0.0:8080].
    #[arg(long, env = "FACEGATE_LISTEN")]
    pub listen: Option<String>,
    /// Most images per network batch; 1 disables batching [default: 4].
    #[arg(long, env = "FACEGATE_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Longest a short detector batch waits for more images, ms [default: 3].
    #[arg(long, env = "FACEGATE_MAX_QUEUE_DELAY_MS")]
    pub max_queue_delay_ms: Option<u64>,
    /// Wait for a fuller batch only while other images are still decoding [default: true].
    #[arg(long, env = "FACEGATE_ADAPTIVE_DELAY")]
    pub adaptive_delay: Option<bool>,
    /// Most images inside the batcher at once; more get 429 [default: 256].
    #[arg(long, env = "FACEGATE_QUEUE_BOUND")]
    pub queue_bound: Option<usize>,
    /// Most images decoded at the same time [default: number of cores].
    #[arg(long, env = "FACEGATE_PREPARE_THREADS")]
    pub prepare_threads: Option<usize>,
    /// Nice steps the network threads run below the inference threads, 0..=19 [default: 7].
    #[arg(long, env = "FACEGATE_NETWORK_NICE")]
    pub network_nice: Option<i32>,
    /// Largest accepted request body, bytes [default: 33554432].
    #[arg(long, env = "FACEGATE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Longest wait for request headers, ms [default: 10000].
    #[arg(long, env = "FACEGATE_HEADER_TIMEOUT_MS")]
    pub header_timeout_ms: Option<u64>,
    /// Longest wait for a request body after its headers, ms [default: 30000].
    #[arg(long, env = "FACEGATE_BODY_TIMEOUT_MS")]
    pub body_timeout_ms: Option<u64>,
    /// Most open client connections [default: 1024].
    #[arg(long, env = "FACEGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most open connections of one peer address [default: 1024].
    #[arg(long, env = "FACEGATE_MAX_CONNECTIONS_PER_PEER")]
    pub max_connections_per_peer: Option<usize>,
    /// Most request body bytes held at once over all requests [default: 2147483648].
    #[arg(long, env = "FACEGATE_MAX_BODY_BYTES_HELD")]
    pub max_body_bytes_held: Option<u64>,
    /// Longest time from accept to a connection's first complete request head, ms
    /// [default: 5000].
    #[arg(long, env = "FACEGATE_FIRST_REQUEST_TIMEOUT_MS")]
    pub first_request_timeout_ms: Option<u64>,
    /// Longest time a connection stays open without a request in flight, ms [default: 60000].
    #[arg(long, env = "FACEGATE_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Longest wait for in-flight requests on shutdown, ms [default: 30000].
    #[arg(long, env = "FACEGATE_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Owner of a bare path claimed by several dialects, PATH=DIALECT (repeatable; the
    /// environment variable takes a comma-separated list) [default: the dialects' own:
    /// /api_version=idlive, /bi_records=idlive].
    #[arg(
        long = "bare-owner",
        env = "FACEGATE_BARE_OWNERS",
        value_delimiter = ',',
        value_name = "PATH=DIALECT"
    )]
    pub bare_owner: Vec<String>,
    /// Origin browsers may call from (`scheme://host[:port]`, or `*`), repeatable or
    /// comma-separated; replaces `server.cors.allowed_origins` [default: none, CORS off].
    #[arg(
        long,
        env = "FACEGATE_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub cors_origin: Vec<String>,
    /// Serve `/openapi.json` and Swagger UI at `/swagger-ui/index.html` [default: true].
    #[arg(long, env = "FACEGATE_DOCS", value_name = "BOOL")]
    pub docs: Option<bool>,
    /// Serve the capture console at `/console/` (false for locked-down deployments)
    /// [default: true].
    #[arg(long, env = "FACEGATE_CONSOLE", value_name = "BOOL")]
    pub console: Option<bool>,
    /// PEM certificate chain for TLS (with --tls-key); reloaded on SIGHUP.
    #[arg(long, env = "FACEGATE_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert); reloaded on SIGHUP.
    #[arg(long, env = "FACEGATE_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of the CAs whose client certificates are accepted: every client must present
    /// one (mutual TLS).
    #[arg(long, env = "FACEGATE_TLS_CLIENT_CA", value_name = "PEM")]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServerArgs {
    /// Applies the flags/environment on top of `cfg` (defaults or the `[server]` section).
    pub fn apply(&self, mut cfg: ServerConfig) -> Result<ServerConfig> {
        if let Some(v) = &self.listen {
            cfg.listen = v.clone();
        }
        if let Some(v) = self.max_batch {
            cfg.max_batch = v;
        }
        if let Some(v) = self.max_queue_delay_ms {
            cfg.max_queue_delay_ms = v;
        }
        if let Some(v) = self.adaptive_delay {
            cfg.adaptive_delay = v;
        }
        if let Some(v) = self.queue_bound {
            cfg.queue_bound = v;
        }
        if let Some(v) = self.prepare_threads {
            cfg.prepare_threads = v;
        }
        if let Some(v) = self.network_nice {
            cfg.network_nice = v;
        }
        if let Some(v) = self.max_body_bytes {
            cfg.max_body_bytes = v;
        }
        if let Some(v) = self.header_timeout_ms {
            cfg.header_timeout_ms = v;
        }
        if let Some(v) = self.body_timeout_ms {
            cfg.body_timeout_ms = v;
        }
        if let Some(v) = self.max_connections {
            cfg.max_connections = v;
        }
        if let Some(v) = self.max_connections_per_peer {
            cfg.max_connections_per_peer = v;
        }
        if let Some(v) = self.max_body_bytes_held {
            cfg.max_body_bytes_held = v;
        }
        if let Some(v) = self.first_request_timeout_ms {
            cfg.first_request_timeout_ms = v;
        }
        if let Some(v) = self.idle_timeout_ms {
            cfg.idle_timeout_ms = v;
        }
        if let Some(v) = self.drain_timeout_ms {
            cfg.drain_timeout_ms = v;
        }
        if let Some(v) = self.docs {
            cfg.docs = v;
        }
        if let Some(v) = self.console {
            cfg.console = v;
        }
        for item in self
            .bare_owner
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            let (path, dialect) = item.split_once('=').ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "--bare-owner {item:?}: expected PATH=DIALECT, e.g. /api_version=iad"
                ))
            })?;
            cfg.bare_owners
                .insert(path.trim().to_string(), dialect.trim().to_string());
        }
        if let Some(v) = &self.tls_cert {
            cfg.tls.cert = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            cfg.tls.key = Some(v.clone());
        }
        if let Some(v) = &self.tls_client_ca {
            cfg.tls.client_ca = Some(v.clone());
        }
        if !self.cors_origin.is_empty() {
            cfg.cors.allowed_origins = self
                .cors_origin
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        validate_server(&cfg)?;
        Ok(cfg)
    }
}

/// Longest preflight cache a configuration may ask for, s (a day).
pub const MAX_AGE_LIMIT_S: u32 = 86_400;

/// The `[server.cors]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins browsers may call from, each `scheme://host[:port]` exactly as the browser
    /// sends it, or `"*"` for any origin. Empty (the default): CORS is off.
    pub allowed_origins: Vec<String>,
    /// Methods a preflight may be granted (each path grants only the methods it has).
    pub allowed_methods: Vec<String>,
    /// Request headers pages may send (`Access-Control-Allow-Headers`).
    pub allowed_headers: Vec<String>,
    /// Response headers pages may read besides the safelisted ones.
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer, s (at most a day).
    pub max_age_s: u32,
    /// Let pages send cookies or HTTP authentication (`Access-Control-Allow-Credentials`);
    /// refused together with `"*"`.
    pub allow_credentials: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: ["GET", "POST", "PUT", "DELETE"].map(String::from).to_vec(),
            allowed_headers: ["authorization", "content-type", "x-api-key", "x-request-id"]
                .map(String::from)
                .to_vec(),
            expose_headers: vec!["x-request-id".into()],
            max_age_s: 600,
            allow_credentials: false,
        }
    }
}

impl CorsConfig {
    /// Fails naming the offending entry for an origin that is not `scheme://host[:port]`, a
    /// method or header name that is not one, `"*"` not alone or with credentials, or a cache
    /// longer than a day.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.allowed_origins.iter().any(|o| o.trim() == "*") {
            if self.allowed_origins.len() > 1 {
                return bad("server.cors.allowed_origins: \"*\" stands alone".into());
            }
            if self.allow_credentials {
                return bad(
                    "server.cors: \"*\" allows any origin and cannot go with allow_credentials"
                        .into(),
                );
            }
        } else if let Some(o) = self
            .allowed_origins
            .iter()
            .find(|o| parse_origin(o).is_none())
        {
            return bad(format!(
                "server.cors.allowed_origins: {o:?} is not an origin \
                 (scheme://host[:port], http or https, no path)"
            ));
        }
        if let Some(m) = self
            .allowed_methods
            .iter()
            .find(|m| hyper::Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).is_err())
        {
            return bad(format!(
                "server.cors.allowed_methods: {m:?} is not a method"
            ));
        }
        for (what, list) in [
            ("allowed_headers", &self.allowed_headers),
            ("expose_headers", &self.expose_headers),
        ] {
            if let Some(h) = list
                .iter()
                .find(|h| hyper::header::HeaderName::from_bytes(h.trim().as_bytes()).is_err())
            {
                return bad(format!("server.cors.{what}: {h:?} is not valid"));
            }
        }
        if self.max_age_s > MAX_AGE_LIMIT_S {
            return bad(format!(
                "server.cors.max_age_s: {} is above {MAX_AGE_LIMIT_S} (a day)",
                self.max_age_s
            ));
        }
        Ok(())
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, http or https, no path, no
/// user info; lower-cased.
pub fn parse_origin(s: &str) -> Option<String> {
    let s = s.trim();
    let (scheme, rest) = s.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") || rest.is_empty() {
        return None;
    }
    let authority: hyper::http::uri::Authority = rest.parse().ok()?;
    if authority.as_str() != rest || rest.contains('@') || authority.host().is_empty() {
        return None;
    }
    Some(format!("{scheme}://{}", rest.to_ascii_lowercase()))
}

/// The `[server.tls]` section: TLS is on when `cert` and `key` are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// PEM bundle of the CAs whose client certificates are accepted; set, every client must
    /// present one (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsConfig {
    /// Fails unless `cert` and `key` are both set or both unset, and `client_ca` comes with
    /// them.
    pub fn validate(&self) -> Result<()> {
        match (&self.cert, &self.key) {
            (Some(_), None) | (None, Some(_)) => Err(Error::InvalidArgument(
                "server.tls: cert and key go together (--tls-cert, --tls-key)".into(),
            )),
            (None, None) if self.client_ca.is_some() => Err(Error::InvalidArgument(
                "server.tls.client_ca needs cert and key: client certificates are checked over TLS"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

/// A configuration file read once: its TOML table, from which each section is taken out and
/// deserialised into its own type (unknown keys are errors naming the key and section).
#[derive(Debug)]
pub struct ConfigFile {
    /// Where it was read from (for messages).
    path: String,
    /// The parsed file, less the sections already taken.
    table: toml::Table,
}

impl ConfigFile {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ConfigFile> {
        let table = toml::from_str::<toml::Table>(text)
            .map_err(|e| Error::InvalidArgument(format!("config file {origin}: {e}")))?;
        Ok(ConfigFile {
            path: origin.to_string(),
            table,
        })
    }

    /// Reads and parses `path`.
    pub fn read(path: &std::path::Path) -> Result<ConfigFile> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidArgument(format!("config file {origin}: {e}")))?;
        Self::parse(&text, &origin)
    }

    /// Takes section `name` out (its defaults when absent; any subset of its keys otherwise).
    pub fn section<T: serde::de::DeserializeOwned + Default>(&mut self, name: &str) -> Result<T> {
        match self.table.remove(name) {
            None => Ok(T::default()),
            Some(v) => v.try_into().map_err(|e: toml::de::Error| {
                Error::InvalidArgument(format!(
                    "config file {}: [{name}]: {}",
                    self.path,
                    e.message()
                ))
            }),
        }
    }

    /// Deserialises what is left (the top-level keys) into `T`; `sections` are named in the
    /// error for an unknown key, as the other things it could have been.
    pub fn rest<T: serde::de::DeserializeOwned>(self, sections: &[&str]) -> Result<T> {
        toml::Value::Table(self.table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                Error::InvalidArgument(format!(
                    "config file {}: {} (sections: {})",
                    self.path,
                    e.message(),
                    sections.join(", ")
                ))
            })
    }
}

/// Rejects server settings that cannot work.
pub fn validate_server(cfg: &ServerConfig) -> Result<()> {
    cfg.cors.validate()?;
    cfg.tls.validate()?;
    let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
    if cfg.listen.parse::<std::net::SocketAddr>().is_err() {
        return bad("server.listen must be HOST:PORT with a numeric host, e.g. 0.0.0.0:8080");
    }
    if cfg.max_batch == 0 || cfg.max_batch > 256 {
        return bad("server.max_batch must be within 1..=256");
    }
    if cfg.queue_bound == 0 || cfg.prepare_threads == 0 {
        return bad("server.queue_bound and server.prepare_threads must be positive");
    }
    if !(0..=19).contains(&cfg.network_nice) {
        return bad("server.network_nice must be within 0..=19");
    }
    if cfg.max_body_bytes_held < cfg.max_body_bytes as u64 {
        return bad("server.max_body_bytes_held must be at least server.max_body_bytes");
    }
    if cfg.max_body_bytes == 0
        || cfg.max_connections == 0
        || cfg.max_connections_per_peer == 0
        || cfg.max_body_bytes_held == 0
        || cfg.first_request_timeout_ms == 0
        || cfg.idle_timeout_ms == 0
        || cfg.header_timeout_ms == 0
        || cfg.body_timeout_ms == 0
    {
        return bad("server.max_body_bytes, server.max_connections, server.max_connections_per_peer, server.max_body_bytes_held, server.first_request_timeout_ms, server.idle_timeout_ms, server.header_timeout_ms and server.body_timeout_ms must be positive");
    }
    for (path, dialect) in &cfg.bare_owners {
        if !path.starts_with('/') || dialect.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "server.bare_owners: {path:?} = {dialect:?} must map a path starting with / to a dialect"
            )));
        }
    }
    Ok(())
}

/// Engine options shared by every subcommand that loads the networks.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// TOML file with any subset of the engine configuration (see docs/operations.md).
    #[arg(long, env = "FACEGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Folder holding the model files of models/manifest.toml [default: models].
    #[arg(long, env = "FACEGATE_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Longer side of the copy the detector sees, pixels [default: 320].
    #[arg(long, env = "FACEGATE_DET_MAX_SIDE")]
    pub det_max_side: Option<u32>,
    /// Minimum detector score for a face [default: 0.8].
    #[arg(long, env = "FACEGATE_DET_SCORE")]
    pub det_score: Option<f32>,
    /// Largest accepted encoded image, bytes [default: 15728640].
    #[arg(long, env = "FACEGATE_MAX_IMAGE_BYTES")]
    pub max_image_bytes: Option<usize>,
    /// Largest accepted decoded image, width*height pixels [default: 40000000].
    #[arg(long, env = "FACEGATE_MAX_IMAGE_PIXELS")]
    pub max_image_pixels: Option<u64>,
    /// Decode every JPEG at full resolution (by default a large one is reduced 2, 4 or 8
    /// times in the DCT domain, `decode.reduce`).
    #[arg(long, env = "FACEGATE_NO_REDUCED_DECODE")]
    pub no_reduced_decode: bool,
    /// Do not load the face descriptor (no templates or matching).
    #[arg(long, env = "FACEGATE_NO_DESCRIPTOR")]
    pub no_descriptor: bool,
    /// Threads that run the networks, 0 for one per core [default: 0].
    #[arg(long, env = "FACEGATE_THREADS")]
    pub threads: Option<usize>,
    /// Device the networks run on: auto, cpu, cuda or cuda:N; one that does not open falls
    /// back to CPU, saying why in the log and /health [default: auto].
    #[arg(long, env = "FACEGATE_DEVICE")]
    pub device: Option<crate::nn::device::DeviceChoice>,
    /// Precision of the networks on a GPU: f32 or f16 (the CPU computes in f32)
    /// [default: f32].
    #[arg(long, env = "FACEGATE_PRECISION")]
    pub precision: Option<crate::nn::device::Precision>,
}

impl EngineArgs {
    /// Applies the flags/environment on top of `cfg` (defaults or the file's engine keys).
    pub fn apply(&self, mut cfg: EngineConfig) -> Result<EngineConfig> {
        if let Some(v) = &self.models_dir {
            cfg.models_dir = v.clone();
        }
        if let Some(v) = self.det_max_side {
            cfg.detection.max_side = v;
        }
        if let Some(v) = self.det_score {
            cfg.detection.score_threshold = v;
        }
        if let Some(v) = self.max_image_bytes {
            cfg.decode.max_bytes = v;
        }
        if let Some(v) = self.max_image_pixels {
            cfg.decode.max_pixels = v;
        }
        if self.no_reduced_decode {
            cfg.decode.reduce = false;
        }
        if self.no_descriptor {
            cfg.load_descriptor = false;
        }
        if let Some(v) = self.threads {
            cfg.threads = v;
        }
        if let Some(v) = self.device {
            cfg.device = v;
        }
        if let Some(v) = self.precision {
            cfg.precision = v;
        }
        validate(&cfg)?;
        Ok(cfg)
    }
}

/// Rejects settings that cannot work.
pub fn validate(cfg: &EngineConfig) -> Result<()> {
    cfg.active.validate()?;
    cfg.autocapture.validate()?;
    cfg.workflows.validate()?;
    let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
    if !(32..=4096).contains(&cfg.detection.max_side) {
        return bad("detection.max_side must be within 32..=4096");
    }
    if !(0.0..1.0).contains(&cfg.detection.score_threshold) {
        return bad("detection.score_threshold must be within 0..1");
    }
    if cfg.decode.max_bytes == 0 || cfg.decode.max_pixels == 0 {
        return bad("decode limits must be positive");
    }
    if cfg.decode.reduced_min_side < cfg.detection.max_side {
        return bad("decode.reduced_min_side must be at least detection.max_side (the detector's copy is made from the reduced image)");
    }
    if !(64..=4096).contains(&cfg.decode.reduced_min_face_px) {
        return bad("decode.reduced_min_face_px must be within 64..=4096");
    }
    for p in [
        cfg.calibrations.soft,
        cfg.calibrations.regular,
        cfg.calibrations.hardened,
    ] {
        if p.temperature.is_nan() || p.temperature <= 0.0 || !p.offset.is_finite() {
            return bad("calibration temperatures must be positive and offsets finite");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_come_out_with_their_defaults_and_unknown_keys_are_named() {
        let mut f = ConfigFile::parse(
            "threads = 3\n[decode]\nmax_bytes = 1000\n[server]\nmax_batch = 2\n",
            "test.toml",
        )
        .unwrap();
        let server: ServerConfig = f.section("server").unwrap();
        assert_eq!(server.max_batch, 2);
        assert_eq!(server.listen, ServerConfig::default().listen);
        let engine: EngineConfig = f.rest(&["server"]).unwrap();
        assert_eq!((engine.threads, engine.decode.max_bytes), (3, 1000));
        assert_eq!(
            engine.decode.max_pixels,
            crate::preprocess::decode::DecodeLimits::default().max_pixels
        );

        let mut f = ConfigFile::parse("[server]\nmax_bacth = 2\n", "test.toml").unwrap();
        let e = f.section::<ServerConfig>("server").unwrap_err().to_string();
        assert!(e.contains("max_bacth") && e.contains("[server]"), "{e}");
        let f = ConfigFile::parse("detectoin = 1\n", "test.toml").unwrap();
        let e = f
            .rest::<EngineConfig>(&["server", "bi"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("detectoin") && e.contains("sections: server, bi"),
            "{e}"
        );
        let f = ConfigFile::parse("[detection]\nmax_sid = 1\n", "test.toml").unwrap();
        let e = f.rest::<EngineConfig>(&[]).unwrap_err().to_string();
        assert!(e.contains("max_sid"), "{e}");
    }

    #[test]
    fn a_partial_calibration_profile_keeps_its_own_defaults() {
        let f = ConfigFile::parse("[calibrations.regular]\ntemperature = 2.0\n", "t").unwrap();
        let cfg: EngineConfig = f.rest(&[]).unwrap();
        let def = EngineConfig::default().calibrations;
        assert_eq!(cfg.calibrations.regular.temperature, 2.0);
        assert_eq!(cfg.calibrations.regular.offset, def.regular.offset);
        assert_eq!(cfg.calibrations.hardened, def.hardened);
        let f = ConfigFile::parse("[calibrations.regular]\nofset = 2.0\n", "t").unwrap();
        assert!(f
            .rest::<EngineConfig>(&[])
            .unwrap_err()
            .to_string()
            .contains("ofset"));
    }

    #[test]
    fn flags_override_the_server_section() {
        let args = ServerArgs {
            max_batch: Some(1),
            bare_owner: vec!["/api_version=iad".into(), " /x = knomi ".into()],
            ..ServerArgs::default()
        };
        let cfg = args.apply(ServerConfig::default()).unwrap();
        assert_eq!(cfg.max_batch, 1);
        assert_eq!(cfg.batcher().max_batch, 1);
        assert_eq!(
            cfg.bare_owners.get("/api_version").map(String::as_str),
            Some("iad")
        );
        assert_eq!(cfg.bare_owners.get("/x").map(String::as_str), Some("knomi"));
        let bad = ServerArgs {
            listen: Some("localhost".into()),
            ..ServerArgs::default()
        };
        assert!(bad
            .apply(ServerConfig::default())
            .unwrap_err()
            .to_string()
            .contains("listen"));
        let bad = ServerArgs {
            bare_owner: vec!["/api_version".into()],
            ..ServerArgs::default()
        };
        assert!(bad
            .apply(ServerConfig::default())
            .unwrap_err()
            .to_string()
            .contains("PATH=DIALECT"));
    }

    #[test]
    fn validation_names_the_bad_setting() {
        let mut cfg = EngineConfig::default();
        cfg.detection.max_side = 8;
        let e = validate(&cfg).unwrap_err().to_string();
        assert!(e.contains("max_side"), "{e}");
        assert!(validate(&EngineConfig::default()).is_ok());
    }
}
