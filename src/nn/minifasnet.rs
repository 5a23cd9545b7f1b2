//! The MiniFASNet family: MiniFASNetV2 and MiniFASNetV1SE, the passive presentation-attack
//! detectors of Silent-Face-Anti-Spoofing (Apache-2.0), and a MiniFASNetV2-SE trained on
//! CelebA-Spoof (`../shared/models/minifasnet-celeba`, Apache-2.0).
//!
//! - V2 and V1SE: input `(N, 3, 80, 80)`, BGR, float 0..255, no normalisation; output `(N, 3)`
//!   logits, class 1 live, classes 0 and 2 attacks; safetensors checkpoints.
//! - V2SE-CelebA: input `(N, 3, 128, 128)`, RGB, float 0..1; output `(N, 2)` logits, class 0
//!   live; an ONNX export whose BatchNorms are folded into the convolutions already, its tensors
//!   named here from the ONNX node scopes (`/conv_3/model/model.3/se_module/fc1/Conv` ->
//!   `conv_3.model.3.se_module.fc1`).
//!
//! The graph is the MobileFaceNet-like stack below, read from the tensor names; the SE variants
//! add a squeeze-excitation module to the last block of every residual stage, and the final
//! depthwise reduction covers the whole last feature map (5x5 at 80 px, 8x8 at 128 px).
//!
//! ```text
//! conv1 (3x3 s2) -> conv2_dw (dw 3x3) -> conv_23 (s2) -> conv_3 (residual x4)
//!   -> conv_34 (s2) -> conv_4 (residual x6) -> conv_45 (s2) -> conv_5 (residual x2)
//!   -> conv_6_sep (1x1) -> conv_6_dw (dw 5x5, linear) -> linear -> bn -> prob
//! ```
//!
//! BatchNorm is folded into the layer before it everywhere (convolutions and `linear`), and
//! each residual shortcut joins its block's projection in the projection's own pass.
//!
//! ```text
//! ```

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};

use super::layers::{sigmoid, Activation, BatchNorm, Conv2d, ConvGeom, Join, Linear};
use crate::{Error, Result};

/// Side of the square input crop.
pub const INPUT_SIZE: usize = 80;
/// Number of output classes (0: print attack, 1: live, 2: replay attack).
pub const NUM_CLASSES: usize = 3;
/// Index of the live class.
pub const LIVE_CLASS: usize = 1;

/// PyTorch's default BatchNorm epsilon, used by the checkpoints.
const BN_EPS: f64 = 1e-5;

/// Which variant a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Variant {
    /// MiniFASNetV2, used with crop scale 2.7.
    V2,
    /// MiniFASNetV1SE (squeeze-excitation), used with crop scale 4.0.
    V1SE,
    /// MiniFASNetV2-SE trained on CelebA-Spoof: 128 px RGB in 0..1, two classes.
    V2SeCeleba,
}

impl Variant {
    /// Side of its square input, pixels.
    pub fn input_size(self) -> usize {
        match self {
            Variant::V2 | Variant::V1SE => INPUT_SIZE,
            Variant::V2SeCeleba => CELEBA_INPUT_SIZE,
        }
    }

    /// Number of output classes.
    pub fn num_classes(self) -> usize {
        match self {
            Variant::V2 | Variant::V1SE => NUM_CLASSES,
            Variant::V2SeCeleba => 2,
        }
    }

    /// Index of the live class.
    pub fn live_class(self) -> usize {
        match self {
            Variant::V2 | Variant::V1SE => LIVE_CLASS,
            Variant::V2SeCeleba => 0,
        }
    }

    /// Whether its residual stages end in squeeze-excitation modules.
    fn has_se(self) -> bool {
        matches!(self, Variant::V1SE | Variant::V2SeCeleba)
    }
}

/// Side of the CelebA-Spoof network's square input.
pub const CELEBA_INPUT_SIZE: usize = 128;

/// Named tensors of one checkpoint, with helpful errors for missing names.
struct Weights {
    map: HashMap<String, Tensor>,
    path: String,
}

impl Weights {
    fn get(&self, name: &str) -> Result<Tensor> {
        self.map
            .get(name)
            .cloned()
            .ok_or_else(|| self.err(format!("tensor {name} missing")))
    }

    fn err(&self, reason: String) -> Error {
        Error::Model {
            name: "minifasnet".into(),
            path: self.path.clone().into(),
            reason,
        }
    }

    fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    fn bn(&self, prefix: &str) -> Result<BatchNorm> {
        Ok(BatchNorm {
            gamma: self.get(&format!("{prefix}.weight"))?,
            beta: self.get(&format!("{prefix}.bias"))?,
            mean: self.get(&format!("{prefix}.running_mean"))?,
            var: self.get(&format!("{prefix}.running_var"))?,
            eps: BN_EPS,
        })
    }
}

/// Convolution + BatchNorm (folded) + optional PReLU: the checkpoint's `Conv_block` (with
/// PReLU) and `Linear_block` (without). The PReLU is fused into the convolution's last pass on
/// CPU ([`Conv2d::forward_act`]).
#[derive(Debug, Clone)]
struct ConvBlock {
    conv: Conv2d,
    act: Activation,
}

impl ConvBlock {
    fn load(w: &Weights, prefix: &str, stride: usize, pad: usize) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.conv.weight"))?;
        let (out, in_per_group) = (weight.dim(0)?, weight.dim(1)?);
        let groups = if in_per_group == 1 && out > 1 { out } else { 1 };
        let geom = ConvGeom::new(stride, pad).grouped(groups);
        let bias = format!("{prefix}.conv.bias");
        // A checkpoint with BatchNorm (upstream's) or one folded already (the ONNX export).
        let conv = if w.has(&bias) && !w.has(&format!("{prefix}.bn.weight")) {
            Conv2d::new(weight, Some(w.get(&bias)?), geom)?
        } else {
            Conv2d::new(weight, None, geom)?.fold_bn(&w.bn(&format!("{prefix}.bn"))?)?
        };
        let prelu_name = format!("{prefix}.prelu.weight");
        let act = if w.has(&prelu_name) {
            let alpha = w.get(&prelu_name)?.flatten_all()?.to_vec1::<f32>()?;
            if alpha.len() != out {
                return Err(w.err(format!(
                    "{prelu_name} has {} slopes for {out} channels",
                    alpha.len()
                )));
            }
            Activation::Prelu(alpha)
        } else {
            Activation::Identity
        };
        Ok(Self { conv, act })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.conv.forward_act(x, &self.act)
    }
}

/// Squeeze-excitation: global pool, 1x1 reduce + BN + ReLU, 1x1 expand + BN, sigmoid gate.
#[derive(Debug, Clone)]
struct SeModule {
    fc1: Linear,
    fc2: Linear,
}

impl SeModule {
    fn load(w: &Weights, prefix: &str) -> Result<Self> {
        let fc = |i: usize| -> Result<Linear> {
            let k = w.get(&format!("{prefix}.fc{i}.weight"))?;
            let (o, c) = (k.dim(0)?, k.dim(1)?);
            let bias = format!("{prefix}.fc{i}.bias");
            let folded = if w.has(&bias) && !w.has(&format!("{prefix}.bn{i}.weight")) {
                Conv2d::new(k, Some(w.get(&bias)?), ConvGeom::new(1, 0))?
            } else {
                Conv2d::new(k, None, ConvGeom::new(1, 0))?
                    .fold_bn(&w.bn(&format!("{prefix}.bn{i}"))?)?
            };
            Ok(Linear {
                weight: folded.weight.reshape((o, c))?,
                bias: Some(folded.bias),
            })
        };
        Ok(Self {
            fc1: fc(1)?,
            fc2: fc(2)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let pooled = x.mean(3)?.mean(2)?;
        let h = self.fc1.forward(&pooled)?.relu()?;
        let gate = sigmoid(&self.fc2.forward(&h)?)?.reshape((n, c, 1, 1))?;
        x.broadcast_mul(&gate)
    }
}

/// Inverted-residual block (`Depth_Wise`): 1x1 expand, depthwise 3x3, 1x1 linear projection,
/// optional squeeze-excitation, optional identity shortcut.
#[derive(Debug, Clone)]
struct DepthWise {
    expand: ConvBlock,
    dw: ConvBlock,
    project: ConvBlock,
    se: Option<SeModule>,
    residual: bool,
}

impl DepthWise {
    fn load(w: &Weights, prefix: &str, stride: usize, residual: bool) -> Result<Self> {
        let se_prefix = format!("{prefix}.se_module");
        let se = if w.has(&format!("{se_prefix}.fc1.weight")) {
            Some(SeModule::load(w, &se_prefix)?)
        } else {
            None
        };
        Ok(Self {
            expand: ConvBlock::load(w, &format!("{prefix}.conv"), 1, 0)?,
            dw: ConvBlock::load(w, &format!("{prefix}.conv_dw"), stride, 1)?,
            project: ConvBlock::load(w, &format!("{prefix}.project"), 1, 0)?,
            se,
            residual,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.dw.forward(&self.expand.forward(x)?)?;
        let p = &self.project;
        match (&self.se, self.residual) {
            // The shortcut joins the linear projection in the projection's own pass.
            (None, true) => p.conv.forward_join(&h, &p.act, x, Join::AfterAct),
            (None, false) => p.forward(&h),
            (Some(se), true) => se.forward(&p.forward(&h)?)? + x,
            (Some(se), false) => se.forward(&p.forward(&h)?),
        }
    }
}

/// A MiniFASNet network with BatchNorm folded into every convolution.
#[derive(Debug, Clone)]
pub struct MiniFasNet {
    variant: Variant,
    stem: Vec<ConvBlock>,
    blocks: Vec<DepthWise>,
    conv_6_sep: ConvBlock,
    conv_6_dw: ConvBlock,
    /// The 512 -> 128 embedding with the BatchNorm after it folded in.
    linear: Linear,
    prob: Linear,
}

impl MiniFasNet {
    /// Loads a checkpoint onto `device`: safetensors with the upstream tensor names, or (a
    /// `.onnx` file) an ONNX export named from its node scopes.
    pub fn load(path: &Path, variant: Variant, device: &Device) -> Result<Self> {
        let is_onnx = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        let map = if is_onnx {
            onnx_weights(path, device)?
        } else {
            candle_core::safetensors::load(path, device).map_err(|e| Error::Model {
                name: "minifasnet".into(),
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
        };
        let map = map
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
            .collect::<candle_core::Result<HashMap<_, _>>>()?;
        let w = Weights {
            map,
            path: path.display().to_string(),
        };
        let stem = vec![
            ConvBlock::load(&w, "conv1", 2, 1)?,
            ConvBlock::load(&w, "conv2_dw", 1, 1)?,
        ];
        let mut blocks = Vec::new();
        for (down, stage) in [
            ("conv_23", "conv_3"),
            ("conv_34", "conv_4"),
            ("conv_45", "conv_5"),
        ] {
            blocks.push(DepthWise::load(&w, down, 2, false)?);
            let mut i = 0;
            while w.has(&format!("{stage}.model.{i}.conv.conv.weight")) {
                blocks.push(DepthWise::load(&w, &format!("{stage}.model.{i}"), 1, true)?);
                i += 1;
            }
            if i == 0 {
                return Err(Error::Model {
                    name: "minifasnet".into(),
                    path: path.to_path_buf(),
                    reason: format!("stage {stage} has no blocks"),
                });
            }
        }
        let has_se = blocks.iter().any(|b| b.se.is_some());
        if has_se != variant.has_se() {
            return Err(Error::Model {
                name: "minifasnet".into(),
                path: path.to_path_buf(),
                reason: format!("checkpoint does not look like {variant:?} (SE modules: {has_se})"),
            });
        }
        let conv_6_dw = ConvBlock::load(&w, "conv_6_dw", 1, 0)?;
        Ok(Self {
            variant,
            stem,
            blocks,
            conv_6_sep: ConvBlock::load(&w, "conv_6_sep", 1, 0)?,
            conv_6_dw,
            linear: Linear {
                weight: w.get("linear.weight")?,
                bias: None,
            }
            .fold_bn(&w.bn("bn")?)?,
            prob: Linear {
                weight: w.get("prob.weight")?,
                bias: None,
            },
        })
    }

    /// Which variant this is.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// Runs the network on its input crops (`(N, 3, 80, 80)` BGR 0..255, or for V2SE-CelebA
    /// `(N, 3, 128, 128)` RGB 0..1) and returns its logits (`(N, 3)`, or `(N, 2)`).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        for s in &self.stem {
            y = s.forward(&y)?;
        }
        for b in &self.blocks {
            y = b.forward(&y)?;
        }
        y = self.conv_6_dw.forward(&self.conv_6_sep.forward(&y)?)?;
        let y = y.flatten_from(1)?;
        self.prob.forward(&self.linear.forward(&y)?)
    }
}

/// The module path of an ONNX node from its output's scope: `/conv_3/model/model.3/conv/conv/
/// Conv_output_0` -> `conv_3.model.3.conv.conv` (a `Sequential` child's scope repeats its
/// parent's name: `model`, `model.3`). `None` for an output without scope (the graph output).
fn scope_path(output: &str) -> Option<String> {
    let parts: Vec<&str> = output.trim_start_matches('/').split('/').collect();
    let (_, scopes) = parts.split_last()?;
    if scopes.is_empty() {
        return None;
    }
    let mut path: Vec<&str> = Vec::with_capacity(scopes.len());
    for s in scopes {
        match path.last() {
            Some(prev) if s.strip_prefix(prev).is_some_and(|r| r.starts_with('.')) => {
                path.pop();
            }
            _ => {}
        }
        path.push(s);
    }
    Some(path.join("."))
}

/// The weights of an ONNX export under the upstream tensor names: each `Conv`'s weight and
/// bias (`{path}.weight`, `.bias`), each `PRelu`'s slopes, the `BatchNormalization` after the
/// embedding (`bn.*`), and the two `MatMul`s as `linear.weight` and `prob.weight` (transposed
/// to `(out, in)`).
fn onnx_weights(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let model = super::onnx::OnnxModel::load(path)?;
    let err = |reason: String| Error::Model {
        name: "minifasnet".into(),
        path: path.to_path_buf(),
        reason,
    };
    let init = |name: &str| -> Result<Tensor> {
        model
            .initializers
            .get(name)
            .ok_or_else(|| err(format!("initializer {name} missing")))?
            .to_candle(device)
            .map_err(Error::from)
    };
    let mut map = HashMap::new();
    for node in &model.nodes {
        let output = node.outputs.first().map(String::as_str).unwrap_or("");
        let scope = scope_path(output);
        let named = |suffixes: &[&str]| -> Result<Vec<(String, Tensor)>> {
            let base = scope
                .clone()
                .ok_or_else(|| err(format!("{} node {output} has no scope", node.op_type)))?;
            suffixes
                .iter()
                .zip(node.inputs.iter().skip(1))
                .map(|(s, input)| Ok((format!("{base}.{s}"), init(input)?)))
                .collect()
        };
        match node.op_type.as_str() {
            "Conv" => map.extend(named(&["weight", "bias"])?),
            "PRelu" => map.extend(named(&["weight"])?),
            "BatchNormalization" => {
                map.extend(named(&["weight", "bias", "running_mean", "running_var"])?)
            }
            "MatMul" => {
                let name = match scope.as_deref() {
                    Some("linear") => "linear.weight",
                    None => "prob.weight",
                    Some(other) => return Err(err(format!("unexpected MatMul in {other}"))),
                };
                let input = node
                    .inputs
                    .get(1)
                    .ok_or_else(|| err(format!("MatMul {output} has no weight")))?;
                map.insert(name.to_string(), init(input)?.t()?.contiguous()?);
            }
            _ => {}
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_scopes_become_tensor_names() {
        assert_eq!(
            scope_path("/conv_3/model/model.3/se_module/fc1/Conv_output_0").as_deref(),
            Some("conv_3.model.3.se_module.fc1")
        );
        assert_eq!(
            scope_path("/conv1/conv/Conv_output_0").as_deref(),
            Some("conv1.conv")
        );
        assert_eq!(
            scope_path("/conv_23/conv/conv/Conv_output_0").as_deref(),
            Some("conv_23.conv.conv")
        );
        assert_eq!(scope_path("output"), None);
        assert_eq!(Variant::V2SeCeleba.input_size(), 128);
        assert_eq!(Variant::V2SeCeleba.live_class(), 0);
    }
}
