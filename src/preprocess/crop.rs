//! The MiniFASNet crop rules and packing of crops into network inputs.
//!
//! - Silent-Face's pair ([`crop_rgb`], [`pack_bgr`]): the face box `(x, y, w, h)` is scaled
//!   about its centre by `min(scale, (H-1)/h, (W-1)/w)`, shifted back inside the image when it
//!   crosses a border, truncated to integer corners, cut (corners inclusive) and resized to
//!   80x80 bilinearly; BGR 0..255.
//! - The CelebA-Spoof network ([`celeba_crop`], [`pack_rgb_unit`]): a square of side
//!   `int(1.5 max(w, h))` centred on the box `(x1, y1, x2, y2)`, origin `int(centre - side/2)`,
//!   what lies outside the image filled by reflection (OpenCV's `BORDER_REFLECT_101`), resized
//!   to 128x128 with an area filter when shrinking and Lanczos-4 when enlarging; RGB 0..1.

use candle_core::{Device, Tensor};
use image::RgbImage;

use super::resize::{area_separable, resize_bilinear_cv, resize_lanczos4};

/// Inclusive integer corners `(x1, y1, x2, y2)` of the context crop for one network.
pub fn context_box(
    src_w: u32,
    src_h: u32,
    bbox_xywh: [f32; 4],
    scale: f32,
) -> (i64, i64, i64, i64) {
    let [x, y, bw, bh] = bbox_xywh;
    let (sw, sh) = (src_w as f32, src_h as f32);
    let bw = bw.max(1.0);
    let bh = bh.max(1.0);
    let scale = scale.min((sh - 1.0) / bh).min((sw - 1.0) / bw);
    let (nw, nh) = (bw * scale, bh * scale);
    let (cx, cy) = (x + bw / 2.0, y + bh / 2.0);
    let (mut x1, mut y1) = (cx - nw / 2.0, cy - nh / 2.0);
    let (mut x2, mut y2) = (cx + nw / 2.0, cy + nh / 2.0);
    if x1 < 0.0 {
        x2 -= x1;
        x1 = 0.0;
    }
    if y1 < 0.0 {
        y2 -= y1;
        y1 = 0.0;
    }
    if x2 > sw - 1.0 {
        x1 -= x2 - sw + 1.0;
        x2 = sw - 1.0;
    }
    if y2 > sh - 1.0 {
        y1 -= y2 - sh + 1.0;
        y2 = sh - 1.0;
    }
    (x1 as i64, y1 as i64, x2 as i64, y2 as i64)
}

/// Cuts the context crop for `bbox_xywh` at `scale` and resizes it to `size x size` RGB8.
pub fn crop_rgb(img: &RgbImage, bbox_xywh: [f32; 4], scale: f32, size: usize) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let (x1, y1, x2, y2) = context_box(w, h, bbox_xywh, scale);
    let clamp_x = |v: i64| v.clamp(0, i64::from(w) - 1) as u32;
    let clamp_y = |v: i64| v.clamp(0, i64::from(h) - 1) as u32;
    let (x1, x2) = (clamp_x(x1), clamp_x(x2));
    let (y1, y2) = (clamp_y(y1), clamp_y(y2));
    let region = (x1, y1, x2.saturating_sub(x1) + 1, y2.saturating_sub(y1) + 1);
    resize_bilinear_cv(img, region, size, size)
}

/// Mirrors an interleaved RGB8 `size x size` crop left-right.
pub fn mirror_rgb(crop: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; crop.len()];
    for (dst, src) in out
        .chunks_exact_mut(size * 3)
        .zip(crop.chunks_exact(size * 3))
    {
        for x in 0..size {
            dst[x * 3..x * 3 + 3].copy_from_slice(&src[(size - 1 - x) * 3..(size - x) * 3]);
        }
    }
    out
}

/// Packs interleaved RGB8 crops of `size x size` into an `(N, 3, size, size)` BGR f32 tensor
/// with values 0..255 (the MiniFASNet input convention).
pub fn pack_bgr(crops: &[Vec<u8>], size: usize, device: &Device) -> candle_core::Result<Tensor> {
    let plane = size * size;
    let mut data = vec![0f32; crops.len() * 3 * plane];
    for (n, crop) in crops.iter().enumerate() {
        let base = n * 3 * plane;
        for (i, px) in crop.chunks_exact(3).take(plane).enumerate() {
            data[base + i] = f32::from(px[2]);
            data[base + plane + i] = f32::from(px[1]);
            data[base + 2 * plane + i] = f32::from(px[0]);
        }
    }
    Tensor::from_vec(data, (crops.len(), 3, size, size), device)
}

/// Side of the CelebA-Spoof crop over the face box's longer side.
pub const CELEBA_CONTEXT: f32 = 1.5;

/// `p` reflected into `0..n` without repeating the edge (OpenCV's `BORDER_REFLECT_101`:
/// `-1 -> 1`, `n -> n - 2`).
fn reflect_101(p: i64, n: i64) -> i64 {
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = p.rem_euclid(period);
    if m < n {
        m
    } else {
        period - m
    }
}

/// The CelebA-Spoof network's input for the face box `(x1, y1, x2, y2)`: the reflected square
/// crop resized to `size x size`, interleaved RGB8.
pub fn celeba_crop(img: &RgbImage, bbox_x1y1x2y2: [f32; 4], size: usize) -> Vec<u8> {
    let [x1, y1, x2, y2] = bbox_x1y1x2y2;
    let side = ((CELEBA_CONTEXT * (x2 - x1).max(y2 - y1)) as i64).max(1);
    let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
    let (ox, oy) = (
        (cx - side as f32 / 2.0) as i64,
        (cy - side as f32 / 2.0) as i64,
    );
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    // Source column of every crop column, once; rows copied pixel by pixel from them.
    let cols: Vec<usize> = (0..side).map(|x| reflect_101(ox + x, w) as usize).collect();
    let (raw, stride) = (img.as_raw(), img.width() as usize * 3);
    let mut data = Vec::with_capacity(cols.len() * cols.len() * 3);
    for y in 0..side {
        let row = &raw[reflect_101(oy + y, h) as usize * stride..][..stride];
        for &c in &cols {
            data.extend_from_slice(&row[c * 3..c * 3 + 3]);
        }
    }
    let s = side as u32;
    let square = RgbImage::from_raw(s, s, data).unwrap_or_else(|| RgbImage::new(s, s));
    if side as usize > size {
        area_separable(&square, (size, size))
    } else if (side as usize) < size {
        resize_lanczos4(&square, (size, size))
    } else {
        square.into_raw()
    }
}

/// Packs interleaved RGB8 crops of `size x size` into an `(N, 3, size, size)` RGB f32 tensor
/// with values 0..1 (the CelebA-Spoof network's input convention).
pub fn pack_rgb_unit(
    crops: &[Vec<u8>],
    size: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let plane = size * size;
    let mut data = vec![0f32; crops.len() * 3 * plane];
    for (n, crop) in crops.iter().enumerate() {
        let base = n * 3 * plane;
        for (i, px) in crop.chunks_exact(3).take(plane).enumerate() {
            for c in 0..3 {
                data[base + c * plane + i] = f32::from(px[c]) / 255.0;
            }
        }
    }
    Tensor::from_vec(data, (crops.len(), 3, size, size), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_capped_by_the_image() {
        // A 100x100 face in a 200x200 image cannot be scaled by 4: the cap is 199/100.
        let (x1, y1, x2, y2) = context_box(200, 200, [50.0, 50.0, 100.0, 100.0], 4.0);
        assert_eq!((x1, y1, x2, y2), (0, 0, 199, 199));
    }

    #[test]
    fn box_is_shifted_inside() {
        let (x1, y1, x2, y2) = context_box(640, 480, [0.0, 0.0, 50.0, 50.0], 2.0);
        assert_eq!((x1, y1), (0, 0));
        assert_eq!((x2, y2), (100, 100));
        let (x1, _, x2, _) = context_box(640, 480, [600.0, 200.0, 39.0, 50.0], 2.0);
        assert_eq!(x2, 639);
        assert_eq!(x1, 639 - 78);
    }

    #[test]
    fn mirror_reverses_columns() {
        let crop = vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        assert_eq!(
            mirror_rgb(&crop, 2),
            vec![4, 5, 6, 1, 2, 3, 10, 11, 12, 7, 8, 9]
        );
    }

    #[test]
    fn pack_swaps_to_bgr_planes() {
        let crop = vec![10u8, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120];
        let t = pack_bgr(&[crop], 2, &Device::Cpu).unwrap();
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(&v[0..4], &[30.0, 60.0, 90.0, 120.0]);
        assert_eq!(&v[8..12], &[10.0, 40.0, 70.0, 100.0]);
    }

    #[test]
    fn reflection_does_not_repeat_the_edge() {
        let r: Vec<i64> = (-3..8).map(|p| reflect_101(p, 5)).collect();
        assert_eq!(r, [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
        assert_eq!(reflect_101(7, 1), 0);
    }

    #[test]
    fn celeba_crops_reflect_outside_the_image_and_scale_both_ways() {
        // A 4x4 image with distinct pixels; a box at the corner reaches outside.
        let img = RgbImage::from_fn(4, 4, |x, y| image::Rgb([(x * 60) as u8, (y * 60) as u8, 7]));
        // Box 2x2 at (0,0): side 3, centre (1,1), origin (-0.5 -> 0): no reflection needed.
        let c = celeba_crop(&img, [0.0, 0.0, 2.0, 2.0], 3);
        assert_eq!(&c[..3], &[0, 0, 7]);
        // Box 2x2 at (-1,-1): centre (0,0), origin -1: the first pixel is reflected (1,1).
        let c = celeba_crop(&img, [-1.0, -1.0, 1.0, 1.0], 3);
        assert_eq!(&c[..3], &[60, 60, 7]);
        assert_eq!(celeba_crop(&img, [0.0, 0.0, 4.0, 4.0], 2).len(), 12);
        assert_eq!(celeba_crop(&img, [0.0, 0.0, 2.0, 2.0], 8).len(), 8 * 8 * 3);
        let t = pack_rgb_unit(&[vec![255, 0, 51]], 1, &Device::Cpu).unwrap();
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, [1.0, 0.0, 0.2]);
    }
}
