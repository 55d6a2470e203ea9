//! Admission control at accept time: per-listener `max_connections` and the
//! `max_connection_rate` token bucket (reconnect storms). The shard asks [`Admission::admit`]
//! before registering a socket and calls [`Admission::release`] when one closes.
//!
//! It never touches a socket and keeps no per-connection state beyond a counter per
//! listener. Counts are per shard: with N shards each gets 1/N of every limit (rounded
//! up), as the kernel's SO_REUSEPORT hashing spreads connections; exact for one shard.

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

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub struct Admission {
    global_max: Option<usize>,
    listener_max: Vec<Option<usize>>,
    open: Vec<usize>,
    total: usize,
    rate: u32,
    buckets: Vec<Bucket>,
    /// Refusals since the last log line (logged at most once a second).
    refused: u64,
    last_log: Option<Instant>,
}

impl Admission {
    /// This shard's share of the limits of `config` (one of `shards` shards).
    pub fn new(config: &Config, shards: usize, now: Instant) -> Self {
        let n = config.listeners.len();
        let shards = shards.max(1);
        let share = |m: usize| m.div_ceil(shards);
        let rate = config
            .max_connection_rate
            .div_ceil(u32::try_from(shards).unwrap_or(u32::MAX));
        Self {
            global_max: config.max_connections.map(share),
            listener_max: config
                .listeners
                .iter()
                .map(|l| l.max_connections.map(share))
                .collect(),
            open: vec![0; n],
            total: 0,
            rate,
            buckets: (0..n)
                .map(|_| Bucket {
                    tokens: f64::from(rate),
                    last: now,
                })
                .collect(),
            refused: 0,
            last_log: None,
        }
    }

    /// Counts a new connection on `listener`, or says why it must be refused.
    pub fn admit(&mut self, listener: usize, now: Instant) -> Result<(), Refusal> {
        let refusal = self.check(listener, now);
        match refusal {
            Ok(()) => {
                self.total += 1;
                if let Some(n) = self.open.get_mut(listener) {
                    *n += 1;
                }
            }
            Err(why) => {
                self.refused += 1;
                if self
                    .last_log
                    .map_or(true, |t| now.saturating_duration_since(t).as_secs() >= 1)
                {
                    let what = match why {
                        Refusal::MaxConnections => "max_connections reached",
                        Refusal::Rate => "max_connection_rate exceeded",
                    };
                    crate::log_notice!(
                        "Refused {} connection(s) on listener {listener}: {what}.",
                        self.refused
                    );
                    self.refused = 0;
                    self.last_log = Some(now);
                }
            }
        }
        refusal
    }

    fn check(&mut self, listener: usize, now: Instant) -> Result<(), Refusal> {
        if self.global_max.is_some_and(|m| self.total >= m) {
            return Err(Refusal::MaxConnections);
        }
        let open = self.open.get(listener).copied().unwrap_or(0);
        if self
            .listener_max
            .get(listener)
            .copied()
            .flatten()
            .is_some_and(|m| open >= m)
        {
            return Err(Refusal::MaxConnections);
        }
        if self.rate > 0 {
            if let Some(b) = self.buckets.get_mut(listener) {
                let rate = f64::from(self.rate);
                let dt = now.saturating_duration_since(b.last).as_secs_f64();
                b.tokens = (b.tokens + dt * rate).min(rate);
                b.last = now;
                if b.tokens < 1.0 {
                    return Err(Refusal::Rate);
                }
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }

    /// A connection admitted on `listener` closed.
    pub fn release(&mut self, listener: usize) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.open.get_mut(listener) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Listener;
    use std::time::Duration;

    #[test]
    fn per_listener_and_global_limits() {
        let mut c = Config::with_listener("127.0.0.1:0".parse().unwrap());
        c.listeners.push(Listener::new(0, None));
        c.listeners[0].max_connections = Some(1);
        c.max_connections = Some(3);
        let now = Instant::now();
        let mut a = Admission::new(&c, 1, now);
        assert_eq!(a.admit(0, now), Ok(()));
        assert_eq!(a.admit(0, now), Err(Refusal::MaxConnections));
        assert_eq!(a.admit(1, now), Ok(()));
        assert_eq!(a.admit(1, now), Ok(()));
        assert_eq!(a.admit(1, now), Err(Refusal::MaxConnections));
        a.release(0);
        assert_eq!(a.admit(0, now), Ok(()));
    }

    #[test]
    fn rate_limit_refills() {
        let mut c = Config::with_listener("127.0.0.1:0".parse().unwrap());
        c.max_connection_rate = 2;
        let t0 = Instant::now();
        let mut a = Admission::new(&c, 1, t0);
        assert_eq!(a.admit(0, t0), Ok(()));
        assert_eq!(a.admit(0, t0), Ok(()));
        assert_eq!(a.admit(0, t0), Err(Refusal::Rate));
        let t1 = t0 + Duration::from_millis(600);
        assert_eq!(a.admit(0, t1), Ok(()));
        assert_eq!(a.admit(0, t1), Err(Refusal::Rate));
    }
}
