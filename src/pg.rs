//! The PostgreSQL connection shared by the BI store ([`crate::bi::postgres`]) and the replay
//! ledger ([`crate::replay::postgres`]) of a fleet: one pool, its own small tokio runtime,
//! and the schema migrations.
//!
//! The stores' traits are synchronous (the BI writer thread and tokio's blocking pool call
//! them), so [`Pg::run`] hands each database task to the pool's runtime and waits for it, at
//! most `statement_timeout`; a caller never needs a runtime of its own and cannot deadlock one.
//!
//! Plain TCP or a Unix socket (`host=/path`); TLS to the database is not built in (run it on
//! a loopback, a socket or a TLS sidecar).

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::{Error, Result};

/// Whether `s` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// `url` with its password (user info or `password=` parameter) replaced by `***`, for logs
/// and `Debug`.
pub fn redact(url: &str) -> String {
    let url = &match url.split_once("password=") {
        Some((head, tail)) => {
            let rest = tail.find('&').map_or("", |i| &tail[i..]);
            format!("{head}password=***{rest}")
        }
        None => url.to_string(),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(split) => split,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Schema migrations, applied in order once each (`facegate_migrations` records them) under
/// an advisory lock, so replicas starting together apply each once.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE bi_records (
        id          BIGSERIAL PRIMARY KEY,
        time_ms     BIGINT NOT NULL,
        route       TEXT NOT NULL,
        dialect     TEXT NOT NULL,
        pipeline    TEXT NOT NULL,
        calibration TEXT,
        domain      TEXT,
        os          TEXT NOT NULL,
        probability DOUBLE PRECISION,
        quality     DOUBLE PRECISION,
        error_code  TEXT,
        latency_ms  DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX bi_records_time ON bi_records (time_ms);
    CREATE INDEX bi_records_dialect_time ON bi_records (dialect, time_ms, id);
    CREATE TABLE bi_counts (
        dialect    TEXT NOT NULL,
        day        BIGINT NOT NULL,
        pipeline   TEXT NOT NULL,
        os         TEXT NOT NULL,
        error_code TEXT NOT NULL,
        pbin       INTEGER NOT NULL,
        qbin       INTEGER NOT NULL,
        n          BIGINT NOT NULL,
        PRIMARY KEY (dialect, day, pipeline, os, error_code, pbin, qbin)
    );
    CREATE TABLE replay_keys (
        kind       TEXT NOT NULL,
        key        BYTEA NOT NULL,
        issued_ms  BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL,
        used       BOOLEAN NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX replay_keys_expiry ON replay_keys (kind, expires_ms);",
)];

/// Advisory-lock id of the migrations (any constant shared by every replica).
const MIGRATION_LOCK: i64 = 0x6661_6365_6761_7465; // "facegate"

/// A pooled PostgreSQL database on a private runtime. Share it as `Arc<Pg>`.
pub struct Pg {
    /// Runs the connections and every task of [`Pg::run`]; shut down in the background on drop.
    rt: Option<tokio::runtime::Runtime>,
    /// The connections.
    pool: Pool,
    /// Longest wait for one task (a connection, its statements).
    timeout: Duration,
    /// The URL with its password hidden, for messages.
    name: String,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg").field("url", &self.name).finish()
    }
}

/// A database error as the engine's error: the service is unavailable, with the cause.
pub fn db_err(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("PostgreSQL: {e}"))
}

impl Pg {
    /// Connects to `url` with up to `pool_size` connections, each task bounded by `timeout`,
    /// and applies the migrations. Fails (naming the URL without its password) when the
    /// database cannot be reached.
    pub fn connect(url: &str, pool_size: usize, timeout: Duration) -> Result<Pg> {
        let name = redact(url);
        let bad =
            |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("BI database {name}: {e}"));
        let config: tokio_postgres::Config = url.parse().map_err(|e| bad(&e))?;
        if pool_size == 0 {
            return Err(bad(&"bi.pool must be positive"));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pg")
            .enable_all()
            .build()?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| bad(&e))?;
        let pg = Pg {
            rt: Some(rt),
            pool,
            timeout,
            name,
        };
        pg.run(|c| async move { migrate(c).await })
            .map_err(|e| Error::Unavailable(format!("BI database {}: {e}", pg.name)))?;
        Ok(pg)
    }

    /// Runs `task` with a pooled connection on the pool's runtime and waits for its result, at
    /// most the timeout. Call it from a thread that may block (the BI writer, tokio's blocking
    /// pool), not from an async task.
    pub fn run<T, F, Fut>(&self, task: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send,
    {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| Error::Unavailable("PostgreSQL: shut down".into()))?;
        let pool = self.pool.clone();
        let timeout = self.timeout;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let out = match tokio::time::timeout(timeout, async {
                let client = pool.get().await.map_err(db_err)?;
                task(client).await
            })
            .await
            {
                Ok(r) => r,
                Err(_) => Err(db_err(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            };
            let _ = tx.send(out);
        });
        rx.recv()
            .map_err(|_| Error::Unavailable("PostgreSQL: the task was dropped".into()))?
    }

    /// The URL, password hidden.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Applies the migrations not yet recorded, in one transaction under the advisory lock.
async fn migrate(mut client: Object) -> Result<()> {
    let tx = client.transaction().await.map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS facegate_migrations (
            version INTEGER PRIMARY KEY,
            applied_ms BIGINT NOT NULL
        )",
    )
    .await
    .map_err(db_err)?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM facegate_migrations", &[])
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(db_err)?;
        tx.execute(
            "INSERT INTO facegate_migrations (version, applied_ms) VALUES ($1, $2)",
            &[version, &now_ms()],
        )
        .await
        .map_err(db_err)?;
        tracing::info!("PostgreSQL: applied migration {version}");
    }
    tx.commit().await.map_err(db_err)
}

/// Current time, Unix ms.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_and_redacted() {
        assert!(is_url("postgres://u@h/db") && is_url("postgresql://h/db"));
        assert!(!is_url("facegate-bi.sqlite") && !is_url(":memory:"));
        assert_eq!(
            redact("postgres://bi:s3cret@db.internal:5432/facegate"),
            "postgres://bi:***@db.internal:5432/facegate"
        );
        assert_eq!(redact("postgres://bi@h/db"), "postgres://bi@h/db");
        assert_eq!(
            redact("postgres:///db?host=/run"),
            "postgres:///db?host=/run"
        );
        assert_eq!(
            redact("postgres://h/db?password=pw&user=bi"),
            "postgres://h/db?password=***&user=bi"
        );
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        let e = Pg::connect("postgres://u:pw@h:notaport/db", 2, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("pw@") && e.contains("***"), "{e}");
    }
}
