//! Evaluation maths: ISO/IEC 30107-3 PAD metrics (APCER, BPCER, ACER), the equal error rate,
//! a DET curve rendered as SVG, and for face matching TAR at a fixed FAR, similarity
//! distributions and the Oz decision thresholds with their subject-disjoint 2-fold check.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// PAD error rates at one threshold on the raw score (live when `score >= threshold`).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct PadRates {
    /// Threshold on the raw score.
    pub threshold: f32,
    /// Attack presentations classified live.
    pub apcer: f64,
    /// Bona fide presentations classified attack.
    pub bpcer: f64,
    /// (APCER + BPCER) / 2.
    pub acer: f64,
}

/// Error rates of `live` and `spoof` scores at `threshold`.
pub fn pad_rates(live: &[f32], spoof: &[f32], threshold: f32) -> PadRates {
    let frac = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let apcer = frac(
        spoof.iter().filter(|&&s| s >= threshold).count(),
        spoof.len(),
    );
    let bpcer = frac(live.iter().filter(|&&s| s < threshold).count(), live.len());
    PadRates {
        threshold,
        apcer,
        bpcer,
        acer: (apcer + bpcer) / 2.0,
    }
}

/// Every distinct operating point, from the most lenient threshold to the strictest.
pub fn det_points(live: &[f32], spoof: &[f32]) -> Vec<PadRates> {
    let mut ts: Vec<f32> = live
        .iter()
        .chain(spoof)
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    ts.sort_by(f32::total_cmp);
    ts.dedup();
    let mut out = Vec::with_capacity(ts.len() + 1);
    for &t in &ts {
        out.push(pad_rates(live, spoof, t));
    }
    if let Some(&last) = ts.last() {
        out.push(pad_rates(live, spoof, next_up(last)));
    }
    out
}

fn next_down(v: f32) -> f32 {
    -next_up(-v)
}

fn next_up(v: f32) -> f32 {
    if v == 0.0 {
        f32::from_bits(1)
    } else if v.is_finite() {
        f32::from_bits(if v > 0.0 {
            v.to_bits() + 1
        } else {
            v.to_bits() - 1
        })
    } else {
        v
    }
}

/// Equal error rate: the point where APCER and BPCER cross (mean of the two at the threshold
/// that makes them closest), with that threshold.
pub fn eer(live: &[f32], spoof: &[f32]) -> (f64, f32) {
    det_points(live, spoof)
        .into_iter()
        .min_by(|a, b| {
            (a.apcer - a.bpcer)
                .abs()
                .total_cmp(&(b.apcer - b.bpcer).abs())
        })
        .map(|r| ((r.apcer + r.bpcer) / 2.0, r.threshold))
        .unwrap_or((0.0, 0.0))
}

/// Error rates at the lowest threshold whose APCER is at most `apcer_target` (ISO/IEC 30107-3
/// BPCER at a fixed APCER: target 0.05 gives BPCER20, 0.01 gives BPCER100).
///
/// APCER only falls as the threshold rises, so the lowest such threshold has the lowest BPCER
/// among them. Candidates are the distinct finite scores and a threshold just above the
/// highest one (which accepts no finite score); without any finite score the threshold is
/// `+inf`.
pub fn rates_at_apcer(live: &[f32], spoof: &[f32], apcer_target: f64) -> PadRates {
    det_points(live, spoof)
        .into_iter()
        .find(|r| r.apcer <= apcer_target)
        .unwrap_or_else(|| pad_rates(live, spoof, f32::INFINITY))
}

/// PAD figures of one presentation attack instrument (PAI) species against every bona fide
/// presentation.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct SpeciesRates {
    /// Attack presentations of this species.
    pub attacks: usize,
    /// APCER of this species at the operating threshold.
    pub apcer: f64,
    /// Equal error rate of this species against all bona fide presentations.
    pub eer: f64,
    /// BPCER at the lowest threshold where this species' APCER is at most 1 %.
    pub bpcer_at_apcer_1: f64,
    /// BPCER at the lowest threshold where this species' APCER is at most 5 %.
    pub bpcer_at_apcer_5: f64,
}

/// Figures of one species' attack scores `attacks` against the bona fide scores `live`, with
/// the APCER at the operating `threshold`.
pub fn species_rates(live: &[f32], attacks: &[f32], threshold: f32) -> SpeciesRates {
    SpeciesRates {
        attacks: attacks.len(),
        apcer: pad_rates(live, attacks, threshold).apcer,
        eer: eer(live, attacks).0,
        bpcer_at_apcer_1: rates_at_apcer(live, attacks, 0.01).bpcer,
        bpcer_at_apcer_5: rates_at_apcer(live, attacks, 0.05).bpcer,
    }
}

/// APCER_max: the worst species' APCER and its name (the first in order on a tie); `None`
/// without species.
pub fn apcer_max<'a, I>(species: I) -> Option<(&'a str, f64)>
where
    I: IntoIterator<Item = (&'a str, f64)>,
{
    species
        .into_iter()
        .fold(None, |best, (name, apcer)| match best {
            Some((_, b)) if b >= apcer => best,
            _ => Some((name, apcer)),
        })
}

/// True accept rate at the largest distance threshold whose false accept rate is at most
/// `far` (accept when `distance <= threshold`). Returns `(tar, threshold, achieved_far)`.
pub fn tar_at_far(genuine: &[f32], impostor: &[f32], far: f64) -> (f64, f32, f64) {
    let mut imp: Vec<f32> = impostor.to_vec();
    imp.sort_by(f32::total_cmp);
    if imp.is_empty() || genuine.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    // Accepting k impostors keeps FAR = k / n; take the largest k allowed, threshold just
    // below the (k+1)-th smallest impostor distance.
    let k = (far * imp.len() as f64).floor() as usize;
    let threshold = if k >= imp.len() {
        f32::INFINITY
    } else {
        next_down(imp[k])
    };
    let acc = genuine.iter().filter(|&&d| d <= threshold).count();
    let fa = imp.iter().filter(|&&d| d <= threshold).count();
    (
        acc as f64 / genuine.len() as f64,
        threshold,
        fa as f64 / imp.len() as f64,
    )
}

/// Summary of one set of scores: count, mean, extremes and percentiles.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Distribution {
    /// Number of scores.
    pub count: usize,
    /// Arithmetic mean (accumulated in f64).
    pub mean: f64,
    /// Smallest score.
    pub min: f32,
    /// 1st percentile ([`percentile`]).
    pub p1: f32,
    /// 5th percentile.
    pub p5: f32,
    /// 25th percentile.
    pub p25: f32,
    /// Median.
    pub p50: f32,
    /// 75th percentile.
    pub p75: f32,
    /// 95th percentile.
    pub p95: f32,
    /// 99th percentile.
    pub p99: f32,
    /// Largest score.
    pub max: f32,
}

/// The `p`-quantile (`p` in 0..=1) of ascending `sorted` values by linear interpolation between
/// the closest ranks (rank `h = (n - 1) p`; numpy's default, R's type 7); `None` when empty.
pub fn percentile(sorted: &[f32], p: f64) -> Option<f32> {
    let last = sorted.len().checked_sub(1)?;
    let h = p.clamp(0.0, 1.0) * last as f64;
    let (lo, hi) = (h.floor() as usize, (h.ceil() as usize).min(last));
    let (a, b) = (f64::from(sorted[lo]), f64::from(sorted[hi]));
    Some((a + (h - lo as f64) * (b - a)) as f32)
}

/// The [`Distribution`] of `values` (in any order); `None` when empty.
pub fn distribution(values: &[f32]) -> Option<Distribution> {
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    let q = |p: f64| percentile(&v, p);
    Some(Distribution {
        count: v.len(),
        mean: v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64,
        min: q(0.0)?,
        p1: q(0.01)?,
        p5: q(0.05)?,
        p25: q(0.25)?,
        p50: q(0.5)?,
        p75: q(0.75)?,
        p95: q(0.95)?,
        p99: q(0.99)?,
        max: q(1.0)?,
    })
}

/// The largest similarity threshold whose false accept rate on `impostor` similarities is at
/// most `far` (accept when `similarity >= threshold`): with `k = floor(far * n)` impostors
/// allowed, just above the `(k+1)`-th highest impostor similarity (impostors tied with it are
/// rejected too, so the FAR achieved may be lower than `k / n`). `-inf` when every impostor may
/// be accepted (including when there are none).
///
/// The similarity counterpart of [`tar_at_far`], which works on distances.
pub fn similarity_threshold_at_far(impostor: &[f32], far: f64) -> f32 {
    let mut imp = impostor.to_vec();
    imp.sort_by(|a, b| b.total_cmp(a));
    // The tolerance keeps a product such as 0.29 * 100 = 28.999999999999996 at 29.
    let k = (far * imp.len() as f64 + 1e-9).floor() as usize;
    match imp.get(k) {
        Some(&s) => next_up(s),
        None => f32::NEG_INFINITY,
    }
}

/// Face-matching error rates at one similarity threshold (accept when `similarity >=
/// threshold`).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct MatchRates {
    /// Threshold on the similarity.
    pub threshold: f32,
    /// Impostor pairs accepted / impostor pairs (0 without impostor pairs).
    pub far: f64,
    /// Genuine pairs rejected / genuine pairs (0 without genuine pairs).
    pub frr: f64,
    /// Impostor pairs accepted.
    pub false_accepts: usize,
    /// Genuine pairs rejected.
    pub false_rejects: usize,
}

/// FAR and FRR of `genuine` and `impostor` similarities at `threshold`.
pub fn match_rates(genuine: &[f32], impostor: &[f32], threshold: f32) -> MatchRates {
    let frac = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let false_accepts = impostor.iter().filter(|&&s| s >= threshold).count();
    let false_rejects = genuine.iter().filter(|&&s| s < threshold).count();
    MatchRates {
        threshold,
        far: frac(false_accepts, impostor.len()),
        frr: frac(false_rejects, genuine.len()),
        false_accepts,
        false_rejects,
    }
}

/// FAR target of the Oz `approve_score` threshold (0.1 %).
pub const OZ_APPROVE_FAR: f64 = 0.001;
/// FAR target of the Oz `review_score` threshold (1 %).
pub const OZ_REVIEW_FAR: f64 = 0.01;

/// `x` rounded to the nearest 2-decimal value (how the Oz defaults are written down).
pub fn round2(x: f32) -> f32 {
    ((f64::from(x) * 100.0).round() / 100.0) as f32
}

/// The smallest 2-decimal value (as f32) not below `x`: a threshold rounded up, which never
/// accepts more pairs than `x` does.
pub fn round2_up(x: f32) -> f32 {
    let mut k = (f64::from(x) * 100.0).ceil();
    if ((k - 1.0) / 100.0) as f32 >= x {
        k -= 1.0;
    }
    (k / 100.0) as f32
}

/// Oz decision thresholds fitted on one set of pairs: `approve_score` at FAR
/// [`OZ_APPROVE_FAR`], `review_score` at FAR [`OZ_REVIEW_FAR`], with the rates they give on
/// that same set.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct OzThresholds {
    /// Approved when `score >= approve.threshold`.
    pub approve: MatchRates,
    /// Operator review when `score >= review.threshold` (and not approved).
    pub review: MatchRates,
}

/// Fits both Oz thresholds on `genuine` and `impostor` similarities.
pub fn oz_thresholds(genuine: &[f32], impostor: &[f32]) -> OzThresholds {
    let at = |far| {
        match_rates(
            genuine,
            impostor,
            similarity_threshold_at_far(impostor, far),
        )
    };
    OzThresholds {
        approve: at(OZ_APPROVE_FAR),
        review: at(OZ_REVIEW_FAR),
    }
}

/// Splits scored pairs `(i, j, similarity)` of images with subject ids `ids` into genuine
/// (same subject) and impostor similarities, keeping only the pairs `keep(i, j)` accepts.
pub fn split_pairs(
    ids: &[String],
    pairs: &[(usize, usize, f32)],
    keep: impl Fn(usize, usize) -> bool,
) -> (Vec<f32>, Vec<f32>) {
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for &(i, j, s) in pairs.iter().filter(|&&(i, j, _)| keep(i, j)) {
        if ids[i] == ids[j] {
            genuine.push(s);
        } else {
            impostor.push(s);
        }
    }
    (genuine, impostor)
}

/// Subject-disjoint 2-fold split: the distinct subject ids sorted, then assigned alternately to
/// fold 0 (A: the 1st, 3rd... id) and fold 1 (B). Returns the fold of every entry of `ids`.
pub fn two_fold_split(ids: &[String]) -> Vec<usize> {
    let mut distinct: Vec<&str> = ids.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    ids.iter()
        .map(|id| {
            distinct
                .binary_search(&id.as_str())
                .map_or(0, |rank| rank % 2)
        })
        .collect()
}

/// One threshold of a held-out fold: fitted on the fitting fold, applied to the test fold,
/// exactly and rounded to 2 decimals.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct HeldOut {
    /// The threshold and its rates on the fitting fold (in-sample).
    pub fit: MatchRates,
    /// The same threshold's rates on the test fold.
    pub test: MatchRates,
    /// The threshold rounded to 2 decimals, with its rates on the test fold.
    pub test_rounded: MatchRates,
}

/// One direction of the 2-fold check: thresholds fitted on the pairs within one fold and
/// measured on the pairs within the other.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FoldResult {
    /// Name of the fitting fold (`A` or `B`).
    pub fit_fold: &'static str,
    /// Subjects of the fitting fold.
    pub fit_subjects: Vec<String>,
    /// Subjects of the test fold.
    pub test_subjects: Vec<String>,
    /// Genuine pairs within the fitting fold.
    pub fit_genuine_pairs: usize,
    /// Impostor pairs within the fitting fold.
    pub fit_impostor_pairs: usize,
    /// Genuine pairs within the test fold.
    pub test_genuine_pairs: usize,
    /// Impostor pairs within the test fold.
    pub test_impostor_pairs: usize,
    /// `approve_score` fitted at FAR [`OZ_APPROVE_FAR`].
    pub approve: HeldOut,
    /// `review_score` fitted at FAR [`OZ_REVIEW_FAR`].
    pub review: HeldOut,
}

/// The subject-disjoint 2-fold check of the Oz thresholds ([`two_fold_split`]): fit on the
/// pairs within A and test on those within B, then the reverse. Impostor pairs across the two
/// folds belong to neither and are not counted.
pub fn two_fold_check(ids: &[String], pairs: &[(usize, usize, f32)]) -> [FoldResult; 2] {
    let folds = two_fold_split(ids);
    let subjects = |f: usize| {
        let mut s: Vec<String> = ids
            .iter()
            .zip(&folds)
            .filter(|&(_, &g)| g == f)
            .map(|(id, _)| id.clone())
            .collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    let within = |f: usize| split_pairs(ids, pairs, |i, j| folds[i] == f && folds[j] == f);
    let one = |fit: usize| {
        let test = 1 - fit;
        let (fg, fi) = within(fit);
        let (tg, ti) = within(test);
        let fitted = oz_thresholds(&fg, &fi);
        let held = |r: MatchRates| HeldOut {
            fit: r,
            test: match_rates(&tg, &ti, r.threshold),
            test_rounded: match_rates(&tg, &ti, round2(r.threshold)),
        };
        FoldResult {
            fit_fold: ["A", "B"][fit],
            fit_subjects: subjects(fit),
            test_subjects: subjects(test),
            fit_genuine_pairs: fg.len(),
            fit_impostor_pairs: fi.len(),
            test_genuine_pairs: tg.len(),
            test_impostor_pairs: ti.len(),
            approve: held(fitted.approve),
            review: held(fitted.review),
        }
    };
    [one(0), one(1)]
}

/// Inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9).
pub fn probit(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let low = 0.02425;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -probit(1.0 - p)
    }
}

/// One curve of a DET plot: a PAI species, or all attacks pooled.
#[derive(Debug, Clone, PartialEq)]
pub struct DetCurve {
    /// Legend text.
    pub label: String,
    /// Operating points from [`det_points`].
    pub points: Vec<PadRates>,
    /// This curve's rates at the operating threshold, marked with a small dot.
    pub operating: Option<PadRates>,
    /// All attacks together: drawn in black, on top of the species curves.
    pub pooled: bool,
}

/// Species curve colours (the operating point is red); past the last one they repeat dashed.
const CURVE_COLOURS: [&str; 8] = [
    "#1f5fbf", "#e08000", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#a6761d", "#17becf",
];

/// Renders DET curves (APCER vs BPCER on normal-deviate axes) as a standalone SVG with a
/// legend, marking the operating point and the EER of all attacks.
pub fn det_svg(curves: &[DetCurve], operating: &PadRates, eer_value: f64, title: &str) -> String {
    let (w, h, m) = (560.0, 520.0, 70.0);
    let ticks = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8];
    let (lo, hi) = (probit(0.0005), probit(0.9));
    let sx = |p: f64| m + (probit(p) - lo) / (hi - lo) * (w - 1.5 * m);
    let sy = |p: f64| h - m - (probit(p) - lo) / (hi - lo) * (h - 1.7 * m);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="14" text-anchor="middle">{}</text>"#,
        w / 2.0,
        xml_escape(title)
    );
    for &t in &ticks {
        let (x, y) = (sx(t), sy(t));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            sy(0.0005),
            sy(0.9)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            sx(0.0005),
            sx(0.9)
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            h - m + 16.0,
            pct(t)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            m - 6.0,
            y + 4.0,
            pct(t)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">APCER (attacks accepted)</text>"#,
        w / 2.0,
        h - 20.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">BPCER (bona fide rejected)</text>"#,
        h / 2.0,
        h / 2.0
    );
    let clamp = |p: f64| p.clamp(0.0005, 0.9);
    // Species first, the pooled curve last so that it stays visible.
    let mut order: Vec<(usize, &DetCurve)> = curves.iter().enumerate().collect();
    order.sort_by_key(|(_, c)| c.pooled);
    let mut species_seen = 0;
    let mut styles = vec![("#222", 2.5, ""); curves.len()];
    for (i, c) in curves.iter().enumerate() {
        if !c.pooled {
            let dash = if species_seen >= CURVE_COLOURS.len() {
                r#" stroke-dasharray="6 3""#
            } else {
                ""
            };
            styles[i] = (CURVE_COLOURS[species_seen % CURVE_COLOURS.len()], 1.8, dash);
            species_seen += 1;
        }
    }
    for &(i, c) in &order {
        let (colour, width, dash) = styles[i];
        let path: Vec<String> = c
            .points
            .iter()
            .map(|r| format!("{:.1},{:.1}", sx(clamp(r.apcer)), sy(clamp(r.bpcer))))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="{width}"{dash} points="{}"><title>{}</title></polyline>"#,
            path.join(" "),
            xml_escape(&c.label)
        );
        if let Some(op) = &c.operating {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                sx(clamp(op.apcer)),
                sy(clamp(op.bpcer))
            );
        }
    }
    // Legend in the upper right corner, where DET curves rarely pass.
    let longest = curves.iter().map(|c| c.label.chars().count()).max();
    if let Some(longest) = longest {
        let (lw, lh) = (
            34.0 + 6.2 * longest as f64,
            8.0 + 16.0 * curves.len() as f64,
        );
        let (lx, ly) = (sx(0.9) - lw - 6.0, sy(0.9) + 6.0);
        let _ = writeln!(
            s,
            r##"<rect x="{lx:.1}" y="{ly:.1}" width="{lw:.1}" height="{lh:.1}" fill="white" stroke="#bbb"/>"##
        );
        for (row, c) in curves.iter().enumerate() {
            let (colour, width, dash) = styles[row];
            let y = ly + 14.0 + 16.0 * row as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="{width}"{dash}/>"#,
                lx + 6.0,
                y - 4.0,
                lx + 26.0,
                y - 4.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
                lx + 30.0,
                xml_escape(&c.label)
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="4 3"/>"##,
        sx(0.0005),
        sy(0.0005),
        sx(0.9),
        sy(0.9)
    );
    let (ox, oy) = (sx(clamp(operating.apcer)), sy(clamp(operating.bpcer)));
    let _ = writeln!(
        s,
        r##"<circle cx="{ox:.1}" cy="{oy:.1}" r="5" fill="#d33"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}">operating point: APCER {}, BPCER {}</text>"#,
        ox + 8.0,
        oy - 6.0,
        pct(operating.apcer),
        pct(operating.bpcer)
    );
    let (ex, ey) = (sx(clamp(eer_value)), sy(clamp(eer_value)));
    let _ = writeln!(
        s,
        r##"<circle cx="{ex:.1}" cy="{ey:.1}" r="4" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}">EER {}</text>"#,
        ex + 8.0,
        ey + 14.0,
        pct(eer_value)
    );
    s.push_str("</svg>\n");
    s
}

fn pct(p: f64) -> String {
    let v = p * 100.0;
    if v > 0.0 && v < 10.0 && (v * 10.0).round() % 10.0 != 0.0 {
        format!("{v:.1}%")
    } else {
        format!("{v:.0}%")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One judged image of a fusion study: its subject, label and each network's live log-odds.
#[derive(Debug, Clone, PartialEq)]
pub struct FusionSample {
    /// Subject id (images of one subject are held out together).
    pub subject: String,
    /// A live image (else an attack).
    pub live: bool,
    /// Today's pipeline score: log-odds of the pair's mean live softmax.
    pub dual: f64,
    /// MiniFASNetV2's live log-odds.
    pub v2: f64,
    /// MiniFASNetV1SE's live log-odds.
    pub v1se: f64,
    /// The CelebA-Spoof network's live log-odds.
    pub celeba: f64,
}

impl FusionSample {
    /// The sample of an image with every network's output, or `None` (no face, no result).
    pub fn of(
        subject: &str,
        live: bool,
        liveness: Option<&crate::engine::Liveness>,
        celeba: Option<f32>,
    ) -> Option<FusionSample> {
        let l = liveness?;
        let logodds = |name: &str| -> Option<f64> {
            let o = l.networks.iter().find(|o| o.name == name)?;
            let p = f64::from(o.softmax[crate::nn::minifasnet::LIVE_CLASS]).clamp(1e-7, 1.0 - 1e-7);
            Some((p / (1.0 - p)).ln())
        };
        Some(FusionSample {
            subject: subject.to_string(),
            live,
            dual: f64::from(l.score),
            v2: logodds(crate::engine::pipeline::PadNetwork::V2.name())?,
            v1se: logodds(crate::engine::pipeline::PadNetwork::V1se.name())?,
            celeba: f64::from(celeba?),
        })
    }
}

/// A pipeline's figures in a fusion study.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyResult {
    /// EER of its scores (cross-validated scores for a fitted fusion), 0..1.
    pub eer: f64,
    /// APCER over the held-out subjects, each at the EER threshold of the others.
    pub cv_apcer: f64,
    /// BPCER over the held-out subjects, the same way.
    pub cv_bpcer: f64,
    /// A fitted fusion's weights (features then bias) fitted on every subject; empty for
    /// fixed pipelines.
    pub weights: Vec<f64>,
}

/// The distinct subjects of a study.
pub fn subjects(samples: &[FusionSample]) -> usize {
    let mut s: Vec<&str> = samples.iter().map(|x| x.subject.as_str()).collect();
    s.sort_unstable();
    s.dedup();
    s.len()
}

/// L2 penalty of the fitted fusions.
const FUSION_L2: f64 = 1e-2;

/// Scores one sample.
type Scorer = Box<dyn Fn(&FusionSample) -> f64>;
/// Fits a scorer on training samples (`None`: it cannot be fitted on them).
type Fitter<'a> = &'a dyn Fn(&[&FusionSample]) -> Option<Scorer>;

/// Scores every sample of subject-held-out folds: for each subject, `fit` on the others gives
/// the scorer of its samples and the threshold (the others' EER point). Returns the pooled
/// held-out scores with the per-fold decisions' APCER and BPCER.
fn cross_validate(
    samples: &[FusionSample],
    fit: Fitter<'_>,
) -> Option<(Vec<f32>, Vec<f32>, f64, f64)> {
    let mut ids: Vec<&str> = samples.iter().map(|x| x.subject.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let (mut live, mut spoof) = (Vec::new(), Vec::new());
    let (mut rejected_live, mut accepted_attacks) = (0usize, 0usize);
    for id in ids {
        let train: Vec<&FusionSample> = samples.iter().filter(|x| x.subject != id).collect();
        let scorer = fit(&train)?;
        let (tl, ts): (Vec<f32>, Vec<f32>) = (
            train
                .iter()
                .filter(|x| x.live)
                .map(|x| scorer(x) as f32)
                .collect(),
            train
                .iter()
                .filter(|x| !x.live)
                .map(|x| scorer(x) as f32)
                .collect(),
        );
        if tl.is_empty() || ts.is_empty() {
            return None;
        }
        let (_, threshold) = eer(&tl, &ts);
        for x in samples.iter().filter(|x| x.subject == id) {
            let s = scorer(x) as f32;
            if x.live {
                live.push(s);
                rejected_live += usize::from(s < threshold);
            } else {
                spoof.push(s);
                accepted_attacks += usize::from(s >= threshold);
            }
        }
    }
    let apcer = accepted_attacks as f64 / spoof.len().max(1) as f64;
    let bpcer = rejected_live as f64 / live.len().max(1) as f64;
    Some((live, spoof, apcer, bpcer))
}

/// A logistic fusion over `features` (the bias slot last): the fitter cross-validation calls
/// on each fold's training samples, and the weights fitted on every sample.
fn logistic<const N: usize>(
    samples: &[FusionSample],
    features: fn(&FusionSample) -> [f64; N],
) -> (impl Fn(&[&FusionSample]) -> Option<Scorer>, Vec<f64>) {
    let fit = move |t: &[&FusionSample]| -> Option<crate::engine::fusion::LogisticFusion<N>> {
        let x: Vec<[f64; N]> = t.iter().map(|s| features(s)).collect();
        let y: Vec<bool> = t.iter().map(|s| s.live).collect();
        crate::engine::fusion::LogisticFusion::fit(&x, &y, FUSION_L2)
    };
    let all: Vec<&FusionSample> = samples.iter().collect();
    let weights = fit(&all).map(|m| m.coef.to_vec()).unwrap_or_default();
    let fitter = move |t: &[&FusionSample]| -> Option<Scorer> {
        let m = fit(t)?;
        Some(Box::new(move |s: &FusionSample| m.score(&features(s))))
    };
    (fitter, weights)
}

/// Every network alone, today's pair, the mean of the three log-odds, and logistic fusions
/// of the pair and of all three, each measured by leave-one-subject-out cross-validation
/// (a fixed pipeline fits only its threshold; a fusion fits its weights too).
pub fn fusion_study(samples: &[FusionSample]) -> Vec<(String, StudyResult)> {
    type Feature = fn(&FusionSample) -> f64;
    let fixed: [(&str, Feature); 5] = [
        ("minifasnet-dual (today)", |x| x.dual),
        ("minifasnet-v2", |x| x.v2),
        ("minifasnet-v1se", |x| x.v1se),
        ("celeba", |x| x.celeba),
        ("minifasnet-triple (mean log-odds)", |x| {
            (x.v2 + x.v1se + x.celeba) / 3.0
        }),
    ];
    let pair: fn(&FusionSample) -> [f64; 3] = |x| [x.v2, x.v1se, 1.0];
    let triple: fn(&FusionSample) -> [f64; 4] = |x| [x.v2, x.v1se, x.celeba, 1.0];
    let (fit_pair, weights_pair) = logistic(samples, pair);
    let (fit_triple, weights_triple) = logistic(samples, triple);
    // (name, what each fold fits, the weights fitted on every sample).
    type Candidate<'a> = (
        &'a str,
        Box<dyn Fn(&[&FusionSample]) -> Option<Scorer> + 'a>,
        Vec<f64>,
    );
    let mut candidates: Vec<Candidate<'_>> = fixed
        .into_iter()
        .map(|(name, f)| -> Candidate<'_> {
            (
                name,
                Box::new(move |_: &[&FusionSample]| -> Option<Scorer> { Some(Box::new(f)) }),
                Vec::new(),
            )
        })
        .collect();
    candidates.push(("logistic(v2, v1se)", Box::new(fit_pair), weights_pair));
    candidates.push((
        "logistic(v2, v1se, celeba)",
        Box::new(fit_triple),
        weights_triple,
    ));
    let mut out = Vec::new();
    for (name, fit, weights) in candidates {
        if let Some((l, s, apcer, bpcer)) = cross_validate(samples, &*fit) {
            out.push((
                name.to_string(),
                StudyResult {
                    eer: eer(&l, &s).0,
                    cv_apcer: apcer,
                    cv_bpcer: bpcer,
                    weights,
                },
            ));
        }
    }
    out
}

/// One image of a replay-signal study: its subject, class and periodic-peak prominence.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySample {
    /// Subject id (first 4 characters of the file name).
    pub subject: String,
    /// The attack species, `None` for a bona fide image.
    pub species: Option<String>,
    /// Periodic-peak prominence of the judged face, dB (`None`: no face or region too small).
    pub prominence: Option<f32>,
    /// Whether the PAD pipeline accepted the image as live at the operating point.
    pub pad_live: bool,
}

/// Figures of one class (bona fide, or one attack species) in a [`replay_study`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplayClass {
    /// Images of the class.
    pub images: usize,
    /// Images without a prominence (no face, region too small).
    pub unmeasured: usize,
    /// Distribution of the prominences, dB.
    pub prominence_db: Option<Distribution>,
    /// Share flagged (prominence above the threshold): false rejections for bona fide images,
    /// detections for attacks. Threshold fitted on every bona fide image.
    pub flagged: f64,
    /// The same, each subject's images judged by the threshold of the other subjects' bona fide
    /// images (leave-one-subject-out).
    pub cv_flagged: f64,
    /// Share the PAD pipeline accepts (BPCER complement for bona fide images, APCER for
    /// attacks).
    pub pad_accepted: f64,
    /// Share accepted by PAD and not flagged, leave-one-subject-out thresholds.
    pub cv_combined_accepted: f64,
}

/// A replay-signal study: the threshold, then each class.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplayStudy {
    /// The threshold, dB: the largest prominence of any bona fide image, so that none of them
    /// is flagged in-sample. Attacks play no part in it.
    pub threshold_db: Option<f32>,
    /// The bona fide images.
    pub bona_fide: ReplayClass,
    /// Each attack species, by name.
    pub species: BTreeMap<String, ReplayClass>,
}

/// Studies a replay signal: a face is flagged when its prominence exceeds the largest bona
/// fide prominence (of every subject in-sample; of the other subjects, cross-validated).
pub fn replay_study(samples: &[ReplaySample]) -> ReplayStudy {
    let live_max = |skip: Option<&str>| {
        samples
            .iter()
            .filter(|x| x.species.is_none() && Some(x.subject.as_str()) != skip)
            .filter_map(|x| x.prominence)
            .max_by(f32::total_cmp)
    };
    let threshold = live_max(None);
    let mut held_out: BTreeMap<&str, Option<f32>> = BTreeMap::new();
    for x in samples {
        held_out
            .entry(x.subject.as_str())
            .or_insert_with(|| live_max(Some(x.subject.as_str())));
    }
    let flagged = |p: Option<f32>, t: Option<f32>| matches!((p, t), (Some(p), Some(t)) if p > t);
    let class = |members: Vec<&ReplaySample>| {
        let n = members.len().max(1) as f64;
        let share =
            |f: &dyn Fn(&ReplaySample) -> bool| members.iter().filter(|x| f(x)).count() as f64 / n;
        let cv_t = |x: &ReplaySample| held_out.get(x.subject.as_str()).copied().flatten();
        let values: Vec<f32> = members.iter().filter_map(|x| x.prominence).collect();
        ReplayClass {
            images: members.len(),
            unmeasured: members.len() - values.len(),
            prominence_db: distribution(&values),
            flagged: share(&|x| flagged(x.prominence, threshold)),
            cv_flagged: share(&|x| flagged(x.prominence, cv_t(x))),
            pad_accepted: share(&|x| x.pad_live),
            cv_combined_accepted: share(&|x| x.pad_live && !flagged(x.prominence, cv_t(x))),
        }
    };
    let mut names: Vec<&str> = samples
        .iter()
        .filter_map(|x| x.species.as_deref())
        .collect();
    names.sort_unstable();
    names.dedup();
    ReplayStudy {
        threshold_db: threshold,
        bona_fide: class(samples.iter().filter(|x| x.species.is_none()).collect()),
        species: names
            .into_iter()
            .map(|n| {
                let members = samples
                    .iter()
                    .filter(|x| x.species.as_deref() == Some(n))
                    .collect();
                (n.to_string(), class(members))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_each_side() {
        let live = [0.9, 0.8, 0.2, 0.7];
        let spoof = [0.1, 0.6, 0.3, 0.05];
        let r = pad_rates(&live, &spoof, 0.5);
        assert_eq!((r.apcer, r.bpcer), (0.25, 0.25));
        assert_eq!(r.acer, 0.25);
    }

    #[test]
    fn eer_of_separable_and_overlapping_sets() {
        let (e, t) = eer(&[0.8, 0.9, 0.95], &[0.1, 0.2, 0.3]);
        assert_eq!(e, 0.0);
        assert!(t > 0.3 && t <= 0.8);
        let (e, _) = eer(&[0.1, 0.6, 0.7, 0.8], &[0.2, 0.3, 0.4, 0.9]);
        assert!((e - 0.25).abs() < 1e-9, "{e}");
    }

    #[test]
    fn tar_at_far_respects_the_far_bound() {
        let impostor: Vec<f32> = (0..1000).map(|i| 0.3 + i as f32 * 0.001).collect();
        let genuine = [0.1, 0.2, 0.305, 0.31, 0.5];
        let (tar, thr, far) = tar_at_far(&genuine, &impostor, 0.01);
        assert!(far <= 0.01 + 1e-12, "{far}");
        assert!((0.309..0.3101).contains(&thr), "{thr}");
        assert!((tar - 0.6).abs() < 1e-9, "{tar}");
    }

    #[test]
    fn percentiles_interpolate_between_closest_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 0.25), Some(1.75));
        assert_eq!(percentile(&v, 0.5), Some(2.5));
        assert_eq!(percentile(&v, 0.75), Some(3.25));
        assert_eq!(percentile(&v, 1.0), Some(4.0));
        assert!((percentile(&v, 0.99).unwrap() - 3.97).abs() < 1e-6);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.25), Some(2.0));
        assert_eq!(percentile(&[5.0], 0.99), Some(5.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn distribution_sorts_and_summarises() {
        let d = distribution(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((d.count, d.mean, d.min, d.max), (4, 2.5, 1.0, 4.0));
        assert_eq!((d.p25, d.p50, d.p75), (1.75, 2.5, 3.25));
        assert!(
            (d.p1 - 1.03).abs() < 1e-6 && (d.p99 - 3.97).abs() < 1e-6,
            "{d:?}"
        );
        assert!(
            (d.p5 - 1.15).abs() < 1e-6 && (d.p95 - 3.85).abs() < 1e-6,
            "{d:?}"
        );
        assert_eq!(distribution(&[]), None);
    }

    #[test]
    fn similarity_threshold_keeps_far_at_or_under_the_target() {
        let imp = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
        // 10 % of 10: one impostor (0.9) may pass, the threshold is just above 0.8.
        let t = similarity_threshold_at_far(&imp, 0.1);
        assert_eq!(t, next_up(0.8));
        assert_eq!(match_rates(&[], &imp, t).false_accepts, 1);
        // 5 % rounds down to none: just above the highest impostor.
        assert_eq!(similarity_threshold_at_far(&imp, 0.05), next_up(0.9));
        // 25 %: two may pass (FAR 20 %).
        let t = similarity_threshold_at_far(&imp, 0.25);
        assert_eq!((t, match_rates(&[], &imp, t).far), (next_up(0.7), 0.2));
        // Everything may pass.
        assert_eq!(similarity_threshold_at_far(&imp, 1.0), f32::NEG_INFINITY);
        assert_eq!(similarity_threshold_at_far(&[], 0.01), f32::NEG_INFINITY);
        // Ties with the first rejected impostor are rejected too: FAR 0 < 25 %.
        let tied = [0.9, 0.9, 0.5, 0.1];
        let t = similarity_threshold_at_far(&tied, 0.25);
        assert_eq!((t, match_rates(&[], &tied, t).far), (next_up(0.9), 0.0));
        // A product just under an integer still allows that many: 0.29 * 100 is
        // 28.999999999999996 in f64, and 29 impostors may pass.
        let many: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let t = similarity_threshold_at_far(&many, 0.29);
        assert_eq!(match_rates(&[], &many, t).false_accepts, 29);
    }

    #[test]
    fn match_rates_accept_at_or_above_the_threshold() {
        let genuine = [0.9, 0.7, 0.5, 0.3];
        let impostor = [0.6, 0.4, 0.2, 0.1, 0.0];
        let r = match_rates(&genuine, &impostor, 0.5);
        assert_eq!(
            (r.far, r.frr, r.false_accepts, r.false_rejects),
            (0.2, 0.25, 1, 1)
        );
        let r = match_rates(&genuine, &impostor, 0.6);
        assert_eq!(
            (r.far, r.frr, r.false_accepts, r.false_rejects),
            (0.2, 0.5, 1, 2)
        );
        let r = match_rates(&[], &[], 0.5);
        assert_eq!((r.far, r.frr), (0.0, 0.0));
    }

    #[test]
    fn oz_thresholds_sit_at_far_0_1_and_1_percent() {
        let impostor: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let genuine = [0.9985, 0.995, 0.5];
        let oz = oz_thresholds(&genuine, &impostor);
        assert_eq!(oz.approve.threshold, next_up(0.998));
        assert_eq!((oz.approve.false_accepts, oz.approve.false_rejects), (1, 2));
        assert_eq!(oz.approve.far, 0.001);
        assert_eq!(oz.review.threshold, next_up(0.989));
        assert_eq!((oz.review.false_accepts, oz.review.false_rejects), (10, 1));
        assert_eq!(oz.review.far, 0.01);
        assert_eq!(round2(0.6012), 0.6);
        assert_eq!((round2(0.5749), round2(0.5751)), (0.57, 0.58));
        assert_eq!((round2_up(0.6012), round2_up(0.5701)), (0.61, 0.58));
        // Already on 2 decimals (0.6 and 0.57 are not exact in f32): unchanged.
        assert_eq!((round2_up(0.6), round2_up(0.57)), (0.6, 0.57));
        assert_eq!(round2_up(next_up(0.57)), 0.58);
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subjects_alternate_between_the_folds_in_sorted_order() {
        let ids = strings(&["0003", "0001", "0002", "0001", "0004"]);
        assert_eq!(two_fold_split(&ids), [0, 0, 1, 0, 1]);
        assert_eq!(two_fold_split(&strings(&["b", "a"])), [1, 0]);
        assert!(two_fold_split(&[]).is_empty());
    }

    #[test]
    fn split_pairs_labels_by_subject_and_filters() {
        let ids = strings(&["a", "a", "b", "c"]);
        let pairs = [
            (0, 1, 0.9),
            (0, 2, 0.1),
            (0, 3, 0.2),
            (1, 2, 0.3),
            (1, 3, 0.4),
            (2, 3, 0.5),
        ];
        let (g, i) = split_pairs(&ids, &pairs, |_, _| true);
        assert_eq!((g, i), (vec![0.9], vec![0.1, 0.2, 0.3, 0.4, 0.5]));
        let (g, i) = split_pairs(&ids, &pairs, |a, b| a != 0 && b != 0);
        assert_eq!((g, i), (vec![], vec![0.3, 0.4, 0.5]));
    }

    #[test]
    fn two_fold_check_fits_on_one_fold_and_tests_on_the_other() {
        // Two images each of s1..s4: A = {s1, s3} (images 0, 1, 4, 5), B = {s2, s4}.
        let ids = strings(&["s1", "s1", "s2", "s2", "s3", "s3", "s4", "s4"]);
        let sim = |i: usize, j: usize| -> f32 {
            match (i, j) {
                (6, 7) => 0.55,
                _ if ids[i] == ids[j] => 0.9,
                (0, 4) => 0.5,
                (0, 5) => 0.4,
                (1, 4) => 0.3,
                (1, 5) => 0.2,
                (2, 6) => 0.6,
                (2, 7) | (3, 6) | (3, 7) => 0.1,
                // Across the folds: counted in neither (they would raise every FAR).
                _ => 0.99,
            }
        };
        let pairs: Vec<(usize, usize, f32)> = (0..8)
            .flat_map(|i| (i + 1..8).map(move |j| (i, j)))
            .map(|(i, j)| (i, j, sim(i, j)))
            .collect();
        let [a, b] = two_fold_check(&ids, &pairs);
        assert_eq!(a.fit_fold, "A");
        assert_eq!(a.fit_subjects, strings(&["s1", "s3"]));
        assert_eq!(a.test_subjects, strings(&["s2", "s4"]));
        assert_eq!(
            (
                a.fit_genuine_pairs,
                a.fit_impostor_pairs,
                a.test_genuine_pairs,
                a.test_impostor_pairs
            ),
            (2, 4, 2, 4)
        );
        // Four impostors in A: no false accept allowed at either target, so both thresholds
        // sit just above A's highest impostor, 0.5. In B they accept 0.6 and the s4 pair 0.55.
        for h in [a.approve, a.review] {
            assert_eq!(h.fit.threshold, next_up(0.5));
            assert_eq!((h.fit.far, h.fit.frr), (0.0, 0.0));
            assert_eq!(
                (h.test.far, h.test.frr, h.test.false_accepts),
                (0.25, 0.0, 1)
            );
            assert_eq!(h.test_rounded.threshold, 0.5);
            assert_eq!((h.test_rounded.far, h.test_rounded.frr), (0.25, 0.0));
        }
        // Fitted on B: just above 0.6, which rejects s4's genuine pair there; none fails in A.
        assert_eq!(b.fit_fold, "B");
        assert_eq!(b.fit_subjects, strings(&["s2", "s4"]));
        for h in [b.approve, b.review] {
            assert_eq!(h.fit.threshold, next_up(0.6));
            assert_eq!((h.fit.far, h.fit.frr), (0.0, 0.5));
            assert_eq!((h.test.far, h.test.frr), (0.0, 0.0));
            assert_eq!(h.test_rounded.threshold, 0.6);
        }
    }

    #[test]
    fn probit_is_the_normal_quantile() {
        assert!(probit(0.5).abs() < 1e-9);
        assert!((probit(0.975) - 1.959_964).abs() < 1e-5);
        assert!((probit(0.001) + 3.090_232).abs() < 1e-5);
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let live = [0.9f32, 0.8, 0.2];
        let spoof = [0.1f32, 0.6, 0.3];
        let op = pad_rates(&live, &spoof, 0.5);
        let curve = |label: &str, spoof: &[f32], pooled| DetCurve {
            label: label.into(),
            points: det_points(&live, spoof),
            operating: Some(pad_rates(&live, spoof, 0.5)),
            pooled,
        };
        let curves = [
            curve("print", &spoof[..2], false),
            curve("re<play>", &spoof[2..], false),
            curve("all attacks", &spoof, true),
        ];
        let svg = det_svg(&curves, &op, eer(&live, &spoof).0, "t<1>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t&lt;1&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches("</polyline>").count(), 3);
        for label in [">print<", ">re&lt;play&gt;<", ">all attacks<"] {
            assert!(svg.contains(label), "{label}");
        }
        // Distinct colours for the two species, black for the pooled curve.
        assert!(svg.contains(CURVE_COLOURS[0]) && svg.contains(CURVE_COLOURS[1]));
        assert!(svg.contains(r##"stroke="#222""##));
    }

    /// Scores shared by the tests below: 5 bona fide, a `print` and a `replay` species.
    const LIVE: [f32; 5] = [0.1, 0.4, 0.6, 0.8, 0.9];
    const PRINT: [f32; 4] = [0.0, 0.2, 0.3, 0.5];
    const REPLAY: [f32; 2] = [0.7, 0.95];

    #[test]
    fn rates_at_apcer_take_the_lowest_threshold_meeting_the_target() {
        let spoof = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.5, 0.7];
        // At most 2 of 10 attacks accepted: any threshold above 0.35; the lowest candidate
        // is the bona fide score 0.4, which rejects only 0.1.
        let r = rates_at_apcer(&LIVE, &spoof, 0.2);
        assert_eq!((r.threshold, r.apcer, r.bpcer), (0.4, 0.2, 0.2));
        // At most 1: above 0.5, i.e. 0.6, rejecting 0.1 and 0.4.
        let r = rates_at_apcer(&LIVE, &spoof, 0.1);
        assert_eq!((r.threshold, r.apcer, r.bpcer), (0.6, 0.1, 0.4));
        // None (5 % of 10 rounds down to 0): above 0.7, i.e. 0.8.
        let r = rates_at_apcer(&LIVE, &spoof, 0.05);
        assert_eq!((r.threshold, r.apcer, r.bpcer), (0.8, 0.0, 0.6));
        // Everything allowed: the lowest score, nothing rejected.
        let r = rates_at_apcer(&LIVE, &spoof, 1.0);
        assert_eq!((r.threshold, r.apcer, r.bpcer), (0.0, 1.0, 0.0));
        // An attack above every bona fide score: all bona fide rejected.
        let r = rates_at_apcer(&[0.2, 0.3], &[0.1, 0.9], 0.01);
        assert!(r.threshold > 0.9, "{r:?}");
        assert_eq!((r.apcer, r.bpcer), (0.0, 1.0));
        // No finite score at all.
        let r = rates_at_apcer(&[], &[f32::NEG_INFINITY], 0.01);
        assert_eq!((r.threshold, r.apcer, r.bpcer), (f32::INFINITY, 0.0, 0.0));
    }

    #[test]
    fn species_rates_by_hand() {
        let p = species_rates(&LIVE, &PRINT, 0.45);
        // APCER at 0.45: only 0.5 of 4. EER: closest at 0.4 (APCER 1/4, BPCER 1/5).
        // APCER <= 1 % and <= 5 % both mean no print accepted: threshold 0.6, BPCER 2/5.
        assert_eq!(
            (p.attacks, p.apcer, p.bpcer_at_apcer_1, p.bpcer_at_apcer_5),
            (4, 0.25, 0.4, 0.4)
        );
        assert!((p.eer - 0.225).abs() < 1e-12, "{p:?}");
        let r = species_rates(&LIVE, &REPLAY, 0.45);
        // Both replays beat 0.45; none accepted needs a threshold above 0.95: BPCER 1.
        assert_eq!(
            (r.attacks, r.apcer, r.bpcer_at_apcer_1, r.bpcer_at_apcer_5),
            (2, 1.0, 1.0, 1.0)
        );
        // The pooled APCER is the attack-weighted mean of the species APCERs.
        let all: Vec<f32> = PRINT.iter().chain(&REPLAY).copied().collect();
        let pooled = pad_rates(&LIVE, &all, 0.45).apcer;
        assert_eq!(pooled, 0.5);
        assert_eq!(pooled, (4.0 * p.apcer + 2.0 * r.apcer) / 6.0);
    }

    #[test]
    fn apcer_max_names_the_worst_species() {
        assert_eq!(
            apcer_max([("print", 0.25), ("replay", 1.0), ("mask", 0.5)]),
            Some(("replay", 1.0))
        );
        assert_eq!(apcer_max([("a", 0.5), ("b", 0.5)]), Some(("a", 0.5)));
        assert_eq!(apcer_max([("a", 0.0)]), Some(("a", 0.0)));
        assert_eq!(apcer_max(std::iter::empty::<(&str, f64)>()), None);
    }

    #[test]
    fn the_fusion_study_holds_each_subject_out() {
        // Four subjects; V2 separates live from attack everywhere, CelebA nowhere.
        let mut samples = Vec::new();
        for subject in ["s001", "s002", "s003", "s004"] {
            for k in 0..5 {
                let t = f64::from(k) * 0.1;
                for live in [true, false] {
                    let v2 = if live { 2.0 + t } else { -2.0 - t };
                    samples.push(FusionSample {
                        subject: subject.to_string(),
                        live,
                        dual: v2,
                        v2,
                        v1se: v2 * 0.5,
                        celeba: if k % 2 == 0 { 1.0 } else { -1.0 },
                    });
                }
            }
        }
        assert_eq!(subjects(&samples), 4);
        let study = fusion_study(&samples);
        let get = |n: &str| {
            study
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, r)| r.clone())
        };
        let v2 = get("minifasnet-v2").unwrap();
        assert_eq!((v2.eer, v2.cv_apcer, v2.cv_bpcer), (0.0, 0.0, 0.0));
        let c = get("celeba").unwrap();
        assert!(c.eer >= 0.3, "{c:?}");
        let triple = get("logistic(v2, v1se, celeba)").unwrap();
        assert_eq!((triple.cv_apcer, triple.cv_bpcer), (0.0, 0.0));
        assert_eq!(triple.weights.len(), 4);
        assert_eq!(study.len(), 7);
    }

    #[test]
    fn the_replay_threshold_comes_from_bona_fide_images_only() {
        let x =
            |subject: &str, species: Option<&str>, prominence: f32, pad_live: bool| ReplaySample {
                subject: subject.into(),
                species: species.map(str::to_string),
                prominence: Some(prominence),
                pad_live,
            };
        let samples = vec![
            x("0001", None, 5.0, true),
            x("0001", None, 6.0, true),
            x("0002", None, 8.0, false),
            x("0001", Some("replay"), 7.0, true),
            x("0002", Some("replay"), 9.0, true),
            x("0002", Some("replay"), 4.0, false),
            ReplaySample {
                prominence: None,
                ..x("0002", Some("print"), 0.0, true)
            },
        ];
        let r = replay_study(&samples);
        assert_eq!(r.threshold_db, Some(8.0));
        assert_eq!(r.bona_fide.images, 3);
        assert_eq!(r.bona_fide.flagged, 0.0);
        // Held out: 0001 judged by 8.0 (none of its live flagged); 0002 by 6.0 (its 8.0 is).
        assert!((r.bona_fide.cv_flagged - 1.0 / 3.0).abs() < 1e-12);
        let replay = &r.species["replay"];
        assert!((replay.flagged - 1.0 / 3.0).abs() < 1e-12); // only 9.0 > 8.0
                                                             // 0001's 7.0 vs 8.0: no; 0002's 9.0 vs 6.0: yes; 4.0: no.
        assert!((replay.cv_flagged - 1.0 / 3.0).abs() < 1e-12);
        assert!((replay.pad_accepted - 2.0 / 3.0).abs() < 1e-12);
        assert!((replay.cv_combined_accepted - 1.0 / 3.0).abs() < 1e-12);
        let print = &r.species["print"];
        assert_eq!((print.images, print.unmeasured), (1, 1));
        assert_eq!(print.flagged, 0.0);
        assert_eq!(print.cv_combined_accepted, 1.0);
        assert!(print.prominence_db.is_none());
    }
}
