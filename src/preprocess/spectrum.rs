//! The periodic-peak measure of a face region, the physical trace of a recaptured screen.
//!
//! A screen is a lattice of pixels. A camera photographing it either resolves that lattice or,
//! sampling it too coarsely, aliases it into moiré fringes; either way the face region gains a
//! periodic component, a narrow peak in its power spectrum, where a face's own spectrum (skin,
//! hair, edges) falls off smoothly. This module measures how far the strongest such peak
//! stands above the spectrum around it. It makes no decision: what counts as a peak is for
//! whoever reads [`PeakReport::prominence_db`] (`facegate eval --replay` measures it).
//!
//! Method (Welch's estimate of the power spectrum):
//! - the region is the face box, clipped to the image, in luminance (BT.601 weights);
//! - it is tiled by `W`x`W` windows, `W` the largest power of two up to a quarter of the region's
//!   shorter side (32 to 128), with a hop of `W/2` (at most 8 positions per axis, spread evenly);
//!   each window has its mean removed and a 2-D Hann taper;
//! - the windows' power spectra are averaged;
//! - a bin's background is the median power of the 56 bins at Chebyshev distance 3 or 4 around it
//!   (indices wrap: the discrete spectrum is periodic), so a peak's own leakage (the Hann main
//!   lobe spans one bin on either side) stays out of its background;
//! - candidates are local maxima (over their 8 neighbours) at least `max(4, W/16)` bins from the
//!   origin, other than the points of the `W/8` grid (both coordinates multiples of `W/8`): a
//!   JPEG's 8x8 blocks put their periodic energy there whatever the image shows (their
//!   neighbours, one bin away, are then no local maxima). The axes stay candidates: a screen
//!   photographed square on has its moiré fringes along them.
//!
//! The prominence is `10 log10(peak / background)` in decibels at the best candidate. With no
//! periodic content it is the largest of many background fluctuations, a few decibels.

use image::RgbImage;
use rustfft::{num_complex::Complex32, FftPlanner};

/// Smallest window side, in pixels; a region with a shorter side gets no report.
pub const MIN_WINDOW: u32 = 32;
/// Largest window side, in pixels.
pub const MAX_WINDOW: u32 = 128;
/// Most windows averaged for one region (larger regions are sampled at a coarser hop).
pub const MAX_WINDOWS: usize = 64;

/// The strongest isolated periodic peak of a face region's spectrum.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PeakReport {
    /// Peak power over its background, in decibels.
    pub prominence_db: f32,
    /// Frequency of the peak, cycles per pixel along x and y (`|f| <= 0.5`).
    pub frequency: [f32; 2],
    /// Window side `W`, in pixels.
    pub window: u32,
    /// Windows averaged.
    pub windows: u32,
}

/// Measures the periodic peak of the region `bbox` (`[x1, y1, x2, y2]`, pixels) of `image`.
/// `None` when the clipped region is shorter than [`MIN_WINDOW`] on a side, or has no
/// candidate bin with power (a perfectly uniform region).
pub fn periodic_peak(image: &RgbImage, bbox: [f32; 4]) -> Option<PeakReport> {
    let (iw, ih) = image.dimensions();
    let clip = |v: f32, hi: u32| (v.max(0.0).min(hi as f32)) as u32;
    let (x1, y1) = (clip(bbox[0], iw), clip(bbox[1], ih));
    let (x2, y2) = (clip(bbox[2], iw), clip(bbox[3], ih));
    let (rw, rh) = (x2.saturating_sub(x1), y2.saturating_sub(y1));
    let side = rw.min(rh);
    if side < MIN_WINDOW {
        return None;
    }
    let mut w = MIN_WINDOW;
    while w * 2 <= (side / 4).min(MAX_WINDOW) {
        w *= 2;
    }
    let origins = |len: u32| -> Vec<u32> {
        let n = ((len - w) / (w / 2) + 1) as usize;
        let keep = n.min((MAX_WINDOWS as f64).sqrt() as usize);
        // Evenly spread `keep` of the `n` hop positions, the first and last included.
        (0..keep)
            .map(|i| {
                let k = if keep > 1 {
                    i * (n - 1) / (keep - 1)
                } else {
                    0
                };
                k as u32 * (w / 2)
            })
            .collect()
    };
    let (xs, ys) = (origins(rw), origins(rh));
    let luma = |x: u32, y: u32| {
        let p = image.get_pixel(x, y).0;
        0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
    };
    let n = w as usize;
    let hann: Vec<f32> = (0..n)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / n as f32).cos())
        .collect();
    let fft = FftPlanner::<f32>::new().plan_fft_forward(n);
    let mut power = vec![0f64; n * n];
    let mut buf = vec![Complex32::new(0.0, 0.0); n * n];
    let mut column = vec![Complex32::new(0.0, 0.0); n];
    let mut windows = 0u32;
    for &oy in &ys {
        for &ox in &xs {
            let mut mean = 0f64;
            for y in 0..n {
                for x in 0..n {
                    let v = luma(x1 + ox + x as u32, y1 + oy + y as u32);
                    buf[y * n + x] = Complex32::new(v, 0.0);
                    mean += f64::from(v);
                }
            }
            let mean = (mean / (n * n) as f64) as f32;
            for y in 0..n {
                for x in 0..n {
                    let c = &mut buf[y * n + x];
                    *c = Complex32::new((c.re - mean) * hann[x] * hann[y], 0.0);
                }
            }
            for row in buf.chunks_exact_mut(n) {
                fft.process(row);
            }
            for x in 0..n {
                for y in 0..n {
                    column[y] = buf[y * n + x];
                }
                fft.process(&mut column);
                for y in 0..n {
                    power[y * n + x] += f64::from(column[y].norm_sqr());
                }
            }
            windows += 1;
        }
    }
    let at = |u: i64, v: i64| {
        power[(v.rem_euclid(n as i64) as usize) * n + u.rem_euclid(n as i64) as usize]
    };
    let half = n as i64 / 2;
    let grid = (n / 8) as i64;
    let on_grid = |k: i64| k.rem_euclid(grid) == 0;
    let min_radius = (n as f64 / 16.0).max(4.0);
    let mut best: Option<(f64, i64, i64)> = None;
    let mut ring = Vec::with_capacity(56);
    // Half plane (v >= 0): the spectrum of a real image is point-symmetric.
    for v in 0..=half {
        for u in -half + 1..=half {
            if (on_grid(u) && on_grid(v)) || ((u * u + v * v) as f64).sqrt() < min_radius {
                continue;
            }
            let p = at(u, v);
            let is_max = (-1..=1).all(|dv| (-1..=1).all(|du| at(u + du, v + dv) <= p));
            if !is_max || p <= 0.0 {
                continue;
            }
            ring.clear();
            for dv in -4i64..=4 {
                for du in -4i64..=4 {
                    if du.abs().max(dv.abs()) >= 3 {
                        ring.push(at(u + du, v + dv));
                    }
                }
            }
            ring.sort_by(f64::total_cmp);
            let background = (ring[ring.len() / 2 - 1] + ring[ring.len() / 2]) / 2.0;
            if background <= 0.0 {
                continue;
            }
            let ratio = p / background;
            if best.is_none_or(|(r, _, _)| ratio > r) {
                best = Some((ratio, u, v));
            }
        }
    }
    let (ratio, u, v) = best?;
    Some(PeakReport {
        prominence_db: (10.0 * ratio.log10()) as f32,
        frequency: [u as f32 / n as f32, v as f32 / n as f32],
        window: w,
        windows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth synthetic "face": a radial gradient with mild deterministic noise.
    fn smooth(width: u32, height: u32) -> RgbImage {
        let mut state = 12345u32;
        RgbImage::from_fn(width, height, |x, y| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let noise = ((state >> 16) % 7) as f32 - 3.0;
            let dx = x as f32 - width as f32 / 2.0;
            let dy = y as f32 - height as f32 / 2.0;
            let v = 200.0 - (dx * dx + dy * dy).sqrt() * 0.4 + noise;
            let v = v.clamp(0.0, 255.0) as u8;
            image::Rgb([v, v, v])
        })
    }

    /// `img` plus a faint oblique grating, 0.3 x 0.17 cycles per pixel, 6 levels peak to peak
    /// (19.2 and 10.9 bins of a 64-pixel window, between bins: its power leaks into four).
    fn with_grating(img: &RgbImage) -> RgbImage {
        let mut out = img.clone();
        for (x, y, p) in out.enumerate_pixels_mut() {
            let phase = 2.0 * std::f32::consts::PI * (0.3 * x as f32 + 0.17 * y as f32);
            let v = (f32::from(p.0[0]) + 3.0 * phase.cos()).clamp(0.0, 255.0) as u8;
            *p = image::Rgb([v, v, v]);
        }
        out
    }

    #[test]
    fn a_periodic_pattern_stands_out_and_its_frequency_is_found() {
        let base = smooth(256, 256);
        let plain = periodic_peak(&base, [0.0, 0.0, 256.0, 256.0]).unwrap();
        let peak = periodic_peak(&with_grating(&base), [0.0, 0.0, 256.0, 256.0]).unwrap();
        assert_eq!(plain.window, 64);
        assert_eq!(plain.windows, 49);
        assert!(plain.prominence_db < 10.0, "{plain:?}");
        assert!(
            peak.prominence_db > plain.prominence_db + 10.0,
            "{peak:?} vs {plain:?}"
        );
        let f = peak.frequency;
        // Either of the two symmetric peaks, within a bin (1/64 cycles per pixel).
        let close = |a: f32, b: f32| (a - b).abs() <= 1.0 / 64.0;
        assert!(
            (close(f[0], 0.3) && close(f[1], 0.17)) || (close(f[0], -0.3) && close(f[1], -0.17)),
            "{f:?}"
        );
    }

    #[test]
    fn jpeg_block_grid_points_are_not_peaks() {
        // The same ramp inside every 8x8 block, an edge at every block border: a pattern of
        // period 8 in both axes, whose energy lies on the excluded grid points only.
        let mut blocks = smooth(256, 256);
        for (x, y, p) in blocks.enumerate_pixels_mut() {
            let (bx, by) = (x % 8, y % 8);
            let step = ((bx + by) / 2 + bx * by / 8) as u8;
            let v = p.0[0].saturating_add(step);
            *p = image::Rgb([v, v, v]);
        }
        let r = periodic_peak(&blocks, [0.0, 0.0, 256.0, 256.0]).unwrap();
        assert!(r.prominence_db < 10.0, "{r:?}");
        // They do not hide a real peak: the grating on top of them is found.
        let c = periodic_peak(&with_grating(&blocks), [0.0, 0.0, 256.0, 256.0]).unwrap();
        assert!(c.prominence_db > r.prominence_db + 10.0, "{c:?} vs {r:?}");
    }

    #[test]
    fn regions_are_clipped_and_bounded() {
        let img = smooth(100, 60);
        assert!(periodic_peak(&img, [0.0, 0.0, 31.0, 60.0]).is_none());
        assert!(periodic_peak(&img, [-50.0, -50.0, 1e9, 1e9]).is_some());
        assert!(periodic_peak(&img, [f32::NAN, 0.0, 80.0, 60.0]).is_some());
        let big = smooth(1200, 1200);
        let r = periodic_peak(&big, [0.0, 0.0, 1200.0, 1200.0]).unwrap();
        assert_eq!(r.window, MAX_WINDOW);
        assert!(r.windows as usize <= MAX_WINDOWS);
    }
}
