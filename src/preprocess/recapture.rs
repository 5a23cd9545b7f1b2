//! A physical model of a screen replay: a photo shown on an LCD and photographed by a camera.
//! It exists to evaluate replay signals ([`crate::preprocess::spectrum`]) on images whose
//! making is known, since real replay attacks are scarce here; it is never used on requests.
//!
//! The model, in order:
//! - **Screen.** The photo is resampled (bilinear) to a lattice of display pixels. Each display
//!   pixel is three vertical stripes, red, green and blue from left to right, each lit over
//!   [`STRIPE_FILL`] of its width and [`ROW_FILL`] of the pixel's height (the rest is the black
//!   matrix). A lit stripe emits its channel's linear-light value (sRGB decoded); the screen
//!   outside the photo is a black bezel.
//! - **Camera pose.** A camera pixel spans `1 / magnification` display pixels, the camera is
//!   rotated by `rotation_deg` about the photo's centre and shifted by a sub-pixel `offset`.
//! - **Optics and sensor.** A camera pixel's value is the screen's radiance weighted by the
//!   pixel's aperture (a box of one camera pixel) seen through the lens (a Gaussian point spread
//!   of `lens_sigma` camera pixels). The two are combined into one isotropic Gaussian of the same
//!   total variance (`lens_sigma^2 + 1/12`), which makes the weight separable along the
//!   screen's axes whatever the rotation, so the integral over every lit stripe is exact (error
//!   functions) and free of sampling noise. Every channel is sensed at every pixel (no colour
//!   mosaic). Exposure maps a fully lit white area to `exposure`; ambient light reflected by the
//!   glass adds `glare` everywhere; the result is sRGB encoded with Gaussian read noise of
//!   `noise` levels.
//!
//! Nothing here is fitted to any image: the parameters are physical and are swept by whoever
//! evaluates. The result is an RGB image of the photo's size times `out_scale`.

use image::RgbImage;

/// Share of a stripe's width that emits light.
pub const STRIPE_FILL: f32 = 0.8;
/// Share of a display pixel's height that emits light.
pub const ROW_FILL: f32 = 0.85;

/// One recapture's physical parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Recapture {
    /// Camera pixels per display pixel (below 2 the lattice aliases into moiré).
    pub magnification: f32,
    /// Rotation of the camera about the photo's centre, degrees.
    pub rotation_deg: f32,
    /// Standard deviation of the lens's point spread, camera pixels.
    pub lens_sigma: f32,
    /// Sub-pixel shift of the camera, display pixels.
    pub offset: [f32; 2],
    /// Output size over the photo's size.
    pub out_scale: f32,
    /// Camera value, linear light, of a fully lit white area.
    pub exposure: f32,
    /// Reflected ambient light added everywhere, linear light.
    pub glare: f32,
    /// Read noise, standard deviation in 8-bit levels.
    pub noise: f32,
    /// Seed of the read-noise draws.
    pub seed: u64,
}

impl Recapture {
    /// Parameters drawn from the sweep used by `facegate eval --replay` documentation:
    /// magnification log-uniform in 0.6..3.0, rotation uniform in -8..8 degrees, lens spread
    /// uniform in 0.3..0.9 camera pixels, offsets uniform in 0..1, exposure 0.85, glare 0.02,
    /// noise 1.5 levels, same output size. Deterministic in `seed`.
    pub fn drawn(seed: u64) -> Recapture {
        let mut rng = SplitMix(seed ^ 0x5eed_0f5c_7ee4);
        let magnification = (0.6f32.ln() + rng.unit() * (3.0f32.ln() - 0.6f32.ln())).exp();
        Recapture {
            magnification,
            rotation_deg: -8.0 + 16.0 * rng.unit(),
            lens_sigma: 0.3 + 0.6 * rng.unit(),
            offset: [rng.unit(), rng.unit()],
            out_scale: 1.0,
            exposure: 0.85,
            glare: 0.02,
            noise: 1.5,
            seed,
        }
    }
}

/// A small deterministic generator (SplitMix64); quality is ample for sampling jitter.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let u1 = self.unit().max(1e-7);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
}

fn srgb_to_linear(v: u8) -> f32 {
    let c = f32::from(v) / 255.0;
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn linear_to_srgb(l: f32) -> f32 {
    let l = l.clamp(0.0, 1.0);
    255.0
        * if l <= 0.003_130_8 {
            12.92 * l
        } else {
            1.055 * l.powf(1.0 / 2.4) - 0.055
        }
}

/// Share of a Gaussian of standard deviation `sd` centred at `c` that falls in `[a, b)`.
fn gauss_share(a: f32, b: f32, c: f32, sd: f32) -> f32 {
    let k = std::f32::consts::FRAC_1_SQRT_2 / sd;
    0.5 * (libm::erff((b - c) * k) - libm::erff((a - c) * k))
}

/// Photographs `photo` shown on the modelled screen.
pub fn recapture(photo: &RgbImage, p: &Recapture) -> RgbImage {
    let (pw, ph) = photo.dimensions();
    let out_w = ((pw as f32 * p.out_scale).round() as u32).max(1);
    let out_h = ((ph as f32 * p.out_scale).round() as u32).max(1);
    let m = p.magnification.max(0.05);
    // The photo fills the camera's view: `out_w / m` display pixels across.
    let nx = ((out_w as f32 / m).round() as usize).max(1);
    let ny = ((out_h as f32 / m).round() as usize).max(1);
    let linear: Vec<[f32; 3]> = photo.pixels().map(|px| px.0.map(srgb_to_linear)).collect();
    // The photo resampled bilinearly to the display lattice, linear light.
    let mut shown = vec![[0f32; 3]; nx * ny];
    for dy in 0..ny {
        for dx in 0..nx {
            let sx = ((dx as f32 + 0.5) * pw as f32 / nx as f32 - 0.5).clamp(0.0, pw as f32 - 1.0);
            let sy = ((dy as f32 + 0.5) * ph as f32 / ny as f32 - 0.5).clamp(0.0, ph as f32 - 1.0);
            let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
            let (x1, y1) = ((x0 + 1).min(pw - 1), (y0 + 1).min(ph - 1));
            let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
            let g = |x: u32, y: u32| linear[(y * pw + x) as usize];
            let (a, b, c, d) = (g(x0, y0), g(x1, y0), g(x0, y1), g(x1, y1));
            for ch in 0..3 {
                shown[dy * nx + dx][ch] = (a[ch] * (1.0 - fx) + b[ch] * fx) * (1.0 - fy)
                    + (c[ch] * (1.0 - fx) + d[ch] * fx) * fy;
            }
        }
    }
    // A lit stripe emits its channel's value over `fill` of the pixel, so a uniformly lit
    // area averages to that value.
    let fill = STRIPE_FILL * ROW_FILL / 3.0;
    // The camera pixel's weight on the screen: a Gaussian of `sd` display pixels.
    let sd = (p.lens_sigma * p.lens_sigma + 1.0 / 12.0).sqrt() / m;
    let reach = (4.0 * sd).ceil() as i64 + 1;
    let (sin, cos) = p.rotation_deg.to_radians().sin_cos();
    let (cx, cy) = (out_w as f32 / 2.0, out_h as f32 / 2.0);
    let mut rng = SplitMix(p.seed);
    let mut out = RgbImage::new(out_w, out_h);
    let span = (2 * reach + 1) as usize;
    let mut across = vec![[0f32; 3]; span];
    let mut down = vec![0f32; span];
    for (i, j, px) in out.enumerate_pixels_mut() {
        let u = i as f32 + 0.5 - cx;
        let v = j as f32 + 0.5 - cy;
        let x = (cos * u - sin * v) / m + nx as f32 / 2.0 + p.offset[0];
        let y = (sin * u + cos * v) / m + ny as f32 / 2.0 + p.offset[1];
        let (fx, fy) = (x.floor() as i64 - reach, y.floor() as i64 - reach);
        for (k, w) in across.iter_mut().enumerate() {
            let left = (fx + k as i64) as f32;
            for (c, wc) in w.iter_mut().enumerate() {
                let a = left + c as f32 / 3.0;
                *wc = gauss_share(a, a + STRIPE_FILL / 3.0, x, sd);
            }
        }
        for (k, w) in down.iter_mut().enumerate() {
            let top = (fy + k as i64) as f32;
            *w = gauss_share(top, top + ROW_FILL, y, sd);
        }
        let mut acc = [0f32; 3];
        for (kj, &wy) in down.iter().enumerate() {
            let dy = fy + kj as i64;
            // Outside the lattice: the black bezel.
            if dy < 0 || dy >= ny as i64 || wy == 0.0 {
                continue;
            }
            let row = &shown[dy as usize * nx..(dy as usize + 1) * nx];
            for (ki, wx) in across.iter().enumerate() {
                let dx = fx + ki as i64;
                if dx < 0 || dx >= nx as i64 {
                    continue;
                }
                let s = row[dx as usize];
                for c in 0..3 {
                    acc[c] += wy * wx[c] * s[c];
                }
            }
        }
        px.0 = acc.map(|a| {
            let l = p.exposure * a / fill + p.glare;
            (linear_to_srgb(l) + p.noise * rng.normal())
                .round()
                .clamp(0.0, 255.0) as u8
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_white_screen_comes_out_near_the_exposure_and_a_black_one_near_the_glare() {
        let p = Recapture {
            magnification: 0.5,
            rotation_deg: 0.0,
            lens_sigma: 1.5,
            offset: [0.0, 0.0],
            out_scale: 1.0,
            exposure: 0.85,
            glare: 0.02,
            noise: 0.0,
            seed: 1,
        };
        let white = recapture(&RgbImage::from_pixel(64, 64, image::Rgb([255; 3])), &p);
        let black = recapture(&RgbImage::from_pixel(64, 64, image::Rgb([0; 3])), &p);
        // Away from the bezel: the lit share of the lattice, blurred, averages to the exposure.
        let mean = |img: &RgbImage| {
            let v: Vec<f32> = (16..48)
                .flat_map(|y| (16..48).map(move |x| (x, y)))
                .map(|(x, y)| f32::from(img.get_pixel(x, y).0[1]))
                .collect();
            v.iter().sum::<f32>() / v.len() as f32
        };
        let expected = linear_to_srgb(0.85 + 0.02);
        assert!(
            (mean(&white) - expected).abs() < 1.0,
            "{} vs {expected}",
            mean(&white)
        );
        assert!((mean(&black) - linear_to_srgb(0.02)).abs() < 1.0);
    }

    /// A mid-grey photo shot at `magnification` with a sharp lens, no rotation.
    fn grey_shot(magnification: f32) -> RgbImage {
        let p = Recapture {
            magnification,
            rotation_deg: 0.0,
            lens_sigma: 0.4,
            offset: [0.25, 0.5],
            out_scale: 1.0,
            exposure: 0.85,
            glare: 0.02,
            noise: 1.5,
            seed: 3,
        };
        recapture(&RgbImage::from_pixel(192, 192, image::Rgb([128; 3])), &p)
    }

    #[test]
    fn the_lattice_aliases_into_a_periodic_peak_unless_the_lens_blurs_it_away() {
        use crate::preprocess::spectrum::periodic_peak;
        let bbox = [16.0, 16.0, 176.0, 176.0];
        // 1.3 camera pixels per display pixel: the lattice (0.77 cycles per camera pixel)
        // aliases to 0.23 cycles per pixel.
        let moire = periodic_peak(&grey_shot(1.3), bbox).unwrap();
        // 0.2: five display pixels per camera pixel, the lattice far above the lens's cut-off.
        let flat = periodic_peak(&grey_shot(0.2), bbox).unwrap();
        assert!(moire.prominence_db > 20.0, "{moire:?}");
        assert!(flat.prominence_db < 10.0, "{flat:?}");
        // Square on, the fringes lie along an axis (columns of stripes or rows of pixels).
        let f = moire.frequency[0].abs().max(moire.frequency[1].abs());
        assert!((f - (1.0 - 1.0 / 1.3)).abs() < 2.0 / 32.0, "{moire:?}");
    }

    #[test]
    fn drawn_parameters_stay_in_their_ranges_and_repeat() {
        for seed in 0..200 {
            let p = Recapture::drawn(seed);
            assert!((0.6..=3.0).contains(&p.magnification), "{p:?}");
            assert!((-8.0..=8.0).contains(&p.rotation_deg));
            assert!((0.3..=0.9).contains(&p.lens_sigma));
            assert_eq!(p, Recapture::drawn(seed));
        }
        assert_ne!(Recapture::drawn(1), Recapture::drawn(2));
    }
}
