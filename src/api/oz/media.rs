//! The media of a `detect` request turned into frames: an image is one frame, a zip archive
//! one frame per file, a video its sampled frames ([`crate::preprocess::video`]). Every bound
//! (media count, frames in all, archive entries and their inflated size, video bytes,
//! duration, frames and pixels) is checked before the work it protects, and named in the
//! error.

use bytes::Bytes;
use image::RgbImage;

use super::{oz_error, Failure, OzConfig};
use crate::api::error::ApiError;
use crate::api::input::{looks_like_zip, zip_entries, ArchiveLimits};
use crate::batcher::Input;
use crate::preprocess::video::{decode_sampled, looks_like_video};
use crate::Error;

/// What a media part holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// One JPEG or PNG.
    Image,
    /// A video container (MP4, MOV, Matroska/WebM, AVI, MPEG-TS).
    Video,
    /// A zip archive of images.
    Archive,
}

impl MediaKind {
    /// Sniffs the kind from the first bytes (never from the part's declared type).
    pub fn of(bytes: &[u8]) -> MediaKind {
        if looks_like_zip(bytes) {
            MediaKind::Archive
        } else if looks_like_video(bytes) {
            MediaKind::Video
        } else {
            MediaKind::Image
        }
    }

    /// Wire name.
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Archive => "archive",
        }
    }
}

/// One frame of a media and where it came from.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The image for the batcher.
    pub input: Input,
    /// Its label in errors: the media name, plus the archive path or the video time.
    pub label: String,
}

/// A media part expanded into frames.
#[derive(Debug, Clone)]
pub struct Media {
    /// The part's name (its media key).
    pub name: String,
    /// What it held.
    pub kind: MediaKind,
    /// Its frames, in order.
    pub frames: Vec<Frame>,
}

/// What one request may still expand into: frames and inflated archive bytes over all its
/// media (`oz.max_frames`, `oz.archive.max_total_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Frames left.
    pub frames: usize,
    /// Inflated archive bytes left.
    pub archive_bytes: u64,
}

impl Budget {
    /// The budget of one request.
    pub fn of(cfg: &OzConfig) -> Budget {
        Budget {
            frames: cfg.max_frames,
            archive_bytes: cfg.archive.max_total_bytes,
        }
    }
}

/// Every media of a request expanded in order, within the request's budget (run on a
/// blocking thread: archives inflate, videos decode); the first media over a bound stops the
/// work.
pub fn expand_all(parts: Vec<(String, Bytes)>, cfg: &OzConfig) -> Result<Vec<Media>, ApiError> {
    let mut budget = Budget::of(cfg);
    parts
        .into_iter()
        .map(|(name, bytes)| {
            let m = expand(&name, bytes, cfg, &mut budget)?;
            if m.frames.len() > budget.frames {
                return Err(oz_error(
                    Failure::Sample,
                    format!(
                        "{name}: more than {} frames in all the media (images, archive files,                          sampled video frames), the limit",
                        cfg.max_frames
                    ),
                ));
            }
            budget.frames -= m.frames.len();
            Ok(m)
        })
        .collect()
}

/// Expands one media part; archives draw on `budget.archive_bytes`.
pub fn expand(
    name: &str,
    bytes: Bytes,
    cfg: &OzConfig,
    budget: &mut Budget,
) -> Result<Media, ApiError> {
    let kind = MediaKind::of(&bytes);
    let sample = |m: String| oz_error(Failure::Sample, format!("{name}: {m}"));
    let frames = match kind {
        MediaKind::Image => vec![Frame {
            input: Input::Encoded(bytes),
            label: name.to_string(),
        }],
        MediaKind::Archive => {
            let limits = ArchiveLimits {
                max_total_bytes: budget.archive_bytes,
                ..cfg.archive
            };
            let entries = zip_entries(&bytes, &limits).map_err(|e| match e {
                ApiError::Engine(e) => sample(plain(&e)),
                e => sample(e.to_string()),
            })?;
            let inflated: u64 = entries.iter().map(|(_, b)| b.len() as u64).sum();
            budget.archive_bytes = budget.archive_bytes.saturating_sub(inflated);
            if entries.is_empty() {
                return Err(sample("the archive holds no file".into()));
            }
            entries
                .into_iter()
                .map(|(path, data)| Frame {
                    input: Input::Encoded(data),
                    label: format!("{name}/{path}"),
                })
                .collect()
        }
        MediaKind::Video => {
            let v = decode_sampled(&bytes, &cfg.video).map_err(|e| sample(plain(&e)))?;
            v.frames
                .into_iter()
                .zip(v.timestamps_s)
                .map(|(f, t): (RgbImage, f64)| Frame {
                    input: Input::Frame(f),
                    label: format!("{name} at {t:.2} s"),
                })
                .collect()
        }
    };
    Ok(Media {
        name: name.to_string(),
        kind,
        frames,
    })
}

/// An engine error's message without its class prefix (`invalid argument: `, `corrupt image: `),
/// which reads wrongly for a video or an archive.
fn plain(e: &Error) -> String {
    match e {
        Error::InvalidArgument(m) | Error::CorruptImage(m) => m.clone(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_sniffed_not_declared() {
        assert_eq!(MediaKind::of(b"PK\x03\x04rest"), MediaKind::Archive);
        assert_eq!(
            MediaKind::of(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00"),
            MediaKind::Video
        );
        assert_eq!(MediaKind::of(b"\xff\xd8\xff\xe0"), MediaKind::Image);
        let cfg = OzConfig::default();
        let mut budget = Budget::of(&cfg);
        let e = expand(
            "m",
            Bytes::from_static(b"PK\x03\x04broken"),
            &cfg,
            &mut budget,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("m: zip archive"), "{e}");
    }
}
