//! Named liveness pipelines: which networks' outputs are fused into the score.
//!
//! Every analysis runs both MiniFASNets once; a pipeline chooses which of their softmax
//! outputs form `fused_live`, and carries its own calibration profiles (a single network's
//! scores sit elsewhere than the pair's). The ID R&D dialect lists these names in
//! `/api_version` and accepts them in `pipeline` parameters.

use serde::{Deserialize, Serialize};

use super::calibration::{self, Calibration, Calibrations, Profile};
use super::Liveness;

/// A liveness pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Pipeline {
    /// MiniFASNetV2 (scale 2.7) and MiniFASNetV1SE (scale 4.0), softmax averaged (upstream's fusion).
    #[default]
    Dual,
    /// MiniFASNetV2 at crop scale 2.7 alone.
    V2,
    /// MiniFASNetV1SE at crop scale 4.0 alone.
    V1se,
}

impl Pipeline {
    /// Every pipeline, default first.
    pub const ALL: [Pipeline; 3] = [Pipeline::Dual, Pipeline::V2, Pipeline::V1se];

    /// Public name.
    pub fn name(self) -> &'static str {
        match self {
            Pipeline::Dual => "minifasnet-dual",
            Pipeline::V2 => "minifasnet-v2",
            Pipeline::V1se => "minifasnet-v1se",
        }
    }

    /// Parses a public name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// Indices into [`Liveness::networks`] that this pipeline fuses.
    pub fn networks(self) -> &'static [usize] {
        match self {
            Pipeline::Dual => &[0, 1],
            Pipeline::V2 => &[0],
            Pipeline::V1se => &[1],
        }
    }

    /// Calibration profiles of the single-network pipelines, chosen on nuaa-dev the same way as
    /// the pair's (SOFT 0.3 below the equal-error score, REGULAR 0.8 above it, HARDENED 2.3
    /// above it); the pair's come from the engine configuration.
    pub fn single_network_calibrations(self) -> Option<Calibrations> {
        let p = |offset: f32| Profile {
            offset,
            temperature: 1.5,
        };
        match self {
            Pipeline::Dual => None,
            Pipeline::V2 => Some(Calibrations {
                soft: p(-2.3),
                regular: p(-1.2),
                hardened: p(0.3),
            }),
            Pipeline::V1se => Some(Calibrations {
                soft: p(-1.85),
                regular: p(-0.75),
                hardened: p(0.75),
            }),
        }
    }
}

/// Re-expresses an engine liveness result under a pipeline and calibration. `dual` holds the
/// configured profiles of the dual pipeline.
pub fn apply(l: &Liveness, pipeline: Pipeline, cal: Calibration, dual: &Calibrations) -> Liveness {
    let idx = pipeline.networks();
    let picked: Vec<f32> = idx
        .iter()
        .filter_map(|&i| {
            l.networks
                .get(i)
                .map(|n| n.softmax[crate::nn::minifasnet::LIVE_CLASS])
        })
        .collect();
    let fused = if picked.is_empty() {
        l.fused_live
    } else {
        picked.iter().sum::<f32>() / picked.len() as f32
    };
    let cals = pipeline.single_network_calibrations().unwrap_or(*dual);
    let score = calibration::raw_score(fused);
    let probability = calibration::probability(score, cals.profile(cal));
    Liveness {
        probability,
        score,
        is_live: probability >= 0.5,
        calibration: cal,
        fused_live: fused,
        networks: l.networks.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NetworkOutput;

    fn liveness(v2: f32, v1se: f32) -> Liveness {
        let net = |p: f32| NetworkOutput {
            name: "n".into(),
            crop_scale: 1.0,
            logits: [0.0; 3],
            softmax: [1.0 - p, p, 0.0],
        };
        Liveness {
            probability: 0.0,
            score: 0.0,
            is_live: false,
            calibration: Calibration::Regular,
            fused_live: (v2 + v1se) / 2.0,
            networks: vec![net(v2), net(v1se)],
        }
    }

    #[test]
    fn pipelines_fuse_their_own_networks() {
        let l = liveness(0.2, 0.8);
        let cals = Calibrations::default();
        assert!(
            (apply(&l, Pipeline::Dual, Calibration::Regular, &cals).fused_live - 0.5).abs() < 1e-6
        );
        assert!(
            (apply(&l, Pipeline::V2, Calibration::Regular, &cals).fused_live - 0.2).abs() < 1e-6
        );
        assert!(
            (apply(&l, Pipeline::V1se, Calibration::Regular, &cals).fused_live - 0.8).abs() < 1e-6
        );
    }

    #[test]
    fn dual_under_its_calibration_matches_the_engine() {
        let l = liveness(0.9, 0.7);
        let cals = Calibrations::default();
        let a = apply(&l, Pipeline::Dual, Calibration::Hardened, &cals);
        let expect = calibration::probability(calibration::raw_score(0.8), cals.hardened);
        assert!((a.probability - expect).abs() < 1e-6);
    }

    #[test]
    fn names_parse() {
        for p in Pipeline::ALL {
            assert_eq!(Pipeline::parse(&p.name().to_uppercase()), Some(p));
        }
        assert_eq!(Pipeline::parse("astraea"), None);
    }
}
