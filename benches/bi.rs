//! `/bi_report` over 80,000 records: the records read and counted in memory (what the server
//! did before, issue #15) against the counts the SQLite store keeps as records are inserted
//! and purged (`BiStore::tally`).
//!
//! `cargo bench --bench bi`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use facegate::bi::{bi_report, report_from_tally, BiRecord, BiStore, SqliteStore};

fn bench(c: &mut Criterion) {
    let store = SqliteStore::in_memory().expect("store");
    let records: Vec<BiRecord> = (0..80_000)
        .map(|i| BiRecord {
            time_ms: 1_800_000_000_000 + i,
            route: "/check_liveness".into(),
            dialect: "idlive".into(),
            pipeline: "minifasnet-dual".into(),
            calibration: Some("REGULAR".into()),
            domain: None,
            os: ["IOS", "ANDROID", "DESKTOP", "UNKNOWN"][i as usize % 4].into(),
            probability: (i % 7 != 0).then_some((i % 1000) as f32 / 1000.0),
            quality: (i % 7 != 0).then_some((i % 997) as f32 / 997.0),
            error_code: (i % 7 == 0).then(|| "FACE_NOT_FOUND".to_string()),
            latency_ms: 12.5,
        })
        .collect();
    store.record_batch(&records).expect("insert");
    let mut g = c.benchmark_group("bi_report_80k");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_millis(500));
    g.bench_function("records_then_memory", |b| {
        b.iter(|| {
            let rs = store.records(None, None).expect("records");
            bi_report(&rs, "x")
        })
    });
    g.bench_function("kept_counts", |b| {
        b.iter(|| report_from_tally(&store.tally("idlive", None, None).expect("tally"), "x"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
