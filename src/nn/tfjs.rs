//! Loader for TensorFlow.js weight files: a `*-weights_manifest.json` plus the binary shards
//! it names, as shipped by face-api and other TFJS models.
//!
//! The manifest is a list of groups, each `{ "paths": [...], "weights": [{ name, shape, dtype,
//! quantization? }] }`. A group's shards, concatenated in order, hold its weights back to back in
//! manifest order. Unquantised `float32` weights are raw little-endian; quantised ones store
//! `uint8`/`uint16` codes that dequantise as `code * scale + min` (computed in f64 and rounded to
//! f32, as tfjs does), or IEEE half floats for `float16`. Every tensor comes back as f32.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::{Error, Result};

/// Largest total shard size accepted for one manifest, in bytes.
pub const MAX_WEIGHTS_BYTES: u64 = 256 * 1024 * 1024;

/// Largest manifest file accepted, in bytes.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// One group of the manifest: shard files and the weights they hold.
#[derive(Debug, Clone, Deserialize)]
pub struct WeightGroup {
    /// Shard file names, relative to the manifest's folder.
    pub paths: Vec<String>,
    /// Weights stored in the concatenated shards, in order.
    pub weights: Vec<WeightSpec>,
}

/// Description of one stored weight.
#[derive(Debug, Clone, Deserialize)]
pub struct WeightSpec {
    /// Name, e.g. `conv32_down/conv/filters`.
    pub name: String,
    /// Shape, in TFJS (channels-last) order.
    pub shape: Vec<usize>,
    /// Logical dtype; only `float32` is supported.
    pub dtype: String,
    /// Storage quantisation, when the values are not raw float32.
    #[serde(default)]
    pub quantization: Option<Quantization>,
}

/// How a quantised weight is stored.
#[derive(Debug, Clone, Deserialize)]
pub struct Quantization {
    /// Storage type: `uint8`, `uint16` or `float16`.
    pub dtype: String,
    /// Multiplier of the integer code (integer storage only).
    #[serde(default)]
    pub scale: Option<f64>,
    /// Offset added after scaling (integer storage only).
    #[serde(default)]
    pub min: Option<f64>,
}

/// Storage encoding of one weight, resolved from its spec.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    F32,
    U8 { scale: f64, min: f64 },
    U16 { scale: f64, min: f64 },
    F16,
}

impl Encoding {
    fn bytes_per_value(self) -> usize {
        match self {
            Encoding::F32 => 4,
            Encoding::U8 { .. } => 1,
            Encoding::U16 { .. } | Encoding::F16 => 2,
        }
    }
}

impl WeightSpec {
    fn encoding(&self) -> std::result::Result<Encoding, String> {
        if self.dtype != "float32" {
            return Err(format!(
                "{}: dtype {} is not supported",
                self.name, self.dtype
            ));
        }
        let Some(q) = &self.quantization else {
            return Ok(Encoding::F32);
        };
        let affine = || match (q.scale, q.min) {
            (Some(scale), Some(min)) if scale.is_finite() && min.is_finite() => Ok((scale, min)),
            _ => Err(format!(
                "{}: quantisation lacks a finite scale and min",
                self.name
            )),
        };
        match q.dtype.as_str() {
            "uint8" => affine().map(|(scale, min)| Encoding::U8 { scale, min }),
            "uint16" => affine().map(|(scale, min)| Encoding::U16 { scale, min }),
            "float16" => Ok(Encoding::F16),
            other => Err(format!(
                "{}: quantisation dtype {other} is not supported",
                self.name
            )),
        }
    }

    fn num_values(&self) -> std::result::Result<usize, String> {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("{}: shape {:?} overflows", self.name, self.shape))
    }
}

/// Converts an IEEE 754 half-precision bit pattern to f32.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) & 1) as u32;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign << 31,
        (0, _) => {
            // Subnormal half: value = frac * 2^-24, exactly representable in f32.
            let v = frac as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign == 1 { -v } else { v };
        }
        (0x1f, 0) => (sign << 31) | 0x7f80_0000,
        (0x1f, _) => (sign << 31) | 0x7fc0_0000 | (frac << 13),
        _ => (sign << 31) | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

fn decode_values(bytes: &[u8], enc: Encoding) -> Vec<f32> {
    match enc {
        Encoding::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Encoding::U8 { scale, min } => bytes
            .iter()
            .map(|&v| (v as f64 * scale + min) as f32)
            .collect(),
        Encoding::U16 { scale, min } => bytes
            .chunks_exact(2)
            .map(|c| (u16::from_le_bytes([c[0], c[1]]) as f64 * scale + min) as f32)
            .collect(),
        Encoding::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
    }
}

/// Decodes one group's concatenated shard bytes into named f32 tensors, in TFJS shape order.
///
/// `data` must be exactly as long as the weights need. Errors are plain strings, which
/// [`load_weights`] wraps into [`Error::Model`].
pub fn decode_group(
    group: &WeightGroup,
    data: &[u8],
    device: &Device,
) -> std::result::Result<Vec<(String, Tensor)>, String> {
    let mut offset = 0usize;
    let mut out = Vec::with_capacity(group.weights.len());
    for spec in &group.weights {
        let enc = spec.encoding()?;
        let n = spec.num_values()?;
        let len = n
            .checked_mul(enc.bytes_per_value())
            .ok_or_else(|| format!("{}: byte size overflows", spec.name))?;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| {
                format!(
                    "{}: needs bytes {offset}..{} but the shards hold only {} bytes",
                    spec.name,
                    offset.saturating_add(len),
                    data.len()
                )
            })?;
        let values = decode_values(&data[offset..end], enc);
        let t = Tensor::from_vec(values, spec.shape.as_slice(), device)
            .map_err(|e| format!("{}: {e}", spec.name))?;
        out.push((spec.name.clone(), t));
        offset = end;
    }
    if offset != data.len() {
        return Err(format!(
            "the manifest describes {offset} bytes but the shards hold {}",
            data.len()
        ));
    }
    Ok(out)
}

/// Resolves a shard name against the manifest folder, refusing absolute or `..` paths.
fn shard_path(dir: &Path, name: &str) -> std::result::Result<PathBuf, String> {
    let rel = Path::new(name);
    if rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        Ok(dir.join(rel))
    } else {
        Err(format!("shard path {name:?} leaves the model folder"))
    }
}

/// Looks up weight `name` of a decoded TFJS model and checks its shape.
pub fn weight<'a>(
    w: &'a HashMap<String, Tensor>,
    name: &str,
    shape: &[usize],
) -> std::result::Result<&'a Tensor, String> {
    let t = w
        .get(name)
        .ok_or_else(|| format!("weight {name} is missing"))?;
    if t.dims() != shape {
        return Err(format!(
            "weight {name} has shape {:?}, expected {shape:?}",
            t.dims()
        ));
    }
    Ok(t)
}

/// Loads every weight of a TFJS manifest (and its shards, from the same folder) onto `device`.
///
/// Refuses, with [`Error::Model`], a manifest over [`MAX_MANIFEST_BYTES`], shards totalling more
/// than [`MAX_WEIGHTS_BYTES`], shards shorter or longer than the manifest describes, unknown
/// dtypes, duplicate names and shard paths outside the manifest's folder.
pub fn load_weights(manifest: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let name = manifest
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tfjs".to_string());
    let model_err = |path: &Path, reason: String| Error::Model {
        name: name.clone(),
        path: path.to_path_buf(),
        reason,
    };
    let io_err = |path: &Path, e: std::io::Error| model_err(path, format!("cannot read: {e}"));

    let meta = std::fs::metadata(manifest).map_err(|e| io_err(manifest, e))?;
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(model_err(
            manifest,
            format!(
                "manifest is {} bytes, the limit is {MAX_MANIFEST_BYTES}",
                meta.len()
            ),
        ));
    }
    let text = std::fs::read_to_string(manifest).map_err(|e| io_err(manifest, e))?;
    let groups: Vec<WeightGroup> = serde_json::from_str(&text)
        .map_err(|e| model_err(manifest, format!("not a TFJS weights manifest: {e}")))?;
    let dir = manifest.parent().unwrap_or_else(|| Path::new("."));

    // Check sizes before reading anything large.
    let mut shards = Vec::with_capacity(groups.len());
    let mut total = 0u64;
    for group in &groups {
        let mut paths = Vec::with_capacity(group.paths.len());
        for p in &group.paths {
            let path = shard_path(dir, p).map_err(|r| model_err(manifest, r))?;
            let len = std::fs::metadata(&path)
                .map_err(|e| io_err(&path, e))?
                .len();
            total = total.saturating_add(len);
            if total > MAX_WEIGHTS_BYTES {
                return Err(model_err(
                    &path,
                    format!("weight shards exceed {MAX_WEIGHTS_BYTES} bytes"),
                ));
            }
            paths.push((path, len));
        }
        shards.push(paths);
    }

    let mut map = HashMap::new();
    for (group, paths) in groups.iter().zip(shards) {
        let cap = paths.iter().map(|(_, l)| *l as usize).sum();
        let mut data = Vec::with_capacity(cap);
        for (path, len) in &paths {
            let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
            if bytes.len() as u64 != *len {
                return Err(model_err(path, "shard changed while loading".to_string()));
            }
            data.extend_from_slice(&bytes);
        }
        let at = paths
            .first()
            .map(|(p, _)| p.clone())
            .unwrap_or_else(|| manifest.to_path_buf());
        for (wname, t) in decode_group(group, &data, device).map_err(|r| model_err(&at, r))? {
            if map.insert(wname.clone(), t).is_some() {
                return Err(model_err(manifest, format!("weight {wname} appears twice")));
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, shape: &[usize], q: Option<(&str, f64, f64)>) -> WeightSpec {
        WeightSpec {
            name: name.into(),
            shape: shape.to_vec(),
            dtype: "float32".into(),
            quantization: q.map(|(d, scale, min)| Quantization {
                dtype: d.into(),
                scale: Some(scale),
                min: Some(min),
            }),
        }
    }

    #[test]
    fn decodes_float_and_quantised_weights() {
        let group = WeightGroup {
            paths: vec![],
            weights: vec![
                spec("a", &[2], None),
                spec("b", &[3], Some(("uint8", 0.5, -1.0))),
                spec("c", &[2], Some(("uint16", 0.25, 2.0))),
                spec("d", &[2], Some(("float16", 0.0, 0.0))),
            ],
        };
        let mut data = Vec::new();
        data.extend_from_slice(&1.5f32.to_le_bytes());
        data.extend_from_slice(&(-2.25f32).to_le_bytes());
        data.extend_from_slice(&[0, 2, 255]);
        data.extend_from_slice(&4u16.to_le_bytes());
        data.extend_from_slice(&1000u16.to_le_bytes());
        data.extend_from_slice(&0x3c00u16.to_le_bytes()); // 1.0
        data.extend_from_slice(&0xc100u16.to_le_bytes()); // -2.5
        let out = decode_group(&group, &data, &Device::Cpu).unwrap();
        let v: Vec<Vec<f32>> = out.iter().map(|(_, t)| t.to_vec1().unwrap()).collect();
        assert_eq!(v[0], vec![1.5, -2.25]);
        assert_eq!(v[1], vec![-1.0, 0.0, 126.5]);
        assert_eq!(v[2], vec![3.0, 252.0]);
        assert_eq!(v[3], vec![1.0, -2.5]);
    }

    #[test]
    fn rejects_short_and_long_shards() {
        let group = WeightGroup {
            paths: vec![],
            weights: vec![spec("w", &[2, 2], Some(("uint8", 1.0, 0.0)))],
        };
        assert!(decode_group(&group, &[0; 3], &Device::Cpu).is_err());
        assert!(decode_group(&group, &[0; 5], &Device::Cpu).is_err());
        assert!(decode_group(&group, &[0; 4], &Device::Cpu).is_ok());
    }

    #[test]
    fn rejects_unknown_dtypes_and_escaping_paths() {
        let mut s = spec("w", &[1], Some(("int4", 1.0, 0.0)));
        assert!(s.encoding().is_err());
        s.quantization = None;
        s.dtype = "int32".into();
        assert!(s.encoding().is_err());
        assert!(shard_path(Path::new("/m"), "../x.bin").is_err());
        assert!(shard_path(Path::new("/m"), "/etc/x.bin").is_err());
        assert_eq!(
            shard_path(Path::new("/m"), "x.bin").unwrap(),
            Path::new("/m/x.bin")
        );
    }

    #[test]
    fn half_floats() {
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn missing_manifest_is_a_model_error() {
        let err = load_weights(
            Path::new("/nonexistent/x-weights_manifest.json"),
            &Device::Cpu,
        )
        .unwrap_err();
        assert_eq!(err.kind(), "model");
    }
}
