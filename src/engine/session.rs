//! Engine sessions: one decision over several frames (an IDLive series today; BioID pairs,
//! Knomi sequences and Oz video next) under a named fusion policy.
//!
//! A dialect analyses each frame through the batcher, states what each frame amounted to
//! ([`FrameState`], from [`super::decision::Decider::frame`] or the frame's error) and asks the
//! session for the outcome. The policies are the engine's, so two dialects fusing frames the
//! same way give the same answer.

use serde::{Deserialize, Serialize};

use super::calibration::Calibration;
use super::decision::{Decider, FrameOutcome, FrameVerdict};
use super::pipeline::Pipeline;
use super::Analysis;
use crate::Error;

/// How the frames of a session are fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionPolicy {
    /// Mean raw score (and mean quality) of the frames that got a verdict, probability of that
    /// mean; frames rejected by the quality gate are left out. A server fault on any frame
    /// decides (the client retries the whole series); with no verdict, the first frame decides.
    MeanScore,
    /// Every frame must get a verdict, and the session is as live as its least live frame
    /// (lowest score, probability and quality). The first frame without a verdict decides.
    AllFrames,
}

impl SessionPolicy {
    /// Name in configuration and documents.
    pub fn name(self) -> &'static str {
        match self {
            SessionPolicy::MeanScore => "mean_score",
            SessionPolicy::AllFrames => "all_frames",
        }
    }
}

/// What one frame of a session amounted to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FrameState {
    /// The networks judged its face.
    Verdict(FrameVerdict),
    /// The quality gate rejected it.
    Rejected,
    /// The client sent something unusable for this frame.
    ClientError,
    /// The server could not process it (overload, loading, an internal error).
    ServerFault,
}

impl FrameState {
    /// The state of an analysed frame (or its error) under (`pipeline`, `cal`).
    pub fn of(
        decider: &Decider,
        frame: Result<&Analysis, &Error>,
        pipeline: Pipeline,
        cal: Calibration,
    ) -> FrameState {
        match frame {
            Err(e) if e.is_client_error() => FrameState::ClientError,
            Err(_) => FrameState::ServerFault,
            Ok(a) => match decider.frame(a, pipeline, cal) {
                Ok(FrameOutcome::Verdict(v)) => FrameState::Verdict(v),
                Ok(FrameOutcome::Rejected(_)) => FrameState::Rejected,
                Ok(FrameOutcome::NoLiveness) | Err(_) => FrameState::ServerFault,
            },
        }
    }
}

/// The outcome of a session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SessionOutcome {
    /// One fused verdict over `frames` frames.
    Verdict {
        /// The fused verdict.
        verdict: FrameVerdict,
        /// How many frames it fused.
        frames: usize,
    },
    /// The frame at this index decides: its rejection or error is the session's answer.
    Frame(usize),
    /// The session had no frame.
    Empty,
}

/// A multi-frame decision: policy, pipeline and calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Session {
    /// How frames are fused.
    pub policy: SessionPolicy,
    /// Pipeline whose calibrations turn the fused score into a probability.
    pub pipeline: Pipeline,
    /// Calibration profile.
    pub calibration: Calibration,
}

impl Session {
    /// Decides a session over its frames' states, in frame order.
    pub fn decide(&self, decider: &Decider, frames: &[FrameState]) -> SessionOutcome {
        if frames.is_empty() {
            return SessionOutcome::Empty;
        }
        let verdicts: Vec<&FrameVerdict> = frames
            .iter()
            .filter_map(|f| match f {
                FrameState::Verdict(v) => Some(v),
                _ => None,
            })
            .collect();
        match self.policy {
            SessionPolicy::MeanScore => {
                if let Some(i) = frames.iter().position(|f| *f == FrameState::ServerFault) {
                    return SessionOutcome::Frame(i);
                }
                if verdicts.is_empty() {
                    return SessionOutcome::Frame(0);
                }
                let n = verdicts.len() as f32;
                let score = verdicts.iter().map(|v| v.score).sum::<f32>() / n;
                let quality = verdicts.iter().map(|v| v.quality).sum::<f32>() / n;
                SessionOutcome::Verdict {
                    verdict: FrameVerdict {
                        score,
                        probability: decider.probability(score, self.pipeline, self.calibration),
                        quality,
                    },
                    frames: verdicts.len(),
                }
            }
            SessionPolicy::AllFrames => {
                if let Some(i) = frames
                    .iter()
                    .position(|f| !matches!(f, FrameState::Verdict(_)))
                {
                    return SessionOutcome::Frame(i);
                }
                let min = |f: fn(&FrameVerdict) -> f32| {
                    verdicts.iter().map(|v| f(v)).fold(f32::INFINITY, f32::min)
                };
                SessionOutcome::Verdict {
                    verdict: FrameVerdict {
                        score: min(|v| v.score),
                        probability: min(|v| v.probability),
                        quality: min(|v| v.quality),
                    },
                    frames: verdicts.len(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::calibration::{self, Calibrations};

    fn v(score: f32, probability: f32, quality: f32) -> FrameState {
        FrameState::Verdict(FrameVerdict {
            score,
            probability,
            quality,
        })
    }

    fn session(policy: SessionPolicy) -> Session {
        Session {
            policy,
            pipeline: Pipeline::Dual,
            calibration: Calibration::Regular,
        }
    }

    #[test]
    fn mean_score_fuses_verdicts_and_skips_rejections() {
        let d = Decider::new(Calibrations::default());
        let s = session(SessionPolicy::MeanScore);
        match s.decide(
            &d,
            &[v(1.0, 0.0, 0.4), FrameState::Rejected, v(3.0, 0.0, 0.8)],
        ) {
            SessionOutcome::Verdict { verdict, frames } => {
                assert_eq!(frames, 2);
                assert!((verdict.score - 2.0).abs() < 1e-6);
                assert!((verdict.quality - 0.6).abs() < 1e-6);
                let want = calibration::probability(2.0, Calibrations::default().regular);
                assert!((verdict.probability - want).abs() < 1e-6);
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(
            s.decide(&d, &[FrameState::Rejected, FrameState::ClientError]),
            SessionOutcome::Frame(0)
        );
        assert_eq!(
            s.decide(&d, &[v(1.0, 0.5, 0.5), FrameState::ServerFault]),
            SessionOutcome::Frame(1)
        );
        assert_eq!(s.decide(&d, &[]), SessionOutcome::Empty);
    }

    #[test]
    fn all_frames_is_as_live_as_the_least_live_frame() {
        let d = Decider::new(Calibrations::default());
        let s = session(SessionPolicy::AllFrames);
        match s.decide(&d, &[v(2.0, 0.9, 0.7), v(-1.0, 0.3, 0.9)]) {
            SessionOutcome::Verdict { verdict, frames } => {
                assert_eq!(frames, 2);
                assert_eq!(
                    (verdict.score, verdict.probability, verdict.quality),
                    (-1.0, 0.3, 0.7)
                );
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(
            s.decide(&d, &[v(2.0, 0.9, 0.7), FrameState::Rejected]),
            SessionOutcome::Frame(1)
        );
        assert_eq!(SessionPolicy::AllFrames.name(), "all_frames");
    }
}
