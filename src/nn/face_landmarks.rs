//! face-api's `FaceLandmark68Net`: 68 facial landmarks (the iBUG 300-W layout: jaw 0-16,
//! brows 17-26, nose 27-35, eyes 36-47, mouth 48-67) from a 112x112 RGB face crop, ported from
//! @vladmandic/face-api 1.7.15 (`src/faceFeatureExtractor/*.ts`, `src/faceLandmarkNet/*.ts`).
//!
//! The layers, as face-api runs them:
//!
//! * input: `(x - [122.782, 117.001, 104.298]) / 255` per RGB channel;
//! * four dense blocks (`dense0..3`, 32, 64, 128 and 256 channels), each halving the map
//!   (112 -> 56 -> 28 -> 14 -> 7). With `conv0` a 3x3 stride-2 convolution in `dense0` and a
//!   stride-2 depthwise-separable convolution in the others, and `sep` a stride-1 3x3 depthwise
//!   convolution, a 1x1 convolution and a bias:
//!   `o1 = relu(conv0(x))`, `o2 = sep1(o1)`, `o3 = sep2(relu(o1 + o2))`,
//!   `o4 = sep3(relu(o1 + o2 + o3))`, out `relu(o1 + o2 + o3 + o4)`;
//! * TensorFlow's "same" padding: stride 1 pads one pixel on every side, stride 2 (on these
//!   even sizes) pads nothing before and one pixel after;
//! * a 7x7 stride-2 "valid" average pool (7 -> 1), then a 256 -> 136 fully connected layer.
//!
//! The 136 outputs are `(x, y)` pairs in 0..1 of the input square, as face-api's `runNet`
//! returns them (its `postProcess` only rescales for padded, non-square inputs).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Module, Tensor};

use super::layers::{float_input, Activation, Conv2d, ConvGeom, Join, Linear};
use super::tfjs::{self, weight as get};
use crate::{Error, Result};

/// Side of the square RGB crop the network takes, in pixels.
pub const INPUT_SIZE: usize = 112;

/// Number of landmarks.
pub const LANDMARKS: usize = 68;

/// Per-channel RGB mean face-api subtracts before dividing by 255.
pub const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];

/// face-api's divisor after mean subtraction.
pub const INPUT_DIVISOR: f32 = 255.0;

/// A depthwise-separable convolution: 3x3 depthwise (no bias), then 1x1 with the bias.
#[derive(Debug, Clone)]
struct Separable {
    /// The depthwise 3x3 convolution.
    depthwise: Conv2d,
    /// The pointwise 1x1 convolution with the bias.
    pointwise: Conv2d,
    /// Stride 2 (pads one pixel after, none before).
    down: bool,
}

impl Separable {
    /// `pointwise(depthwise(x))`, joined with `r` before `act` when given.
    fn forward(
        &self,
        x: &Tensor,
        act: &Activation,
        r: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let x = if self.down { pad_after(x)? } else { x.clone() };
        let d = self.depthwise.forward_act(&x, &Activation::Identity)?;
        match r {
            Some(r) => self.pointwise.forward_join(&d, act, r, Join::BeforeAct),
            None => self.pointwise.forward_act(&d, act),
        }
    }
}

/// The first convolution of a dense block.
#[derive(Debug, Clone)]
enum Entry {
    /// `dense0`: an ordinary 3x3 stride-2 convolution.
    Conv(Conv2d),
    /// `dense1..3`: a stride-2 depthwise-separable convolution.
    Separable(Box<Separable>),
}

/// A dense block of four convolutions whose outputs are summed (see the module docs).
#[derive(Debug, Clone)]
struct DenseBlock {
    /// `conv0`, which halves the map.
    entry: Entry,
    /// `conv1..3`.
    convs: [Separable; 3],
}

impl DenseBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let o1 = match &self.entry {
            Entry::Conv(c) => c.forward_act(&pad_after(x)?, &Activation::Relu)?,
            Entry::Separable(s) => s.forward(x, &Activation::Relu, None)?,
        };
        // Running sums o1 + o2 (+ o3 (+ o4)), each fused into its pointwise convolution.
        let mut sum = self.convs[0].forward(&o1, &Activation::Identity, Some(&o1))?;
        for conv in &self.convs[1..] {
            sum = conv.forward(&sum.relu()?, &Activation::Identity, Some(&sum))?;
        }
        sum.relu()
    }
}

/// Zero row at the bottom and zero column at the right: TensorFlow's "same" padding of a
/// stride-2 3x3 window on an even-sized map.
fn pad_after(x: &Tensor) -> candle_core::Result<Tensor> {
    x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)
}

/// The 68-point landmark network, ready for batched inference.
#[derive(Debug, Clone)]
pub struct FaceLandmarks {
    /// `dense0..3`.
    blocks: [DenseBlock; 4],
    /// `fc`: 256 -> 136.
    fc: Linear,
    /// Per-channel mean, `(1, 3, 1, 1)`.
    mean: Tensor,
}

/// Channels of the dense blocks: (input, output).
const BLOCKS: [(usize, usize); 4] = [(3, 32), (32, 64), (64, 128), (128, 256)];

impl FaceLandmarks {
    /// Loads `face_landmark_68_model-weights_manifest.json` (and its `.bin`) onto `device`.
    pub fn load(manifest: &Path, device: &Device) -> Result<Self> {
        let weights = tfjs::load_weights(manifest, device)?;
        Self::from_weights(&weights, device).map_err(|reason| Error::Model {
            name: "face_landmark_68_model".to_string(),
            path: manifest.to_path_buf(),
            reason,
        })
    }

    /// Builds the network from already decoded TFJS weights (names as in face-api's manifest).
    pub fn from_weights(
        w: &HashMap<String, Tensor>,
        device: &Device,
    ) -> std::result::Result<Self, String> {
        let block = |i: usize| -> std::result::Result<DenseBlock, String> {
            let (cin, cout) = BLOCKS[i];
            let p = format!("dense{i}");
            let entry = if i == 0 {
                let filters = get(w, &format!("{p}/conv0/filters"), &[3, 3, cin, cout])?;
                let bias = get(w, &format!("{p}/conv0/bias"), &[cout])?;
                let kernel = filters
                    .permute((3, 2, 0, 1))
                    .and_then(|k| k.contiguous())
                    .map_err(|e| e.to_string())?;
                Entry::Conv(
                    Conv2d::new(kernel, Some(bias.clone()), ConvGeom::new(2, 0))
                        .map_err(|e| format!("{p}/conv0: {e}"))?,
                )
            } else {
                Entry::Separable(Box::new(separable(
                    w,
                    &format!("{p}/conv0"),
                    cin,
                    cout,
                    true,
                )?))
            };
            let sep = |k: usize| separable(w, &format!("{p}/conv{k}"), cout, cout, false);
            Ok(DenseBlock {
                entry,
                convs: [sep(1)?, sep(2)?, sep(3)?],
            })
        };
        let blocks = [block(0)?, block(1)?, block(2)?, block(3)?];
        let weight = get(w, "fc/weights", &[256, 2 * LANDMARKS])?
            .t()
            .and_then(|t| t.contiguous())
            .map_err(|e| e.to_string())?;
        let bias = get(w, "fc/bias", &[2 * LANDMARKS])?.clone();
        let mean =
            Tensor::from_slice(&MEAN_RGB, (1, 3, 1, 1), device).map_err(|e| e.to_string())?;
        Ok(Self {
            blocks,
            fc: Linear {
                weight,
                bias: Some(bias),
            },
            mean,
        })
    }

    /// Landmarks of a batch of crops: `(N, 3, 112, 112)` f32 RGB in 0..255 -> `(N, 136)`,
    /// `(x, y)` pairs in 0..1 of the crop. Crops are processed independently.
    pub fn forward(&self, crops: &Tensor) -> candle_core::Result<Tensor> {
        let (_, c, h, wd) = crops.dims4()?;
        if c != 3 || h != INPUT_SIZE || wd != INPUT_SIZE {
            candle_core::bail!(
                "face landmarks: expected (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) crops, got {:?}",
                crops.shape()
            );
        }
        // The first convolution is padded, so the normalisation cannot fold into it.
        let x = float_input(crops)?;
        let mut x = (x.broadcast_sub(&self.mean.to_dtype(x.dtype())?)? / f64::from(INPUT_DIVISOR))?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        // 7x7 stride-2 "valid" average pool over the 7x7 map: the mean.
        let pooled = x.mean(3)?.mean(2)?;
        self.fc.forward(&pooled)
    }
}

/// A separable convolution from TFJS `depthwise_filter [3, 3, cin, 1]`,
/// `pointwise_filter [1, 1, cin, cout]` and `bias [cout]`.
fn separable(
    w: &HashMap<String, Tensor>,
    prefix: &str,
    cin: usize,
    cout: usize,
    down: bool,
) -> std::result::Result<Separable, String> {
    let dw = get(w, &format!("{prefix}/depthwise_filter"), &[3, 3, cin, 1])?;
    let pw = get(w, &format!("{prefix}/pointwise_filter"), &[1, 1, cin, cout])?;
    let bias = get(w, &format!("{prefix}/bias"), &[cout])?;
    let build = || -> candle_core::Result<Separable> {
        let geom = if down {
            ConvGeom::new(2, 0)
        } else {
            ConvGeom::new(1, 1)
        };
        let depthwise = Conv2d::new(
            dw.permute((2, 3, 0, 1))?.contiguous()?,
            None,
            geom.grouped(cin),
        )?;
        let pointwise = Conv2d::new(
            pw.permute((3, 2, 0, 1))?.contiguous()?,
            Some(bias.clone()),
            ConvGeom::new(1, 0),
        )?;
        Ok(Separable {
            depthwise,
            pointwise,
            down,
        })
    };
    build().map_err(|e| format!("{prefix}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn stride_two_padding_is_tensorflow_same() {
        let x = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let p = pad_after(&x).unwrap();
        assert_eq!(p.dims(), &[1, 1, 5, 5]);
        let v = p.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v[0], 1.0, "nothing before");
        assert_eq!(v[4], 0.0, "a column after");
        assert_eq!(v[20], 0.0, "a row after");
    }

    #[test]
    fn missing_or_misshapen_weights_are_named() {
        let e = FaceLandmarks::from_weights(&HashMap::new(), &Device::Cpu).unwrap_err();
        assert!(e.contains("dense0/conv0/filters"), "{e}");
        let mut w = HashMap::new();
        w.insert(
            "dense0/conv0/filters".to_string(),
            Tensor::zeros((3, 3, 3, 16), DType::F32, &Device::Cpu).unwrap(),
        );
        let e = FaceLandmarks::from_weights(&w, &Device::Cpu).unwrap_err();
        assert!(e.contains("[3, 3, 3, 32]"), "{e}");
    }
}
