//! Bounded JPEG/PNG decoding that honours EXIF orientation.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::{Error, Result};

/// Size bounds applied before any large allocation.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeLimits {
    /// Largest accepted encoded size, bytes.
    pub max_bytes: usize,
    /// Largest accepted width * height of the decoded image.
    pub max_pixels: u64,
    /// Smallest accepted side, pixels.
    pub min_side: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_bytes: 15 << 20,
            max_pixels: 40_000_000,
            min_side: 32,
        }
    }
}

/// Sniffs JPEG or PNG from the first bytes.
pub fn sniff_format(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
        Some(ImageFormat::Png)
    } else {
        None
    }
}

/// Checks a JPEG's structure up to its end-of-image marker: every marker segment whole, the
/// entropy-coded data of every scan followed by a marker, and an EOI before the data runs out.
/// A file cut short (an upload interrupted, the first third of a photo) fails here instead of
/// being decoded with its missing part filled in. Bytes after the EOI are allowed.
pub fn jpeg_is_complete(bytes: &[u8]) -> std::result::Result<(), &'static str> {
    let mut i = 2; // after SOI
    loop {
        // Fill bytes (0xFF repeated) may precede a marker.
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        match (bytes.get(i), bytes.get(i + 1)) {
            (Some(0xFF), Some(&m)) => {
                i += 2;
                match m {
                    0xD9 => return Ok(()),
                    // Markers without a length: TEM, RSTn.
                    0x01 | 0xD0..=0xD7 => continue,
                    _ => {}
                }
                let len = match (bytes.get(i), bytes.get(i + 1)) {
                    (Some(&a), Some(&b)) => usize::from(a) << 8 | usize::from(b),
                    _ => return Err("is truncated: a marker segment has no length"),
                };
                if len < 2 || i + len > bytes.len() {
                    return Err("is truncated: a marker segment runs past the end of the data");
                }
                i += len;
                if m == 0xDA {
                    // Entropy-coded data: up to the next marker that is not a stuffed 0xFF00
                    // or a restart marker.
                    loop {
                        let Some(k) = bytes[i..].iter().position(|&b| b == 0xFF) else {
                            return Err(
                                "is truncated: its image data ends before the end-of-image marker",
                            );
                        };
                        i += k;
                        match bytes.get(i + 1) {
                            Some(0x00) | Some(0xD0..=0xD7) => i += 2,
                            Some(0xFF) => i += 1,
                            Some(_) => break,
                            None => return Err(
                                "is truncated: its image data ends before the end-of-image marker",
                            ),
                        }
                    }
                }
            }
            (None, _) | (Some(0xFF), None) => {
                return Err("is truncated: the data ends before the end-of-image marker")
            }
            (Some(_), _) => return Err("is corrupt: a marker was expected"),
        }
    }
}

/// Refuses an empty input, or one over `max_bytes`, before anything is decoded.
pub fn check_bytes(bytes: &[u8], max_bytes: usize) -> Result<()> {
    if bytes.is_empty() {
        return Err(Error::EmptyImage);
    }
    if bytes.len() > max_bytes {
        return Err(Error::ImageTooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    Ok(())
}

/// Decodes a JPEG or PNG into upright RGB8, checking the byte and pixel bounds first.
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    check_bytes(bytes, limits.max_bytes)?;
    let format = sniff_format(bytes).ok_or(Error::UnsupportedFormat)?;
    if format == ImageFormat::Jpeg {
        jpeg_is_complete(bytes).map_err(|why| Error::CorruptImage(format!("JPEG {why}")))?;
    }
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    let mut lim = image::Limits::default();
    // Decoder buffers: RGBA8 at the pixel bound plus slack for the codec's own tables.
    lim.max_alloc = Some(limits.max_pixels.saturating_mul(4) + (64 << 20));
    reader.limits(lim);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Error::CorruptImage(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(Error::TooManyPixels {
            width: w,
            height: h,
            limit: limits.max_pixels,
        });
    }
    if w.min(h) < limits.min_side {
        return Err(Error::ImageTooSmall {
            width: w,
            height: h,
            min: limits.min_side,
        });
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::CorruptImage(e.to_string()))?
        .into_rgb8();
    Ok(orient(img, orientation))
}

/// Encodes `img` as a baseline JPEG at `quality` (1..=100).
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode_image(img)
        .map_err(|e| Error::Internal(format!("JPEG encoding failed: {e}")))?;
    Ok(out)
}

/// Applies an EXIF orientation, as `DynamicImage::apply_orientation` does, with quarter turns
/// copied in cache-sized tiles (the photos of phones are mostly stored sideways).
pub fn orient(img: RgbImage, o: Orientation) -> RgbImage {
    use image::imageops::{flip_horizontal_in_place, flip_vertical_in_place, rotate180_in_place};
    let mut img = match o {
        Orientation::Rotate90 | Orientation::Rotate90FlipH => quarter_turn(&img, true),
        Orientation::Rotate270 | Orientation::Rotate270FlipH => quarter_turn(&img, false),
        _ => img,
    };
    match o {
        Orientation::Rotate180 => rotate180_in_place(&mut img),
        Orientation::FlipHorizontal | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH => {
            flip_horizontal_in_place(&mut img)
        }
        Orientation::FlipVertical => flip_vertical_in_place(&mut img),
        _ => {}
    }
    img
}

/// Rotates a quarter turn, clockwise or not: source `(x, y)` goes to `(h - 1 - y, x)`
/// clockwise and to `(y, w - 1 - x)` counter-clockwise. Each destination row is one source
/// column, filled a tile of source rows at a time so that both sides stay in cache.
fn quarter_turn(src: &RgbImage, clockwise: bool) -> RgbImage {
    const TILE: usize = 64;
    let (w, h) = (src.width() as usize, src.height() as usize);
    let raw = src.as_raw();
    let mut out = vec![0u8; w * h * 3];
    for y0 in (0..h).step_by(TILE) {
        let y1 = (y0 + TILE).min(h);
        for (dy, drow) in out.chunks_exact_mut(h * 3).enumerate() {
            let x = if clockwise { dy } else { w - 1 - dy };
            // Destination columns of source rows y0..y1, in the order the rows come.
            let (lo, hi) = if clockwise {
                (h - y1, h - y0)
            } else {
                (y0, y1)
            };
            let dst = &mut drow[lo * 3..hi * 3];
            let rows = raw[y0 * w * 3..y1 * w * 3].chunks_exact(w * 3);
            let put = |d: &mut [u8], row: &[u8]| d.copy_from_slice(&row[x * 3..x * 3 + 3]);
            if clockwise {
                for (d, row) in dst.chunks_exact_mut(3).rev().zip(rows) {
                    put(d, row);
                }
            } else {
                for (d, row) in dst.chunks_exact_mut(3).zip(rows) {
                    put(d, row);
                }
            }
        }
    }
    RgbImage::from_raw(h as u32, w as u32, out).unwrap_or_else(|| RgbImage::new(h as u32, w as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn rejects_bad_input_with_bounds_in_the_message() {
        let l = DecodeLimits::default();
        assert!(matches!(decode_rgb(&[], &l), Err(Error::EmptyImage)));
        assert!(matches!(
            decode_rgb(b"GIF89a....", &l),
            Err(Error::UnsupportedFormat)
        ));
        let mut truncated = png(64, 64);
        truncated.truncate(60);
        assert!(matches!(
            decode_rgb(&truncated, &l),
            Err(Error::CorruptImage(_))
        ));
        let small = DecodeLimits { max_bytes: 10, ..l };
        let e = decode_rgb(&png(64, 64), &small).unwrap_err();
        assert!(e.to_string().contains("limit is 10 bytes"), "{e}");
        let few = DecodeLimits {
            max_pixels: 100,
            ..l
        };
        let e = decode_rgb(&png(64, 64), &few).unwrap_err();
        assert!(matches!(e, Error::TooManyPixels { .. }) && e.to_string().contains("100"));
        assert!(matches!(
            decode_rgb(&png(16, 64), &l),
            Err(Error::ImageTooSmall { .. })
        ));
    }

    #[test]
    fn every_orientation_matches_the_image_crate() {
        let img = RgbImage::from_fn(150, 71, |x, y| {
            image::Rgb([x as u8, y as u8, (x * y) as u8])
        });
        for o in [
            Orientation::NoTransforms,
            Orientation::Rotate90,
            Orientation::Rotate180,
            Orientation::Rotate270,
            Orientation::FlipHorizontal,
            Orientation::FlipVertical,
            Orientation::Rotate90FlipH,
            Orientation::Rotate270FlipH,
        ] {
            let mut want = DynamicImage::ImageRgb8(img.clone());
            want.apply_orientation(o);
            assert_eq!(orient(img.clone(), o), want.into_rgb8(), "{o:?}");
        }
    }

    #[test]
    fn decodes_png_pixels() {
        let img = decode_rgb(&png(40, 33), &DecodeLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (40, 33));
        assert_eq!(img.get_pixel(5, 9).0, [5, 9, 7]);
    }

    #[test]
    fn truncated_jpegs_are_refused_and_whole_ones_pass() {
        let img = RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
        });
        let mut whole = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut whole, 90)
            .encode_image(&img)
            .unwrap();
        assert_eq!(jpeg_is_complete(&whole), Ok(()));
        let mut trailing = whole.clone();
        trailing.extend_from_slice(b"trailing bytes after EOI");
        assert_eq!(jpeg_is_complete(&trailing), Ok(()));
        for cut in [4, whole.len() / 3, whole.len() - 2] {
            assert!(jpeg_is_complete(&whole[..cut]).is_err(), "cut at {cut}");
        }
        let e = decode_rgb(&whole[..whole.len() / 3], &DecodeLimits::default()).unwrap_err();
        assert!(
            matches!(e, Error::CorruptImage(ref m) if m.contains("truncated")),
            "{e}"
        );
        assert!(decode_rgb(&whole, &DecodeLimits::default()).is_ok());
    }
}
