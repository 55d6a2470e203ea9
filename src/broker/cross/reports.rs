//! `$SYS` across shards: every `sys_interval` each shard but 0 sends shard 0 a
//! [`ShardReport`] of its counters; shard 0 keeps the last one of each and publishes the
//! sums and the per-shard figures. This module also keeps this shard's worst event-loop
//! lag of the interval (measured by the runtime).
//!
//! It never sends, routes or reads the clock: it stores and adds up.

use crate::mailbox::ShardId;
use crate::metrics::Stats;

use super::messages::ShardReport;

#[derive(Debug)]
pub(super) struct Reports {
    me: ShardId,
    /// Shard 0: the last report of every shard.
    last: Vec<Option<ShardReport>>,
    /// Worst loop lag since the last `$SYS` publication, microseconds.
    loop_lag_us: u64,
}

impl Reports {
    pub(super) fn new(me: ShardId, shards: usize) -> Self {
        Self {
            me,
            last: (0..shards).map(|_| None).collect(),
            loop_lag_us: 0,
        }
    }

    pub(super) fn store(&mut self, report: ShardReport) {
        if let Some(slot) = self.last.get_mut(report.shard) {
            *slot = Some(report);
        }
    }

    pub(super) fn note_loop_lag(&mut self, us: u64) {
        self.loop_lag_us = self.loop_lag_us.max(us);
    }

    pub(super) fn loop_lag_us(&self) -> u64 {
        self.loop_lag_us
    }

    /// Starts a new interval.
    pub(super) fn reset_loop_lag(&mut self) {
        self.loop_lag_us = 0;
    }

    /// Shard 0: the sum of every shard's last report and `own` counters.
    pub(super) fn aggregate(&self, own: &Stats) -> Stats {
        let mut total = own.clone();
        for r in self.last.iter().flatten() {
            if r.shard == self.me {
                continue;
            }
            let s = &r.stats;
            total.clients_connected += s.clients_connected;
            total.clients_total += s.clients_total;
            total.clients_maximum += s.clients_maximum;
            total.connections_accepted += s.connections_accepted;
            total.connects += s.connects;
            total.clients_expired += s.clients_expired;
            total.shared_subscriptions += s.shared_subscriptions;
            total.publish_bytes_received += s.publish_bytes_received;
            total.publish_bytes_sent += s.publish_bytes_sent;
            total.messages_received += s.messages_received;
            total.messages_sent += s.messages_sent;
            total.publish_received += s.publish_received;
            total.publish_sent += s.publish_sent;
            total.publish_dropped += s.publish_dropped;
            for (t, o) in total.dropped_by_reason.iter_mut().zip(s.dropped_by_reason) {
                *t += o;
            }
            for (t, o) in total
                .publish_received_qos
                .iter_mut()
                .zip(s.publish_received_qos)
            {
                *t += o;
            }
            for (t, o) in total.publish_sent_qos.iter_mut().zip(s.publish_sent_qos) {
                *t += o;
            }
            total.bytes_received += s.bytes_received;
            total.bytes_sent += s.bytes_sent;
            total.subscriptions += s.subscriptions;
            total.stored += s.stored;
            total.stored_bytes += s.stored_bytes;
            total.output_bytes += s.output_bytes;
            total.subscribe_paused += s.subscribe_paused;
            total.shared_skipped += s.shared_skipped;
            total.embed_publish_refused += s.embed_publish_refused;
            total.publish_refused_memory += s.publish_refused_memory;
            for (t, o) in [
                (&mut total.load_received, &s.load_received),
                (&mut total.load_sent, &s.load_sent),
                (&mut total.load_publish_received, &s.load_publish_received),
                (&mut total.load_publish_sent, &s.load_publish_sent),
                (&mut total.load_bytes_received, &s.load_bytes_received),
                (&mut total.load_bytes_sent, &s.load_bytes_sent),
                (&mut total.load_connections, &s.load_connections),
                (&mut total.load_publish_dropped, &s.load_publish_dropped),
                (&mut total.load_sockets, &s.load_sockets),
            ] {
                t.one += o.one;
                t.five += o.five;
                t.fifteen += o.fifteen;
            }
        }
        total
    }

    /// Per-shard `$SYS` values: `(shard, loop lag in microseconds, clients connected)`,
    /// this shard's from `own_connected`.
    pub(super) fn lags(&self, own_connected: u64) -> Vec<(ShardId, u64, u64)> {
        let mut out = vec![(self.me, self.loop_lag_us, own_connected)];
        for r in self.last.iter().flatten() {
            if r.shard != self.me {
                out.push((r.shard, r.loop_lag_us, r.stats.clients_connected));
            }
        }
        out.sort_unstable();
        out
    }
}
