//! Batched preprocessing in the layout of the GPU kernels in `kernels/preprocess.cu`, with
//! bit-exact CPU twins of those kernels.
//!
//! # Layout
//!
//! The images of one batch are concatenated into one flat buffer of packed RGB8 rows
//! ([`pack_images`]); each image is an [`ImageSlot`] (byte offset, width, height). Every op's
//! per-item parameters are a flat `f64` descriptor table (copied to the GPU as one array;
//! integers up to 2^53 are exact) with a fixed number of fields per item:
//!
//! | op               | stride             | fields, in order                                              |
//! |------------------|--------------------|---------------------------------------------------------------|
//! | [`detector_pack`] | [`DETECTOR_FIELDS`] | offset, width, height                                      |
//! | [`crop_pack`]     | [`CROP_FIELDS`]     | offset, width, height, x0, y0, w, h, mirror (0/1)          |
//! | [`chip_warp`]     | [`WARP_FIELDS`]     | offset, width, height, inverse affine `a b tx c d ty`      |
//!
//! Each twin takes `(data, table, ...)` exactly as its kernel does and returns the NCHW `f32`
//! output. The twins equal the scalar CPU preprocessing bit for bit:
//! [`detector_pack`] = `retinaface::input_from_images`, [`crop_pack`] = `pack_bgr(crop_rgb)`
//! (optionally through `mirror_rgb`), [`chip_warp`] = `align_face`. The kernels do the same
//! arithmetic in the same order and types (f64 where the twin uses f64, f32 for f32, integers
//! for integers; built with `-fmad=false`). Unlike the kernels, which write zeros for a bad
//! item, the twins refuse bad tables with [`Error::InvalidArgument`].

use image::RgbImage;

use super::align::{chip_transform, invert_affine, warp_into, MAX_WARP_SIDE};
use super::crop::context_box;
use super::resize::{linear_tap, vertical_u8};
use crate::{Error, Result};

/// Most bytes of pixel data one batch buffer may hold (1 GiB).
pub const MAX_BATCH_BYTES: u64 = 1 << 30;

/// Most images one batch buffer may hold.
pub const MAX_BATCH_IMAGES: usize = 1024;

/// Most items (crops, chips, detector images) one descriptor table may hold.
pub const MAX_BATCH_ITEMS: usize = 4096;

/// Most `f32` values one op may output (1 GiB).
pub const MAX_OUTPUT_VALUES: usize = 1 << 28;

/// Fields per item of the [`detector_pack`] table: offset, width, height.
pub const DETECTOR_FIELDS: usize = 3;

/// Fields per item of the [`crop_pack`] table: offset, width, height, x0, y0, w, h, mirror.
pub const CROP_FIELDS: usize = 8;

/// Fields per item of the [`chip_warp`] table: offset, width, height, then the inverse affine
/// (output -> image) `a, b, tx, c, d, ty` with `x = a u + b v + tx`, `y = c u + d v + ty`.
pub const WARP_FIELDS: usize = 9;

/// Largest integer every `f64` table entry represents exactly (2^53).
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// One image in a batch buffer: packed RGB8 rows (`3 * width` bytes each) from byte `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSlot {
    /// Byte offset of the first pixel in the batch buffer.
    pub offset: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// The slots [`pack_images`] would give `images`, without copying pixels.
///
/// Fails for an empty batch, more than [`MAX_BATCH_IMAGES`] images or more than
/// [`MAX_BATCH_BYTES`] bytes in all.
pub fn slots(images: &[&RgbImage]) -> Result<Vec<ImageSlot>> {
    if images.is_empty() || images.len() > MAX_BATCH_IMAGES {
        return Err(Error::InvalidArgument(format!(
            "batch of {} images: need 1..={MAX_BATCH_IMAGES}",
            images.len()
        )));
    }
    let mut offset = 0u64;
    let mut out = Vec::with_capacity(images.len());
    for img in images {
        let (width, height) = img.dimensions();
        out.push(ImageSlot {
            offset,
            width,
            height,
        });
        offset += u64::from(width) * u64::from(height) * 3;
        if offset > MAX_BATCH_BYTES {
            return Err(Error::InvalidArgument(format!(
                "batch of {} images exceeds {MAX_BATCH_BYTES} bytes of pixels",
                images.len()
            )));
        }
    }
    Ok(out)
}

/// Concatenates `images` into one buffer of packed RGB8 rows, with their slots (same limits as
/// [`slots`]).
pub fn pack_images(images: &[&RgbImage]) -> Result<(Vec<u8>, Vec<ImageSlot>)> {
    let slots = slots(images)?;
    let total: usize = images.iter().map(|i| i.as_raw().len()).sum();
    let mut data = Vec::with_capacity(total);
    for img in images {
        data.extend_from_slice(img.as_raw());
    }
    Ok((data, slots))
}

/// The detector batch's `(height, width)`: the largest of the slots in each direction.
pub fn detector_dims(slots: &[ImageSlot]) -> (usize, usize) {
    let h = slots.iter().map(|s| s.height).max().unwrap_or(0);
    let w = slots.iter().map(|s| s.width).max().unwrap_or(0);
    (h as usize, w as usize)
}

/// The [`detector_pack`] table: one item per slot.
pub fn detector_table(slots: &[ImageSlot]) -> Vec<f64> {
    slots
        .iter()
        .flat_map(|s| [s.offset as f64, f64::from(s.width), f64::from(s.height)])
        .collect()
}

/// One MiniFASNet crop: the `(x0, y0, w, h)` region of image `image` (an index into the
/// batch's slots) resized to the network's size, mirrored left-right when `mirror`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropJob {
    /// Index of the image in the batch.
    pub image: usize,
    /// Region `(x0, y0, w, h)` in pixels, inside the image.
    pub region: (u32, u32, u32, u32),
    /// Mirror the resized crop left-right (as `mirror_rgb`).
    pub mirror: bool,
}

/// The crop `crop_rgb` cuts from an `img_w x img_h` image for `bbox_xywh` at `scale`.
pub fn crop_job(
    img_w: u32,
    img_h: u32,
    image: usize,
    bbox_xywh: [f32; 4],
    scale: f32,
    mirror: bool,
) -> CropJob {
    let (x1, y1, x2, y2) = context_box(img_w, img_h, bbox_xywh, scale);
    let clamp_x = |v: i64| v.clamp(0, (i64::from(img_w) - 1).max(0)) as u32;
    let clamp_y = |v: i64| v.clamp(0, (i64::from(img_h) - 1).max(0)) as u32;
    let (x1, x2) = (clamp_x(x1), clamp_x(x2));
    let (y1, y2) = (clamp_y(y1), clamp_y(y2));
    CropJob {
        image,
        region: (x1, y1, x2.saturating_sub(x1) + 1, y2.saturating_sub(y1) + 1),
        mirror,
    }
}

/// The slot of job `i`'s image, or an error naming the bad index.
fn slot_of(slots: &[ImageSlot], image: usize, i: usize) -> Result<ImageSlot> {
    slots.get(image).copied().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "item {i} refers to image {image} of a batch of {}",
            slots.len()
        ))
    })
}

/// The [`crop_pack`] table for `jobs`; fails when a job's image index is not in `slots`.
pub fn crop_table(slots: &[ImageSlot], jobs: &[CropJob]) -> Result<Vec<f64>> {
    let mut t = Vec::with_capacity(jobs.len() * CROP_FIELDS);
    for (i, j) in jobs.iter().enumerate() {
        let s = slot_of(slots, j.image, i)?;
        let (x0, y0, w, h) = j.region;
        t.extend([
            s.offset as f64,
            f64::from(s.width),
            f64::from(s.height),
            f64::from(x0),
            f64::from(y0),
            f64::from(w),
            f64::from(h),
            if j.mirror { 1.0 } else { 0.0 },
        ]);
    }
    Ok(t)
}

/// One descriptor chip: image `image` sampled at `inverse` (chip -> image coordinates).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarpJob {
    /// Index of the image in the batch.
    pub image: usize,
    /// Inverse affine `[a, b, tx, c, d, ty]`: chip pixel `(u, v)` reads image `(a u + b v + tx,
    /// c u + d v + ty)`.
    pub inverse: [f64; 6],
}

/// The chip job of the forward affine `m` (image -> chip), inverted as `warp_affine_rgb`
/// does; fails when `m` is singular or not finite.
pub fn warp_job(image: usize, m: &[f32; 6]) -> Result<WarpJob> {
    let inverse = invert_affine(m).ok_or_else(|| {
        Error::InvalidArgument(format!("alignment transform {m:?} is not invertible"))
    })?;
    Ok(WarpJob { image, inverse })
}

/// The descriptor-chip job for five landmarks, as `align_face` computes it (same checks: finite
/// landmarks, eyes at least a pixel apart, invertible transform).
pub fn align_job(image: usize, landmarks: &[[f32; 2]; 5]) -> Result<WarpJob> {
    warp_job(image, &chip_transform(landmarks)?)
}

/// The [`chip_warp`] table for `jobs`; fails when a job's image index is not in `slots`.
pub fn warp_table(slots: &[ImageSlot], jobs: &[WarpJob]) -> Result<Vec<f64>> {
    let mut t = Vec::with_capacity(jobs.len() * WARP_FIELDS);
    for (i, j) in jobs.iter().enumerate() {
        let s = slot_of(slots, j.image, i)?;
        t.extend([s.offset as f64, f64::from(s.width), f64::from(s.height)]);
        t.extend(j.inverse);
    }
    Ok(t)
}

/// Number of items in `table` (stride `fields`), checked against the limits.
fn item_count(table: &[f64], fields: usize, op: &str) -> Result<usize> {
    if table.is_empty()
        || !table.len().is_multiple_of(fields)
        || table.len() / fields > MAX_BATCH_ITEMS
    {
        return Err(Error::InvalidArgument(format!(
            "{op} table of {} values: need 1..={MAX_BATCH_ITEMS} items of {fields}",
            table.len()
        )));
    }
    Ok(table.len() / fields)
}

/// Output buffer of `items * 3 * h * w` zeros, within [`MAX_OUTPUT_VALUES`].
fn output(items: usize, h: usize, w: usize, op: &str) -> Result<Vec<f32>> {
    let n = items
        .checked_mul(3)
        .and_then(|v| v.checked_mul(h))
        .and_then(|v| v.checked_mul(w))
        .filter(|&n| n <= MAX_OUTPUT_VALUES)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{op} output of {items}x3x{h}x{w} exceeds {MAX_OUTPUT_VALUES} values"
            ))
        })?;
    Ok(vec![0f32; n])
}

/// Table entry `field` of item `i` as a non-negative integer (finite, whole, at most 2^53).
fn int_field(table: &[f64], fields: usize, i: usize, field: usize) -> Result<u64> {
    let v = table[i * fields + field];
    if !((0.0..=MAX_EXACT).contains(&v) && v.fract() == 0.0) {
        return Err(Error::InvalidArgument(format!(
            "table item {i} field {field} is {v}: need a whole number in 0..=2^53"
        )));
    }
    Ok(v as u64)
}

/// The image of item `i` (fields 0..3: offset, width, height) checked to lie inside `data`:
/// `(offset, width, height)` in bytes and pixels.
fn image_field(
    data: &[u8],
    table: &[f64],
    fields: usize,
    i: usize,
) -> Result<(usize, usize, usize)> {
    let offset = int_field(table, fields, i, 0)?;
    let width = int_field(table, fields, i, 1)?;
    let height = int_field(table, fields, i, 2)?;
    let end = width
        .checked_mul(height)
        .and_then(|p| p.checked_mul(3))
        .and_then(|b| b.checked_add(offset));
    match end {
        Some(end) if end <= data.len() as u64 => {
            Ok((offset as usize, width as usize, height as usize))
        }
        _ => Err(Error::InvalidArgument(format!(
            "table item {i}: a {width}x{height} image at byte {offset} overruns the {} byte batch",
            data.len()
        ))),
    }
}

/// Twin of the `detector_pack` kernel: the `(N, 3, height, width)` detector input, planes B, G,
/// R of `pixel - mean_bgr[c]`, zero right of and below each image.
///
/// Equals `retinaface::input_from_images` with `mean_bgr = retinaface::MEAN_BGR` and
/// `(height, width) = detector_dims(..)`. Fails when an image lies outside `data` or is larger
/// than `height x width`.
pub fn detector_pack(
    data: &[u8],
    table: &[f64],
    height: usize,
    width: usize,
    mean_bgr: [f32; 3],
) -> Result<Vec<f32>> {
    let n = item_count(table, DETECTOR_FIELDS, "detector_pack")?;
    if height == 0 || width == 0 {
        return Err(Error::InvalidArgument(format!(
            "detector_pack output {width}x{height} is empty"
        )));
    }
    let mut out = output(n, height, width, "detector_pack")?;
    let plane = height * width;
    for (i, item) in out.chunks_exact_mut(3 * plane).enumerate() {
        let (off, iw, ih) = image_field(data, table, DETECTOR_FIELDS, i)?;
        if iw > width || ih > height {
            return Err(Error::InvalidArgument(format!(
                "detector_pack item {i}: image {iw}x{ih} exceeds the batch's {width}x{height}"
            )));
        }
        for y in 0..height {
            for x in 0..width {
                let p = y * width + x;
                // The kernel's thread for pixel p of item i.
                let v = if x < iw && y < ih {
                    let px = &data[off + (y * iw + x) * 3..][..3];
                    [
                        f32::from(px[2]) - mean_bgr[0],
                        f32::from(px[1]) - mean_bgr[1],
                        f32::from(px[0]) - mean_bgr[2],
                    ]
                } else {
                    [0.0; 3]
                };
                for (c, v) in v.into_iter().enumerate() {
                    item[c * plane + p] = v;
                }
            }
        }
    }
    Ok(out)
}

/// Twin of the `crop_pack` kernel: `(N, 3, size, size)` BGR f32 in 0..255, each crop's region
/// resized like `resize_bilinear_cv` (and mirrored when its flag is 1).
///
/// Equals `pack_bgr(&[crop_rgb(..)], size)` (through `mirror_rgb` for mirrored jobs). Fails when
/// a region is empty or outside its image, an image lies outside `data`, a mirror flag is not
/// 0 or 1, or `size` is outside `1..=MAX_WARP_SIDE`.
pub fn crop_pack(data: &[u8], table: &[f64], size: usize) -> Result<Vec<f32>> {
    let n = item_count(table, CROP_FIELDS, "crop_pack")?;
    if size == 0 || size > MAX_WARP_SIDE {
        return Err(Error::InvalidArgument(format!(
            "crop_pack size {size} outside 1..={MAX_WARP_SIDE}"
        )));
    }
    let mut out = output(n, size, size, "crop_pack")?;
    let plane = size * size;
    for (i, item) in out.chunks_exact_mut(3 * plane).enumerate() {
        let (off, iw, ih) = image_field(data, table, CROP_FIELDS, i)?;
        let f = |k| int_field(table, CROP_FIELDS, i, k);
        let (x0, y0, w, h, mirror) = (f(3)?, f(4)?, f(5)?, f(6)?, f(7)?);
        if w == 0 || h == 0 || x0 + w > iw as u64 || y0 + h > ih as u64 || mirror > 1 {
            return Err(Error::InvalidArgument(format!(
                "crop_pack item {i}: region ({x0}, {y0}, {w}, {h}) mirror {mirror} is not a \
                 non-empty region of the {iw}x{ih} image with a 0/1 flag"
            )));
        }
        let (x0, y0, w, h) = (x0 as usize, y0 as usize, w as usize, h as usize);
        let stride = iw * 3;
        let at = |y: usize, x: usize, c: usize| {
            i32::from(data[off + (y0 + y) * stride + (x0 + x) * 3 + c])
        };
        for dy in 0..size {
            let (ys0, ys1, b0, b1) = linear_tap(h, size, dy);
            for ox in 0..size {
                let dx = if mirror == 1 { size - 1 - ox } else { ox };
                let (xs0, xs1, a0, a1) = linear_tap(w, size, dx);
                let p = dy * size + ox;
                for c in 0..3 {
                    let v0 = at(ys0, xs0, c) * a0 + at(ys0, xs1, c) * a1;
                    let v1 = at(ys1, xs0, c) * a0 + at(ys1, xs1, c) * a1;
                    // RGB channel c goes to BGR plane 2 - c.
                    item[(2 - c) * plane + p] = f32::from(vertical_u8(b0, v0, b1, v1));
                }
            }
        }
    }
    Ok(out)
}

/// Twin of the `chip_warp` kernel: `(N, 3, size, size)` RGB planar f32 in 0..255, chip pixel
/// `(u, v)` sampled bilinearly (in f64) at the item's inverse affine of `(u, v)`; neighbours
/// outside the image count as 0.
///
/// Equals `warp_affine_rgb` (so `align_face` for [`align_job`]s) bit for bit. Fails when an image
/// lies outside `data`, a coefficient is not finite, or `size` is outside `1..=MAX_WARP_SIDE`.
pub fn chip_warp(data: &[u8], table: &[f64], size: usize) -> Result<Vec<f32>> {
    let n = item_count(table, WARP_FIELDS, "chip_warp")?;
    if size == 0 || size > MAX_WARP_SIDE {
        return Err(Error::InvalidArgument(format!(
            "chip_warp size {size} outside 1..={MAX_WARP_SIDE}"
        )));
    }
    let mut out = output(n, size, size, "chip_warp")?;
    let plane = size * size;
    for (i, item) in out.chunks_exact_mut(3 * plane).enumerate() {
        let (off, iw, ih) = image_field(data, table, WARP_FIELDS, i)?;
        let inv = &table[i * WARP_FIELDS + 3..(i + 1) * WARP_FIELDS];
        if inv.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "chip_warp item {i}: affine {inv:?} is not finite"
            )));
        }
        let inv: [f64; 6] = [inv[0], inv[1], inv[2], inv[3], inv[4], inv[5]];
        warp_into(
            &data[off..off + iw * ih * 3],
            iw,
            ih,
            &inv,
            size,
            size,
            item,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::retinaface::{input_from_images, MEAN_BGR};
    use crate::preprocess::align::{align_face, CHIP_SIZE};
    use crate::preprocess::crop::{crop_rgb, mirror_rgb, pack_bgr};
    use candle_core::Device;

    const FACES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/faces");

    /// A deterministic pseudo-random image (xorshift), with some smooth structure mixed in.
    fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        RgbImage::from_fn(w, h, |x, y| {
            let mut next = || {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s
            };
            let r = next();
            image::Rgb([
                (r & 0xff) as u8,
                ((x * 3 + y) % 256) as u8 ^ ((r >> 8) & 0x3f) as u8,
                ((r >> 16) & 0xff) as u8,
            ])
        })
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    fn flat(t: candle_core::Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn check_detector(images: &[&RgbImage]) {
        let (data, slots) = pack_images(images).unwrap();
        let (h, w) = detector_dims(&slots);
        let got = detector_pack(&data, &detector_table(&slots), h, w, MEAN_BGR).unwrap();
        let want = flat(input_from_images(images, &Device::Cpu).unwrap());
        assert_eq!(bits(&got), bits(&want));
    }

    /// Every crop of `boxes` at each scale, plain and mirrored, over all `images` in one batch.
    fn check_crops(images: &[&RgbImage], boxes: &[[f32; 4]], scales: &[f32], size: usize) {
        let (data, slots) = pack_images(images).unwrap();
        let mut jobs = Vec::new();
        let mut crops = Vec::new();
        for (k, img) in images.iter().enumerate() {
            for &b in boxes {
                for &s in scales {
                    for mirror in [false, true] {
                        jobs.push(crop_job(img.width(), img.height(), k, b, s, mirror));
                        let c = crop_rgb(img, b, s, size);
                        crops.push(if mirror { mirror_rgb(&c, size) } else { c });
                    }
                }
            }
        }
        let got = crop_pack(&data, &crop_table(&slots, &jobs).unwrap(), size).unwrap();
        let want = flat(pack_bgr(&crops, size, &Device::Cpu).unwrap());
        assert_eq!(got.len(), want.len());
        let per = 3 * size * size;
        for (j, (g, w)) in got.chunks(per).zip(want.chunks(per)).enumerate() {
            assert_eq!(bits(g), bits(w), "crop {j}: {:?}", jobs[j]);
        }
    }

    /// Chips of every landmark set over all `images` in one batch.
    fn check_chips(images: &[&RgbImage], marks: &[[[f32; 2]; 5]]) {
        let (data, slots) = pack_images(images).unwrap();
        let mut jobs = Vec::new();
        let mut want = Vec::new();
        for (k, img) in images.iter().enumerate() {
            for lm in marks {
                jobs.push(align_job(k, lm).unwrap());
                let (w, h) = (img.width() as usize, img.height() as usize);
                want.extend(align_face(img.as_raw(), w, h, lm).unwrap());
            }
        }
        let got = chip_warp(&data, &warp_table(&slots, &jobs).unwrap(), CHIP_SIZE).unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got.iter().any(|&v| v != 0.0), "all chips are black");
        let per = 3 * CHIP_SIZE * CHIP_SIZE;
        for (j, (g, w)) in got.chunks(per).zip(want.chunks(per)).enumerate() {
            assert_eq!(bits(g), bits(w), "chip {j}");
        }
    }

    /// Landmarks of a face of eye distance `d` with its left eye at `(x, y)`, rotated by `a`.
    fn face(x: f32, y: f32, d: f32, a: f32) -> [[f32; 2]; 5] {
        let base = [
            [0.0, 0.0],
            [1.0, 0.0],
            [0.5, 0.55],
            [0.06, 1.0],
            [0.94, 1.0],
        ];
        base.map(|[u, v]| {
            let (u, v) = (u * d, v * d);
            [x + u * a.cos() - v * a.sin(), y + u * a.sin() + v * a.cos()]
        })
    }

    const BOXES: [[f32; 4]; 7] = [
        [30.0, 20.0, 40.0, 48.0],
        [-10.0, -5.0, 30.0, 35.0],
        [100.0, 70.0, 50.0, 44.0],
        [60.5, 33.25, 2.0, 3.0],
        [10.0, 10.0, 0.5, 0.2],
        [5.0, 60.0, 150.0, 120.0],
        [70.0, 2.0, 21.7, 18.3],
    ];

    #[test]
    fn detector_pack_equals_input_from_images() {
        let (a, b, c) = (noise(64, 48, 1), noise(37, 53, 2), noise(20, 11, 3));
        check_detector(&[&a, &b, &c]);
        check_detector(&[&b]);
        let empty = RgbImage::new(0, 0);
        check_detector(&[&a, &empty]);
    }

    #[test]
    fn crop_pack_equals_crop_rgb() {
        let (a, b, c) = (noise(160, 120, 4), noise(97, 131, 5), noise(12, 9, 6));
        check_crops(&[&a, &b, &c], &BOXES, &[1.0, 2.7, 4.0], 80);
        check_crops(&[&b], &BOXES[..3], &[2.7], 17);
    }

    #[test]
    fn chip_warp_equals_align_face() {
        let (a, b) = (noise(200, 180, 7), noise(90, 120, 8));
        let marks = [
            face(60.0, 70.0, 50.0, 0.0),
            face(-20.0, -15.0, 45.0, 0.3),
            face(150.0, 140.0, 70.0, -0.5),
            face(40.0, 30.0, 8.0, 2.5),
            face(300.0, 300.0, 30.0, 0.1),
        ];
        check_chips(&[&a, &b], &marks);
    }

    #[test]
    fn real_photo_matches_the_scalar_path() {
        let dir = std::path::Path::new(FACES);
        assert!(
            dir.is_dir(),
            "face fixtures missing: expected JPEG photos in {FACES}"
        );
        let photo = image::open(dir.join("image_F1.jpg"))
            .unwrap_or_else(|e| panic!("cannot decode {FACES}/image_F1.jpg: {e}"))
            .to_rgb8();
        let other = noise(320, 200, 9);
        check_detector(&[&photo, &other]);
        let (w, h) = (photo.width() as f32, photo.height() as f32);
        let boxes = [
            [w * 0.35, h * 0.25, w * 0.3, h * 0.4],
            [w * 0.8, h * 0.7, w * 0.3, h * 0.35],
            [1.0, 2.0, 33.3, 41.7],
        ];
        check_crops(&[&photo, &other], &boxes, &[2.7, 4.0], 80);
        let marks = [
            face(w * 0.42, h * 0.4, w * 0.12, 0.05),
            face(w * 0.9, h * 0.85, w * 0.2, -0.2),
        ];
        check_chips(&[&photo, &other], &marks);
    }

    #[test]
    fn batch_limits_are_enforced() {
        assert!(slots(&[]).is_err());
        let small = RgbImage::new(1, 1);
        let many: Vec<&RgbImage> = std::iter::repeat_n(&small, MAX_BATCH_IMAGES + 1).collect();
        let e = slots(&many).unwrap_err().to_string();
        assert!(e.contains(&MAX_BATCH_IMAGES.to_string()), "{e}");
        let (data, s) = pack_images(&[&noise(3, 2, 1), &noise(2, 2, 2)]).unwrap();
        assert_eq!(data.len(), 30);
        assert_eq!(
            s[1],
            ImageSlot {
                offset: 18,
                width: 2,
                height: 2
            }
        );
        let job = CropJob {
            image: 2,
            region: (0, 0, 1, 1),
            mirror: false,
        };
        assert!(crop_table(&s, &[job]).is_err());
    }

    #[test]
    fn bad_tables_are_refused() {
        let img = noise(10, 8, 3);
        let (data, s) = pack_images(&[&img]).unwrap();
        // Offset past the end, image larger than the data, NaN and fractional entries.
        for t in [
            vec![1.0, 10.0, 8.0],
            vec![0.0, 10.0, 9.0],
            vec![f64::NAN, 10.0, 8.0],
            vec![0.5, 10.0, 8.0],
            vec![-3.0, 10.0, 8.0],
            vec![0.0, 10.0],
            vec![],
        ] {
            assert!(detector_pack(&data, &t, 8, 10, MEAN_BGR).is_err(), "{t:?}");
        }
        assert!(detector_pack(&data, &detector_table(&s), 7, 10, MEAN_BGR).is_err());
        assert!(detector_pack(&data, &detector_table(&s), 0, 0, MEAN_BGR).is_err());
        let good = crop_table(&s, &[crop_job(10, 8, 0, [2.0, 2.0, 4.0, 4.0], 1.0, false)]).unwrap();
        assert!(crop_pack(&data, &good, 8).is_ok());
        for (field, v) in [
            (0, 3.0),
            (3, 7.0),
            (4, 4.0),
            (5, 0.0),
            (6, 9.0),
            (7, 2.0),
            (3, f64::NAN),
        ] {
            let mut t = good.clone();
            t[field] = v;
            assert!(crop_pack(&data, &t, 8).is_err(), "field {field} = {v}");
        }
        assert!(crop_pack(&data, &good, 0).is_err());
        let warp =
            warp_table(&s, &[warp_job(0, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap()]).unwrap();
        assert!(chip_warp(&data, &warp, 4).is_ok());
        for (field, v) in [(0, 1e9), (3, f64::NAN), (8, f64::INFINITY), (2, 9.0)] {
            let mut t = warp.clone();
            t[field] = v;
            assert!(chip_warp(&data, &t, 4).is_err(), "field {field} = {v}");
        }
        assert!(warp_job(0, &[0.0; 6]).is_err());
        assert!(align_job(0, &[[f32::NAN, 0.0]; 5]).is_err());
        assert!(align_job(0, &[[1.0, 1.0]; 5]).is_err());
    }
}
