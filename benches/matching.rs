//! 1:N matching: one probe against a gallery of 10,000 templates in one pass
//! ([`Gallery::compare`]), against the loop of 1:1 comparisons it replaces, and the binary
//! template format (decode 10,000 templates into a gallery, as `compare_n` does).
//!
//! `cargo bench --bench matching`; templates compared per second = 10,000 / time per pass.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use facegate::engine::template::TEMPLATE_VERSION;
use facegate::engine::{FaceTemplate, Gallery};

/// Deterministic unit-length 128-D templates (a xorshift stream; values do not matter for
/// speed).
fn templates(n: usize) -> Vec<FaceTemplate> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            let mut d: Vec<f32> = (0..128)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt();
            d.iter_mut().for_each(|v| *v /= norm);
            FaceTemplate {
                version: TEMPLATE_VERSION.into(),
                descriptor: d,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    const N: usize = 10_000;
    let all = templates(N + 1);
    let (probe, rows) = (&all[0], &all[1..]);
    let mut gallery = Gallery::with_capacity(TEMPLATE_VERSION, 128, N);
    for t in rows {
        gallery.push(t).expect("push");
    }
    let bytes: Vec<Vec<u8>> = rows.iter().map(FaceTemplate::to_bytes).collect();
    let mut g = c.benchmark_group("matching");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Elements(N as u64));
    g.bench_function("gallery_compare_10k", |b| {
        b.iter(|| gallery.compare(probe, 0.41).expect("compare"))
    });
    g.bench_function("one_to_one_loop_10k", |b| {
        b.iter(|| {
            rows.iter()
                .map(|t| probe.compare(t, 0.41).expect("compare"))
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("decode_10k_templates_into_gallery", |b| {
        b.iter(|| {
            let mut g = Gallery::with_capacity(TEMPLATE_VERSION, 128, N);
            for t in &bytes {
                g.push(&FaceTemplate::from_bytes(t, TEMPLATE_VERSION).expect("template"))
                    .expect("push");
            }
            g
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
