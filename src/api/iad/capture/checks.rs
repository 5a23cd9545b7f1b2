//! The individual capture checks and the JPEG measurements they rest on. Each check looks at
//! one kind of evidence and returns findings for one rejection reason; thresholds live in
//! [`super::CaptureConfig`] and are documented in `docs/capture-bundle.md`.

use serde::Serialize;

use super::bundle::CaptureMeta;
use super::{CaptureConfig, CaptureRejection};
use crate::{Error, Result};

/// One failed check: the reason it implies and what was seen (for logs and BI, never for the
/// capture client).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The rejection reason.
    pub reason: CaptureRejection,
    /// Stable name of the check, e.g. `virtual_camera_label`.
    pub check: &'static str,
    /// What was measured.
    pub detail: String,
}

impl Finding {
    fn new(reason: CaptureRejection, check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            reason,
            check,
            detail: detail.into(),
        }
    }
}

/// What the JPEG's own bytes say, read from its markers (no pixel decoding).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JpegFacts {
    /// Width in the frame header (before orientation).
    pub width: u32,
    /// Height in the frame header (before orientation).
    pub height: u32,
    /// EXIF orientation (1 when absent).
    pub orientation: u16,
    /// An `Exif` APP1 segment is present.
    pub has_exif: bool,
    /// EXIF IFD0 Make.
    pub exif_make: Option<String>,
    /// EXIF IFD0 Model.
    pub exif_model: Option<String>,
    /// EXIF IFD0 Software.
    pub exif_software: Option<String>,
    /// Text of COM segments.
    pub comments: Vec<String>,
}

impl JpegFacts {
    /// Size of the upright image (width and height swapped for orientations 5 to 8).
    pub fn upright_size(&self) -> (u32, u32) {
        if (5..=8).contains(&self.orientation) {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// Walks the JPEG markers up to the first scan: frame size, EXIF IFD0 tags and comments.
pub fn inspect_jpeg(bytes: &[u8]) -> Result<JpegFacts> {
    let corrupt = |m: &str| Error::CorruptImage(format!("JPEG structure: {m}"));
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(Error::UnsupportedFormat);
    }
    let mut facts = JpegFacts {
        orientation: 1,
        ..JpegFacts::default()
    };
    let mut i = 2;
    let mut frame = false;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xFF {
            return Err(corrupt("marker expected"));
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            i += 2;
            continue;
        }
        if marker == 0xD9 || marker == 0xDA {
            break;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        if len < 2 || i + 2 + len > bytes.len() {
            return Err(corrupt("segment runs past the end"));
        }
        let data = &bytes[i + 4..i + 2 + len];
        match marker {
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if data.len() < 5 {
                    return Err(corrupt("short frame header"));
                }
                facts.height = u32::from(u16::from_be_bytes([data[1], data[2]]));
                facts.width = u32::from(u16::from_be_bytes([data[3], data[4]]));
                frame = true;
            }
            0xE1 if data.starts_with(b"Exif\0\0") && !facts.has_exif => {
                facts.has_exif = true;
                read_exif(&data[6..], &mut facts);
            }
            0xFE => facts.comments.push(
                String::from_utf8_lossy(data)
                    .trim_end_matches('\0')
                    .to_string(),
            ),
            _ => {}
        }
        i += 2 + len;
    }
    if !frame {
        return Err(corrupt("no frame header before the scan"));
    }
    Ok(facts)
}

/// Reads Make, Model, Software and Orientation from IFD0; a broken EXIF block reads as empty.
fn read_exif(tiff: &[u8], facts: &mut JpegFacts) {
    let Ok(exif) = exif::Reader::new().read_raw(tiff.to_vec()) else {
        return;
    };
    let text = |tag| {
        exif.get_field(tag, exif::In::PRIMARY)
            .and_then(|f| match &f.value {
                exif::Value::Ascii(parts) => parts
                    .first()
                    .map(|p| {
                        String::from_utf8_lossy(p)
                            .trim()
                            .trim_end_matches('\0')
                            .to_string()
                    })
                    .filter(|s| !s.is_empty()),
                _ => None,
            })
    };
    facts.exif_make = text(exif::Tag::Make);
    facts.exif_model = text(exif::Tag::Model);
    facts.exif_software = text(exif::Tag::Software);
    if let Some(o) = exif
        .get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
    {
        facts.orientation = u16::try_from(o).unwrap_or(1);
    }
}

/// EXIF IFD0 ASCII tags to write with [`insert_exif`].
#[derive(Debug, Clone, Default)]
pub struct ExifTags {
    /// Make (0x010F).
    pub make: Option<String>,
    /// Model (0x0110).
    pub model: Option<String>,
    /// Software (0x0131).
    pub software: Option<String>,
}

/// Returns `jpeg` with a minimal EXIF APP1 segment (IFD0 Make/Model/Software) inserted after
/// SOI, replacing any existing EXIF segment. This is what a camera pipeline writes; the
/// `bundle create` tool and the tests use it to stand in for a phone SDK.
pub fn insert_exif(jpeg: &[u8], tags: &ExifTags) -> Result<Vec<u8>> {
    inspect_jpeg(jpeg)?;
    let entries: Vec<(u16, &str)> = [
        (0x010F, tags.make.as_deref()),
        (0x0110, tags.model.as_deref()),
        (0x0131, tags.software.as_deref()),
    ]
    .into_iter()
    .filter_map(|(t, v)| v.map(|v| (t, v)))
    .collect();
    // Little-endian TIFF: header, IFD0 (count, 12-byte entries, next=0), then string data.
    let n = entries.len();
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    tiff.extend((n as u16).to_le_bytes());
    let mut data_off = 8 + 2 + 12 * n + 4;
    let mut data = Vec::new();
    for (tag, v) in &entries {
        let mut s = v.as_bytes().to_vec();
        s.push(0);
        tiff.extend(tag.to_le_bytes());
        tiff.extend(2u16.to_le_bytes()); // ASCII
        tiff.extend((s.len() as u32).to_le_bytes());
        if s.len() <= 4 {
            s.resize(4, 0);
            tiff.extend(&s);
        } else {
            tiff.extend((data_off as u32).to_le_bytes());
            data_off += s.len();
            data.extend(s);
        }
    }
    tiff.extend(0u32.to_le_bytes());
    tiff.extend(data);
    let seg_len = u16::try_from(2 + 6 + tiff.len())
        .map_err(|_| Error::InvalidArgument("EXIF tags too long".into()))?;
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend(seg_len.to_be_bytes());
    out.extend(b"Exif\0\0");
    out.extend(tiff);
    // Copy the rest, dropping existing EXIF APP1 segments.
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF && jpeg[i + 1] != 0xDA {
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        let end = (i + 2 + len).min(jpeg.len());
        let is_exif = jpeg[i + 1] == 0xE1 && jpeg[i + 4..end].starts_with(b"Exif\0\0");
        if !is_exif {
            out.extend(&jpeg[i..end]);
        }
        i = end;
    }
    out.extend(&jpeg[i.min(jpeg.len())..]);
    Ok(out)
}

/// Lower-case alphanumerics only: `"Google Inc."` -> `"googleinc"`.
fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// `true` when `needle` occurs in `hay` ignoring case and punctuation.
fn contains_norm(hay: &str, needle: &str) -> bool {
    let n = norm(needle);
    !n.is_empty() && norm(hay).contains(&n)
}

/// Two names agree when, normalised, one contains the other (`Samsung` vs
/// `SAMSUNG Electronics`).
fn names_agree(a: &str, b: &str) -> bool {
    let (a, b) = (norm(a), norm(b));
    a.contains(&b) || b.contains(&a)
}

/// `true` for a mobile OS claim (`IOS` or `ANDROID`).
pub fn is_mobile(os: &str) -> bool {
    matches!(os, "IOS" | "ANDROID")
}

/// SDK_INTEGRITY_VIOLATION: the SDK digest must be one of `cfg.sdk_digests`.
pub fn check_sdk(meta: &CaptureMeta, cfg: &CaptureConfig) -> Vec<Finding> {
    let d = meta.sdk_digest.trim().to_ascii_lowercase();
    let well_formed = d.len() == 64 && d.bytes().all(|c| c.is_ascii_hexdigit());
    if !well_formed {
        return vec![Finding::new(
            CaptureRejection::SdkIntegrityViolation,
            "sdk_digest_malformed",
            "sdk_digest is not 64 hex digits",
        )];
    }
    if !cfg
        .sdk_digests
        .iter()
        .any(|k| k.trim().eq_ignore_ascii_case(&d))
    {
        return vec![Finding::new(
            CaptureRejection::SdkIntegrityViolation,
            "sdk_digest_unknown",
            format!("sdk {} digest {d} is not a known build", meta.sdk_version),
        )];
    }
    Vec::new()
}

/// UNTRUSTED_ENVIRONMENT: reported markers, virtual-camera labels, emulator device names.
pub fn check_environment(meta: &CaptureMeta, cfg: &CaptureConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let flags = meta.environment.flagged();
    if !flags.is_empty() {
        out.push(Finding::new(
            CaptureRejection::UntrustedEnvironment,
            "environment_markers",
            format!("SDK reported {}", flags.join(", ")),
        ));
    }
    if let Some(v) = cfg
        .virtual_camera_labels
        .iter()
        .find(|v| contains_norm(&meta.camera_label, v))
    {
        out.push(Finding::new(
            CaptureRejection::UntrustedEnvironment,
            "virtual_camera_label",
            format!(
                "camera {:?} matches virtual camera {v:?}",
                meta.camera_label
            ),
        ));
    }
    let device = format!("{} {}", meta.manufacturer, meta.device_model);
    if let Some(v) = cfg
        .emulator_models
        .iter()
        .find(|v| contains_norm(&device, v))
    {
        out.push(Finding::new(
            CaptureRejection::UntrustedEnvironment,
            "emulator_device",
            format!("device {device:?} matches emulator {v:?}"),
        ));
    }
    out
}

/// UNTRUSTED_DEVICE: the claims contradict the image (declared size, EXIF Make/Model) or
/// each other (iOS on a non-Apple device).
pub fn check_device(meta: &CaptureMeta, facts: &JpegFacts, os: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let (w, h) = facts.upright_size();
    if (meta.image_width, meta.image_height) != (w, h) {
        out.push(Finding::new(
            CaptureRejection::UntrustedDevice,
            "declared_size",
            format!(
                "declared {}x{}, the JPEG is {w}x{h} upright",
                meta.image_width, meta.image_height
            ),
        ));
    }
    if let Some(make) = &facts.exif_make {
        if !meta.manufacturer.trim().is_empty() && !names_agree(make, &meta.manufacturer) {
            out.push(Finding::new(
                CaptureRejection::UntrustedDevice,
                "exif_make",
                format!(
                    "EXIF Make {make:?} but the SDK claims {:?}",
                    meta.manufacturer
                ),
            ));
        }
    }
    if let Some(model) = &facts.exif_model {
        if !meta.device_model.trim().is_empty() && !names_agree(model, &meta.device_model) {
            out.push(Finding::new(
                CaptureRejection::UntrustedDevice,
                "exif_model",
                format!(
                    "EXIF Model {model:?} but the SDK claims {:?}",
                    meta.device_model
                ),
            ));
        }
    }
    let apple = contains_norm(&meta.manufacturer, "apple");
    if (os == "IOS" && !meta.manufacturer.trim().is_empty() && !apple) || (os == "ANDROID" && apple)
    {
        out.push(Finding::new(
            CaptureRejection::UntrustedDevice,
            "os_manufacturer",
            format!("OS {:?} on a {:?} device", meta.os, meta.manufacturer),
        ));
    }
    out
}

/// UNTRUSTED_CONTENT / UNTRUSTED_CONTENT_LOW_CONFIDENCE from the JPEG's provenance markers:
/// a known editor or re-encoder signature in EXIF Software or a COM segment on a claimed
/// phone capture (strong), or a claimed phone capture without any EXIF block (weak).
pub fn check_provenance(facts: &JpegFacts, os: &str, cfg: &CaptureConfig) -> Vec<Finding> {
    if !is_mobile(os) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let texts = facts.exif_software.iter().chain(facts.comments.iter());
    for t in texts {
        if let Some(sig) = cfg
            .reencoder_signatures
            .iter()
            .find(|s| contains_norm(t, s))
        {
            out.push(Finding::new(
                CaptureRejection::UntrustedContent,
                "reencoder_signature",
                format!("JPEG written by {t:?} (matches {sig:?}) on a claimed {os} capture"),
            ));
            break;
        }
    }
    if cfg.require_exif_on_mobile && !facts.has_exif {
        out.push(Finding::new(
            CaptureRejection::UntrustedContentLowConfidence,
            "exif_missing",
            format!("claimed {os} camera capture carries no EXIF block"),
        ));
    }
    out
}

/// UNTRUSTED_CONTENT / UNTRUSTED_CONTENT_LOW_CONFIDENCE from passive liveness: `spoof` is the
/// networks' mean print + replay probability (1 - fused live).
pub fn check_engine_content(
    spoof: f32,
    replay: f32,
    print: f32,
    cfg: &CaptureConfig,
) -> Vec<Finding> {
    let detail = format!("spoof {spoof:.3} (replay {replay:.3}, print {print:.3})");
    if spoof >= cfg.content_reject {
        vec![Finding::new(
            CaptureRejection::UntrustedContent,
            "passive_liveness",
            detail,
        )]
    } else if spoof >= cfg.content_low_confidence {
        vec![Finding::new(
            CaptureRejection::UntrustedContentLowConfidence,
            "passive_liveness",
            detail,
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 90]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn exif_written_is_exif_read() {
        let j = jpeg(64, 48);
        let plain = inspect_jpeg(&j).unwrap();
        assert_eq!((plain.width, plain.height, plain.has_exif), (64, 48, false));
        let tags = ExifTags {
            make: Some("Google".into()),
            model: Some("Pixel 8".into()),
            software: Some("abc".into()),
        };
        let with = insert_exif(&j, &tags).unwrap();
        let f = inspect_jpeg(&with).unwrap();
        assert!(f.has_exif);
        assert_eq!(f.exif_make.as_deref(), Some("Google"));
        assert_eq!(f.exif_model.as_deref(), Some("Pixel 8"));
        assert_eq!(f.exif_software.as_deref(), Some("abc"));
        assert_eq!((f.width, f.height), (64, 48));
        // Replacing keeps one EXIF segment, and the image still decodes.
        let again = insert_exif(&with, &ExifTags::default()).unwrap();
        assert_eq!(inspect_jpeg(&again).unwrap().exif_make, None);
        let img = image::load_from_memory(&again).unwrap();
        assert_eq!((img.width(), img.height()), (64, 48));
    }

    #[test]
    fn fixture_style_exif_orientation_swaps_the_size() {
        let f = JpegFacts {
            width: 640,
            height: 480,
            orientation: 6,
            ..JpegFacts::default()
        };
        assert_eq!(f.upright_size(), (480, 640));
    }

    #[test]
    fn names_agree_loosely_and_contradict_clearly() {
        assert!(names_agree("SAMSUNG", "samsung Electronics"));
        assert!(names_agree("Google Inc.", "google"));
        assert!(!names_agree("Canon", "Apple"));
        assert!(contains_norm("OBS-Virtual Camera", "OBS Virtual Camera"));
        assert!(!contains_norm("Front Camera", ""));
    }

    #[test]
    fn broken_jpegs_are_errors() {
        assert!(matches!(
            inspect_jpeg(b"GIF89a"),
            Err(Error::UnsupportedFormat)
        ));
        let mut j = jpeg(32, 32);
        j.truncate(30);
        assert!(inspect_jpeg(&j).is_err());
    }
}
