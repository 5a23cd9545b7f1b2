//! Named liveness networks and pipelines: which networks' outputs are fused into the score.
//!
//! Every analysis runs each [`PadNetwork`] once; a [`Pipeline`] names the networks whose softmax
//! outputs it fuses, and carries its own calibration profiles (a single network's scores sit
//! elsewhere than the pair's). The ID R&D dialect lists the pipeline names in `/api_version`
//! and accepts them in `pipeline` parameters. Turning outputs into a verdict is
//! [`super::decision`]'s job.

use serde::{Deserialize, Serialize};

use super::calibration::{Calibrations, Profile};
use crate::nn::minifasnet::Variant;

/// A passive-liveness network with the crop it is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PadNetwork {
    /// MiniFASNetV2 on the 2.7x crop.
    V2,
    /// MiniFASNetV1SE on the 4.0x crop.
    V1se,
    /// The CelebA-Spoof MiniFASNetV2-SE on its own 1.5x reflected square crop (loaded with
    /// `load_celeba`). It has two classes: its attack class fills the print slot of
    /// [`super::NetworkOutput`] and the replay slot is 0.
    Celeba,
}

impl PadNetwork {
    /// The networks every analysis runs, in the order of [`super::Liveness::networks`].
    pub const PAIR: [PadNetwork; 2] = [PadNetwork::V2, PadNetwork::V1se];
    /// Every network, optional ones last.
    pub const ALL: [PadNetwork; 3] = [PadNetwork::V2, PadNetwork::V1se, PadNetwork::Celeba];

    /// Name in analysis documents (`NetworkOutput::name`).
    pub fn name(self) -> &'static str {
        match self {
            PadNetwork::V2 => "MiniFASNetV2@2.7",
            PadNetwork::V1se => "MiniFASNetV1SE@4.0",
            PadNetwork::Celeba => "MiniFASNetV2SE-CelebA@1.5",
        }
    }

    /// Entry of `models/manifest.toml` holding its weights.
    pub fn manifest_name(self) -> &'static str {
        match self {
            PadNetwork::V2 => "minifasnet-v2",
            PadNetwork::V1se => "minifasnet-v1se",
            PadNetwork::Celeba => "minifasnet-celeba",
        }
    }

    /// The architecture.
    pub fn variant(self) -> Variant {
        match self {
            PadNetwork::V2 => Variant::V2,
            PadNetwork::V1se => Variant::V1SE,
            PadNetwork::Celeba => Variant::V2SeCeleba,
        }
    }

    /// Crop scale around the face box (upstream's `scale`).
    pub fn crop_scale(self) -> f32 {
        match self {
            PadNetwork::V2 => 2.7,
            PadNetwork::V1se => 4.0,
            PadNetwork::Celeba => crate::preprocess::crop::CELEBA_CONTEXT,
        }
    }

    /// Whether the engine runs it only when configured to.
    pub fn is_optional(self) -> bool {
        self == PadNetwork::Celeba
    }
}

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
    /// The pair and the CelebA-Spoof network: the mean of the three live log-odds (needs
    /// `load_celeba`; see docs/calibration.md for what it measured).
    Triple,
}

impl Pipeline {
    /// Every pipeline, default first.
    pub const ALL: [Pipeline; 4] = [
        Pipeline::Dual,
        Pipeline::V2,
        Pipeline::V1se,
        Pipeline::Triple,
    ];

    /// Public name.
    pub fn name(self) -> &'static str {
        match self {
            Pipeline::Dual => "minifasnet-dual",
            Pipeline::V2 => "minifasnet-v2",
            Pipeline::V1se => "minifasnet-v1se",
            Pipeline::Triple => "minifasnet-triple",
        }
    }

    /// Parses a public name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// The networks this pipeline fuses.
    pub fn networks(self) -> &'static [PadNetwork] {
        match self {
            Pipeline::Dual => &PadNetwork::PAIR,
            Pipeline::V2 => &[PadNetwork::V2],
            Pipeline::V1se => &[PadNetwork::V1se],
            Pipeline::Triple => &PadNetwork::ALL,
        }
    }

    /// Whether its score is the mean of its networks' live log-odds (else the log-odds of
    /// their mean softmax, upstream's fusion).
    pub fn fuses_log_odds(self) -> bool {
        self == Pipeline::Triple
    }

    /// Calibration profiles of the single-network pipelines (and the triple's), chosen on
    /// nuaa-dev the same way as the pair's (SOFT 0.3 below the equal-error score, REGULAR 0.8 above it, HARDENED 2.3
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
            // The same rule on the mean log-odds (nuaa-dev equal-error score -1.99).
            Pipeline::Triple => Some(Calibrations {
                soft: p(-2.3),
                regular: p(-1.2),
                hardened: p(0.3),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        for p in Pipeline::ALL {
            assert_eq!(Pipeline::parse(&p.name().to_uppercase()), Some(p));
        }
        assert_eq!(Pipeline::parse("astraea"), None);
    }

    #[test]
    fn pipelines_name_their_networks() {
        assert_eq!(Pipeline::Dual.networks(), &PadNetwork::PAIR);
        assert_eq!(Pipeline::Triple.networks(), &PadNetwork::ALL);
        assert_eq!(Pipeline::V1se.networks(), &[PadNetwork::V1se]);
        assert_eq!(PadNetwork::V2.manifest_name(), "minifasnet-v2");
    }
}
