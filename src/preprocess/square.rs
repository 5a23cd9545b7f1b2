//! The square face crop face-api's landmark network takes: a square of the image (zeros where
//! it leaves the image) resized to `size x size` with TensorFlow's legacy bilinear rule
//! (`tf.image.resizeBilinear` with `alignCorners = halfPixelCenters = false`: the source of
//! output pixel `d` is `d * side / size`, neighbours clamped to the square), as face-api's
//! `toBatchTensor` resizes. Output: planar RGB f32 in 0..255.

use image::RgbImage;

/// A square `(x, y, side)` of `img` (integer pixels; may extend past the image, which reads
/// as zeros) resized to `size x size`, as three planes R, G, B of `size * size` f32.
pub fn square_crop(img: &RgbImage, x: i64, y: i64, side: u32, size: usize) -> Vec<f32> {
    let plane = size * size;
    let mut out = vec![0f32; 3 * plane];
    let side = side.max(1) as usize;
    let scale = side as f32 / size as f32;
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let raw = img.as_raw();
    let pixel = |sx: usize, sy: usize, c: usize| -> f32 {
        let (ix, iy) = (x + sx as i64, y + sy as i64);
        if ix < 0 || iy < 0 || ix >= w || iy >= h {
            0.0
        } else {
            f32::from(raw[((iy * w + ix) * 3) as usize + c])
        }
    };
    // Source index and weight of each output column / row.
    let taps = |d: usize| -> (usize, usize, f32) {
        let s = d as f32 * scale;
        let s0 = (s.floor() as usize).min(side - 1);
        let s1 = (s0 + 1).min(side - 1);
        (s0, s1, s - s0 as f32)
    };
    let cols: Vec<(usize, usize, f32)> = (0..size).map(taps).collect();
    for oy in 0..size {
        let (y0, y1, fy) = taps(oy);
        for (ox, &(x0, x1, fx)) in cols.iter().enumerate() {
            for c in 0..3 {
                let top = pixel(x0, y0, c) + (pixel(x1, y0, c) - pixel(x0, y0, c)) * fx;
                let bottom = pixel(x0, y1, c) + (pixel(x1, y1, c) - pixel(x0, y1, c)) * fx;
                out[c * plane + oy * size + ox] = top + (bottom - top) * fy;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_copies_and_outside_is_zero() {
        let img = RgbImage::from_fn(4, 4, |x, y| image::Rgb([(x * 10 + y) as u8, 7, 9]));
        let c = square_crop(&img, 0, 0, 4, 4);
        assert_eq!(c[0], 0.0);
        assert_eq!(c[1], 10.0);
        assert_eq!(c[4], 1.0);
        assert_eq!(c[16], 7.0);
        // One pixel past the right and bottom edges reads zeros.
        let c = square_crop(&img, 1, 1, 4, 4);
        assert_eq!(c[3], 0.0);
        assert_eq!(c[0], 11.0);
    }

    #[test]
    fn halving_samples_every_other_pixel_like_tensorflow() {
        // Legacy bilinear at scale 2 lands exactly on even source pixels (no averaging).
        let img = RgbImage::from_fn(4, 4, |x, y| image::Rgb([(x * 10 + y * 40) as u8, 0, 0]));
        let c = square_crop(&img, 0, 0, 4, 2);
        assert_eq!(&c[..4], &[0.0, 20.0, 80.0, 100.0]);
        // Upscaling interpolates and clamps the last neighbour.
        let c = square_crop(&img, 0, 0, 2, 4);
        assert_eq!(&c[..4], &[0.0, 5.0, 10.0, 10.0]);
    }
}
