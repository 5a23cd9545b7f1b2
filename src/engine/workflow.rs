//! Capture workflows: one liveness decision over the frames a capture client sent, with the
//! reasons a decision could not be made (blur, resolution, dynamic range, no usable face)
//! told apart from a spoof, an estimated false-rejection rate for the score
//! ([`super::frr`]) and the frame clock checked against the server's.
//!
//! - A **passive workflow** ([`PassiveWorkflow`]) judges either its best frame
//!   ([`Fusion::BestFrame`]: the autocapture best frame) or the mean raw score of every usable
//!   frame of a sequence ([`Fusion::Sequence`], at least `sequence_min_frames`), against a
//!   threshold: a calibration profile's offset, or the score at which the calibration set's
//!   estimated FRR is a client's target ([`Threshold::Frr`]).
//! - An **active workflow** ([`decide_active`]) runs an [`ActiveSession`] per head-movement
//!   challenge over the passive capture's best frame followed by the challenge's frames: 3-D
//!   motion, the asked movement, the same person and passive PAD on every frame.
//!
//! A frame is usable when the quality gate passed it, its inter-ocular distance reaches the
//! camera's minimum (`min_iod_front_px` / `min_iod_back_px`) and its face's luma spread
//! reaches `min_dynamic_range`; otherwise the first failure in that order decides.

use serde::{Deserialize, Serialize};

use super::active::{ActiveConfig, ActiveOutcome, ActiveSession, Direction, FrameCheck};
use super::autocapture::Feedback;
use super::calibration::Calibration;
use super::decision::{Decider, FrameOutcome, FrameVerdict};
use super::frr::FrrTable;
use super::pipeline::Pipeline;
use super::session::{FrameState, Session, SessionOutcome, SessionPolicy};
use super::{Analysis, AnalyzeOptions, Rejection};

/// Workflow thresholds (`[workflows]` in the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkflowConfig {
    /// Smallest inter-ocular distance of a front-camera capture, pixels (90 recommended).
    pub min_iod_front_px: f32,
    /// Smallest inter-ocular distance of a back-camera capture, pixels (60 recommended).
    pub min_iod_back_px: f32,
    /// Smallest spread of the face's luma (95th minus 5th percentile, 0..255).
    pub min_dynamic_range: f32,
    /// Fewest frames of a sequence workflow.
    pub sequence_min_frames: usize,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        Self {
            min_iod_front_px: 60.0,
            min_iod_back_px: 40.0,
            min_dynamic_range: 40.0,
            sequence_min_frames: 3,
        }
    }
}

impl WorkflowConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> crate::Result<()> {
        let ok = |v: f32| v.is_finite() && v >= 0.0;
        if !(ok(self.min_iod_front_px)
            && ok(self.min_iod_back_px)
            && ok(self.min_dynamic_range)
            && self.min_dynamic_range <= 255.0
            && self.sequence_min_frames >= 2)
        {
            return Err(crate::Error::InvalidArgument(
                "workflows: IOD minimums and min_dynamic_range must be non-negative \
                 (min_dynamic_range at most 255), sequence_min_frames at least 2"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// How a passive workflow uses its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// The best frame decides (one frame or more).
    BestFrame,
    /// The mean raw score of the usable frames of a sequence decides.
    Sequence,
}

/// Which camera took the capture (it sets the resolution minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Camera {
    /// The front (selfie) camera.
    Front,
    /// The back camera (an operator photographs the subject).
    Back,
}

/// Where the live/spoof threshold on the raw score comes from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// A calibration profile's offset.
    Calibration(Calibration),
    /// The raw score at which the estimated false-rejection rate is this (0..1).
    Frr(f64),
}

/// The decision of a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureDecision {
    /// A live face.
    Live,
    /// An attack.
    Spoof,
    /// The face is too blurred to judge.
    TooBlurry,
    /// The face's inter-ocular distance is under the camera's minimum.
    FaceTooLowResolution,
    /// The face's luma spread is under the minimum.
    TooLowFacialDynamicRange,
    /// No usable face (none, several, turned, badly exposed, cropped).
    UnableToCalculateLiveness,
    /// A timestamp is older than the server accepts.
    TimestampTooOld,
    /// A timestamp is further in the future than the server accepts.
    TimestampInFuture,
}

impl CaptureDecision {
    /// The name capture clients read (`LIVE`, `TOO_BLURRY`, ...).
    pub fn name(self) -> &'static str {
        match self {
            CaptureDecision::Live => "LIVE",
            CaptureDecision::Spoof => "SPOOF",
            CaptureDecision::TooBlurry => "TOO_BLURRY",
            CaptureDecision::FaceTooLowResolution => "FACE_TOO_LOW_RESOLUTION",
            CaptureDecision::TooLowFacialDynamicRange => "TOO_LOW_FACIAL_DYNAMIC_RANGE",
            CaptureDecision::UnableToCalculateLiveness => "UNABLE_TO_CALCULATE_LIVENESS",
            CaptureDecision::TimestampTooOld => "TIMESTAMP_TOO_OLD",
            CaptureDecision::TimestampInFuture => "TIMESTAMP_IN_FUTURE",
        }
    }

    /// The score that goes with it: 100 live, 0 spoof, -1 when no liveness was decided.
    pub fn score(self) -> f32 {
        match self {
            CaptureDecision::Live => 100.0,
            CaptureDecision::Spoof => 0.0,
            _ => -1.0,
        }
    }
}

/// A workflow's result.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureResult {
    /// The decision.
    pub decision: CaptureDecision,
    /// The raw score judged (mean of a sequence; the least live frame of an active check),
    /// when the networks judged any frame.
    pub raw_score: Option<f32>,
    /// Estimated false-rejection rate at `raw_score` (0..1).
    pub frr: Option<f64>,
    /// The frame whose problem (or verdict) decided, when one did.
    pub frame: Option<usize>,
    /// Feedback that explains a decision other than live or spoof (that frame's autocapture
    /// feedback); empty otherwise.
    pub feedback: Vec<Feedback>,
}

impl CaptureResult {
    /// A result with no score (a frame problem or a timestamp).
    pub fn undecided(decision: CaptureDecision, frame: Option<usize>, fb: Vec<Feedback>) -> Self {
        CaptureResult {
            decision,
            raw_score: None,
            frr: None,
            frame,
            feedback: fb,
        }
    }
}

/// Why a frame cannot be judged, if it cannot: the quality gate's rejection, then the
/// camera's resolution minimum, then the dynamic range.
pub fn frame_problem(
    cfg: &WorkflowConfig,
    camera: Camera,
    a: &Analysis,
) -> Option<CaptureDecision> {
    if let Some(r) = &a.rejection {
        return Some(match r.code {
            Rejection::FaceTooBlurry => CaptureDecision::TooBlurry,
            Rejection::FaceTooSmall => CaptureDecision::FaceTooLowResolution,
            _ => CaptureDecision::UnableToCalculateLiveness,
        });
    }
    let Some(q) = &a.quality else {
        return Some(CaptureDecision::UnableToCalculateLiveness);
    };
    let min_iod = match camera {
        Camera::Front => cfg.min_iod_front_px,
        Camera::Back => cfg.min_iod_back_px,
    };
    if q.iod_px < min_iod {
        return Some(CaptureDecision::FaceTooLowResolution);
    }
    if q.dynamic_range < cfg.min_dynamic_range {
        return Some(CaptureDecision::TooLowFacialDynamicRange);
    }
    None
}

/// A passive workflow.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PassiveWorkflow {
    /// How the frames are used.
    pub fusion: Fusion,
    /// The camera.
    pub camera: Camera,
    /// The live/spoof threshold.
    pub threshold: Threshold,
}

impl PassiveWorkflow {
    /// What each frame must be analysed with: liveness and landmarks (eyes, pose).
    pub fn options(&self) -> AnalyzeOptions {
        AnalyzeOptions {
            calibration: self.calibration(),
            liveness: true,
            template: false,
            landmarks: true,
            ignore_quality: false,
        }
    }

    /// The calibration whose probabilities accompany the verdicts (REGULAR for an FRR
    /// target).
    pub fn calibration(&self) -> Calibration {
        match self.threshold {
            Threshold::Calibration(c) => c,
            Threshold::Frr(_) => Calibration::Regular,
        }
    }

    /// Fewest frames it needs.
    pub fn min_frames(&self, cfg: &WorkflowConfig) -> usize {
        match self.fusion {
            Fusion::BestFrame => 1,
            Fusion::Sequence => cfg.sequence_min_frames,
        }
    }

    /// The raw-score threshold in force.
    pub fn threshold_score(&self, decider: &Decider, table: &FrrTable) -> f32 {
        match self.threshold {
            Threshold::Calibration(c) => decider.calibrations(Pipeline::Dual).profile(c).offset,
            Threshold::Frr(f) => table.score_at(f),
        }
    }

    /// Decides over analysed frames (capture order) given each frame's autocapture feedback
    /// and the best frame.
    pub fn decide(
        &self,
        cfg: &WorkflowConfig,
        decider: &Decider,
        table: &FrrTable,
        frames: &[&Analysis],
        feedback: &[Vec<Feedback>],
        best: usize,
    ) -> CaptureResult {
        let threshold = self.threshold_score(decider, table);
        let fb = |i: usize| feedback.get(i).cloned().unwrap_or_default();
        let verdict = |a: &Analysis| match decider.frame(a, Pipeline::Dual, self.calibration()) {
            Ok(FrameOutcome::Verdict(v)) => Some(v),
            _ => None,
        };
        let judged = |score: f32, frame: Option<usize>| CaptureResult {
            decision: if score >= threshold {
                CaptureDecision::Live
            } else {
                CaptureDecision::Spoof
            },
            raw_score: Some(score),
            frr: Some(table.frr_at(score)),
            frame,
            feedback: Vec::new(),
        };
        let problem = |a: &Analysis| {
            frame_problem(cfg, self.camera, a).or_else(|| {
                verdict(a)
                    .is_none()
                    .then_some(CaptureDecision::UnableToCalculateLiveness)
            })
        };
        match self.fusion {
            Fusion::BestFrame => {
                let Some(a) = frames.get(best) else {
                    return CaptureResult::undecided(
                        CaptureDecision::UnableToCalculateLiveness,
                        None,
                        vec![],
                    );
                };
                if let Some(d) = problem(a) {
                    return CaptureResult::undecided(d, Some(best), fb(best));
                }
                match verdict(a) {
                    Some(v) => judged(v.score, Some(best)),
                    None => CaptureResult::undecided(
                        CaptureDecision::UnableToCalculateLiveness,
                        Some(best),
                        fb(best),
                    ),
                }
            }
            Fusion::Sequence => {
                let states: Vec<FrameState> = frames
                    .iter()
                    .map(|a| match (problem(a), verdict(a)) {
                        (None, Some(v)) => FrameState::Verdict(v),
                        _ => FrameState::Rejected,
                    })
                    .collect();
                let session = Session {
                    policy: SessionPolicy::MeanScore,
                    pipeline: Pipeline::Dual,
                    calibration: self.calibration(),
                };
                match session.decide(decider, &states) {
                    SessionOutcome::Verdict { verdict, .. } => judged(verdict.score, None),
                    // No usable frame: the best frame's problem explains the decision.
                    _ => {
                        let d = frames
                            .get(best)
                            .and_then(|a| problem(a))
                            .unwrap_or(CaptureDecision::UnableToCalculateLiveness);
                        CaptureResult::undecided(d, Some(best), fb(best))
                    }
                }
            }
        }
    }
}

/// What every frame of an active capture (its passive request's too) must be analysed with:
/// liveness, templates and landmarks.
pub fn active_options() -> AnalyzeOptions {
    AnalyzeOptions {
        calibration: Calibration::Regular,
        liveness: true,
        template: true,
        landmarks: true,
        ignore_quality: false,
    }
}

/// One head-movement challenge of an active workflow: the direction and its frames'
/// analyses (with templates and landmarks, [`ActiveSession::options`]) and feedback.
pub struct Challenge<'a> {
    /// The asked movement.
    pub direction: Direction,
    /// Its frames, capture order.
    pub frames: Vec<&'a Analysis>,
    /// Each frame's autocapture feedback.
    pub feedback: Vec<Vec<Feedback>>,
}

/// An active workflow's result: the combined decision and each challenge's session outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveResult {
    /// The active decision (live only when every challenge is).
    pub result: CaptureResult,
    /// Each challenge's outcome, in order (frame 0 of each is the reference frame).
    pub outcomes: Vec<ActiveOutcome>,
}

/// Decides the active part of a capture: each challenge's session over `reference` (the
/// passive capture's best frame) followed by its frames, every passive verdict against the
/// passive workflow's threshold. A frame problem decides first (in challenge and frame
/// order); then live only when every session is live, else spoof.
#[allow(clippy::too_many_arguments)]
pub fn decide_active(
    cfg: &WorkflowConfig,
    active: ActiveConfig,
    decider: &Decider,
    table: &FrrTable,
    passive: &PassiveWorkflow,
    reference: &Analysis,
    challenges: &[Challenge<'_>],
) -> ActiveResult {
    let threshold = passive.threshold_score(decider, table);
    let mut outcomes = Vec::with_capacity(challenges.len());
    let mut problem: Option<CaptureResult> = None;
    let mut least: Option<f32> = None;
    // The reference frame first: an unusable passive capture leaves nothing to compare.
    if let Some(d) = frame_problem(cfg, passive.camera, reference) {
        problem = Some(CaptureResult::undecided(d, None, vec![]));
    }
    for c in challenges {
        for (i, a) in c.frames.iter().enumerate() {
            if let (None, Some(d)) = (&problem, frame_problem(cfg, passive.camera, a)) {
                problem = Some(CaptureResult::undecided(
                    d,
                    Some(i),
                    c.feedback.get(i).cloned().unwrap_or_default(),
                ));
            }
        }
        let frames: Vec<&Analysis> = std::iter::once(reference)
            .chain(c.frames.iter().copied())
            .collect();
        let session = ActiveSession {
            cfg: active,
            challenge: vec![c.direction],
            calibration: passive.calibration(),
            passive_threshold: Some(threshold),
        };
        let outcome = session.decide(decider, &frames);
        for f in &outcome.frames {
            if let FrameCheck::Judged {
                passive: FrameVerdict { score, .. },
                ..
            } = f
            {
                least = Some(least.map_or(*score, |m: f32| m.min(*score)));
            }
        }
        if problem.is_none() && outcome.frames.contains(&FrameCheck::Incomplete) {
            problem = Some(CaptureResult::undecided(
                CaptureDecision::UnableToCalculateLiveness,
                None,
                vec![],
            ));
        }
        outcomes.push(outcome);
    }
    let result = match problem {
        Some(p) => p,
        None => {
            let live = !outcomes.is_empty() && outcomes.iter().all(|o| o.live);
            CaptureResult {
                decision: if live {
                    CaptureDecision::Live
                } else {
                    CaptureDecision::Spoof
                },
                raw_score: least,
                frr: least.map(|s| table.frr_at(s)),
                frame: None,
                feedback: Vec::new(),
            }
        }
    };
    ActiveResult { result, outcomes }
}

/// The overall result of a passive and an active part: the passive decision unless it is
/// live, then the active one; the lower score and FRR.
pub fn combine(passive: &CaptureResult, active: &CaptureResult) -> CaptureResult {
    let decider = if passive.decision != CaptureDecision::Live {
        passive
    } else {
        active
    };
    let min = |a: Option<f32>, b: Option<f32>| match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    };
    let frr = match (passive.frr, active.frr) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    };
    CaptureResult {
        decision: decider.decision,
        raw_score: min(passive.raw_score, active.raw_score),
        frr,
        frame: decider.frame,
        feedback: decider.feedback.clone(),
    }
}

/// The server's bounds on the client's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockBounds {
    /// Oldest accepted timestamp, seconds before now (0: no bound).
    pub max_age_s: u64,
    /// Furthest accepted timestamp, seconds after now (0: no bound).
    pub max_ahead_s: u64,
}

/// The timestamp decision for `stamps` (milliseconds since the Unix epoch) at `now_ms`, if
/// any is out of bounds: the first stamp that is, too old before too new.
pub fn check_clock(bounds: ClockBounds, now_ms: i64, stamps: &[i64]) -> Option<CaptureDecision> {
    let old = |t: i64| bounds.max_age_s > 0 && now_ms - t > bounds.max_age_s as i64 * 1000;
    let ahead = |t: i64| bounds.max_ahead_s > 0 && t - now_ms > bounds.max_ahead_s as i64 * 1000;
    if stamps.iter().any(|&t| old(t)) {
        return Some(CaptureDecision::TimestampTooOld);
    }
    stamps
        .iter()
        .any(|&t| ahead(t))
        .then_some(CaptureDecision::TimestampInFuture)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_and_scores_agree() {
        assert_eq!(CaptureDecision::Live.score(), 100.0);
        assert_eq!(CaptureDecision::Spoof.score(), 0.0);
        assert_eq!(CaptureDecision::TooBlurry.score(), -1.0);
        assert_eq!(
            CaptureDecision::TooLowFacialDynamicRange.name(),
            "TOO_LOW_FACIAL_DYNAMIC_RANGE"
        );
    }

    #[test]
    fn the_clock_is_bounded_both_ways() {
        let b = ClockBounds {
            max_age_s: 60,
            max_ahead_s: 10,
        };
        let now = 1_800_000_000_000;
        assert_eq!(check_clock(b, now, &[now - 59_000, now + 9_000]), None);
        assert_eq!(
            check_clock(b, now, &[now - 61_000]),
            Some(CaptureDecision::TimestampTooOld)
        );
        assert_eq!(
            check_clock(b, now, &[now, now + 11_000]),
            Some(CaptureDecision::TimestampInFuture)
        );
        let open = ClockBounds {
            max_age_s: 0,
            max_ahead_s: 0,
        };
        assert_eq!(check_clock(open, now, &[0, i64::MAX / 2]), None);
    }

    #[test]
    fn combining_keeps_the_first_failure_and_the_lower_rate() {
        let live = |s: f32, f: f64| CaptureResult {
            decision: CaptureDecision::Live,
            raw_score: Some(s),
            frr: Some(f),
            frame: None,
            feedback: vec![],
        };
        let c = combine(&live(2.0, 0.6), &live(1.0, 0.4));
        assert_eq!(
            (c.decision, c.raw_score, c.frr),
            (CaptureDecision::Live, Some(1.0), Some(0.4))
        );
        let blurred = CaptureResult::undecided(
            CaptureDecision::TooBlurry,
            Some(0),
            vec![Feedback::TooMuchBlur],
        );
        let c = combine(&live(2.0, 0.6), &blurred);
        assert_eq!(c.decision, CaptureDecision::TooBlurry);
        assert_eq!(c.feedback, [Feedback::TooMuchBlur]);
        assert!(WorkflowConfig::default().validate().is_ok());
    }
}
