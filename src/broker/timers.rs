//! The broker's timers: a min-heap of deadlines with lazy invalidation. An entry names a
//! connection or session by slab key *and* uid, so an entry for a slot that was freed and
//! reused is recognised as stale and ignored; a keep alive entry that fires early (the
//! client sent packets since) is simply pushed again at the real deadline.
//!
//! It never reads the clock: `now` comes from the runtime.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::{Broker, ConnId, ConnState};
use crate::session::ProtocolError;

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
    /// A subscriber whose output was full when armed (slow-subscriber cut-off).
    Stall {
        conn: ConnId,
        uid: u64,
    },
    Sys,
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
                let Some(c) = self.conn(conn) else { return };
                if c.uid == uid && c.state == ConnState::AwaitConnect {
                    crate::log_notice!(
                        "Client <unknown> from {} did not send CONNECT in time, disconnecting.",
                        c.peer
                    );
                    self.close_conn(conn);
                }
            }
            Timer::KeepAlive { conn, uid } => {
                let Some(c) = self.conn(conn) else { return };
                let ConnState::Active(key) = c.state else {
                    return;
                };
                if c.uid != uid {
                    return;
                }
                let Some(slot) = self.sessions.get(key) else {
                    return;
                };
                let Some(deadline) = slot.session.poll_timeout() else {
                    return;
                };
                if deadline <= now {
                    crate::log_notice!(
                        "Client {} has exceeded timeout, disconnecting.",
                        slot.session.client_id()
                    );
                    self.disconnect_with(conn, crate::codec::ReasonCode::KEEP_ALIVE_TIMEOUT);
                    self.end_connection(conn, now, true);
                    self.close_conn(conn);
                } else {
                    self.timers.push(deadline, Timer::KeepAlive { conn, uid });
                }
            }
            Timer::SessionExpiry { key, uid } => {
                let Some(slot) = self.sessions.get_mut(key) else {
                    return;
                };
                if slot.session.uid() != uid || slot.conn.is_some() {
                    return;
                }
                if slot.session.expires_at.is_some_and(|t| t <= now) {
                    crate::log_notice!("Expiring client {}.", slot.session.client_id());
                    if let Some((_, will)) = slot.session.pending_will.take() {
                        // The will is sent at session end if that comes first [MQTT-3.1.3-9].
                        self.publish_will(*will, now);
                    }
                    self.end_session(key);
                }
            }
            Timer::WillDelay { key, uid } => {
                let Some(slot) = self.sessions.get_mut(key) else {
                    return;
                };
                if slot.session.uid() != uid || slot.conn.is_some() {
                    return;
                }
                if slot
                    .session
                    .pending_will
                    .as_ref()
                    .is_some_and(|(t, _)| *t <= now)
                {
                    if let Some((_, will)) = slot.session.pending_will.take() {
                        self.persist_will_done(key);
                        self.publish_will(*will, now);
                    }
                }
            }
            Timer::Stall { conn, uid } => self.check_stall(conn, uid, now),
            Timer::Sys => {
                self.publish_sys(now);
                self.timers.push(now + self.config.sys_interval, Timer::Sys);
            }
        }
    }

    /// Cuts off a subscriber that kept a full output queue without reading a byte for
    /// `slow_subscriber_timeout`; re-arms while it still makes progress.
    fn check_stall(&mut self, conn: ConnId, uid: u64, now: Instant) {
        let out_limit = self.out_limit;
        let Some(c) = self.conn_mut(conn) else { return };
        if c.uid != uid {
            return;
        }
        let Some(mark) = c.stall_mark.take() else {
            return;
        };
        let ConnState::Active(key) = c.state else {
            return;
        };
        let full = c.out.len() >= out_limit
            || self
                .sessions
                .get(key)
                .is_some_and(|s| s.session.is_backlogged());
        let Some(c) = self.conn(conn) else { return };
        if !full {
            return;
        }
        if c.out.written() != mark {
            self.arm_stall(conn, now); // slow but reading: look again later
            return;
        }
        let id = self
            .sessions
            .get(key)
            .map(|s| s.session.client_id().to_string())
            .unwrap_or_default();
        crate::log_notice!(
            "Client {id} has not read its full queue for {}s, disconnecting.",
            self.config.slow_subscriber_timeout.as_secs()
        );
        self.stats.publish_dropped += 1;
        if let Some(c) = self.conn_mut(conn) {
            c.out.clear(); // the memory goes now, not when the socket drains
        }
        self.end_connection(conn, now, true);
    }

    /// Publishes the `$SYS` topics as retained messages. With several shards only shard
    /// 0 publishes, from the sum of every shard's last report; the others send it theirs.
    fn publish_sys(&mut self, now: Instant) {
        self.refresh_gauges();
        self.stats.update_load(now);
        if self.shard != 0 {
            let report = self.shard_report();
            self.loop_lag_us = 0;
            self.send_control(0, super::Control::Report(Box::new(report)));
            return;
        }
        let total = self.aggregate_stats();
        let mut messages: Vec<(crate::codec::ByteStr, String)> = total
            .sys_messages(now)
            .into_iter()
            .map(|(t, v)| (crate::codec::ByteStr::from_static(t), v))
            .collect();
        for (shard, lag, connected) in self.shard_lags() {
            messages.push((
                crate::codec::ByteStr::from(format!("$SYS/broker/shards/{shard}/loop_lag_us")),
                lag.to_string(),
            ));
            messages.push((
                crate::codec::ByteStr::from(format!(
                    "$SYS/broker/shards/{shard}/clients/connected"
                )),
                connected.to_string(),
            ));
        }
        self.loop_lag_us = 0;
        for (topic, value) in messages {
            let publish = crate::codec::Publish {
                retain: true,
                topic,
                payload: bytes::Bytes::from(value),
                ..Default::default()
            };
            self.route(publish, None, now);
        }
    }

    /// A protocol violation by a connected client: v5 DISCONNECT with the reason code,
    /// a log line naming the client, will published, connection closed.
    pub(super) fn protocol_error(&mut self, conn: ConnId, err: &ProtocolError, now: Instant) {
        let Some(c) = self.conn(conn) else { return };
        let name = match c.state {
            ConnState::Active(key) => self
                .sessions
                .get(key)
                .map(|s| s.session.client_id().to_string()),
            _ => None,
        }
        .unwrap_or_else(|| format!("<unknown> from {}", c.peer));
        crate::log_notice!("Client {name} disconnected due to protocol error: {err}.");
        self.disconnect_with(conn, err.reason_code());
        self.end_connection(conn, now, true);
        self.close_conn(conn);
    }
}
