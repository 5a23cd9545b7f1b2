//! Single-threaded f32 CPU kernels behind the networks' layers.
//!
//! - [`gemm`]: a matrix product against weights packed once at load time, with the layer's
//!   bias, activation and residual join applied while the sums are still in registers. It runs
//!   every ordinary convolution ([`conv`]: 1x1 directly on the input, stride-1 kxk as an
//!   implicit product over a padded copy, anything else over im2col columns).
//! - [`depthwise`]: depthwise convolution with the same epilogue.
//! - [`linear`]: small fully connected layers.
//!
//! Each kernel has an AVX-512 path, an AVX2 + FMA path and a portable path, picked once at run
//! time ([`Isa::detect`]); all three compute the same function (sums in a different order, so
//! results agree to float rounding) and tests compare them.
//!
//! Kernels never spawn threads: the engine runs the images of a batch on its own pool, which
//! costs one synchronisation per network call instead of one per layer.

pub mod conv;
pub mod depthwise;
pub mod gemm;

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

/// Instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F (16 f32 lanes).
    Avx512,
    /// AVX2 with FMA (8 f32 lanes).
    Avx2,
    /// Plain Rust, any target.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU supports, found once. The environment variable
    /// `FACEGATE_CPU_KERNELS` (`avx512`, `avx2` or `portable`) may pick a lower one, e.g. to
    /// measure or test a path; an unsupported choice falls back to the detected one.
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let best = Self::available()[0];
            match std::env::var("FACEGATE_CPU_KERNELS").ok().as_deref() {
                Some("avx512") if Self::Avx512.supported() => Self::Avx512,
                Some("avx2") if Self::Avx2.supported() => Self::Avx2,
                Some("portable") => Self::Portable,
                _ => best,
            }
        })
    }

    /// Whether this CPU can run kernels of this instruction set.
    pub fn supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx512 | Self::Avx2 => false,
            Self::Portable => true,
        }
    }

    /// Every instruction set this CPU supports, best first (always ends with `Portable`).
    pub fn available() -> Vec<Isa> {
        [Self::Avx512, Self::Avx2, Self::Portable]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
    }

    /// Label for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Portable => "portable",
        }
    }
}

/// Negative-side slope of the activation after a layer: every activation the networks use is
/// `x` for `x >= 0` and `slope * x` below (ReLU: 0, LeakyReLU: its slope, PReLU: one slope per
/// channel).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slope<'a> {
    /// No activation.
    Identity,
    /// The same slope for every channel.
    Uniform(f32),
    /// One slope per output row (channel).
    PerRow(&'a [f32]),
}

impl Slope<'_> {
    /// The slope of row `r`, `None` for the identity.
    #[inline]
    pub fn of_row(&self, r: usize) -> Option<f32> {
        match self {
            Self::Identity => None,
            Self::Uniform(s) => Some(*s),
            Self::PerRow(s) => Some(s[r]),
        }
    }
}

/// A tensor added to a layer's output, laid out like the output.
#[derive(Debug, Clone, Copy)]
pub struct Residual<'a> {
    /// Values, same layout (rows and row stride) as the output.
    pub data: &'a [f32],
    /// Added before the activation (`act(y + r)`, a ResNet join) instead of after it
    /// (`act(y) + r`, an FPN join or a linear bottleneck's shortcut).
    pub before_act: bool,
}

/// What happens to each output value after its sum: `+ bias[row]`, then the activation, with
/// an optional residual added before or after it.
#[derive(Debug, Clone, Copy)]
pub struct Epilogue<'a> {
    /// Per-row bias, `None` for none.
    pub bias: Option<&'a [f32]>,
    /// Activation.
    pub slope: Slope<'a>,
    /// Residual join.
    pub residual: Option<Residual<'a>>,
}

impl<'a> Epilogue<'a> {
    /// Raw sums: no bias, no activation, no residual.
    pub const RAW: Epilogue<'static> = Epilogue {
        bias: None,
        slope: Slope::Identity,
        residual: None,
    };

    /// Bias and activation, no residual.
    pub fn new(bias: Option<&'a [f32]>, slope: Slope<'a>) -> Self {
        Self {
            bias,
            slope,
            residual: None,
        }
    }

    /// Checks that the bias, slopes and residual cover `rows` rows of `p` values spaced
    /// `stride` apart.
    pub(crate) fn check(&self, rows: usize, p: usize, stride: usize) -> Result<(), String> {
        if self.bias.is_some_and(|b| b.len() < rows) {
            return Err(format!("bias has fewer than {rows} values"));
        }
        if let Slope::PerRow(s) = self.slope {
            if s.len() < rows {
                return Err(format!("activation has {} slopes for {rows} rows", s.len()));
            }
        }
        if let Some(r) = self.residual {
            if rows > 0 && p > 0 && r.data.len() < (rows - 1) * stride + p {
                return Err("residual is smaller than the output".into());
            }
        }
        Ok(())
    }

    /// Applies the epilogue of row `row` to `dst` (raw sums), reading the residual of that row
    /// from `res` (same length as `dst`) when there is one. Scalar reference and the finishing
    /// pass of implicit convolutions.
    #[inline]
    pub(crate) fn apply_row(&self, row: usize, dst: &mut [f32], res: Option<&[f32]>) {
        let b = self.bias.map_or(0.0, |b| b[row]);
        let slope = self.slope.of_row(row);
        let before = self.residual.is_some_and(|r| r.before_act);
        match (res, slope) {
            (None, None) => dst.iter_mut().for_each(|v| *v += b),
            (None, Some(s)) => dst.iter_mut().for_each(|v| *v = leaky(*v + b, s)),
            (Some(r), None) => dst.iter_mut().zip(r).for_each(|(v, r)| *v += b + r),
            (Some(r), Some(s)) if before => dst
                .iter_mut()
                .zip(r)
                .for_each(|(v, r)| *v = leaky(*v + b + r, s)),
            (Some(r), Some(s)) => dst
                .iter_mut()
                .zip(r)
                .for_each(|(v, r)| *v = leaky(*v + b, s) + r),
        }
    }
}

/// `x` for `x >= 0`, else `s * x`.
#[inline(always)]
pub(crate) fn leaky(x: f32, s: f32) -> f32 {
    if x >= 0.0 {
        x
    } else {
        x * s
    }
}

/// A reusable per-thread buffer for padded copies and im2col columns. Its contents are
/// whatever the previous user left: callers write every value they read.
pub(crate) struct Scratch {
    buf: Vec<f32>,
}

thread_local! {
    /// Buffers returned by dropped [`Scratch`]es on this thread.
    static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Most buffers a thread keeps for reuse.
const KEEP_BUFFERS: usize = 4;

impl Scratch {
    /// A buffer of `len` values (stale contents).
    pub(crate) fn take(len: usize) -> Self {
        let mut buf = FREE.with(|f| f.borrow_mut().pop()).unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        buf.truncate(len);
        Self { buf }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        FREE.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < KEEP_BUFFERS {
                f.push(buf);
            }
        });
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf
    }
}

/// `y[n][o] = bias[o] + sum_k w[o][k] * x[n][k]` for `x (N, K)`, `w (O, K)`, `y (N, O)`.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, k: usize, y: &mut [f32]) {
    if k == 0 {
        return;
    }
    let o = w.len() / k;
    for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(o.max(1))) {
        for (j, (wr, out)) in w.chunks_exact(k).zip(yr.iter_mut()).enumerate() {
            *out = dot(xr, wr) + bias.map_or(0.0, |b| b[j]);
        }
    }
}

/// Dot product with eight partial sums (vectorises on any target).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Deterministic test values in `[-0.5, 0.5)`, different for each `seed`.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 1009) as f32 / 1009.0) - 0.5)
        .collect()
}

/// Every kind of epilogue: none, uniform and per-row slopes, residuals before and after the
/// activation.
#[cfg(test)]
pub(crate) fn test_epilogues<'a>(
    bias: &'a [f32],
    slopes: &'a [f32],
    res: &'a [f32],
) -> Vec<Epilogue<'a>> {
    let join = |before_act| Residual {
        data: res,
        before_act,
    };
    vec![
        Epilogue::RAW,
        Epilogue::new(Some(bias), Slope::Uniform(0.1)),
        Epilogue::new(Some(bias), Slope::PerRow(slopes)),
        Epilogue {
            residual: Some(join(true)),
            ..Epilogue::new(Some(bias), Slope::Uniform(0.0))
        },
        Epilogue {
            residual: Some(join(false)),
            ..Epilogue::new(None, Slope::PerRow(slopes))
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_is_always_available_and_last() {
        let a = Isa::available();
        assert_eq!(a.last(), Some(&Isa::Portable));
        assert!(a.contains(&Isa::detect()));
    }

    #[test]
    fn epilogue_orders_residual_and_activation() {
        let bias = [1.0f32];
        let res = [-3.0f32, 3.0];
        let mut before = [-2.0f32, 0.5];
        let mut after = before;
        let e = |before_act| Epilogue {
            bias: Some(&bias),
            slope: Slope::Uniform(0.5),
            residual: Some(Residual {
                data: &res,
                before_act,
            }),
        };
        e(true).apply_row(0, &mut before, Some(&res));
        e(false).apply_row(0, &mut after, Some(&res));
        // before: leaky(-2 + 1 - 3) = -2, leaky(0.5 + 1 + 3) = 4.5
        assert_eq!(before, [-2.0, 4.5]);
        // after: leaky(-1) - 3 = -3.5, leaky(1.5) + 3 = 4.5
        assert_eq!(after, [-3.5, 4.5]);
    }

    #[test]
    fn linear_matches_naive() {
        let (n, k, o) = (3, 37, 5);
        let x: Vec<f32> = (0..n * k).map(|i| (i % 11) as f32 - 5.0).collect();
        let w: Vec<f32> = (0..o * k).map(|i| (i % 7) as f32 * 0.25).collect();
        let b: Vec<f32> = (0..o).map(|i| i as f32).collect();
        let mut y = vec![0f32; n * o];
        linear(&x, &w, Some(&b), k, &mut y);
        for i in 0..n {
            for j in 0..o {
                let want: f32 = b[j] + (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum::<f32>();
                assert!((y[i * o + j] - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn scratch_buffers_are_reused_and_sized() {
        let p = {
            let s = Scratch::take(100);
            assert_eq!(s.len(), 100);
            s.as_ptr()
        };
        let s = Scratch::take(50);
        assert_eq!(s.len(), 50);
        assert_eq!(s.as_ptr(), p);
    }
}
