//! The broker's timers: a min-heap of deadlines with lazy invalidation. An entry names a
//! connection or session by slab key *and* uid, so an entry for a slot that was freed and
//! reused is recognised as stale and ignored; a keep alive entry that fires early (the
//! client sent packets since) is simply pushed again at the real deadline.
//!
//! The coordinator's `fire` carries out a due timer through the parts (connect timeout,
//! keep alive, session expiry, will delay, slow-subscriber cut-off) and publishes `$SYS`
//! every `sys_interval` (shard 0 from every shard's report). Keep alive and the cut-off
//! report the connection's state to flow control and do what it decides (a connection
//! the broker did not read is not timed out; a stuck one is cut). It never reads the
//! clock: `now` comes from the runtime.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

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

#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub(super) fn push(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, t))| t)
    }
}

impl Broker {
    pub(super) fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Connect { conn, uid } => {
                let Some(c) = self.conns.get(conn) else {
                    return;
                };
                if c.uid == uid && c.state == ConnState::AwaitConnect {
                    crate::log_notice!(
                        "Client <unknown> from {} did not send CONNECT in time, disconnecting.",
                        c.peer
                    );
                    self.close_conn(conn);
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
