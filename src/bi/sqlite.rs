//! The default [`BiStore`]: embedded SQLite (bundled, no system library needed).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection};

use super::{BiRecord, BiStore, Cursor, Date, Page, Tally};
use crate::{Error, Result};

/// Schema: the records (`time_ms` indexed for range queries and purges) and `/bi_report`'s
/// counts, kept per UTC day and group as records are inserted and purged, so that a report
/// reads a few rows per day instead of every record.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bi_records (
    id          INTEGER PRIMARY KEY,
    time_ms     INTEGER NOT NULL,
    route       TEXT NOT NULL,
    dialect     TEXT NOT NULL,
    pipeline    TEXT NOT NULL,
    calibration TEXT,
    domain      TEXT,
    os          TEXT NOT NULL,
    probability REAL,
    quality     REAL,
    error_code  TEXT,
    latency_ms  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS bi_records_time ON bi_records(time_ms);
CREATE INDEX IF NOT EXISTS bi_records_dialect_time ON bi_records(dialect, time_ms, id);
CREATE TABLE IF NOT EXISTS bi_counts (
    dialect    TEXT NOT NULL,
    day        INTEGER NOT NULL,
    pipeline   TEXT NOT NULL,
    os         TEXT NOT NULL,
    error_code TEXT NOT NULL,
    pbin       INTEGER NOT NULL,
    qbin       INTEGER NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (dialect, day, pipeline, os, error_code, pbin, qbin)
) WITHOUT ROWID;
";

/// `PRAGMA user_version` once `bi_counts` holds the counts of every record (a database made
/// before the counts existed has them built once, when opened).
const COUNTS_VERSION: i64 = 1;

/// The UTC day (days since 1970-01-01) of `time_ms`, floored, in SQL.
const DAY_SQL: &str = "((time_ms - ((time_ms % 86400000) + 86400000) % 86400000) / 86400000)";

/// Adds `n` to one group's count of one day.
const COUNT_ADD: &str = "INSERT INTO bi_counts (dialect, day, pipeline, os, error_code, pbin, qbin, n)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT (dialect, day, pipeline, os, error_code, pbin, qbin) DO UPDATE SET n = n + excluded.n";

/// SQL adding the counts of the records matching `filter` to `bi_counts` (grouped as it keeps
/// them), times `sign`: 1 when counting records in, -1 when taking purged ones away.
fn counts_of(filter: &str, sign: i64) -> String {
    format!(
        "INSERT INTO bi_counts (dialect, day, pipeline, os, error_code, pbin, qbin, n)
         SELECT dialect, {DAY_SQL}, pipeline, os, COALESCE(error_code, ''),
                COALESCE({p}, -1), COALESCE({q}, -1), {sign} * COUNT(*)
         FROM bi_records WHERE {filter} GROUP BY 1, 2, 3, 4, 5, 6, 7
         ON CONFLICT (dialect, day, pipeline, os, error_code, pbin, qbin) DO UPDATE SET n = n + excluded.n",
        p = BIN_SQL.replace("{v}", "probability"),
        q = BIN_SQL.replace("{v}", "quality"),
    )
}

/// [`super::bin_index`] of column `{v}` in SQL: the same double arithmetic (values are stored
/// as the doubles of their f32), and a cast that truncates, which is `floor` for v >= 0. NaN is
/// stored as NULL, so it has no bin either.
const BIN_SQL: &str =
    "(CASE WHEN {v} BETWEEN 0.0 AND 1.0 THEN MIN(CAST({v} * 10.0 + 1e-6 AS INTEGER), 9) END)";

/// The record in the columns of `row` from `at` on (time_ms, route, ..., latency_ms).
fn record_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<BiRecord> {
    Ok(BiRecord {
        time_ms: row.get(at)?,
        route: row.get(at + 1)?,
        dialect: row.get(at + 2)?,
        pipeline: row.get(at + 3)?,
        calibration: row.get(at + 4)?,
        domain: row.get(at + 5)?,
        os: row.get(at + 6)?,
        probability: row.get::<_, Option<f64>>(at + 7)?.map(|v| v as f32),
        quality: row.get::<_, Option<f64>>(at + 8)?.map(|v| v as f32),
        error_code: row.get(at + 9)?,
        latency_ms: row.get(at + 10)?,
    })
}

/// BI records in one SQLite database (a file, or memory for tests).
pub struct SqliteStore {
    /// The connection; SQLite serialises writers anyway, the mutex makes it `Sync`.
    conn: Mutex<Connection>,
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::Unavailable(format!("BI database: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`; `:memory:` opens an in-memory one.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = if path.as_os_str() == ":memory:" {
            Connection::open_in_memory()
        } else {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            Connection::open(path)
        }
        .map_err(db_err)?;
        if path.as_os_str() != ":memory:" {
            // WAL keeps reads cheap and crash-safe; reads and the writer thread still take turns
            // on the one connection behind the mutex below.
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(db_err)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(db_err)?;
        }
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db_err)?;
        if version < COUNTS_VERSION {
            let tx = conn.unchecked_transaction().map_err(db_err)?;
            tx.execute("DELETE FROM bi_counts", []).map_err(db_err)?;
            tx.execute(&counts_of("1", 1), []).map_err(db_err)?;
            tx.pragma_update(None, "user_version", COUNTS_VERSION)
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    /// An empty in-memory store.
    pub fn in_memory() -> Result<SqliteStore> {
        SqliteStore::open(Path::new(":memory:"))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| Error::Unavailable("BI database: lock poisoned".into()))
    }
}

const INSERT: &str = "INSERT INTO bi_records
    (time_ms, route, dialect, pipeline, calibration, domain, os, probability, quality, error_code, latency_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Inserts `r` and counts it (call inside a transaction).
fn insert(conn: &Connection, r: &BiRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(COUNT_ADD)?.execute(params![
        r.dialect,
        r.time_ms.div_euclid(super::DAY_MS),
        r.pipeline,
        r.os,
        r.error_code.as_deref().unwrap_or(""),
        r.probability
            .and_then(super::bin_index)
            .map_or(-1, i64::from),
        r.quality.and_then(super::bin_index).map_or(-1, i64::from),
        1,
    ])?;
    let mut stmt = conn.prepare_cached(INSERT)?;
    stmt.execute(params![
        r.time_ms,
        r.route,
        r.dialect,
        r.pipeline,
        r.calibration,
        r.domain,
        r.os,
        r.probability.map(f64::from),
        r.quality.map(f64::from),
        r.error_code,
        r.latency_ms,
    ])?;
    Ok(())
}

impl BiStore for SqliteStore {
    fn record(&self, r: &BiRecord) -> Result<()> {
        self.record_batch(std::slice::from_ref(r))
    }

    fn record_batch(&self, rs: &[BiRecord]) -> Result<()> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(db_err)?;
        for r in rs {
            insert(&tx, r).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    fn records(&self, from: Option<Date>, to: Option<Date>) -> Result<Vec<BiRecord>> {
        super::check_range(from, to)?;
        let lo = from.map_or(i64::MIN, Date::start_ms);
        let hi = to.map_or(i64::MAX, Date::end_ms);
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT time_ms, route, dialect, pipeline, calibration, domain, os, probability,
                        quality, error_code, latency_ms
                 FROM bi_records WHERE time_ms >= ?1 AND time_ms < ?2 ORDER BY time_ms, id",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![lo, hi], |row| record_at(row, 0))
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
    }

    fn page(&self, page: &Page) -> Result<Vec<(Cursor, BiRecord)>> {
        super::check_range(page.from, page.to)?;
        let lo = page.from.map_or(i64::MIN, Date::start_ms);
        let hi = page.to.map_or(i64::MAX, Date::end_ms);
        let after = page.after.unwrap_or(Cursor {
            time_ms: i64::MIN,
            id: i64::MIN,
        });
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, time_ms, route, dialect, pipeline, calibration, domain, os,
                        probability, quality, error_code, latency_ms
                 FROM bi_records
                 WHERE dialect = ?1 AND time_ms >= ?2 AND time_ms < ?3
                   AND (time_ms > ?4 OR (time_ms = ?4 AND id > ?5))
                 ORDER BY time_ms, id LIMIT ?6",
            )
            .map_err(db_err)?;
        let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(
                params![page.dialect, lo, hi, after.time_ms, after.id, limit],
                |row| {
                    let r = record_at(row, 1)?;
                    Ok((
                        Cursor {
                            time_ms: r.time_ms,
                            id: row.get(0)?,
                        },
                        r,
                    ))
                },
            )
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
    }

    /// From `bi_counts`: a few rows per day of the range, never the records.
    fn tally(&self, dialect: &str, from: Option<Date>, to: Option<Date>) -> Result<Vec<Tally>> {
        super::check_range(from, to)?;
        let lo = from.map_or(i64::MIN, |d| d.start_ms().div_euclid(super::DAY_MS));
        let hi = to.map_or(i64::MAX, |d| d.end_ms().div_euclid(super::DAY_MS));
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT pipeline, os, error_code, pbin, qbin, SUM(n) FROM bi_counts
                 WHERE dialect = ?1 AND day >= ?2 AND day < ?3
                 GROUP BY 1, 2, 3, 4, 5 HAVING SUM(n) > 0",
            )
            .map_err(db_err)?;
        let bin = |v: i64| u8::try_from(v).ok();
        let rows = stmt
            .query_map(params![dialect, lo, hi], |row| {
                let code: String = row.get(2)?;
                Ok(Tally {
                    pipeline: row.get(0)?,
                    os: row.get(1)?,
                    error_code: (!code.is_empty()).then_some(code),
                    probability_bin: bin(row.get(3)?),
                    quality_bin: bin(row.get(4)?),
                    count: row.get::<_, i64>(5)?.max(0) as u64,
                })
            })
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
    }

    /// Takes the purged records' counts away in the same transaction.
    fn purge_older_than(&self, cutoff_ms: i64) -> Result<usize> {
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute(&counts_of("time_ms < ?1", -1), params![cutoff_ms])
            .map_err(db_err)?;
        tx.execute("DELETE FROM bi_counts WHERE n <= 0", [])
            .map_err(db_err)?;
        let n = tx
            .execute(
                "DELETE FROM bi_records WHERE time_ms < ?1",
                params![cutoff_ms],
            )
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(n)
    }
}
