//! A bounded map whose entries expire, for the single-use registries of the dialects (IAD's
//! capture nonces, Knomi's package keys): O(1) lookups, O(1) amortised inserts and sweeps,
//! and a hard bound that refuses new entries rather than forgetting live ones.
//!
//! Entries are swept in insertion order, which is expiry order because every registry gives
//! its entries one lifetime; an entry is forgotten only once it has expired.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// The map is at its bound with entries that have not expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// The bound.
    pub max: usize,
}

/// Entries `K -> V`, each with an expiry time `T`, at most `max` of them.
#[derive(Debug)]
pub struct ExpiringMap<K, V, T> {
    /// Key -> (expiry, value).
    entries: HashMap<K, (T, V)>,
    /// Keys in insertion (and so expiry) order.
    order: VecDeque<(T, K)>,
    /// Most entries held.
    max: usize,
}

impl<K: Eq + Hash + Clone, V, T: Copy + Ord> ExpiringMap<K, V, T> {
    /// An empty map holding at most `max` entries.
    pub fn new(max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            max,
        }
    }

    /// Forgets every entry expired at `now` (expiry at or before it).
    pub fn sweep(&mut self, now: T) {
        while let Some((at, _)) = self.order.front() {
            if *at > now {
                break;
            }
            if let Some((at, k)) = self.order.pop_front() {
                if self.entries.get(&k).is_some_and(|(e, _)| *e == at) {
                    self.entries.remove(&k);
                }
            }
        }
    }

    /// Adds `k` expiring at `expires` after sweeping what expired at `now`; refuses when
    /// `max` unexpired entries are held. Expiries must not decrease from insert to insert
    /// (one lifetime for all), or sweeping keeps later-expiring entries a little longer.
    pub fn insert(&mut self, k: K, v: V, expires: T, now: T) -> Result<(), Full> {
        self.sweep(now);
        if self.entries.len() >= self.max && !self.entries.contains_key(&k) {
            return Err(Full { max: self.max });
        }
        self.order.push_back((expires, k.clone()));
        self.entries.insert(k, (expires, v));
        Ok(())
    }

    /// The entry of `k` and its expiry (expired entries not swept yet included).
    pub fn get_mut(&mut self, k: &K) -> Option<(T, &mut V)> {
        self.entries.get_mut(k).map(|(t, v)| (*t, v))
    }

    /// Whether `k` is held.
    pub fn contains(&self, k: &K) -> bool {
        self.entries.contains_key(k)
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_in_order_and_the_bound_refuses_instead_of_forgetting() {
        let mut m: ExpiringMap<&str, u8, i64> = ExpiringMap::new(2);
        m.insert("a", 1, 10, 0).unwrap();
        m.insert("b", 2, 20, 5).unwrap();
        // Full with two live entries: the third is refused, nothing is forgotten.
        assert_eq!(m.insert("c", 3, 25, 9), Err(Full { max: 2 }));
        assert!(m.contains(&"a") && m.contains(&"b"));
        // Once "a" has expired it is swept and "c" fits.
        m.insert("c", 3, 30, 10).unwrap();
        assert!(!m.contains(&"a"));
        assert_eq!(m.get_mut(&"b").map(|(t, v)| (t, *v)), Some((20, 2)));
        m.sweep(30);
        assert!(m.is_empty());
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn a_reinserted_key_lives_until_its_new_expiry() {
        let mut m: ExpiringMap<u32, (), i64> = ExpiringMap::new(4);
        m.insert(7, (), 10, 0).unwrap();
        m.insert(7, (), 50, 5).unwrap();
        m.sweep(20);
        assert!(m.contains(&7), "the first expiry no longer applies");
        m.sweep(50);
        assert!(!m.contains(&7));
    }
}
