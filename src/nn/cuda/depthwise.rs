//! Depthwise convolution (`groups == in == out`, kernel `(C, 1, kh, kw)`) with its bias, as one
//! custom op: on CUDA the `depthwise_f32` / `depthwise_f16` kernels of `kernels/depthwise.cu`
//! (candle's grouped `conv2d` runs one convolution per channel); on CPU a plain loop in the
//! kernel's order, its twin. The f32 CPU path of the networks uses the SIMD kernels of
//! [`crate::nn::cpu`] instead; this op is what runs on a GPU.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// The op: stride and zero padding on every side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depthwise {
    /// Step between output samples.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

/// Geometry of one call: `(n, c, h, w)` in, `(kh, kw)` kernel, `(oh, ow)` out.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
}

impl Depthwise {
    /// `conv(x, weight) + bias` for `x (N, C, H, W)`, `weight (C, 1, kh, kw)`, `bias (C)`.
    pub fn forward(&self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        x.contiguous()?
            .apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, self)
    }

    fn dims(&self, x: &Layout, k: &Layout, b: &Layout) -> Result<Dims> {
        let (n, c, h, w) = x.shape().dims4()?;
        let (kc, one, kh, kw) = k.shape().dims4()?;
        let bc = b.shape().dims1()?;
        if kc != c || one != 1 || bc != c {
            candle_core::bail!(
                "depthwise: kernel {:?} and bias {:?} do not fit {c} channels",
                k.shape(),
                b.shape()
            );
        }
        let (hp, wp) = (h + 2 * self.pad, w + 2 * self.pad);
        if self.stride == 0 || kh == 0 || kw == 0 || hp < kh || wp < kw {
            candle_core::bail!(
                "depthwise: a {kh}x{kw} kernel with stride {} does not fit {h}x{w}",
                self.stride
            );
        }
        let (oh, ow) = ((hp - kh) / self.stride + 1, (wp - kw) / self.stride + 1);
        let fits_i32 = |v: usize| i32::try_from(v).is_ok();
        if ![n, c, h, w, kh, kw, oh, ow, self.stride, self.pad]
            .into_iter()
            .all(fits_i32)
        {
            candle_core::bail!("depthwise: dimensions beyond i32");
        }
        Ok(Dims {
            n,
            c,
            h,
            w,
            kh,
            kw,
            oh,
            ow,
        })
    }

    /// The CPU twin of the kernel on contiguous f32 slices, in the kernel's summation order.
    fn run_f32(&self, d: Dims, x: &[f32], k: &[f32], b: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; d.n * d.c * d.oh * d.ow];
        for (i, out) in y.iter_mut().enumerate() {
            let ox = i % d.ow;
            let oy = (i / d.ow) % d.oh;
            let ch = (i / (d.ow * d.oh)) % d.c;
            let img = i / (d.ow * d.oh * d.c);
            let plane = &x[(img * d.c + ch) * d.h * d.w..][..d.h * d.w];
            let ker = &k[ch * d.kh * d.kw..][..d.kh * d.kw];
            let mut acc = 0f32;
            for ky in 0..d.kh {
                let Some(iy) = (oy * self.stride + ky).checked_sub(self.pad) else {
                    continue;
                };
                if iy >= d.h {
                    continue;
                }
                for kx in 0..d.kw {
                    let Some(ix) = (ox * self.stride + kx).checked_sub(self.pad) else {
                        continue;
                    };
                    if ix < d.w {
                        acc += plane[iy * d.w + ix] * ker[ky * d.kw + kx];
                    }
                }
            }
            *out = acc + b[ch];
        }
        y
    }
}

/// The contiguous part of `s` that `l` describes.
fn contiguous<'a, T>(s: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) if b <= s.len() => Ok(&s[a..b]),
        _ => candle_core::bail!("depthwise: operands must be contiguous"),
    }
}

impl CustomOp3 for Depthwise {
    fn name(&self) -> &'static str {
        "facegate-depthwise"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.dims(xl, kl, bl)?;
        let shape = Shape::from((d.n, d.c, d.oh, d.ow));
        match (xs, ks, bs) {
            (CpuStorage::F32(x), CpuStorage::F32(k), CpuStorage::F32(b)) => {
                let y = self.run_f32(
                    d,
                    contiguous(x, xl)?,
                    contiguous(k, kl)?,
                    contiguous(b, bl)?,
                );
                Ok((CpuStorage::F32(y), shape))
            }
            _ => Err(candle_core::Error::UnsupportedDTypeForOp(
                xs.dtype(),
                "depthwise (CPU twin: f32 only)",
            )),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};
        use candle_core::cuda_backend::{CudaStorageSlice as S, WrapErr};

        let d = self.dims(xl, kl, bl)?;
        let dev = xs.device.clone();
        let total = d.n * d.c * d.oh * d.ow;
        let ints = [
            d.n,
            d.c,
            d.h,
            d.w,
            d.kh,
            d.kw,
            self.stride,
            self.pad,
            d.oh,
            d.ow,
        ]
        .map(|v| v as i32);
        fn view<'a, T: DeviceRepr>(
            s: &'a CudaSlice<T>,
            l: &Layout,
        ) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
            match l.contiguous_offsets() {
                Some((a, b)) => Ok(s.slice(a..b)),
                None => candle_core::bail!("depthwise: operands must be contiguous"),
            }
        }
        /// One launch of `name` on contiguous views of the three operands.
        fn launch<T: DeviceRepr>(
            dev: &candle_core::cuda_backend::CudaDevice,
            name: &str,
            (x, k, b): (&CudaSlice<T>, &CudaSlice<T>, &CudaSlice<T>),
            (xl, kl, bl): (&Layout, &Layout, &Layout),
            total: usize,
            ints: &[i32; 10],
        ) -> Result<CudaSlice<T>> {
            let (x, k, b) = (view(x, xl)?, view(k, kl)?, view(b, bl)?);
            // SAFETY: the kernel writes every one of the `total` elements.
            let mut y = unsafe { dev.alloc::<T>(total)? };
            let f =
                dev.get_or_load_custom_func(name, "facegate_depthwise", super::DEPTHWISE_PTX)?;
            let mut args = f.builder();
            args.arg(&x).arg(&k).arg(&b).arg(&mut y);
            for v in ints {
                args.arg(v);
            }
            // SAFETY: the arguments match the kernel's signature (`T` is its element type) and
            // the sizes checked in `dims`; the grid-stride loop stays below `total`.
            unsafe { args.launch(super::launch_for(total)) }.w()?;
            Ok(y)
        }
        let layouts = (xl, kl, bl);
        let slice = match (&xs.slice, &ks.slice, &bs.slice) {
            (S::F32(x), S::F32(k), S::F32(b)) => S::F32(launch(
                &dev,
                "depthwise_f32",
                (x, k, b),
                layouts,
                total,
                &ints,
            )?),
            (S::F16(x), S::F16(k), S::F16(b)) => S::F16(launch(
                &dev,
                "depthwise_f16",
                (x, k, b),
                layouts,
                total,
                &ints,
            )?),
            _ => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    xs.dtype(),
                    "depthwise (CUDA: f32 or f16, all three operands alike)",
                ))
            }
        };
        Ok((
            candle_core::CudaStorage { slice, device: dev },
            Shape::from((d.n, d.c, d.oh, d.ow)),
        ))
    }
}

/// Whether `dtype` has a depthwise kernel on CUDA.
pub fn cuda_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn ramp(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn twin_matches_candles_grouped_convolution() {
        let dev = Device::Cpu;
        for (stride, pad, k, h, w) in [
            (1, 1, 3, 9, 7),
            (2, 1, 3, 10, 11),
            (1, 0, 5, 5, 5),
            (2, 2, 5, 8, 6),
        ] {
            let c = 4;
            let x = Tensor::from_vec(ramp(2 * c * h * w, 7), (2, c, h, w), &dev).unwrap();
            let kt = Tensor::from_vec(ramp(c * k * k, 11), (c, 1, k, k), &dev).unwrap();
            let b = Tensor::from_vec(ramp(c, 13), c, &dev).unwrap();
            let ours = Depthwise { stride, pad }.forward(&x, &kt, &b).unwrap();
            let theirs = x
                .conv2d(&kt, pad, stride, 1, c)
                .unwrap()
                .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
                .unwrap();
            let diff = crate::nn::layers::tests::max_diff(&ours, &theirs);
            assert!(diff < 1e-5, "stride {stride} pad {pad} k {k}: {diff}");
        }
    }

    #[test]
    fn refuses_shapes_that_do_not_fit() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &dev).unwrap();
        let k = Tensor::zeros((4, 1, 3, 3), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(3, DType::F32, &dev).unwrap();
        let e = Depthwise { stride: 1, pad: 1 }
            .forward(&x, &k, &b)
            .unwrap_err();
        assert!(e.to_string().contains("do not fit 3 channels"), "{e}");
        let k = Tensor::zeros((3, 1, 7, 7), DType::F32, &dev).unwrap();
        let e = Depthwise { stride: 1, pad: 0 }
            .forward(&x, &k, &b)
            .unwrap_err();
        assert!(e.to_string().contains("does not fit 4x4"), "{e}");
    }
}
