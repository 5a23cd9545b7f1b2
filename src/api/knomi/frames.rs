//! The frames of a Knomi call as pixels: decoded off the async threads within the engine's
//! bounds and a per-call pixel budget, the frames of each request checked to share one size
//! (code 153), rotated as the
//! client asked; the analyses checked frame by frame; the captured frame re-encoded.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use image::RgbImage;
use serde_json::{json, Value};

use super::request::LivenessRequest;
use super::{engine_code, knomi_error, Code, CAPTURED_JPEG_QUALITY};
use crate::api::error::{ApiError, ErrorClass};
use crate::batcher::Processed;
use crate::engine::autocapture::Feedback;
use crate::engine::Engine;
use crate::preprocess::decode::{decode_rgb, encode_jpeg, orient, DecodeLimits};
use crate::Error;

/// One decoded frame, ready for the batcher.
pub struct Decoded {
    /// The upright, rotated image.
    pub image: RgbImage,
}

/// Decodes every frame of every request off the async threads: the engine's byte and pixel
/// bounds per frame, `max_total` pixels over all, one size for all (code 153), then the
/// requested rotation.
pub async fn decode_all(
    engine: &Arc<Engine>,
    requests: &[LivenessRequest],
    max_total: u64,
) -> Result<Vec<Vec<Decoded>>, ApiError> {
    let limits = engine.config().decode;
    let jobs: Vec<(u16, Vec<Bytes>)> = requests
        .iter()
        .map(|r| {
            (
                r.rotation,
                r.frames.iter().map(|f| f.bytes.clone()).collect(),
            )
        })
        .collect();
    tokio::task::spawn_blocking(move || decode_frames(jobs, limits, max_total))
        .await
        .map_err(|e| Error::Internal(format!("frame decoding stopped: {e}")))?
}

fn decode_frames(
    jobs: Vec<(u16, Vec<Bytes>)>,
    limits: DecodeLimits,
    max_total: u64,
) -> Result<Vec<Vec<Decoded>>, ApiError> {
    let mut total = 0u64;
    let mut out = Vec::with_capacity(jobs.len());
    for (r, (rotation, frames)) in jobs.into_iter().enumerate() {
        // "All images within a single request must have the same width and height."
        let mut size: Option<(u32, u32)> = None;
        let mut decoded = Vec::with_capacity(frames.len());
        for (i, bytes) in frames.iter().enumerate() {
            let lim = DecodeLimits {
                max_pixels: limits
                    .max_pixels
                    .min(max_total.saturating_sub(total).max(1)),
                ..limits
            };
            let img = decode_rgb(bytes, &lim).map_err(|e| match e {
                Error::TooManyPixels { width, height, .. } if total > 0 => knomi_error(
                    Code::InvalidImageSize,
                    format!(
                        "Invalid image size: frame {i} of request {r} ({width}x{height}) takes the frames over {max_total} pixels in all."
                    ),
                ),
                e => ApiError::from(e),
            })?;
            let dims = img.dimensions();
            total += u64::from(dims.0) * u64::from(dims.1);
            match size {
                None => size = Some(dims),
                Some(s) if s != dims => {
                    return Err(knomi_error(
                        Code::FrameSizes,
                        format!(
                            "The submitted images did not all have the same width and height: frame {i} of request {r} is {}x{}, the first was {}x{}.",
                            dims.0, dims.1, s.0, s.1
                        ),
                    ))
                }
                Some(_) => {}
            }
            decoded.push(Decoded {
                image: rotate(img, rotation),
            });
        }
        out.push(decoded);
    }
    Ok(out)
}

/// Rotates clockwise by 0, 90, 180 or 270 degrees.
fn rotate(img: RgbImage, degrees: u16) -> RgbImage {
    use image::metadata::Orientation;
    let o = match degrees {
        90 => Orientation::Rotate90,
        180 => Orientation::Rotate180,
        270 => Orientation::Rotate270,
        _ => Orientation::NoTransforms,
    };
    orient(img, o)
}

/// Every frame's analysis, or the first failure: a client's fault names the frame.
pub fn analysed(results: Vec<crate::Result<Processed>>) -> Result<Vec<Processed>, ApiError> {
    let mut out = Vec::with_capacity(results.len());
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(p) => out.push(p),
            Err(e) if ErrorClass::of_engine(&e).is_server_fault() => return Err(e.into()),
            Err(e) => {
                let (_, code, message) = engine_code(&e);
                let code = if code == -8 {
                    Code::InvalidImageSize
                } else {
                    Code::InvalidImageData
                };
                return Err(knomi_error(code, format!("Frame {i}: {message}")));
            }
        }
    }
    Ok(out)
}

/// The `autocapture_result` of the best frame: it re-decoded and rotated as analysed, as a
/// JPEG in base64 (never constructed: facegate does not synthesise faces).
pub async fn captured_frame(
    engine: &Arc<Engine>,
    r: &LivenessRequest,
    best: usize,
    feedback: Vec<Feedback>,
) -> Result<Value, ApiError> {
    let bytes = r
        .frames
        .get(best)
        .map(|f| f.bytes.clone())
        .ok_or_else(|| Error::Internal("the best frame is out of range".into()))?;
    let (limits, rotation) = (engine.config().decode, r.rotation);
    let jpeg = tokio::task::spawn_blocking(move || -> crate::Result<Vec<u8>> {
        let img = rotate(decode_rgb(&bytes, &limits)?, rotation);
        encode_jpeg(&img, CAPTURED_JPEG_QUALITY)
    })
    .await
    .map_err(|e| Error::Internal(format!("frame encoding stopped: {e}")))??;
    let codes: Vec<&str> = feedback.iter().map(|f| f.code()).collect();
    Ok(json!({
        "captured_frame": STANDARD.encode(jpeg),
        "captured_frame_is_constructed": false,
        "feedback": codes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_turns_clockwise() {
        let mut img = RgbImage::new(3, 2);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        let r = rotate(img.clone(), 90);
        assert_eq!(r.dimensions(), (2, 3));
        assert_eq!(r.get_pixel(1, 0).0, [255, 0, 0]);
        assert_eq!(rotate(img.clone(), 180).get_pixel(2, 1).0, [255, 0, 0]);
        assert_eq!(rotate(img, 270).get_pixel(0, 2).0, [255, 0, 0]);
    }
}
