//! face-api's `FaceRecognitionNet`: dlib's ResNet-34-like face descriptor network
//! (`dlib_face_recognition_resnet_model_v1`), ported from @vladmandic/face-api 1.7.15.
//!
//! A 150x150 RGB face chip becomes a 128-D descriptor; two chips of the same person lie within
//! about 0.6 of each other in Euclidean distance ([`distance`]). The layers, as face-api runs
//! them (`src/faceRecognitionNet/*.ts`):
//!
//! * input: `(x - [122.782, 117.001, 104.298]) / 255` per RGB channel;
//! * `conv32_down`: 7x7 stride-2 "valid" conv (150 -> 72), ReLU, then 3x3 stride-2 "valid" max
//!   pool (72 -> 35);
//! * residual blocks `conv32_1..3`, `conv64_down`, `conv64_1..3`, `conv128_down`, `conv128_1..2`,
//!   `conv256_down`, `conv256_1..2`, `conv256_down_out`. A plain block is
//!   `relu(conv2(relu(conv1(x))) + x)` with 3x3 stride-1 "same" convs. A down block uses a 3x3
//!   stride-2 "valid" `conv1`; its shortcut is a 2x2 stride-2 average pool of `x`, zero-padded in
//!   channels when the block widens, and when the pooled map is one pixel larger than the conv
//!   branch (8 -> 3 vs 4, 4 -> 1 vs 2) the conv branch gets a zero row at the bottom and a zero
//!   column at the right;
//! * every conv is followed by a per-channel "scale" layer `y * w + b`, folded here into the
//!   conv's kernel and bias at load time;
//! * mean over the final 2x2 map, then a 256 -> 128 matrix product with no bias.
//!
//! face-api returns the raw product (no L2 normalisation); so does [`FaceDescriptor::forward`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Module, Tensor};

use super::layers::{add_act, float_input, Activation, Conv2d, ConvGeom, Join, Linear};
use super::tfjs::{self, weight as get};
use crate::{Error, Result};

/// Side of the square RGB chip the network takes, in pixels.
pub const INPUT_SIZE: usize = 150;

/// Length of a descriptor.
pub const DESCRIPTOR_LEN: usize = 128;

/// Per-channel RGB mean that face-api subtracts before dividing by 255.
pub const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];

/// face-api's divisor after mean subtraction (`normalize(x, meanRgb).div(255)`).
pub const INPUT_DIVISOR: f32 = 255.0;

/// Usual same-person threshold on [`distance`] for dlib/face-api descriptors.
pub const SAME_PERSON_THRESHOLD: f32 = 0.6;

/// One residual block: two convs with the scale layers folded in.
#[derive(Debug, Clone)]
struct Residual {
    conv1: Conv2d,
    conv2: Conv2d,
    down: bool,
}

impl Residual {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.conv1.forward_act(x, &Activation::Relu)?;
        if !self.down {
            // Same shapes: the shortcut joins conv2's output in conv2's own pass.
            return self
                .conv2
                .forward_join(&y, &Activation::Relu, x, Join::BeforeAct);
        }
        let mut y = self.conv2.forward(&y)?;
        let shortcut = if self.down {
            let mut pooled = x.avg_pool2d_with_stride(2, 2)?;
            let (pc, yc) = (pooled.dim(1)?, y.dim(1)?);
            if yc > pc {
                pooled = pooled.pad_with_zeros(1, 0, yc - pc)?;
            }
            let (ph, pw) = (pooled.dim(2)?, pooled.dim(3)?);
            let (yh, yw) = (y.dim(2)?, y.dim(3)?);
            if ph > yh || pw > yw {
                y = y
                    .pad_with_zeros(2, 0, ph.saturating_sub(yh))?
                    .pad_with_zeros(3, 0, pw.saturating_sub(yw))?;
            }
            pooled
        } else {
            x.clone()
        };
        add_act(&y, &shortcut, &Activation::Relu)
    }
}

/// The face descriptor network, ready for batched inference.
#[derive(Debug, Clone)]
pub struct FaceDescriptor {
    stem: Conv2d,
    blocks: Vec<Residual>,
    fc: Linear,
}

/// Residual blocks in order: (weight prefix, input channels, output channels, down).
const BLOCKS: [(&str, usize, usize, bool); 14] = [
    ("conv32_1", 32, 32, false),
    ("conv32_2", 32, 32, false),
    ("conv32_3", 32, 32, false),
    ("conv64_down", 32, 64, true),
    ("conv64_1", 64, 64, false),
    ("conv64_2", 64, 64, false),
    ("conv64_3", 64, 64, false),
    ("conv128_down", 64, 128, true),
    ("conv128_1", 128, 128, false),
    ("conv128_2", 128, 128, false),
    ("conv256_down", 128, 256, true),
    ("conv256_1", 256, 256, false),
    ("conv256_2", 256, 256, false),
    ("conv256_down_out", 256, 256, true),
];

impl FaceDescriptor {
    /// Loads `face_recognition_model-weights_manifest.json` (and its `.bin`) onto `device`.
    pub fn load(manifest: &Path, device: &Device) -> Result<Self> {
        let weights = tfjs::load_weights(manifest, device)?;
        Self::from_weights(&weights).map_err(|reason| Error::Model {
            name: "face_recognition_model".to_string(),
            path: manifest.to_path_buf(),
            reason,
        })
    }

    /// Builds the network from already decoded TFJS weights (names as in face-api's manifest).
    pub fn from_weights(w: &HashMap<String, Tensor>) -> std::result::Result<Self, String> {
        let stem = normalising_stem(conv_layer(w, "conv32_down", 3, 32, 7, ConvGeom::new(2, 0))?)?;
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        for &(prefix, cin, cout, down) in BLOCKS.iter() {
            let first = if down {
                ConvGeom::new(2, 0)
            } else {
                ConvGeom::new(1, 1)
            };
            blocks.push(Residual {
                conv1: conv_layer(w, &format!("{prefix}/conv1"), cin, cout, 3, first)?,
                conv2: conv_layer(
                    w,
                    &format!("{prefix}/conv2"),
                    cout,
                    cout,
                    3,
                    ConvGeom::new(1, 1),
                )?,
                down,
            });
        }
        let fc = get(w, "fc", &[256, DESCRIPTOR_LEN])?;
        let fc = Linear {
            weight: fc
                .t()
                .and_then(|t| t.contiguous())
                .map_err(|e| e.to_string())?,
            bias: None,
        };
        Ok(Self { stem, blocks, fc })
    }

    /// Descriptors of a batch of chips: `(N, 3, 150, 150)` f32 RGB in 0..255 -> `(N, 128)`.
    ///
    /// Chips are processed independently; the numbers are those face-api's
    /// `computeFaceDescriptor` returns for the same 150x150 input (no normalisation).
    pub fn forward(&self, chips: &Tensor) -> candle_core::Result<Tensor> {
        let (_, c, h, wd) = chips.dims4()?;
        if c != 3 || h != INPUT_SIZE || wd != INPUT_SIZE {
            candle_core::bail!(
                "face descriptor: expected (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) chips, got {:?}",
                chips.shape()
            );
        }
        // The input normalisation is folded into the stem (see `normalising_stem`).
        let x = float_input(chips)?;
        let mut x = self
            .stem
            .forward_act(&x, &Activation::Relu)?
            .max_pool2d_with_stride(3, 2)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        let pooled = x.mean(3)?.mean(2)?;
        self.fc.forward(&pooled)
    }
}

/// A conv (TFJS `[kh, kw, in, out]` filters + bias) followed by a scale layer, folded into one
/// [`Conv2d`]: `((x * W + b) * s + t) = x * (W s) + (b s + t)`.
fn conv_layer(
    w: &HashMap<String, Tensor>,
    prefix: &str,
    cin: usize,
    cout: usize,
    k: usize,
    geom: ConvGeom,
) -> std::result::Result<Conv2d, String> {
    let filters = get(w, &format!("{prefix}/conv/filters"), &[k, k, cin, cout])?;
    let bias = get(w, &format!("{prefix}/conv/bias"), &[cout])?;
    let scale = get(w, &format!("{prefix}/scale/weights"), &[cout])?;
    let shift = get(w, &format!("{prefix}/scale/biases"), &[cout])?;
    let fold = || -> candle_core::Result<Conv2d> {
        let kernel = filters
            .permute((3, 2, 0, 1))?
            .broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?
            .contiguous()?;
        let bias = ((bias * scale)? + shift)?;
        Conv2d::new(kernel, Some(bias), geom)
    };
    fold().map_err(|e| format!("{prefix}: {e}"))
}

/// Folds face-api's input normalisation `(x - MEAN_RGB) / 255` into the stem, which is
/// unpadded ("valid"), so every tap sees a real pixel: `W ((x - m) / d) + b` is
/// `(W / d) x + (b - sum(W m) / d)`. The network then takes raw 0..255 RGB.
fn normalising_stem(stem: Conv2d) -> std::result::Result<Conv2d, String> {
    let fold = || -> candle_core::Result<Conv2d> {
        let dev = stem.weight.device();
        let mean = Tensor::from_slice(&MEAN_RGB, (1, 3, 1, 1), dev)?;
        let shift = stem.weight.broadcast_mul(&mean)?.sum((1, 2, 3))?;
        let bias = (&stem.bias - (shift / INPUT_DIVISOR as f64)?)?;
        Conv2d::new(
            (&stem.weight / INPUT_DIVISOR as f64)?,
            Some(bias),
            stem.geom,
        )
    };
    if stem.geom.pad != 0 {
        return Err("the stem must be unpadded to fold the input normalisation".into());
    }
    fold().map_err(|e| format!("conv32_down: {e}"))
}

/// Euclidean distance between two descriptors, as dlib and face-api compare them.
///
/// Descriptors of different lengths are never the same face: the distance is then infinite.
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y) as f64;
            d * d
        })
        .sum::<f64>()
        .sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn distance_is_euclidean() {
        assert_eq!(distance(&[0.0, 3.0], &[4.0, 0.0]), 5.0);
        assert_eq!(distance(&[1.0; 128], &[1.0; 128]), 0.0);
        assert!(distance(&[1.0], &[1.0, 2.0]).is_infinite());
    }

    #[test]
    fn missing_weights_are_reported() {
        let err = FaceDescriptor::from_weights(&HashMap::new()).unwrap_err();
        assert!(err.contains("conv32_down/conv/filters"), "{err}");
    }

    #[test]
    fn down_block_pads_the_conv_branch() {
        // 8x8 input: the conv branch gives 3x3, the pooled shortcut 4x4 with twice the channels.
        let dev = Device::Cpu;
        let conv1 = Conv2d::new(
            Tensor::zeros((4, 2, 3, 3), DType::F32, &dev).unwrap(),
            Some(Tensor::ones(4, DType::F32, &dev).unwrap()),
            ConvGeom::new(2, 0),
        )
        .unwrap();
        let conv2 = Conv2d::new(
            Tensor::zeros((4, 4, 3, 3), DType::F32, &dev).unwrap(),
            Some(Tensor::ones(4, DType::F32, &dev).unwrap()),
            ConvGeom::new(1, 1),
        )
        .unwrap();
        let block = Residual {
            conv1,
            conv2,
            down: true,
        };
        let x = Tensor::full(2f32, (1, 2, 8, 8), &dev).unwrap();
        let y = block.forward(&x).unwrap();
        assert_eq!(y.dims(), &[1, 4, 4, 4]);
        let v: Vec<Vec<Vec<f32>>> = y.squeeze(0).unwrap().to_vec3().unwrap();
        // Channels 0-1: pooled 2 + conv 1 inside the 3x3 corner, pooled 2 on the padded edge.
        assert_eq!(v[0][0][0], 3.0);
        assert_eq!(v[1][3][3], 2.0);
        assert_eq!(v[0][3][0], 2.0);
        // Channels 2-3: zero shortcut, conv 1 inside, 0 on the padded edge.
        assert_eq!(v[2][1][1], 1.0);
        assert_eq!(v[3][0][3], 0.0);
    }
}
