//! The connection budget: every open connection is registered with its peer and its activity,
//! so that
//!
//! - a connection that has not completed a request head within `first_request_timeout_ms` of
//!   being accepted, or that sits idle (no request in flight) for `idle_timeout_ms`, is closed,
//!   for HTTP/1.1 and HTTP/2 alike;
//! - at `max_connections` (or a peer's `max_connections_per_peer`) a new connection is not
//!   made to wait: the most idle connection without a request in flight is closed to make room
//!   (one that never sent a request first, then the longest idle). Only when every connection
//!   has a request in flight is the new one refused (closed at once).
//!
//! Silent sockets can thus never hold the server's connection slots against a client that
//! sends requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::telemetry as tm;

/// Bounds of the connection budget (from `[server]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most open connections.
    pub max_connections: usize,
    /// Most open connections of one peer address.
    pub max_per_peer: usize,
    /// Longest time from accept to the first complete request head.
    pub first_request: Duration,
    /// Longest time without a request in flight after the first one.
    pub idle: Duration,
}

/// What one connection has done, updated by its requests.
#[derive(Debug)]
pub struct Activity {
    /// When it was accepted.
    opened: Instant,
    /// Requests started.
    requests: AtomicU64,
    /// Requests in flight.
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened), ms after `opened`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Marks a request started; the guard marks it ended when dropped.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    fn idle_since(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    fn started(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    /// When the connection is due to be closed if nothing happens: `None` while a request is
    /// in flight.
    pub fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        if self.busy() {
            return None;
        }
        let allowed = if self.started() {
            limits.idle
        } else {
            limits.first_request
        };
        Some(self.idle_since() + allowed)
    }

    /// Eviction order: never-used connections first, then the longest idle.
    fn idleness(&self) -> (bool, Instant) {
        (self.started(), self.idle_since())
    }
}

/// Ends a request of a connection (see [`Activity::begin`]).
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let ms = self.0.opened.elapsed().as_millis() as u64;
        self.0.last_ms.fetch_max(ms, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Entry {
    peer: IpAddr,
    activity: Arc<Activity>,
    close: Arc<Notify>,
}

#[derive(Default)]
struct State {
    next: u64,
    open: HashMap<u64, Entry>,
    per_peer: HashMap<IpAddr, usize>,
}

impl State {
    fn forget(&mut self, id: u64) -> Option<Entry> {
        let e = self.open.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&e.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&e.peer);
            }
        }
        Some(e)
    }

    /// The most idle connection without a request in flight (of `peer` only, if given).
    fn most_idle(&self, peer: Option<IpAddr>) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, e)| peer.is_none_or(|p| e.peer == p) && !e.activity.busy())
            .min_by_key(|(_, e)| e.activity.idleness())
            .map(|(id, _)| *id)
    }
}

/// The registry of open connections.
pub struct Conns {
    limits: ConnLimits,
    state: Mutex<State>,
}

/// Why a connection ended early.
const EVICTED: &str = "evicted";

impl Conns {
    /// An empty registry.
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    /// The bounds in force.
    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    /// Number of open connections.
    pub fn open(&self) -> usize {
        self.state.lock().map_or(0, |s| s.open.len())
    }

    /// Registers a new connection from `peer`, closing the most idle one to make room when a
    /// cap is reached; `None` (refused) when every connection in the way has a request in
    /// flight.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Ticket> {
        let Ok(mut s) = self.state.lock() else {
            return None;
        };
        let evict = |s: &mut State, only: Option<IpAddr>, reason: &'static str| {
            let id = s.most_idle(only)?;
            let e = s.forget(id)?;
            e.close.notify_one();
            metrics::counter!(tm::CONNECTIONS_CLOSED, "reason" => reason).increment(1);
            Some(())
        };
        if s.per_peer.get(&peer).copied().unwrap_or(0) >= self.limits.max_per_peer
            && evict(&mut s, Some(peer), EVICTED).is_none()
        {
            metrics::counter!(tm::CONNECTIONS_REFUSED, "reason" => "per_peer").increment(1);
            return None;
        }
        if s.open.len() >= self.limits.max_connections && evict(&mut s, None, EVICTED).is_none() {
            metrics::counter!(tm::CONNECTIONS_REFUSED, "reason" => "max_connections").increment(1);
            return None;
        }
        let id = s.next;
        s.next += 1;
        let activity = Arc::new(Activity::new());
        let close = Arc::new(Notify::new());
        s.open.insert(
            id,
            Entry {
                peer,
                activity: activity.clone(),
                close: close.clone(),
            },
        );
        *s.per_peer.entry(peer).or_insert(0) += 1;
        Some(Ticket {
            conns: self.clone(),
            id,
            activity,
            close,
        })
    }
}

/// A registered connection; dropping it unregisters the connection.
pub struct Ticket {
    conns: Arc<Conns>,
    id: u64,
    /// Its activity, for the request service.
    pub activity: Arc<Activity>,
    /// Notified when the registry closes it to make room.
    pub close: Arc<Notify>,
}

impl Ticket {
    /// Resolves when the connection must close: made room for another, or past its deadline
    /// (first request or idle), with the reason.
    pub async fn until_closed(&self) -> &'static str {
        let limits = *self.conns.limits();
        loop {
            let wake = self
                .activity
                .deadline(&limits)
                .unwrap_or_else(|| Instant::now() + limits.idle.min(Duration::from_secs(1)));
            tokio::select! {
                _ = self.close.notified() => return EVICTED,
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            if let Some(d) = self.activity.deadline(&limits) {
                if Instant::now() >= d {
                    return if self.activity.started() {
                        "idle_timeout"
                    } else {
                        "first_request_timeout"
                    };
                }
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut s) = self.conns.state.lock() {
            s.forget(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_peer: usize) -> ConnLimits {
        ConnLimits {
            max_connections: max,
            max_per_peer: per_peer,
            first_request: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }

    #[test]
    fn room_is_made_from_the_most_idle_connection_never_a_busy_one() {
        let c = Conns::new(limits(2, 10));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let busy = c.admit(a).unwrap();
        let _g = busy.activity.begin();
        let used = c.admit(a).unwrap();
        drop(used.activity.begin());
        // Full: the idle one (used, not busy) is closed for the newcomer.
        let third = c.admit(a).unwrap();
        assert_eq!(c.open(), 2);
        assert!(futures_util::FutureExt::now_or_never(used.close.notified()).is_some());
        // Now one busy and one never used: the never-used one goes.
        let fourth = c.admit(a).unwrap();
        assert!(futures_util::FutureExt::now_or_never(third.close.notified()).is_some());
        // Both remaining busy: refused.
        let _g2 = fourth.activity.begin();
        assert!(c.admit(a).is_none());
        drop(fourth);
        assert_eq!(c.open(), 1);
    }

    #[test]
    fn a_peer_over_its_cap_only_evicts_its_own() {
        let c = Conns::new(limits(100, 1));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first_a = c.admit(a).unwrap();
        let _b = c.admit(b).unwrap();
        let _second_a = c.admit(a).unwrap();
        assert!(futures_util::FutureExt::now_or_never(first_a.close.notified()).is_some());
        assert_eq!(c.open(), 2);
    }

    #[test]
    fn deadlines_follow_the_first_request_and_idle_bounds() {
        let l = ConnLimits {
            first_request: Duration::from_millis(100),
            idle: Duration::from_millis(500),
            ..limits(10, 10)
        };
        let act = Arc::new(Activity::new());
        let d = act.deadline(&l).unwrap();
        assert!(d <= act.opened + Duration::from_millis(100));
        let g = act.begin();
        assert!(act.deadline(&l).is_none());
        drop(g);
        let d = act.deadline(&l).unwrap();
        assert!(d >= act.opened + Duration::from_millis(500));
    }
}
