//! Evaluation maths: ISO/IEC 30107-3 PAD metrics (APCER, BPCER, ACER), the equal error rate,
//! a DET curve rendered as SVG, and TAR at a fixed FAR for face matching.

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

/// Renders a DET curve (APCER vs BPCER on normal-deviate axes) as a standalone SVG, marking
/// the operating point and the EER.
pub fn det_svg(points: &[PadRates], operating: &PadRates, eer_value: f64, title: &str) -> String {
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
    let path: Vec<String> = points
        .iter()
        .map(|r| format!("{:.1},{:.1}", sx(clamp(r.apcer)), sy(clamp(r.bpcer))))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="{}"/>"##,
        path.join(" ")
    );
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
    fn probit_is_the_normal_quantile() {
        assert!(probit(0.5).abs() < 1e-9);
        assert!((probit(0.975) - 1.959_964).abs() < 1e-5);
        assert!((probit(0.001) + 3.090_232).abs() < 1e-5);
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let live = [0.9f32, 0.8, 0.2];
        let spoof = [0.1f32, 0.6, 0.3];
        let pts = det_points(&live, &spoof);
        let op = pad_rates(&live, &spoof, 0.5);
        let svg = det_svg(&pts, &op, eer(&live, &spoof).0, "t<1>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t&lt;1&gt;") && svg.contains("polyline"));
    }
}
