//! Bilinear resizing of RGB8 images.
//!
//! [`resize_bilinear_cv`] reproduces OpenCV's `cv::resize(INTER_LINEAR)` on 8-bit images
//! (half-pixel centres, 11-bit fixed-point weights, no anti-aliasing), which is what the
//! upstream MiniFASNet pipeline used to make its 80x80 crops. [`downscale_area`] is a box
//! filter used to shrink photos for detection without aliasing.

use image::RgbImage;

/// Fixed-point scale of OpenCV's resize coefficients (`INTER_RESIZE_COEF_BITS = 11`).
const COEF_ONE: i32 = 1 << 11;

/// Source index pair and fixed-point weights of output sample `d` along an axis of `src_len`
/// source samples resized to `dst_len` (also the CPU twin's, `super::batch`).
pub(crate) fn linear_tap(src_len: usize, dst_len: usize, d: usize) -> (usize, usize, i32, i32) {
    let scale = src_len as f64 / dst_len as f64;
    let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
    let mut s = f.floor() as i64;
    let mut frac = f - s as f32;
    if s < 0 {
        s = 0;
        frac = 0.0;
    }
    if s >= src_len as i64 - 1 {
        s = src_len as i64 - 1;
        frac = 0.0;
    }
    let s = s as usize;
    let w0 = ((1.0 - frac) * COEF_ONE as f32).round() as i32;
    let w1 = (frac * COEF_ONE as f32).round() as i32;
    (s, (s + 1).min(src_len - 1), w0, w1)
}

/// Per-output-sample source index and fixed-point weights along one axis.
fn linear_taps(src_len: usize, dst_len: usize) -> Vec<(usize, usize, i32, i32)> {
    (0..dst_len)
        .map(|d| linear_tap(src_len, dst_len, d))
        .collect()
}

/// The vertical step of [`resize_bilinear_cv`]: two horizontally interpolated rows' values
/// `v0`, `v1` and their weights to one u8, as OpenCV's vectorised 32s->8u cast does it.
#[inline]
pub(crate) fn vertical_u8(b0: i32, v0: i32, b1: i32, v1: i32) -> u8 {
    ((((b0 * (v0 >> 4)) >> 16) + ((b1 * (v1 >> 4)) >> 16) + 2) >> 2).clamp(0, 255) as u8
}

/// Resizes the `(x0, y0, w, h)` region of `src` to `dst_w x dst_h` like OpenCV's
/// `INTER_LINEAR`, returning interleaved RGB8.
pub fn resize_bilinear_cv(
    src: &RgbImage,
    region: (u32, u32, u32, u32),
    dst_w: usize,
    dst_h: usize,
) -> Vec<u8> {
    let (x0, y0, w, h) = region;
    let (x0, y0) = (x0 as usize, y0 as usize);
    let (w, h) = (w.max(1) as usize, h.max(1) as usize);
    let stride = src.width() as usize * 3;
    let raw = src.as_raw();
    let xt = linear_taps(w, dst_w);
    let yt = linear_taps(h, dst_h);
    // Horizontal pass for every source row that the vertical pass needs.
    let hrow = |sy: usize| -> Vec<i32> {
        let row = &raw[(y0 + sy) * stride..];
        let mut out = vec![0i32; dst_w * 3];
        for (dx, &(s0, s1, a0, a1)) in xt.iter().enumerate() {
            for c in 0..3 {
                let p0 = i32::from(row[(x0 + s0) * 3 + c]);
                let p1 = i32::from(row[(x0 + s1) * 3 + c]);
                out[dx * 3 + c] = p0 * a0 + p1 * a1;
            }
        }
        out
    };
    let mut dst = vec![0u8; dst_w * dst_h * 3];
    for (dy, &(s0, s1, b0, b1)) in yt.iter().enumerate() {
        let r0 = hrow(s0);
        let r1 = hrow(s1);
        for (i, (&v0, &v1)) in r0.iter().zip(&r1).enumerate() {
            // OpenCV's vectorised 32s->8u cast, which the x86 build uses for these widths.
            dst[dy * dst_w * 3 + i] = vertical_u8(b0, v0, b1, v1);
        }
    }
    dst
}

/// Area-filter taps along one axis, flattened: for output sample `d`, its source samples start
/// at `first[d]` and their weights are `weights[span[d]..span[d + 1]]` (summing to 1).
struct AreaTaps {
    first: Vec<usize>,
    span: Vec<usize>,
    weights: Vec<f32>,
}

impl AreaTaps {
    fn new(src_len: usize, dst_len: usize) -> Self {
        let scale = src_len as f64 / dst_len as f64;
        let mut t = AreaTaps {
            first: Vec::with_capacity(dst_len),
            span: vec![0],
            weights: Vec::new(),
        };
        for d in 0..dst_len {
            let a = d as f64 * scale;
            let b = ((d + 1) as f64 * scale).min(src_len as f64);
            let first = a.floor() as usize;
            let last = (b.ceil() as usize).clamp(first + 1, src_len);
            t.first.push(first);
            t.weights
                .extend((first..last).map(|s| {
                    ((b.min(s as f64 + 1.0) - a.max(s as f64)).max(0.0) / (b - a)) as f32
                }));
            t.span.push(t.weights.len());
        }
        t
    }

    fn of(&self, d: usize) -> (usize, &[f32]) {
        (self.first[d], &self.weights[self.span[d]..self.span[d + 1]])
    }
}

/// `round(v)` (halves away from zero) to u8 for `0 <= v`, without a libm call: truncation is
/// the floor for non-negative values and `v - floor(v)` is exact.
#[inline]
fn round_u8(v: f32) -> u8 {
    let v = v.clamp(0.0, 255.0);
    let i = v as u32;
    (if v - i as f32 >= 0.5 { i + 1 } else { i }) as u8
}

/// Shrinks `src` so that its longer side is at most `max_side`, averaging every source pixel
/// into the output pixel it falls in (separable area filter). Returns the image and the factor
/// by which coordinates in the result must be multiplied to map back to `src`.
///
/// A whole-number factor in both directions (640x480 to 320x240) takes an integer box-filter
/// path whose rounded means equal the separable filter's exactly.
pub fn downscale_area(src: &RgbImage, max_side: u32) -> (RgbImage, f32) {
    let (w, h) = src.dimensions();
    let long = w.max(h);
    if long <= max_side || max_side == 0 {
        return (src.clone(), 1.0);
    }
    let scale = long as f64 / max_side as f64;
    let nw = ((w as f64 / scale).round() as u32).max(1);
    let nh = ((h as f64 / scale).round() as u32).max(1);
    let out = if w % nw == 0 && h % nh == 0 && w / nw == h / nh {
        box_integer(src, (w / nw) as usize, (nw as usize, nh as usize))
    } else {
        area_separable(src, (nw as usize, nh as usize))
    };
    let img = RgbImage::from_raw(nw, nh, out).unwrap_or_else(|| RgbImage::new(nw, nh));
    (img, w as f32 / nw as f32)
}

/// Mean of each `f x f` block, rounded half up (the exact value the area filter rounds).
fn box_integer(src: &RgbImage, f: usize, (nw, nh): (usize, usize)) -> Vec<u8> {
    let w = src.width() as usize;
    let raw = src.as_raw();
    let (area, half) = ((f * f) as u32, (f * f / 2) as u32);
    let mut out = vec![0u8; nw * nh * 3];
    if f == 2 {
        // Halving (the usual 640x480 case): add row pairs, then neighbouring pixels.
        let mut pairs = vec![0u16; nw * 6];
        for (oy, orow) in out.chunks_exact_mut(nw * 3).enumerate() {
            let r0 = &raw[2 * oy * w * 3..][..nw * 6];
            let r1 = &raw[(2 * oy + 1) * w * 3..][..nw * 6];
            for ((d, &a), &b) in pairs.iter_mut().zip(r0).zip(r1) {
                *d = u16::from(a) + u16::from(b);
            }
            for (o, p) in orow.chunks_exact_mut(3).zip(pairs.chunks_exact(6)) {
                o[0] = ((p[0] + p[3] + 2) >> 2) as u8;
                o[1] = ((p[1] + p[4] + 2) >> 2) as u8;
                o[2] = ((p[2] + p[5] + 2) >> 2) as u8;
            }
        }
        return out;
    }
    let mut sums = vec![0u32; nw * 3];
    for (oy, orow) in out.chunks_exact_mut(nw * 3).enumerate() {
        sums.fill(0);
        for y in oy * f..(oy + 1) * f {
            let row = &raw[y * w * 3..(y * w + nw * f) * 3];
            for (block, s) in row.chunks_exact(f * 3).zip(sums.chunks_exact_mut(3)) {
                for px in block.chunks_exact(3) {
                    s[0] += u32::from(px[0]);
                    s[1] += u32::from(px[1]);
                    s[2] += u32::from(px[2]);
                }
            }
        }
        if area.is_power_of_two() {
            let shift = area.trailing_zeros();
            for (o, &s) in orow.iter_mut().zip(&sums) {
                *o = ((s + half) >> shift) as u8;
            }
        } else {
            for (o, &s) in orow.iter_mut().zip(&sums) {
                *o = ((s + half) / area) as u8;
            }
        }
    }
    out
}

/// Separable area filter for any factor (OpenCV's `INTER_AREA` when shrinking): each source
/// row to `nw` columns, then rows; interleaved RGB8 out.
pub fn area_separable(src: &RgbImage, (nw, nh): (usize, usize)) -> Vec<u8> {
    let (w, h) = (src.width() as usize, src.height() as usize);
    let xt = AreaTaps::new(w, nw);
    let yt = AreaTaps::new(h, nh);
    let raw = src.as_raw();
    // Horizontal pass: every source row to nw columns (f32, interleaved RGB).
    let mut rows = vec![0f32; h * nw * 3];
    for (y, dst) in rows.chunks_exact_mut(nw * 3).enumerate() {
        let srow = &raw[y * w * 3..(y + 1) * w * 3];
        for (ox, d) in dst.chunks_exact_mut(3).enumerate() {
            let (first, wts) = xt.of(ox);
            let mut acc = [0f32; 3];
            for (&wt, px) in wts.iter().zip(srow[first * 3..].chunks_exact(3)) {
                acc[0] += wt * f32::from(px[0]);
                acc[1] += wt * f32::from(px[1]);
                acc[2] += wt * f32::from(px[2]);
            }
            d.copy_from_slice(&acc);
        }
    }
    // Vertical pass.
    let mut out = vec![0u8; nh * nw * 3];
    let mut acc = vec![0f32; nw * 3];
    for (oy, orow) in out.chunks_exact_mut(nw * 3).enumerate() {
        let (first, wts) = yt.of(oy);
        acc.fill(0.0);
        for (k, &wt) in wts.iter().enumerate() {
            let r = &rows[(first + k) * nw * 3..(first + k + 1) * nw * 3];
            for (a, v) in acc.iter_mut().zip(r) {
                *a += wt * v;
            }
        }
        for (o, &a) in orow.iter_mut().zip(&acc) {
            *o = round_u8(a);
        }
    }
    out
}

/// Lanczos-4 taps (8, from `s - 3` to `s + 4`, indices clamped to the image) along one axis,
/// as OpenCV's `INTER_LANCZOS4` places them: source position `(d + 0.5) * scale - 0.5`.
fn lanczos_taps(src_len: usize, dst_len: usize) -> Vec<([usize; 8], [f32; 8])> {
    use std::f64::consts::{FRAC_1_SQRT_2 as S45, PI};
    // cos/sin of the kernel's phase at the 8 taps (OpenCV's table).
    const CS: [(f64, f64); 8] = [
        (1.0, 0.0),
        (-S45, -S45),
        (0.0, 1.0),
        (S45, -S45),
        (-1.0, 0.0),
        (S45, S45),
        (0.0, -1.0),
        (-S45, S45),
    ];
    let scale = src_len as f64 / dst_len as f64;
    let last = src_len as i64 - 1;
    (0..dst_len)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let s = f.floor();
            let x = f - s;
            let mut idx = [0usize; 8];
            for (k, i) in idx.iter_mut().enumerate() {
                *i = (s as i64 - 3 + k as i64).clamp(0, last) as usize;
            }
            let mut w = [0f32; 8];
            if x < f64::from(f32::EPSILON) {
                w[3] = 1.0;
            } else {
                let y0 = -(x + 3.0) * PI * 0.25;
                let (s0, c0) = (y0.sin(), y0.cos());
                let mut sum = 0.0;
                for (k, wk) in w.iter_mut().enumerate() {
                    let y = -(x + 3.0 - k as f64) * PI * 0.25;
                    let v = (CS[k].0 * s0 + CS[k].1 * c0) / (y * y);
                    *wk = v as f32;
                    sum += v;
                }
                for wk in &mut w {
                    *wk = (f64::from(*wk) / sum) as f32;
                }
            }
            (idx, w)
        })
        .collect()
}

/// Resizes `src` to `nw x nh` with an 8x8 Lanczos kernel (OpenCV's `INTER_LANCZOS4`, used
/// when enlarging), separably in f32; interleaved RGB8 out.
pub fn resize_lanczos4(src: &RgbImage, (nw, nh): (usize, usize)) -> Vec<u8> {
    let (w, h) = (src.width() as usize, src.height() as usize);
    if w == 0 || h == 0 || nw == 0 || nh == 0 {
        return vec![0; nw * nh * 3];
    }
    let xt = lanczos_taps(w, nw);
    let yt = lanczos_taps(h, nh);
    let raw = src.as_raw();
    let mut rows = vec![0f32; h * nw * 3];
    for (y, dst) in rows.chunks_exact_mut(nw * 3).enumerate() {
        let srow = &raw[y * w * 3..(y + 1) * w * 3];
        for (d, (idx, wt)) in dst.chunks_exact_mut(3).zip(&xt) {
            let mut acc = [0f32; 3];
            for (&i, &k) in idx.iter().zip(wt) {
                for c in 0..3 {
                    acc[c] += k * f32::from(srow[i * 3 + c]);
                }
            }
            d.copy_from_slice(&acc);
        }
    }
    let mut out = vec![0u8; nh * nw * 3];
    for (orow, (idx, wt)) in out.chunks_exact_mut(nw * 3).zip(&yt) {
        for (x, o) in orow.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (&i, &k) in idx.iter().zip(wt) {
                acc += k * rows[i * nw * 3 + x];
            }
            *o = round_u8(acc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_resize_is_exact() {
        let img = RgbImage::from_fn(9, 7, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 3]));
        let out = resize_bilinear_cv(&img, (0, 0, 9, 7), 9, 7);
        assert_eq!(out, img.as_raw().clone());
    }

    #[test]
    fn halving_averages_neighbours() {
        // 4x1 row 0,100,200,255 -> 2 samples at source x = 0.5 and 2.5.
        let img = RgbImage::from_fn(4, 2, |x, _| {
            let v = [0u8, 100, 200, 255][x as usize];
            image::Rgb([v, v, v])
        });
        let out = resize_bilinear_cv(&img, (0, 0, 4, 2), 2, 1);
        assert_eq!(out[0], 50);
        assert_eq!(out[3], 228);
    }

    #[test]
    fn integer_box_path_equals_the_separable_filter() {
        for (w, h, f) in [
            (64u32, 48u32, 2usize),
            (90, 60, 3),
            (64, 32, 4),
            (50, 35, 5),
        ] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    ((x * 37 + y * 11) % 256) as u8,
                    ((x * x + 3 * y) % 256) as u8,
                    ((x ^ y) * 13 % 256) as u8,
                ])
            });
            let dims = ((w as usize) / f, (h as usize) / f);
            assert_eq!(
                box_integer(&img, f, dims),
                area_separable(&img, dims),
                "factor {f}"
            );
        }
    }

    #[test]
    fn rounding_matches_f32_round() {
        for i in 0..=2550 * 4 {
            let v = i as f32 / 40.0;
            assert_eq!(round_u8(v), v.round().clamp(0.0, 255.0) as u8, "{v}");
        }
        for v in [0.49999997f32, 0.5, 1.5, 2.5, 254.5, 300.0] {
            assert_eq!(round_u8(v), v.round().clamp(0.0, 255.0) as u8, "{v}");
        }
    }

    #[test]
    fn area_downscale_keeps_mean_and_reports_factor() {
        let img = RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([(x % 2 * 255) as u8, (y % 256) as u8, 9])
        });
        let (small, f) = downscale_area(&img, 320);
        assert_eq!(small.dimensions(), (320, 240));
        assert!((f - 2.0).abs() < 1e-6);
        // Alternating 0/255 columns average to ~128 instead of aliasing.
        let v = small.get_pixel(10, 10).0[0];
        assert!((127..=128).contains(&v), "{v}");
        // A non-integer factor still averages exactly: a flat image stays flat.
        let flat = RgbImage::from_pixel(333, 101, image::Rgb([77, 78, 79]));
        let (small, _) = downscale_area(&flat, 100);
        assert!(small.pixels().all(|p| p.0 == [77, 78, 79]));
        let (same, f1) = downscale_area(&img, 1000);
        assert_eq!(same.dimensions(), (640, 480));
        assert_eq!(f1, 1.0);
    }

    #[test]
    fn lanczos_keeps_flat_images_and_interpolates_ramps() {
        let flat = RgbImage::from_pixel(10, 10, image::Rgb([90, 120, 200]));
        assert!(resize_lanczos4(&flat, (25, 17))
            .chunks_exact(3)
            .all(|p| p == [90, 120, 200]));
        // A horizontal ramp 0, 10, ..., 190 doubled: inner samples stay on the ramp.
        let ramp = RgbImage::from_fn(20, 4, |x, _| image::Rgb([(x * 10) as u8; 3]));
        let out = resize_lanczos4(&ramp, (40, 8));
        for ox in 8..32 {
            let want = ((ox as f32 + 0.5) / 2.0 - 0.5) * 10.0;
            let got = f32::from(out[(3 * 40 + ox) * 3]);
            assert!((got - want).abs() <= 1.0, "x {ox}: {got} vs {want}");
        }
    }
}
