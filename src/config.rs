//! Configuration: embedded defaults, overridden by an optional TOML file, overridden by clap
//! flags (each with an environment-variable fallback).

use std::path::PathBuf;

use clap::Args;

use crate::engine::EngineConfig;
use crate::{Error, Result};

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
                parse_config(&text)
                    .map_err(|e| Error::InvalidArgument(format!("config file {}: {e}", p.display())))?
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
            let _ = rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global();
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
    for p in [cfg.calibrations.soft, cfg.calibrations.regular, cfg.calibrations.hardened] {
        if p.temperature.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || !p.offset.is_finite() {
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
        let cfg = parse_config("[detection]\nmax_side = 480\n[quality]\nmin_iod_px = 30.0\n").unwrap();
        assert_eq!(cfg.detection.max_side, 480);
        assert_eq!(cfg.quality.min_iod_px, 30.0);
        assert_eq!(cfg.detection.nms_iou, EngineConfig::default().detection.nms_iou);
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
    fn validation_names_the_bad_setting() {
        let mut cfg = EngineConfig::default();
        cfg.detection.max_side = 8;
        let e = validate(&cfg).unwrap_err().to_string();
        assert!(e.contains("max_side"), "{e}");
        assert!(validate(&EngineConfig::default()).is_ok());
    }
}
