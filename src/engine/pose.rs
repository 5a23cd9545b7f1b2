//! Measurements from the 68 landmarks (iBUG 300-W layout): eye centres, eye and mouth
//! openness, and the head pose.
//!
//! The pose is a scaled-orthographic fit ("POS") of six points of a generic 3-D head — nose
//! tip, chin, outer eye corners, mouth corners, in millimetres, the model commonly used with
//! OpenCV's `solvePnP` — to their landmarks: a least-squares affine map from the model to the
//! image, its two rows orthonormalised into a rotation. Angles are in degrees, in image terms:
//!
//! * `yaw` > 0: the nose points to the image's right;
//! * `pitch` > 0: the nose points down;
//! * `roll` > 0: the line from the image-left eye to the image-right eye turns clockwise (its
//!   right end lower).

use serde::{Deserialize, Serialize};

use super::linalg::solve;

/// Number of landmarks of the layout.
pub const POINTS: usize = 68;

/// The generic head: (landmark index, x right, y down, z away from the camera), mm.
const MODEL: [(usize, [f32; 3]); 6] = [
    (30, [0.0, 0.0, 0.0]),
    (8, [0.0, 330.0, 65.0]),
    (36, [-225.0, -170.0, 135.0]),
    (45, [225.0, -170.0, 135.0]),
    (48, [-150.0, 150.0, 125.0]),
    (54, [150.0, 150.0, 125.0]),
];

/// What the 68 landmarks of one face say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceShape {
    /// The 68 points, image pixels.
    pub points: Vec<[f32; 2]>,
    /// Centres of the eye on the image's left (points 36-41) and on its right (42-47).
    pub eye_centers: [[f32; 2]; 2],
    /// Eye aspect ratio of each eye (same order): lid distance over eye width, about 0.3 open
    /// and under 0.15 closed.
    pub eye_openness: [f32; 2],
    /// Inner-lip gap (points 62-66) over mouth width (48-54): about 0 closed.
    pub mouth_openness: f32,
    /// Head yaw, degrees (> 0: nose towards the image's right).
    pub yaw_deg: f32,
    /// Head pitch, degrees (> 0: nose down).
    pub pitch_deg: f32,
    /// Head roll, degrees (> 0: eye line turned clockwise).
    pub roll_deg: f32,
    /// The grey crop the landmarks were found in, for tracking between frames (kept in
    /// memory only, never serialised).
    #[serde(skip)]
    pub crop: Option<FaceCrop>,
}

/// A grey square face crop and where it lies in its image: crop pixel `(u, v)` is image point
/// `(x0 + u * scale, y0 + v * scale)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaceCrop {
    /// Image x of the crop's origin.
    pub x0: f32,
    /// Image y of the crop's origin.
    pub y0: f32,
    /// Image pixels per crop pixel.
    pub scale: f32,
    /// Side, pixels.
    pub size: usize,
    /// Luma (0..255), row by row.
    pub gray: Vec<f32>,
}

impl FaceCrop {
    /// Crop coordinates of an image point.
    pub fn to_crop(&self, p: [f32; 2]) -> [f32; 2] {
        [(p[0] - self.x0) / self.scale, (p[1] - self.y0) / self.scale]
    }

    /// Image coordinates of a crop point.
    pub fn to_image(&self, c: [f32; 2]) -> [f32; 2] {
        [self.x0 + c[0] * self.scale, self.y0 + c[1] * self.scale]
    }

    /// Bilinear sample at crop point `(u, v)`; `None` outside the crop.
    pub fn sample(&self, u: f32, v: f32) -> Option<f32> {
        let last = self.size as f32 - 1.0;
        if !(0.0..=last).contains(&u) || !(0.0..=last).contains(&v) {
            return None;
        }
        let (x0, y0) = (u.floor() as usize, v.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.size - 1), (y0 + 1).min(self.size - 1));
        let (fx, fy) = (u - x0 as f32, v - y0 as f32);
        let at = |x: usize, y: usize| self.gray[y * self.size + x];
        let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
        let bottom = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
        Some(top + (bottom - top) * fy)
    }
}

impl FaceShape {
    /// Measures a face from its 68 landmarks (`None` with fewer points or a degenerate fit).
    pub fn from_points(points: &[[f32; 2]]) -> Option<FaceShape> {
        if points.len() < POINTS
            || points
                .iter()
                .any(|p| !p[0].is_finite() || !p[1].is_finite())
        {
            return None;
        }
        let mean = |r: std::ops::Range<usize>| {
            let n = r.len() as f32;
            let (sx, sy) = points[r]
                .iter()
                .fold((0.0, 0.0), |(a, b), p| (a + p[0], b + p[1]));
            [sx / n, sy / n]
        };
        let ear = |e: usize| {
            let p = &points[e..e + 6];
            let width = dist(p[0], p[3]);
            (dist(p[1], p[5]) + dist(p[2], p[4])) / (2.0 * width.max(1e-3))
        };
        let (yaw, pitch, roll) = head_pose(points)?;
        Some(FaceShape {
            points: points[..POINTS].to_vec(),
            eye_centers: [mean(36..42), mean(42..48)],
            eye_openness: [ear(36), ear(42)],
            mouth_openness: dist(points[62], points[66]) / dist(points[48], points[54]).max(1e-3),
            yaw_deg: yaw,
            pitch_deg: pitch,
            roll_deg: roll,
            crop: None,
        })
    }
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// (yaw, pitch, roll) in degrees from a scaled-orthographic fit of [`MODEL`].
fn head_pose(points: &[[f32; 2]]) -> Option<(f32, f32, f32)> {
    // Least squares for u = a . [X, Y, Z, 1] (and v likewise): normal equations M a = b.
    let mut m = [[0f64; 4]; 4];
    let mut bu = [0f64; 4];
    let mut bv = [0f64; 4];
    for (i, p) in MODEL {
        let x = [f64::from(p[0]), f64::from(p[1]), f64::from(p[2]), 1.0];
        for r in 0..4 {
            for c in 0..4 {
                m[r][c] += x[r] * x[c];
            }
            bu[r] += x[r] * f64::from(points[i][0]);
            bv[r] += x[r] * f64::from(points[i][1]);
        }
    }
    let a = solve(m, bu)?;
    let b = solve(m, bv)?;
    let norm = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    let r1 = [a[0], a[1], a[2]];
    let r2 = [b[0], b[1], b[2]];
    let (n1, n2) = (norm(r1), norm(r2));
    if n1 < 1e-9 || n2 < 1e-9 {
        return None;
    }
    let r1 = r1.map(|v| v / n1);
    let d = r1[0] * r2[0] + r1[1] * r2[1] + r1[2] * r2[2];
    let r2 = [r2[0] - d * r1[0], r2[1] - d * r1[1], r2[2] - d * r1[2]];
    let n2 = norm(r2);
    if n2 < 1e-9 {
        return None;
    }
    let r2 = r2.map(|v| v / n2);
    let r3 = [
        r1[1] * r2[2] - r1[2] * r2[1],
        r1[2] * r2[0] - r1[0] * r2[2],
        r1[0] * r2[1] - r1[1] * r2[0],
    ];
    // R (model -> camera) has rows r1, r2, r3. The nose axis is the model's -z (towards the
    // camera): in the camera it is the third column, negated. Yaw and pitch are its angles
    // towards +x and +y; roll is the image angle of the model's x axis (the first column).
    let yaw = (-r1[2]).atan2(r3[2]);
    let pitch = (-r2[2]).atan2(r3[2]);
    let roll = r2[0].atan2(r1[0]);
    let deg = |r: f64| r.to_degrees() as f32;
    Some((deg(yaw), deg(pitch), deg(roll)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model's six points projected with yaw, pitch, roll (degrees, this module's
    /// conventions), scale 0.2 and an offset, in a 68-point array (other points on a ring).
    fn projected(yaw: f32, pitch: f32, roll: f32) -> Vec<[f32; 2]> {
        let (y, p, r) = (yaw.to_radians(), pitch.to_radians(), roll.to_radians());
        // Nose towards +x for yaw > 0: rotate about the vertical axis by -yaw (z away).
        let ry = |v: [f32; 3]| {
            let (s, c) = (-y).sin_cos();
            [c * v[0] + s * v[2], v[1], -s * v[0] + c * v[2]]
        };
        let rx = |v: [f32; 3]| {
            let (s, c) = p.sin_cos();
            [v[0], c * v[1] - s * v[2], s * v[1] + c * v[2]]
        };
        let rz = |v: [f32; 3]| {
            let (s, c) = r.sin_cos();
            [c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]]
        };
        let mut pts: Vec<[f32; 2]> = (0..POINTS)
            .map(|i| {
                let a = i as f32 * 0.3;
                [320.0 + 40.0 * a.cos(), 240.0 + 40.0 * a.sin()]
            })
            .collect();
        for (i, v) in MODEL {
            let w = rz(ry(rx(v)));
            pts[i] = [320.0 + 0.2 * w[0], 240.0 + 0.2 * w[1]];
        }
        pts
    }

    #[test]
    fn recovers_known_rotations() {
        for (yaw, pitch, roll) in [
            (0.0, 0.0, 0.0),
            (25.0, 0.0, 0.0),
            (-25.0, 0.0, 0.0),
            (0.0, 15.0, 0.0),
            (0.0, -15.0, 0.0),
            (0.0, 0.0, 20.0),
            (0.0, 0.0, -35.0),
        ] {
            let s = FaceShape::from_points(&projected(yaw, pitch, roll)).unwrap();
            for (got, want, what) in [
                (s.yaw_deg, yaw, "yaw"),
                (s.pitch_deg, pitch, "pitch"),
                (s.roll_deg, roll, "roll"),
            ] {
                assert!(
                    (got - want).abs() < 0.5,
                    "{what}: {got} for ({yaw}, {pitch}, {roll})"
                );
            }
        }
        // Combined turns keep their signs and rough sizes.
        let s = FaceShape::from_points(&projected(20.0, -10.0, 0.0)).unwrap();
        assert!(
            (s.yaw_deg - 20.0).abs() < 3.0 && (s.pitch_deg + 10.0).abs() < 3.0,
            "{s:?}"
        );
    }

    #[test]
    fn openness_and_eye_centres() {
        let mut p = projected(0.0, 0.0, 0.0);
        // An open eye on the image's left: width 30, lids 10 apart.
        for (k, q) in [
            [100.0, 100.0],
            [110.0, 95.0],
            [120.0, 95.0],
            [130.0, 100.0],
            [120.0, 105.0],
            [110.0, 105.0],
        ]
        .into_iter()
        .enumerate()
        {
            p[36 + k] = q;
        }
        let s = FaceShape::from_points(&p).unwrap();
        assert!((s.eye_openness[0] - 10.0 / 30.0).abs() < 1e-5);
        assert_eq!(s.eye_centers[0], [115.0, 100.0]);
        assert!(FaceShape::from_points(&p[..60]).is_none());
        p[3] = [f32::NAN, 0.0];
        assert!(FaceShape::from_points(&p).is_none());
    }
}
