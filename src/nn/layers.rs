//! Building blocks shared by every network: convolution with BatchNorm folded in, a
//! dedicated depthwise convolution, activations and linear layers.
//!
//! candle's `conv2d(.., groups)` runs one small convolution per group and concatenates, which
//! is very slow for depthwise layers (groups = channels). [`DepthwiseConv`] is a CPU custom op
//! that does the same arithmetic in one pass over each plane; on other devices the grouped path
//! is used so results stay identical.
//!
//! Its ordinary convolutions are also slow on CPU for these small shapes, so on CPU with f32
//! [`Conv2d`] runs them as a matrix product (directly on the input for 1x1 stride-1 convs, on an
//! [`Im2Col`] copy otherwise) and adds the bias and the [`Activation`] in one in-place pass;
//! [`add_act`] does the same for residual joins.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, InplaceOp1, Layout, Module, Result,
    Shape, Tensor, TensorId, D,
};
use rayon::prelude::*;

/// Square convolution geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Step between output samples, in input pixels.
    pub stride: usize,
    /// Zero padding on every side, in input pixels.
    pub pad: usize,
    /// Number of groups (1 for an ordinary convolution, channels for depthwise).
    pub groups: usize,
}

impl ConvGeom {
    /// Ordinary convolution with the given stride and padding.
    pub fn new(stride: usize, pad: usize) -> Self {
        Self {
            stride,
            pad,
            groups: 1,
        }
    }

    /// Same geometry with `groups` groups.
    pub fn grouped(self, groups: usize) -> Self {
        Self { groups, ..self }
    }
}

/// What follows a convolution; [`Conv2d::forward_act`] fuses it with the bias on CPU.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Activation {
    /// No activation.
    #[default]
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `x` when `x >= 0`, else `slope * x`.
    LeakyRelu(f32),
    /// Per-channel PReLU over dimension 1: `x` when `x >= 0`, else `alpha[c] * x`.
    Prelu(Vec<f32>),
}

impl Activation {
    /// Applies the activation with ordinary tensor operations (any device, any dtype).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Identity => Ok(x.clone()),
            Self::Relu => x.relu(),
            Self::LeakyRelu(slope) => leaky_relu(x, f64::from(*slope)),
            Self::Prelu(alpha) => {
                let a = Tensor::from_slice(alpha, alpha.len(), x.device())?.to_dtype(x.dtype())?;
                prelu(x, &a)
            }
        }
    }

    /// Fails unless the activation fits `channels` channels (only PReLU has a channel count).
    fn check_channels(&self, channels: usize) -> Result<()> {
        match self {
            Self::Prelu(alpha) if alpha.len() != channels => {
                candle_core::bail!("prelu: {} slopes for {channels} channels", alpha.len())
            }
            _ => Ok(()),
        }
    }

    /// `dst = act(dst + bias)` in place over one plane of channel `ch`.
    fn apply_plane(&self, ch: usize, bias: f32, dst: &mut [f32]) {
        let slope = match self {
            Self::Identity => {
                if bias != 0.0 {
                    dst.iter_mut().for_each(|v| *v += bias);
                }
                return;
            }
            Self::Relu => {
                dst.iter_mut().for_each(|v| *v = (*v + bias).max(0.0));
                return;
            }
            Self::LeakyRelu(slope) => *slope,
            Self::Prelu(alpha) => alpha[ch],
        };
        dst.iter_mut().for_each(|v| {
            let x = *v + bias;
            *v = if x >= 0.0 { x } else { x * slope };
        });
    }
}

/// Host-side data for the CPU matrix-product path of a [`Conv2d`], built by its constructors.
#[derive(Debug, Clone)]
struct MatmulParts {
    /// Id of the weight tensor these were built from.
    weight_id: TensorId,
    /// Id of the bias tensor these were built from.
    bias_id: TensorId,
    /// Kernel as a contiguous `(out, in * kh * kw)` matrix.
    kernel_2d: Tensor,
    /// Bias values on the host.
    bias_host: Vec<f32>,
}

impl MatmulParts {
    /// Builds the parts for an ordinary (`groups == 1`) f32 convolution on the CPU, `None`
    /// for any other convolution.
    fn build(weight: &Tensor, bias: &Tensor, geom: ConvGeom) -> Result<Option<Self>> {
        let usable = geom.groups == 1
            && weight.device().is_cpu()
            && weight.dtype() == DType::F32
            && bias.dtype() == DType::F32
            && weight.rank() == 4;
        if !usable {
            return Ok(None);
        }
        let out = weight.dim(0)?;
        Ok(Some(Self {
            weight_id: weight.id(),
            bias_id: bias.id(),
            kernel_2d: weight.reshape((out, ()))?.contiguous()?,
            bias_host: bias.flatten_all()?.to_vec1::<f32>()?,
        }))
    }

    /// Whether these were built from the conv's current weight and bias.
    fn matches(&self, conv: &Conv2d) -> bool {
        self.weight_id == conv.weight.id() && self.bias_id == conv.bias.id()
    }
}

/// A 2-D convolution whose weight already includes any following BatchNorm, plus its bias.
///
/// On CPU with f32, ordinary (`groups == 1`) convolutions run as one matrix product per image
/// (1x1 stride-1 unpadded convs directly on the input, others on an [`Im2Col`] copy) followed
/// by one in-place pass that adds the bias and applies the activation; depthwise convolutions
/// run [`DepthwiseConv`] with the activation fused in. Everything else uses candle's `conv2d`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// Kernel, `(out, in / groups, kh, kw)`.
    pub weight: Tensor,
    /// Per-output-channel bias, `(out,)`.
    pub bias: Tensor,
    /// Stride, padding and groups.
    pub geom: ConvGeom,
    /// Precomputed CPU matrix-product data; rebuilt on the fly if `weight` or `bias` has been
    /// replaced since construction.
    matmul: Option<MatmulParts>,
}

impl Conv2d {
    /// Builds a convolution from a kernel and an optional bias (zeros when absent).
    pub fn new(weight: Tensor, bias: Option<Tensor>, geom: ConvGeom) -> Result<Self> {
        let out = weight.dim(0)?;
        let bias = match bias {
            Some(b) => b,
            None => Tensor::zeros(out, weight.dtype(), weight.device())?,
        };
        let matmul = MatmulParts::build(&weight, &bias, geom)?;
        Ok(Self {
            weight,
            bias,
            geom,
            matmul,
        })
    }

    /// Folds an inference-mode BatchNorm (`gamma, beta, mean, var, eps`) into this convolution.
    pub fn fold_bn(self, bn: &BatchNorm) -> Result<Self> {
        let scale = bn.scale()?;
        let weight = self
            .weight
            .broadcast_mul(&scale.reshape((scale.dim(0)?, 1, 1, 1))?)?;
        let bias = ((&self.bias - &bn.mean)? * &scale)?.add(&bn.beta)?;
        Self::new(weight, Some(bias), self.geom)
    }

    /// Number of output channels.
    pub fn out_channels(&self) -> Result<usize> {
        self.weight.dim(0)
    }

    /// The convolution followed by `act`: fused into the convolution's last pass on CPU with
    /// f32, separate tensor operations elsewhere. Same results as `act.apply(&self.forward(x))`.
    pub fn forward_act(&self, x: &Tensor, act: &Activation) -> Result<Tensor> {
        let g = self.geom;
        let (out, in_per_group, kh, kw) = self.weight.dims4()?;
        act.check_channels(out)?;
        let cpu_f32 = x.device().is_cpu()
            && x.dtype() == DType::F32
            && self.weight.dtype() == DType::F32
            && self.bias.dtype() == DType::F32;
        let in_ch = x.dim(1)?;
        if g.groups > 1 && g.groups == in_ch && in_per_group == 1 {
            if cpu_f32 {
                return DepthwiseConv {
                    stride: g.stride,
                    pad: g.pad,
                }
                .run(x, &self.weight, &self.bias, act);
            }
            let y = depthwise_conv2d(x, &self.weight, &self.bias, g.stride, g.pad)?;
            return act.apply(&y);
        }
        if cpu_f32 && g.groups == 1 {
            let built;
            let parts = match &self.matmul {
                Some(p) if p.matches(self) => p,
                _ => match MatmulParts::build(&self.weight, &self.bias, g)? {
                    Some(p) => {
                        built = p;
                        &built
                    }
                    None => candle_core::bail!("conv2d: weight is not a CPU f32 kernel"),
                },
            };
            return self.forward_matmul(x, parts, (kh, kw), act);
        }
        let y = x.conv2d(&self.weight, g.pad, g.stride, 1, g.groups)?;
        let y = y.broadcast_add(&self.bias.reshape((1, out, 1, 1))?)?;
        act.apply(&y)
    }

    /// CPU path for `groups == 1`: kernel matrix times input columns, then bias + activation.
    fn forward_matmul(
        &self,
        x: &Tensor,
        parts: &MatmulParts,
        (kh, kw): (usize, usize),
        act: &Activation,
    ) -> Result<Tensor> {
        let g = self.geom;
        let (n, c, h, w) = x.dims4()?;
        let (out, k_len) = parts.kernel_2d.dims2()?;
        if c * kh * kw != k_len {
            candle_core::bail!(
                "conv2d: input {:?} does not fit kernel {:?}",
                x.shape(),
                self.weight.shape()
            );
        }
        let geom = Im2Col {
            kh,
            kw,
            stride: g.stride,
            pad: g.pad,
        };
        let (oh, ow) = geom.out_size(h, w)?;
        let cols = if kh == 1 && kw == 1 && g.stride == 1 && g.pad == 0 {
            x.reshape((n, c, h * w))?
        } else {
            x.contiguous()?.apply_op1_no_bwd(&geom)?
        };
        let y = parts.kernel_2d.broadcast_left(n)?.matmul(&cols)?;
        y.inplace_op1(&BiasAct {
            bias: Some(&parts.bias_host),
            act,
        })?;
        y.reshape((n, out, oh, ow))
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, &Activation::Identity)
    }
}

/// A convolution and the activation that follows it, run by [`Conv2d::forward_act`].
#[derive(Debug, Clone)]
pub struct ConvAct {
    /// The convolution (BatchNorm folded in).
    pub conv: Conv2d,
    /// The activation after it.
    pub act: Activation,
}

impl Module for ConvAct {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward_act(x, &self.act)
    }
}

/// Inference-mode batch normalisation parameters.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    /// Scale (gamma).
    pub gamma: Tensor,
    /// Shift (beta).
    pub beta: Tensor,
    /// Running mean.
    pub mean: Tensor,
    /// Running variance.
    pub var: Tensor,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl BatchNorm {
    /// `gamma / sqrt(var + eps)`, the multiplicative part of the normalisation.
    pub fn scale(&self) -> Result<Tensor> {
        self.gamma.div(&(&self.var + self.eps)?.sqrt()?)
    }

    /// Applies the normalisation over dimension 1 of `x` (N,C) or (N,C,H,W).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let scale = self.scale()?;
        let shift = (&self.beta - (&self.mean * &scale)?)?;
        let c = scale.dim(0)?;
        let shape: Vec<usize> = (0..x.rank()).map(|i| if i == 1 { c } else { 1 }).collect();
        x.broadcast_mul(&scale.reshape(shape.as_slice())?)?
            .broadcast_add(&shift.reshape(shape.as_slice())?)
    }
}

/// A fully connected layer `y = x W^T + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Weight, `(out, in)`.
    pub weight: Tensor,
    /// Optional bias, `(out,)`.
    pub bias: Option<Tensor>,
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Per-channel PReLU over dimension 1: `max(x, 0) + alpha * min(x, 0)`.
pub fn prelu(x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let c = alpha.elem_count();
    let shape: Vec<usize> = (0..x.rank()).map(|i| if i == 1 { c } else { 1 }).collect();
    let a = alpha.reshape(shape.as_slice())?;
    let zeros = x.zeros_like()?;
    x.maximum(&zeros)?
        .add(&x.minimum(&zeros)?.broadcast_mul(&a)?)
}

/// Leaky ReLU with a fixed negative slope.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    let zeros = x.zeros_like()?;
    x.maximum(&zeros)?.add(&(x.minimum(&zeros)? * slope)?)
}

/// Softmax over the last dimension, numerically stable.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// Logistic sigmoid.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// Depthwise 2-D convolution with bias: `x (N,C,H,W)`, `w (C,1,k,k)`, `b (C,)`.
///
/// On CPU with f32 this runs [`DepthwiseConv`]; elsewhere it falls back to candle's grouped
/// convolution so every device computes the same function.
pub fn depthwise_conv2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let b = b.contiguous()?;
        x.apply_op3_no_bwd(&w, &b, &DepthwiseConv { stride, pad })
    } else {
        let c = x.dim(1)?;
        x.conv2d(w, pad, stride, 1, c)?
            .broadcast_add(&b.reshape((1, c, 1, 1))?)
    }
}

/// CPU kernel of [`depthwise_conv2d`]: one task per (image, channel) plane.
#[derive(Debug, Clone, Copy)]
pub struct DepthwiseConv {
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

impl DepthwiseConv {
    /// Output side for an input side `n` and kernel side `k`.
    fn out_len(&self, n: usize, k: usize) -> usize {
        (n + 2 * self.pad).saturating_sub(k) / self.stride + 1
    }

    /// Runs the kernel on CPU f32 tensors with `act` applied to each finished plane.
    fn run(self, x: &Tensor, w: &Tensor, b: &Tensor, act: &Activation) -> Result<Tensor> {
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let b = b.contiguous()?;
        x.apply_op3_no_bwd(&w, &b, &DepthwiseAct { conv: self, act })
    }

    /// The convolution of `x` (`dims` `(N,C,H,W)`) by `w` `(C,1,kh,kw)` plus `b`, then `act`.
    fn compute(
        &self,
        x: &[f32],
        dims: (usize, usize, usize, usize),
        w: &[f32],
        (kh, kw): (usize, usize),
        b: &[f32],
        act: &Activation,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, wd) = dims;
        act.check_channels(c)?;
        let (oh, ow) = (self.out_len(h, kh), self.out_len(wd, kw));
        let (s, p) = (self.stride as isize, self.pad as isize);
        let mut out = vec![0f32; n * c * oh * ow];
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))));
        }
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .with_min_len(min_planes_per_task(h * wd * kh * kw))
            .for_each(|(plane, dst)| {
                let ch = plane % c;
                let src = &x[plane * h * wd..(plane + 1) * h * wd];
                let k = &w[ch * kh * kw..(ch + 1) * kh * kw];
                dst.fill(b[ch]);
                for oy in 0..oh {
                    let row = &mut dst[oy * ow..(oy + 1) * ow];
                    for ky in 0..kh {
                        let iy = oy as isize * s - p + ky as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let srow = &src[iy as usize * wd..(iy as usize + 1) * wd];
                        for kx in 0..kw {
                            let kv = k[ky * kw + kx];
                            // ox range with 0 <= ox*s - p + kx < wd
                            let off = kx as isize - p;
                            let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
                            let hi = ((wd as isize - off + s - 1) / s).min(ow as isize);
                            if hi <= lo {
                                continue;
                            }
                            if s == 1 {
                                let start = (lo + off) as usize;
                                let len = (hi - lo) as usize;
                                let d = &mut row[lo as usize..hi as usize];
                                for (dv, sv) in d.iter_mut().zip(&srow[start..start + len]) {
                                    *dv += kv * sv;
                                }
                            } else {
                                for ox in lo..hi {
                                    row[ox as usize] += kv * srow[(ox * s + off) as usize];
                                }
                            }
                        }
                    }
                }
                act.apply_plane(ch, 0.0, dst);
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// Minimum number of planes per rayon task when one plane costs about `work` multiply-adds,
/// so that tiny planes are not scheduled one by one.
fn min_planes_per_task(work: usize) -> usize {
    const MIN_TASK_WORK: usize = 16 * 1024;
    (MIN_TASK_WORK / work.max(1)).max(1)
}

fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// Checks the operands of a depthwise convolution and returns the kernel size.
fn depthwise_dims(x: &Layout, w: &Layout, b: &[f32]) -> Result<(usize, usize)> {
    let (_, c, _, _) = x.shape().dims4()?;
    let (kc, one, kh, kw) = w.shape().dims4()?;
    if kc != c || one != 1 || b.len() != c {
        candle_core::bail!(
            "depthwise conv: kernel {:?} does not fit {c} channels",
            w.shape()
        );
    }
    Ok((kh, kw))
}

impl CustomOp3 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        DepthwiseAct {
            conv: *self,
            act: &Activation::Identity,
        }
        .cpu_fwd(s1, l1, s2, l2, s3, l3)
    }
}

/// [`DepthwiseConv`] with an activation applied to each output plane while it is in cache.
#[derive(Debug, Clone, Copy)]
struct DepthwiseAct<'a> {
    /// Geometry.
    conv: DepthwiseConv,
    /// Activation after the bias.
    act: &'a Activation,
}

impl CustomOp3 for DepthwiseAct<'_> {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, "depthwise conv: input")?;
        let w = cpu_f32(s2, l2, "depthwise conv: kernel")?;
        let b = cpu_f32(s3, l3, "depthwise conv: bias")?;
        let k = depthwise_dims(l1, l2, b)?;
        self.conv.compute(x, l1.shape().dims4()?, w, k, b, self.act)
    }
}

/// im2col: `(N,C,H,W)` to `(N, C*kh*kw, OH*OW)`, rows ordered `(c, ky, kx)` like a flattened
/// `(out, in, kh, kw)` kernel, zeros where the window leaves the padded input. A convolution is
/// then the kernel matrix times these columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Im2Col {
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

impl Im2Col {
    /// Output `(OH, OW)` for an `h` x `w` input; fails when the kernel is larger than the
    /// padded input or the stride is zero.
    pub fn out_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let (hp, wp) = (h + 2 * self.pad, w + 2 * self.pad);
        if self.stride == 0 || hp < self.kh || wp < self.kw {
            candle_core::bail!(
                "conv2d: kernel {}x{} stride {} does not fit a padded {hp}x{wp} input",
                self.kh,
                self.kw,
                self.stride
            );
        }
        Ok((
            (hp - self.kh) / self.stride + 1,
            (wp - self.kw) / self.stride + 1,
        ))
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, "im2col: input")?;
        let (n, c, h, w) = l.shape().dims4()?;
        let (kh, kw, st, p) = (self.kh, self.kw, self.stride, self.pad);
        let (oh, ow) = self.out_size(h, w)?;
        let per_plane = kh * kw * oh * ow;
        let mut out = vec![0f32; n * c * per_plane];
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), Shape::from((n, c * kh * kw, oh * ow))));
        }
        out.par_chunks_mut(per_plane)
            .enumerate()
            .with_min_len(min_planes_per_task(per_plane))
            .for_each(|(plane, dst)| {
                let src = &x[plane * h * w..(plane + 1) * h * w];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let r = ky * kw + kx;
                        let rows = &mut dst[r * oh * ow..(r + 1) * oh * ow];
                        // Output columns whose input column 0 <= ox*st + kx - p < w.
                        let lo = p.saturating_sub(kx).div_ceil(st).min(ow);
                        let hi = (w + p).saturating_sub(kx).div_ceil(st).min(ow);
                        for oy in 0..oh {
                            let iy = oy * st + ky;
                            if iy < p || iy - p >= h || lo >= hi {
                                continue;
                            }
                            let srow = &src[(iy - p) * w..(iy - p + 1) * w];
                            let drow = &mut rows[oy * ow..(oy + 1) * ow];
                            if st == 1 {
                                let start = lo + kx - p;
                                drow[lo..hi].copy_from_slice(&srow[start..start + hi - lo]);
                            } else {
                                for (ox, d) in drow.iter_mut().enumerate().take(hi).skip(lo) {
                                    *d = srow[ox * st + kx - p];
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c * kh * kw, oh * ow))))
    }
}

/// Adds a per-channel bias (dimension 1) and applies an activation, in place over a contiguous
/// f32 `(N,C,...)` tensor.
#[derive(Debug, Clone, Copy)]
struct BiasAct<'a> {
    /// Per-channel bias, `None` for none.
    bias: Option<&'a [f32]>,
    /// Activation after the bias.
    act: &'a Activation,
}

impl InplaceOp1 for BiasAct<'_> {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let x = match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &mut v[a..b],
            _ => candle_core::bail!("bias-act: input must be contiguous f32"),
        };
        let dims = l.shape().dims();
        if dims.len() < 2 || self.bias.is_some_and(|b| b.len() != dims[1]) {
            candle_core::bail!("bias-act: bias does not fit shape {dims:?}");
        }
        let c = dims[1];
        self.act.check_channels(c)?;
        let plane: usize = dims[2..].iter().product();
        if plane == 0 || x.is_empty() {
            return Ok(());
        }
        x.par_chunks_mut(plane)
            .enumerate()
            .with_min_len(min_planes_per_task(plane))
            .for_each(|(i, dst)| {
                let ch = i % c;
                let b = self.bias.map_or(0.0, |b| b[ch]);
                self.act.apply_plane(ch, b, dst);
            });
        Ok(())
    }
}

/// `act(a + b)` for two tensors of the same shape `(N,C,...)`, e.g. a residual join: one pass
/// on CPU with f32, separate tensor operations elsewhere.
pub fn add_act(a: &Tensor, b: &Tensor, act: &Activation) -> Result<Tensor> {
    let cpu_f32 = a.device().is_cpu()
        && b.device().is_cpu()
        && a.dtype() == DType::F32
        && b.dtype() == DType::F32;
    if cpu_f32 && a.dims() == b.dims() && a.rank() >= 2 {
        a.contiguous()?
            .apply_op2_no_bwd(&b.contiguous()?, &AddAct { act })
    } else {
        act.apply(&(a + b)?)
    }
}

/// CPU kernel of [`add_act`].
#[derive(Debug, Clone, Copy)]
struct AddAct<'a> {
    /// Activation after the sum.
    act: &'a Activation,
}

impl CustomOp2 for AddAct<'_> {
    fn name(&self) -> &'static str {
        "add-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = cpu_f32(s1, l1, "add-act: lhs")?;
        let b = cpu_f32(s2, l2, "add-act: rhs")?;
        let dims = l1.shape().dims();
        if dims != l2.shape().dims() || dims.len() < 2 {
            candle_core::bail!("add-act: shapes {:?} and {:?}", l1.shape(), l2.shape());
        }
        let c = dims[1];
        self.act.check_channels(c)?;
        let plane: usize = dims[2..].iter().product();
        let mut out = vec![0f32; a.len()];
        if plane > 0 && !out.is_empty() {
            out.par_chunks_mut(plane)
                .zip(a.par_chunks(plane).zip(b.par_chunks(plane)))
                .enumerate()
                .with_min_len(min_planes_per_task(plane))
                .for_each(|(i, (dst, (pa, pb)))| {
                    for ((d, &x), &y) in dst.iter_mut().zip(pa).zip(pb) {
                        *d = x + y;
                    }
                    self.act.apply_plane(i % c, 0.0, dst);
                });
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Global average pool: `(N,C,H,W) -> (N,C)`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean(D::Minus1)?.mean(D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// candle's conv2d, the bias, then the activation as separate tensor operations.
    fn conv_reference(x: &Tensor, conv: &Conv2d, act: &Activation) -> Tensor {
        let g = conv.geom;
        let out = conv.weight.dim(0).unwrap();
        let y = x
            .conv2d(&conv.weight, g.pad, g.stride, 1, g.groups)
            .unwrap()
            .broadcast_add(&conv.bias.reshape((1, out, 1, 1)).unwrap())
            .unwrap();
        act.apply(&y).unwrap()
    }

    fn activations(channels: usize) -> Vec<Activation> {
        let alpha: Vec<f32> = (0..channels).map(|i| 0.05 + 0.1 * i as f32).collect();
        vec![
            Activation::Identity,
            Activation::Relu,
            Activation::LeakyRelu(0.1),
            Activation::Prelu(alpha),
        ]
    }

    #[test]
    fn matmul_path_matches_candle_conv2d() {
        let dev = Device::Cpu;
        // (n, in, out, h, w, kh, kw, stride, pad): shapes the networks use, plus odd ones.
        for &(n, cin, cout, h, w, kh, kw, s, p) in &[
            (2, 8, 16, 10, 9, 1, 1, 1, 0),   // pointwise, direct on the input
            (2, 16, 12, 11, 10, 3, 3, 1, 1), // "same" 3x3
            (2, 3, 8, 17, 13, 3, 3, 2, 1),   // strided stem
            (2, 6, 5, 9, 9, 3, 3, 2, 0),     // "valid" strided 3x3 (descriptor down blocks)
            (2, 3, 4, 23, 21, 7, 7, 2, 0),   // descriptor stem
            (2, 4, 6, 12, 11, 7, 7, 2, 3),   // padded 7x7
            (2, 5, 7, 8, 9, 1, 1, 2, 0),     // strided 1x1 (im2col path)
            (2, 4, 3, 9, 8, 2, 3, 1, 1),     // non-square kernel
            (1, 7, 9, 5, 5, 5, 5, 1, 0),     // kernel as large as the input
        ] {
            let x = Tensor::randn(0f32, 1.0, (n, cin, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 0.5, (cout, cin, kh, kw), &dev).unwrap();
            let b = Tensor::randn(0f32, 0.5, cout, &dev).unwrap();
            let conv = Conv2d::new(wt, Some(b), ConvGeom::new(s, p)).unwrap();
            assert!(conv.matmul.is_some());
            for act in activations(cout) {
                let got = conv.forward_act(&x, &act).unwrap();
                let want = conv_reference(&x, &conv, &act);
                let diff = max_diff(&got, &want);
                assert!(
                    diff < 1e-4,
                    "max diff {diff} for {:?} with {act:?}",
                    (n, cin, cout, h, w, kh, kw, s, p)
                );
            }
            let diff = max_diff(
                &conv.forward(&x).unwrap(),
                &conv_reference(&x, &conv, &Activation::Identity),
            );
            assert!(diff < 1e-4, "forward: max diff {diff}");
        }
    }

    #[test]
    fn depthwise_path_fuses_every_activation() {
        let dev = Device::Cpu;
        for &(n, c, h, w, k, s, p) in &[
            (2, 6, 9, 8, 3, 1, 1),
            (2, 4, 10, 10, 3, 2, 1),
            (2, 5, 5, 5, 5, 1, 0),
        ] {
            let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 0.5, (c, 1, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 0.5, c, &dev).unwrap();
            let conv = Conv2d::new(wt, Some(b), ConvGeom::new(s, p).grouped(c)).unwrap();
            for act in activations(c) {
                let got = conv.forward_act(&x, &act).unwrap();
                let want = conv_reference(&x, &conv, &act);
                let diff = max_diff(&got, &want);
                assert!(
                    diff < 1e-4,
                    "max diff {diff} for {:?} with {act:?}",
                    (n, c, h, w, k, s, p)
                );
            }
        }
    }

    #[test]
    fn replaced_weights_are_not_served_from_the_cache() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 6, 6), &dev).unwrap();
        let mut conv = Conv2d::new(
            Tensor::randn(0f32, 1.0, (4, 3, 3, 3), &dev).unwrap(),
            None,
            ConvGeom::new(1, 1),
        )
        .unwrap();
        conv.weight = Tensor::randn(0f32, 1.0, (4, 3, 3, 3), &dev).unwrap();
        conv.bias = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
        let got = conv.forward_act(&x, &Activation::Relu).unwrap();
        let want = conv_reference(&x, &conv, &Activation::Relu);
        assert!(max_diff(&got, &want) < 1e-4);
    }

    #[test]
    fn prelu_with_the_wrong_channel_count_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 3, 4, 4), &dev).unwrap();
        let conv = Conv2d::new(
            Tensor::randn(0f32, 1.0, (4, 3, 1, 1), &dev).unwrap(),
            None,
            ConvGeom::new(1, 0),
        )
        .unwrap();
        assert!(conv
            .forward_act(&x, &Activation::Prelu(vec![0.1; 3]))
            .is_err());
        assert!(conv
            .forward_act(&x, &Activation::Prelu(vec![0.1; 4]))
            .is_ok());
    }

    #[test]
    fn add_act_matches_separate_ops() {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (2, 5, 7, 6), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (2, 5, 7, 6), &dev).unwrap();
        for act in activations(5) {
            let got = add_act(&a, &b, &act).unwrap();
            let want = act.apply(&(&a + &b).unwrap()).unwrap();
            assert!(max_diff(&got, &want) < 1e-6, "{act:?}");
        }
    }

    #[test]
    fn fold_bn_equals_conv_then_bn() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 6, 6), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (4, 3, 3, 3), &dev).unwrap();
        let bn = BatchNorm {
            gamma: Tensor::randn(1f32, 0.1, 4, &dev).unwrap(),
            beta: Tensor::randn(0f32, 0.1, 4, &dev).unwrap(),
            mean: Tensor::randn(0f32, 0.5, 4, &dev).unwrap(),
            var: Tensor::rand(0.5f32, 1.5, 4, &dev).unwrap(),
            eps: 1e-5,
        };
        let conv = Conv2d::new(w, None, ConvGeom::new(1, 1)).unwrap();
        let want = bn.forward(&conv.forward(&x).unwrap()).unwrap();
        let got = conv.fold_bn(&bn).unwrap().forward(&x).unwrap();
        let diff = max_diff(&got, &want);
        assert!(diff < 1e-4, "max diff {diff}");
    }
}
