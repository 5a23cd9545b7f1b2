//! Five-landmark face alignment: a least-squares similarity transform onto a canonical template,
//! then a bilinear warp into a 150x150 RGB chip for the face descriptor network.
//!
//! # Template
//!
//! The descriptor network (dlib's `dlib_face_recognition_resnet_model_v1`) was trained on chips
//! made by dlib's `get_face_chip_details(shape, 150, 0.25)`, which maps a face's landmarks onto
//! dlib's mean face shape: a point `(x, y)` of that shape (unit square) lands at
//! `((x + padding) / (1 + 2 padding) * size, (y + padding) / (1 + 2 padding) * size)`. dlib's
//! own 5-point template uses eye *corners* and the base of the nose, which face detectors such as
//! RetinaFace do not give, so the five points here are taken from the same mean face shape
//! (`mean_face_shape_x/y` in dlib's `dlib/image_transforms/interpolation.h`, 68-point numbering,
//! arrays starting at point 17) with the usual 68 -> 5 mapping:
//!
//! | point                 | 68-point source        | unit square           | 150 chip, pad 0.25  |
//! |-----------------------|------------------------|-----------------------|---------------------|
//! | eye on image left     | mean of 36..=41        | (0.2254918, 0.2159903) | (47.5492, 46.5990) |
//! | eye on image right    | mean of 42..=47        | (0.7547613, 0.2159903) | (100.4761, 46.5990) |
//! | nose tip              | 30                     | (0.490127, 0.515625)   | (74.0127, 76.5625) |
//! | mouth corner, left    | 48                     | (0.254149, 0.780233)   | (50.4149, 103.0233) |
//! | mouth corner, right   | 54                     | (0.726104, 0.780233)   | (97.6104, 103.0233) |
//!
//! "Left" and "right" are as seen in the image (RetinaFace's landmark order), i.e. the first eye
//! is the subject's right eye.
//!
//! # Pixel convention
//!
//! Coordinates are in pixels with pixel centres at integer positions (as dlib and RetinaFace
//! report landmarks). Chip pixel `(u, v)` takes the image value at `M^-1 (u, v)`, interpolated
//! bilinearly; image pixels outside the frame count as black.

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// Side of the chip the descriptor network takes, in pixels.
pub const CHIP_SIZE: usize = 150;

/// Border around the mean face shape, as a fraction of its size (dlib's face-recognition setting).
pub const CHIP_PADDING: f32 = 0.25;

/// The five template points on dlib's unit-square mean face shape: eye on image left, eye on
/// image right, nose tip, left and right mouth corner (see the module docs for the derivation).
pub const MEAN_FACE_5: [[f32; 2]; 5] = [
    [0.225_491_83, 0.215_990_33],
    [0.754_761_33, 0.215_990_33],
    [0.490_127, 0.515_625],
    [0.254_149, 0.780_233],
    [0.726_104, 0.780_233],
];

/// Where [`MEAN_FACE_5`] lands in a `size` x `size` chip with dlib's `padding`.
pub fn template(size: usize, padding: f32) -> [[f32; 2]; 5] {
    let k = size as f32 / (1.0 + 2.0 * padding);
    MEAN_FACE_5.map(|[x, y]| [(x + padding) * k, (y + padding) * k])
}

/// The template of the 150x150 descriptor chip: `template(CHIP_SIZE, CHIP_PADDING)`.
pub fn chip_template() -> [[f32; 2]; 5] {
    template(CHIP_SIZE, CHIP_PADDING)
}

/// Least-squares similarity transform (rotation, uniform scale, translation; never a
/// reflection) taking `src` points onto `dst` points: Umeyama's solution, in closed form for 2-D.
///
/// Returns the 2x3 matrix `[a, b, tx, c, d, ty]` with `x' = a x + b y + tx`,
/// `y' = c x + d y + ty`. Only the first `min(src.len(), dst.len())` pairs are used. When the
/// source points all coincide (no scale or angle can be fitted) the result is the translation
/// between the centroids; an empty input gives the identity.
pub fn similarity_from_points(src: &[[f32; 2]], dst: &[[f32; 2]]) -> [f32; 6] {
    let n = src.len().min(dst.len());
    if n == 0 {
        return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    }
    let pairs = || src.iter().zip(dst).take(n);
    let nf = n as f64;
    let (mut mx, mut my, mut nx, mut ny) = (0f64, 0f64, 0f64, 0f64);
    for (s, d) in pairs() {
        mx += s[0] as f64;
        my += s[1] as f64;
        nx += d[0] as f64;
        ny += d[1] as f64;
    }
    let (mx, my, nx, ny) = (mx / nf, my / nf, nx / nf, ny / nf);
    // With centred points, the best s*R = [[p, -q], [q, p]] has
    // p = sum(s . d) / sum|s|^2 and q = sum(s x d) / sum|s|^2.
    let (mut dot, mut cross, mut var) = (0f64, 0f64, 0f64);
    for (s, d) in pairs() {
        let (sx, sy) = (s[0] as f64 - mx, s[1] as f64 - my);
        let (dx, dy) = (d[0] as f64 - nx, d[1] as f64 - ny);
        dot += sx * dx + sy * dy;
        cross += sx * dy - sy * dx;
        var += sx * sx + sy * sy;
    }
    let (p, q) = if var > f64::EPSILON {
        (dot / var, cross / var)
    } else {
        (1.0, 0.0)
    };
    let tx = nx - (p * mx - q * my);
    let ty = ny - (q * mx + p * my);
    [
        p as f32, -q as f32, tx as f32, q as f32, p as f32, ty as f32,
    ]
}

/// Applies a 2x3 affine matrix to a point.
pub fn apply_affine(m: &[f32; 6], p: [f32; 2]) -> [f32; 2] {
    [
        m[0] * p[0] + m[1] * p[1] + m[2],
        m[3] * p[0] + m[4] * p[1] + m[5],
    ]
}

/// Inverse of a 2x3 affine matrix (computed in f64), or `None` when it is singular or not finite.
pub fn invert_affine(m: &[f32; 6]) -> Option<[f64; 6]> {
    let [a, b, tx, c, d, ty] = m.map(f64::from);
    let det = a * d - b * c;
    if !det.is_finite() || det.abs() < 1e-12 || !tx.is_finite() || !ty.is_finite() {
        return None;
    }
    let (ia, ib, ic, id) = (d / det, -b / det, -c / det, a / det);
    Some([ia, ib, -(ia * tx + ib * ty), ic, id, -(ic * tx + id * ty)])
}

/// Largest output side [`warp_affine_rgb`] accepts.
pub const MAX_WARP_SIDE: usize = 4096;

/// Warps an RGB8 image (`width * height * 3` bytes, row-major, interleaved) by the affine map
/// `m` (image -> output coordinates) into a planar `(3, out_h, out_w)` f32 buffer in 0..255.
///
/// Sampling is bilinear with pixel centres at integer coordinates; neighbours outside the image
/// count as 0. Fails with [`Error::InvalidArgument`] when the buffer does not match the size,
/// an output side is 0 or above [`MAX_WARP_SIDE`], or `m` is singular or not finite.
pub fn warp_affine_rgb(
    rgb: &[u8],
    width: usize,
    height: usize,
    m: &[f32; 6],
    out_w: usize,
    out_h: usize,
) -> Result<Vec<f32>> {
    let expected = width.checked_mul(height).and_then(|p| p.checked_mul(3));
    if expected != Some(rgb.len()) {
        return Err(Error::InvalidArgument(format!(
            "RGB buffer of {} bytes does not match {width}x{height}x3",
            rgb.len()
        )));
    }
    if out_w == 0 || out_h == 0 || out_w > MAX_WARP_SIDE || out_h > MAX_WARP_SIDE {
        return Err(Error::InvalidArgument(format!(
            "warp output {out_w}x{out_h} outside 1..={MAX_WARP_SIDE}"
        )));
    }
    let inv = invert_affine(m).ok_or_else(|| {
        Error::InvalidArgument(format!("alignment transform {m:?} is not invertible"))
    })?;
    let mut out = vec![0f32; 3 * out_w * out_h];
    warp_into(rgb, width, height, &inv, out_w, out_h, &mut out);
    Ok(out)
}

/// The sampling of [`warp_affine_rgb`] with the inverse transform `inv` (output -> image)
/// already computed, into `out` (planar `3 x out_h x out_w`, left as it is where the sample
/// falls outside). Also the CPU twin of the `chip_warp` kernel (`super::batch`). `rgb` must
/// hold `width x height` packed pixels and `out` `3 * out_w * out_h` values.
pub(crate) fn warp_into(
    rgb: &[u8],
    width: usize,
    height: usize,
    inv: &[f64; 6],
    out_w: usize,
    out_h: usize,
    out: &mut [f32],
) {
    let plane = out_w * out_h;
    let (wi, hi) = (width as i64, height as i64);
    let px = |x: i64, y: i64, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= wi || y >= hi {
            0.0
        } else {
            rgb[((y * wi + x) as usize) * 3 + c] as f64
        }
    };
    for v in 0..out_h {
        for u in 0..out_w {
            let (uf, vf) = (u as f64, v as f64);
            let sx = inv[0] * uf + inv[1] * vf + inv[2];
            let sy = inv[3] * uf + inv[4] * vf + inv[5];
            // Far outside (or NaN): all four neighbours are black.
            if !(sx > -1.0 && sy > -1.0 && sx < width as f64 && sy < height as f64) {
                continue;
            }
            let (xf, yf) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - xf, sy - yf);
            let (x0, y0) = (xf as i64, yf as i64);
            let o = v * out_w + u;
            for c in 0..3 {
                let top = px(x0, y0, c) * (1.0 - fx) + px(x0 + 1, y0, c) * fx;
                let bot = px(x0, y0 + 1, c) * (1.0 - fx) + px(x0 + 1, y0 + 1, c) * fx;
                out[c * plane + o] = (top * (1.0 - fy) + bot * fy) as f32;
            }
        }
    }
}

/// Cuts the 150x150 descriptor chip out of an RGB8 image given the five landmarks (image-left
/// eye, image-right eye, nose tip, left and right mouth corner, in pixels): planar
/// `(3, 150, 150)` f32 in 0..255, ready for [`chips_to_tensor`].
///
/// Fails with [`Error::InvalidArgument`] for non-finite landmarks, eyes closer than one pixel,
/// or an RGB buffer that does not match the size.
pub fn align_face(
    rgb: &[u8],
    width: usize,
    height: usize,
    landmarks: &[[f32; 2]; 5],
) -> Result<Vec<f32>> {
    let m = chip_transform(landmarks)?;
    warp_affine_rgb(rgb, width, height, &m, CHIP_SIZE, CHIP_SIZE)
}

/// The image -> chip similarity for five landmarks (see [`align_face`]); fails for non-finite
/// landmarks or eyes closer than one pixel.
pub fn chip_transform(landmarks: &[[f32; 2]; 5]) -> Result<[f32; 6]> {
    if landmarks.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(
            "face landmarks are not finite".to_string(),
        ));
    }
    let [l, r, ..] = *landmarks;
    if (l[0] - r[0]).hypot(l[1] - r[1]) < 1.0 {
        return Err(Error::InvalidArgument(
            "face landmarks are degenerate: the eyes are less than a pixel apart".to_string(),
        ));
    }
    Ok(similarity_from_points(landmarks, &chip_template()))
}

/// Stacks planar `(3, 150, 150)` chips into an `(N, 3, 150, 150)` tensor on `device`.
pub fn chips_to_tensor(chips: &[Vec<f32>], device: &Device) -> Result<Tensor> {
    let per = 3 * CHIP_SIZE * CHIP_SIZE;
    if chips.is_empty() {
        return Err(Error::InvalidArgument("no chips to stack".to_string()));
    }
    let mut data = Vec::with_capacity(per * chips.len());
    for (i, c) in chips.iter().enumerate() {
        if c.len() != per {
            return Err(Error::InvalidArgument(format!(
                "chip {i} holds {} values, expected {per}",
                c.len()
            )));
        }
        data.extend_from_slice(c);
    }
    Ok(Tensor::from_vec(
        data,
        (chips.len(), 3, CHIP_SIZE, CHIP_SIZE),
        device,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn template_comes_from_dlib_mean_shape() {
        // dlib interpolation.h mean_face_shape_x/y for 68-point indices 36..=47, 30, 48, 54.
        let eye_l_x = [0.121737, 0.187122, 0.265825, 0.334606, 0.260918, 0.182743];
        let eye_l_y = [0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077];
        let eye_r_x = [0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335];
        let eye_r_y = [0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099];
        let mean = |v: &[f64]| (v.iter().sum::<f64>() / v.len() as f64) as f32;
        let want = [
            [mean(&eye_l_x), mean(&eye_l_y)],
            [mean(&eye_r_x), mean(&eye_r_y)],
            [0.490127, 0.515625],
            [0.254149, 0.780233],
            [0.726104, 0.780233],
        ];
        for (got, want) in MEAN_FACE_5.iter().zip(want) {
            assert!(close(got[0], want[0], 1e-7) && close(got[1], want[1], 1e-7));
        }
        let t = chip_template();
        assert!(close(t[0][0], 47.549_183, 1e-4) && close(t[0][1], 46.599_033, 1e-4));
        assert!(close(t[1][0], 100.476_13, 1e-4));
        assert!(close(t[2][0], 74.0127, 1e-4) && close(t[2][1], 76.5625, 1e-4));
        assert!(close(t[4][0], 97.6104, 1e-4) && close(t[4][1], 103.0233, 1e-4));
    }

    #[test]
    fn recovers_a_known_similarity() {
        let (s, th, tx, ty) = (1.7f32, 0.3f32, 12.5f32, -4.0f32);
        let truth = [
            s * th.cos(),
            -s * th.sin(),
            tx,
            s * th.sin(),
            s * th.cos(),
            ty,
        ];
        let src = [
            [10.0, 20.0],
            [60.0, 22.0],
            [35.0, 50.0],
            [15.0, 75.0],
            [58.0, 77.0],
        ];
        let dst: Vec<[f32; 2]> = src.iter().map(|&p| apply_affine(&truth, p)).collect();
        let m = similarity_from_points(&src, &dst);
        for (a, b) in m.iter().zip(truth) {
            assert!(close(*a, b, 1e-4), "{m:?} vs {truth:?}");
        }
    }

    #[test]
    fn never_reflects() {
        // Mirrored points: the best rotation+scale cannot flip them, and the determinant stays > 0.
        let src = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let dst = [[0.0, 0.0], [-10.0, 0.0], [0.0, 10.0]];
        let m = similarity_from_points(&src, &dst);
        assert!(m[0] * m[4] - m[1] * m[3] >= 0.0);
        assert_eq!(m[0], m[4]);
        assert_eq!(m[1], -m[3]);
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        assert_eq!(
            similarity_from_points(&[], &[]),
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        );
        let m = similarity_from_points(&[[3.0, 3.0], [3.0, 3.0]], &[[5.0, 1.0], [7.0, 1.0]]);
        assert_eq!(apply_affine(&m, [3.0, 3.0]), [6.0, 1.0]);
        assert!(invert_affine(&[0.0; 6]).is_none());
        assert!(warp_affine_rgb(&[0; 12], 2, 2, &[0.0; 6], 4, 4).is_err());
        assert!(warp_affine_rgb(&[0; 11], 2, 2, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 4, 4).is_err());
        let bad = [
            [f32::NAN, 0.0],
            [1.0, 0.0],
            [0.0, 1.0],
            [0.0, 2.0],
            [1.0, 2.0],
        ];
        assert!(align_face(&[0; 12], 2, 2, &bad).is_err());
    }

    #[test]
    fn warp_lands_a_point_where_expected() {
        // A 64x48 black image with one white 2x2 block whose centre is at (40.5, 20.5).
        let (w, h) = (64usize, 48usize);
        let mut img = vec![0u8; w * h * 3];
        for y in 20..22 {
            for x in 40..42 {
                img[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[255, 128, 64]);
            }
        }
        // Scale 2, rotate 90 degrees, translate: (40.5, 20.5) -> (-41 + 60, 81 + 3) = (19, 84).
        let m = [0.0, -2.0, 60.0, 2.0, 0.0, 3.0];
        assert_eq!(apply_affine(&m, [40.5, 20.5]), [19.0, 84.0]);
        let out = warp_affine_rgb(&img, w, h, &m, 100, 120).unwrap();
        let plane = 100 * 120;
        let at = |c: usize, u: usize, v: usize| out[c * plane + v * 100 + u];
        assert!(close(at(0, 19, 84), 255.0, 1e-3));
        assert!(close(at(1, 19, 84), 128.0, 1e-3));
        assert!(close(at(2, 19, 84), 64.0, 1e-3));
        // The red blob's intensity-weighted centroid is that point too.
        let (mut sum, mut cu, mut cv) = (0f64, 0f64, 0f64);
        for v in 0..120 {
            for u in 0..100 {
                let r = at(0, u, v) as f64;
                sum += r;
                cu += r * u as f64;
                cv += r * v as f64;
            }
        }
        assert!((cu / sum - 19.0).abs() < 1e-6 && (cv / sum - 84.0).abs() < 1e-6);
        assert_eq!(at(0, 0, 0), 0.0);
    }

    #[test]
    fn warp_identity_copies_and_interpolates() {
        let (w, h) = (3usize, 2usize);
        let img: Vec<u8> = (0..w * h * 3).map(|i| (i * 10) as u8).collect();
        let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let out = warp_affine_rgb(&img, w, h, &id, w, h).unwrap();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    assert_eq!(out[c * w * h + y * w + x], img[(y * w + x) * 3 + c] as f32);
                }
            }
        }
        // Half-pixel shift averages horizontal neighbours (and fades into black at the edge).
        let shift = [1.0, 0.0, -0.5, 0.0, 1.0, 0.0];
        let out = warp_affine_rgb(&img, w, h, &shift, w, h).unwrap();
        assert!(close(out[0], (img[0] as f32 + img[3] as f32) / 2.0, 1e-4));
        assert!(close(out[1], (img[3] as f32 + img[6] as f32) / 2.0, 1e-4));
        assert!(close(out[2], img[6] as f32 / 2.0, 1e-4));
    }

    #[test]
    fn aligned_landmarks_hit_the_template() {
        // Landmarks of a rotated, scaled template map back exactly onto the template.
        let t = chip_template();
        let fwd = [1.2f32 * 0.8, -1.2 * 0.6, 30.0, 1.2 * 0.6, 1.2 * 0.8, 10.0];
        let lm: Vec<[f32; 2]> = t.iter().map(|&p| apply_affine(&fwd, p)).collect();
        let m = similarity_from_points(&lm, &t);
        for (p, q) in lm.iter().zip(t) {
            let r = apply_affine(&m, *p);
            assert!(close(r[0], q[0], 1e-3) && close(r[1], q[1], 1e-3));
        }
        let img = vec![7u8; 400 * 300 * 3];
        let lm5: [[f32; 2]; 5] = [lm[0], lm[1], lm[2], lm[3], lm[4]];
        let chip = align_face(&img, 400, 300, &lm5).unwrap();
        assert_eq!(chip.len(), 3 * CHIP_SIZE * CHIP_SIZE);
        let stacked = chips_to_tensor(&[chip.clone(), chip], &Device::Cpu).unwrap();
        assert_eq!(stacked.dims(), &[2, 3, CHIP_SIZE, CHIP_SIZE]);
    }
}
