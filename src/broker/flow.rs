//! Flow control: the one policy that decides when the broker stops reading a connection
//! (read gating, back-pressure) and when it cuts off a subscriber that does not keep up
//! (`slow_subscriber_timeout`). The runtime only asks [`super::Broker::wants_read`].
//!
//! Today's policy (ported unchanged from before the parts were split):
//! - A connected subscriber is *congested* while its output holds `max_queued_bytes`
//!   (default 4 MiB) or its session queue holds `max_queued_messages`.
//! - QoS 0 to a subscriber whose output is full is dropped and counted; when *every* QoS 0
//!   subscriber of a publisher's message was full, the publisher is paused on them
//!   ("never read only to drop"). A QoS 1/2 message that leaves a session backlogged
//!   pauses its local publisher on that session, or, for a message from another shard,
//!   marks the session *remote-congested*: the shard then stops draining its inboxes
//!   ([`FlowControl::accepts_remote`]) until the session drains, so the senders' rings
//!   fill and they stop reading their publishers.
//! - A paused connection is read again once none of the sessions it waits on is
//!   congested; the coordinator then yields it from `poll_transmit` once so the runtime
//!   re-asks `wants_read`.
//! - While this shard's mail to another shard overflows its ring (the runtime reports
//!   the backlog), connections that have published are not read; others are, so that
//!   acknowledgements keep flowing and two shards never wait on each other.
//! - A subscriber that stays congested without any byte of progress on its socket for
//!   `slow_subscriber_timeout` is cut off.
//!
//! It owns that state (who is paused on whom, the remote-congested sessions, the stall
//! marks) and nothing else: what it needs to know about sessions and outputs comes in as
//! arguments ([`Load`]), and what it decides goes out as return values that the
//! coordinator applies (connections to wake, timers to arm, connections to cut). It never
//! reads the clock, never touches a session, a connection table or a socket.

use std::time::{Duration, Instant};

use smallvec::SmallVec;

use crate::config::Config;

use super::ConnId;

/// Bytes of output queued for one connection above which QoS 0 messages to it are
/// dropped and its publishers paused (when `max_queued_bytes` is not set).
const DEFAULT_OUT_LIMIT: usize = 4 << 20;

/// What flow control needs to know about a connected subscriber.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    /// Bytes waiting in its connection's output.
    pub(super) queued_bytes: usize,
    /// Its session queue is at `max_queued_messages`.
    pub(super) backlogged: bool,
}

/// What to do when a subscriber's stall timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stall {
    /// Nothing: it drained, went away, or the timer is stale.
    Ignore,
    /// Still congested but it made progress: look again at this time.
    Rearm(Instant),
    /// Congested without progress for `slow_subscriber_timeout`: disconnect it.
    Cut,
}

/// Per-connection flow state (slot = [`ConnId`]).
#[derive(Debug, Default)]
struct ConnFlow {
    uid: u64,
    /// Sessions (slab key, uid) whose full queues pause reading this connection.
    blocked_on: SmallVec<[(usize, u64); 2]>,
    /// Has sent a PUBLISH (paused while a mailbox to another shard overflows).
    publisher: bool,
    /// Bytes written when the slow-subscriber timer was armed (None = not armed).
    stall_mark: Option<u64>,
}

/// Per-session flow state (slot = session slab key).
#[derive(Debug, Default)]
struct SessionFlow {
    uid: u64,
    /// Publishers (conn, conn uid) paused because this session's queue is full.
    paused: SmallVec<[(ConnId, u64); 2]>,
}

/// Read gating and cut-offs for one shard.
#[derive(Debug)]
pub(super) struct FlowControl {
    out_limit: usize,
    /// `slow_subscriber_timeout` (zero: never cut).
    stall_timeout: Duration,
    conns: Vec<ConnFlow>,
    sessions: Vec<SessionFlow>,
    /// Sessions (key, uid) fed by other shards that are over their queue limit.
    remote_congested: Vec<(usize, u64)>,
}

impl FlowControl {
    pub(super) fn new(config: &Config) -> Self {
        let out_limit = if config.max_queued_bytes == 0 {
            DEFAULT_OUT_LIMIT
        } else {
            usize::try_from(config.max_queued_bytes).unwrap_or(usize::MAX)
        };
        Self {
            out_limit,
            stall_timeout: config.slow_subscriber_timeout,
            conns: Vec::new(),
            sessions: Vec::new(),
            remote_congested: Vec::new(),
        }
    }

    // --- inputs: connection lifecycle -------------------------------------------------

    /// A new connection `uid` in slot `conn`.
    pub(super) fn on_accept(&mut self, conn: ConnId, uid: u64) {
        if self.conns.len() <= conn {
            self.conns.resize_with(conn + 1, ConnFlow::default);
        }
        self.conns[conn] = ConnFlow {
            uid,
            ..ConnFlow::default()
        };
    }

    /// The connection is closing or gone: it waits on nothing any more.
    pub(super) fn on_conn_closed(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(conn) {
            c.blocked_on.clear();
        }
    }

    /// The connection sent a PUBLISH.
    pub(super) fn on_publish(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(conn) {
            c.publisher = true;
        }
    }

    // --- the decisions ----------------------------------------------------------------

    /// Whether a subscriber with this load counts as congested (its publishers stay
    /// paused, its retained lookups wait).
    pub(super) fn is_congested(&self, load: Load) -> bool {
        load.queued_bytes >= self.out_limit || load.backlogged
    }

    /// Whether a QoS 0 message to a connection with `queued_bytes` of output is dropped.
    pub(super) fn output_full(&self, queued_bytes: usize) -> bool {
        queued_bytes >= self.out_limit
    }

    /// The read gate of a live, not closing connection. `outbox_backlog`: messages this
    /// shard could not yet hand to another shard's ring (the runtime's measure); `load`
    /// tells the load of a connected session (key, uid), `None` if it is gone or offline.
    pub(super) fn wants_read(
        &self,
        conn: ConnId,
        outbox_backlog: usize,
        load: impl Fn(usize, u64) -> Option<Load>,
    ) -> bool {
        let Some(c) = self.conns.get(conn) else {
            return true;
        };
        if outbox_backlog > 0 && c.publisher {
            return false;
        }
        !c.blocked_on
            .iter()
            .any(|&(key, uid)| load(key, uid).is_some_and(|l| self.is_congested(l)))
    }

    /// False while a connected session fed by other shards is over its queue limit: the
    /// runtime then stops draining its inboxes.
    pub(super) fn accepts_remote(&mut self, load: impl Fn(usize, u64) -> Option<Load>) -> bool {
        if self.remote_congested.is_empty() {
            return true;
        }
        let mut list = std::mem::take(&mut self.remote_congested);
        list.retain(|&(k, u)| load(k, u).is_some_and(|l| self.is_congested(l)));
        self.remote_congested = list;
        self.remote_congested.is_empty()
    }

    // --- inputs: what fan-out saw -----------------------------------------------------

    /// Pauses `publisher` until session `key` (uid `session_uid`) drains.
    pub(super) fn pause(&mut self, publisher: ConnId, key: usize, session_uid: u64) {
        let Some(c) = self.conns.get_mut(publisher) else {
            return;
        };
        if !c
            .blocked_on
            .iter()
            .any(|&(k, u)| k == key && u == session_uid)
        {
            c.blocked_on.push((key, session_uid));
        }
        let puid = c.uid;
        if self.sessions.len() <= key {
            self.sessions.resize_with(key + 1, SessionFlow::default);
        }
        let s = &mut self.sessions[key];
        if s.uid != session_uid {
            // A new session in a reused slot: nothing of the old one applies.
            *s = SessionFlow {
                uid: session_uid,
                paused: SmallVec::new(),
            };
        }
        if !s.paused.iter().any(|&(p, u)| p == publisher && u == puid) {
            s.paused.push((publisher, puid));
        }
    }

    /// A publisher's message found every QoS 0 subscriber full (`full`: their (key, uid)):
    /// never read only to drop, pause the publisher on them.
    pub(super) fn on_qos0_all_full(&mut self, publisher: ConnId, full: &[(usize, u64)]) {
        for &(key, uid) in full {
            self.pause(publisher, key, uid);
        }
    }

    /// A QoS 1/2 message left connected session `key` backlogged: pause its local
    /// `publisher`, or remember that the session is fed by other shards.
    pub(super) fn on_backlogged(&mut self, key: usize, uid: u64, publisher: Option<ConnId>) {
        if let Some(p) = publisher {
            self.pause(p, key, uid);
        } else if !self.remote_congested.contains(&(key, uid)) {
            self.remote_congested.push((key, uid));
        }
    }

    /// Whether publishers wait on session `key`.
    pub(super) fn has_paused(&self, key: usize) -> bool {
        self.sessions.get(key).is_some_and(|s| !s.paused.is_empty())
    }

    /// Session `key` drained, ended or moved away: its paused publishers stop waiting on
    /// it. Returns those (conn, uid) that now wait on nothing, for the coordinator to
    /// yield from `poll_transmit` so the runtime reads them again.
    pub(super) fn release(&mut self, key: usize) -> SmallVec<[(ConnId, u64); 2]> {
        let mut ready = SmallVec::new();
        let Some(s) = self.sessions.get_mut(key) else {
            return ready;
        };
        for (p, puid) in std::mem::take(&mut s.paused) {
            let Some(c) = self.conns.get_mut(p) else {
                continue;
            };
            if c.uid != puid {
                continue;
            }
            c.blocked_on.retain(|(k, _)| *k != key);
            if c.blocked_on.is_empty() {
                ready.push((p, puid));
            }
        }
        ready
    }

    // --- slow-subscriber cut-off ------------------------------------------------------

    /// A subscriber's output or queue is full: arms its stall timer once. `written`: the
    /// bytes its socket has taken so far. Returns when the timer should fire (`None`: off
    /// or armed already).
    pub(super) fn arm_stall(
        &mut self,
        conn: ConnId,
        written: u64,
        now: Instant,
    ) -> Option<Instant> {
        let c = self.conns.get_mut(conn)?;
        if self.stall_timeout.is_zero() || c.stall_mark.is_some() {
            return None;
        }
        c.stall_mark = Some(written);
        Some(now + self.stall_timeout)
    }

    /// The stall timer of connection `conn` (uid `uid`) fired. `state`: the bytes its
    /// socket has taken so far and its load, `None` if it is no longer an active session.
    pub(super) fn on_stall_timer(
        &mut self,
        conn: ConnId,
        uid: u64,
        state: Option<(u64, Load)>,
        now: Instant,
    ) -> Stall {
        let out_limit = self.out_limit;
        let Some(c) = self.conns.get_mut(conn) else {
            return Stall::Ignore;
        };
        if c.uid != uid {
            return Stall::Ignore;
        }
        let Some(mark) = c.stall_mark.take() else {
            return Stall::Ignore;
        };
        let Some((written, load)) = state else {
            return Stall::Ignore;
        };
        if load.queued_bytes < out_limit && !load.backlogged {
            return Stall::Ignore;
        }
        if written != mark {
            // Slow but reading: look again later.
            return match self.arm_stall(conn, written, now) {
                Some(at) => Stall::Rearm(at),
                None => Stall::Ignore,
            };
        }
        Stall::Cut
    }

    /// `slow_subscriber_timeout` in seconds, for the log line of a cut.
    pub(super) fn stall_timeout_secs(&self) -> u64 {
        self.stall_timeout.as_secs()
    }
}
