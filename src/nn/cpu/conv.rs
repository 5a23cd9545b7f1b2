//! Ordinary (`groups = 1`) convolutions of one image through [`gemm::matmul`]:
//!
//! - 1x1, stride 1, no padding: the input planes are the product's rows as they are;
//! - stride 1, any kernel and padding: an implicit product over a zero-padded copy. With the
//!   padded width `wp`, output pixel `(y, x)` is sum `(c, ky, kx)` of
//!   `w * padded[c][y + ky][x + kx]`, and the inputs of consecutive `(y, x)` at a fixed
//!   `(c, ky, kx)` are consecutive values of the padded copy once the output is computed at
//!   width `wp` (the `wp - ow` extra columns per row are dropped). No im2col copy is made;
//!   the bias, activation and residual are applied as the rows are compacted;
//! - anything else (strided convolutions): im2col columns, then the product with the epilogue
//!   fused.

use super::gemm::{matmul, PackedMatrix};
use super::{Epilogue, Isa, Scratch};

/// A convolution kernel `(out, in, kh, kw)` packed as an `(out, in * kh * kw)` matrix.
#[derive(Debug, Clone)]
pub struct PackedConv {
    /// The packed kernel matrix.
    matrix: PackedMatrix,
    /// Input channels.
    c_in: usize,
    /// Kernel height.
    kh: usize,
    /// Kernel width.
    kw: usize,
}

/// Stride and zero padding of a convolution (the same in both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Step between output samples, in input pixels.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

impl PackedConv {
    /// Packs a row-major `(out, in, kh, kw)` kernel for `isa`.
    pub fn pack(w: &[f32], dims: (usize, usize, usize, usize), isa: Isa) -> Result<Self, String> {
        let (out, c_in, kh, kw) = dims;
        Ok(Self {
            matrix: PackedMatrix::pack(w, out, c_in * kh * kw, isa)?,
            c_in,
            kh,
            kw,
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.matrix.rows()
    }

    /// Output `(height, width)` for an `h` x `w` input, `None` when the kernel does not fit.
    pub fn out_size(&self, h: usize, w: usize, win: Window) -> Option<(usize, usize)> {
        let (hp, wp) = (h + 2 * win.pad, w + 2 * win.pad);
        if win.stride == 0 || hp < self.kh || wp < self.kw {
            return None;
        }
        Some((
            (hp - self.kh) / win.stride + 1,
            (wp - self.kw) / win.stride + 1,
        ))
    }

    /// Convolves one image `x (in, h, w)` into `out (out, oh, ow)` and applies `epi` (its
    /// residual, if any, laid out like `out`).
    pub fn run(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        win: Window,
        out: &mut [f32],
        epi: &Epilogue,
    ) -> Result<(), String> {
        let (oh, ow) = self
            .out_size(h, w, win)
            .ok_or_else(|| format!("a {}x{} kernel does not fit {h}x{w}", self.kh, self.kw))?;
        let c = self.c_in;
        if x.len() != c * h * w {
            return Err(format!("input of {} values is not {c}x{h}x{w}", x.len()));
        }
        let rows = self.out_channels();
        let plane = oh * ow;
        if out.len() != rows * plane {
            return Err(format!(
                "output of {} values is not {rows}x{oh}x{ow}",
                out.len()
            ));
        }
        epi.check(rows, plane, plane)?;
        if plane == 0 || rows == 0 {
            return Ok(());
        }
        let (kh, kw) = (self.kh, self.kw);
        if kh == 1 && kw == 1 && win.stride == 1 && win.pad == 0 {
            let offsets: Vec<usize> = (0..c).map(|i| i * plane).collect();
            return matmul(&self.matrix, x, &offsets, plane, out, plane, epi);
        }
        if win.stride == 1 {
            return self.implicit(x, (h, w), win.pad, (oh, ow), out, epi);
        }
        let mut cols = Scratch::take(c * kh * kw * plane);
        im2col(x, (c, h, w), (kh, kw), win, (oh, ow), &mut cols);
        let offsets: Vec<usize> = (0..c * kh * kw).map(|r| r * plane).collect();
        matmul(&self.matrix, &cols, &offsets, plane, out, plane, epi)
    }

    /// Stride-1 convolution as an implicit product over a zero-padded copy (module docs).
    fn implicit(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        pad: usize,
        (oh, ow): (usize, usize),
        out: &mut [f32],
        epi: &Epilogue,
    ) -> Result<(), String> {
        let (c, kh, kw) = (self.c_in, self.kh, self.kw);
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        let mut padded = Scratch::take(c * hp * wp);
        pad_planes(x, (c, h, w), pad, &mut padded);
        let mut offsets = Vec::with_capacity(c * kh * kw);
        for ci in 0..c {
            for ky in 0..kh {
                for kx in 0..kw {
                    offsets.push(ci * hp * wp + ky * wp + kx);
                }
            }
        }
        // Output at padded width; the last row stops at ow so every read stays in the copy.
        let pv = (oh - 1) * wp + ow;
        let rows = self.out_channels();
        let mut wide = Scratch::take(rows * pv);
        matmul(
            &self.matrix,
            &padded,
            &offsets,
            pv,
            &mut wide,
            pv,
            &Epilogue::RAW,
        )?;
        let plane = oh * ow;
        for r in 0..rows {
            for y in 0..oh {
                let at = r * plane + y * ow;
                let dst = &mut out[at..at + ow];
                dst.copy_from_slice(&wide[r * pv + y * wp..r * pv + y * wp + ow]);
                let res = epi.residual.map(|rs| &rs.data[at..at + ow]);
                epi.apply_row(r, dst, res);
            }
        }
        Ok(())
    }
}

/// Copies planes `(c, h, w)` into `(c, h + 2 pad, w + 2 pad)` with a zero border.
pub(crate) fn pad_planes(x: &[f32], (c, h, w): (usize, usize, usize), pad: usize, dst: &mut [f32]) {
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    for (src, plane) in x
        .chunks_exact(h * w)
        .zip(dst.chunks_exact_mut(hp * wp))
        .take(c)
    {
        plane[..pad * wp].fill(0.0);
        plane[(pad + h) * wp..].fill(0.0);
        for (y, row) in src.chunks_exact(w).enumerate() {
            let d = &mut plane[(pad + y) * wp..(pad + y + 1) * wp];
            d[..pad].fill(0.0);
            d[pad..pad + w].copy_from_slice(row);
            d[pad + w..].fill(0.0);
        }
    }
}

/// im2col of one image: `(c, h, w)` to rows `(c, ky, kx)` of `oh * ow` columns, zeros where
/// the window leaves the padded input.
fn im2col(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    (kh, kw): (usize, usize),
    win: Window,
    (oh, ow): (usize, usize),
    cols: &mut [f32],
) {
    let (st, p) = (win.stride, win.pad);
    let plane = oh * ow;
    for ci in 0..c {
        let src = &x[ci * h * w..(ci + 1) * h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let r = (ci * kh + ky) * kw + kx;
                let rows = &mut cols[r * plane..(r + 1) * plane];
                // Output columns whose input column 0 <= ox * st + kx - p < w.
                let lo = p.saturating_sub(kx).div_ceil(st).min(ow);
                let hi = (w + p).saturating_sub(kx).div_ceil(st).min(ow);
                for oy in 0..oh {
                    let drow = &mut rows[oy * ow..(oy + 1) * ow];
                    let iy = oy * st + ky;
                    if iy < p || iy - p >= h || lo >= hi {
                        drow.fill(0.0);
                        continue;
                    }
                    drow[..lo].fill(0.0);
                    drow[hi..].fill(0.0);
                    let srow = &src[(iy - p) * w..(iy - p + 1) * w];
                    for (ox, d) in drow.iter_mut().enumerate().take(hi).skip(lo) {
                        *d = srow[ox * st + kx - p];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_epilogues, test_values};
    use super::*;

    /// Direct convolution, the definition.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        x: &[f32],
        (c, h, w): (usize, usize, usize),
        k: &[f32],
        (o, kh, kw): (usize, usize, usize),
        win: Window,
        (oh, ow): (usize, usize),
        e: &Epilogue,
    ) -> Vec<f32> {
        let mut out = vec![0f32; o * oh * ow];
        for co in 0..o {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0.0;
                    for ci in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * win.stride + ky) as isize - win.pad as isize;
                                let ix = (ox * win.stride + kx) as isize - win.pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    s += k[((co * c + ci) * kh + ky) * kw + kx]
                                        * x[(ci * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                    }
                    out[(co * oh + oy) * ow + ox] = s;
                }
            }
            let plane = oh * ow;
            let res = e.residual.map(|r| &r.data[co * plane..(co + 1) * plane]);
            e.apply_row(co, &mut out[co * plane..(co + 1) * plane], res);
        }
        out
    }

    #[test]
    fn every_path_and_isa_matches_the_definition() {
        // (c, h, w, out, kh, kw, stride, pad): pointwise, implicit "same" and "valid",
        // strided im2col, a 7x7 stem, non-square kernels and tiny inputs.
        for isa in Isa::available() {
            for &(c, h, w, o, kh, kw, stride, pad) in &[
                (8, 10, 9, 16, 1, 1, 1, 0),
                (16, 11, 10, 12, 3, 3, 1, 1),
                (5, 6, 7, 9, 3, 3, 1, 0),
                (3, 17, 13, 8, 3, 3, 2, 1),
                (6, 9, 9, 5, 3, 3, 2, 0),
                (3, 23, 21, 4, 7, 7, 2, 0),
                (4, 12, 11, 6, 7, 7, 2, 3),
                (5, 8, 9, 7, 1, 1, 2, 0),
                (4, 9, 8, 3, 2, 3, 1, 1),
                (7, 5, 5, 9, 5, 5, 1, 0),
                (64, 5, 6, 16, 3, 3, 1, 1),
            ] {
                let x = test_values(c * h * w, 1);
                let k = test_values(o * c * kh * kw, 2);
                let bias = test_values(o, 3);
                let win = Window { stride, pad };
                let pc = PackedConv::pack(&k, (o, c, kh, kw), isa).unwrap();
                let (oh, ow) = pc.out_size(h, w, win).unwrap();
                let res = test_values(o * oh * ow, 4);
                let slopes = test_values(o, 5);
                for e in test_epilogues(&bias, &slopes, &res) {
                    let want = naive(&x, (c, h, w), &k, (o, kh, kw), win, (oh, ow), &e);
                    let mut got = vec![f32::NAN; o * oh * ow];
                    pc.run(&x, (h, w), win, &mut got, &e).unwrap();
                    let diff = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        diff < 1e-4,
                        "{isa:?} {:?}: max diff {diff}",
                        (c, h, w, o, kh, kw, stride, pad)
                    );
                }
            }
        }
    }

    #[test]
    fn mismatched_operands_are_errors() {
        let pc = PackedConv::pack(&[1.0; 2 * 3 * 9], (2, 3, 3, 3), Isa::Portable).unwrap();
        let win = Window { stride: 1, pad: 1 };
        let mut out = vec![0f32; 2 * 16];
        assert!(pc
            .run(&[0.0; 3 * 16], (4, 4), win, &mut out, &Epilogue::RAW)
            .is_ok());
        assert!(pc
            .run(&[0.0; 3 * 15], (4, 4), win, &mut out, &Epilogue::RAW)
            .is_err());
        assert!(pc
            .run(
                &[0.0; 3 * 4],
                (2, 2),
                Window { stride: 1, pad: 0 },
                &mut out,
                &Epilogue::RAW
            )
            .is_err());
    }
}
