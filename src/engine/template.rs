//! Face templates: a 128-D dlib ResNet descriptor of the aligned 150x150 chip, and 1:1
//! comparison by Euclidean distance (dlib's metric).

use candle_core::Device;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::Face;
use crate::nn::face_descriptor::{distance, FaceDescriptor};
use crate::preprocess::align::{align_face, chips_to_tensor};
use crate::Result;

/// Identifier of the template format; comparisons across versions are refused.
pub const TEMPLATE_VERSION: &str = "facegate-dlib-resnet-v1";

/// Distance at or below which two templates are the same person, calibrated on the live crops
/// of `nuaa-dev` between FAR 0.1 % (0.399) and FAR 1 % (0.428) (see `docs/calibration.md`).
pub const DEFAULT_MATCH_THRESHOLD: f32 = 0.41;

/// A face template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaceTemplate {
    /// Format identifier, [`TEMPLATE_VERSION`].
    pub version: String,
    /// The 128 descriptor values.
    pub descriptor: Vec<f32>,
}

/// Result of comparing two templates.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Match {
    /// Euclidean distance between descriptors (0 = identical).
    pub distance: f32,
    /// `clamp(1 - distance, 0, 1)`: larger is more similar.
    pub similarity: f32,
    /// `distance <= threshold`.
    pub is_match: bool,
    /// Threshold used.
    pub threshold: f32,
}

impl FaceTemplate {
    /// Compares two templates; `None` when their versions or lengths differ.
    pub fn compare(&self, other: &FaceTemplate, threshold: f32) -> Option<Match> {
        if self.version != other.version || self.descriptor.len() != other.descriptor.len() {
            return None;
        }
        let d = distance(&self.descriptor, &other.descriptor);
        Some(Match {
            distance: d,
            similarity: (1.0 - d).clamp(0.0, 1.0),
            is_match: d <= threshold,
            threshold,
        })
    }
}

/// Aligns every face and runs the descriptor on the whole batch.
pub fn describe(
    net: &FaceDescriptor,
    faces: &[(&RgbImage, &Face)],
    device: &Device,
) -> Result<Vec<FaceTemplate>> {
    if faces.is_empty() {
        return Ok(Vec::new());
    }
    let chips = faces
        .iter()
        .map(|(img, f)| {
            align_face(
                img.as_raw(),
                img.width() as usize,
                img.height() as usize,
                &f.landmarks,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let out: Vec<Vec<f32>> = net.forward(&chips_to_tensor(&chips, device)?)?.to_vec2()?;
    Ok(out
        .into_iter()
        .map(|descriptor| FaceTemplate {
            version: TEMPLATE_VERSION.to_string(),
            descriptor,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> FaceTemplate {
        FaceTemplate {
            version: TEMPLATE_VERSION.into(),
            descriptor: v.to_vec(),
        }
    }

    #[test]
    fn compare_uses_euclidean_distance_and_threshold() {
        let m = t(&[0.0, 0.0]).compare(&t(&[0.3, 0.4]), 0.6).unwrap();
        assert!((m.distance - 0.5).abs() < 1e-6 && m.is_match);
        assert!(
            !t(&[0.0, 0.0])
                .compare(&t(&[0.6, 0.8]), 0.6)
                .unwrap()
                .is_match
        );
        let mut other = t(&[0.0, 0.0]);
        other.version = "other".into();
        assert!(t(&[0.0, 0.0]).compare(&other, 0.6).is_none());
    }
}
