//! The board the shards pin their figures on for the HTTP side to read: one slot per
//! shard holding that shard's last published [`ShardView`] (its counters, loop-lag
//! histogram, mailbox backlog, and once a second its connections and subscriptions).
//!
//! A shard publishes with [`Board::publish`], which only ever *tries* the slot's lock:
//! if a reader holds it at that moment the shard skips this publication and carries on
//! (the next one is a quarter of a second later), so a scrape can never make a shard
//! wait. Readers ([`Board::read`]) hold a slot only while they copy what they need. This
//! module never routes, never touches a socket and never reads the clock.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError, TryLockError};
use std::time::Instant;

use crate::metrics::Stats;

/// Upper bounds of the loop-lag histogram's buckets, microseconds (`+Inf` follows).
pub const LAG_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

/// A fixed-bucket histogram of microseconds (Prometheus' shape: bucket counts, sum,
/// count). Plain integers, owned by one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Per bucket of [`LAG_BUCKETS_US`] (not cumulative); the last slot is `+Inf`.
    pub counts: [u64; LAG_BUCKETS_US.len() + 1],
    pub sum_us: u64,
    pub count: u64,
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        let i = LAG_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LAG_BUCKETS_US.len());
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }

    /// `(upper bound, cumulative count)` per bucket, `None` for `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let mut acc = 0;
        self.counts.iter().enumerate().map(move |(i, c)| {
            acc += c;
            (LAG_BUCKETS_US.get(i).copied(), acc)
        })
    }
}

/// One connected client as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRow {
    pub client_id: String,
    pub username: Option<String>,
    pub peer: SocketAddr,
    /// 3, 4 or 5 (MQTT 3.1, 3.1.1, 5.0).
    pub protocol: u8,
    pub keep_alive: u16,
    pub inflight: usize,
    pub queued: usize,
    /// Output bytes ever written to the socket.
    pub bytes_out: u64,
    pub listener: usize,
    pub shard: usize,
}

/// One subscription (filter, client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRow {
    pub client_id: String,
    pub filter: String,
    pub qos: u8,
    /// The client is connected.
    pub online: bool,
    pub shard: usize,
}

/// One retained message (its payload cut to a preview).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedRow {
    pub topic: String,
    pub qos: u8,
    pub bytes: usize,
    /// The first bytes of the payload, lossily as UTF-8.
    pub preview: String,
}

/// What one shard last published.
#[derive(Debug, Clone, Default)]
pub struct ShardView {
    pub stats: Option<Stats>,
    /// Event-loop lag: how long readiness seen at the top of an iteration waited for the
    /// iteration to finish.
    pub loop_lag: Histogram,
    /// Data messages this shard sent the others, not yet taken (rings and overflow).
    pub mailbox_depth: u64,
    /// Of those, the ones waiting in the overflow because a peer's ring was full.
    pub mailbox_backlog: u64,
    /// Messages sent and not yet acknowledged, over every session of the shard.
    pub inflight: u64,
    /// Messages queued behind the inflight windows, over every session of the shard.
    pub queued: u64,
    /// Payload bytes of the retained store (every shard holds a replica).
    pub retained_bytes: u64,
    /// When this view was published.
    pub at: Option<Instant>,
    pub conns: Vec<ConnRow>,
    pub subs: Vec<SubRow>,
    /// Shard 0 only (every shard holds a replica of the whole store).
    pub retained: Vec<RetainedRow>,
}

impl ShardView {
    /// The figures without the row lists (what `/metrics` needs).
    pub fn clone_figures(&self) -> Self {
        Self {
            stats: self.stats.clone(),
            loop_lag: self.loop_lag.clone(),
            mailbox_depth: self.mailbox_depth,
            mailbox_backlog: self.mailbox_backlog,
            inflight: self.inflight,
            queued: self.queued,
            retained_bytes: self.retained_bytes,
            at: self.at,
            conns: Vec::new(),
            subs: Vec::new(),
            retained: Vec::new(),
        }
    }
}

/// Rows listed per shard at most (the console and API page through what is there).
pub const MAX_ROWS: usize = 10_000;

/// Every shard's slot.
#[derive(Debug)]
pub struct Board {
    slots: Vec<Mutex<ShardView>>,
}

impl Board {
    pub fn new(shards: usize) -> Self {
        Self {
            slots: (0..shards.max(1))
                .map(|_| Mutex::new(ShardView::default()))
                .collect(),
        }
    }

    /// Called by shard `shard`: updates its view unless a reader holds it right now
    /// (then returns false and changes nothing). Never waits.
    pub fn publish(&self, shard: usize, update: impl FnOnce(&mut ShardView)) -> bool {
        let Some(slot) = self.slots.get(shard) else {
            return false;
        };
        let mut view = match slot.try_lock() {
            Ok(v) => v,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        update(&mut view);
        true
    }

    /// Reads every shard's view with `f` (each slot held only during its call).
    pub fn read<T>(&self, mut f: impl FnMut(usize, &ShardView) -> T) -> Vec<T> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let view = slot.lock().unwrap_or_else(PoisonError::into_inner);
                f(i, &view)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_upper_bounds() {
        let mut h = Histogram::default();
        for us in [10, 50, 51, 2_000, 5_000_000] {
            h.record(us);
        }
        let cum: Vec<_> = h.cumulative().collect();
        assert_eq!(cum[0], (Some(50), 2)); // 10 and 50 (le is inclusive)
        assert_eq!(cum[1], (Some(100), 3));
        assert_eq!(cum[5], (Some(2_500), 4));
        assert_eq!(cum.last(), Some(&(None, 5)));
        assert_eq!(h.count, 5);
        assert_eq!(h.sum_us, 10 + 50 + 51 + 2_000 + 5_000_000);
    }

    #[test]
    fn a_publication_never_waits_for_a_reader() {
        let board = Board::new(2);
        assert!(board.publish(1, |v| v.mailbox_backlog = 7));
        let seen = board.read(|shard, v| {
            // While shard 1's slot is read, its shard skips its publication.
            if shard == 1 {
                assert!(!board.publish(1, |v| v.mailbox_backlog = 8));
            }
            v.mailbox_backlog
        });
        assert_eq!(seen, vec![0, 7]);
    }
}
