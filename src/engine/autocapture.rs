//! Autocapture feedback: what a capture client should tell the user about one analysed frame
//! (no face, too far, off centre, too dark, blurred, eyes closed, head turned), each from a
//! measurement of the detector, the quality report or the 68 landmarks under the thresholds of
//! [`AutocaptureConfig`] (`[autocapture]`), and the best frame of a capture.
//!
//! Positions are in the image as sent (after any rotation the client asked for): `FaceOnLeft`
//! means the face's centre lies left of the image's centre band. Eyes are the person's own:
//! the person's left eye is on the right of an unmirrored image.

use serde::{Deserialize, Serialize};

use super::{Analysis, Rejection};

/// One piece of capture feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Feedback {
    /// The image's shorter side is under `min_image_side`.
    ImageResolutionTooLow,
    /// No face was detected.
    NoFaceDetected,
    /// More comparable faces than the quality gate allows.
    MultipleFacesDetected,
    /// Yaw, pitch or roll over their bounds.
    InvalidPose,
    /// The face is narrower than the size window's minimum.
    FaceTooFar,
    /// The face is wider than the window's maximum, or the gate found it too close.
    FaceTooClose,
    /// The face's centre is left of the centre band.
    FaceOnLeft,
    /// The face's centre is right of the centre band.
    FaceOnRight,
    /// The face's centre is above the centre band.
    FaceTooHigh,
    /// The face's centre is below the centre band.
    FaceTooLow,
    /// The face is too dark.
    InsufficientLighting,
    /// The face is too bright or too much of it is clipped.
    LightTooBright,
    /// The face is not sharp enough.
    TooMuchBlur,
    /// The person's left eye is closed.
    LeftEyeClosed,
    /// The person's right eye is closed.
    RightEyeClosed,
}

impl Feedback {
    /// The code as capture clients spell it (`FACE_TOO_FAR`).
    pub fn code(self) -> &'static str {
        match self {
            Feedback::ImageResolutionTooLow => "IMAGE_RESOLUTION_TOO_LOW",
            Feedback::NoFaceDetected => "NO_FACE_DETECTED",
            Feedback::MultipleFacesDetected => "MULTIPLE_FACES_DETECTED",
            Feedback::InvalidPose => "INVALID_POSE",
            Feedback::FaceTooFar => "FACE_TOO_FAR",
            Feedback::FaceTooClose => "FACE_TOO_CLOSE",
            Feedback::FaceOnLeft => "FACE_ON_LEFT",
            Feedback::FaceOnRight => "FACE_ON_RIGHT",
            Feedback::FaceTooHigh => "FACE_TOO_HIGH",
            Feedback::FaceTooLow => "FACE_TOO_LOW",
            Feedback::InsufficientLighting => "INSUFFICIENT_LIGHTING",
            Feedback::LightTooBright => "LIGHT_TOO_BRIGHT",
            Feedback::TooMuchBlur => "TOO_MUCH_BLUR",
            Feedback::LeftEyeClosed => "LEFT_EYE_CLOSED",
            Feedback::RightEyeClosed => "RIGHT_EYE_CLOSED",
        }
    }
}

/// Autocapture thresholds (`[autocapture]` in the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutocaptureConfig {
    /// Smallest shorter image side, pixels (the recommended capture is 480x640).
    pub min_image_side: u32,
    /// Narrowest face box, as a fraction of the image width.
    pub min_face_width: f32,
    /// Widest face box, as a fraction of the image width.
    pub max_face_width: f32,
    /// Largest horizontal offset of the face box's centre from the image's centre, as a
    /// fraction of the width.
    pub max_offset_x: f32,
    /// Highest and lowest face centre, as fractions of the height from the top.
    pub centre_band_y: [f32; 2],
    /// Darkest mean face luma, 0..255.
    pub min_brightness: f32,
    /// Brightest mean face luma, 0..255.
    pub max_brightness: f32,
    /// Largest fraction of clipped face pixels.
    pub max_clipped_fraction: f32,
    /// Smallest face sharpness (the quality report's Laplacian variance).
    pub min_sharpness: f32,
    /// Smallest eye aspect ratio of an open eye.
    pub min_eye_openness: f32,
    /// Largest absolute yaw, degrees.
    pub max_yaw_deg: f32,
    /// Largest absolute pitch, degrees.
    pub max_pitch_deg: f32,
    /// Largest absolute roll, degrees.
    pub max_roll_deg: f32,
}

impl Default for AutocaptureConfig {
    fn default() -> Self {
        Self {
            min_image_side: 240,
            min_face_width: 0.2,
            max_face_width: 0.8,
            max_offset_x: 0.15,
            centre_band_y: [0.25, 0.65],
            min_brightness: 60.0,
            max_brightness: 210.0,
            max_clipped_fraction: 0.25,
            min_sharpness: 25.0,
            min_eye_openness: 0.15,
            max_yaw_deg: 20.0,
            max_pitch_deg: 20.0,
            max_roll_deg: 20.0,
        }
    }
}

impl AutocaptureConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> crate::Result<()> {
        let frac = |v: f32| (0.0..=1.0).contains(&v);
        let ok = frac(self.min_face_width)
            && frac(self.max_face_width)
            && self.min_face_width < self.max_face_width
            && frac(self.max_offset_x)
            && frac(self.centre_band_y[0])
            && frac(self.centre_band_y[1])
            && self.centre_band_y[0] < self.centre_band_y[1]
            && self.min_brightness < self.max_brightness
            && frac(self.max_clipped_fraction)
            && self.min_sharpness >= 0.0
            && self.min_eye_openness >= 0.0
            && [self.max_yaw_deg, self.max_pitch_deg, self.max_roll_deg]
                .iter()
                .all(|d| *d > 0.0 && *d <= 90.0);
        if !ok {
            return Err(crate::Error::InvalidArgument(
                "autocapture: fractions must lie in [0, 1] with each minimum under its maximum, \
                 angles in (0, 90] degrees"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A client's face size window, fractions of the image width (Knomi's
/// `face_detection_min_size` / `_max_size`), over the configured one.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SizeWindow {
    /// Narrowest face, when given.
    pub min: Option<f32>,
    /// Widest face, when given.
    pub max: Option<f32>,
}

/// The feedback for one analysed frame, in [`Feedback`] order (empty: a good capture).
/// Needs the frame's quality report (and its landmarks for the eyes; without them the eyes
/// are not judged).
pub fn feedback(a: &Analysis, cfg: &AutocaptureConfig, window: SizeWindow) -> Vec<Feedback> {
    let mut out = Vec::new();
    if a.width.min(a.height) < cfg.min_image_side {
        out.push(Feedback::ImageResolutionTooLow);
    }
    let code = a.rejection.as_ref().map(|r| r.code);
    let face = a.selected_face.and_then(|i| a.faces.get(i));
    let (Some(face), Some(q)) = (face, a.quality.as_ref()) else {
        out.push(Feedback::NoFaceDetected);
        return out;
    };
    if code == Some(Rejection::TooManyFaces) {
        out.push(Feedback::MultipleFacesDetected);
    }
    let (yaw, pitch, roll) = match &a.shape {
        Some(s) => (s.yaw_deg, s.pitch_deg, s.roll_deg),
        None => (q.pose.yaw, q.pose.pitch, q.pose.roll),
    };
    if code == Some(Rejection::FaceAngleTooLarge)
        || yaw.abs() > cfg.max_yaw_deg
        || pitch.abs() > cfg.max_pitch_deg
        || roll.abs() > cfg.max_roll_deg
    {
        out.push(Feedback::InvalidPose);
    }
    let (w, h) = (a.width.max(1) as f32, a.height.max(1) as f32);
    let [x1, y1, x2, y2] = face.bbox;
    let width = (x2 - x1) / w;
    let (min_w, max_w) = (
        window.min.unwrap_or(cfg.min_face_width),
        window.max.unwrap_or(cfg.max_face_width),
    );
    if width < min_w || code == Some(Rejection::FaceTooSmall) {
        out.push(Feedback::FaceTooFar);
    } else if width > max_w || code == Some(Rejection::FaceTooClose) {
        out.push(Feedback::FaceTooClose);
    }
    let (cx, cy) = ((x1 + x2) / 2.0 / w, (y1 + y2) / 2.0 / h);
    if cx < 0.5 - cfg.max_offset_x {
        out.push(Feedback::FaceOnLeft);
    } else if cx > 0.5 + cfg.max_offset_x {
        out.push(Feedback::FaceOnRight);
    }
    if cy < cfg.centre_band_y[0] {
        out.push(Feedback::FaceTooHigh);
    } else if cy > cfg.centre_band_y[1] {
        out.push(Feedback::FaceTooLow);
    }
    if q.brightness < cfg.min_brightness {
        out.push(Feedback::InsufficientLighting);
    } else if q.brightness > cfg.max_brightness || q.clipped_fraction > cfg.max_clipped_fraction {
        out.push(Feedback::LightTooBright);
    }
    if q.sharpness < cfg.min_sharpness {
        out.push(Feedback::TooMuchBlur);
    }
    if let Some(s) = &a.shape {
        // eye_openness is [image-left eye, image-right eye]: the person's right, then left.
        if s.eye_openness[1] < cfg.min_eye_openness {
            out.push(Feedback::LeftEyeClosed);
        }
        if s.eye_openness[0] < cfg.min_eye_openness {
            out.push(Feedback::RightEyeClosed);
        }
    }
    out
}

/// The best frame of a capture: the fewest feedback items, then the highest quality score,
/// then the earliest. `None` for no frames.
pub fn best_frame(frames: &[(&Analysis, &[Feedback])]) -> Option<usize> {
    let quality = |a: &Analysis| a.quality.as_ref().map_or(-1.0, |q| q.score);
    frames
        .iter()
        .enumerate()
        .min_by(|(i, (a, fa)), (j, (b, fb))| {
            fa.len()
                .cmp(&fb.len())
                .then(quality(b).total_cmp(&quality(a)))
                .then(i.cmp(j))
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quality::{Pose, QualityReport};
    use crate::engine::{Face, RejectionInfo, Timings};

    fn analysis(bbox: [f32; 4], brightness: f32, sharpness: f32) -> Analysis {
        Analysis {
            width: 480,
            height: 640,
            faces: vec![Face {
                bbox,
                score: 0.99,
                landmarks: [[0.0; 2]; 5],
            }],
            selected_face: Some(0),
            quality: Some(QualityReport {
                score: 0.8,
                face_count: 1,
                face_width_px: bbox[2] - bbox[0],
                face_height_px: bbox[3] - bbox[1],
                iod_px: 80.0,
                pose: Pose::default(),
                sharpness,
                brightness,
                clipped_fraction: 0.0,
                dynamic_range: 120.0,
                cropped_fraction: 0.0,
                border_margin: 0.3,
                face_height_ratio: 0.4,
            }),
            rejection: None,
            liveness: None,
            template: None,
            shape: None,
            timings: Timings::default(),
        }
    }

    #[test]
    fn each_code_follows_its_measurement() {
        let cfg = AutocaptureConfig::default();
        let none = SizeWindow::default();
        let good = analysis([140.0, 150.0, 340.0, 400.0], 120.0, 500.0);
        assert!(feedback(&good, &cfg, none).is_empty());
        let far = analysis([220.0, 250.0, 260.0, 300.0], 120.0, 500.0);
        assert_eq!(feedback(&far, &cfg, none), [Feedback::FaceTooFar]);
        let tight = SizeWindow {
            min: Some(0.5),
            max: None,
        };
        assert_eq!(feedback(&good, &cfg, tight), [Feedback::FaceTooFar]);
        let left_high = analysis([0.0, 0.0, 150.0, 200.0], 120.0, 500.0);
        assert_eq!(
            feedback(&left_high, &cfg, none),
            [Feedback::FaceOnLeft, Feedback::FaceTooHigh]
        );
        let dark_blurred = analysis([140.0, 150.0, 340.0, 400.0], 30.0, 3.0);
        assert_eq!(
            feedback(&dark_blurred, &cfg, none),
            [Feedback::InsufficientLighting, Feedback::TooMuchBlur]
        );
        let mut turned = good.clone();
        if let Some(q) = turned.quality.as_mut() {
            q.pose.yaw = 30.0;
        }
        assert_eq!(feedback(&turned, &cfg, none), [Feedback::InvalidPose]);
        let mut empty = good.clone();
        empty.selected_face = None;
        empty.quality = None;
        empty.width = 100;
        empty.rejection = Some(RejectionInfo {
            code: Rejection::FaceNotFound,
            message: String::new(),
        });
        assert_eq!(
            feedback(&empty, &cfg, none),
            [Feedback::ImageResolutionTooLow, Feedback::NoFaceDetected]
        );
        assert_eq!(Feedback::FaceTooFar.code(), "FACE_TOO_FAR");
    }

    #[test]
    fn the_best_frame_has_the_least_feedback_then_the_best_quality() {
        let a = analysis([140.0, 150.0, 340.0, 400.0], 120.0, 500.0);
        let mut b = a.clone();
        if let Some(q) = b.quality.as_mut() {
            q.score = 0.9;
        }
        let some = [Feedback::FaceOnLeft];
        assert_eq!(best_frame(&[(&a, &some), (&b, &[])]), Some(1));
        assert_eq!(best_frame(&[(&a, &[]), (&b, &[])]), Some(1));
        assert_eq!(best_frame(&[(&b, &some), (&a, &some)]), Some(0));
        assert_eq!(best_frame(&[]), None);
        assert!(AutocaptureConfig::default().validate().is_ok());
        let bad = AutocaptureConfig {
            min_face_width: 0.9,
            ..AutocaptureConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
