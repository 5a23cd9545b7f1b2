//! Liveness decisions: the one place where raw network outputs become a score, a calibrated
//! probability and a verdict, for a (pipeline, calibration) pair.
//!
//! An [`super::Analysis`] keeps every network's raw logits and softmax
//! ([`super::NetworkOutput`]); the engine, the batcher, the dialects and the sessions all go
//! through [`Decider`] to judge them, so a verdict means the same everywhere.

use serde::Serialize;

use super::calibration::{self, Calibration, Calibrations};
use super::pipeline::Pipeline;
use super::{Analysis, Liveness, NetworkOutput, RejectionInfo};
use crate::nn::minifasnet::LIVE_CLASS;
use crate::{Error, Result};

/// Class probabilities fused over a pipeline's networks (mean of their softmax vectors, as
/// upstream fuses them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fused {
    /// Probability of a print attack (class 0).
    pub print: f32,
    /// Probability of a live face (class 1).
    pub live: f32,
    /// Probability of a replay (screen) attack (class 2).
    pub replay: f32,
}

impl Fused {
    /// `1 - live`: the probability of any attack.
    pub fn spoof(&self) -> f32 {
        1.0 - self.live
    }
}

/// Fuses the outputs of `pipeline`'s networks; `None` when one of them is missing.
pub fn fuse(outputs: &[NetworkOutput], pipeline: Pipeline) -> Option<Fused> {
    let nets = pipeline.networks();
    let mut sum = [0f32; 3];
    for net in nets {
        let o = outputs.iter().find(|o| o.name == net.name())?;
        for (s, p) in sum.iter_mut().zip(o.softmax) {
            *s += p;
        }
    }
    let n = nets.len().max(1) as f32;
    Some(Fused {
        print: sum[0] / n,
        live: sum[LIVE_CLASS] / n,
        replay: sum[2] / n,
    })
}

/// Mean of the live log-odds of `pipeline`'s networks; `None` when one is missing.
pub fn mean_log_odds(outputs: &[NetworkOutput], pipeline: Pipeline) -> Option<f32> {
    let nets = pipeline.networks();
    let mut sum = 0f32;
    for net in nets {
        let o = outputs.iter().find(|o| o.name == net.name())?;
        sum += calibration::raw_score(o.softmax[LIVE_CLASS]);
    }
    Some(sum / nets.len().max(1) as f32)
}

/// A frame's liveness under one (pipeline, calibration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameVerdict {
    /// Raw score (log-odds of the fused live probability).
    pub score: f32,
    /// Calibrated probability of a live face.
    pub probability: f32,
    /// Quality score of the judged face, 0..1.
    pub quality: f32,
}

impl FrameVerdict {
    /// The verdict: live when the calibrated probability is at least 0.5 (the profile's
    /// offset on the score).
    pub fn is_live(&self) -> bool {
        self.probability >= 0.5
    }

    /// The spoof score, `1 - probability` (the convention of servers that score attacks).
    pub fn spoof_score(&self) -> f32 {
        (1.0 - self.probability).clamp(0.0, 1.0)
    }

    /// Whether the frame passes under a spoof-score threshold: declined at or above it.
    pub fn passes(&self, spoof_threshold: f32) -> bool {
        self.spoof_score() < spoof_threshold
    }
}

/// What one analysed frame amounts to under one (pipeline, calibration).
#[derive(Debug, Clone)]
pub enum FrameOutcome<'a> {
    /// The networks judged its face.
    Verdict(FrameVerdict),
    /// The quality gate rejected it.
    Rejected(&'a RejectionInfo),
    /// It went through without liveness (liveness not asked for): a server-side inconsistency
    /// for a caller that expected one.
    NoLiveness,
}

/// Turns network outputs into verdicts with the configured calibrations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decider {
    /// Profiles of the dual pipeline (the engine configuration's `calibrations`).
    dual: Calibrations,
}

impl Decider {
    /// A decider whose dual pipeline uses `dual`.
    pub fn new(dual: Calibrations) -> Self {
        Self { dual }
    }

    /// The calibration profiles of `pipeline`.
    pub fn calibrations(&self, pipeline: Pipeline) -> Calibrations {
        pipeline.single_network_calibrations().unwrap_or(self.dual)
    }

    /// Calibrated probability of a raw score under (`pipeline`, `cal`).
    pub fn probability(&self, score: f32, pipeline: Pipeline, cal: Calibration) -> f32 {
        calibration::probability(score, self.calibrations(pipeline).profile(cal))
    }

    /// The liveness verdict of `outputs` under (`pipeline`, `cal`); the outputs are kept. A
    /// pipeline whose optional network was not loaded is a client's invalid argument.
    pub fn verdict(
        &self,
        outputs: &[NetworkOutput],
        pipeline: Pipeline,
        cal: Calibration,
    ) -> Result<Liveness> {
        let missing = || {
            let optional = pipeline
                .networks()
                .iter()
                .find(|n| n.is_optional() && !outputs.iter().any(|o| o.name == n.name()));
            match optional {
                Some(n) => Error::InvalidArgument(format!(
                    "pipeline {} needs {}, which this server does not load (load_celeba)",
                    pipeline.name(),
                    n.name()
                )),
                None => Error::Internal(format!(
                    "pipeline {} lacks one of its networks' outputs",
                    pipeline.name()
                )),
            }
        };
        let fused = fuse(outputs, pipeline).ok_or_else(missing)?;
        let score = if pipeline.fuses_log_odds() {
            mean_log_odds(outputs, pipeline).ok_or_else(missing)?
        } else {
            calibration::raw_score(fused.live)
        };
        let fused_live = if pipeline.fuses_log_odds() {
            1.0 / (1.0 + (-score).exp())
        } else {
            fused.live
        };
        let probability = self.probability(score, pipeline, cal);
        Ok(Liveness {
            probability,
            score,
            is_live: probability >= 0.5,
            calibration: cal,
            fused_live,
            networks: outputs.to_vec(),
        })
    }

    /// What an analysed frame amounts to under (`pipeline`, `cal`).
    pub fn frame<'a>(
        &self,
        a: &'a Analysis,
        pipeline: Pipeline,
        cal: Calibration,
    ) -> Result<FrameOutcome<'a>> {
        if let Some(r) = &a.rejection {
            return Ok(FrameOutcome::Rejected(r));
        }
        let Some(l) = &a.liveness else {
            return Ok(FrameOutcome::NoLiveness);
        };
        let v = self.verdict(&l.networks, pipeline, cal)?;
        Ok(FrameOutcome::Verdict(FrameVerdict {
            score: v.score,
            probability: v.probability,
            quality: a.quality.as_ref().map_or(0.0, |q| q.score),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::pipeline::PadNetwork;

    fn outputs(v2: f32, v1se: f32) -> Vec<NetworkOutput> {
        let net = |n: PadNetwork, p: f32| NetworkOutput {
            name: n.name().into(),
            crop_scale: n.crop_scale(),
            logits: [0.0; 3],
            softmax: [(1.0 - p) * 0.75, p, (1.0 - p) * 0.25],
        };
        vec![net(PadNetwork::V2, v2), net(PadNetwork::V1se, v1se)]
    }

    #[test]
    fn pipelines_fuse_their_own_networks_by_name() {
        let o = outputs(0.2, 0.8);
        assert!((fuse(&o, Pipeline::Dual).unwrap().live - 0.5).abs() < 1e-6);
        assert!((fuse(&o, Pipeline::V2).unwrap().live - 0.2).abs() < 1e-6);
        assert!((fuse(&o, Pipeline::V1se).unwrap().live - 0.8).abs() < 1e-6);
        // Order does not matter, names do.
        let rev: Vec<_> = o.iter().rev().cloned().collect();
        assert_eq!(fuse(&rev, Pipeline::V2), fuse(&o, Pipeline::V2));
        let f = fuse(&o, Pipeline::Dual).unwrap();
        assert!((f.print - 0.375).abs() < 1e-6 && (f.replay - 0.125).abs() < 1e-6);
        assert!(fuse(&o[..1], Pipeline::Dual).is_none());
    }

    #[test]
    fn verdicts_follow_the_pipeline_calibrations() {
        let d = Decider::new(Calibrations::default());
        let o = outputs(0.9, 0.7);
        let v = d
            .verdict(&o, Pipeline::Dual, Calibration::Hardened)
            .unwrap();
        let expect = calibration::probability(
            calibration::raw_score(0.8),
            Calibrations::default().hardened,
        );
        assert!((v.probability - expect).abs() < 1e-6);
        assert_eq!(v.is_live, v.probability >= 0.5);
        let single = d.verdict(&o, Pipeline::V2, Calibration::Regular).unwrap();
        let cals = Pipeline::V2.single_network_calibrations().unwrap();
        let expect = calibration::probability(calibration::raw_score(0.9), cals.regular);
        assert!((single.probability - expect).abs() < 1e-6);
        assert!(d
            .verdict(&o[1..], Pipeline::V2, Calibration::Regular)
            .is_err());
    }
}
