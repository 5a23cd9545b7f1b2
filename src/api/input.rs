//! The shared input layer: every dialect reads its images through these functions, so bodies,
//! multipart parts, base64 in JSON and frame lists are parsed, named and bounded the same way.
//! What comes out is a [`crate::batcher::Input`] (encoded bytes, or an already decoded frame)
//! ready for the batcher, whose decoder applies the engine's byte and pixel bounds.

use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};
use base64::Engine as _;
use bytes::Bytes;
use hyper::header::CONTENT_TYPE;
use hyper::HeaderMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::batcher::Input;
use crate::Error;

/// One image of a request with the name it is answered under.
#[derive(Debug, Clone)]
pub struct NamedInput {
    /// File name, else field name, else `image<N>` (its position among the request's images).
    pub name: String,
    /// The image.
    pub input: Input,
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone)]
pub struct Part {
    /// Field name (`name=` of Content-Disposition).
    pub name: Option<String>,
    /// File name (`filename=`), present for file uploads.
    pub file_name: Option<String>,
    /// The part's media type (lower case, without parameters), when it declares one.
    pub content_type: Option<String>,
    /// The part's bytes.
    pub bytes: Bytes,
}

/// The media type of a request (`Content-Type` without parameters, lower case; empty when
/// absent).
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a media type is one of the raw image bodies (`image/jpeg`, `image/png`,
/// `application/octet-stream`; also an absent type).
pub fn is_raw_image(media_type: &str) -> bool {
    matches!(
        media_type,
        "" | "image/jpeg" | "image/jpg" | "image/png" | "application/octet-stream"
    )
}

/// Reads every part of a `multipart/form-data` body (at most `max_parts`). A wrong
/// Content-Type, a missing boundary or a malformed body is an invalid argument.
pub async fn multipart(
    headers: &HeaderMap,
    body: Bytes,
    max_parts: usize,
) -> Result<Vec<Part>, ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if media_type(headers) != "multipart/form-data" {
        return Err(ApiError::invalid(format!(
            "expected a multipart/form-data request, got Content-Type {content_type:?}"
        )));
    }
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        ApiError::invalid(format!(
            "multipart/form-data without a usable boundary: {e}"
        ))
    })?;
    let stream =
        futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(ApiError::invalid(format!("malformed multipart body: {e}"))),
        };
        if parts.len() == max_parts {
            return Err(ApiError::invalid(format!(
                "too many parts: at most {max_parts} per request"
            )));
        }
        let name = field.name().map(str::to_string);
        let file_name = field.file_name().map(str::to_string);
        let content_type = field
            .content_type()
            .map(|m| m.essence_str().to_ascii_lowercase());
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::invalid(format!("malformed multipart part: {e}")))?;
        parts.push(Part {
            name,
            file_name,
            content_type,
            bytes,
        });
    }
    Ok(parts)
}

/// The images of multipart parts, named by file name, else field name, else `image<N>`.
pub fn named_parts(parts: Vec<Part>) -> Vec<NamedInput> {
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| NamedInput {
            name: p
                .file_name
                .or(p.name)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("image{i}")),
            input: Input::Encoded(p.bytes),
        })
        .collect()
}

/// The multipart images of a request (see [`multipart`] and [`named_parts`]); none is an
/// invalid argument.
pub async fn image_parts(
    headers: &HeaderMap,
    body: Bytes,
    max_parts: usize,
) -> Result<Vec<NamedInput>, ApiError> {
    let parts = multipart(headers, body, max_parts).await?;
    if parts.is_empty() {
        return Err(ApiError::invalid(
            "no image in the request: send one or more multipart image parts",
        ));
    }
    Ok(named_parts(parts))
}

/// Decodes a base64 image (standard or URL-safe alphabet, padding optional, whitespace and a
/// `data:...;base64,` prefix allowed) of at most `max_bytes` decoded bytes; `what` names the
/// field in errors.
pub fn base64_image(text: &str, max_bytes: usize, what: &str) -> Result<Bytes, ApiError> {
    let body = match text.trim_start().strip_prefix("data:") {
        Some(rest) => rest
            .split_once(',')
            .filter(|(meta, _)| meta.ends_with(";base64"))
            .map(|(_, data)| data)
            .ok_or_else(|| ApiError::invalid(format!("{what}: a data URL must be ;base64")))?,
        None => text,
    };
    // Decoded size is at most 3/4 of the text: refuse before allocating.
    let significant = body.bytes().filter(|b| !b.is_ascii_whitespace()).count();
    if significant / 4 * 3 > max_bytes + 3 {
        return Err(Error::ImageTooLarge {
            size: significant / 4 * 3,
            limit: max_bytes,
        }
        .into());
    }
    let compact: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(Error::EmptyImage.into());
    }
    let decoded = STANDARD_PAD_INDIFFERENT
        .decode(&compact)
        .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode(&compact))
        .map_err(|e| ApiError::invalid(format!("{what} is not valid base64: {e}")))?;
    if decoded.len() > max_bytes {
        return Err(Error::ImageTooLarge {
            size: decoded.len(),
            limit: max_bytes,
        }
        .into());
    }
    Ok(Bytes::from(decoded))
}

/// A list of base64 frames (a frame sequence in JSON), each decoded with [`base64_image`]:
/// at least one and at most `max_frames`; frames are named `frame<N>`.
pub fn base64_frames<'a>(
    frames: impl IntoIterator<Item = &'a str>,
    max_frames: usize,
    max_bytes: usize,
) -> Result<Vec<NamedInput>, ApiError> {
    let mut out = Vec::new();
    for (i, f) in frames.into_iter().enumerate() {
        if i == max_frames {
            return Err(ApiError::invalid(format!(
                "too many frames: at most {max_frames} per request"
            )));
        }
        let name = format!("frame{i}");
        let bytes = base64_image(f, max_bytes, &name)?;
        out.push(NamedInput {
            name,
            input: Input::Encoded(bytes),
        });
    }
    if out.is_empty() {
        return Err(ApiError::invalid("no frame in the request"));
    }
    Ok(out)
}

/// Bounds on reading a zip archive of images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveLimits {
    /// Most files (directories are not counted) one archive may hold.
    pub max_entries: usize,
    /// Largest uncompressed file, bytes.
    pub max_entry_bytes: u64,
    /// Largest uncompressed total, bytes.
    pub max_total_bytes: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_entries: 64,
            max_entry_bytes: 16 << 20,
            max_total_bytes: 128 << 20,
        }
    }
}

/// Whether `bytes` start as a zip archive (a local file header, or the end record of an empty
/// archive).
pub fn looks_like_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// The files of a zip archive, in archive order, named by their path inside it; directories
/// and macOS resource forks (`__MACOSX/`) are skipped. Every bound of `limits` is checked on
/// the declared sizes first and again on the bytes actually inflated, so a zip bomb (or an
/// entry lying about its size) is refused after at most the bound's worth of work.
pub fn zip_entries(bytes: &[u8], limits: &ArchiveLimits) -> Result<Vec<(String, Bytes)>, ApiError> {
    use std::io::Read;
    let bad = |m: String| ApiError::invalid(format!("zip archive: {m}"));
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("not a readable archive ({e})")))?;
    let (mut out, mut total) = (Vec::new(), 0u64);
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| bad(format!("entry {i} unreadable ({e})")))?;
        let name = f
            .name()
            .map_err(|e| bad(format!("entry {i} has an unreadable name ({e})")))?
            .to_string();
        if f.is_dir() || name.starts_with("__MACOSX/") {
            continue;
        }
        if out.len() == limits.max_entries {
            return Err(bad(format!(
                "more than {} files, the limit",
                limits.max_entries
            )));
        }
        let over = |size: u64| {
            if size > limits.max_entry_bytes {
                Some(format!(
                    "{name} inflates to more than {size} bytes, the limit per file is {}",
                    limits.max_entry_bytes
                ))
            } else if total + size > limits.max_total_bytes {
                Some(format!(
                    "the files inflate to more than {} bytes, the limit is {}",
                    total + size,
                    limits.max_total_bytes
                ))
            } else {
                None
            }
        };
        if let Some(m) = over(f.size()) {
            return Err(bad(m));
        }
        // Read at most one byte past the bound: what the header declares is not trusted.
        let cap = limits.max_entry_bytes.min(limits.max_total_bytes - total) + 1;
        let mut data = Vec::new();
        (&mut f)
            .take(cap)
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("{name} does not inflate ({e})")))?;
        if let Some(m) = over(data.len() as u64) {
            return Err(bad(m));
        }
        total += data.len() as u64;
        out.push((name, Bytes::from(data)));
    }
    Ok(out)
}

/// Parses a JSON body into `T`; malformed JSON is an invalid argument naming the position.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid("empty body: expected a JSON document"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_variants_and_bounds() {
        let want = b"\xff\xd8\xff\xe0hello".to_vec();
        for text in [
            "/9j/4GhlbGxv",
            "/9j/4Ghl\nbGxv",
            "_9j_4GhlbGxv",
            "data:image/jpeg;base64,/9j/4GhlbGxv",
        ] {
            assert_eq!(
                base64_image(text, 100, "image").unwrap().to_vec(),
                want,
                "{text}"
            );
        }
        assert_eq!(
            base64_image("/9j/4GhlbGxv", 4, "image").unwrap_err().kind(),
            "image_too_large"
        );
        assert_eq!(
            base64_image("  ", 4, "image").unwrap_err().kind(),
            "empty_image"
        );
        let e = base64_image("no*base64", 100, "selfie")
            .unwrap_err()
            .to_string();
        assert!(e.contains("selfie"), "{e}");
        assert!(base64_image("data:image/jpeg,abc", 100, "x").is_err());
    }

    #[test]
    fn frames_are_named_and_bounded() {
        let f = base64_frames(["/9j/", "/9j/"], 2, 100).unwrap();
        assert_eq!(
            f.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["frame0", "frame1"]
        );
        assert!(base64_frames(["/9j/"; 3], 2, 100)
            .unwrap_err()
            .to_string()
            .contains("at most 2"));
        assert!(base64_frames([], 2, 100).is_err());
    }

    fn zip_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in files {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn zip_entries_are_read_and_bombs_refused() {
        let z = zip_of(&[
            ("a.jpg", vec![1, 2, 3]),
            ("__MACOSX/x", vec![0]),
            ("b/c.png", vec![4]),
        ]);
        assert!(looks_like_zip(&z) && !looks_like_zip(b"\xff\xd8"));
        let e = zip_entries(&z, &ArchiveLimits::default()).unwrap();
        assert_eq!(
            e.iter()
                .map(|(n, b)| (n.as_str(), b.len()))
                .collect::<Vec<_>>(),
            [("a.jpg", 3), ("b/c.png", 1)]
        );
        // 64 MiB of zeros deflates to about 64 KiB.
        let bomb = zip_of(&[("zeros.jpg", vec![0; 64 << 20])]);
        assert!(bomb.len() < 1 << 20);
        let limits = ArchiveLimits {
            max_entry_bytes: 1 << 20,
            ..ArchiveLimits::default()
        };
        let m = zip_entries(&bomb, &limits).unwrap_err().to_string();
        assert!(m.contains("limit per file is 1048576"), "{m}");
        let many = zip_of(&[("1", vec![1]), ("2", vec![2]), ("3", vec![3])]);
        let few = ArchiveLimits {
            max_entries: 2,
            ..ArchiveLimits::default()
        };
        assert!(zip_entries(&many, &few)
            .unwrap_err()
            .to_string()
            .contains("more than 2 files"));
        let total = ArchiveLimits {
            max_total_bytes: 2,
            ..ArchiveLimits::default()
        };
        assert!(zip_entries(&many, &total)
            .unwrap_err()
            .to_string()
            .contains("the limit is 2"));
        assert!(zip_entries(&z[..z.len() / 2], &ArchiveLimits::default()).is_err());
    }

    #[test]
    fn parts_are_named_by_file_then_field_then_position() {
        let p = |name: Option<&str>, file: Option<&str>| Part {
            name: name.map(str::to_string),
            file_name: file.map(str::to_string),
            content_type: None,
            bytes: Bytes::new(),
        };
        let named = named_parts(vec![
            p(Some("a"), Some("f.jpg")),
            p(Some("b"), None),
            p(None, Some("")),
        ]);
        assert_eq!(
            named.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["f.jpg", "b", "image2"]
        );
    }
}
