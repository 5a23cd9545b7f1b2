//! Single-use keys with expiry, shared by every replica that uses the same ledger: IAD's
//! capture nonces and Knomi's package keys.
//!
//! A [`ReplayLedger`] holds entries `(kind, key) -> (issued, expires, used)`. The embedded
//! [`MemoryLedger`] serves one process; [`postgres::PgLedger`] serves a fleet, so that a nonce
//! used on one replica is refused on another. Both bound the unexpired entries of a kind and
//! refuse new ones at the bound rather than forgetting live ones.

pub mod expiry;
pub mod postgres;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Error, Result};
use expiry::ExpiringMap;

/// The namespace of a ledger's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// IAD capture nonces (`POST /iad/nonce`, `meta.nonce` of a bundle).
    IadNonce,
    /// Knomi package keys (SHA-256 of a package's `key` field).
    KnomiPackage,
}

impl Kind {
    /// The name stored with each key.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::IadNonce => "iad_nonce",
            Kind::KnomiPackage => "knomi_package",
        }
    }
}

/// What [`ReplayLedger::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The key is now held.
    New,
    /// An unexpired entry already holds the key; nothing changed.
    Present,
    /// `max` unexpired entries of the kind are held; nothing changed.
    Full {
        /// The bound.
        max: usize,
    },
}

/// What the ledger knew about a presented key ([`ReplayLedger::consume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Held, unexpired, first use (now marked used); carries its issue time.
    Fresh {
        /// When it was issued, Unix ms.
        issued_ms: i64,
    },
    /// Used before.
    Replayed,
    /// Held but past its lifetime.
    Expired,
    /// Never held (or forgotten after it expired).
    Unknown,
}

/// A store of single-use keys. Implementations are shared as `Arc<dyn ReplayLedger>` and may
/// block (call them from a blocking thread, not an async task).
pub trait ReplayLedger: Send + Sync {
    /// Holds `key` of `kind`, issued at `now_ms` and expiring at `expires_ms`, marked `used` or
    /// not, unless an unexpired entry holds it or `max` unexpired entries of `kind` are held.
    fn insert(
        &self,
        kind: Kind,
        key: &[u8],
        now_ms: i64,
        expires_ms: i64,
        used: bool,
        max: usize,
    ) -> Result<Inserted>;

    /// Marks `key` used if it is held, unexpired and unused, atomically (two replicas never
    /// both see it fresh), and says what it was.
    fn consume(&self, kind: Kind, key: &[u8], now_ms: i64) -> Result<Status>;

    /// Whether an unexpired entry holds `key`.
    fn contains(&self, kind: Kind, key: &[u8], now_ms: i64) -> Result<bool>;
}

/// One entry of a [`MemoryLedger`].
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When it was issued, Unix ms.
    issued_ms: i64,
    /// Presented already.
    used: bool,
}

/// The entries of each kind, each kind's map bounded on its own.
type Kinds = HashMap<Kind, ExpiringMap<Vec<u8>, Entry, i64>>;

/// The embedded ledger: one bounded [`ExpiringMap`] per kind, in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    /// Kind -> its entries (created, with its bound, at the kind's first insert).
    kinds: Mutex<Kinds>,
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> MemoryLedger {
        MemoryLedger::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Kinds>> {
        self.kinds
            .lock()
            .map_err(|_| Error::Unavailable("replay ledger: lock poisoned".into()))
    }
}

impl ReplayLedger for MemoryLedger {
    fn insert(
        &self,
        kind: Kind,
        key: &[u8],
        now_ms: i64,
        expires_ms: i64,
        used: bool,
        max: usize,
    ) -> Result<Inserted> {
        let mut kinds = self.lock()?;
        let map = kinds.entry(kind).or_insert_with(|| ExpiringMap::new(max));
        map.sweep(now_ms);
        if map.contains(&key.to_vec()) {
            return Ok(Inserted::Present);
        }
        let entry = Entry {
            issued_ms: now_ms,
            used,
        };
        Ok(match map.insert(key.to_vec(), entry, expires_ms, now_ms) {
            Ok(()) => Inserted::New,
            Err(f) => Inserted::Full { max: f.max },
        })
    }

    fn consume(&self, kind: Kind, key: &[u8], now_ms: i64) -> Result<Status> {
        let mut kinds = self.lock()?;
        let Some(map) = kinds.get_mut(&kind) else {
            return Ok(Status::Unknown);
        };
        Ok(match map.get_mut(&key.to_vec()) {
            None => Status::Unknown,
            Some((_, e)) if e.used => Status::Replayed,
            Some((expires, _)) if expires <= now_ms => Status::Expired,
            Some((_, e)) => {
                e.used = true;
                Status::Fresh {
                    issued_ms: e.issued_ms,
                }
            }
        })
    }

    fn contains(&self, kind: Kind, key: &[u8], now_ms: i64) -> Result<bool> {
        let mut kinds = self.lock()?;
        Ok(kinds.get_mut(&kind).is_some_and(|m| {
            m.sweep(now_ms);
            m.contains(&key.to_vec())
        }))
    }
}

/// The ledger contract, run against any implementation (the memory ledger's unit test and the
/// PostgreSQL integration test both call it). `tag` keeps keys of separate runs apart.
pub fn check_contract(l: &dyn ReplayLedger, tag: &str) -> Result<()> {
    let fail = |what: &str| Err(Error::Internal(format!("replay ledger contract: {what}")));
    let key = |n: &str| format!("{tag}-{n}").into_bytes();
    let k = Kind::IadNonce;
    if l.insert(k, &key("a"), 0, 1000, false, 3)? != Inserted::New {
        return fail("a first insert is new");
    }
    if l.insert(k, &key("a"), 1, 1000, false, 3)? != Inserted::Present {
        return fail("a second insert of a held key is present");
    }
    if l.consume(k, &key("a"), 10)? != (Status::Fresh { issued_ms: 0 }) {
        return fail("the first use is fresh with its issue time");
    }
    if l.consume(k, &key("a"), 11)? != Status::Replayed {
        return fail("the second use is a replay");
    }
    l.insert(k, &key("b"), 100, 1100, false, 3)?;
    if l.consume(k, &key("b"), 1100)? != Status::Expired {
        return fail("a use at its expiry is expired");
    }
    if l.consume(k, &key("never"), 0)? != Status::Unknown {
        return fail("a key never held is unknown");
    }
    if l.consume(Kind::KnomiPackage, &key("a"), 10)? != Status::Unknown {
        return fail("kinds are separate");
    }
    l.insert(k, &key("c"), 200, 1200, false, 3)?;
    if l.insert(k, &key("d"), 300, 1300, false, 3)? != (Inserted::Full { max: 3 }) {
        return fail("a fourth unexpired key is refused at a bound of three");
    }
    if l.consume(k, &key("c"), 400)? != (Status::Fresh { issued_ms: 200 }) {
        return fail("a full ledger forgets no live key");
    }
    if !l.contains(k, &key("c"), 400)? || l.contains(k, &key("c"), 1200)? {
        return fail("contains sees unexpired keys only");
    }
    if l.insert(k, &key("e"), 5000, 6000, true, 3)? != Inserted::New {
        return fail("expired keys make room");
    }
    if l.consume(k, &key("e"), 5001)? != Status::Replayed {
        return fail("a key inserted used is a replay at once");
    }
    if l.insert(k, &key("a"), 5002, 6000, false, 3)? != Inserted::New {
        return fail("an expired key may be held again");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_ledger_keeps_the_contract() {
        check_contract(&MemoryLedger::new(), "t").unwrap();
    }
}
