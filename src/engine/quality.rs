//! Face quality: measurements taken from the detection and the pixels, the rejection reason
//! they imply under configurable thresholds, and a 0..1 fitness score for a liveness decision.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::PixelView;
use crate::nn::retinaface::Detection;

/// Why an image cannot get a liveness verdict. Names follow the ID R&D error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Rejection {
    /// No face was detected.
    FaceNotFound,
    /// More than the allowed number of comparable faces.
    TooManyFaces,
    /// The face or its interpupillary distance is below the minimum.
    FaceTooSmall,
    /// The face extends beyond the image.
    FaceCropped,
    /// The face is within the border margin.
    FaceCloseToBorder,
    /// The face fills too much of the image.
    FaceTooClose,
    /// Yaw or pitch beyond the limit.
    FaceAngleTooLarge,
    /// The face region is too blurry.
    FaceTooBlurry,
    /// The face region is too dark or too bright.
    FaceBadExposure,
}

impl Rejection {
    /// The error code as the ID R&D dialects spell it.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::FaceNotFound => "FACE_NOT_FOUND",
            Rejection::TooManyFaces => "TOO_MANY_FACES",
            Rejection::FaceTooSmall => "FACE_TOO_SMALL",
            Rejection::FaceCropped => "FACE_CROPPED",
            Rejection::FaceCloseToBorder => "FACE_CLOSE_TO_BORDER",
            Rejection::FaceTooClose => "FACE_TOO_CLOSE",
            Rejection::FaceAngleTooLarge => "FACE_ANGLE_TOO_LARGE",
            Rejection::FaceTooBlurry => "FACE_TOO_BLURRY",
            Rejection::FaceBadExposure => "FACE_BAD_EXPOSURE",
        }
    }

    /// Whether finer pixels could change this rejection: only the blur and exposure checks
    /// read pixels, and every check before them in the order is geometry from the detector.
    pub fn reads_pixels(self) -> bool {
        matches!(self, Rejection::FaceTooBlurry | Rejection::FaceBadExposure)
    }

    /// A human-readable description.
    pub fn message(self) -> &'static str {
        match self {
            Rejection::FaceNotFound => "Failed to detect face",
            Rejection::TooManyFaces => "Too many faces detected",
            Rejection::FaceTooSmall => "Interpupillary distance is too small",
            Rejection::FaceCropped => "Face is cropped by the image border",
            Rejection::FaceCloseToBorder => "Face is too close to the image border",
            Rejection::FaceTooClose => "Face is too close to the camera",
            Rejection::FaceAngleTooLarge => "Face angle is too large",
            Rejection::FaceTooBlurry => "Face is too blurry",
            Rejection::FaceBadExposure => "Face is too dark or too bright",
        }
    }
}

/// Thresholds for the quality checks. Every check can be tuned; see `docs/operations.md`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityThresholds {
    /// Most faces allowed (faces smaller than `secondary_face_ratio` of the largest are ignored).
    pub max_faces: usize,
    /// A face counts toward `max_faces` when its height is at least this fraction of the largest.
    pub secondary_face_ratio: f32,
    /// Minimum face box side, pixels of the original image.
    pub min_face_px: f32,
    /// Minimum interpupillary distance, pixels of the original image.
    pub min_iod_px: f32,
    /// Allowed overhang of the face box beyond the image, as a fraction of the box side.
    pub max_cropped_fraction: f32,
    /// Minimum distance from the face box to the image border, fraction of the box side.
    pub min_border_margin: f32,
    /// Largest face box height as a fraction of the image height.
    pub max_face_height_ratio: f32,
    /// Largest absolute yaw, degrees.
    pub max_yaw_deg: f32,
    /// Largest absolute pitch, degrees.
    pub max_pitch_deg: f32,
    /// Minimum variance of the Laplacian of the face normalised to 112 px high.
    pub min_sharpness: f32,
    /// Allowed mean luma of the face region, 0..255.
    pub min_brightness: f32,
    /// Allowed mean luma of the face region, 0..255.
    pub max_brightness: f32,
    /// Whether FACE_CLOSE_TO_BORDER and FACE_TOO_CLOSE reject (tight crops need them off).
    pub check_framing: bool,
}

impl Default for QualityThresholds {
    fn default() -> Self {
        Self {
            max_faces: 1,
            secondary_face_ratio: 0.5,
            min_face_px: 40.0,
            min_iod_px: 20.0,
            max_cropped_fraction: 0.15,
            min_border_margin: 0.0,
            max_face_height_ratio: 0.95,
            max_yaw_deg: 35.0,
            max_pitch_deg: 30.0,
            min_sharpness: 15.0,
            min_brightness: 35.0,
            max_brightness: 230.0,
            check_framing: true,
        }
    }
}

/// Head pose estimated from the five landmarks (degrees; a geometric estimate, not a fit).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Pose {
    /// Left-right rotation; positive when the nose moves toward image right.
    pub yaw: f32,
    /// Up-down rotation; positive when the nose moves down.
    pub pitch: f32,
    /// In-plane rotation of the eye line.
    pub roll: f32,
}

/// Measurements for the selected face.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualityReport {
    /// 0..1: how fit the image is for a liveness decision.
    pub score: f32,
    /// Number of detected faces.
    pub face_count: usize,
    /// Width of the face box, pixels.
    pub face_width_px: f32,
    /// Height of the face box, pixels.
    pub face_height_px: f32,
    /// Interpupillary distance, pixels.
    pub iod_px: f32,
    /// Estimated head pose.
    pub pose: Pose,
    /// Variance of the Laplacian on the face, normalised to 112 px high.
    pub sharpness: f32,
    /// Mean luma of the face region, 0..255.
    pub brightness: f32,
    /// Fraction of face pixels at 0..5 or 250..255.
    pub clipped_fraction: f32,
    /// Spread of the face's luma: 95th minus 5th percentile, 0..255 (a flat, washed-out or
    /// underexposed face has little).
    #[serde(default)]
    pub dynamic_range: f32,
    /// Largest overhang of the face box beyond the image, fraction of the box side.
    pub cropped_fraction: f32,
    /// Smallest gap between the face box and the border, fraction of the box side (negative
    /// when cropped).
    pub border_margin: f32,
    /// Face box height over image height.
    pub face_height_ratio: f32,
}

/// `2 d / IOD` for a nose tip `d = 0.55 IOD` in front of the eye plane.
const NOSE_DEPTH_FACTOR: f32 = 1.1;

/// Estimates yaw, pitch and roll from five landmarks.
///
/// Yaw: the nose's offset from the midline of eyes and mouth, over half the eye distance,
/// equals `(2 d / IOD) tan(yaw)` for a nose tip `d` in front of the eye plane; with the
/// anthropometric `d = 0.55 IOD` that gives `yaw = atan(ratio / 1.1)`. Pitch: where the nose sits between the eye line and the mouth line;
/// 0.55 is frontal for this detector's landmarks. Roll: the eye line's angle.
pub fn estimate_pose(lm: &[[f32; 2]; 5]) -> Pose {
    let [le, re, nose, lm_, rm] = *lm;
    let eye_mid = [(le[0] + re[0]) / 2.0, (le[1] + re[1]) / 2.0];
    let mouth_mid = [(lm_[0] + rm[0]) / 2.0, (lm_[1] + rm[1]) / 2.0];
    let roll = (re[1] - le[1]).atan2(re[0] - le[0]);
    // Work in the face's own frame (undo roll).
    let (c, s) = (roll.cos(), roll.sin());
    let rot = |p: [f32; 2]| {
        let (dx, dy) = (p[0] - eye_mid[0], p[1] - eye_mid[1]);
        [c * dx + s * dy, -s * dx + c * dy]
    };
    let (le_r, re_r, n, m) = (rot(le), rot(re), rot(nose), rot(mouth_mid));
    let half_iod = ((re_r[0] - le_r[0]) / 2.0).abs().max(1e-3);
    let mid_x = m[0] / 2.0;
    let yaw = ((n[0] - mid_x) / half_iod / NOSE_DEPTH_FACTOR)
        .atan()
        .to_degrees();
    let span = m[1].abs().max(1e-3);
    let ratio = n[1] / span;
    let pitch = ((ratio - 0.55) / 0.45).clamp(-1.0, 1.0).asin().to_degrees();
    Pose {
        yaw,
        pitch,
        roll: roll.to_degrees(),
    }
}

/// Luma statistics of the face box.
struct PixelStats {
    /// Mean luma.
    brightness: f32,
    /// Variance of the Laplacian.
    sharpness: f32,
    /// Fraction of clipped pixels.
    clipped: f32,
    /// 95th minus 5th luma percentile.
    dynamic_range: f32,
}

/// Luma statistics and Laplacian variance of the face box, the box resampled to 112 px high
/// (nearest neighbour) so that sharpness does not depend on resolution.
fn pixel_stats(img: &RgbImage, bbox: [f32; 4]) -> PixelStats {
    let (w, h) = img.dimensions();
    let x1 = bbox[0].max(0.0) as u32;
    let y1 = bbox[1].max(0.0) as u32;
    let x2 = (bbox[2].min(w as f32 - 1.0)).max(0.0) as u32;
    let y2 = (bbox[3].min(h as f32 - 1.0)).max(0.0) as u32;
    if x2 <= x1 + 2 || y2 <= y1 + 2 {
        return PixelStats {
            brightness: 0.0,
            sharpness: 0.0,
            clipped: 1.0,
            dynamic_range: 0.0,
        };
    }
    let bw = (x2 - x1) as f32;
    let bh = (y2 - y1) as f32;
    let oh = 112usize;
    let ow = ((bw / bh) * oh as f32).round().max(8.0) as usize;
    let mut luma = vec![0f32; ow * oh];
    let mut histogram = [0usize; 256];
    let (mut sum, mut clipped) = (0f64, 0usize);
    for oy in 0..oh {
        let sy = y1 + ((oy as f32 + 0.5) * bh / oh as f32) as u32;
        for ox in 0..ow {
            let sx = x1 + ((ox as f32 + 0.5) * bw / ow as f32) as u32;
            let p = img.get_pixel(sx.min(w - 1), sy.min(h - 1)).0;
            let l = 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
            luma[oy * ow + ox] = l;
            histogram[(l.round() as usize).min(255)] += 1;
            sum += f64::from(l);
            if !(5.0..=250.0).contains(&l) {
                clipped += 1;
            }
        }
    }
    let n = (ow * oh) as f64;
    let mut lap = Vec::with_capacity((ow - 2) * (oh - 2));
    for y in 1..oh - 1 {
        for x in 1..ow - 1 {
            let c = luma[y * ow + x];
            let v = luma[(y - 1) * ow + x]
                + luma[(y + 1) * ow + x]
                + luma[y * ow + x - 1]
                + luma[y * ow + x + 1]
                - 4.0 * c;
            lap.push(f64::from(v));
        }
    }
    let m = lap.iter().sum::<f64>() / lap.len().max(1) as f64;
    let var = lap.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / lap.len().max(1) as f64;
    let percentile = |q: f64| {
        let want = (q * n).ceil().max(1.0) as usize;
        let mut seen = 0;
        for (v, c) in histogram.iter().enumerate() {
            seen += c;
            if seen >= want {
                return v as f32;
            }
        }
        255.0
    };
    PixelStats {
        brightness: (sum / n) as f32,
        sharpness: var as f32,
        clipped: (clipped as f64 / n) as f32,
        dynamic_range: percentile(0.95) - percentile(0.05),
    }
}

/// Linear ramp: 0 at `lo`, 1 at `hi` (either order), clamped.
fn ramp(v: f32, lo: f32, hi: f32) -> f32 {
    if (hi - lo).abs() < f32::EPSILON {
        return if v >= hi { 1.0 } else { 0.0 };
    }
    ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// The face to judge: the tallest (the first of equals).
pub fn largest(faces: &[Detection]) -> Option<usize> {
    let height = |d: &Detection| d.bbox[3] - d.bbox[1];
    faces
        .iter()
        .enumerate()
        .max_by(|a, b| height(a.1).total_cmp(&height(b.1)))
        .map(|(i, _)| i)
}

/// Picks the face to judge ([`largest`]), measures it and decides the rejection, if any.
///
/// `faces` are in full-resolution pixels of an upright image of `full_size`; `pixels` is where
/// the largest face's pixels are read (the image, reduced or not, or a finer region around the
/// face). Returns the index of the selected face (if any face was found), the report, and the
/// first failed check in the order the enum lists them.
pub fn assess(
    full_size: (u32, u32),
    faces: &[Detection],
    pixels: Option<PixelView<'_>>,
    t: &QualityThresholds,
) -> (Option<usize>, Option<QualityReport>, Option<Rejection>) {
    let height = |d: &Detection| d.bbox[3] - d.bbox[1];
    let (Some(best), Some(view)) = (largest(faces), pixels) else {
        return (None, None, Some(Rejection::FaceNotFound));
    };
    let largest = &faces[best];
    let (iw, ih) = (full_size.0 as f32, full_size.1 as f32);
    let [x1, y1, x2, y2] = largest.bbox;
    let (fw, fh) = (x2 - x1, y2 - y1);
    let comparable = faces
        .iter()
        .filter(|d| height(d) >= t.secondary_face_ratio * fh)
        .count();
    let lm = &largest.landmarks;
    let iod = ((lm[1][0] - lm[0][0]).powi(2) + (lm[1][1] - lm[0][1]).powi(2)).sqrt();
    let pose = estimate_pose(lm);
    let over = [(-x1) / fw, (-y1) / fh, (x2 - iw) / fw, (y2 - ih) / fh];
    let cropped = over.iter().copied().fold(f32::MIN, f32::max).max(0.0);
    let margin = [x1 / fw, y1 / fh, (iw - x2) / fw, (ih - y2) / fh]
        .iter()
        .copied()
        .fold(f32::MAX, f32::min);
    let PixelStats {
        brightness,
        sharpness,
        clipped,
        dynamic_range,
    } = {
        let [a, b] = [view.to_view([x1, y1]), view.to_view([x2, y2])];
        pixel_stats(view.image, [a[0], a[1], b[0], b[1]])
    };
    let ratio = fh / ih;

    let score = ramp(iod, t.min_iod_px * 0.5, t.min_iod_px * 3.0)
        * ramp(pose.yaw.abs(), t.max_yaw_deg * 1.3, t.max_yaw_deg * 0.3)
        * ramp(
            pose.pitch.abs(),
            t.max_pitch_deg * 1.3,
            t.max_pitch_deg * 0.3,
        )
        * ramp(sharpness, t.min_sharpness * 0.5, t.min_sharpness * 4.0).max(0.05)
        * ramp(brightness, t.min_brightness * 0.5, t.min_brightness * 2.0)
        * ramp(brightness, t.max_brightness + 20.0, t.max_brightness - 40.0)
        * ramp(cropped, t.max_cropped_fraction * 2.0, 0.0).max(0.05)
        * ramp(clipped, 0.6, 0.1);
    let report = QualityReport {
        score,
        face_count: faces.len(),
        face_width_px: fw,
        face_height_px: fh,
        iod_px: iod,
        pose,
        sharpness,
        brightness,
        clipped_fraction: clipped,
        dynamic_range,
        cropped_fraction: cropped,
        border_margin: margin,
        face_height_ratio: ratio,
    };
    let rejection = if comparable > t.max_faces {
        Some(Rejection::TooManyFaces)
    } else if fw.min(fh) < t.min_face_px || iod < t.min_iod_px {
        Some(Rejection::FaceTooSmall)
    } else if cropped > t.max_cropped_fraction {
        Some(Rejection::FaceCropped)
    } else if t.check_framing && margin < t.min_border_margin {
        Some(Rejection::FaceCloseToBorder)
    } else if t.check_framing && ratio > t.max_face_height_ratio {
        Some(Rejection::FaceTooClose)
    } else if pose.yaw.abs() > t.max_yaw_deg || pose.pitch.abs() > t.max_pitch_deg {
        Some(Rejection::FaceAngleTooLarge)
    } else if sharpness < t.min_sharpness {
        Some(Rejection::FaceTooBlurry)
    } else if brightness < t.min_brightness || brightness > t.max_brightness {
        Some(Rejection::FaceBadExposure)
    } else {
        None
    };
    (Some(best), Some(report), rejection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frontal() -> [[f32; 2]; 5] {
        [
            [40.0, 50.0],
            [80.0, 50.0],
            [60.0, 72.0],
            [45.0, 90.0],
            [75.0, 90.0],
        ]
    }

    #[test]
    fn frontal_pose_is_near_zero() {
        let p = estimate_pose(&frontal());
        assert!(
            p.yaw.abs() < 1.0 && p.roll.abs() < 1e-3 && p.pitch.abs() < 5.0,
            "{p:?}"
        );
    }

    #[test]
    fn turned_and_rolled_faces_are_measured() {
        let mut lm = frontal();
        lm[2][0] = 80.0; // nose under the right eye
        assert!(estimate_pose(&lm).yaw > 30.0);
        // Rotate the frontal face by 20 degrees: roll follows, yaw stays small.
        let a = 20f32.to_radians();
        let r = frontal().map(|[x, y]| [x * a.cos() - y * a.sin(), x * a.sin() + y * a.cos()]);
        let p = estimate_pose(&r);
        assert!((p.roll - 20.0).abs() < 0.1 && p.yaw.abs() < 1.0, "{p:?}");
    }

    /// [`assess`] with the pixels of `img` at full resolution.
    fn judge(
        img: &RgbImage,
        faces: &[Detection],
        t: &QualityThresholds,
    ) -> (Option<usize>, Option<QualityReport>, Option<Rejection>) {
        let view = PixelView {
            image: img,
            origin: [0.0, 0.0],
            scale: 1.0,
        };
        assess(img.dimensions(), faces, Some(view), t)
    }

    fn det(bbox: [f32; 4]) -> Detection {
        let (w, h) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
        let lm = frontal().map(|[x, y]| {
            [
                bbox[0] + (x - 20.0) / 80.0 * w,
                bbox[1] + (y - 20.0) / 100.0 * h,
            ]
        });
        Detection {
            score: 0.99,
            bbox,
            landmarks: lm,
        }
    }

    fn textured(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = (((x / 3 + y / 3) % 2) * 100 + 60) as u8;
            image::Rgb([v, v, v])
        })
    }

    #[test]
    fn rejections_follow_the_measurements() {
        let img = textured(400, 400);
        let t = QualityThresholds::default();
        assert_eq!(judge(&img, &[], &t).2, Some(Rejection::FaceNotFound));
        let ok = det([100.0, 100.0, 260.0, 300.0]);
        let (sel, rep, rej) = judge(&img, std::slice::from_ref(&ok), &t);
        assert_eq!((sel, rej), (Some(0), None));
        assert!(rep.unwrap().score > 0.3);
        let two = [ok.clone(), det([270.0, 100.0, 390.0, 260.0])];
        assert_eq!(judge(&img, &two, &t).2, Some(Rejection::TooManyFaces));
        let tiny_second = [ok.clone(), det([300.0, 10.0, 330.0, 40.0])];
        assert_eq!(judge(&img, &tiny_second, &t).2, None);
        assert_eq!(
            judge(&img, &[det([10.0, 10.0, 40.0, 40.0])], &t).2,
            Some(Rejection::FaceTooSmall)
        );
        assert_eq!(
            judge(&img, &[det([-80.0, 100.0, 120.0, 300.0])], &t).2,
            Some(Rejection::FaceCropped)
        );
        let strict = QualityThresholds {
            min_border_margin: 0.5,
            ..t.clone()
        };
        assert_eq!(
            judge(&img, &[det([20.0, 100.0, 180.0, 300.0])], &strict).2,
            Some(Rejection::FaceCloseToBorder)
        );
        assert_eq!(
            judge(&img, &[det([100.0, 2.0, 300.0, 398.0])], &t).2,
            Some(Rejection::FaceTooClose)
        );
        // The checkerboard's two levels are 100 apart: that is its dynamic range.
        let (_, rep, _) = judge(&img, std::slice::from_ref(&ok), &t);
        assert_eq!(rep.map(|r| r.dynamic_range), Some(100.0));
        let flat = RgbImage::from_pixel(400, 400, image::Rgb([120, 120, 120]));
        assert_eq!(
            judge(&flat, std::slice::from_ref(&ok), &t).2,
            Some(Rejection::FaceTooBlurry)
        );
        let dark = RgbImage::from_fn(400, 400, |x, _| image::Rgb([(x % 2 * 40) as u8; 3]));
        assert_eq!(
            judge(&dark, std::slice::from_ref(&ok), &t).2,
            Some(Rejection::FaceBadExposure)
        );
    }
}
