//! Building blocks shared by every network: convolution with BatchNorm folded in, a
//! dedicated depthwise convolution, activations and linear layers.
//!
//! candle's `conv2d(.., groups)` runs one small convolution per group and concatenates, which
//! is very slow for depthwise layers (groups = channels). [`DepthwiseConv`] is a CPU custom op
//! that does the same arithmetic in one pass over each plane; on other devices the grouped path
//! is used so results stay identical.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Module, Result, Shape, Tensor, D};
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

/// A 2-D convolution whose weight already includes any following BatchNorm, plus its bias.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// Kernel, `(out, in / groups, kh, kw)`.
    pub weight: Tensor,
    /// Per-output-channel bias, `(out,)`.
    pub bias: Tensor,
    /// Stride, padding and groups.
    pub geom: ConvGeom,
}

impl Conv2d {
    /// Builds a convolution from a kernel and an optional bias (zeros when absent).
    pub fn new(weight: Tensor, bias: Option<Tensor>, geom: ConvGeom) -> Result<Self> {
        let out = weight.dim(0)?;
        let bias = match bias {
            Some(b) => b,
            None => Tensor::zeros(out, weight.dtype(), weight.device())?,
        };
        Ok(Self { weight, bias, geom })
    }

    /// Folds an inference-mode BatchNorm (`gamma, beta, mean, var, eps`) into this convolution.
    pub fn fold_bn(self, bn: &BatchNorm) -> Result<Self> {
        let scale = bn.scale()?;
        let weight = self
            .weight
            .broadcast_mul(&scale.reshape((scale.dim(0)?, 1, 1, 1))?)?;
        let bias = ((&self.bias - &bn.mean)? * &scale)?.add(&bn.beta)?;
        Ok(Self {
            weight,
            bias,
            geom: self.geom,
        })
    }

    /// Number of output channels.
    pub fn out_channels(&self) -> Result<usize> {
        self.weight.dim(0)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let in_ch = x.dim(1)?;
        let g = self.geom;
        if g.groups > 1 && g.groups == in_ch && self.weight.dim(1)? == 1 {
            return depthwise_conv2d(x, &self.weight, &self.bias, g.stride, g.pad);
        }
        let y = x.conv2d(&self.weight, g.pad, g.stride, 1, g.groups)?;
        y.broadcast_add(&self.bias.reshape((1, self.bias.dim(0)?, 1, 1))?)
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
}

fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("depthwise conv: {what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("depthwise conv: {what} must be contiguous"),
    }
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
        let x = cpu_f32(s1, l1, "input")?;
        let w = cpu_f32(s2, l2, "kernel")?;
        let b = cpu_f32(s3, l3, "bias")?;
        let (n, c, h, wd) = l1.shape().dims4()?;
        let (kc, one, kh, kw) = l2.shape().dims4()?;
        if kc != c || one != 1 || b.len() != c {
            candle_core::bail!(
                "depthwise conv: kernel {:?} does not fit {c} channels",
                l2.shape()
            );
        }
        let (oh, ow) = (self.out_len(h, kh), self.out_len(wd, kw));
        let (s, p) = (self.stride as isize, self.pad as isize);
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .enumerate()
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
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// Global average pool: `(N,C,H,W) -> (N,C)`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean(D::Minus1)?.mean(D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grouped_reference(x: &Tensor, w: &Tensor, b: &Tensor, s: usize, p: usize) -> Tensor {
        let c = x.dim(1).unwrap();
        x.conv2d(w, p, s, 1, c)
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
    }

    #[test]
    fn depthwise_matches_grouped_conv() {
        let dev = Device::Cpu;
        for &(n, c, h, w, k, s, p) in &[
            (2, 5, 9, 7, 3, 1, 1),
            (1, 4, 10, 10, 3, 2, 1),
            (3, 3, 8, 11, 5, 1, 0),
            (1, 2, 7, 7, 3, 2, 0),
            (1, 6, 5, 5, 5, 1, 2),
        ] {
            let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, c, &dev).unwrap();
            let got = depthwise_conv2d(&x, &wt, &b, s, p).unwrap();
            let want = grouped_reference(&x, &wt, &b, s, p);
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                diff < 1e-4,
                "max diff {diff} for {:?}",
                (n, c, h, w, k, s, p)
            );
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
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "max diff {diff}");
    }
}
