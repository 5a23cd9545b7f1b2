//! Building blocks shared by every network: convolution with BatchNorm folded in, activations,
//! linear layers and residual joins.
//!
//! On CPU with f32 every convolution runs as one custom op over the single-threaded kernels of
//! [`super::cpu`] (weights packed once at construction; bias, activation and an optional
//! residual applied in the same pass); linear layers use [`super::cpu::linear`]. On other
//! devices the same functions are built from candle's tensor operations (depthwise
//! convolutions on CUDA from [`super::cuda::depthwise`]), so every device computes the same
//! thing. No layer spawns threads: the engine decides where images run.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Layout, Module, Result, Shape, Tensor, TensorId, D,
};

use super::cpu::conv::{PackedConv, Window};
use super::cpu::depthwise::depthwise;
use super::cpu::{self, Epilogue, Isa, Residual, Slope};
use super::cuda::depthwise::{cuda_dtype, Depthwise};

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

    fn window(&self) -> Window {
        Window {
            stride: self.stride,
            pad: self.pad,
        }
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

    /// The activation as the kernels' negative-side slope.
    fn slope(&self) -> Slope<'_> {
        match self {
            Self::Identity => Slope::Identity,
            Self::Relu => Slope::Uniform(0.0),
            Self::LeakyRelu(s) => Slope::Uniform(*s),
            Self::Prelu(a) => Slope::PerRow(a),
        }
    }
}

/// How a residual tensor joins a convolution's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// `act(conv(x) + r)` (ResNet).
    BeforeAct,
    /// `act(conv(x)) + r` (FPN, linear bottleneck shortcuts).
    AfterAct,
}

/// The CPU kernel of a convolution, built from its weights.
#[derive(Debug, Clone)]
enum CpuKernel {
    /// `groups == 1`: the kernel packed for the matrix-product kernels.
    Dense(PackedConv),
    /// Depthwise (`groups == in == out`): the `(C, 1, kh, kw)` kernel on the host.
    Depthwise(Vec<f32>),
}

/// Host-side data for the CPU path of a [`Conv2d`], built by its constructors.
#[derive(Debug, Clone)]
struct CpuParts {
    /// Id of the weight tensor these were built from.
    weight_id: TensorId,
    /// Id of the bias tensor these were built from.
    bias_id: TensorId,
    /// Packed or host kernel.
    kernel: CpuKernel,
    /// Kernel `(out, in / groups, kh, kw)`.
    dims: (usize, usize, usize, usize),
    /// Bias values on the host.
    bias: Vec<f32>,
}

impl CpuParts {
    /// Builds the parts for an f32 convolution on the CPU (ordinary or depthwise), `None` for
    /// anything else.
    fn build(weight: &Tensor, bias: &Tensor, geom: ConvGeom) -> Result<Option<Self>> {
        if !weight.device().is_cpu()
            || weight.dtype() != DType::F32
            || bias.dtype() != DType::F32
            || weight.rank() != 4
        {
            return Ok(None);
        }
        let dims = weight.dims4()?;
        let host = weight.flatten_all()?.to_vec1::<f32>()?;
        let kernel = if geom.groups == 1 {
            CpuKernel::Dense(
                PackedConv::pack(&host, dims, Isa::detect()).map_err(candle_core::Error::msg)?,
            )
        } else if geom.groups == dims.0 && dims.1 == 1 {
            CpuKernel::Depthwise(host)
        } else {
            return Ok(None);
        };
        Ok(Some(Self {
            weight_id: weight.id(),
            bias_id: bias.id(),
            kernel,
            dims,
            bias: bias.flatten_all()?.to_vec1::<f32>()?,
        }))
    }

    /// Whether these were built from the conv's current weight and bias.
    fn matches(&self, conv: &Conv2d) -> bool {
        self.weight_id == conv.weight.id() && self.bias_id == conv.bias.id()
    }
}

/// A 2-D convolution whose weight already includes any following BatchNorm, plus its bias.
///
/// On CPU with f32 it runs [`super::cpu`]'s kernels (ordinary convolutions as packed matrix
/// products, depthwise convolutions per plane) with the bias, the activation and an optional
/// residual join fused in. Elsewhere it uses candle's `conv2d` and tensor operations.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// Kernel, `(out, in / groups, kh, kw)`.
    pub weight: Tensor,
    /// Per-output-channel bias, `(out,)`.
    pub bias: Tensor,
    /// Stride, padding and groups.
    pub geom: ConvGeom,
    /// Precomputed CPU kernel data; rebuilt on the fly if `weight` or `bias` has been
    /// replaced since construction.
    cpu: Option<CpuParts>,
    /// Weight and bias converted to the dtype of the inputs, when that is not theirs (f16 on a
    /// GPU: `engine.precision`), made on the first such input.
    converted: std::sync::OnceLock<(Tensor, Tensor)>,
}

impl Conv2d {
    /// Builds a convolution from a kernel and an optional bias (zeros when absent).
    pub fn new(weight: Tensor, bias: Option<Tensor>, geom: ConvGeom) -> Result<Self> {
        let out = weight.dim(0)?;
        let bias = match bias {
            Some(b) => b,
            None => Tensor::zeros(out, weight.dtype(), weight.device())?,
        };
        let cpu = CpuParts::build(&weight, &bias, geom)?;
        Ok(Self {
            weight,
            bias,
            geom,
            cpu,
            converted: std::sync::OnceLock::new(),
        })
    }

    /// Weight and bias in `dtype`: the layer's own, or converted once (one other dtype).
    fn params(&self, dtype: DType) -> Result<(Tensor, Tensor)> {
        if dtype == self.weight.dtype() {
            return Ok((self.weight.clone(), self.bias.clone()));
        }
        if let Some((w, b)) = self.converted.get().filter(|(w, _)| w.dtype() == dtype) {
            return Ok((w.clone(), b.clone()));
        }
        let pair = (self.weight.to_dtype(dtype)?, self.bias.to_dtype(dtype)?);
        // Only the first other dtype is kept (a network runs in one precision).
        let _ = self.converted.set(pair.clone());
        Ok(pair)
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

    /// The convolution followed by `act`. Same results as `act.apply(&self.forward(x))`.
    pub fn forward_act(&self, x: &Tensor, act: &Activation) -> Result<Tensor> {
        self.forward_fused(x, act, None)
    }

    /// The convolution, `act` and a residual `r` shaped like the output, joined as `join`
    /// says: one pass on CPU with f32.
    pub fn forward_join(
        &self,
        x: &Tensor,
        act: &Activation,
        r: &Tensor,
        join: Join,
    ) -> Result<Tensor> {
        self.forward_fused(x, act, Some((r, join)))
    }

    fn forward_fused(
        &self,
        x: &Tensor,
        act: &Activation,
        res: Option<(&Tensor, Join)>,
    ) -> Result<Tensor> {
        let out = self.weight.dim(0)?;
        act.check_channels(out)?;
        let cpu_f32 = x.device().is_cpu()
            && x.dtype() == DType::F32
            && res.is_none_or(|(r, _)| r.device().is_cpu() && r.dtype() == DType::F32);
        if cpu_f32 {
            let built;
            let parts = match &self.cpu {
                Some(p) if p.matches(self) => Some(p),
                _ => {
                    built = CpuParts::build(&self.weight, &self.bias, self.geom)?;
                    built.as_ref()
                }
            };
            if let Some(parts) = parts {
                let op = ConvOp {
                    parts,
                    window: self.geom.window(),
                    act,
                    join: res.map(|(_, j)| j),
                };
                let x = x.contiguous()?;
                return match res {
                    None => x.apply_op1_no_bwd(&op),
                    Some((r, _)) => x.apply_op2_no_bwd(&r.contiguous()?, &op),
                };
            }
        }
        let g = self.geom;
        let (weight, bias) = self.params(x.dtype())?;
        let depthwise = g.groups > 1 && g.groups == out && weight.dim(1)? == 1;
        let y = if depthwise && x.device().is_cuda() && cuda_dtype(x.dtype()) {
            // candle's grouped conv2d runs one convolution per group: use our kernel.
            Depthwise {
                stride: g.stride,
                pad: g.pad,
            }
            .forward(x, &weight, &bias)?
        } else {
            x.conv2d(&weight, g.pad, g.stride, 1, g.groups)?
                .broadcast_add(&bias.reshape((1, out, 1, 1))?)?
        };
        match res {
            None => act.apply(&y),
            Some((r, Join::BeforeAct)) => act.apply(&(y + r)?),
            Some((r, Join::AfterAct)) => act.apply(&y)? + r,
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, &Activation::Identity)
    }
}

/// CPU op of [`Conv2d`]: every image of the batch in turn, on the calling thread.
struct ConvOp<'a> {
    /// Kernel data.
    parts: &'a CpuParts,
    /// Stride and padding.
    window: Window,
    /// Activation.
    act: &'a Activation,
    /// How the second operand (if any) joins.
    join: Option<Join>,
}

impl ConvOp<'_> {
    fn run(&self, x: &[f32], xl: &Layout, res: Option<&[f32]>) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let (out, in_per_group, kh, kw) = self.parts.dims;
        let depthwise_ok = matches!(self.parts.kernel, CpuKernel::Depthwise(_)) && c == out;
        if !depthwise_ok && c != in_per_group {
            candle_core::bail!(
                "conv2d: input {:?} does not fit kernel {:?}",
                xl.shape(),
                self.parts.dims
            );
        }
        let (hp, wp) = (h + 2 * self.window.pad, w + 2 * self.window.pad);
        if self.window.stride == 0 || hp < kh || wp < kw {
            candle_core::bail!(
                "conv2d: a {kh}x{kw} kernel with stride {} does not fit {h}x{w} (pad {})",
                self.window.stride,
                self.window.pad
            );
        }
        let (oh, ow) = (
            (hp - kh) / self.window.stride + 1,
            (wp - kw) / self.window.stride + 1,
        );
        let (in_len, out_len) = (c * h * w, out * oh * ow);
        if res.is_some_and(|r| r.len() != n * out_len) {
            candle_core::bail!("conv2d: residual does not match the output ({n}x{out}x{oh}x{ow})");
        }
        let mut y = vec![0f32; n * out_len];
        for i in 0..n {
            let xi = &x[i * in_len..(i + 1) * in_len];
            let yi = &mut y[i * out_len..(i + 1) * out_len];
            let epi = Epilogue {
                bias: Some(&self.parts.bias),
                slope: self.act.slope(),
                residual: res.map(|r| Residual {
                    data: &r[i * out_len..(i + 1) * out_len],
                    before_act: self.join == Some(Join::BeforeAct),
                }),
            };
            match &self.parts.kernel {
                CpuKernel::Dense(k) => k.run(xi, (h, w), self.window, yi, &epi),
                CpuKernel::Depthwise(k) => {
                    depthwise(xi, (c, h, w), k, (kh, kw), self.window, yi, &epi).map(|_| ())
                }
            }
            .map_err(|e| candle_core::Error::msg(format!("conv2d: {e}")))?;
        }
        Ok((CpuStorage::F32(y), Shape::from((n, out, oh, ow))))
    }
}

impl CustomOp1 for ConvOp<'_> {
    fn name(&self) -> &'static str {
        "conv2d-fused"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(cpu_f32(s, l, "conv2d: input")?, l, None)
    }
}

impl CustomOp2 for ConvOp<'_> {
    fn name(&self) -> &'static str {
        "conv2d-fused-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let r = cpu_f32(s2, l2, "conv2d: residual")?;
        self.run(cpu_f32(s1, l1, "conv2d: input")?, l1, Some(r))
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

impl ConvAct {
    /// The convolution and activation with a residual joined as `join` says.
    pub fn forward_join(&self, x: &Tensor, r: &Tensor, join: Join) -> Result<Tensor> {
        self.conv.forward_join(x, &self.act, r, join)
    }
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

    /// Applies the normalisation over dimension 1 of `x` (N,C) or (N,C,H,W), in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let scale = self.scale()?.to_dtype(x.dtype())?;
        let shift = (&self.beta - (&self.mean * &self.scale()?)?)?.to_dtype(x.dtype())?;
        let c = scale.dim(0)?;
        let shape: Vec<usize> = (0..x.rank()).map(|i| if i == 1 { c } else { 1 }).collect();
        x.broadcast_mul(&scale.reshape(shape.as_slice())?)?
            .broadcast_add(&shift.reshape(shape.as_slice())?)
    }
}

/// A fully connected layer `y = x W^T + b`; on CPU with f32, [`cpu::linear`].
#[derive(Debug, Clone)]
pub struct Linear {
    /// Weight, `(out, in)`.
    pub weight: Tensor,
    /// Optional bias, `(out,)`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Folds a BatchNorm over this layer's outputs into its weight and bias.
    pub fn fold_bn(self, bn: &BatchNorm) -> Result<Self> {
        let scale = bn.scale()?;
        let weight = self
            .weight
            .broadcast_mul(&scale.reshape((scale.dim(0)?, 1))?)?;
        let bias = match &self.bias {
            Some(b) => ((b - &bn.mean)? * &scale)?.add(&bn.beta)?,
            None => (bn.mean.neg()? * &scale)?.add(&bn.beta)?,
        };
        Ok(Self {
            weight,
            bias: Some(bias),
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let cpu_f32 = x.device().is_cpu()
            && x.dtype() == DType::F32
            && self.weight.dtype() == DType::F32
            && self.bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
        if cpu_f32 && x.rank() == 2 && self.weight.device().is_cpu() {
            let op = LinearOp {
                bias: self.bias.as_ref().map(|b| b.to_vec1::<f32>()).transpose()?,
            };
            return x
                .contiguous()?
                .apply_op2_no_bwd(&self.weight.contiguous()?, &op);
        }
        // In `x`'s dtype (f16 on a GPU converts the small weight on each call).
        let y = x.matmul(&self.weight.to_dtype(x.dtype())?.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.to_dtype(x.dtype())?),
            None => Ok(y),
        }
    }
}

/// CPU op of [`Linear`]: `(N, in)` inputs times the `(out, in)` weight (second operand).
struct LinearOp {
    /// Bias values, `(out,)`.
    bias: Option<Vec<f32>>,
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, "linear: input")?;
        let w = cpu_f32(s2, l2, "linear: weight")?;
        let (n, k) = l1.shape().dims2()?;
        let (o, wk) = l2.shape().dims2()?;
        if wk != k || self.bias.as_ref().is_some_and(|b| b.len() != o) {
            candle_core::bail!("linear: weight {:?} does not fit ({n}, {k})", l2.shape());
        }
        let mut y = vec![0f32; n * o];
        cpu::linear(x, w, self.bias.as_deref(), k, &mut y);
        Ok((CpuStorage::F32(y), Shape::from((n, o))))
    }
}

/// A network input as floats: f16, bf16 and f32 as they are (the network then computes in that
/// dtype), anything else (u8 pixels) as f32.
pub fn float_input(x: &Tensor) -> Result<Tensor> {
    match x.dtype() {
        DType::F16 | DType::BF16 | DType::F32 => Ok(x.clone()),
        _ => x.to_dtype(DType::F32),
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
        let mut out = a.to_vec();
        if plane > 0 {
            let epi = Epilogue::new(None, self.act.slope());
            let epi = Epilogue {
                residual: Some(Residual {
                    data: b,
                    before_act: true,
                }),
                ..epi
            };
            for (i, (dst, r)) in out
                .chunks_exact_mut(plane)
                .zip(b.chunks_exact(plane))
                .enumerate()
            {
                epi.apply_row(i % c, dst, Some(r));
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    /// Largest absolute difference of two tensors of the same shape (also used by the
    /// device ops' tests).
    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
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
    fn cpu_path_matches_candle_conv2d() {
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
            assert!(conv.cpu.is_some());
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
    fn residual_joins_match_separate_ops() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 6, 7, 5), &dev).unwrap();
        for (geom, k, groups) in [
            (ConvGeom::new(1, 0), 1, 1),
            (ConvGeom::new(1, 1), 3, 1),
            (ConvGeom::new(1, 1).grouped(6), 3, 6),
        ] {
            let out = if groups == 1 { 4 } else { 6 };
            let wt = Tensor::randn(0f32, 0.5, (out, 6 / groups, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 0.5, out, &dev).unwrap();
            let conv = Conv2d::new(wt, Some(b), geom).unwrap();
            let r = Tensor::randn(0f32, 1.0, (2, out, 7, 5), &dev).unwrap();
            for act in activations(out) {
                let plain = conv_reference(&x, &conv, &Activation::Identity);
                let before = act.apply(&(&plain + &r).unwrap()).unwrap();
                let after = (act.apply(&plain).unwrap() + &r).unwrap();
                let got = conv.forward_join(&x, &act, &r, Join::BeforeAct).unwrap();
                assert!(max_diff(&got, &before) < 1e-4, "before {act:?}");
                let got = conv.forward_join(&x, &act, &r, Join::AfterAct).unwrap();
                assert!(max_diff(&got, &after) < 1e-4, "after {act:?}");
            }
            let wrong = Tensor::zeros((2, out, 7, 4), DType::F32, &dev).unwrap();
            assert!(conv
                .forward_join(&x, &Activation::Relu, &wrong, Join::AfterAct)
                .is_err());
        }
    }

    #[test]
    fn linear_cpu_path_and_bn_folding_match_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 40), &dev).unwrap();
        let lin = Linear {
            weight: Tensor::randn(0f32, 0.5, (7, 40), &dev).unwrap(),
            bias: Some(Tensor::randn(0f32, 0.5, 7, &dev).unwrap()),
        };
        let want = x
            .matmul(&lin.weight.t().unwrap())
            .unwrap()
            .broadcast_add(lin.bias.as_ref().unwrap())
            .unwrap();
        assert!(max_diff(&lin.forward(&x).unwrap(), &want) < 1e-4);
        let bn = BatchNorm {
            gamma: Tensor::randn(1f32, 0.1, 7, &dev).unwrap(),
            beta: Tensor::randn(0f32, 0.1, 7, &dev).unwrap(),
            mean: Tensor::randn(0f32, 0.5, 7, &dev).unwrap(),
            var: Tensor::rand(0.5f32, 1.5, 7, &dev).unwrap(),
            eps: 1e-5,
        };
        let want = bn.forward(&want).unwrap();
        let folded = lin.fold_bn(&bn).unwrap();
        assert!(max_diff(&folded.forward(&x).unwrap(), &want) < 1e-4);
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
