//! Admission control at accept time: `max_connections` (global and per listener) and
//! `max_connection_rate` (new connections per second per listener, against reconnect
//! storms), exact across all shards.
//!
//! One [`Admission`] is shared by every shard (an `Arc`). The kernel's SO_REUSEPORT
//! hashing spreads connections unevenly, so a per-shard share of each limit would be
//! wrong; instead every counter is one atomic and a shard *reserves* a slot with a
//! compare-and-swap that never lets a counter pass its limit, undoing the reservations
//! already made when a later check fails. The rate is a GCRA (a token bucket kept as one
//! "theoretical arrival time" atomic). No lock and no allocation on the accept path.
//!
//! It never touches a socket and keeps no per-connection state: the shard calls
//! [`Admission::admit`] before it registers a socket and [`Admission::release`] exactly
//! once when an admitted connection closes (or could not be registered after all).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crate::config::Config;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The global or the listener's `max_connections`.
    MaxConnections,
    /// `max_connection_rate` exceeded.
    Rate,
}

/// One connection counter with an optional limit.
#[derive(Debug)]
struct Counter {
    max: Option<usize>,
    open: AtomicUsize,
}

impl Counter {
    fn new(max: Option<usize>) -> Self {
        Self {
            max,
            open: AtomicUsize::new(0),
        }
    }

    /// Takes a slot unless the limit is reached (never overshoots, whatever the races).
    fn reserve(&self) -> bool {
        match self.max {
            None => {
                self.open.fetch_add(1, Ordering::AcqRel);
                true
            }
            Some(max) => self
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok(),
        }
    }

    fn release(&self) {
        // Saturating: a stray extra release must not wrap the counter to "full".
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// GCRA rate limit: `rate` connections per second with bursts of up to `rate`.
#[derive(Debug)]
struct Rate {
    /// Nanoseconds between two connections at the sustained rate.
    interval: u64,
    /// How far ahead of now the theoretical arrival time may run (the burst).
    tolerance: u64,
    /// Theoretical arrival time of the next connection, in ns since `Admission::base`.
    tat: AtomicU64,
}

impl Rate {
    fn new(rate: u32) -> Option<Self> {
        if rate == 0 {
            return None;
        }
        let interval = 1_000_000_000 / u64::from(rate);
        Some(Self {
            interval,
            tolerance: interval * (u64::from(rate) - 1),
            tat: AtomicU64::new(0),
        })
    }

    fn admit(&self, now: u64) -> bool {
        self.tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                let tat = tat.max(now);
                (tat <= now.saturating_add(self.tolerance)).then(|| tat + self.interval)
            })
            .is_ok()
    }
}

/// How long the listeners may wait at start for the bridges' local sessions (a bridge
/// that cannot create its session in that time must not keep every client out).
pub const PRIMING_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The connection limits of one broker, shared by its shards.
#[derive(Debug)]
pub struct Admission {
    global: Counter,
    listeners: Box<[(Counter, Option<Rate>)]>,
    /// Time origin of the rate limiters.
    base: Instant,
    /// Bridges (on any shard) whose local session and `out` subscriptions do not exist
    /// yet: no shard accepts clients until they do (or [`PRIMING_LIMIT`] passed), so a
    /// message published right after the start cannot miss a bridge's subscription.
    priming: AtomicUsize,
}

impl Admission {
    /// The limits of `config`; `now` is the time origin of the rate limiters.
    pub fn new(config: &Config, now: Instant) -> Self {
        Self {
            global: Counter::new(config.max_connections),
            listeners: config
                .listeners
                .iter()
                .map(|l| {
                    (
                        Counter::new(l.max_connections),
                        Rate::new(config.max_connection_rate),
                    )
                })
                .collect(),
            base: now,
            priming: AtomicUsize::new(0),
        }
    }

    /// `n` more bridges must create their local session before clients are accepted
    /// (called while the shards are built, before any runs).
    pub fn hold_for_bridges(&self, n: usize) {
        self.priming.fetch_add(n, Ordering::AcqRel);
    }

    /// One of the bridges counted by [`Admission::hold_for_bridges`] has its session.
    pub fn bridge_primed(&self) {
        let _ = self
            .priming
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Whether shards may accept clients: every counted bridge has its session, or
    /// [`PRIMING_LIMIT`] passed since the start (then the bridges that still have none
    /// are logged by the caller).
    pub fn accepting(&self, now: Instant) -> bool {
        self.priming.load(Ordering::Acquire) == 0
            || now.saturating_duration_since(self.base) >= PRIMING_LIMIT
    }

    /// How many counted bridges still have no local session.
    pub fn bridges_priming(&self) -> usize {
        self.priming.load(Ordering::Acquire)
    }

    /// Counts a new connection on `listener` (index in the config), or says why it must
    /// be refused (and logs that, rate-limited). Callable from any shard at once.
    pub fn admit(&self, listener: usize, now: Instant) -> Result<(), Refusal> {
        let result = self.check(listener, now);
        if let Err(why) = result {
            let what = match why {
                Refusal::MaxConnections => "max_connections reached",
                Refusal::Rate => "max_connection_rate exceeded",
            };
            crate::log_limited!(
                crate::log::Level::Notice,
                now,
                "Refused a connection on listener {listener}: {what}."
            );
        }
        result
    }

    fn check(&self, listener: usize, now: Instant) -> Result<(), Refusal> {
        let (count, rate) = match self.listeners.get(listener) {
            Some((c, r)) => (Some(c), r.as_ref()),
            None => (None, None),
        };
        if !self.global.reserve() {
            return Err(Refusal::MaxConnections);
        }
        if count.is_some_and(|c| !c.reserve()) {
            self.global.release();
            return Err(Refusal::MaxConnections);
        }
        let now_ns =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        if rate.is_some_and(|r| !r.admit(now_ns)) {
            if let Some(c) = count {
                c.release();
            }
            self.global.release();
            return Err(Refusal::Rate);
        }
        Ok(())
    }

    /// A connection admitted on `listener` closed.
    pub fn release(&self, listener: usize) {
        if let Some((c, _)) = self.listeners.get(listener) {
            c.release();
        }
        self.global.release();
    }

    /// Connections admitted and not released (all listeners).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.global.open.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Listener;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn per_listener_and_global_limits() {
        let mut c = Config::with_listener("127.0.0.1:0".parse().unwrap());
        c.listeners.push(Listener::new(0, None));
        c.listeners[0].max_connections = Some(1);
        c.max_connections = Some(3);
        let now = Instant::now();
        let a = Admission::new(&c, now);
        assert_eq!(a.admit(0, now), Ok(()));
        assert_eq!(a.admit(0, now), Err(Refusal::MaxConnections));
        assert_eq!(a.admit(1, now), Ok(()));
        assert_eq!(a.admit(1, now), Ok(()));
        assert_eq!(a.admit(1, now), Err(Refusal::MaxConnections));
        // A listener refusal undid its global reservation.
        assert_eq!(a.open(), 3);
        a.release(0);
        assert_eq!(a.admit(0, now), Ok(()));
        assert_eq!(a.open(), 3);
    }

    #[test]
    fn rate_limit_refills() {
        let mut c = Config::with_listener("127.0.0.1:0".parse().unwrap());
        c.max_connection_rate = 2;
        let t0 = Instant::now();
        let a = Admission::new(&c, t0);
        assert_eq!(a.admit(0, t0), Ok(()));
        assert_eq!(a.admit(0, t0), Ok(()));
        assert_eq!(a.admit(0, t0), Err(Refusal::Rate));
        let t1 = t0 + Duration::from_millis(600);
        assert_eq!(a.admit(0, t1), Ok(()));
        assert_eq!(a.admit(0, t1), Err(Refusal::Rate));
        // Refusals by rate hold no connection slot.
        assert_eq!(a.open(), 3);
    }

    #[test]
    fn release_never_wraps() {
        let c = Config::with_listener("127.0.0.1:0".parse().unwrap());
        let a = Admission::new(&c, Instant::now());
        a.release(0);
        a.release(7);
        assert_eq!(a.open(), 0);
    }

    /// Shards racing for the last slots: exactly `max` are admitted, however the threads
    /// interleave (each thread stands for a shard with its own SO_REUSEPORT share).
    #[test]
    fn exact_across_concurrent_shards() {
        let mut c = Config::with_listener("127.0.0.1:0".parse().unwrap());
        c.max_connections = Some(5);
        c.max_connection_rate = 7;
        let now = Instant::now();
        for _ in 0..50 {
            let a = Arc::new(Admission::new(&c, now));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let a = Arc::clone(&a);
                    std::thread::spawn(move || (0..5).filter(|_| a.admit(0, now).is_ok()).count())
                })
                .collect();
            let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(admitted, 5);
            assert_eq!(a.open(), 5);
        }
    }
}
