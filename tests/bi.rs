//! BI records: storage and date filtering, strict dates, the `/bi_report` key format of the
//! IDLive reference, retention, and the non-blocking writer.

use std::sync::{Arc, Mutex};

use facegate::bi::{
    bi_report, os_from_meta, report_from_tally, tally_records, BiConfig, BiRecord, BiStore,
    BiWriter, Date, SqliteStore,
};
use facegate::Error;

fn day(s: &str) -> Date {
    Date::parse(s).unwrap()
}

fn rec(
    time_ms: i64,
    os: &str,
    probability: Option<f32>,
    quality: Option<f32>,
    error: Option<&str>,
) -> BiRecord {
    BiRecord {
        time_ms,
        route: "/check_liveness".into(),
        dialect: "idlive".into(),
        pipeline: "theia".into(),
        calibration: Some("REGULAR".into()),
        domain: None,
        os: os.into(),
        probability,
        quality,
        error_code: error.map(str::to_string),
        latency_ms: 12.5,
    }
}

#[test]
fn records_filter_by_inclusive_utc_days() {
    let s = SqliteStore::in_memory().unwrap();
    let d1 = day("2024-03-30");
    let times = [
        d1.start_ms() - 1, // 2024-03-29 23:59:59.999
        d1.start_ms(),     // 2024-03-30 00:00
        d1.end_ms() - 1,   // 2024-03-30 23:59:59.999
        d1.end_ms(),       // 2024-03-31 00:00
        day("2024-04-01").end_ms() - 1,
    ];
    for t in times {
        s.record(&rec(t, "IOS", Some(0.9), Some(0.8), None))
            .unwrap();
    }
    let got = |f: Option<&str>, t: Option<&str>| -> Vec<i64> {
        s.records(f.map(day), t.map(day))
            .unwrap()
            .iter()
            .map(|r| r.time_ms)
            .collect()
    };
    assert_eq!(got(Some("2024-03-30"), Some("2024-03-30")), &times[1..3]);
    assert_eq!(got(Some("2024-03-30"), Some("2024-03-31")), &times[1..4]);
    assert_eq!(got(None, Some("2024-03-29")), &times[..1]);
    assert_eq!(got(Some("2024-03-31"), None), &times[3..]);
    assert_eq!(got(None, None), &times[..]);
    // Round trip of every field, and the JSON shape of /bi_records.
    let r = &s.records(Some(day("2024-04-01")), None).unwrap()[0];
    assert_eq!(r, &rec(times[4], "IOS", Some(0.9), Some(0.8), None));
    let j = serde_json::to_value(r).unwrap();
    assert_eq!(j["time"], "2024-04-01T23:59:59.999Z");
    assert_eq!(serde_json::from_value::<BiRecord>(j).unwrap(), *r);
    assert!(matches!(
        s.records(Some(day("2024-04-02")), Some(day("2024-04-01"))),
        Err(Error::InvalidArgument(_))
    ));
}

/// The store counts `/bi_report`'s groups in SQL: the same bins as the records' own (edge
/// values, out-of-range values, NaN, absent values, error codes, empty names), only the asked
/// dialect and days, and the same report.
#[test]
fn the_store_tallies_the_report_in_sql_exactly_as_the_records_do() {
    let s = SqliteStore::in_memory().unwrap();
    let d = day("2024-05-02");
    let values = [
        Some(0.0f32),
        Some(0.1),
        Some(0.7),
        Some(0.69999),
        Some(0.9999999),
        Some(1.0),
        Some(1.0000001),
        Some(-0.0),
        Some(-0.1),
        Some(f32::NAN),
        Some(0.35),
        None,
    ];
    let mut rs = Vec::new();
    for (i, p) in values.iter().enumerate() {
        for (j, q) in values.iter().enumerate().step_by(3) {
            let mut r = rec(d.start_ms() + (i * 16 + j) as i64, "IOS", *p, *q, None);
            if i % 4 == 1 {
                r.os.clear();
            }
            if i % 5 == 2 {
                r.pipeline.clear();
            }
            if j == 3 {
                r.error_code = Some(if i % 2 == 0 { "FACE_NOT_FOUND" } else { "" }.into());
            }
            rs.push(r);
        }
    }
    let mut other = rec(d.start_ms(), "ANDROID", Some(0.5), Some(0.5), None);
    other.dialect = "iad".into();
    let late = rec(d.end_ms(), "IOS", Some(0.5), Some(0.5), None);
    for r in rs.iter().chain([&other, &late]) {
        s.record(r).unwrap();
    }
    let mut from_sql = s.tally("idlive", Some(d), Some(d)).unwrap();
    from_sql.sort();
    assert_eq!(from_sql, tally_records(&rs));
    assert_eq!(
        report_from_tally(&from_sql, "astraea"),
        bi_report(&rs, "astraea")
    );
    assert_eq!(
        report_from_tally(&from_sql, "astraea")["total"],
        rs.len() as u64
    );
    assert_eq!(
        s.tally("idlive", None, None).unwrap().len(),
        from_sql.len() + 1
    );
    assert!(s.tally("knomi", None, None).unwrap().is_empty());
}

#[test]
fn invalid_dates_are_rejected_with_the_format() {
    for bad in [
        "2024-3-30",
        "30-03-2024",
        "2024-02-30",
        "2024-03-30T00:00:00Z",
        "yesterday",
        "2024-00-10",
    ] {
        match Date::parse_opt(Some(bad)) {
            Err(Error::InvalidArgument(m)) => {
                assert!(m.contains("yyyy-MM-dd") && m.contains(bad), "{m}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert_eq!(Date::parse_opt(None).unwrap(), None);
}

/// The 13 records behind the reference's example report, which must come out verbatim.
#[test]
fn report_matches_the_reference_example() {
    let mut rs = Vec::new();
    for _ in 0..2 {
        rs.push(rec(0, "DESKTOP", Some(0.03), Some(0.85), None));
    }
    rs.push(rec(0, "IOS", Some(1.0), Some(0.7), None));
    for _ in 0..3 {
        rs.push(rec(0, "UNKNOWN", None, None, Some("FACE_TOO_SMALL")));
    }
    for _ in 0..4 {
        rs.push(rec(0, "UNKNOWN", Some(0.0), Some(0.8), None));
    }
    for _ in 0..3 {
        rs.push(rec(0, "UNKNOWN", Some(0.95), Some(0.75), None));
    }
    let report = bi_report(&rs, "theia");
    let expected = serde_json::json!({
        "theia_DESKTOP_probability_0.0-0.1": 2,
        "theia_DESKTOP_quality_0.8-0.9": 2,
        "theia_IOS_probability_0.9-1.0": 1,
        "theia_IOS_quality_0.7-0.8": 1,
        "theia_UNKNOWN_FACE_TOO_SMALL": 3,
        "theia_UNKNOWN_probability_0.0-0.1": 4,
        "theia_UNKNOWN_probability_0.9-1.0": 3,
        "theia_UNKNOWN_quality_0.7-0.8": 3,
        "theia_UNKNOWN_quality_0.8-0.9": 4,
        "total": 13
    });
    assert_eq!(serde_json::Value::Object(report.clone()), expected);
    let keys: Vec<&String> = report.keys().collect();
    assert_eq!(keys.last().map(|s| s.as_str()), Some("total"));
    // Empty pipeline names fall back to the default; an empty store reports total 0.
    let mut r = rec(0, "ANDROID", Some(0.5), None, None);
    r.pipeline.clear();
    let m = bi_report(&[r], "astraea");
    assert_eq!(m["astraea_ANDROID_probability_0.5-0.6"], 1);
    assert_eq!(
        serde_json::Value::Object(bi_report(&[], "x")),
        serde_json::json!({"total": 0})
    );
    assert_eq!(os_from_meta(Some(r#"{"os":"DESKTOP"}"#)), "DESKTOP");
}

#[test]
fn retention_purges_old_records_in_files_too() {
    let path = std::env::temp_dir().join(format!("facegate-bi-{}/bi.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let now = facegate::bi::now_ms();
    {
        let s = SqliteStore::open(&path).unwrap();
        for days_ago in [0, 10, 89, 91, 400] {
            s.record(&rec(
                now - days_ago * 86_400_000,
                "IOS",
                Some(0.9),
                Some(0.9),
                None,
            ))
            .unwrap();
        }
    }
    let cfg = BiConfig {
        path: path.clone(),
        retention_days: 90,
        ..BiConfig::default()
    };
    // Opening purges once.
    let store = facegate::bi::open_store(&cfg, None).unwrap();
    assert_eq!(store.records(None, None).unwrap().len(), 3);
    assert_eq!(store.purge_older_than(now - 5 * 86_400_000).unwrap(), 2);
    assert_eq!(store.records(None, None).unwrap().len(), 1);
    assert_eq!(
        BiConfig {
            retention_days: 0,
            ..cfg
        }
        .cutoff_ms(now),
        None
    );
    drop(store);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn writer_batches_and_flushes() {
    let store: Arc<dyn BiStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let cfg = BiConfig {
        batch: 7,
        ..BiConfig::default()
    };
    let w = BiWriter::start(Arc::clone(&store), &cfg).unwrap();
    for i in 0..50 {
        assert!(w.submit(rec(i, "IOS", Some(0.5), Some(0.5), None)));
    }
    w.flush().unwrap();
    assert_eq!(w.store().records(None, None).unwrap().len(), 50);
    assert_eq!(
        w.stats().written.load(std::sync::atomic::Ordering::Relaxed),
        50
    );
}

/// A store that blocks while the test holds its gate: the writer must drop, not block.
struct Gated {
    gate: Mutex<()>,
    inner: SqliteStore,
}

impl BiStore for Gated {
    fn record(&self, r: &BiRecord) -> facegate::Result<()> {
        let _g = self.gate.lock().unwrap();
        self.inner.record(r)
    }
    fn records(&self, from: Option<Date>, to: Option<Date>) -> facegate::Result<Vec<BiRecord>> {
        self.inner.records(from, to)
    }
    fn page(
        &self,
        page: &facegate::bi::Page,
    ) -> facegate::Result<Vec<(facegate::bi::Cursor, BiRecord)>> {
        self.inner.page(page)
    }
    fn purge_older_than(&self, cutoff_ms: i64) -> facegate::Result<usize> {
        self.inner.purge_older_than(cutoff_ms)
    }
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let gated = Arc::new(Gated {
        gate: Mutex::new(()),
        inner: SqliteStore::in_memory().unwrap(),
    });
    let cfg = BiConfig {
        queue: 4,
        batch: 1,
        ..BiConfig::default()
    };
    let w = BiWriter::start(gated.clone() as Arc<dyn BiStore>, &cfg).unwrap();
    let held = gated.gate.lock().unwrap();
    // Submit from another thread while the store stays blocked: all 100 calls must return
    // before the gate opens (a blocking submit never would; the wait below only turns that
    // hang into a failure, it measures nothing).
    let w = Arc::new(w);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let submitter = w.clone();
    std::thread::spawn(move || {
        let accepted = (0..100)
            .filter(|&i| submitter.submit(rec(i, "IOS", None, None, Some("FACE_NOT_FOUND"))))
            .count();
        let _ = done_tx.send(accepted);
    });
    let accepted = done_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("submit blocked while the store was busy");
    let dropped = w.stats().dropped.load(std::sync::atomic::Ordering::Relaxed) as usize;
    assert!(
        accepted <= 6 && dropped == 100 - accepted,
        "accepted {accepted}, dropped {dropped}"
    );
    drop(held);
    w.flush().unwrap();
    assert_eq!(gated.records(None, None).unwrap().len(), accepted);
}

/// A store whose writes all fail.
struct Failing;

impl BiStore for Failing {
    fn record(&self, _: &BiRecord) -> facegate::Result<()> {
        Err(facegate::Error::Unavailable("disk on fire".into()))
    }
    fn records(&self, _: Option<Date>, _: Option<Date>) -> facegate::Result<Vec<BiRecord>> {
        Ok(Vec::new())
    }
    fn page(
        &self,
        _: &facegate::bi::Page,
    ) -> facegate::Result<Vec<(facegate::bi::Cursor, BiRecord)>> {
        Ok(Vec::new())
    }
    fn purge_older_than(&self, _: i64) -> facegate::Result<usize> {
        Ok(0)
    }
}

/// `bi.durable`: a decision's ticket settles only once its record is committed, fails when
/// the commit fails or the queue is full; without it the ticket is settled at once.
#[test]
fn durable_tickets_wait_for_the_commit_and_fail_without_one() {
    use futures_util::FutureExt;
    let gated = Arc::new(Gated {
        gate: Mutex::new(()),
        inner: SqliteStore::in_memory().unwrap(),
    });
    let durable = BiConfig {
        durable: true,
        queue: 2,
        batch: 1,
        ..BiConfig::default()
    };
    let w = BiWriter::start(gated.clone() as Arc<dyn BiStore>, &durable).unwrap();
    let held = gated.gate.lock().unwrap();
    let mut first = Box::pin(w.record(rec(1, "IOS", Some(0.5), Some(0.5), None)).settle());
    assert!(
        first.as_mut().now_or_never().is_none(),
        "settled while the commit was blocked"
    );
    // The writer holds one record at the gate and the queue two more: the next is refused.
    let queued: Vec<_> = (2..5)
        .map(|i| w.record(rec(i, "IOS", Some(0.5), Some(0.5), None)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut outcomes = Vec::new();
    drop(held);
    rt.block_on(first).unwrap();
    for t in queued {
        outcomes.push(rt.block_on(t.settle()).map_err(|e| e.to_string()));
    }
    let refused: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(!refused.is_empty(), "{outcomes:?}");
    assert!(
        refused.iter().all(|e| e.contains("bi.queue")),
        "{refused:?}"
    );
    w.flush().unwrap();
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(gated.records(None, None).unwrap().len(), 1 + ok);

    let w = BiWriter::start(Arc::new(Failing), &durable).unwrap();
    let e = rt
        .block_on(w.record(rec(9, "IOS", None, None, None)).settle())
        .unwrap_err();
    assert_eq!(e.kind(), "unavailable", "{e}");
    assert!(e.to_string().contains("not committed"), "{e}");

    let w = BiWriter::start(Arc::new(Failing), &BiConfig::default()).unwrap();
    assert!(matches!(
        w.record(rec(9, "IOS", None, None, None)),
        facegate::bi::Ticket::Settled
    ));
}

/// `/bi_report`'s counts are kept as records come and go: a purge takes its records' counts
/// away, and a database written before the counts existed has them built when opened.
#[test]
fn the_report_counts_follow_purges_and_are_built_for_older_databases() {
    let dir = std::env::temp_dir().join(format!("facegate-bi-counts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("bi.sqlite");
    let d = day("2024-06-10");
    let rs: Vec<BiRecord> = (0..300)
        .map(|i| {
            let p = (i % 11) as f32 / 10.0;
            let mut r = rec(
                d.start_ms() + i * 3_600_000,
                "IOS",
                Some(p),
                Some(1.0 - p),
                None,
            );
            if i % 9 == 0 {
                r.error_code = Some("FACE_NOT_FOUND".into());
            }
            r
        })
        .collect();
    {
        let s = SqliteStore::open(&path).unwrap();
        s.record_batch(&rs[..200]).unwrap();
        for r in &rs[200..] {
            s.record(r).unwrap();
        }
        let mut t = s.tally("idlive", None, None).unwrap();
        t.sort();
        assert_eq!(t, tally_records(&rs));
        // Purge the first 100 hours: the report is that of the rest.
        let cutoff = d.start_ms() + 100 * 3_600_000;
        assert_eq!(s.purge_older_than(cutoff).unwrap(), 100);
        let mut t = s.tally("idlive", None, None).unwrap();
        t.sort();
        assert_eq!(t, tally_records(&rs[100..]));
        // Days: the 300 records span 13 days; one of them alone.
        let day5 = Date::parse("2024-06-15").unwrap();
        let in_day5: Vec<_> = rs[100..]
            .iter()
            .filter(|r| r.time_ms >= day5.start_ms() && r.time_ms < day5.end_ms())
            .cloned()
            .collect();
        let mut t = s.tally("idlive", Some(day5), Some(day5)).unwrap();
        t.sort();
        assert_eq!(t, tally_records(&in_day5));
    }
    // An older database: the counts table empty and the schema version 0.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("DELETE FROM bi_counts; PRAGMA user_version = 0;")
            .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let mut t = s.tally("idlive", None, None).unwrap();
    t.sort();
    assert_eq!(t, tally_records(&rs[100..]));
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
