//! The broker's timers: a min-heap of deadlines with lazy invalidation. An entry names a
//! connection or session by slab key *and* uid, so an entry for a slot that was freed and
//! reused is recognised as stale and ignored; a keep alive entry that fires early (the
//! client sent packets since) is simply pushed again at the real deadline. Every
//! connection has an entry (connect timeout, then keep alive), so an entry is packed
//! into 24 bytes, not 40 (issue 14: memory per idle connection).
//!
//! The coordinator's `fire` carries out a due timer through the parts (connect timeout,
//! keep alive, session expiry, will delay, slow-subscriber cut-off) and publishes `$SYS`
//! every `sys_interval` (shard 0 from every shard's report). Keep alive and the cut-off
//! report the connection's state to flow control and do what it decides (a connection
//! the broker did not read is not timed out; a stuck one is cut). It never reads the
//! clock: `now` comes from the runtime.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{ByteStr, Publish, ReasonCode};

use super::connections::ConnState;
use super::cross::Control;
use super::flow::{KeepAlive, Stall, StallState, Stuck};
use super::publish::{load_of, output_of};
use super::{Broker, ConnId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A connection that has not sent CONNECT yet.
    Connect {
        conn: ConnId,
        uid: u64,
    },
    KeepAlive {
        conn: ConnId,
        uid: u64,
    },
    SessionExpiry {
        key: usize,
        uid: u64,
    },
    WillDelay {
        key: usize,
        uid: u64,
    },
    /// A connection that was stuck when armed (slow-subscriber cut-off).
    Stall {
        conn: ConnId,
        uid: u64,
    },
    Sys,
    /// Offers a message an ingest handler was busy with again.
    IngestRetry {
        conn: ConnId,
        uid: u64,
    },
}

/// A [`Timer`] in 24 bytes: its deadline in nanoseconds after [`Timers::base`], then the
/// fields in the order `Timer`'s derived `Ord` compares them (variant, slot, uid), so
/// entries due at the same time pop in the same order as `(Instant, Timer)` would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: u64,
    kind: u8,
    slot: u32,
    uid: u64,
}

impl Entry {
    /// `None` when the slot does not fit in 32 bits (then the timer is kept unpacked).
    fn pack(at: u64, timer: Timer) -> Option<Self> {
        let (kind, slot, uid) = match timer {
            Timer::Connect { conn, uid } => (0, conn, uid),
            Timer::KeepAlive { conn, uid } => (1, conn, uid),
            Timer::SessionExpiry { key, uid } => (2, key, uid),
            Timer::WillDelay { key, uid } => (3, key, uid),
            Timer::Stall { conn, uid } => (4, conn, uid),
            Timer::Sys => (5, 0, 0),
            Timer::IngestRetry { conn, uid } => (6, conn, uid),
        };
        let slot = u32::try_from(slot).ok()?;
        Some(Self {
            at,
            kind,
            slot,
            uid,
        })
    }

    fn timer(self) -> Timer {
        let (conn, key, uid) = (self.slot as usize, self.slot as usize, self.uid);
        match self.kind {
            0 => Timer::Connect { conn, uid },
            1 => Timer::KeepAlive { conn, uid },
            2 => Timer::SessionExpiry { key, uid },
            3 => Timer::WillDelay { key, uid },
            4 => Timer::Stall { conn, uid },
            6 => Timer::IngestRetry { conn, uid },
            _ => Timer::Sys,
        }
    }
}

#[derive(Debug)]
pub(super) struct Timers {
    /// Deadlines are kept as nanoseconds after this (no later than any `now` the broker
    /// is given, so an earlier deadline is already due and is kept as `base`).
    base: Instant,
    heap: BinaryHeap<Reverse<Entry>>,
    /// Timers whose slot does not fit in 32 bits (never on a real shard; kept exact).
    wide: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    /// Timers of a broker started at `now`.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            base: now,
            heap: BinaryHeap::new(),
            wide: BinaryHeap::new(),
        }
    }

    pub(super) fn push(&mut self, at: Instant, timer: Timer) {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        match Entry::pack(nanos, timer) {
            Some(entry) => self.heap.push(Reverse(entry)),
            None => self.wide.push(Reverse((at, timer))),
        }
    }

    pub(super) fn next(&self) -> Option<Instant> {
        let packed = self
            .heap
            .peek()
            .map(|Reverse(e)| self.base + Duration::from_nanos(e.at));
        let wide = self.wide.peek().map(|Reverse((at, _))| *at);
        match (packed, wide) {
            (Some(p), Some(w)) => Some(p.min(w)),
            (p, w) => p.or(w),
        }
    }

    /// Entries held, stale ones included (tests: the memory of the timers).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len() + self.wide.len()
    }

    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let next = self.next()?;
        if next > now {
            return None;
        }
        if self.wide.peek().is_some_and(|Reverse((at, _))| *at == next) {
            return self.wide.pop().map(|Reverse((_, t))| t);
        }
        self.heap.pop().map(|Reverse(e)| e.timer())
    }
}

impl Broker {
    pub(super) fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Connect { conn, uid } => {
                // A deferred login's own deadline, or the accept's while one waits
                // (which leaves `keep_alive_waits` for the login's timer).
                if self.expire_login(conn, uid, now) {
                    return;
                }
                let Some(c) = self.conns.get_mut(conn).filter(|c| c.uid == uid) else {
                    return;
                };
                let keep_alive_waits = std::mem::take(&mut c.keep_alive_waits);
                match c.state {
                    ConnState::AwaitConnect => {
                        crate::log_notice!(
                            "Client <unknown> from {} did not send CONNECT in time, disconnecting.",
                            c.peer
                        );
                        self.close_conn(conn);
                    }
                    // Connected since: this entry becomes its keep alive timer.
                    ConnState::Active(_) if keep_alive_waits => {
                        self.check_keep_alive(conn, uid, now);
                    }
                    _ => {}
                }
            }
            Timer::KeepAlive { conn, uid } => self.check_keep_alive(conn, uid, now),
            Timer::SessionExpiry { key, uid } => {
                if let Some(will) = self.sessions.on_expiry_timer(key, uid, now) {
                    if let Some(will) = will {
                        // The will is sent at session end if that comes first [MQTT-3.1.3-9].
                        self.publish_will(will, now);
                    }
                    self.stats.clients_expired += 1;
                    self.end_session(key, now);
                }
            }
            Timer::WillDelay { key, uid } => {
                if self.sessions.will_due(key, uid, now) {
                    if let Some(will) = self.sessions.take_will(key) {
                        self.persist_will_done(key);
                        self.publish_will(will, now);
                    }
                }
            }
            Timer::Stall { conn, uid } => self.check_stall(conn, uid, now),
            Timer::IngestRetry { conn, uid } => self.retry_ingest(conn, uid, now),
            Timer::Sys => {
                self.publish_sys(now);
                self.timers.push(now + self.config.sys_interval, Timer::Sys);
            }
        }
    }

    /// Arms the keep alive timer of connection `conn` (uid `uid`), connected at `now`,
    /// for deadline `at`. Its connect timer, armed at accept, is still pending unless
    /// the CONNECT took longer than `connect_timeout` (a home shard's answer): when
    /// it fires before `at`, it is left to arm the keep alive timer then
    /// ([`Broker::fire`]), so that a connection has one timer entry at a time, not two
    /// for its first `connect_timeout` (24 bytes of every new connection, issue 14).
    pub(super) fn arm_keep_alive(
        &mut self,
        conn: ConnId,
        uid: u64,
        at: Option<Instant>,
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(conn).filter(|c| c.uid == uid) else {
            return;
        };
        let Some(at) = at else {
            return;
        };
        if c.keep_alive_waits && at >= now + self.config.connect_timeout {
            return;
        }
        c.keep_alive_waits = false;
        self.timers.push(at, Timer::KeepAlive { conn, uid });
    }

    /// Disconnects a client whose keep alive ran out [MQTT-3.1.2-24], unless the broker
    /// did not read it (flow control); re-arms for the real deadline otherwise.
    fn check_keep_alive(&mut self, conn: ConnId, uid: u64, now: Instant) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        let ConnState::Active(key) = c.state else {
            return;
        };
        if c.uid != uid {
            return;
        }
        // An idle connection keeps no output queue (one written out outside
        // `poll_transmit` may still have one).
        self.conns.release_output(conn);
        let deadline = |b: &Self| b.sessions.get(key).and_then(|s| s.session.poll_timeout());
        let Some(at) = deadline(self) else {
            return;
        };
        if at > now || self.keep_alive_restarts(conn, now) {
            if let Some(at) = deadline(self) {
                self.timers.push(at, Timer::KeepAlive { conn, uid });
            }
            return;
        }
        if let Some(slot) = self.sessions.get(key) {
            crate::log_notice!(
                "Client {} has exceeded timeout, disconnecting.",
                slot.session.client_id()
            );
        }
        self.disconnect_with(conn, ReasonCode::KEEP_ALIVE_TIMEOUT);
        self.end_connection(conn, now, true);
        self.close_conn(conn);
    }

    /// The keep alive deadline of `conn` passed: if flow control says the broker did not
    /// read it (or only just resumed), or persistence holds the shard (nothing is read),
    /// its clock restarts at `now` and this is true.
    fn keep_alive_restarts(&mut self, conn: ConnId, now: Instant) -> bool {
        let Some(c) = self.conns.get(conn) else {
            return false;
        };
        let ConnState::Active(key) = c.state else {
            return false;
        };
        let output = output_of(c);
        let (sessions, conns) = (&self.sessions, &self.conns);
        let due = self
            .flow
            .keep_alive_due(conn, output, |key, uid| load_of(sessions, conns, key, uid));
        // Nothing is read while persistence holds the shard: not the client's fault.
        if due == KeepAlive::Expired && !self.persist_held() {
            return false;
        }
        if self.flow.output_over(output) {
            // Not read because it does not read: the cut-off decides, not keep alive.
            self.arm_stall(conn, now);
        }
        if let Some(slot) = self.sessions.get_mut(key) {
            slot.session.restart_keep_alive(now);
        }
        true
    }

    /// Cuts off a connection that stayed stuck without progress for
    /// `slow_subscriber_timeout` (flow control decides); re-arms while it still makes
    /// progress.
    fn check_stall(&mut self, conn: ConnId, uid: u64, now: Instant) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        // Persistence holds the shard: nothing is written or read, for anyone.
        if self.persist_held() {
            if let Stall::Rearm(at) = self.flow.excuse_stall(conn, uid, now) {
                self.timers.push(at, Timer::Stall { conn, uid });
            }
            return;
        }
        let session = match c.state {
            ConnState::Active(key) => self.sessions.get(key).map(|s| &s.session),
            ConnState::Closing => return,
            _ => None,
        };
        let state = StallState {
            backlogged: session.is_some_and(|s| s.is_backlogged()),
            output: output_of(c),
            written: c.written(),
            last_ack: session.and_then(|s| s.last_ack()),
        };
        let id = session.map(|s| s.client_id().to_string());
        match self.flow.on_stall_timer(conn, uid, Some(state), now) {
            Stall::Ignore => {}
            Stall::Rearm(at) => self.timers.push(at, Timer::Stall { conn, uid }),
            Stall::Cut(why) => {
                let id = id.unwrap_or_else(|| format!("<unknown> from {}", c.peer));
                let secs = self.flow.stall_timeout_secs();
                match why {
                    Stuck::Unacknowledged => crate::log_notice!(
                        "Client {id} has not acknowledged its messages for {secs}s, disconnecting."
                    ),
                    Stuck::Unread => {
                        crate::log_notice!(
                            "Client {id} has not read its full queue for {secs}s, disconnecting."
                        );
                        self.stats
                            .dropped(crate::metrics::DropReason::SlowSubscriber, 1);
                    }
                }
                // The memory goes now, not when the socket drains; a v5 client is told
                // which limit it hit (0x97, quota exceeded), if it still reads.
                self.conns.clear_output(conn);
                self.disconnect_with(conn, ReasonCode::QUOTA_EXCEEDED);
                self.end_connection(conn, now, true);
            }
        }
    }

    /// Publishes the `$SYS` topics as retained messages. With several shards only shard
    /// 0 publishes, from the sum of every shard's last report; the others send it theirs.
    fn publish_sys(&mut self, now: Instant) {
        self.refresh_gauges();
        self.stats.update_load(now);
        if self.cross.me() != 0 {
            let report = self.shard_report();
            self.cross.reset_loop_lag();
            self.cross.send(0, Control::Report(Box::new(report)));
            return;
        }
        let total = self.cross.aggregate_stats(&self.stats);
        let mut messages: Vec<(ByteStr, String)> = total
            .sys_messages(now)
            .into_iter()
            .map(|(t, v)| (ByteStr::from_static(t), v))
            .collect();
        for (shard, lag, connected) in self.cross.shard_lags(self.stats.clients_connected) {
            messages.push((
                ByteStr::from(format!("$SYS/broker/shards/{shard}/loop_lag_us")),
                lag.to_string(),
            ));
            messages.push((
                ByteStr::from(format!("$SYS/broker/shards/{shard}/clients/connected")),
                connected.to_string(),
            ));
        }
        self.cross.reset_loop_lag();
        for (topic, value) in messages {
            let publish = Publish {
                retain: true,
                topic,
                payload: Bytes::from(value),
                ..Default::default()
            };
            self.route(publish, None, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Entry, Timer, Timers};

    #[test]
    fn an_entry_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
    }

    #[test]
    fn every_timer_packs_and_unpacks_to_itself() {
        let all = [
            Timer::Connect { conn: 7, uid: 9 },
            Timer::KeepAlive {
                conn: 0,
                uid: u64::MAX,
            },
            Timer::SessionExpiry {
                key: u32::MAX as usize,
                uid: 1,
            },
            Timer::WillDelay { key: 3, uid: 4 },
            Timer::Stall { conn: 5, uid: 6 },
            Timer::Sys,
            Timer::IngestRetry { conn: 1, uid: 2 },
        ];
        for t in all {
            assert_eq!(Entry::pack(0, t).map(Entry::timer), Some(t));
        }
    }

    /// The packed heap pops in the order of `(Instant, Timer)`: by deadline, then by the
    /// timer's own order; a deadline before the base is due at once; a slot beyond 32
    /// bits is kept exactly in the wide heap and interleaves with the others.
    #[test]
    fn pops_in_deadline_then_timer_order() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut mixed = vec![
            (at(30), Timer::KeepAlive { conn: 2, uid: 1 }),
            (at(10), Timer::Stall { conn: 1, uid: 1 }),
            (at(10), Timer::KeepAlive { conn: 9, uid: 1 }),
            (at(10), Timer::KeepAlive { conn: 3, uid: 5 }),
            (at(20), Timer::Sys),
            (t0, Timer::Connect { conn: 4, uid: 4 }),
        ];
        if let Ok(wide) = usize::try_from(u64::from(u32::MAX) + 1) {
            mixed.push((at(15), Timer::Stall { conn: wide, uid: 1 }));
        }
        let mut timers = Timers::new(at(5));
        for &(when, t) in &mixed {
            timers.push(when, t);
        }
        let mut expected = mixed.clone();
        expected.sort();
        assert_eq!(
            timers.next(),
            Some(at(5)),
            "a deadline before the base is due at once"
        );
        assert_eq!(timers.pop_due(at(4)), None);
        let mut popped = Vec::new();
        while let Some(t) = timers.pop_due(at(100)) {
            popped.push(t);
        }
        let expected: Vec<Timer> = expected.into_iter().map(|(_, t)| t).collect();
        assert_eq!(popped, expected);
        assert_eq!(timers.next(), None);
    }
}
