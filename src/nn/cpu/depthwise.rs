//! Depthwise convolution of one image (one kxk kernel per channel) with the layer's
//! epilogue.
//!
//! Each channel's zero-padded plane is split into `stride` column phases (phase `r` holds
//! padded columns `r, r + stride, ...`; one phase when the stride is 1), each `ws` wide.
//! Output pixel `(y, x)` at "virtual" index `v = y * stride * ws + x` then reads tap
//! `(ky, kx)` at `v + ky * ws + kx / stride` of phase `kx % stride`: every tap is one
//! contiguous run of values, whatever the stride or plane size. The SIMD paths keep 64 (AVX-512)
//! or 32 (AVX2) outputs in registers across all taps; the portable path makes one pass per
//! tap. Columns of the virtual rows past `ow` are dropped when rows are compacted, which is also
//! when the bias and activation are applied.

use super::conv::Window;
use super::{Epilogue, Isa, Scratch};

/// Zeros kept past the phase planes, so that whole-vector reads past the last output never
/// leave the buffer (their results land in dropped columns).
const SPARE: usize = 64;

/// Convolves one image `x (c, h, w)` with `k (c, 1, kh, kw)` into `out (c, oh, ow)` and
/// applies `epi` per channel. Returns `(oh, ow)`.
pub fn depthwise(
    x: &[f32],
    dims: (usize, usize, usize),
    k: &[f32],
    ksize: (usize, usize),
    win: Window,
    out: &mut [f32],
    epi: &Epilogue,
) -> Result<(usize, usize), String> {
    depthwise_with(Isa::detect(), x, dims, k, ksize, win, out, epi)
}

/// [`depthwise`] with the passes compiled for `isa` (an error if this CPU lacks it).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_with(
    isa: Isa,
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    k: &[f32],
    (kh, kw): (usize, usize),
    win: Window,
    out: &mut [f32],
    epi: &Epilogue,
) -> Result<(usize, usize), String> {
    if !isa.supported() {
        return Err(format!("{} kernels are not supported here", isa.name()));
    }
    let (hp, wp) = (h + 2 * win.pad, w + 2 * win.pad);
    if win.stride == 0 || hp < kh || wp < kw || kh == 0 || kw == 0 {
        return Err(format!(
            "a {kh}x{kw} kernel with stride {} does not fit {h}x{w}",
            win.stride
        ));
    }
    let (oh, ow) = ((hp - kh) / win.stride + 1, (wp - kw) / win.stride + 1);
    if x.len() != c * h * w || k.len() != c * kh * kw || out.len() != c * oh * ow {
        return Err(format!(
            "depthwise operands do not fit {c}x{h}x{w} with {kh}x{kw} kernels"
        ));
    }
    epi.check(c, oh * ow, oh * ow)?;
    if c == 0 || oh * ow == 0 {
        return Ok((oh, ow));
    }
    let s = win.stride;
    let ws = wp.div_ceil(s);
    let g = Geometry {
        h,
        w,
        pad: win.pad,
        stride: s,
        hp,
        ws,
        oh,
        ow,
        pitch: s * ws,
        taps: (0..kh * kw)
            .map(|t| {
                let (ky, kx) = (t / kw, t % kw);
                (kx % s) * hp * ws + ky * ws + kx / s
            })
            .collect(),
    };
    let pv = (oh - 1) * g.pitch + ow;
    let mut phases = Scratch::take(s * hp * ws + SPARE);
    phases[s * hp * ws..].fill(0.0);
    let mut wide = Scratch::take(pv.next_multiple_of(SPARE));
    // The SIMD passes read `wide.len()` values from every tap's offset.
    if g.taps.iter().any(|&t| t + wide.len() > phases.len()) {
        return Err("depthwise: tap runs overrun the phase buffer".into());
    }
    let mut bufs = Buffers {
        phases: &mut phases,
        wide: &mut wide,
        pv,
    };
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is supported (checked above) and the buffers were checked to hold
        // every tap run rounded up to whole vectors.
        Isa::Avx512 => unsafe { x86::channels512(x, (c, kh * kw), k, out, epi, &g, &mut bufs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, with AVX2 and FMA.
        Isa::Avx2 => unsafe { x86::channels256(x, (c, kh * kw), k, out, epi, &g, &mut bufs) },
        _ => channels(x, (c, kh * kw), k, out, epi, &g, &mut bufs, |p, t, k, w| {
            taps_portable(p, t, k, &mut w[..pv])
        }),
    }
    Ok((oh, ow))
}

/// Checked sizes of one call.
struct Geometry {
    /// Input height and width.
    h: usize,
    w: usize,
    /// Zero padding.
    pad: usize,
    /// Stride (number of phases).
    stride: usize,
    /// Padded height (rows of each phase).
    hp: usize,
    /// Width of each phase.
    ws: usize,
    /// Output height and width.
    oh: usize,
    ow: usize,
    /// Virtual row pitch of the output, `stride * ws`.
    pitch: usize,
    /// Offset of each tap's run in the phase buffer.
    taps: Vec<usize>,
}

/// Per-call scratch: the phase planes of one channel and its output at padded width.
struct Buffers<'a> {
    /// Phase planes (plus [`SPARE`] zeros).
    phases: &'a mut [f32],
    /// Output at virtual width, a multiple of [`SPARE`] long.
    wide: &'a mut [f32],
    /// Virtual outputs that matter (the rest of `wide` is padding).
    pv: usize,
}

/// Every channel: split into phases, sum the taps with `taps`, compact the rows with the
/// epilogue. Inlined into each instruction set's entry point so all of it is compiled for it.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn channels(
    x: &[f32],
    (c, ntaps): (usize, usize),
    k: &[f32],
    out: &mut [f32],
    epi: &Epilogue,
    g: &Geometry,
    b: &mut Buffers,
    taps: impl Fn(&[f32], &[usize], &[f32], &mut [f32]),
) {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    for ch in 0..c {
        split_phases(&x[ch * plane_in..(ch + 1) * plane_in], g, b.phases);
        taps(b.phases, &g.taps, &k[ch * ntaps..(ch + 1) * ntaps], b.wide);
        let dst = &mut out[ch * plane_out..(ch + 1) * plane_out];
        for (y, row) in dst.chunks_exact_mut(g.ow).enumerate() {
            row.copy_from_slice(&b.wide[y * g.pitch..y * g.pitch + g.ow]);
            let at = ch * plane_out + y * g.ow;
            let res = epi.residual.map(|r| &r.data[at..at + g.ow]);
            epi.apply_row(ch, row, res);
        }
    }
    debug_assert!(b.pv <= b.wide.len());
}

/// Writes the padded plane of one channel as `stride` phases of `hp x ws` (zeros outside the
/// input).
fn split_phases(src: &[f32], g: &Geometry, dst: &mut [f32]) {
    let (s, ws, p) = (g.stride, g.ws, g.pad);
    for r in 0..s {
        let phase = &mut dst[r * g.hp * ws..(r + 1) * g.hp * ws];
        for (y, row) in phase.chunks_exact_mut(ws).enumerate() {
            let Some(iy) = y.checked_sub(p).filter(|&iy| iy < g.h) else {
                row.fill(0.0);
                continue;
            };
            let srow = &src[iy * g.w..(iy + 1) * g.w];
            // Phase column j is padded column s * j + r, input column s * j + r - p.
            let lo = p.saturating_sub(r).div_ceil(s).min(ws);
            let hi = (p + g.w).saturating_sub(r).div_ceil(s).clamp(lo, ws);
            row[..lo].fill(0.0);
            row[hi..].fill(0.0);
            if hi > lo {
                let first = s * lo + r - p;
                let dst = &mut row[lo..hi];
                let run = &srow[first..first + s * (dst.len() - 1) + 1];
                match s {
                    1 => dst.copy_from_slice(run),
                    2 => {
                        // Pairs as chunks: an interleaved load the compiler vectorises.
                        let pairs = run.len() / 2;
                        for (d, c) in dst.iter_mut().zip(run.chunks_exact(2)) {
                            *d = c[0];
                        }
                        if dst.len() > pairs {
                            dst[pairs] = run[2 * pairs];
                        }
                    }
                    _ => {
                        for (j, d) in dst.iter_mut().enumerate() {
                            *d = run[s * j];
                        }
                    }
                }
            }
        }
    }
}

/// `wide[v] = sum_t k[t] * phases[taps[t] + v]`, one pass per tap.
fn taps_portable(phases: &[f32], taps: &[usize], k: &[f32], wide: &mut [f32]) {
    wide.fill(0.0);
    let n = wide.len();
    for (&off, &kv) in taps.iter().zip(k) {
        for (o, &v) in wide.iter_mut().zip(&phases[off..off + n]) {
            *o += kv * v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Register-blocked tap sums and the per-instruction-set entry points.

    use std::arch::x86_64::*;

    use super::{channels, Buffers, Epilogue, Geometry};

    /// [`channels`] compiled for AVX-512 with [`taps512`].
    ///
    /// # Safety
    /// AVX-512F must be supported and `b` must satisfy [`taps512`]'s size rules.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn channels512(
        x: &[f32],
        ct: (usize, usize),
        k: &[f32],
        out: &mut [f32],
        epi: &Epilogue,
        g: &Geometry,
        b: &mut Buffers,
    ) {
        // SAFETY: forwarded from the caller.
        channels(x, ct, k, out, epi, g, b, |p, t, k, w| unsafe {
            taps512(p, t, k, w)
        })
    }

    /// [`channels`] compiled for AVX2 with [`taps256`].
    ///
    /// # Safety
    /// AVX2 and FMA must be supported and `b` must satisfy [`taps256`]'s size rules.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn channels256(
        x: &[f32],
        ct: (usize, usize),
        k: &[f32],
        out: &mut [f32],
        epi: &Epilogue,
        g: &Geometry,
        b: &mut Buffers,
    ) {
        // SAFETY: forwarded from the caller.
        channels(x, ct, k, out, epi, g, b, |p, t, k, w| unsafe {
            taps256(p, t, k, w)
        })
    }

    /// `wide[v] = sum_t k[t] * phases[taps[t] + v]` for every `v < wide.len()`, 64 at a time
    /// with four accumulators.
    ///
    /// # Safety
    /// AVX-512F must be supported; `wide.len()` must be a multiple of 64 and every
    /// `taps[t] + wide.len()` at most `phases.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn taps512(phases: &[f32], taps: &[usize], k: &[f32], wide: &mut [f32]) {
        let src = phases.as_ptr();
        let dst = wide.as_mut_ptr();
        for v in (0..wide.len()).step_by(64) {
            let mut a = [_mm512_setzero_ps(); 4];
            for (&off, &kv) in taps.iter().zip(k) {
                let kv = _mm512_set1_ps(kv);
                let p = src.add(off + v);
                for (i, a) in a.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(kv, _mm512_loadu_ps(p.add(16 * i)), *a);
                }
            }
            for (i, a) in a.iter().enumerate() {
                _mm512_storeu_ps(dst.add(v + 16 * i), *a);
            }
        }
    }

    /// [`taps512`] with AVX2: 32 outputs at a time.
    ///
    /// # Safety
    /// AVX2 and FMA must be supported; sizes as for [`taps512`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn taps256(phases: &[f32], taps: &[usize], k: &[f32], wide: &mut [f32]) {
        let src = phases.as_ptr();
        let dst = wide.as_mut_ptr();
        for v in (0..wide.len()).step_by(32) {
            let mut a = [_mm256_setzero_ps(); 4];
            for (&off, &kv) in taps.iter().zip(k) {
                let kv = _mm256_set1_ps(kv);
                let p = src.add(off + v);
                for (i, a) in a.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(kv, _mm256_loadu_ps(p.add(8 * i)), *a);
                }
            }
            for (i, a) in a.iter().enumerate() {
                _mm256_storeu_ps(dst.add(v + 8 * i), *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Slope;
    use super::*;

    #[test]
    fn matches_the_definition_for_every_geometry_and_isa() {
        for (isa, &(c, h, w, k, stride, pad)) in Isa::available().into_iter().flat_map(|i| {
            [
                (3, 9, 8, 3, 1, 1),
                (4, 10, 10, 3, 2, 1),
                (5, 5, 5, 5, 1, 0),
                (2, 11, 7, 3, 2, 1),
                (2, 12, 9, 3, 2, 0),
                (3, 1, 1, 3, 1, 1),
                (2, 4, 6, 1, 1, 0),
                (2, 13, 11, 3, 3, 1),
                (3, 8, 8, 5, 2, 2),
            ]
            .iter()
            .map(move |g| (i, g))
            .collect::<Vec<_>>()
        }) {
            let x: Vec<f32> = (0..c * h * w)
                .map(|i| ((i * 37) % 23) as f32 - 11.0)
                .collect();
            let kern: Vec<f32> = (0..c * k * k)
                .map(|i| ((i * 13) % 7) as f32 * 0.3 - 1.0)
                .collect();
            let bias: Vec<f32> = (0..c).map(|i| i as f32 * 0.5 - 1.0).collect();
            let slopes: Vec<f32> = (0..c).map(|i| 0.1 * (i + 1) as f32).collect();
            let e = Epilogue::new(Some(&bias), Slope::PerRow(&slopes));
            let (oh, ow) = (
                (h + 2 * pad - k) / stride + 1,
                (w + 2 * pad - k) / stride + 1,
            );
            let mut got = vec![f32::NAN; c * oh * ow];
            let dims = depthwise_with(
                isa,
                &x,
                (c, h, w),
                &kern,
                (k, k),
                Window { stride, pad },
                &mut got,
                &e,
            )
            .unwrap();
            assert_eq!(dims, (oh, ow));
            for ch in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = bias[ch];
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    s += kern[(ch * k + ky) * k + kx]
                                        * x[(ch * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                        let want = if s >= 0.0 { s } else { s * slopes[ch] };
                        let g = got[(ch * oh + oy) * ow + ox];
                        assert!(
                            (g - want).abs() < 1e-4,
                            "{isa:?} {:?} at {ch},{oy},{ox}: {g} vs {want}",
                            (c, h, w, k, stride, pad)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn kernels_larger_than_the_padded_input_are_errors() {
        let mut out = vec![0f32; 4];
        assert!(depthwise(
            &[0.0; 4],
            (1, 2, 2),
            &[0.0; 9],
            (3, 3),
            Window { stride: 1, pad: 0 },
            &mut out,
            &Epilogue::RAW
        )
        .is_err());
    }
}
