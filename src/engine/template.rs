//! Face templates: a 128-D dlib ResNet descriptor of the aligned 150x150 chip, 1:1 and 1:N
//! comparison by Euclidean distance (dlib's metric), and the binary template format clients
//! store and send back ([`FaceTemplate::to_bytes`], [`FaceTemplate::from_bytes`]).
//!
//! Binary format, version 1 (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FGTM` |
//! | 4 | 2 | format version, 1 |
//! | 6 | 1 | length `L` of the model id (1..=64) |
//! | 7 | `L` | model id, ASCII ([`TEMPLATE_VERSION`] for this engine's descriptor) |
//! | 7+L | 2 | dimension `D` (1..=[`MAX_DIMENSION`]) |
//! | 9+L | 4·D | the descriptor, `f32` |
//! | 9+L+4·D | 4 | CRC-32 (IEEE) of every byte before it |

use candle_core::{DType, Device};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::Face;
use crate::nn::face_descriptor::{distance, FaceDescriptor};
use crate::preprocess::align::{align_face, chips_to_tensor, CHIP_SIZE};
use crate::preprocess::batch::align_job;
use crate::{Error, Result};

/// Identifier of the template format; comparisons across versions are refused.
pub const TEMPLATE_VERSION: &str = "facegate-dlib-resnet-v1";

/// Distance at or below which two templates are the same person, calibrated on the live crops
/// of `nuaa-dev` between FAR 0.1 % (0.399) and FAR 1 % (0.428) (see `docs/calibration.md`).
pub const DEFAULT_MATCH_THRESHOLD: f32 = 0.41;

/// First bytes of every binary template.
pub const TEMPLATE_MAGIC: [u8; 4] = *b"FGTM";
/// Binary format version written (and the only one read).
pub const TEMPLATE_FORMAT: u16 = 1;
/// Largest descriptor dimension a binary template may declare.
pub const MAX_DIMENSION: usize = 4096;
/// Longest model id a binary template may carry.
pub const MAX_MODEL_ID: usize = 64;

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

impl FaceTemplate {
    /// The binary form (see the module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let id = self.version.as_bytes();
        let mut out = Vec::with_capacity(13 + id.len() + 4 * self.descriptor.len());
        out.extend_from_slice(&TEMPLATE_MAGIC);
        out.extend_from_slice(&TEMPLATE_FORMAT.to_le_bytes());
        out.push(id.len().min(MAX_MODEL_ID) as u8);
        out.extend_from_slice(&id[..id.len().min(MAX_MODEL_ID)]);
        out.extend_from_slice(&(self.descriptor.len().min(MAX_DIMENSION) as u16).to_le_bytes());
        for v in self.descriptor.iter().take(MAX_DIMENSION) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a binary template made by model `model` (this engine's [`TEMPLATE_VERSION`]).
    /// Foreign, truncated, corrupt (checksum), non-finite or other-model templates are
    /// invalid arguments saying which.
    pub fn from_bytes(bytes: &[u8], model: &str) -> Result<FaceTemplate> {
        let bad = |m: String| Error::InvalidArgument(format!("biometric template: {m}"));
        if bytes.len() < 4 || bytes[..4] != TEMPLATE_MAGIC {
            return Err(bad(format!(
                "not a facegate template (no {:?} magic)",
                String::from_utf8_lossy(&TEMPLATE_MAGIC)
            )));
        }
        let truncated = || bad(format!("truncated at {} bytes", bytes.len()));
        let field = |at: usize, n: usize| bytes.get(at..at + n).ok_or_else(truncated);
        let format = u16::from_le_bytes([field(4, 2)?[0], field(4, 2)?[1]]);
        if format != TEMPLATE_FORMAT {
            return Err(bad(format!(
                "format version {format}, this server reads version {TEMPLATE_FORMAT}"
            )));
        }
        let id_len = usize::from(field(6, 1)?[0]);
        if id_len == 0 || id_len > MAX_MODEL_ID {
            return Err(bad(format!(
                "model id of {id_len} bytes (1..={MAX_MODEL_ID})"
            )));
        }
        let id = field(7, id_len)?;
        let d = field(7 + id_len, 2)?;
        let dim = usize::from(u16::from_le_bytes([d[0], d[1]]));
        if dim == 0 || dim > MAX_DIMENSION {
            return Err(bad(format!("dimension {dim} (1..={MAX_DIMENSION})")));
        }
        let body = 9 + id_len + 4 * dim;
        let crc = field(body, 4)?;
        if bytes.len() != body + 4 {
            return Err(bad(format!(
                "{} bytes where its header announces {}",
                bytes.len(),
                body + 4
            )));
        }
        if crc32fast::hash(&bytes[..body]) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(bad("checksum mismatch (corrupt)".into()));
        }
        let id = std::str::from_utf8(id)
            .ok()
            .filter(|s| s.is_ascii())
            .ok_or_else(|| bad("model id is not ASCII".into()))?;
        if id != model {
            return Err(bad(format!(
                "made by model {id:?}; this server's templates come from {model:?}"
            )));
        }
        let descriptor: Vec<f32> = bytes[9 + id_len..body]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if descriptor.iter().any(|v| !v.is_finite()) {
            return Err(bad("a descriptor value is not finite".into()));
        }
        Ok(FaceTemplate {
            version: id.to_string(),
            descriptor,
        })
    }
}

/// A 1:1 recommendation from a similarity score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchDecision {
    /// The faces match.
    Approved,
    /// An operator should look.
    OperatorRequired,
    /// The faces do not match.
    Declined,
}

impl MatchDecision {
    /// Wire name (`approved`, `operator_required`, `declined`).
    pub fn name(self) -> &'static str {
        match self {
            MatchDecision::Approved => "approved",
            MatchDecision::OperatorRequired => "operator_required",
            MatchDecision::Declined => "declined",
        }
    }
}

/// Two similarity thresholds: approved at or above `approve_score`, operator review at or
/// above `review_score`, declined below (see `docs/calibration.md` for the measured defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MatchPolicy {
    /// Lowest similarity approved.
    pub approve_score: f32,
    /// Lowest similarity sent to an operator.
    pub review_score: f32,
}

impl MatchPolicy {
    /// Rejects thresholds outside 0..=1 or a review threshold above the approve threshold.
    pub fn validate(&self) -> Result<()> {
        let ok = |v: f32| (0.0..=1.0).contains(&v);
        if !ok(self.approve_score)
            || !ok(self.review_score)
            || self.review_score > self.approve_score
        {
            return Err(Error::InvalidArgument(format!(
                "match thresholds must satisfy 0 <= review_score ({}) <= approve_score ({}) <= 1",
                self.review_score, self.approve_score
            )));
        }
        Ok(())
    }

    /// The recommendation for a similarity.
    pub fn decide(&self, similarity: f32) -> MatchDecision {
        if similarity >= self.approve_score {
            MatchDecision::Approved
        } else if similarity >= self.review_score {
            MatchDecision::OperatorRequired
        } else {
            MatchDecision::Declined
        }
    }
}

/// Many templates of one model in one contiguous row-major matrix, compared to a probe in one
/// pass ([`Gallery::compare`]): the 1:N path, never a loop of 1:1 calls.
#[derive(Debug, Clone, Default)]
pub struct Gallery {
    /// Model id of every row.
    model: String,
    /// Dimension of every row.
    dim: usize,
    /// `len * dim` values.
    rows: Vec<f32>,
}

impl Gallery {
    /// An empty gallery of `model` templates of dimension `dim`, with room for `n`.
    pub fn with_capacity(model: &str, dim: usize, n: usize) -> Self {
        Self {
            model: model.to_string(),
            dim,
            rows: Vec::with_capacity(dim.saturating_mul(n)),
        }
    }

    /// Appends a template; one of another model or dimension is an invalid argument.
    pub fn push(&mut self, t: &FaceTemplate) -> Result<()> {
        if t.version != self.model || t.descriptor.len() != self.dim {
            return Err(Error::InvalidArgument(format!(
                "biometric template of model {:?} ({} values) in a gallery of {:?} ({} values)",
                t.version,
                t.descriptor.len(),
                self.model,
                self.dim
            )));
        }
        self.rows.extend_from_slice(&t.descriptor);
        Ok(())
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.rows.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether it holds no template.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The distance of `probe` to every row, in row order (8 lanes of f32 accumulators per
    /// row, which the compiler vectorises); a probe of another model is an invalid argument.
    pub fn distances(&self, probe: &FaceTemplate) -> Result<Vec<f32>> {
        if probe.version != self.model || probe.descriptor.len() != self.dim {
            return Err(Error::InvalidArgument(format!(
                "probe template of model {:?} ({} values) against a gallery of {:?} ({} values)",
                probe.version,
                probe.descriptor.len(),
                self.model,
                self.dim
            )));
        }
        let p = &probe.descriptor;
        Ok(self
            .rows
            .chunks_exact(self.dim)
            .map(|row| {
                let mut acc = [0f32; 8];
                let (rc, pc) = (row.chunks_exact(8), p.chunks_exact(8));
                let (rr, pr) = (rc.remainder(), pc.remainder());
                for (r, q) in rc.zip(pc) {
                    for k in 0..8 {
                        let d = r[k] - q[k];
                        acc[k] += d * d;
                    }
                }
                let tail: f32 = rr.iter().zip(pr).map(|(a, b)| (a - b) * (a - b)).sum();
                (acc.iter().sum::<f32>() + tail).sqrt()
            })
            .collect())
    }

    /// Every row compared to `probe` under `threshold`, as [`FaceTemplate::compare`] would.
    pub fn compare(&self, probe: &FaceTemplate, threshold: f32) -> Result<Vec<Match>> {
        Ok(self
            .distances(probe)?
            .into_iter()
            .map(|d| Match {
                distance: d,
                similarity: (1.0 - d).clamp(0.0, 1.0),
                is_match: d <= threshold,
                threshold,
            })
            .collect())
    }
}

/// Aligns every face and runs the descriptor on the whole batch.
pub fn describe(
    net: &FaceDescriptor,
    faces: &[(&RgbImage, &Face)],
    device: &Device,
    dtype: DType,
) -> Result<Vec<FaceTemplate>> {
    if faces.is_empty() {
        return Ok(Vec::new());
    }
    let input = if device.is_cuda() {
        // On a GPU the similarity warps of the whole batch run as one kernel launch.
        let images: Vec<&RgbImage> = faces.iter().map(|(img, _)| *img).collect();
        let jobs = faces
            .iter()
            .enumerate()
            .map(|(i, (_, f))| align_job(i, &f.landmarks))
            .collect::<Result<Vec<_>>>()?;
        crate::preprocess::launch::chip_input(&images, &jobs, CHIP_SIZE, device)?
    } else {
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
        chips_to_tensor(&chips, device)?
    };
    let out: Vec<Vec<f32>> = net
        .forward(&input.to_dtype(dtype)?)?
        .to_dtype(DType::F32)?
        .to_vec2()?;
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

    #[test]
    fn binary_templates_round_trip_and_refuse_damage() {
        let a = t(&[0.25, -1.5, 3.0]);
        let b = a.to_bytes();
        assert_eq!(&b[..4], b"FGTM");
        assert_eq!(b.len(), 9 + TEMPLATE_VERSION.len() + 12 + 4);
        assert_eq!(FaceTemplate::from_bytes(&b, TEMPLATE_VERSION).unwrap(), a);
        let err = |bytes: &[u8]| {
            FaceTemplate::from_bytes(bytes, TEMPLATE_VERSION)
                .unwrap_err()
                .to_string()
        };
        assert!(err(b"\x89PNG....").contains("not a facegate template"));
        assert!(err(&b[..b.len() - 1]).contains("truncated"));
        assert!(err(&b[..10]).contains("truncated"));
        let mut long = b.clone();
        long.push(0);
        assert!(err(&long).contains("announces"));
        let mut flipped = b.clone();
        flipped[b.len() - 8] ^= 1;
        assert!(err(&flipped).contains("checksum"));
        let mut v2 = b.clone();
        v2[4] = 2;
        assert!(err(&v2).contains("format version 2"));
        let other = FaceTemplate {
            version: "other-model".into(),
            descriptor: vec![1.0; 3],
        };
        assert!(err(&other.to_bytes()).contains("made by model \"other-model\""));
        let nan = t(&[f32::NAN, 0.0, 0.0]);
        assert!(err(&nan.to_bytes()).contains("not finite"));
    }

    #[test]
    fn policy_decides_on_two_thresholds() {
        let p = MatchPolicy {
            approve_score: 0.6,
            review_score: 0.55,
        };
        assert_eq!(p.decide(0.6), MatchDecision::Approved);
        assert_eq!(p.decide(0.57), MatchDecision::OperatorRequired);
        assert_eq!(p.decide(0.5499), MatchDecision::Declined);
        assert!(p.validate().is_ok());
        assert!(MatchPolicy {
            approve_score: 0.5,
            review_score: 0.6
        }
        .validate()
        .is_err());
    }

    #[test]
    fn gallery_distances_equal_one_to_one_comparisons() {
        let probe = t(&(0..20).map(|i| i as f32 * 0.1).collect::<Vec<_>>());
        let rows: Vec<FaceTemplate> = (0..5)
            .map(|r| {
                t(&(0..20)
                    .map(|i| ((i * r) % 7) as f32 * 0.2)
                    .collect::<Vec<_>>())
            })
            .collect();
        let mut g = Gallery::with_capacity(TEMPLATE_VERSION, 20, rows.len());
        for r in &rows {
            g.push(r).unwrap();
        }
        assert_eq!(g.len(), 5);
        let many = g.compare(&probe, 0.41).unwrap();
        for (m, r) in many.iter().zip(&rows) {
            let one = probe.compare(r, 0.41).unwrap();
            assert!((m.distance - one.distance).abs() < 1e-4, "{m:?} {one:?}");
            assert_eq!(m.is_match, one.is_match);
        }
        assert!(g.push(&t(&[1.0])).is_err());
        assert!(g.distances(&t(&[1.0])).is_err());
    }
}
