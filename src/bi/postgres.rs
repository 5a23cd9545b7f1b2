//! The fleet's [`BiStore`]: BI records in a shared PostgreSQL database (`--bi-db
//! postgres://...`), with the same tables, counts and bins as the SQLite store.
//!
//! `bi_counts` keeps `/bi_report`'s counts per UTC day and group, updated in the transaction
//! that inserts or purges the records (`INSERT ... ON CONFLICT DO UPDATE` is atomic across
//! replicas). Purges take an advisory lock so that replicas purging together take each
//! record's count away once.

use std::sync::Arc;

use tokio_postgres::Row;

use super::{BiRecord, BiStore, Cursor, Date, Page, Tally};
use crate::pg::{db_err, Pg};
use crate::Result;

/// Advisory-lock id of the retention purge.
const PURGE_LOCK: i64 = 0x6269_5f70_7572_6765; // "bi_purge"

const INSERT: &str = "INSERT INTO bi_records
    (time_ms, route, dialect, pipeline, calibration, domain, os, probability, quality, error_code, latency_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

const COUNT_ADD: &str =
    "INSERT INTO bi_counts (dialect, day, pipeline, os, error_code, pbin, qbin, n)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 1)
    ON CONFLICT (dialect, day, pipeline, os, error_code, pbin, qbin)
    DO UPDATE SET n = bi_counts.n + excluded.n";

/// [`super::bin_index`] of column `{v}` in SQL: the same double arithmetic, floored.
const BIN_SQL: &str =
    "(CASE WHEN {v} BETWEEN 0.0 AND 1.0 THEN LEAST(FLOOR({v} * 10.0 + 1e-6)::INTEGER, 9) END)";

/// Takes the counts of the records older than `$1` away from `bi_counts`.
fn uncount_older() -> String {
    format!(
        "INSERT INTO bi_counts (dialect, day, pipeline, os, error_code, pbin, qbin, n)
         SELECT dialect, FLOOR(time_ms / 86400000.0)::BIGINT, pipeline, os,
                COALESCE(error_code, ''), COALESCE({p}, -1), COALESCE({q}, -1), -COUNT(*)
         FROM bi_records WHERE time_ms < $1 GROUP BY 1, 2, 3, 4, 5, 6, 7
         ON CONFLICT (dialect, day, pipeline, os, error_code, pbin, qbin)
         DO UPDATE SET n = bi_counts.n + excluded.n",
        p = BIN_SQL.replace("{v}", "probability"),
        q = BIN_SQL.replace("{v}", "quality"),
    )
}

const COLUMNS: &str = "time_ms, route, dialect, pipeline, calibration, domain, os, probability, \
                       quality, error_code, latency_ms";

/// The record in the columns of `row` from `at` on ([`COLUMNS`]).
fn record_at(row: &Row, at: usize) -> BiRecord {
    BiRecord {
        time_ms: row.get(at),
        route: row.get(at + 1),
        dialect: row.get(at + 2),
        pipeline: row.get(at + 3),
        calibration: row.get(at + 4),
        domain: row.get(at + 5),
        os: row.get(at + 6),
        probability: row.get::<_, Option<f64>>(at + 7).map(|v| v as f32),
        quality: row.get::<_, Option<f64>>(at + 8).map(|v| v as f32),
        error_code: row.get(at + 9),
        latency_ms: row.get(at + 10),
    }
}

/// The bounds of `from..=to` in Unix ms.
fn bounds(from: Option<Date>, to: Option<Date>) -> Result<(i64, i64)> {
    super::check_range(from, to)?;
    Ok((
        from.map_or(i64::MIN, Date::start_ms),
        to.map_or(i64::MAX, Date::end_ms),
    ))
}

/// BI records in PostgreSQL.
pub struct PgStore {
    /// The database.
    pg: Arc<Pg>,
}

impl PgStore {
    /// A store in `pg` (its migrations made the tables).
    pub fn new(pg: Arc<Pg>) -> PgStore {
        PgStore { pg }
    }
}

impl BiStore for PgStore {
    fn record(&self, r: &BiRecord) -> Result<()> {
        self.record_batch(std::slice::from_ref(r))
    }

    fn record_batch(&self, rs: &[BiRecord]) -> Result<()> {
        let rs = rs.to_vec();
        self.pg.run(move |mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            let insert = tx.prepare_cached(INSERT).await.map_err(db_err)?;
            let count = tx.prepare_cached(COUNT_ADD).await.map_err(db_err)?;
            for r in &rs {
                let bin = |v: Option<f32>| v.and_then(super::bin_index).map_or(-1, i32::from);
                tx.execute(
                    &count,
                    &[
                        &r.dialect,
                        &r.time_ms.div_euclid(super::DAY_MS),
                        &r.pipeline,
                        &r.os,
                        &r.error_code.as_deref().unwrap_or(""),
                        &bin(r.probability),
                        &bin(r.quality),
                    ],
                )
                .await
                .map_err(db_err)?;
                tx.execute(
                    &insert,
                    &[
                        &r.time_ms,
                        &r.route,
                        &r.dialect,
                        &r.pipeline,
                        &r.calibration,
                        &r.domain,
                        &r.os,
                        &r.probability.map(f64::from),
                        &r.quality.map(f64::from),
                        &r.error_code,
                        &r.latency_ms,
                    ],
                )
                .await
                .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)
        })
    }

    fn records(&self, from: Option<Date>, to: Option<Date>) -> Result<Vec<BiRecord>> {
        let (lo, hi) = bounds(from, to)?;
        self.pg.run(move |c| async move {
            let sql = format!(
                "SELECT {COLUMNS} FROM bi_records WHERE time_ms >= $1 AND time_ms < $2 \
                 ORDER BY time_ms, id"
            );
            let rows = c.query(&sql, &[&lo, &hi]).await.map_err(db_err)?;
            Ok(rows.iter().map(|r| record_at(r, 0)).collect())
        })
    }

    fn page(&self, page: &Page) -> Result<Vec<(Cursor, BiRecord)>> {
        let (lo, hi) = bounds(page.from, page.to)?;
        let after = page.after.unwrap_or(Cursor {
            time_ms: i64::MIN,
            id: i64::MIN,
        });
        let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
        let dialect = page.dialect.clone();
        self.pg.run(move |c| async move {
            let sql = format!(
                "SELECT id, {COLUMNS} FROM bi_records
                 WHERE dialect = $1 AND time_ms >= $2 AND time_ms < $3
                   AND (time_ms > $4 OR (time_ms = $4 AND id > $5))
                 ORDER BY time_ms, id LIMIT $6"
            );
            let rows = c
                .query(
                    &sql,
                    &[&dialect, &lo, &hi, &after.time_ms, &after.id, &limit],
                )
                .await
                .map_err(db_err)?;
            Ok(rows
                .iter()
                .map(|row| {
                    let r = record_at(row, 1);
                    let cursor = Cursor {
                        time_ms: r.time_ms,
                        id: row.get(0),
                    };
                    (cursor, r)
                })
                .collect())
        })
    }

    /// From `bi_counts`: a few rows per day of the range, never the records.
    fn tally(&self, dialect: &str, from: Option<Date>, to: Option<Date>) -> Result<Vec<Tally>> {
        super::check_range(from, to)?;
        let lo = from.map_or(i64::MIN, |d| d.start_ms().div_euclid(super::DAY_MS));
        let hi = to.map_or(i64::MAX, |d| d.end_ms().div_euclid(super::DAY_MS));
        let dialect = dialect.to_string();
        self.pg.run(move |c| async move {
            let rows = c
                .query(
                    "SELECT pipeline, os, error_code, pbin, qbin, SUM(n)::BIGINT FROM bi_counts
                     WHERE dialect = $1 AND day >= $2 AND day < $3
                     GROUP BY 1, 2, 3, 4, 5 HAVING SUM(n) > 0",
                    &[&dialect, &lo, &hi],
                )
                .await
                .map_err(db_err)?;
            let bin = |v: i32| u8::try_from(v).ok();
            Ok(rows
                .iter()
                .map(|row| {
                    let code: String = row.get(2);
                    Tally {
                        pipeline: row.get(0),
                        os: row.get(1),
                        error_code: (!code.is_empty()).then_some(code),
                        probability_bin: bin(row.get(3)),
                        quality_bin: bin(row.get(4)),
                        count: row.get::<_, i64>(5).max(0) as u64,
                    }
                })
                .collect())
        })
    }

    /// Takes the purged records' counts away in the same transaction, under the purge lock.
    fn purge_older_than(&self, cutoff_ms: i64) -> Result<usize> {
        self.pg.run(move |mut c| async move {
            let tx = c.transaction().await.map_err(db_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PURGE_LOCK])
                .await
                .map_err(db_err)?;
            tx.execute(&uncount_older(), &[&cutoff_ms])
                .await
                .map_err(db_err)?;
            tx.execute("DELETE FROM bi_counts WHERE n <= 0", &[])
                .await
                .map_err(db_err)?;
            let n = tx
                .execute("DELETE FROM bi_records WHERE time_ms < $1", &[&cutoff_ms])
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}
