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
#[serde(default)]
pub struct ServerConfig {
    /// Address the listener binds, `HOST:PORT`.
    pub listen: String,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Longest wait for a request's headers, ms (slow clients are disconnected).
    pub header_timeout_ms: u64,
    /// Longest wait for a request's body once its headers arrived, ms (answered with the
    /// dialect's timeout error).
    pub body_timeout_ms: u64,
    /// Most open client connections; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Longest wait for in-flight requests after a shutdown signal, ms.
    pub drain_timeout_ms: u64,
    /// Owner dialect of each bare path claimed by several dialects (`"/api_version" =
    /// "idlive"`); every dialect stays reachable under its own prefix.
    pub bare_owners: BTreeMap<String, String>,
    /// Licence expiry the ID R&D dialects report (`expirationDate`, `licenseExpirationDate`):
    /// facegate has no licence, so this is a configurable far-future ISO 8601 instant.
    pub license_expiration: String,
    /// IAD `/check_capture_liveness` also runs passive face liveness (`face_liveness`).
    pub iad_face_liveness: bool,
    /// Batching settings (same section: `max_batch`, `max_queue_delay_ms`, ...).
    #[serde(flatten)]
    pub batcher: BatcherConfig,
}

/// The bare-path owners in force unless configured otherwise: `/api_version` and
/// `/bi_records` (both claimed by IDLive and IAD) -> `idlive`.
pub fn default_bare_owners() -> BTreeMap<String, String> {
    ["/api_version", "/bi_records"]
        .into_iter()
        .map(|p| (p.to_string(), "idlive".to_string()))
        .collect()
}

/// Default of [`ServerConfig::license_expiration`].
pub const DEFAULT_LICENSE_EXPIRATION: &str = "2999-12-31T23:59:59Z";

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            max_body_bytes: 32 << 20,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 1024,
            drain_timeout_ms: 30_000,
            bare_owners: default_bare_owners(),
            license_expiration: DEFAULT_LICENSE_EXPIRATION.into(),
            iad_face_liveness: true,
            batcher: BatcherConfig::default(),
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
    /// Longest wait for in-flight requests on shutdown, ms [default: 30000].
    #[arg(long, env = "FACEGATE_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Owner of a bare path claimed by several dialects, PATH=DIALECT (repeatable; the
    /// environment variable takes a comma-separated list) [default:
    /// /api_version=idlive, /bi_records=idlive].
    #[arg(
        long = "bare-owner",
        env = "FACEGATE_BARE_OWNERS",
        value_delimiter = ',',
        value_name = "PATH=DIALECT"
    )]
    pub bare_owner: Vec<String>,
    /// Licence expiry reported by the ID R&D dialects, ISO 8601 [default: 2999-12-31T23:59:59Z].
    #[arg(long, env = "FACEGATE_LICENSE_EXPIRATION")]
    pub license_expiration: Option<String>,
    /// IAD check_capture_liveness also runs face liveness (true|false) [default: true].
    #[arg(long, env = "FACEGATE_IAD_FACE_LIVENESS")]
    pub iad_face_liveness: Option<bool>,
}

impl ServerArgs {
    /// Resolves the server configuration: defaults < `[server]` of `file` < flags/env.
    pub fn resolve(&self, file: Option<&std::path::Path>) -> Result<ServerConfig> {
        let mut cfg = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    Error::InvalidArgument(format!("config file {}: {e}", p.display()))
                })?;
                parse_server_config(&text).map_err(|e| {
                    Error::InvalidArgument(format!("config file {}: {e}", p.display()))
                })?
            }
            None => ServerConfig::default(),
        };
        if let Some(v) = &self.listen {
            cfg.listen = v.clone();
        }
        if let Some(v) = self.max_batch {
            cfg.batcher.max_batch = v;
        }
        if let Some(v) = self.max_queue_delay_ms {
            cfg.batcher.max_queue_delay_ms = v;
        }
        if let Some(v) = self.adaptive_delay {
            cfg.batcher.adaptive_delay = v;
        }
        if let Some(v) = self.queue_bound {
            cfg.batcher.queue_bound = v;
        }
        if let Some(v) = self.prepare_threads {
            cfg.batcher.prepare_threads = v;
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
        if let Some(v) = self.drain_timeout_ms {
            cfg.drain_timeout_ms = v;
        }
        for (path, dialect) in default_bare_owners() {
            cfg.bare_owners.entry(path).or_insert(dialect);
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
        if let Some(v) = &self.license_expiration {
            cfg.license_expiration = v.clone();
        }
        if let Some(v) = self.iad_face_liveness {
            cfg.iad_face_liveness = v;
        }
        validate_server(&cfg)?;
        Ok(cfg)
    }
}

/// Parses the `[server]` section of a configuration file; missing keys keep their defaults.
pub fn parse_server_config(text: &str) -> std::result::Result<ServerConfig, String> {
    /// The file's sections this parser cares about.
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct File {
        /// `[server]`.
        server: ServerConfig,
    }
    toml::from_str::<File>(text)
        .map(|f| f.server)
        .map_err(|e| e.to_string())
}

/// Parses one optional section (`[bi]`, `[capture]`) of a configuration file; missing keys
/// keep their defaults.
pub fn parse_section<T>(text: &str, section: &str) -> std::result::Result<T, String>
where
    T: serde::de::DeserializeOwned + Default,
{
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    match table.get(section) {
        None => Ok(T::default()),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| format!("[{section}]: {e}")),
    }
}

/// Reads `file` (if any) and parses its `section` (see [`parse_section`]).
pub fn read_section<T>(file: Option<&std::path::Path>, section: &str) -> Result<T>
where
    T: serde::de::DeserializeOwned + Default,
{
    let Some(p) = file else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(p)
        .map_err(|e| Error::InvalidArgument(format!("config file {}: {e}", p.display())))?;
    parse_section(&text, section)
        .map_err(|e| Error::InvalidArgument(format!("config file {}: {e}", p.display())))
}

/// Rejects server settings that cannot work.
pub fn validate_server(cfg: &ServerConfig) -> Result<()> {
    let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
    if cfg.listen.parse::<std::net::SocketAddr>().is_err() {
        return bad("server.listen must be HOST:PORT with a numeric host, e.g. 0.0.0.0:8080");
    }
    if cfg.batcher.max_batch == 0 || cfg.batcher.max_batch > 256 {
        return bad("server.max_batch must be within 1..=256");
    }
    if cfg.batcher.queue_bound == 0 || cfg.batcher.prepare_threads == 0 {
        return bad("server.queue_bound and server.prepare_threads must be positive");
    }
    if cfg.max_body_bytes == 0
        || cfg.max_connections == 0
        || cfg.header_timeout_ms == 0
        || cfg.body_timeout_ms == 0
    {
        return bad("server.max_body_bytes, server.max_connections, server.header_timeout_ms and server.body_timeout_ms must be positive");
    }
    for (path, dialect) in &cfg.bare_owners {
        if !path.starts_with('/') || dialect.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "server.bare_owners: {path:?} = {dialect:?} must map a path starting with / to a dialect"
            )));
        }
    }
    let day = cfg.license_expiration.get(..10).unwrap_or("");
    if crate::bi::Date::parse(day).is_err() {
        return Err(Error::InvalidArgument(format!(
            "server.license_expiration {:?} must start with a yyyy-MM-dd date, e.g. {DEFAULT_LICENSE_EXPIRATION}",
            cfg.license_expiration
        )));
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
    /// Do not load the face descriptor (no templates or matching).
    #[arg(long, env = "FACEGATE_NO_DESCRIPTOR")]
    pub no_descriptor: bool,
    /// Threads that run the networks, 0 for one per core [default: 0].
    #[arg(long, env = "FACEGATE_THREADS")]
    pub threads: Option<usize>,
}

impl EngineArgs {
    /// Resolves the effective configuration: defaults < file < flags/env.
    pub fn resolve(&self) -> Result<EngineConfig> {
        let mut cfg = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    Error::InvalidArgument(format!("config file {}: {e}", p.display()))
                })?;
                parse_config(&text).map_err(|e| {
                    Error::InvalidArgument(format!("config file {}: {e}", p.display()))
                })?
            }
            None => EngineConfig::default(),
        };
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
        if self.no_descriptor {
            cfg.load_descriptor = false;
        }
        if let Some(v) = self.threads {
            cfg.threads = v;
        }
        validate(&cfg)?;
        Ok(cfg)
    }
}

/// Parses an engine configuration from TOML text; missing keys keep their defaults.
pub fn parse_config(text: &str) -> std::result::Result<EngineConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Rejects settings that cannot work.
pub fn validate(cfg: &EngineConfig) -> Result<()> {
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
    fn file_overrides_defaults_and_keeps_the_rest() {
        let cfg =
            parse_config("[detection]\nmax_side = 480\n[quality]\nmin_iod_px = 30.0\n").unwrap();
        assert_eq!(cfg.detection.max_side, 480);
        assert_eq!(cfg.quality.min_iod_px, 30.0);
        assert_eq!(
            cfg.detection.nms_iou,
            EngineConfig::default().detection.nms_iou
        );
        assert!(parse_config("[detection]\nmax_side = \"big\"\n").is_err());
    }

    #[test]
    fn deploy_example_parses_and_validates() {
        let text = include_str!("../deploy/facegate.toml");
        let cfg = parse_config(text).unwrap();
        assert_eq!(cfg.detection.max_side, 320);
        assert_eq!(cfg.calibrations.regular.offset, -0.6);
        assert_eq!(cfg.threads, 0);
        validate(&cfg).unwrap();
        let server = parse_server_config(text).unwrap();
        assert_eq!(server.body_timeout_ms, 30_000);
        assert_eq!(server.batcher.queue_bound, 256);
    }

    #[test]
    fn server_section_overrides_defaults_and_flags_override_it() {
        let cfg = parse_server_config(
            "[detection]\nmax_side = 480\n[server]\nmax_batch = 4\nlisten = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        assert_eq!(cfg.batcher.max_batch, 4);
        assert_eq!(cfg.listen, "127.0.0.1:9000");
        assert_eq!(cfg.max_body_bytes, ServerConfig::default().max_body_bytes);
        assert_eq!(parse_server_config("").unwrap(), ServerConfig::default());
        // The engine parser ignores the [server] section of the same file.
        assert_eq!(
            parse_config("[server]\nmax_batch = 4\n")
                .unwrap()
                .detection
                .max_side,
            320
        );
        let args = ServerArgs {
            max_batch: Some(1),
            ..ServerArgs::default()
        };
        assert_eq!(args.resolve(None).unwrap().batcher.max_batch, 1);
        let bad = ServerArgs {
            listen: Some("localhost".into()),
            ..ServerArgs::default()
        };
        assert!(bad
            .resolve(None)
            .unwrap_err()
            .to_string()
            .contains("listen"));
    }

    #[test]
    fn bare_owners_merge_defaults_file_and_flags() {
        let cfg = parse_server_config(
            "[server]\nlicense_expiration = \"2031-01-01T00:00:00Z\"\n[server.bare_owners]\n\"/version\" = \"oz\"\n",
        )
        .unwrap();
        assert_eq!(
            cfg.bare_owners.get("/version").map(String::as_str),
            Some("oz")
        );
        assert_eq!(cfg.license_expiration, "2031-01-01T00:00:00Z");
        let args = ServerArgs {
            bare_owner: vec!["/api_version=iad".into(), " /x = knomi ".into()],
            ..ServerArgs::default()
        };
        let got = args.resolve(None).unwrap().bare_owners;
        assert_eq!(got.get("/api_version").map(String::as_str), Some("iad"));
        assert_eq!(got.get("/bi_records").map(String::as_str), Some("idlive"));
        assert_eq!(got.get("/x").map(String::as_str), Some("knomi"));
        let bad = ServerArgs {
            bare_owner: vec!["/api_version".into()],
            ..ServerArgs::default()
        };
        assert!(bad
            .resolve(None)
            .unwrap_err()
            .to_string()
            .contains("PATH=DIALECT"));
        let bad = ServerArgs {
            license_expiration: Some("never".into()),
            ..ServerArgs::default()
        };
        assert!(bad
            .resolve(None)
            .unwrap_err()
            .to_string()
            .contains("license_expiration"));
    }

    #[test]
    fn optional_sections_parse_with_defaults() {
        let bi: crate::bi::BiConfig =
            parse_section("[bi]\nretention_days = 7\n[server]\nmax_batch = 2\n", "bi").unwrap();
        assert_eq!(bi.retention_days, 7);
        assert_eq!(bi.queue, crate::bi::BiConfig::default().queue);
        let cap: crate::capture::CaptureConfig = parse_section("", "capture").unwrap();
        assert!(cap.private_key.is_none());
        assert!(
            parse_section::<crate::bi::BiConfig>("[bi]\nqueue = \"x\"\n", "bi")
                .unwrap_err()
                .contains("[bi]")
        );
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
