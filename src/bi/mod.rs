//! Business-intelligence records, as the ID R&D servers keep them (`/bi_records`, `/bi_report`).
//!
//! Every decision the server makes is recorded as one [`BiRecord`]: when (UTC), which route and
//! dialect, pipeline, calibration, domain, the capturing OS, the probability and quality, the
//! error code of a rejection and the latency. No image, template or personal data is stored.
//!
//! Storage sits behind [`BiStore`] so that another database can replace the embedded SQLite
//! store ([`sqlite::SqliteStore`]). Request paths never write to the store themselves: they hand
//! records to a [`BiWriter`], whose background thread batches the inserts and purges old
//! records on a schedule; when its bounded queue is full the record is dropped and counted.

pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Milliseconds in one day.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// One recorded decision. Carries no image, template or personal data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BiRecord {
    /// When the decision was made, Unix milliseconds UTC (serialised as ISO 8601, `...Z`).
    #[serde(rename = "time", with = "iso_ms")]
    pub time_ms: i64,
    /// Request path, e.g. `/check_liveness`.
    pub route: String,
    /// Dialect that served it, e.g. `idlive` or `iad`.
    pub dialect: String,
    /// Pipeline name reported to the client (prefix of the `/bi_report` keys).
    pub pipeline: String,
    /// Calibration applied (`REGULAR`, `SOFT`, `HARDENED`), if any.
    pub calibration: Option<String>,
    /// Image domain (`GENERAL`, `DESKTOP`), if the client named one.
    pub domain: Option<String>,
    /// Capturing OS: `IOS`, `ANDROID`, `DESKTOP` or `UNKNOWN` (see [`normalize_os`]).
    pub os: String,
    /// Liveness probability, absent when the image was rejected.
    pub probability: Option<f32>,
    /// Quality score, absent when the image was rejected.
    pub quality: Option<f32>,
    /// Error code of a rejection (`FACE_TOO_SMALL`, ...), absent on a verdict.
    pub error_code: Option<String>,
    /// Time from request to answer, milliseconds.
    pub latency_ms: f64,
}

/// A persistent home for [`BiRecord`]s. Implementations must be cheap to share (`Arc<dyn BiStore>`).
pub trait BiStore: Send + Sync {
    /// Stores one record.
    fn record(&self, r: &BiRecord) -> Result<()>;
    /// Stores several records at once (one transaction where the backend has them).
    fn record_batch(&self, rs: &[BiRecord]) -> Result<()> {
        rs.iter().try_for_each(|r| self.record(r))
    }
    /// Records whose UTC day lies within `from..=to` (either bound optional), oldest first.
    fn records(&self, from: Option<Date>, to: Option<Date>) -> Result<Vec<BiRecord>>;
    /// One page of `page.dialect`'s records within the page's days, oldest first, after
    /// `page.after`, at most `page.limit`; each with the cursor that resumes after it.
    fn page(&self, page: &Page) -> Result<Vec<(Cursor, BiRecord)>>;
    /// Deletes records older than `cutoff_ms` (Unix ms) and returns how many went.
    fn purge_older_than(&self, cutoff_ms: i64) -> Result<usize>;
    /// `/bi_report`'s counts of `dialect`'s records within `from..=to`, one [`Tally`] per
    /// group. The default reads the records; a store should count where they are (the SQLite
    /// store groups in SQL over its `(dialect, time)` index, holding only the groups).
    fn tally(&self, dialect: &str, from: Option<Date>, to: Option<Date>) -> Result<Vec<Tally>> {
        let records = self.records(from, to)?;
        Ok(tally_records(
            records.iter().filter(|r| r.dialect == dialect),
        ))
    }
}

/// One group of `/bi_report`'s counts: records of one pipeline and OS with the same error
/// code and the same probability and quality bins ([`bin_index`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tally {
    /// The records' pipeline (empty: the report's default).
    pub pipeline: String,
    /// Their OS (empty: `UNKNOWN`).
    pub os: String,
    /// Their error code (absent on verdicts; an empty code counts as none).
    pub error_code: Option<String>,
    /// Their probability's bin, absent without a probability in 0..=1.
    pub probability_bin: Option<u8>,
    /// Their quality's bin, likewise.
    pub quality_bin: Option<u8>,
    /// How many records.
    pub count: u64,
}

/// Groups `records` into [`Tally`]s (in memory; what a store without its own counting does).
pub fn tally_records<'a>(records: impl IntoIterator<Item = &'a BiRecord>) -> Vec<Tally> {
    type Key<'k> = (&'k str, &'k str, Option<&'k str>, Option<u8>, Option<u8>);
    let mut groups: std::collections::BTreeMap<Key<'a>, u64> = Default::default();
    for r in records {
        let key = (
            r.pipeline.as_str(),
            r.os.as_str(),
            r.error_code.as_deref().filter(|c| !c.is_empty()),
            r.probability.and_then(bin_index),
            r.quality.and_then(bin_index),
        );
        *groups.entry(key).or_default() += 1;
    }
    groups
        .into_iter()
        .map(|((pipeline, os, code, p, q), count)| Tally {
            pipeline: pipeline.to_string(),
            os: os.to_string(),
            error_code: code.map(str::to_string),
            probability_bin: p,
            quality_bin: q,
            count,
        })
        .collect()
}

/// Where a page of records resumes: after the record of this time and store id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// The record's time, Unix ms.
    pub time_ms: i64,
    /// Its store id (ties of one millisecond are ordered by it).
    pub id: i64,
}

impl Cursor {
    /// The wire form, `<time_ms>.<id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.time_ms, self.id)
    }

    /// Parses the wire form; anything else is an invalid argument.
    pub fn parse(s: &str) -> Result<Cursor> {
        let bad = || {
            Error::InvalidArgument(format!(
                "invalid cursor {s:?}: pass the x-next-cursor value of the previous page"
            ))
        };
        let (t, id) = s.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            time_ms: t.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// What one page of `/bi_records` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The dialect whose records are read.
    pub dialect: String,
    /// First day, inclusive.
    pub from: Option<Date>,
    /// Last day, inclusive.
    pub to: Option<Date>,
    /// Resume after this record.
    pub after: Option<Cursor>,
    /// Most records of the page.
    pub limit: usize,
}

/// A calendar day (proleptic Gregorian, UTC), as `/bi_records` takes it: `yyyy-MM-dd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Days since 1970-01-01.
    days: i64,
}

impl Date {
    /// Parses `yyyy-MM-dd` strictly (four-digit year, two-digit month and day, a real date).
    pub fn parse(s: &str) -> Result<Date> {
        let bad = || {
            Error::InvalidArgument(format!(
                "invalid date {s:?}: expected yyyy-MM-dd, e.g. 2024-03-31"
            ))
        };
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64> {
            let part = &s[r];
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<i64>().map_err(|_| bad())
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return Err(bad());
        }
        Ok(Date {
            days: days_from_civil(y, m, d),
        })
    }

    /// Parses an optional query parameter; an empty string counts as absent.
    pub fn parse_opt(s: Option<&str>) -> Result<Option<Date>> {
        match s.map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => Date::parse(v).map(Some),
        }
    }

    /// The day containing `ms` (Unix milliseconds, UTC).
    pub fn from_unix_ms(ms: i64) -> Date {
        Date {
            days: ms.div_euclid(DAY_MS),
        }
    }

    /// Unix milliseconds of this day's midnight UTC.
    pub fn start_ms(self) -> i64 {
        self.days * DAY_MS
    }

    /// Unix milliseconds of the next day's midnight UTC (exclusive end of this day).
    pub fn end_ms(self) -> i64 {
        (self.days + 1) * DAY_MS
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = civil_from_days(self.days);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// Checks `from <= to` when both are given.
pub fn check_range(from: Option<Date>, to: Option<Date>) -> Result<()> {
    match (from, to) {
        (Some(f), Some(t)) if f > t => Err(Error::InvalidArgument(format!(
            "date_from {f} is after date_to {t}"
        ))),
        _ => Ok(()),
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date `(year, month 1-12, day 1-31)` of a day count since 1970-01-01 (inverse of
/// `days_from_civil`).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Formats Unix milliseconds as `yyyy-MM-ddTHH:mm:ss.SSSZ`.
pub fn format_iso_ms(ms: i64) -> String {
    let day = Date::from_unix_ms(ms);
    let rem = ms - day.start_ms();
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{day}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// Parses the output of [`format_iso_ms`] back to Unix milliseconds.
pub fn parse_iso_ms(s: &str) -> Result<i64> {
    let bad = || {
        Error::InvalidArgument(format!(
            "invalid time {s:?}: expected yyyy-MM-ddTHH:mm:ss.SSSZ"
        ))
    };
    let b = s.as_bytes();
    if b.len() != 24
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return Err(bad());
    }
    let day = Date::parse(&s[..10]).map_err(|_| bad())?;
    let num = |r: std::ops::Range<usize>, max: i64| -> Result<i64> {
        let part = &s[r];
        let v = if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse::<i64>().map_err(|_| bad())?
        } else {
            return Err(bad());
        };
        if v > max {
            return Err(bad());
        }
        Ok(v)
    };
    let (h, mi, sec, milli) = (
        num(11..13, 23)?,
        num(14..16, 59)?,
        num(17..19, 59)?,
        num(20..23, 999)?,
    );
    Ok(day.start_ms() + h * 3_600_000 + mi * 60_000 + sec * 1000 + milli)
}

mod iso_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_iso_ms(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_iso_ms(&s).map_err(serde::de::Error::custom)
    }
}

/// Current time, Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Maps a free-form OS name to the `/bi_report` vocabulary: `IOS`, `ANDROID`, `DESKTOP`, or
/// `UNKNOWN` when empty or unrecognised.
pub fn normalize_os(s: &str) -> &'static str {
    let l = s.trim().to_ascii_lowercase();
    if l.is_empty() {
        "UNKNOWN"
    } else if l.contains("ios") || l.contains("iphone") || l.contains("ipad") {
        "IOS"
    } else if l.contains("android") {
        "ANDROID"
    } else if [
        "desktop",
        "windows",
        "mac",
        "linux",
        "chrome os",
        "chromeos",
        "web",
    ]
    .iter()
    .any(|k| l.contains(k))
    {
        "DESKTOP"
    } else {
        "UNKNOWN"
    }
}

/// The OS named by IDLive's `Meta` header (additional image characteristics).
///
/// Accepts a JSON object (`{"os": "IOS", ...}`, key case-insensitive), `key=value` pairs
/// separated by `;` or `,` (`os=ANDROID; model=...`), or a bare OS name. Anything else, or no
/// header, gives `UNKNOWN`.
pub fn os_from_meta(header: Option<&str>) -> &'static str {
    let Some(h) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return "UNKNOWN";
    };
    if h.starts_with('{') {
        let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(h) else {
            return "UNKNOWN";
        };
        return m
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("os"))
            .and_then(|(_, v)| v.as_str())
            .map_or("UNKNOWN", normalize_os);
    }
    if h.contains('=') {
        return h
            .split([';', ','])
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("os"))
            .map_or("UNKNOWN", |(_, v)| normalize_os(v.trim().trim_matches('"')));
    }
    normalize_os(h)
}

/// The 0.1-wide histogram bin of `v`, 0..=9 (1.0 falls in 9). `None` for values outside 0..=1
/// or not finite. The SQLite store computes the same bins in SQL (`sqlite::BIN_SQL`).
pub fn bin_index(v: f32) -> Option<u8> {
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return None;
    }
    // The small epsilon keeps values like 0.7f32 (0.69999999) in their written bin.
    Some(((f64::from(v) * 10.0 + 1e-6).floor() as i64).clamp(0, 9) as u8)
}

/// Bin `i` (0..=9) as `/bi_report` spells it: `"0.0-0.1"` ... `"0.9-1.0"`.
fn bin_name(i: u8) -> String {
    format!("{:.1}-{:.1}", f64::from(i) / 10.0, f64::from(i + 1) / 10.0)
}

/// The 0.1-wide histogram bin of `v` as `/bi_report` spells it: `"0.0-0.1"` ... `"0.9-1.0"`
/// (1.0 falls in `0.9-1.0`). `None` for values outside 0..=1 or not finite.
pub fn bin_label(v: f32) -> Option<String> {
    bin_index(v).map(bin_name)
}

/// Aggregates records exactly as IDLive's `/bi_report` does:
/// `{pipeline}_{OS}_probability_{bin}` and `{pipeline}_{OS}_quality_{bin}` histograms over
/// verdicts, `{pipeline}_{OS}_{ERROR_CODE}` counts over rejections, and `total` (all records).
///
/// A record's own `pipeline` names its keys; `default_pipeline` stands in where it is empty.
pub fn bi_report(
    records: &[BiRecord],
    default_pipeline: &str,
) -> serde_json::Map<String, serde_json::Value> {
    report_from_tally(&tally_records(records), default_pipeline)
}

/// [`bi_report`] from counts already grouped (a store's [`BiStore::tally`]).
pub fn report_from_tally(
    tally: &[Tally],
    default_pipeline: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut total = 0u64;
    for t in tally {
        total += t.count;
        let pipeline = if t.pipeline.is_empty() {
            default_pipeline
        } else {
            &t.pipeline
        };
        let os = if t.os.is_empty() { "UNKNOWN" } else { &t.os };
        let prefix = format!("{pipeline}_{os}");
        if let Some(code) = t.error_code.as_deref().filter(|c| !c.is_empty()) {
            *counts.entry(format!("{prefix}_{code}")).or_default() += t.count;
            continue;
        }
        if let Some(b) = t.probability_bin {
            *counts
                .entry(format!("{prefix}_probability_{}", bin_name(b)))
                .or_default() += t.count;
        }
        if let Some(b) = t.quality_bin {
            *counts
                .entry(format!("{prefix}_quality_{}", bin_name(b)))
                .or_default() += t.count;
        }
    }
    let mut out: serde_json::Map<String, serde_json::Value> =
        counts.into_iter().map(|(k, v)| (k, v.into())).collect();
    out.insert("total".into(), total.into());
    out
}

/// BI settings: where records live and how long they stay.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BiConfig {
    /// SQLite database file; `:memory:` keeps records in memory only; a `postgres://` URL puts
    /// them, and the replay ledger of nonces and package keys, in that shared database.
    pub path: PathBuf,
    /// Most PostgreSQL connections of this process.
    pub pool: usize,
    /// Longest wait for one PostgreSQL task (connection and statements), ms.
    pub db_timeout_ms: u64,
    /// Answers wait until their record is committed (no record lost to a crash, at the cost
    /// of the commit's latency); off: records are committed by the writer right after.
    pub durable: bool,
    /// Records older than this many days are purged (0 keeps them forever).
    pub retention_days: u32,
    /// Records the writer queue holds before it drops new ones.
    pub queue: usize,
    /// Most records inserted in one transaction.
    pub batch: usize,
    /// Seconds between retention purges by the writer thread.
    pub purge_interval_s: u64,
}

impl Default for BiConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("facegate-bi.sqlite"),
            pool: 8,
            db_timeout_ms: 5000,
            durable: false,
            retention_days: 90,
            queue: 4096,
            batch: 256,
            purge_interval_s: 3600,
        }
    }
}

impl std::fmt::Debug for BiConfig {
    /// The database URL's password is hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BiConfig")
            .field("path", &crate::pg::redact(&self.path.to_string_lossy()))
            .field("pool", &self.pool)
            .field("db_timeout_ms", &self.db_timeout_ms)
            .field("durable", &self.durable)
            .field("retention_days", &self.retention_days)
            .field("queue", &self.queue)
            .field("batch", &self.batch)
            .field("purge_interval_s", &self.purge_interval_s)
            .finish()
    }
}

impl BiConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.queue == 0
            || self.batch == 0
            || self.purge_interval_s == 0
            || self.pool == 0
            || self.db_timeout_ms == 0
        {
            return Err(Error::InvalidArgument(
                "bi.queue, bi.batch, bi.purge_interval_s, bi.pool and bi.db_timeout_ms must be \
                 positive"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The PostgreSQL URL when `path` is one.
    pub fn postgres_url(&self) -> Option<&str> {
        self.path.to_str().filter(|p| crate::pg::is_url(p))
    }

    /// Unix-ms cutoff for retention at `now_ms`, `None` when retention is off.
    pub fn cutoff_ms(&self, now_ms: i64) -> Option<i64> {
        (self.retention_days > 0).then(|| now_ms - i64::from(self.retention_days) * DAY_MS)
    }
}

/// Command-line/environment overrides of [`BiConfig`] (flatten into a server's arguments).
#[derive(Debug, Clone, Default, Args)]
pub struct BiArgs {
    /// BI database: a SQLite file, `:memory:`, or a `postgres://` URL shared by a fleet (which
    /// also holds the replay ledger) [default: facegate-bi.sqlite].
    #[arg(long = "bi-db", env = "FACEGATE_BI_DB", hide_env_values = true)]
    pub bi_db: Option<PathBuf>,
    /// Answers wait for their BI record's commit [default: off].
    #[arg(long = "bi-durable", env = "FACEGATE_BI_DURABLE")]
    pub bi_durable: bool,
    /// Most PostgreSQL connections [default: 8].
    #[arg(long = "bi-pool", env = "FACEGATE_BI_POOL")]
    pub bi_pool: Option<usize>,
    /// Days BI records are kept; 0 keeps them forever [default: 90].
    #[arg(long = "bi-retention-days", env = "FACEGATE_BI_RETENTION_DAYS")]
    pub bi_retention_days: Option<u32>,
    /// Records the BI writer queues before dropping new ones [default: 4096].
    #[arg(long = "bi-queue", env = "FACEGATE_BI_QUEUE")]
    pub bi_queue: Option<usize>,
}

impl BiArgs {
    /// Applies the flags/environment on top of `cfg` (from defaults or a TOML `[bi]` table).
    pub fn apply(&self, mut cfg: BiConfig) -> Result<BiConfig> {
        if let Some(v) = &self.bi_db {
            cfg.path = v.clone();
        }
        if let Some(v) = self.bi_retention_days {
            cfg.retention_days = v;
        }
        if let Some(v) = self.bi_queue {
            cfg.queue = v;
        }
        if let Some(v) = self.bi_pool {
            cfg.pool = v;
        }
        if self.bi_durable {
            cfg.durable = true;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Opens the store for `cfg` (PostgreSQL over `pg` when given, else SQLite at `cfg.path`) and
/// purges expired records once.
pub fn open_store(cfg: &BiConfig, pg: Option<Arc<crate::pg::Pg>>) -> Result<Arc<dyn BiStore>> {
    let store: Arc<dyn BiStore> = match pg {
        Some(pg) => Arc::new(PgStore::new(pg)),
        None => Arc::new(SqliteStore::open(&cfg.path)?),
    };
    if let Some(cut) = cfg.cutoff_ms(now_ms()) {
        store.purge_older_than(cut)?;
    }
    Ok(store)
}

/// Messages to the writer thread.
enum Command {
    /// Store this record, and with a sender, say whether it was committed (`bi.durable`).
    Record(Box<BiRecord>, Option<tokio::sync::oneshot::Sender<bool>>),
    /// Answer once everything queued before this has been stored.
    Flush(SyncSender<()>),
}

/// Counters of a [`BiWriter`].
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Records stored.
    pub written: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records lost to store errors.
    pub failed: AtomicU64,
    /// Records removed by retention purges.
    pub purged: AtomicU64,
}

/// Non-blocking front of a [`BiStore`]: [`BiWriter::submit`] never waits; a background thread
/// batches the inserts and runs the retention purge every `purge_interval_s`.
///
/// Clone-free by design: share it as `Arc<BiWriter>`. Dropping it drains the queue and joins
/// the thread.
pub struct BiWriter {
    tx: Option<SyncSender<Command>>,
    /// `bi.durable`: [`BiWriter::record`] hands out tickets that wait for the commit.
    durable: bool,
    /// `bi.queue`, for messages.
    queue: usize,
    stats: Arc<WriterStats>,
    store: Arc<dyn BiStore>,
    thread: Option<JoinHandle<()>>,
}

impl BiWriter {
    /// Starts the writer thread over `store` with the queue, batch and retention of `cfg`.
    pub fn start(store: Arc<dyn BiStore>, cfg: &BiConfig) -> Result<BiWriter> {
        cfg.validate()?;
        let (tx, rx) = sync_channel(cfg.queue);
        let stats = Arc::new(WriterStats::default());
        let worker = Worker {
            store: Arc::clone(&store),
            stats: Arc::clone(&stats),
            batch: cfg.batch,
            purge_every: Duration::from_secs(cfg.purge_interval_s),
            cfg: cfg.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("bi-writer".into())
            .spawn(move || worker.run(rx))?;
        Ok(BiWriter {
            tx: Some(tx),
            durable: cfg.durable,
            queue: cfg.queue,
            stats,
            store,
            thread: Some(thread),
        })
    }

    /// Queues a record without blocking. Returns `false` (and counts it) if it was dropped.
    pub fn submit(&self, r: BiRecord) -> bool {
        self.send(r, None)
    }

    fn send(&self, r: BiRecord, done: Option<tokio::sync::oneshot::Sender<bool>>) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(Command::Record(Box::new(r), done)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::telemetry::BI_DROPPED).increment(1);
                false
            }
        }
    }

    /// Queues a decision's record without blocking. With `bi.durable` the answer must
    /// [`Ticket::settle`] the ticket first, which waits for the commit; otherwise the ticket
    /// is settled already.
    pub fn record(&self, r: BiRecord) -> Ticket {
        if !self.durable {
            self.submit(r);
            return Ticket::Settled;
        }
        let (done, rx) = tokio::sync::oneshot::channel();
        if self.send(r, Some(done)) {
            Ticket::Pending(rx)
        } else {
            Ticket::Dropped { queue: self.queue }
        }
    }

    /// Blocks until every record queued so far is stored. BI reads call it (on the blocking
    /// pool, never on the async reactor) so that a client reads its own decisions; it waits at
    /// most for the queue ahead of it (`bi.queue` records).
    pub fn flush(&self) -> Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Unavailable("BI writer stopped".into()))?;
        let (done_tx, done_rx) = sync_channel(1);
        tx.send(Command::Flush(done_tx))
            .map_err(|_| Error::Unavailable("BI writer stopped".into()))?;
        done_rx
            .recv()
            .map_err(|_| Error::Unavailable("BI writer stopped".into()))
    }

    /// The counters (written, dropped, failed, purged).
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// The store behind this writer, for reads (`/bi_records`, `/bi_report`).
    pub fn store(&self) -> &Arc<dyn BiStore> {
        &self.store
    }
}

impl Drop for BiWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What an answer waits for before it leaves with `bi.durable` ([`BiWriter::record`]).
#[derive(Debug)]
pub enum Ticket {
    /// Nothing to wait for (not durable).
    Settled,
    /// The record is queued; the writer says whether it was committed.
    Pending(tokio::sync::oneshot::Receiver<bool>),
    /// The queue was full: the record was not taken.
    Dropped {
        /// The queue's bound (`bi.queue`).
        queue: usize,
    },
}

impl Ticket {
    /// Waits until the record is committed; an error (503) when it was not, so that with
    /// `bi.durable` no answer leaves without its record.
    pub async fn settle(self) -> Result<()> {
        match self {
            Ticket::Settled => Ok(()),
            Ticket::Pending(rx) => match rx.await {
                Ok(true) => Ok(()),
                _ => Err(Error::Unavailable(
                    "the BI record of this decision was not committed (bi.durable); retry".into(),
                )),
            },
            Ticket::Dropped { queue } => Err(Error::Unavailable(format!(
                "the BI writer queue is full ({queue} records, bi.queue); retry"
            ))),
        }
    }

    /// Settles every ticket, the first error winning.
    pub async fn settle_all(tickets: Vec<Ticket>) -> Result<()> {
        let mut out = Ok(());
        for t in tickets {
            let r = t.settle().await;
            if out.is_ok() {
                out = r;
            }
        }
        out
    }
}

/// Records taken from the queue and not yet written, with the durable answers waiting on them.
struct Pending {
    records: Vec<BiRecord>,
    waiting: Vec<tokio::sync::oneshot::Sender<bool>>,
}

impl Pending {
    fn with_capacity(n: usize) -> Pending {
        Pending {
            records: Vec::with_capacity(n),
            waiting: Vec::new(),
        }
    }

    fn push(&mut self, r: BiRecord, done: Option<tokio::sync::oneshot::Sender<bool>>) {
        self.records.push(r);
        self.waiting.extend(done);
    }
}

/// State of the writer thread.
struct Worker {
    store: Arc<dyn BiStore>,
    stats: Arc<WriterStats>,
    batch: usize,
    purge_every: Duration,
    cfg: BiConfig,
}

impl Worker {
    fn run(self, rx: Receiver<Command>) {
        let mut last_purge = Instant::now();
        let mut buf = Pending::with_capacity(self.batch);
        loop {
            let first = match rx.recv_timeout(self.purge_every) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut flushes = Vec::new();
            let mut take = |c: Command, buf: &mut Pending| match c {
                Command::Record(r, done) => buf.push(*r, done),
                Command::Flush(done) => flushes.push(done),
            };
            if let Some(c) = first {
                take(c, &mut buf);
                while buf.records.len() < self.batch {
                    match rx.try_recv() {
                        Ok(c) => take(c, &mut buf),
                        Err(_) => break,
                    }
                }
            }
            self.write(&mut buf);
            for f in flushes {
                let _ = f.send(());
            }
            if last_purge.elapsed() >= self.purge_every {
                last_purge = Instant::now();
                self.purge();
            }
        }
        // Drain what is left after the last sender went away.
        while let Ok(c) = rx.try_recv() {
            match c {
                Command::Record(r, done) => buf.push(*r, done),
                Command::Flush(done) => {
                    self.write(&mut buf);
                    let _ = done.send(());
                }
            }
        }
        self.write(&mut buf);
    }

    fn write(&self, buf: &mut Pending) {
        let n = buf.records.len();
        if n == 0 {
            return;
        }
        let ok = match self.store.record_batch(&buf.records) {
            Ok(()) => {
                self.stats.written.fetch_add(n as u64, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::warn!("BI store: {e}; {n} records lost");
                self.stats.failed.fetch_add(n as u64, Ordering::Relaxed);
                metrics::counter!(crate::telemetry::BI_FAILED).increment(n as u64);
                false
            }
        };
        for done in buf.waiting.drain(..) {
            let _ = done.send(ok);
        }
        buf.records.clear();
    }

    fn purge(&self) {
        if let Some(cut) = self.cfg.cutoff_ms(now_ms()) {
            match self.store.purge_older_than(cut) {
                Ok(n) => {
                    self.stats.purged.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!("BI retention purge: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_day_conversions_round_trip() {
        for (s, days) in [
            ("1970-01-01", 0),
            ("2000-02-29", 11_016),
            ("1969-12-31", -1),
        ] {
            let d = Date::parse(s).unwrap();
            assert_eq!(d.days, days, "{s}");
            assert_eq!(d.to_string(), s);
        }
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn dates_are_parsed_strictly() {
        for bad in [
            "2024-1-01",
            "2024/01/01",
            "2024-13-01",
            "2023-02-29",
            "24-01-01",
            "2024-01-01T00",
            "+024-01-01",
            "2024-04-31",
            "",
        ] {
            let e = Date::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}");
            assert!(e.to_string().contains("yyyy-MM-dd"), "{e}");
        }
        assert!(Date::parse("2024-02-29").is_ok());
        assert_eq!(Date::parse_opt(Some("")).unwrap(), None);
        let (a, b) = (
            Date::parse("2024-01-02").ok(),
            Date::parse("2024-01-01").ok(),
        );
        assert!(check_range(a, b).is_err() && check_range(b, a).is_ok());
    }

    #[test]
    fn iso_times_round_trip() {
        let ms =
            Date::parse("2024-03-31").unwrap().start_ms() + 13 * 3_600_000 + 5 * 60_000 + 7_089;
        let s = format_iso_ms(ms);
        assert_eq!(s, "2024-03-31T13:05:07.089Z");
        assert_eq!(parse_iso_ms(&s).unwrap(), ms);
        assert!(parse_iso_ms("2024-03-31T25:05:07.089Z").is_err());
    }

    #[test]
    fn bins_follow_the_document() {
        assert_eq!(bin_label(0.0).as_deref(), Some("0.0-0.1"));
        assert_eq!(bin_label(0.7).as_deref(), Some("0.7-0.8"));
        assert_eq!(bin_label(0.3).as_deref(), Some("0.3-0.4"));
        assert_eq!(bin_label(0.9999).as_deref(), Some("0.9-1.0"));
        assert_eq!(bin_label(1.0).as_deref(), Some("0.9-1.0"));
        assert_eq!(bin_label(f32::NAN), None);
        assert_eq!(bin_label(1.5), None);
    }

    #[test]
    fn os_is_read_from_the_meta_header() {
        assert_eq!(os_from_meta(None), "UNKNOWN");
        assert_eq!(
            os_from_meta(Some(r#"{"OS":"iOS 17.2","model":"iPhone"}"#)),
            "IOS"
        );
        assert_eq!(os_from_meta(Some("os=ANDROID; model=Pixel 8")), "ANDROID");
        assert_eq!(os_from_meta(Some("DESKTOP")), "DESKTOP");
        assert_eq!(os_from_meta(Some("Windows 11")), "DESKTOP");
        assert_eq!(os_from_meta(Some("{not json")), "UNKNOWN");
        assert_eq!(os_from_meta(Some("PlayStation")), "UNKNOWN");
    }
}
