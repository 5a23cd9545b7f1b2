//! Configuration: embedded defaults, overridden by an optional TOML file, overridden by clap
//! flags (each with an environment-variable fallback).

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
    /// Most open client connections; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Longest wait for in-flight requests after a shutdown signal, ms.
    pub drain_timeout_ms: u64,
    /// Batching settings (same section: `max_batch`, `max_queue_delay_ms`, ...).
    #[serde(flatten)]
    pub batcher: BatcherConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            max_body_bytes: 32 << 20,
            header_timeout_ms: 10_000,
            max_connections: 1024,
            drain_timeout_ms: 30_000,
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
    /// Most open client connections [default: 1024].
    #[arg(long, env = "FACEGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Longest wait for in-flight requests on shutdown, ms [default: 30000].
    #[arg(long, env = "FACEGATE_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
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
        if let Some(v) = self.max_connections {
            cfg.max_connections = v;
        }
        if let Some(v) = self.drain_timeout_ms {
            cfg.drain_timeout_ms = v;
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
    if cfg.max_body_bytes == 0 || cfg.max_connections == 0 || cfg.header_timeout_ms == 0 {
        return bad("server.max_body_bytes, server.max_connections and server.header_timeout_ms must be positive");
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
    /// Threads for network inference [default: all cores].
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
        validate(&cfg)?;
        Ok(cfg)
    }

    /// Sizes rayon's global pool (used by candle's CPU kernels) once, if asked.
    pub fn apply_threads(&self) {
        if let Some(n) = self.threads {
            // Fails only if the pool was already built, in which case it keeps its size.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build_global();
        }
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
        let cfg = parse_config(include_str!("../deploy/facegate.toml")).unwrap();
        assert_eq!(cfg.detection.max_side, 320);
        assert_eq!(cfg.calibrations.regular.offset, -0.6);
        validate(&cfg).unwrap();
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
    fn validation_names_the_bad_setting() {
        let mut cfg = EngineConfig::default();
        cfg.detection.max_side = 8;
        let e = validate(&cfg).unwrap_err().to_string();
        assert!(e.contains("max_side"), "{e}");
        assert!(validate(&EngineConfig::default()).is_ok());
    }
}
