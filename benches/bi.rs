//! `/bi_report` over 80,000 records: the records read and counted in memory (what the server
//! did before, issue #15) against the counts the SQLite store keeps as records are inserted
//! and purged (`BiStore::tally`).
//!
//! `bi_commit`: what `--bi-durable` adds to an answer, the wait for one record's commit
//! through the writer (`BiWriter::record` then `Ticket::settle`), against handing the record
//! over without waiting; on a SQLite file, and on PostgreSQL when `FACEGATE_BENCH_PG_URL`
//! names a database (e.g. one from `scripts/pg-test.sh start DIR`).
//!
//! `cargo bench --bench bi`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use facegate::bi::{
    bi_report, report_from_tally, BiConfig, BiRecord, BiStore, BiWriter, PgStore, SqliteStore,
};

fn bench(c: &mut Criterion) {
    let store = SqliteStore::in_memory().expect("store");
    let records: Vec<BiRecord> = (0..80_000)
        .map(|i| BiRecord {
            os: ["IOS", "ANDROID", "DESKTOP", "UNKNOWN"][i as usize % 4].into(),
            probability: (i % 7 != 0).then_some((i % 1000) as f32 / 1000.0),
            quality: (i % 7 != 0).then_some((i % 997) as f32 / 997.0),
            error_code: (i % 7 == 0).then(|| "FACE_NOT_FOUND".to_string()),
            ..one(i)
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

fn one(i: i64) -> BiRecord {
    BiRecord {
        time_ms: 1_800_000_000_000 + i,
        route: "/check_liveness".into(),
        dialect: "idlive".into(),
        pipeline: "minifasnet-dual".into(),
        calibration: Some("REGULAR".into()),
        domain: None,
        os: "IOS".into(),
        probability: Some(0.5),
        quality: Some(0.9),
        error_code: None,
        latency_ms: 12.5,
    }
}

fn commit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("facegate-bench-bi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut stores: Vec<(&str, Arc<dyn BiStore>)> = vec![(
        "sqlite_file",
        Arc::new(SqliteStore::open(&dir.join("bi.sqlite")).expect("sqlite")),
    )];
    if let Ok(url) = std::env::var("FACEGATE_BENCH_PG_URL") {
        let pg = facegate::pg::Pg::connect(&url, 4, Duration::from_secs(10)).expect("postgres");
        stores.push(("postgres", Arc::new(PgStore::new(Arc::new(pg)))));
    }
    let mut g = c.benchmark_group("bi_commit");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_millis(500));
    for (name, store) in stores {
        for durable in [false, true] {
            let cfg = BiConfig {
                durable,
                ..BiConfig::default()
            };
            let w = BiWriter::start(Arc::clone(&store), &cfg).expect("writer");
            let mode = if durable { "durable" } else { "queued" };
            let mut i = 0;
            g.bench_function(format!("{name}/{mode}"), |b| {
                b.iter(|| {
                    i += 1;
                    rt.block_on(w.record(one(i)).settle()).expect("settled")
                })
            });
            w.flush().expect("flush");
        }
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench, commit);
criterion_main!(benches);
