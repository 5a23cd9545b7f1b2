//! Estimated false-rejection rates: what fraction of live faces score below a raw liveness
//! score. The estimate is the empirical distribution of the live scores of a calibration set,
//! kept as its 101 percentiles (`facegate eval DIR --frr-table FILE` writes one); the
//! embedded table summarises nuaa-dev's 200 live crops under the default configuration
//! (`frr_nuaa_dev.json` beside this file: 101 scores computed by facegate, no image or
//! dataset content; see `docs/calibration.md`). Between percentiles the rate is interpolated
//! linearly; below the lowest it is 0, above the highest 1.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Number of percentiles a table holds (0 %, 1 %, ..., 100 %).
pub const PERCENTILES: usize = 101;

/// The embedded table (nuaa-dev live crops, default configuration, dual pipeline).
const BUILTIN: &str = include_str!("frr_nuaa_dev.json");

/// Percentiles of the live raw scores of a calibration set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrrTable {
    /// Where the scores came from (a folder, a command).
    pub source: String,
    /// How many live scores the percentiles summarise.
    pub samples: usize,
    /// The 0th..100th percentiles of the live raw scores, non-decreasing.
    pub percentiles: Vec<f32>,
}

impl FrrTable {
    /// The table of finite live scores `scores` (at least two), labelled `source`.
    pub fn from_scores(source: &str, scores: &[f32]) -> Result<FrrTable> {
        let mut s: Vec<f32> = scores.iter().copied().filter(|v| v.is_finite()).collect();
        if s.len() < 2 {
            return Err(Error::InvalidArgument(
                "an FRR table needs at least two live scores".into(),
            ));
        }
        s.sort_by(f32::total_cmp);
        let last = (s.len() - 1) as f32;
        let percentiles = (0..PERCENTILES)
            .map(|k| {
                let pos = k as f32 / (PERCENTILES - 1) as f32 * last;
                let (i, t) = (pos.floor() as usize, pos.fract());
                let j = (i + 1).min(s.len() - 1);
                s[i] + (s[j] - s[i]) * t
            })
            .collect();
        Ok(FrrTable {
            source: source.to_string(),
            samples: s.len(),
            percentiles,
        })
    }

    /// Parses and checks a table (JSON).
    pub fn parse(text: &str) -> Result<FrrTable> {
        let t: FrrTable = serde_json::from_str(text)
            .map_err(|e| Error::InvalidArgument(format!("FRR table: {e}")))?;
        let ordered = t.percentiles.windows(2).all(|w| w[0] <= w[1]);
        if t.percentiles.len() != PERCENTILES
            || !ordered
            || t.percentiles.iter().any(|v| !v.is_finite())
        {
            return Err(Error::InvalidArgument(format!(
                "FRR table: percentiles must be {PERCENTILES} finite, non-decreasing scores"
            )));
        }
        Ok(t)
    }

    /// The embedded nuaa-dev table (parsed once; checked by a unit test, and at start by the
    /// dialects that use it).
    pub fn builtin() -> Result<&'static FrrTable> {
        static TABLE: std::sync::OnceLock<std::result::Result<FrrTable, String>> =
            std::sync::OnceLock::new();
        TABLE
            .get_or_init(|| FrrTable::parse(BUILTIN).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Internal(format!("embedded FRR table: {e}")))
    }

    /// The estimated false-rejection rate (0..1) of a threshold at raw score `score`: the
    /// fraction of live calibration scores below it.
    pub fn frr_at(&self, score: f32) -> f64 {
        let p = &self.percentiles;
        let n = p.len() - 1;
        // NaN and scores at or below the lowest percentile reject no live face.
        if score.is_nan() || score <= p[0] {
            return 0.0;
        }
        if score >= p[n] {
            return 1.0;
        }
        // Last percentile strictly below the score (p[0] < score <= p[n]).
        let i = p.partition_point(|v| *v < score) - 1;
        let (lo, hi) = (p[i], p[i + 1]);
        let t = if hi > lo {
            f64::from((score - lo) / (hi - lo))
        } else {
            0.0
        };
        (i as f64 + t) / n as f64
    }

    /// The raw score whose estimated false-rejection rate is `frr` (0..1, clamped): the
    /// threshold that rejects that fraction of live faces.
    pub fn score_at(&self, frr: f64) -> f32 {
        let p = &self.percentiles;
        let n = p.len() - 1;
        let pos = frr.clamp(0.0, 1.0) * n as f64;
        let i = (pos.floor() as usize).min(n - 1);
        let t = (pos - i as f64) as f32;
        p[i] + (p[i + 1] - p[i]) * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::calibration::Calibrations;

    #[test]
    fn rates_interpolate_and_invert() {
        let scores: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        let t = FrrTable::from_scores("ramp", &scores).unwrap();
        assert_eq!(t.samples, 101);
        assert_eq!(t.frr_at(-1.0), 0.0);
        assert_eq!(t.frr_at(0.0), 0.0);
        assert!((t.frr_at(25.0) - 0.25).abs() < 1e-9);
        assert!((t.frr_at(25.5) - 0.255).abs() < 1e-6);
        assert_eq!(t.frr_at(100.0), 1.0);
        assert!((t.score_at(0.4) - 40.0).abs() < 1e-4);
        assert_eq!(t.score_at(2.0), 100.0);
        for s in [3.3f32, 47.0, 99.9] {
            assert!((t.score_at(t.frr_at(s)) - s).abs() < 1e-3);
        }
        assert!(FrrTable::from_scores("one", &[1.0, f32::NAN]).is_err());
    }

    #[test]
    fn the_builtin_table_matches_the_documented_rejection_rates() {
        // docs/calibration.md: BPCER 7.5 % (SOFT), 16.5 % (REGULAR), 49.5 % (HARDENED) on
        // the same 200 live crops; percentiles interpolate, so allow one percentile.
        let t = FrrTable::builtin().unwrap();
        assert_eq!(t.samples, 200);
        let c = Calibrations::default();
        for (offset, bpcer) in [
            (c.soft.offset, 0.075),
            (c.regular.offset, 0.165),
            (c.hardened.offset, 0.495),
        ] {
            let frr = t.frr_at(offset);
            assert!((frr - bpcer).abs() < 0.012, "{offset}: {frr} vs {bpcer}");
        }
        assert!(FrrTable::parse(r#"{"source":"x","samples":2,"percentiles":[1.0]}"#).is_err());
    }
}
