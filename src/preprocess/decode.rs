//! Bounded JPEG/PNG decoding that honours EXIF orientation.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::{Error, Result};

/// Size bounds applied before any large allocation, and how large JPEGs are reduced.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeLimits {
    /// Largest accepted encoded size, bytes.
    pub max_bytes: usize,
    /// Largest accepted width * height of the image at full resolution.
    pub max_pixels: u64,
    /// Smallest accepted side, pixels.
    pub min_side: u32,
    /// Decode large JPEGs reduced in the DCT domain (1/2, 1/4, 1/8): the reduction is chosen
    /// from the header so that the longer side keeps at least `reduced_min_side` pixels.
    pub reduce: bool,
    /// Images of at most this many pixels are decoded whole: decoding them costs little, and
    /// their faces are often small enough to need a second, finer decode.
    pub reduce_min_pixels: u64,
    /// Longer side a reduced decode keeps at least, pixels (the detector's copy is 320).
    pub reduced_min_side: u32,
    /// Rows the largest face keeps at least in the pixels its networks and quality checks
    /// read; a face with fewer in the reduced image is decoded again around itself, finer.
    pub reduced_min_face_px: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_bytes: 15 << 20,
            max_pixels: 40_000_000,
            min_side: 32,
            reduce: true,
            reduce_min_pixels: 2_100_000,
            reduced_min_side: 480,
            reduced_min_face_px: 160,
        }
    }
}

impl DecodeLimits {
    /// The reduction for an upright full-resolution size: the largest of [`REDUCTIONS`] that
    /// keeps the longer side at `reduced_min_side` or more and the shorter at `min_side` or
    /// more; 1 when reducing is off or the image has at most `reduce_min_pixels`.
    pub fn reduction_for(&self, (w, h): (u32, u32)) -> u32 {
        if !self.reduce || u64::from(w) * u64::from(h) <= self.reduce_min_pixels {
            return 1;
        }
        REDUCTIONS
            .into_iter()
            .find(|&s| w.max(h) / s >= self.reduced_min_side && w.min(h) / s >= self.min_side)
            .unwrap_or(1)
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

/// Decodes a JPEG or PNG into upright RGB8 at full resolution, checking the byte and pixel
/// bounds first.
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    decode_scaled(bytes, limits, |_| 1).map(|d| d.image)
}

/// An image decoded at a reduced resolution, EXIF-upright.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Upright RGB pixels: the image reduced `scale` times on each side (a partial block at
    /// the right or bottom edge gives one more pixel).
    pub image: RgbImage,
    /// Full-resolution pixels per decoded pixel along each side: 1, 2, 4 or 8.
    pub scale: u32,
    /// Upright size at full resolution.
    pub full_size: (u32, u32),
}

/// The reductions a JPEG decodes at in the DCT domain, largest first.
pub const REDUCTIONS: [u32; 4] = [8, 4, 2, 1];

/// Decodes a JPEG or PNG into upright RGB8, reduced by the factor `choose` picks from the
/// upright full-resolution size (one of [`REDUCTIONS`]; anything else means 1).
///
/// The byte bound, the format, a JPEG's completeness and the pixel bounds (on the
/// full-resolution size) are checked before any pixel is decoded. A lossy JPEG is reduced in
/// the DCT domain by libjpeg-turbo's scaled inverse DCT (1/2, 1/4, 1/8: each 8x8 block becomes
/// 4x4, 2x2 or one pixel, so neither the full-size pixels nor their memory ever exist); a PNG,
/// a lossless JPEG or a CMYK one is decoded at full size whatever `choose` says.
pub fn decode_scaled(
    bytes: &[u8],
    limits: &DecodeLimits,
    choose: impl FnOnce((u32, u32)) -> u32,
) -> Result<Decoded> {
    check_bytes(bytes, limits.max_bytes)?;
    match sniff_format(bytes).ok_or(Error::UnsupportedFormat)? {
        ImageFormat::Jpeg => {
            jpeg_is_complete(bytes).map_err(|why| Error::CorruptImage(format!("JPEG {why}")))?;
            decode_jpeg(bytes, limits, choose)
        }
        format => decode_by_image_crate(bytes, format, limits),
    }
}

/// Refuses a full-resolution size outside the pixel bounds.
fn check_size(w: u32, h: u32, limits: &DecodeLimits) -> Result<()> {
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
    Ok(())
}

fn decode_jpeg(
    bytes: &[u8],
    limits: &DecodeLimits,
    choose: impl FnOnce((u32, u32)) -> u32,
) -> Result<Decoded> {
    turbo::with(|dec| {
        let header = dec.header(bytes)?;
        check_size(header.width, header.height, limits)?;
        if header.cmyk {
            // libjpeg-turbo gives CMYK only as CMYK: the image crate converts it, at full size.
            return decode_by_image_crate(bytes, ImageFormat::Jpeg, limits);
        }
        let orientation = jpeg_orientation(bytes);
        let (w, h) = (header.width, header.height);
        let full_size = if swaps_sides(orientation) {
            (h, w)
        } else {
            (w, h)
        };
        let wanted = choose(full_size);
        let scale = if header.lossless || !REDUCTIONS.contains(&wanted) {
            1
        } else {
            wanted
        };
        let img = dec.decode(bytes, scale, None)?;
        Ok(Decoded {
            image: orient(img, orientation),
            scale,
            full_size,
        })
    })
}

/// Decodes only the part of an image around `region` (upright full-resolution pixels
/// `[x0, y0, x1, y1)`) at 1/`scale`, within the same bounds as [`decode_scaled`]: the pixels
/// are those of the whole image decoded at that scale, cropped. Returns them and the
/// full-resolution position of their top-left corner.
///
/// A lossy JPEG goes through libjpeg-turbo's cropping region (rows below the region are never
/// read, columns outside it never transformed; the region is mapped through the EXIF
/// orientation to the stored pixels first). Anything else is decoded whole at that scale and
/// cropped.
pub fn decode_region(
    bytes: &[u8],
    limits: &DecodeLimits,
    scale: u32,
    region: [u32; 4],
) -> Result<(RgbImage, [u32; 2])> {
    check_bytes(bytes, limits.max_bytes)?;
    if sniff_format(bytes) == Some(ImageFormat::Jpeg) {
        jpeg_is_complete(bytes).map_err(|why| Error::CorruptImage(format!("JPEG {why}")))?;
        if let Some(out) = jpeg_region(bytes, limits, scale, region)? {
            return Ok(out);
        }
    }
    let d = decode_scaled(bytes, limits, |_| scale)?;
    let s = d.scale;
    let (w, h) = d.image.dimensions();
    let x0 = (region[0] / s).min(w - 1);
    let y0 = (region[1] / s).min(h - 1);
    let x1 = region[2].div_ceil(s).clamp(x0 + 1, w);
    let y1 = region[3].div_ceil(s).clamp(y0 + 1, h);
    let img = image::imageops::crop_imm(&d.image, x0, y0, x1 - x0, y1 - y0).to_image();
    Ok((img, [x0 * s, y0 * s]))
}

/// [`decode_region`] through libjpeg-turbo's cropping region; `None` when that cannot be used
/// (lossless, CMYK, an unusual subsampling, a scale it has not): the caller decodes whole.
fn jpeg_region(
    bytes: &[u8],
    limits: &DecodeLimits,
    scale: u32,
    region: [u32; 4],
) -> Result<Option<(RgbImage, [u32; 2])>> {
    if !REDUCTIONS.contains(&scale) {
        return Ok(None);
    }
    turbo::with(|dec| {
        let header = dec.header(bytes)?;
        check_size(header.width, header.height, limits)?;
        let Some(mcu) = header
            .mcu_width
            .filter(|_| !header.lossless && !header.cmyk)
        else {
            return Ok(None);
        };
        // Stored and upright sizes at this scale, and the region in scaled upright pixels.
        let (sw, sh) = (header.width.div_ceil(scale), header.height.div_ceil(scale));
        let o = jpeg_orientation(bytes);
        let (uw, uh) = if swaps_sides(o) { (sh, sw) } else { (sw, sh) };
        let ux0 = (region[0] / scale).min(uw - 1);
        let uy0 = (region[1] / scale).min(uh - 1);
        let ux1 = region[2].div_ceil(scale).clamp(ux0 + 1, uw);
        let uy1 = region[3].div_ceil(scale).clamp(uy0 + 1, uh);
        let [x0, y0, x1, y1] = stored_rect(o, [ux0, uy0, ux1, uy1], (sw, sh));
        // Decoded with an iMCU to spare on every side (chroma upsampling reads neighbours),
        // the left edge on an iMCU boundary of the scaled image; the spare pixels are cut.
        let step = mcu.div_ceil(scale);
        let xa = (x0 / step).saturating_sub(1) * step;
        let ya = y0.saturating_sub(step);
        let crop = [xa, ya, (x1 + step).min(sw), (y1 + step).min(sh)];
        let img = dec.decode(bytes, scale, Some(crop))?;
        let img = image::imageops::crop_imm(&img, x0 - xa, y0 - ya, x1 - x0, y1 - y0).to_image();
        Ok(Some((orient(img, o), [ux0 * scale, uy0 * scale])))
    })
}

/// The stored pixels `[x0, y0, x1, y1)` that the orientation `o` turns into the upright
/// rectangle `r`, for a stored image of `(w, h)` (the inverse of [`orient`]).
fn stored_rect(o: Orientation, r: [u32; 4], (w, h): (u32, u32)) -> [u32; 4] {
    let [u0, v0, u1, v1] = r;
    match o {
        Orientation::NoTransforms => [u0, v0, u1, v1],
        Orientation::Rotate90 => [v0, h - u1, v1, h - u0],
        Orientation::Rotate180 => [w - u1, h - v1, w - u0, h - v0],
        Orientation::Rotate270 => [w - v1, u0, w - v0, u1],
        Orientation::FlipHorizontal => [w - u1, v0, w - u0, v1],
        Orientation::FlipVertical => [u0, h - v1, u1, h - v0],
        Orientation::Rotate90FlipH => [v0, u0, v1, u1],
        Orientation::Rotate270FlipH => [w - v1, h - u1, w - v0, h - u0],
    }
}

/// libjpeg-turbo through its C API (`turbojpeg::raw`): the `turbojpeg` crate's safe
/// decompressor has no cropping region (`tj3SetCroppingRegion`), so every JPEG decode goes
/// through one handle of ours per thread.
mod turbo {
    use std::cell::RefCell;
    use std::ffi::{c_int, CStr};

    use image::RgbImage;
    use turbojpeg::raw;

    use crate::{Error, Result};

    /// Most progressive scans a JPEG may have (ordinary encoders write about ten): a file of
    /// thousands of tiny scans would cost seconds to decode (libjpeg-turbo's own advice).
    const MAX_SCANS: c_int = 256;

    /// The iMCU width of each chrominance subsampling (`tjMCUWidth`, indexed by TJSAMP).
    const MCU_WIDTH: [u32; 7] = [8, 16, 16, 8, 8, 32, 8];

    /// What a JPEG header says.
    pub(super) struct Header {
        /// Stored width, pixels.
        pub width: u32,
        /// Stored height, pixels.
        pub height: u32,
        /// Lossless JPEG: no scaled IDCT.
        pub lossless: bool,
        /// CMYK or YCCK: not decodable to RGB here.
        pub cmyk: bool,
        /// iMCU width of its subsampling, when it is a usual one.
        pub mcu_width: Option<u32>,
    }

    /// A decompressor handle, destroyed on drop.
    pub(super) struct Handle(raw::tjhandle);

    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: the handle came from tj3Init, is not null, and is destroyed once.
            unsafe { raw::tj3Destroy(self.0) }
        }
    }

    thread_local! {
        /// One handle per thread, made on first use.
        static HANDLE: RefCell<Option<Handle>> = const { RefCell::new(None) };
    }

    /// Runs `f` with this thread's handle.
    pub(super) fn with<R>(f: impl FnOnce(&Handle) -> Result<R>) -> Result<R> {
        HANDLE.with(|cell| {
            let mut slot = cell.borrow_mut();
            let handle = match &mut *slot {
                Some(h) => h,
                None => slot.insert(Handle::new()?),
            };
            f(handle)
        })
    }

    impl Handle {
        fn new() -> Result<Self> {
            // SAFETY: tj3Init has no preconditions; a null result is checked.
            let h = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as c_int) };
            if h.is_null() {
                return Err(Error::Internal("JPEG decoder: tj3Init failed".into()));
            }
            Ok(Self(h))
        }

        /// The last error, as a corrupt-image error.
        fn error(&self) -> Error {
            // SAFETY: the handle is valid; the library returns a NUL-terminated string it
            // owns, copied out at once.
            let msg = unsafe { CStr::from_ptr(raw::tj3GetErrorStr(self.0)) };
            Error::CorruptImage(format!("JPEG: {}", msg.to_string_lossy()))
        }

        fn check(&self, rc: c_int) -> Result<()> {
            if rc == 0 {
                Ok(())
            } else {
                Err(self.error())
            }
        }

        fn get(&self, param: raw::TJPARAM) -> c_int {
            // SAFETY: the handle is valid; tj3Get reads a parameter.
            unsafe { raw::tj3Get(self.0, param as c_int) }
        }

        /// Reads the header of `bytes` (which [`Handle::decode`] then decodes).
        pub(super) fn header(&self, bytes: &[u8]) -> Result<Header> {
            // SAFETY: the pointer and length describe `bytes`, which outlives the call.
            self.check(unsafe {
                raw::tj3DecompressHeader(self.0, bytes.as_ptr(), bytes.len() as raw::size_t)
            })?;
            let size = |p| u32::try_from(self.get(p)).ok().filter(|&v| v > 0);
            let (Some(width), Some(height)) = (
                size(raw::TJPARAM_TJPARAM_JPEGWIDTH),
                size(raw::TJPARAM_TJPARAM_JPEGHEIGHT),
            ) else {
                return Err(Error::CorruptImage("JPEG: no size in its header".into()));
            };
            let colorspace = self.get(raw::TJPARAM_TJPARAM_COLORSPACE);
            Ok(Header {
                width,
                height,
                lossless: self.get(raw::TJPARAM_TJPARAM_LOSSLESS) != 0,
                cmyk: colorspace == raw::TJCS_TJCS_CMYK as c_int
                    || colorspace == raw::TJCS_TJCS_YCCK as c_int,
                mcu_width: usize::try_from(self.get(raw::TJPARAM_TJPARAM_SUBSAMP))
                    .ok()
                    .and_then(|i| MCU_WIDTH.get(i).copied()),
            })
        }

        /// Decodes `bytes`, whose header was just read, to RGB at 1/`scale` (1, 2, 4 or 8);
        /// with `crop`, only the stored pixels `[x0, y0, x1, y1)` of the scaled image, `x0` on
        /// an iMCU boundary.
        pub(super) fn decode(
            &self,
            bytes: &[u8],
            scale: u32,
            crop: Option<[u32; 4]>,
        ) -> Result<RgbImage> {
            let factor = raw::tjscalingfactor {
                num: 1,
                denom: scale as c_int,
            };
            // SAFETY (this and the next two calls): the handle is valid and its header read.
            self.check(unsafe { raw::tj3SetScalingFactor(self.0, factor) })?;
            self.check(unsafe {
                raw::tj3Set(self.0, raw::TJPARAM_TJPARAM_SCANLIMIT as c_int, MAX_SCANS)
            })?;
            let (sw, sh) = (
                u32::try_from(self.get(raw::TJPARAM_TJPARAM_JPEGWIDTH))
                    .unwrap_or(0)
                    .div_ceil(scale),
                u32::try_from(self.get(raw::TJPARAM_TJPARAM_JPEGHEIGHT))
                    .unwrap_or(0)
                    .div_ceil(scale),
            );
            // The whole image is {0, 0, 0, 0} (TJUNCROPPED); a handle keeps its last region.
            let [x0, y0, x1, y1] = crop.unwrap_or([0, 0, sw, sh]);
            let (w, h) = (x1.saturating_sub(x0), y1.saturating_sub(y0));
            let region = match crop {
                Some(_) => raw::tjregion {
                    x: x0 as c_int,
                    y: y0 as c_int,
                    w: w as c_int,
                    h: h as c_int,
                },
                None => raw::tjregion {
                    x: 0,
                    y: 0,
                    w: 0,
                    h: 0,
                },
            };
            self.check(unsafe { raw::tj3SetCroppingRegion(self.0, region) })?;
            let mut pixels = vec![0u8; w as usize * h as usize * 3];
            // SAFETY: `pixels` holds `h` rows of `w * 3` bytes, what an RGB decode of the
            // (scaled, cropped) image writes with that pitch; `bytes` outlives the call.
            self.check(unsafe {
                raw::tj3Decompress8(
                    self.0,
                    bytes.as_ptr(),
                    bytes.len() as raw::size_t,
                    pixels.as_mut_ptr(),
                    (w * 3) as c_int,
                    raw::TJPF_TJPF_RGB,
                )
            })?;
            RgbImage::from_raw(w, h, pixels)
                .ok_or_else(|| Error::Internal("JPEG decoder output size".into()))
        }
    }
}

/// A PNG, or a CMYK JPEG, through the image crate at full resolution.
fn decode_by_image_crate(
    bytes: &[u8],
    format: ImageFormat,
    limits: &DecodeLimits,
) -> Result<Decoded> {
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
    check_size(w, h, limits)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::CorruptImage(e.to_string()))?
        .into_rgb8();
    let img = orient(img, orientation);
    Ok(Decoded {
        full_size: img.dimensions(),
        image: img,
        scale: 1,
    })
}

/// Whether an orientation turns the image a quarter (width and height swap).
fn swaps_sides(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// The EXIF orientation of a JPEG: the first APP1 `Exif` segment before the first scan, if
/// any; no transform when there is none or it does not parse.
fn jpeg_orientation(bytes: &[u8]) -> Orientation {
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            break;
        }
        let m = bytes[i + 1];
        if m == 0xFF {
            i += 1;
            continue;
        }
        if m == 0xDA || m == 0xD9 {
            break;
        }
        let len = usize::from(bytes[i + 2]) << 8 | usize::from(bytes[i + 3]);
        let Some(seg) = bytes.get(i + 4..i + 2 + len) else {
            break;
        };
        if m == 0xE1 {
            if let Some(tiff) = seg.strip_prefix(b"Exif\0\0") {
                if let Some(o) = Orientation::from_exif_chunk(tiff) {
                    return o;
                }
            }
        }
        i += 2 + len.max(2);
    }
    Orientation::NoTransforms
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
