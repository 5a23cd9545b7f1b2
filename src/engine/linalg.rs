//! Small dense linear systems for the geometric fits (head pose, homographies).

/// Solves `m x = b` (N unknowns) by Gaussian elimination with partial pivoting; `None` when
/// `m` is singular to working precision.
pub fn solve<const N: usize>(mut m: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let pivot = (col..N).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = m[col];
        for r in col + 1..N {
            let f = m[r][col] / pivot_row[col];
            for (v, p) in m[r][col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= f * p;
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = [0f64; N];
    for r in (0..N).rev() {
        let s: f64 = (r + 1..N).map(|c| m[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / m[r][r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_and_refuses_singular_systems() {
        let x = solve([[2.0, 1.0], [1.0, 3.0]], [3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
        assert!(solve([[1.0, 2.0], [2.0, 4.0]], [1.0, 2.0]).is_none());
    }
}
