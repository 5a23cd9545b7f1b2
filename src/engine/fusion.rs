//! Learned fusion of PAD networks: a logistic regression on the networks' live log-odds,
//! fitted by Newton's method (iteratively reweighted least squares) with a small L2 penalty
//! on the weights (not the bias), so that separable training data still gives finite weights.
//! The fused score is the linear predictor (a log-odds), comparable to a calibration offset.

use super::linalg::solve;

/// Fused score `bias + sum(w_i x_i)` over `N - 1` features (the last slot is the bias).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogisticFusion<const N: usize> {
    /// Feature weights, then the bias in the last slot.
    pub coef: [f64; N],
}

impl<const N: usize> LogisticFusion<N> {
    /// Newton iterations at most (the fit converges in well under 20 here).
    const MAX_ITER: usize = 50;

    /// The fused log-odds of one sample's features (its last slot ignored: the bias's).
    pub fn score(&self, x: &[f64; N]) -> f64 {
        let mut s = self.coef[N - 1];
        for (c, v) in self.coef.iter().zip(x).take(N - 1) {
            s += c * v;
        }
        s
    }

    /// Fits live (`true`) against attack on samples `x` (features in the first `N - 1`
    /// slots) with L2 penalty `l2` on the weights. `None` when there are no samples of one
    /// class or the system is singular.
    pub fn fit(x: &[[f64; N]], live: &[bool], l2: f64) -> Option<Self> {
        if x.len() != live.len() || !live.contains(&true) || !live.contains(&false) {
            return None;
        }
        let mut f = Self { coef: [0.0; N] };
        for _ in 0..Self::MAX_ITER {
            // Gradient and Hessian of the penalised negative log-likelihood.
            let mut g = [0f64; N];
            let mut h = [[0f64; N]; N];
            for (xi, &yi) in x.iter().zip(live) {
                let mut row = *xi;
                row[N - 1] = 1.0;
                let p = 1.0 / (1.0 + (-f.score(xi)).exp());
                let r = p - f64::from(u8::from(yi));
                let w = (p * (1.0 - p)).max(1e-12);
                for a in 0..N {
                    g[a] += r * row[a];
                    for b in 0..N {
                        h[a][b] += w * row[a] * row[b];
                    }
                }
            }
            for a in 0..N - 1 {
                g[a] += l2 * f.coef[a];
                h[a][a] += l2;
            }
            let step = solve(h, g)?;
            let mut moved = 0f64;
            for (c, s) in f.coef.iter_mut().zip(step) {
                *c -= s;
                moved = moved.max(s.abs());
            }
            if moved < 1e-9 {
                break;
            }
        }
        f.coef.iter().all(|c| c.is_finite()).then_some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_useful_feature_gets_the_weight_and_a_noise_feature_little() {
        // Live samples score high on feature 0; feature 1 is the same for both classes.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..40 {
            let t = i as f64 / 10.0;
            x.push([1.0 + t * 0.3, (i % 5) as f64, 0.0]);
            y.push(true);
            x.push([-1.0 - t * 0.3, (i % 5) as f64, 0.0]);
            y.push(false);
        }
        // Overlap, so the likelihood has a finite optimum even without the penalty.
        x.push([-1.5, 2.0, 0.0]);
        y.push(true);
        x.push([1.5, 2.0, 0.0]);
        y.push(false);
        let f = LogisticFusion::fit(&x, &y, 1e-3).unwrap();
        assert!(f.coef[0] > 1.0, "{f:?}");
        assert!(f.coef[1].abs() < 0.2 * f.coef[0], "{f:?}");
        assert!(f.score(&[2.0, 0.0, 0.0]) > 0.0 && f.score(&[-2.0, 0.0, 0.0]) < 0.0);
        assert!(LogisticFusion::fit(&x[..1], &y[..1], 1e-3).is_none());
    }
}
