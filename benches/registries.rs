//! The single-use registries under load: issuing and consuming an IAD capture nonce with
//! 100,000 nonces outstanding (issue #15 measured 0.2 ms -> 11 ms for the old registry, which
//! swept by a full scan and sorted when full).
//!
//! `cargo bench --bench registries`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use facegate::api::iad::capture::{generate_key, CaptureConfig, CaptureVerifier};

fn bench(c: &mut Criterion) {
    let cfg = CaptureConfig {
        max_nonces: 10_000_000,
        nonce_ttl_s: 3600,
        ..CaptureConfig::default()
    };
    let verifier = CaptureVerifier::new(cfg, generate_key(2048).expect("key")).expect("verifier");
    let now = 1_800_000_000_000i64;
    for _ in 0..100_000 {
        verifier.issue_nonce_at(now).expect("issue");
    }
    let mut g = c.benchmark_group("registries");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    g.bench_function("iad_nonce_issue_with_100k_outstanding", |b| {
        b.iter(|| verifier.issue_nonce_at(now).expect("issue"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
