//! Depthwise convolution of one image (one kxk kernel per channel) with the layer's
//! epilogue.
//!
//! - SIMD paths (AVX-512, AVX2; strides 1 and 2): direct. Each output vector sums its taps
//!   from masked loads of the input rows, so the zero padding is never materialised (lanes
//!   outside the row read as zero and touch no memory); at stride 2 a load of twice the width
//!   is deinterleaved in registers. The bias, activation and residual are applied before the
//!   one masked store.
//! - Portable path (and larger strides): each channel's padded plane is split into `stride`
//!   column phases (phase `r` holds padded columns `r, r + stride, ...`), so that output
//!   `(y, x)` at "virtual" index `v = y * stride * ws + x` reads tap `(ky, kx)` at
//!   `v + ky * ws + kx / stride` of phase `kx % stride`: one contiguous pass per tap. The
//!   virtual rows are compacted afterwards, with the epilogue.

use super::conv::Window;
use super::{Epilogue, Isa, Scratch};

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

/// [`depthwise`] with the kernels of `isa` (an error if this CPU lacks it).
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
    let g = Geometry {
        c,
        h,
        w,
        kh,
        kw,
        stride: win.stride,
        pad: win.pad,
        oh,
        ow,
    };
    if (oh, ow) == (1, 1) && win.pad == 0 && (kh, kw) == (h, w) {
        // The kernel covers the whole input (MiniFASNet's last layer): one dot product per
        // channel.
        for (ch, o) in out.iter_mut().enumerate() {
            let mut v = [super::dot(
                &x[ch * h * w..(ch + 1) * h * w],
                &k[ch * kh * kw..(ch + 1) * kh * kw],
            )];
            let res = epi.residual.map(|r| &r.data[ch..=ch]);
            epi.apply_row(ch, &mut v, res);
            *o = v[0];
        }
        return Ok((oh, ow));
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F is supported (checked above) and the operand sizes were checked
        // against the geometry.
        Isa::Avx512 if g.direct() => unsafe { x86::direct512(x, k, out, epi, &g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, with AVX2 and FMA.
        Isa::Avx2 if g.direct() => unsafe { x86::direct256(x, k, out, epi, &g) },
        _ => phased(x, k, out, epi, &g),
    }
    Ok((oh, ow))
}

/// Checked sizes of one call.
struct Geometry {
    /// Channels.
    c: usize,
    /// Input height and width.
    h: usize,
    w: usize,
    /// Kernel height and width.
    kh: usize,
    kw: usize,
    /// Stride and padding.
    stride: usize,
    pad: usize,
    /// Output height and width.
    oh: usize,
    ow: usize,
}

impl Geometry {
    /// Whether the direct SIMD kernels apply: 3x3 kernels at stride 1 or 2 (every depthwise
    /// layer of the networks but MiniFASNet's final 5x5 one, which has a 1x1 output).
    fn direct(&self) -> bool {
        self.kh == 3 && self.kw == 3 && (self.stride == 1 || self.stride == 2)
    }

    /// Work items of a channel, output row by output row, `lanes` columns at a time, padded
    /// with empty items to a multiple of [`GROUP`].
    fn items(&self, lanes: usize) -> Vec<Item> {
        let mut v = Vec::new();
        for oy in 0..self.oh {
            let rows = [0, 1, 2].map(|ky| {
                let iy = (oy * self.stride + ky) as isize - self.pad as isize;
                (0..self.h as isize)
                    .contains(&iy)
                    .then(|| iy as usize * self.w)
            });
            for x0 in (0..self.ow).step_by(lanes) {
                v.push(Item {
                    rows,
                    x0,
                    out: oy * self.ow + x0,
                    n: (self.ow - x0).min(lanes),
                });
            }
        }
        while v.len() % GROUP != 0 {
            v.push(Item {
                rows: [None; 3],
                x0: 0,
                out: 0,
                n: 0,
            });
        }
        v
    }
}

/// Outputs computed side by side by the direct kernels (independent accumulators).
const GROUP: usize = 4;

/// One vector of outputs of a channel for the direct kernels.
#[derive(Debug, Clone, Copy)]
struct Item {
    /// Start of input rows `oy * stride + ky - pad` (ky = 0, 1, 2) within the plane, `None`
    /// for rows in the padding.
    rows: [Option<usize>; 3],
    /// First output column.
    x0: usize,
    /// Offset of the first output within the output plane.
    out: usize,
    /// Outputs in this vector (0 for padding items).
    n: usize,
}

/// The portable path: phase planes, one pass per tap, compaction with the epilogue.
fn phased(x: &[f32], k: &[f32], out: &mut [f32], epi: &Epilogue, g: &Geometry) {
    let (s, hp) = (g.stride, g.h + 2 * g.pad);
    let ws = (g.w + 2 * g.pad).div_ceil(s);
    let pitch = s * ws;
    let taps: Vec<usize> = (0..g.kh * g.kw)
        .map(|t| {
            let (ky, kx) = (t / g.kw, t % g.kw);
            (kx % s) * hp * ws + ky * ws + kx / s
        })
        .collect();
    let pv = (g.oh - 1) * pitch + g.ow;
    // Every tap run of pv values stays inside the phases (the last output's taps are the
    // last padded row and column); nothing past them is read.
    let mut phases = Scratch::take(s * hp * ws);
    let mut wide = Scratch::take(pv);
    let (plane_in, plane_out, nt) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    for ch in 0..g.c {
        split_phases(&x[ch * plane_in..(ch + 1) * plane_in], g, ws, &mut phases);
        wide.fill(0.0);
        for (&off, &kv) in taps.iter().zip(&k[ch * nt..(ch + 1) * nt]) {
            for (o, &v) in wide.iter_mut().zip(&phases[off..off + pv]) {
                *o += kv * v;
            }
        }
        let dst = &mut out[ch * plane_out..(ch + 1) * plane_out];
        for (y, row) in dst.chunks_exact_mut(g.ow).enumerate() {
            row.copy_from_slice(&wide[y * pitch..y * pitch + g.ow]);
            let at = ch * plane_out + y * g.ow;
            let res = epi.residual.map(|r| &r.data[at..at + g.ow]);
            epi.apply_row(ch, row, res);
        }
    }
}

/// Writes the padded plane of one channel as `stride` phases of `hp x ws` (zeros outside the
/// input).
fn split_phases(src: &[f32], g: &Geometry, ws: usize, dst: &mut [f32]) {
    let (s, p, hp) = (g.stride, g.pad, g.h + 2 * g.pad);
    for r in 0..s {
        let phase = &mut dst[r * hp * ws..(r + 1) * hp * ws];
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
            for (j, d) in row.iter_mut().enumerate().take(hi).skip(lo) {
                *d = srow[s * j + r - p];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Direct depthwise kernels: masked loads for the borders, fused epilogue.

    use std::arch::x86_64::*;

    use super::{Epilogue, Geometry, GROUP};

    /// Lanes `[lo, hi)` of a `lanes`-wide load starting at column `c` that fall inside a row
    /// of `w` values.
    #[inline(always)]
    fn span(c: isize, w: usize, lanes: usize) -> (u32, u32) {
        let lo = (-c).clamp(0, lanes as isize) as u32;
        let hi = (w as isize - c).clamp(0, lanes as isize) as u32;
        (lo, hi.max(lo))
    }

    /// AVX-512 load mask for 16 values starting at column `c` of a `w`-wide row.
    #[inline(always)]
    fn mask16(c: isize, w: usize) -> __mmask16 {
        let (lo, hi) = span(c, w, 16);
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
    }

    /// Every channel with AVX-512: [`GROUP`] vectors of 16 outputs at a time.
    ///
    /// # Safety
    /// AVX-512F must be supported, the geometry must pass [`Geometry::direct`] and the
    /// operands must have the sizes `g` describes (checked by the caller).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn direct512(
        x: &[f32],
        k: &[f32],
        out: &mut [f32],
        epi: &Epilogue,
        g: &Geometry,
    ) {
        let items = g.items(16);
        // Per item and tap column: the load's first input column and lane masks (two loads
        // at stride 2). Independent of the channel.
        let cols: Vec<[(isize, __mmask16, __mmask16); 3]> = items
            .iter()
            .map(|it| {
                [0, 1, 2].map(|kx| {
                    let c0 = (g.stride * it.x0 + kx) as isize - g.pad as isize;
                    let live = if it.n == 0 { 0 } else { 0xFFFF };
                    (c0, mask16(c0, g.w) & live, mask16(c0 + 16, g.w) & live)
                })
            })
            .collect();
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let zero = _mm512_setzero_ps();
        let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
        let before = epi.residual.is_some_and(|r| r.before_act);
        for ch in 0..g.c {
            let src = x.as_ptr().add(ch * plane_in);
            let wv: [__m512; 9] = std::array::from_fn(|t| _mm512_set1_ps(k[ch * 9 + t]));
            let bias = _mm512_set1_ps(epi.bias.map_or(0.0, |b| b[ch]));
            let slope = epi.slope.of_row(ch).map(|s| _mm512_set1_ps(s));
            let res = epi.residual.map(|r| r.data.as_ptr().add(ch * plane_out));
            let dst = out.as_mut_ptr().add(ch * plane_out);
            for (group, gcols) in items.chunks_exact(GROUP).zip(cols.chunks_exact(GROUP)) {
                let mut acc = [zero; GROUP];
                for ky in 0..3 {
                    for kx in 0..3 {
                        for i in 0..GROUP {
                            let Some(row) = group[i].rows[ky] else {
                                continue;
                            };
                            let (c0, m0, m1) = gcols[i][kx];
                            // Masked-off lanes are not read, so the address may lie outside
                            // the row (wrapping arithmetic keeps that well defined).
                            let p = src.add(row).wrapping_offset(c0);
                            let v = _mm512_maskz_loadu_ps(m0, p);
                            let v = if g.stride == 1 {
                                v
                            } else {
                                let hi = _mm512_maskz_loadu_ps(m1, p.wrapping_add(16));
                                _mm512_permutex2var_ps(v, even, hi)
                            };
                            acc[i] = _mm512_fmadd_ps(wv[ky * 3 + kx], v, acc[i]);
                        }
                    }
                }
                for (it, &a) in group.iter().zip(&acc) {
                    let om = ((1u32 << it.n) - 1) as __mmask16;
                    let mut o = _mm512_add_ps(a, bias);
                    let rv = match res {
                        Some(r) => _mm512_maskz_loadu_ps(om, r.wrapping_add(it.out)),
                        None => zero,
                    };
                    if before {
                        o = _mm512_add_ps(o, rv);
                    }
                    if let Some(s) = slope {
                        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(o, zero);
                        o = _mm512_mask_mul_ps(o, neg, o, s);
                    }
                    if !before {
                        o = _mm512_add_ps(o, rv);
                    }
                    _mm512_mask_storeu_ps(dst.add(it.out), om, o);
                }
            }
        }
    }

    /// AVX2 lane mask for 8 values starting at column `c` of a `w`-wide row.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn mask8(c: isize, w: usize) -> __m256i {
        let (lo, hi) = span(c, w, 8);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_and_si256(
            _mm256_cmpgt_epi32(lanes, _mm256_set1_epi32(lo as i32 - 1)),
            _mm256_cmpgt_epi32(_mm256_set1_epi32(hi as i32), lanes),
        )
    }

    /// Every channel with AVX2: [`GROUP`] vectors of 8 outputs at a time.
    ///
    /// # Safety
    /// AVX2 and FMA must be supported; otherwise as [`direct512`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn direct256(
        x: &[f32],
        k: &[f32],
        out: &mut [f32],
        epi: &Epilogue,
        g: &Geometry,
    ) {
        let items = g.items(8);
        let none = _mm256_setzero_si256();
        let cols: Vec<[(isize, __m256i, __m256i); 3]> = items
            .iter()
            .map(|it| {
                [0, 1, 2].map(|kx| {
                    let c0 = (g.stride * it.x0 + kx) as isize - g.pad as isize;
                    if it.n == 0 {
                        (c0, none, none)
                    } else {
                        (c0, mask8(c0, g.w), mask8(c0 + 8, g.w))
                    }
                })
            })
            .collect();
        let outs: Vec<__m256i> = items.iter().map(|it| mask8(0, it.n)).collect();
        let zero = _mm256_setzero_ps();
        let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
        let before = epi.residual.is_some_and(|r| r.before_act);
        for ch in 0..g.c {
            let src = x.as_ptr().add(ch * plane_in);
            let wv: [__m256; 9] = std::array::from_fn(|t| _mm256_set1_ps(k[ch * 9 + t]));
            let bias = _mm256_set1_ps(epi.bias.map_or(0.0, |b| b[ch]));
            let slope = epi.slope.of_row(ch).map(|s| _mm256_set1_ps(s));
            let res = epi.residual.map(|r| r.data.as_ptr().add(ch * plane_out));
            let dst = out.as_mut_ptr().add(ch * plane_out);
            for ((group, gcols), gouts) in items
                .chunks_exact(GROUP)
                .zip(cols.chunks_exact(GROUP))
                .zip(outs.chunks_exact(GROUP))
            {
                let mut acc = [zero; GROUP];
                for ky in 0..3 {
                    for kx in 0..3 {
                        for i in 0..GROUP {
                            let Some(row) = group[i].rows[ky] else {
                                continue;
                            };
                            let (c0, m0, m1) = gcols[i][kx];
                            let p = src.add(row).wrapping_offset(c0);
                            let v = _mm256_maskload_ps(p, m0);
                            let v = if g.stride == 1 {
                                v
                            } else {
                                let hi = _mm256_maskload_ps(p.wrapping_add(8), m1);
                                // [v0 v2 h0 h2 | v4 v6 h4 h6] -> [v0 v2 v4 v6 h0 h2 h4 h6]
                                let sh = _mm256_shuffle_ps::<0b10_00_10_00>(v, hi);
                                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                                    _mm256_castps_pd(sh),
                                ))
                            };
                            acc[i] = _mm256_fmadd_ps(wv[ky * 3 + kx], v, acc[i]);
                        }
                    }
                }
                for ((it, &a), &om) in group.iter().zip(&acc).zip(gouts) {
                    let mut o = _mm256_add_ps(a, bias);
                    let rv = match res {
                        Some(r) => _mm256_maskload_ps(r.wrapping_add(it.out), om),
                        None => zero,
                    };
                    if before {
                        o = _mm256_add_ps(o, rv);
                    }
                    if let Some(s) = slope {
                        let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(o, zero);
                        o = _mm256_blendv_ps(o, _mm256_mul_ps(o, s), neg);
                    }
                    if !before {
                        o = _mm256_add_ps(o, rv);
                    }
                    _mm256_maskstore_ps(dst.wrapping_add(it.out), om, o);
                }
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
                (4, 5, 5, 5, 1, 0),
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
