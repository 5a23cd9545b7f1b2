//! The fleet's [`ReplayLedger`]: the `replay_keys` table of the shared PostgreSQL database.
//!
//! Every decision is one statement, so two replicas racing on a key cannot both win: an insert
//! is `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`, a use is `UPDATE ... WHERE NOT
//! used AND unexpired RETURNING`. The bound counts unexpired keys of the kind (at most `max`
//! index entries read); under concurrent inserts it may be passed by the number of racing
//! replicas. Expired keys are deleted at most every [`SWEEP_EVERY_MS`] per kind and process.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::{Inserted, Kind, ReplayLedger, Status};
use crate::pg::{db_err, Pg};
use crate::Result;

/// Least time between two sweeps of expired keys by one process, ms.
pub const SWEEP_EVERY_MS: i64 = 10_000;

const INSERT: &str = "WITH live AS (
        SELECT count(*) AS n FROM (
            SELECT 1 FROM replay_keys WHERE kind = $1 AND expires_ms > $3 LIMIT $6
        ) s
    )
    INSERT INTO replay_keys (kind, key, issued_ms, expires_ms, used)
    SELECT $1, $2, $3, $4, $5 FROM live WHERE live.n < $6
    ON CONFLICT (kind, key) DO UPDATE
        SET issued_ms = EXCLUDED.issued_ms, expires_ms = EXCLUDED.expires_ms, used = EXCLUDED.used
        WHERE replay_keys.expires_ms <= EXCLUDED.issued_ms
    RETURNING 1";

const CONSUME: &str = "UPDATE replay_keys SET used = TRUE
    WHERE kind = $1 AND key = $2 AND NOT used AND expires_ms > $3
    RETURNING issued_ms";

const LOOK: &str = "SELECT used, expires_ms FROM replay_keys WHERE kind = $1 AND key = $2";

/// Single-use keys in PostgreSQL, shared by every replica on the database.
pub struct PgLedger {
    /// The database.
    pg: Arc<Pg>,
    /// When this process last swept each kind (indexed like [`Kind`]), Unix ms.
    swept: [AtomicI64; 2],
}

impl PgLedger {
    /// A ledger in `pg` (its migrations made the table).
    pub fn new(pg: Arc<Pg>) -> PgLedger {
        PgLedger {
            pg,
            swept: [AtomicI64::new(i64::MIN), AtomicI64::new(i64::MIN)],
        }
    }

    /// Deletes `kind`'s expired keys if this process has not done so in the last
    /// [`SWEEP_EVERY_MS`].
    fn maybe_sweep(&self, kind: Kind, now_ms: i64) -> Result<()> {
        let slot = &self.swept[kind as usize];
        let last = slot.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < SWEEP_EVERY_MS
            || slot
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        self.pg.run(move |c| async move {
            c.execute(
                "DELETE FROM replay_keys WHERE kind = $1 AND expires_ms <= $2",
                &[&kind.as_str(), &now_ms],
            )
            .await
            .map_err(db_err)?;
            Ok(())
        })
    }
}

impl ReplayLedger for PgLedger {
    fn insert(
        &self,
        kind: Kind,
        key: &[u8],
        now_ms: i64,
        expires_ms: i64,
        used: bool,
        max: usize,
    ) -> Result<Inserted> {
        self.maybe_sweep(kind, now_ms)?;
        let key = key.to_vec();
        let bound = i64::try_from(max).unwrap_or(i64::MAX);
        self.pg.run(move |c| async move {
            let stmt = c.prepare_cached(INSERT).await.map_err(db_err)?;
            let rows = c
                .query(
                    &stmt,
                    &[&kind.as_str(), &key, &now_ms, &expires_ms, &used, &bound],
                )
                .await
                .map_err(db_err)?;
            if !rows.is_empty() {
                return Ok(Inserted::New);
            }
            let held = c
                .query_opt(LOOK, &[&kind.as_str(), &key])
                .await
                .map_err(db_err)?
                .is_some_and(|r| r.get::<_, i64>(1) > now_ms);
            Ok(if held {
                Inserted::Present
            } else {
                Inserted::Full { max }
            })
        })
    }

    fn consume(&self, kind: Kind, key: &[u8], now_ms: i64) -> Result<Status> {
        let key = key.to_vec();
        self.pg.run(move |c| async move {
            let stmt = c.prepare_cached(CONSUME).await.map_err(db_err)?;
            if let Some(r) = c
                .query_opt(&stmt, &[&kind.as_str(), &key, &now_ms])
                .await
                .map_err(db_err)?
            {
                return Ok(Status::Fresh {
                    issued_ms: r.get(0),
                });
            }
            Ok(
                match c
                    .query_opt(LOOK, &[&kind.as_str(), &key])
                    .await
                    .map_err(db_err)?
                {
                    None => Status::Unknown,
                    Some(r) if r.get::<_, bool>(0) => Status::Replayed,
                    Some(_) => Status::Expired,
                },
            )
        })
    }

    fn contains(&self, kind: Kind, key: &[u8], now_ms: i64) -> Result<bool> {
        let key = key.to_vec();
        self.pg.run(move |c| async move {
            Ok(c.query_opt(LOOK, &[&kind.as_str(), &key])
                .await
                .map_err(db_err)?
                .is_some_and(|r| r.get::<_, i64>(1) > now_ms))
        })
    }
}
