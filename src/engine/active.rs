//! Active liveness over two or more frames of one capture: passive PAD on every frame, a 3-D
//! motion check on each pair of consecutive frames, an optional head-movement challenge, and
//! the same person throughout. Every check is a measurement; the session is live only when all
//! pass.
//!
//! - **3-D motion.** A flat photo or screen moved in front of the camera moves all of its
//!   landmarks by one plane projection (a homography). A real head turning or nodding does not:
//!   the nose, half an inter-ocular distance in front of the eyes and the mouth, moves against
//!   them. For each consecutive pair the homography that best carries the first frame's
//!   *facial plane* (brow ends, eye corners, mouth corners) onto the second's is fitted
//!   (normalised DLT, least squares); the RMS distance by which the *relief* (nose tip,
//!   nostrils, lower bridge) misses it, over the inter-ocular distance, is the *parallax*. No
//!   motion at all (the same still twice) is not live either: the RMS landmark displacement
//!   must reach `min_motion`.
//! - **Challenge.** The head must turn in the asked direction by at least
//!   `challenge_min_deg` between the first and the last frame (yaw and pitch of
//!   [`super::pose::FaceShape`]), and, for a single asked direction, more along it than along
//!   the other axis. Directions are the person's own: `Left` is the subject turning to their
//!   left, which moves the nose towards the right of an unmirrored camera image.
//! - **Same person.** Every frame's template is within `same_person_distance` of the first's.
//!
//! Frames are analysed through the batcher with liveness, templates and landmarks
//! ([`ActiveSession::options`]).

use serde::{Deserialize, Serialize};

use super::calibration::Calibration;
use super::decision::{Decider, FrameOutcome, FrameVerdict};
use super::linalg::solve;
use super::pipeline::Pipeline;
use super::pose::{FaceCrop, FaceShape};
use super::template::DEFAULT_MATCH_THRESHOLD;
use super::{Analysis, AnalyzeOptions, Rejection};

/// Active-liveness settings (`[active]` in the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActiveConfig {
    /// Smallest RMS landmark displacement between consecutive frames, as a fraction of the
    /// inter-ocular distance; below it the pair is a still.
    pub min_motion: f32,
    /// Smallest RMS residual of the best homography between consecutive frames, as a fraction
    /// of the inter-ocular distance, for the motion to count as three-dimensional.
    pub min_parallax: f32,
    /// Smallest head rotation in an asked direction, degrees.
    pub challenge_min_deg: f32,
    /// Largest template distance between frames of the same person.
    pub same_person_distance: f32,
}

impl Default for ActiveConfig {
    fn default() -> Self {
        Self {
            min_motion: 0.02,
            min_parallax: 0.04,
            challenge_min_deg: 8.0,
            same_person_distance: DEFAULT_MATCH_THRESHOLD,
        }
    }
}

impl ActiveConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> crate::Result<()> {
        let ok = |v: f32| v.is_finite() && v > 0.0;
        if !(ok(self.min_motion)
            && ok(self.min_parallax)
            && ok(self.challenge_min_deg)
            && ok(self.same_person_distance))
        {
            return Err(crate::Error::InvalidArgument(
                "active.min_motion, min_parallax, challenge_min_deg and same_person_distance must be positive"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A head movement a challenge asks for, in the person's own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Chin up (the nose points higher).
    Up,
    /// Chin down.
    Down,
    /// The person turns to their left (the nose moves to the image's right).
    Left,
    /// The person turns to their right (the nose moves to the image's left).
    Right,
}

impl Direction {
    /// Parses `up`, `down`, `left`, `right` (any case).
    pub fn parse(s: &str) -> Option<Direction> {
        match s.trim().to_ascii_lowercase().as_str() {
            "up" => Some(Direction::Up),
            "down" => Some(Direction::Down),
            "left" => Some(Direction::Left),
            "right" => Some(Direction::Right),
            _ => None,
        }
    }

    /// How far a pose change `(d_yaw, d_pitch)` (degrees, [`FaceShape`] signs) goes this way.
    fn along(self, d_yaw: f32, d_pitch: f32) -> f32 {
        match self {
            Direction::Left => d_yaw,
            Direction::Right => -d_yaw,
            Direction::Up => -d_pitch,
            Direction::Down => d_pitch,
        }
    }

    /// Whether it turns the head about the vertical axis.
    fn is_turn(self) -> bool {
        matches!(self, Direction::Left | Direction::Right)
    }
}

/// What one frame amounted to.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameCheck {
    /// Judged: its passive verdict.
    Judged {
        /// The passive-liveness verdict (dual pipeline).
        passive: FrameVerdict,
        /// `passive.probability >= 0.5`.
        live: bool,
    },
    /// The quality gate rejected it.
    Rejected(Rejection),
    /// It lacks what the session needs (liveness, template or landmarks were not computed).
    Incomplete,
}

/// The 3-D motion check of one pair of consecutive frames.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MotionCheck {
    /// Index of the pair's second frame.
    pub frame: usize,
    /// RMS landmark displacement over the inter-ocular distance.
    pub motion: f32,
    /// RMS residual of the best homography over the inter-ocular distance.
    pub parallax: f32,
    /// `parallax / (parallax + min_parallax)` when the pair moved, else 0: 0.5 at the
    /// threshold.
    pub score: f32,
    /// Moved, and not by a plane projection.
    pub live: bool,
}

/// The challenge check between the first and the last frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChallengeCheck {
    /// The directions asked for.
    pub asked: Vec<Direction>,
    /// Yaw change, degrees (> 0: towards the person's left).
    pub d_yaw: f32,
    /// Pitch change, degrees (> 0: chin down).
    pub d_pitch: f32,
    /// Direction of the head movement in the image, degrees counter-clockwise from the
    /// image's right (the nose's path: yaw change along x, pitch change along y).
    pub movement_deg: f32,
    /// Every asked direction was moved far enough (and, for one, more than across it).
    pub passed: bool,
}

/// Whether every frame shows the same person.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SamePerson {
    /// Largest template distance to the first frame.
    pub max_distance: f32,
    /// `max_distance <= same_person_distance`.
    pub same: bool,
}

/// The whole verdict of an active session.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveOutcome {
    /// Per frame, in order.
    pub frames: Vec<FrameCheck>,
    /// Per consecutive pair whose frames were both judged.
    pub motion: Vec<MotionCheck>,
    /// The challenge, when directions were asked and the first and last frames were judged.
    pub challenge: Option<ChallengeCheck>,
    /// Same person throughout, when every frame was judged.
    pub same_person: Option<SamePerson>,
    /// Every check ran and passed.
    pub live: bool,
    /// Mean of the passive probabilities and motion scores computed (0 when none was).
    pub score: f32,
}

/// An active-liveness decision over the frames of one capture.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveSession {
    /// Thresholds.
    pub cfg: ActiveConfig,
    /// Directions the last frame must show, relative to the first (empty: no challenge).
    pub challenge: Vec<Direction>,
    /// Calibration of the passive verdicts.
    pub calibration: Calibration,
    /// Raw-score threshold of the passive verdicts, over the calibration's (a client's own
    /// security level); `None`: the calibration decides.
    pub passive_threshold: Option<f32>,
}

impl ActiveSession {
    /// What each frame must be analysed with: liveness, a template and the landmarks.
    pub fn options(&self) -> AnalyzeOptions {
        AnalyzeOptions {
            calibration: self.calibration,
            liveness: true,
            template: true,
            landmarks: true,
            ignore_quality: false,
        }
    }

    /// Decides over analysed frames, in capture order.
    pub fn decide(&self, decider: &Decider, frames: &[&Analysis]) -> ActiveOutcome {
        let checks: Vec<FrameCheck> = frames
            .iter()
            .map(
                |a| match decider.frame(a, Pipeline::Dual, self.calibration) {
                    Ok(FrameOutcome::Rejected(r)) => FrameCheck::Rejected(r.code),
                    Ok(FrameOutcome::Verdict(v)) if a.shape.is_some() && a.template.is_some() => {
                        FrameCheck::Judged {
                            passive: v,
                            live: self.passive_threshold.map_or(v.is_live(), |t| v.score >= t),
                        }
                    }
                    _ => FrameCheck::Incomplete,
                },
            )
            .collect();
        let judged = |i: usize| matches!(checks.get(i), Some(FrameCheck::Judged { .. }));
        let shape = |i: usize| frames.get(i).and_then(|a| a.shape.as_ref());
        let motion: Vec<MotionCheck> = (1..frames.len())
            .filter(|&i| judged(i - 1) && judged(i))
            .filter_map(|i| Some(self.motion_between(i, shape(i - 1)?, shape(i)?)))
            .collect();
        let last = frames.len().saturating_sub(1);
        let challenge = match (shape(0), shape(last)) {
            (Some(a), Some(b))
                if !self.challenge.is_empty() && last > 0 && judged(0) && judged(last) =>
            {
                Some(self.challenge_check(a, b))
            }
            _ => None,
        };
        let all_judged = !checks.is_empty() && (0..checks.len()).all(judged);
        let same_person = all_judged.then(|| self.same_person(frames)).flatten();
        let passive: Vec<f32> = checks
            .iter()
            .filter_map(|c| match c {
                FrameCheck::Judged { passive, .. } => Some(passive.probability),
                _ => None,
            })
            .collect();
        let scores: Vec<f32> = passive
            .iter()
            .copied()
            .chain(motion.iter().map(|m| m.score))
            .collect();
        let score = if scores.is_empty() {
            0.0
        } else {
            scores.iter().sum::<f32>() / scores.len() as f32
        };
        let live = all_judged
            && checks
                .iter()
                .all(|c| matches!(c, FrameCheck::Judged { live: true, .. }))
            && motion.len() + 1 == frames.len()
            && motion.iter().all(|m| m.live)
            && (self.challenge.is_empty() || challenge.as_ref().is_some_and(|c| c.passed))
            && same_person.is_none_or(|s| s.same);
        ActiveOutcome {
            frames: checks,
            motion,
            challenge,
            same_person,
            live,
            score,
        }
    }

    /// The 3-D motion check of frames `frame - 1` (`a`) and `frame` (`b`) on their landmarks
    /// (and crops, when kept) alone.
    pub fn motion_between(&self, frame: usize, a: &FaceShape, b: &FaceShape) -> MotionCheck {
        let iod = dist(a.eye_centers[0], a.eye_centers[1]).max(1.0);
        let n = a.points.len().min(b.points.len());
        let moved = (a.points[..n]
            .iter()
            .zip(&b.points[..n])
            .map(|(p, q)| dist2(*p, *q))
            .sum::<f32>()
            / n.max(1) as f32)
            .sqrt()
            / iod;
        let (plane, relief) = (
            correspondences(a, b, &PLANE),
            correspondences(a, b, &RELIEF),
        );
        let (pa, pb): (Vec<_>, Vec<_>) = plane.into_iter().unzip();
        let (ra, rb): (Vec<_>, Vec<_>) = relief.into_iter().unzip();
        let parallax = if rb.len() >= 3 {
            fit_homography(&pa, &pb).map_or(0.0, |h| rms_miss(&h, &ra, &rb) / iod)
        } else {
            0.0
        };
        let moving = moved >= self.cfg.min_motion;
        let score = if moving {
            parallax / (parallax + self.cfg.min_parallax)
        } else {
            0.0
        };
        MotionCheck {
            frame,
            motion: moved,
            parallax,
            score,
            live: moving && parallax >= self.cfg.min_parallax,
        }
    }

    fn challenge_check(&self, a: &FaceShape, b: &FaceShape) -> ChallengeCheck {
        let d_yaw = b.yaw_deg - a.yaw_deg;
        let d_pitch = b.pitch_deg - a.pitch_deg;
        let min = self.cfg.challenge_min_deg;
        let passed = self.challenge.iter().all(|d| {
            let along = d.along(d_yaw, d_pitch);
            let across = if d.is_turn() { d_pitch } else { d_yaw }.abs();
            along >= min && (self.challenge.len() > 1 || along > across)
        });
        let angle = (-d_pitch).atan2(d_yaw).to_degrees();
        ChallengeCheck {
            asked: self.challenge.clone(),
            d_yaw,
            d_pitch,
            movement_deg: if angle < 0.0 { angle + 360.0 } else { angle },
            passed,
        }
    }

    fn same_person(&self, frames: &[&Analysis]) -> Option<SamePerson> {
        let first = frames.first()?.template.as_ref()?;
        let mut max_distance = 0f32;
        for a in &frames[1..] {
            let m = first.compare(a.template.as_ref()?, self.cfg.same_person_distance)?;
            max_distance = max_distance.max(m.distance);
        }
        Some(SamePerson {
            max_distance,
            same: max_distance <= self.cfg.same_person_distance,
        })
    }
}

/// Where landmarks `idx` of frame `a` are in frame `b`: tracked by their appearance (the
/// patch around each in `a`'s crop, matched in `b`'s crop near `b`'s own landmark), which on
/// a flat photo follows the photo's plane exactly; a landmark that cannot be tracked (no
/// texture, out of the crop) is left out. Without crops, `b`'s landmarks themselves.
fn correspondences(a: &FaceShape, b: &FaceShape, idx: &[usize]) -> Vec<([f32; 2], [f32; 2])> {
    idx.iter()
        .filter_map(|&i| {
            let (p, q) = (*a.points.get(i)?, *b.points.get(i)?);
            match (&a.crop, &b.crop) {
                (Some(ca), Some(cb)) => Some((p, track(ca, cb, p, q)?)),
                _ => Some((p, q)),
            }
        })
        .collect()
}

/// Half side of a tracked patch, crop pixels.
const PATCH: i32 = 5;
/// Search radius around the guess, crop pixels.
const SEARCH: i32 = 7;
/// Lowest normalised correlation of an accepted match.
const MIN_NCC: f32 = 0.6;

/// The point of `b` whose surroundings best match (normalised cross-correlation, sub-pixel
/// parabola) those of image point `p` in `a`, searched around image point `guess` of `b`.
fn track(a: &FaceCrop, b: &FaceCrop, p: [f32; 2], guess: [f32; 2]) -> Option<[f32; 2]> {
    let side = (2 * PATCH + 1) as usize;
    let patch = |c: &FaceCrop, at: [f32; 2]| -> Option<Vec<f32>> {
        let mut v = Vec::with_capacity(side * side);
        for dy in -PATCH..=PATCH {
            for dx in -PATCH..=PATCH {
                v.push(c.sample(at[0] + dx as f32, at[1] + dy as f32)?);
            }
        }
        Some(v)
    };
    let centred = |v: &mut Vec<f32>| -> f32 {
        let m = v.iter().sum::<f32>() / v.len() as f32;
        v.iter_mut().for_each(|x| *x -= m);
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    };
    let mut reference = patch(a, a.to_crop(p))?;
    let norm = centred(&mut reference);
    if norm < 2.0 * side as f32 {
        return None; // a flat patch: nothing to track
    }
    let start = b.to_crop(guess);
    let span = (2 * SEARCH + 1) as usize;
    let mut score = vec![f32::NEG_INFINITY; span * span];
    for oy in -SEARCH..=SEARCH {
        for ox in -SEARCH..=SEARCH {
            let at = [start[0] + ox as f32, start[1] + oy as f32];
            if let Some(mut c) = patch(b, at) {
                let n = centred(&mut c);
                if n > 0.0 {
                    let dot: f32 = c.iter().zip(&reference).map(|(x, y)| x * y).sum();
                    score[(oy + SEARCH) as usize * span + (ox + SEARCH) as usize] =
                        dot / (n * norm);
                }
            }
        }
    }
    let (best, &ncc) = score.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1))?;
    if ncc < MIN_NCC {
        return None;
    }
    let (by, bx) = (best / span, best % span);
    let at = |x: usize, y: usize| score[y * span + x];
    // Parabola through the best score and its neighbours, per axis.
    let refine = |l: f32, c: f32, r: f32| {
        let d = l - 2.0 * c + r;
        if l.is_finite() && r.is_finite() && d < 0.0 {
            (0.5 * (l - r) / d).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    };
    let sx = if bx > 0 && bx + 1 < span {
        refine(at(bx - 1, by), ncc, at(bx + 1, by))
    } else {
        0.0
    };
    let sy = if by > 0 && by + 1 < span {
        refine(at(bx, by - 1), ncc, at(bx, by + 1))
    } else {
        0.0
    };
    Some(b.to_image([
        start[0] + (bx as i32 - SEARCH) as f32 + sx,
        start[1] + (by as i32 - SEARCH) as f32 + sy,
    ]))
}

/// Landmarks of the facial plane the homography is fitted to: brow ends, eye corners, mouth
/// corners.
const PLANE: [usize; 10] = [17, 21, 22, 26, 36, 39, 42, 45, 48, 54];

/// Landmarks in relief before that plane: lower nose bridge, nose tip, nostrils.
const RELIEF: [usize; 5] = [29, 30, 31, 33, 35];

fn dist2(a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    dist2(a, b).sqrt()
}

/// Translation and scale that move `pts`' centroid to 0 and their mean distance to sqrt(2)
/// (Hartley's normalisation): `(cx, cy, s)`, normalised = `(p - c) * s`.
fn normaliser(pts: &[[f32; 2]]) -> (f64, f64, f64) {
    let n = pts.len().max(1) as f64;
    let cx = pts.iter().map(|p| f64::from(p[0])).sum::<f64>() / n;
    let cy = pts.iter().map(|p| f64::from(p[1])).sum::<f64>() / n;
    let mean = pts
        .iter()
        .map(|p| ((f64::from(p[0]) - cx).powi(2) + (f64::from(p[1]) - cy).powi(2)).sqrt())
        .sum::<f64>()
        / n;
    (cx, cy, if mean > 1e-9 { 2f64.sqrt() / mean } else { 1.0 })
}

/// A plane projection: `(h0 x + h1 y + h2, h3 x + h4 y + h5) / (h6 x + h7 y + 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography {
    /// The eight coefficients, in pixels of both images.
    h: [f64; 8],
}

impl Homography {
    /// Maps a point; `None` on the horizon line.
    pub fn apply(&self, p: [f32; 2]) -> Option<[f32; 2]> {
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        let h = &self.h;
        let w = h[6] * x + h[7] * y + 1.0;
        if w.abs() < 1e-9 {
            return None;
        }
        Some([
            ((h[0] * x + h[1] * y + h[2]) / w) as f32,
            ((h[3] * x + h[4] * y + h[5]) / w) as f32,
        ])
    }
}

/// The least-squares homography carrying `a` onto `b` (normalised DLT with `h33 = 1`, at
/// least five point pairs); `None` when degenerate.
pub fn fit_homography(a: &[[f32; 2]], b: &[[f32; 2]]) -> Option<Homography> {
    if a.len() != b.len() || a.len() < 5 {
        return None;
    }
    let (ax, ay, sa) = normaliser(a);
    let (bx, by, sb) = normaliser(b);
    let norm = |p: &[f32; 2], cx: f64, cy: f64, s: f64| {
        ((f64::from(p[0]) - cx) * s, (f64::from(p[1]) - cy) * s)
    };
    // u = (h0 x + h1 y + h2) / (h6 x + h7 y + 1), v likewise: two linear rows per pair,
    // solved through the normal equations.
    let mut m = [[0f64; 8]; 8];
    let mut rhs = [0f64; 8];
    for (p, q) in a.iter().zip(b) {
        let (x, y) = norm(p, ax, ay, sa);
        let (u, v) = norm(q, bx, by, sb);
        for (row, t) in [
            ([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y], u),
            ([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y], v),
        ] {
            for r in 0..8 {
                for c in 0..8 {
                    m[r][c] += row[r] * row[c];
                }
                rhs[r] += row[r] * t;
            }
        }
    }
    let n = solve(m, rhs)?;
    // Undo the normalisations: H = Tb^-1 N Ta, with T(p) = (p - c) s.
    let ta = [[sa, 0.0, -sa * ax], [0.0, sa, -sa * ay], [0.0, 0.0, 1.0]];
    let tb_inv = [[1.0 / sb, 0.0, bx], [0.0, 1.0 / sb, by], [0.0, 0.0, 1.0]];
    let nm = [[n[0], n[1], n[2]], [n[3], n[4], n[5]], [n[6], n[7], 1.0]];
    let mul = |p: [[f64; 3]; 3], q: [[f64; 3]; 3]| {
        let mut r = [[0f64; 3]; 3];
        for (i, row) in r.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| p[i][k] * q[k][j]).sum();
            }
        }
        r
    };
    let h = mul(mul(tb_inv, nm), ta);
    if h[2][2].abs() < 1e-12 {
        return None;
    }
    let k = 1.0 / h[2][2];
    Some(Homography {
        h: [
            h[0][0] * k,
            h[0][1] * k,
            h[0][2] * k,
            h[1][0] * k,
            h[1][1] * k,
            h[1][2] * k,
            h[2][0] * k,
            h[2][1] * k,
        ],
    })
}

/// RMS distance by which `h` applied to `a` misses `b`, pixels (infinite on the horizon).
pub fn rms_miss(h: &Homography, a: &[[f32; 2]], b: &[[f32; 2]]) -> f32 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    let sum: f32 = a
        .iter()
        .zip(b)
        .map(|(p, q)| h.apply(*p).map_or(f32::INFINITY, |m| dist2(m, *q)))
        .sum();
    (sum / n as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> Vec<[f32; 2]> {
        (0..n)
            .map(|i| {
                let a = i as f32 * 0.37;
                [
                    300.0 + (60.0 + 7.0 * (i % 5) as f32) * a.cos(),
                    200.0 + 80.0 * a.sin(),
                ]
            })
            .collect()
    }

    #[test]
    fn a_plane_projection_leaves_no_residual_and_depth_does() {
        let a = ring(68);
        // A perspective map of the plane.
        let h = [1.05, 0.08, 12.0, -0.04, 0.97, -7.0, 0.0004, -0.0002];
        let planar: Vec<[f32; 2]> = a
            .iter()
            .map(|&[x, y]| {
                let w = h[6] * x + h[7] * y + 1.0;
                [
                    (h[0] * x + h[1] * y + h[2]) / w,
                    (h[3] * x + h[4] * y + h[5]) / w,
                ]
            })
            .collect();
        let fit = fit_homography(&a, &planar).unwrap();
        assert!(rms_miss(&fit, &a, &planar) < 1e-2);
        // Points at different depths shifting by different amounts (parallax).
        let deep: Vec<[f32; 2]> = a
            .iter()
            .enumerate()
            .map(|(i, &[x, y])| [x + if i % 3 == 0 { 9.0 } else { 0.0 }, y])
            .collect();
        let fit = fit_homography(&a, &deep).unwrap();
        assert!(rms_miss(&fit, &a, &deep) > 2.0);
        assert!(fit_homography(&a[..4], &deep[..4]).is_none());
    }

    fn shape_at(yaw: f32, pitch: f32, points: Vec<[f32; 2]>) -> FaceShape {
        FaceShape {
            eye_centers: [points[36], points[45]],
            points,
            eye_openness: [0.3, 0.3],
            mouth_openness: 0.0,
            yaw_deg: yaw,
            pitch_deg: pitch,
            roll_deg: 0.0,
            crop: None,
        }
    }

    #[test]
    fn challenges_need_the_asked_direction_far_enough() {
        let s = |challenge| ActiveSession {
            cfg: ActiveConfig::default(),
            challenge,
            calibration: Calibration::Regular,
            passive_threshold: None,
        };
        let a = shape_at(0.0, 0.0, ring(68));
        let left = shape_at(12.0, 2.0, ring(68));
        let c = s(vec![Direction::Left]).challenge_check(&a, &left);
        assert!(c.passed, "{c:?}");
        assert!(c.movement_deg < 15.0 || c.movement_deg > 345.0, "{c:?}");
        assert!(!s(vec![Direction::Right]).challenge_check(&a, &left).passed);
        assert!(!s(vec![Direction::Up]).challenge_check(&a, &left).passed);
        let small = shape_at(4.0, 0.0, ring(68));
        assert!(!s(vec![Direction::Left]).challenge_check(&a, &small).passed);
        let up = shape_at(1.0, -10.0, ring(68));
        let c = s(vec![Direction::Up]).challenge_check(&a, &up);
        assert!(c.passed && (c.movement_deg - 84.3).abs() < 1.0, "{c:?}");
        assert_eq!(Direction::parse(" LEFT "), Some(Direction::Left));
        assert_eq!(Direction::parse("sideways"), None);
    }

    #[test]
    fn stills_and_plane_moves_fail_the_motion_check_and_parallax_passes() {
        let s = ActiveSession {
            cfg: ActiveConfig::default(),
            challenge: vec![],
            calibration: Calibration::Regular,
            passive_threshold: None,
        };
        let pts = ring(68);
        let a = shape_at(0.0, 0.0, pts.clone());
        let still = s.motion_between(1, &a, &a);
        assert_eq!((still.live, still.score), (false, 0.0));
        let shifted = shape_at(
            0.0,
            0.0,
            pts.iter()
                .map(|&[x, y]| [x * 1.1 + 15.0, y * 1.1 - 4.0])
                .collect(),
        );
        let m = s.motion_between(1, &a, &shifted);
        assert!(m.motion > 0.05 && !m.live && m.parallax < 0.001, "{m:?}");
        let turned = shape_at(
            0.0,
            0.0,
            pts.iter()
                .enumerate()
                .map(|(i, &[x, y])| [x + if i % 3 == 0 { 14.0 } else { 2.0 }, y])
                .collect(),
        );
        let m = s.motion_between(1, &a, &turned);
        assert!(m.live && m.score > 0.5, "{m:?}");
        assert!(ActiveConfig::default().validate().is_ok());
        let bad = ActiveConfig {
            min_parallax: 0.0,
            ..ActiveConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
