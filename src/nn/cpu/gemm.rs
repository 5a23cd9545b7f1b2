//! Matrix product against pre-packed weights with a fused epilogue:
//!
//! `out[r * stride + q] = epilogue(sum_k W[r][k] * x[offsets[k] + q])` for `q in 0..p`.
//!
//! Each `k` names a row of input values by its offset, so one kernel serves a 1x1 convolution
//! (`offsets[c] = c * H * W`), an implicit kxk convolution over a padded copy (offsets of the
//! shifted windows, see [`super::conv`]) and im2col columns. Output is tiled in blocks of `MR`
//! rows by up to `NR` consecutive values; a tile keeps its `MR x NR` sums in registers for the
//! whole `k` loop (AVX-512: 8 x 48, AVX2: 6 x 16), reading `NR` inputs and `MR` weights per
//! step, and applies the epilogue before its single store. Ragged edges use masked loads and
//! stores, so nothing outside the operands is touched.

use super::{Epilogue, Isa, Slope};

/// Weights `W (rows, k)` packed for one instruction set: blocks of `MR` rows, each stored
/// `[k][rows in block]` so that a kernel step reads its `MR` weights from one place.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    /// Instruction set the packing (and the kernels that read it) are for.
    isa: Isa,
    /// Output rows.
    rows: usize,
    /// Reduction length.
    k: usize,
    /// Packed values.
    data: Vec<f32>,
}

/// Rows per register tile.
fn mr(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 | Isa::Portable => 8,
        Isa::Avx2 => 6,
    }
}

impl PackedMatrix {
    /// Packs a row-major `(rows, k)` matrix for `isa`.
    pub fn pack(w: &[f32], rows: usize, k: usize, isa: Isa) -> Result<Self, String> {
        if w.len() != rows * k {
            return Err(format!("{} weights for a {rows}x{k} matrix", w.len()));
        }
        let block = mr(isa);
        let mut data = Vec::with_capacity(w.len());
        for r0 in (0..rows).step_by(block) {
            let n = block.min(rows - r0);
            for kk in 0..k {
                for r in r0..r0 + n {
                    data.push(w[r * k + kk]);
                }
            }
        }
        Ok(Self { isa, rows, k, data })
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Reduction length.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Instruction set of the packing.
    pub fn isa(&self) -> Isa {
        self.isa
    }
}

/// Epilogue values of one block of rows, in the form the kernels read.
struct BlockEpi {
    /// Bias per row of the block (zeros when none).
    bias: [f32; 8],
    /// Negative slope per row (unused when `act` is false).
    slope: [f32; 8],
    /// Whether an activation applies.
    act: bool,
    /// Residual at the block's first row and the tile's first column, or null.
    res: *const f32,
    /// Residual joins before the activation.
    res_before: bool,
}

impl BlockEpi {
    fn new(e: &Epilogue, r0: usize, n: usize) -> Self {
        let mut bias = [0f32; 8];
        let mut slope = [1f32; 8];
        for i in 0..n {
            if let Some(b) = e.bias {
                bias[i] = b[r0 + i];
            }
            if let Some(s) = e.slope.of_row(r0 + i) {
                slope[i] = s;
            }
        }
        Self {
            bias,
            slope,
            act: e.slope != Slope::Identity,
            res: std::ptr::null(),
            res_before: e.residual.is_some_and(|r| r.before_act),
        }
    }
}

/// Computes `out = epilogue(W x)` (see the module docs). `x` holds the input rows at
/// `offsets` (one per `k`), each at least `p` values long; output row `r` starts at
/// `r * out_stride`, and so does its residual row.
pub fn matmul(
    m: &PackedMatrix,
    x: &[f32],
    offsets: &[usize],
    p: usize,
    out: &mut [f32],
    out_stride: usize,
    epi: &Epilogue,
) -> Result<(), String> {
    if offsets.len() != m.k {
        return Err(format!("{} input rows for k = {}", offsets.len(), m.k));
    }
    if m.rows == 0 || p == 0 {
        return Ok(());
    }
    if let Some(&far) = offsets.iter().max() {
        if far + p > x.len() {
            return Err(format!(
                "input row at {far} of {p} values overruns {} inputs",
                x.len()
            ));
        }
    }
    if out_stride < p || (m.rows - 1) * out_stride + p > out.len() {
        return Err(format!(
            "output of {} values cannot hold {} rows of {p} spaced {out_stride}",
            out.len(),
            m.rows
        ));
    }
    epi.check(m.rows, p, out_stride)?;
    if !m.isa.supported() {
        return Err(format!("{} kernels are not supported here", m.isa.name()));
    }
    let block = mr(m.isa);
    for r0 in (0..m.rows).step_by(block) {
        let n = block.min(m.rows - r0);
        let w = &m.data[r0 * m.k..(r0 + n) * m.k];
        let mut be = BlockEpi::new(epi, r0, n);
        let res_rows = epi.residual.map(|r| &r.data[r0 * out_stride..]);
        let out_rows = &mut out[r0 * out_stride..];
        match m.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                // SAFETY: AVX-512F is supported (checked above); every offset + p is within x,
                // and n rows of p values spaced out_stride fit out_rows and res_rows (checked).
                unsafe {
                    x86::block512(
                        w,
                        n,
                        x.as_ptr(),
                        offsets,
                        p,
                        out_rows.as_mut_ptr(),
                        out_stride,
                        res_rows,
                        &mut be,
                    )
                }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                // SAFETY: as above, with AVX2 and FMA supported.
                unsafe {
                    x86::block256(
                        w,
                        n,
                        x.as_ptr(),
                        offsets,
                        p,
                        out_rows.as_mut_ptr(),
                        out_stride,
                        res_rows,
                        &mut be,
                    )
                }
            }
            _ => block_portable(w, n, x, offsets, p, out_rows, out_stride, res_rows, &be),
        }
    }
    Ok(())
}

/// Portable kernel for one block of `n` rows: tiles of 16 values, plain loops.
#[allow(clippy::too_many_arguments)]
fn block_portable(
    w: &[f32],
    n: usize,
    x: &[f32],
    offsets: &[usize],
    p: usize,
    out: &mut [f32],
    stride: usize,
    res: Option<&[f32]>,
    e: &BlockEpi,
) {
    const NR: usize = 16;
    for q0 in (0..p).step_by(NR) {
        let len = NR.min(p - q0);
        let mut acc = [[0f32; NR]; 8];
        for (kk, &off) in offsets.iter().enumerate() {
            let xr = &x[off + q0..off + q0 + len];
            for (r, a) in acc.iter_mut().enumerate().take(n) {
                let wv = w[kk * n + r];
                for (a, &xv) in a.iter_mut().zip(xr) {
                    *a += wv * xv;
                }
            }
        }
        for (r, a) in acc.iter().enumerate().take(n) {
            for (j, &sum) in a.iter().enumerate().take(len) {
                let i = r * stride + q0 + j;
                let rv = res.map_or(0.0, |rs| rs[i]);
                let mut v = sum + e.bias[r];
                if e.res_before {
                    v += rv;
                }
                if e.act {
                    v = super::leaky(v, e.slope[r]);
                }
                if !e.res_before {
                    v += rv;
                }
                out[i] = v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX-512 and AVX2 register tiles.

    use std::arch::x86_64::*;

    use super::BlockEpi;

    /// Dispatches a `(rows, vectors)` tile shape to its const-generic instance.
    macro_rules! dispatch {
        ($f:ident, $n:expr, $nv:expr, [$($mr:literal)*], $vs:tt, $args:tt) => {
            match $n {
                $( $mr => dispatch!(@nv $f, $mr, $nv, $vs, $args), )*
                _ => unreachable!("tile rows out of range"),
            }
        };
        (@nv $f:ident, $mr:literal, $nv:expr, [$($v:literal)*], $args:tt) => {
            match $nv {
                $( $v => dispatch!(@call $f, $mr, $v, $args), )*
                _ => unreachable!("tile width out of range"),
            }
        };
        (@call $f:ident, $mr:literal, $v:literal, ($($a:expr),*)) => {
            $f::<$mr, $v>($($a),*)
        };
    }

    /// One block of `n <= 8` rows with AVX-512 tiles of up to 48 values.
    ///
    /// # Safety
    /// AVX-512F must be supported; `x + offsets[k] + p`, `out` and `res` must be valid for the
    /// reads and writes described in [`super::matmul`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block512(
        w: &[f32],
        n: usize,
        x: *const f32,
        offsets: &[usize],
        p: usize,
        out: *mut f32,
        stride: usize,
        res: Option<&[f32]>,
        e: &mut BlockEpi,
    ) {
        const L: usize = 16;
        let mut q0 = 0;
        while q0 < p {
            let left = p - q0;
            let nv = left.div_ceil(L).min(3);
            let last = (left - (nv - 1) * L).min(L);
            let mask: __mmask16 = if last == L {
                0xFFFF
            } else {
                (1u16 << last) - 1
            };
            e.res = res.map_or(std::ptr::null(), |r| r.as_ptr().add(q0));
            let k = offsets.len();
            dispatch!(
                tile512,
                n,
                nv,
                [1 2 3 4 5 6 7 8],
                [1 2 3],
                (w.as_ptr(), x.add(q0), offsets.as_ptr(), k, mask, out.add(q0), stride, e)
            );
            q0 += nv * L;
        }
    }

    /// An `MR x (NV * 16)` tile; the last vector is masked by `mask`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile512<const MR: usize, const NV: usize>(
        w: *const f32,
        x: *const f32,
        offsets: *const usize,
        k: usize,
        mask: __mmask16,
        out: *mut f32,
        stride: usize,
        e: &BlockEpi,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for kk in 0..k {
            let xr = x.add(*offsets.add(kk));
            let mut xv = [_mm512_setzero_ps(); NV];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = if v + 1 == NV {
                    _mm512_maskz_loadu_ps(mask, xr.add(16 * v))
                } else {
                    _mm512_loadu_ps(xr.add(16 * v))
                };
            }
            let wr = w.add(kk * MR);
            for (r, acc) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*wr.add(r));
                for (a, &xv) in acc.iter_mut().zip(&xv) {
                    *a = _mm512_fmadd_ps(b, xv, *a);
                }
            }
        }
        let zero = _mm512_setzero_ps();
        for (r, acc) in acc.iter().enumerate() {
            let bias = _mm512_set1_ps(e.bias[r]);
            let slope = _mm512_set1_ps(e.slope[r]);
            for (v, &a) in acc.iter().enumerate() {
                let m = if v + 1 == NV { mask } else { 0xFFFF };
                let at = r * stride + 16 * v;
                let mut o = _mm512_add_ps(a, bias);
                let rv = if e.res.is_null() {
                    zero
                } else {
                    _mm512_maskz_loadu_ps(m, e.res.add(at))
                };
                if e.res_before {
                    o = _mm512_add_ps(o, rv);
                }
                if e.act {
                    let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(o, zero);
                    o = _mm512_mask_mul_ps(o, neg, o, slope);
                }
                if !e.res_before {
                    o = _mm512_add_ps(o, rv);
                }
                _mm512_mask_storeu_ps(out.add(at), m, o);
            }
        }
    }

    /// One block of `n <= 6` rows with AVX2 tiles of up to 16 values.
    ///
    /// # Safety
    /// AVX2 and FMA must be supported; pointers as for [`block512`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block256(
        w: &[f32],
        n: usize,
        x: *const f32,
        offsets: &[usize],
        p: usize,
        out: *mut f32,
        stride: usize,
        res: Option<&[f32]>,
        e: &mut BlockEpi,
    ) {
        const L: usize = 8;
        let mut q0 = 0;
        while q0 < p {
            let left = p - q0;
            let nv = left.div_ceil(L).min(2);
            let last = (left - (nv - 1) * L).min(L);
            let lanes: [i32; 8] = std::array::from_fn(|i| if i < last { -1 } else { 0 });
            let mask = _mm256_loadu_si256(lanes.as_ptr().cast());
            e.res = res.map_or(std::ptr::null(), |r| r.as_ptr().add(q0));
            let k = offsets.len();
            dispatch!(
                tile256,
                n,
                nv,
                [1 2 3 4 5 6],
                [1 2],
                (w.as_ptr(), x.add(q0), offsets.as_ptr(), k, mask, out.add(q0), stride, e)
            );
            q0 += nv * L;
        }
    }

    /// An `MR x (NV * 8)` tile; the last vector is masked by `mask`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile256<const MR: usize, const NV: usize>(
        w: *const f32,
        x: *const f32,
        offsets: *const usize,
        k: usize,
        mask: __m256i,
        out: *mut f32,
        stride: usize,
        e: &BlockEpi,
    ) {
        let full = _mm256_set1_epi32(-1);
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        for kk in 0..k {
            let xr = x.add(*offsets.add(kk));
            let mut xv = [_mm256_setzero_ps(); NV];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = if v + 1 == NV {
                    _mm256_maskload_ps(xr.add(8 * v), mask)
                } else {
                    _mm256_loadu_ps(xr.add(8 * v))
                };
            }
            let wr = w.add(kk * MR);
            for (r, acc) in acc.iter_mut().enumerate() {
                let b = _mm256_set1_ps(*wr.add(r));
                for (a, &xv) in acc.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(b, xv, *a);
                }
            }
        }
        let zero = _mm256_setzero_ps();
        for (r, acc) in acc.iter().enumerate() {
            let bias = _mm256_set1_ps(e.bias[r]);
            let slope = _mm256_set1_ps(e.slope[r]);
            for (v, &a) in acc.iter().enumerate() {
                let m = if v + 1 == NV { mask } else { full };
                let at = r * stride + 8 * v;
                let mut o = _mm256_add_ps(a, bias);
                let rv = if e.res.is_null() {
                    zero
                } else {
                    _mm256_maskload_ps(e.res.add(at), m)
                };
                if e.res_before {
                    o = _mm256_add_ps(o, rv);
                }
                if e.act {
                    let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(o, zero);
                    o = _mm256_blendv_ps(o, _mm256_mul_ps(o, slope), neg);
                }
                if !e.res_before {
                    o = _mm256_add_ps(o, rv);
                }
                _mm256_maskstore_ps(out.add(at), m, o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_epilogues, test_values};
    use super::*;

    /// Straightforward reference of [`matmul`].
    #[allow(clippy::too_many_arguments)]
    fn naive(
        w: &[f32],
        rows: usize,
        x: &[f32],
        offsets: &[usize],
        p: usize,
        out: &mut [f32],
        stride: usize,
        e: &Epilogue,
    ) {
        let k = offsets.len();
        for r in 0..rows {
            let row = &mut out[r * stride..r * stride + p];
            for (q, o) in row.iter_mut().enumerate() {
                *o = (0..k).map(|kk| w[r * k + kk] * x[offsets[kk] + q]).sum();
            }
            let res = e.residual.map(|rs| &rs.data[r * stride..r * stride + p]);
            e.apply_row(r, row, res);
        }
    }

    #[test]
    fn every_isa_matches_the_reference_on_ragged_shapes() {
        println!("instruction sets tested: {:?}", Isa::available());
        let slopes = test_values(40, 9);
        for isa in Isa::available() {
            // (rows, k, p, stride): ragged rows and columns, tiny and wide outputs.
            for &(rows, k, p, stride) in &[
                (1, 1, 1, 1),
                (13, 64, 25, 25),
                (8, 3, 47, 50),
                (9, 17, 49, 49),
                (17, 32, 100, 100),
                (6, 5, 16, 16),
                (7, 9, 33, 40),
                (40, 27, 130, 131),
            ] {
                let w = test_values(rows * k, 1);
                let x = test_values(k * p + 7, 2);
                let offsets: Vec<usize> = (0..k).map(|kk| (kk * p + kk % 3) % 7 + kk * p).collect();
                let bias = test_values(rows, 3);
                let res = test_values((rows - 1) * stride + p, 4);
                let epis = test_epilogues(&bias, &slopes, &res);
                let m = PackedMatrix::pack(&w, rows, k, isa).unwrap();
                for e in &epis {
                    let len = (rows - 1) * stride + p;
                    let mut got = vec![f32::NAN; len];
                    let mut want = vec![f32::NAN; len];
                    matmul(&m, &x, &offsets, p, &mut got, stride, e).unwrap();
                    naive(&w, rows, &x, &offsets, p, &mut want, stride, e);
                    for r in 0..rows {
                        for q in 0..p {
                            let (g, t) = (got[r * stride + q], want[r * stride + q]);
                            assert!(
                                (g - t).abs() < 1e-4,
                                "{isa:?} {rows}x{k}x{p}: row {r} col {q}: {g} vs {t}"
                            );
                        }
                        // Gaps between rows are never written.
                        for q in p..stride.min(len - r * stride) {
                            assert!(got[r * stride + q].is_nan(), "{isa:?}: gap written");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn operands_that_do_not_fit_are_errors() {
        let m = PackedMatrix::pack(&[1.0; 6], 2, 3, Isa::Portable).unwrap();
        let x = vec![1.0f32; 12];
        let mut out = vec![0f32; 8];
        let e = Epilogue::RAW;
        assert!(matmul(&m, &x, &[0, 4, 8], 4, &mut out, 4, &e).is_ok());
        assert_eq!(out, vec![3.0; 8]);
        assert!(matmul(&m, &x, &[0, 4], 4, &mut out, 4, &e).is_err());
        assert!(matmul(&m, &x, &[0, 4, 9], 4, &mut out, 4, &e).is_err());
        assert!(matmul(&m, &x, &[0, 4, 8], 4, &mut out, 5, &e).is_err());
        assert!(PackedMatrix::pack(&[1.0; 5], 2, 3, Isa::Portable).is_err());
        let short = [0.5f32];
        assert!(matmul(
            &m,
            &x,
            &[0, 4, 8],
            4,
            &mut out,
            4,
            &Epilogue::new(Some(&short), Slope::Identity)
        )
        .is_err());
    }
}
