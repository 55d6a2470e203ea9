//! Flow control: the one policy that decides when the broker stops reading a connection
//! (read gating, back-pressure), when a publisher on another shard must stop or may go
//! on, how keep alive treats a connection the broker did not read, and when a client
//! that does not keep up is cut off (`slow_subscriber_timeout`). The runtime only asks
//! [`super::Broker::wants_read`]; the one thing it knows that the broker does not (which
//! peers' data rings are full) it reports through [`super::Broker::on_peer_backlog`].
//!
//! The rules:
//! 1. **Back-pressure per destination.** A connected subscriber is *congested* while
//!    its output holds `max_queued_bytes` (default 4 MiB) or its session queue holds
//!    `max_queued_messages`. A QoS 1/2 message that leaves a session congested (it is
//!    queued all the same: never dropped while connected) pauses the connection that
//!    published it, wherever that is: on this shard at once, on another one through
//!    `Control::Pause` (every message carries its publisher's connection).
//!    The session records whom it paused; when it drains below its limits, is cut,
//!    ends or moves away, those on this shard are read again and the others get
//!    `Control::Resume`. Nothing else waits: inboxes are always drained, so one stuck
//!    subscriber holds back exactly the publishers whose messages it must receive.
//! 2. **QoS 0, "never read only to drop".** QoS 0 to a full output is dropped and
//!    counted. When every QoS 0 subscriber of a local publisher's message was full
//!    *and* the message went to no other shard, the publisher is paused on them as in
//!    rule 1. Across shards this cannot be decided soundly (what the other shards'
//!    subscribers took is not known here, and a pause on a guess would hold back healthy
//!    subscribers there): a remote QoS 0 message to full outputs is dropped and counted,
//!    and a subscriber that stays full is cut by rule 6, which bounds the waste.
//! 3. **Peer backlog.** While the data ring to shard j is full, the connections that
//!    have published messages that went to j are not read; the others are (their
//!    acknowledgements and messages for other shards keep flowing).
//! 4. **Own output.** A connection whose unsent output holds `max_queued_bytes` (default
//!    4 MiB) or [`MAX_OUTPUT_CHUNKS`] chunks is not read: what it sends would only add to
//!    output it does not read (PUBACKs, PINGRESPs, SUBACKs). The chunk bound caps the
//!    memory of many tiny frames (an acknowledgement is a 4-byte chunk with a queue slot
//!    and an allocation of its own).
//! 5. **Keep alive.** A connection the broker did not read is never timed out for keep
//!    alive (the PINGREQs it sent may sit unread in its socket): its keep alive clock
//!    restarts when reading resumes, and a deadline that finds it still unread restarts
//!    it too.
//! 6. **Cut-off.** A connection *stuck* (its session backlogged, or its output over the
//!    bound of rule 4) without progress for `slow_subscriber_timeout` is disconnected.
//!    Progress is an acknowledgement while its session is backlogged (the PINGRESPs and
//!    other bytes it reads do not count) and bytes of its queued output read while its
//!    output is over the bound. The timer is armed when a message finds it stuck, when
//!    what it sent leaves its output over the bound, and when it is found unread because
//!    of its own output (by `wants_read` or a keep alive deadline), so a client rule 5
//!    spares is still cut if it stops reading. Its persistent session keeps its
//!    messages, and rule 1 lets its publishers go.
//! 7. **Ingest handlers.** A handler of the embedding API that answers "busy" to a
//!    message a connection published holds that connection: it is not read (nor timed
//!    out for keep alive, rule 5) until the handler accepts the message (`ingest.rs`).
//!
//! The overshoot of a pause is bounded. A local publisher is held before its next
//! read: the runtime asks `wants_read` again after each read call (at most
//! `READ_BUDGET`, 256 KiB, is read per call). A remote one is held once the
//! `Control::Pause` arrives: it leaves at the end of the iteration that queued the
//! message, on the control lane, which the publisher's shard drains at the top of its
//! next iteration before it reads any socket; after it is sent, that shard reads at
//! most the rest of its current iteration's worth of the publisher (two read calls,
//! 512 KiB). What it had sent before waits in the data ring between the two shards (at
//! most the ring's 16 Ki messages plus its overflow, which holds at most one
//! iteration's reads: rule 3 stops the publishers feeding a full ring) and is queued
//! too, never dropped. So over its limit a congested session takes at most what the
//! ring and overflow to it held, plus 512 KiB of input per remote paused publisher.
//!
//! This part owns its state (who is paused on whom, the remote holds, the peers each
//! publisher fed, the backlogged peers, the stall marks) and nothing else: what it needs
//! to know about sessions and outputs comes in as arguments ([`Load`], [`Output`],
//! [`StallState`]), and what it decides goes out as return values that the coordinator
//! applies (connections to wake, pauses and resumes to send, keep alive to restart,
//! timers to arm, connections to cut). It never reads the clock, never touches a
//! session, a connection table, a mailbox or a socket.

use std::collections::HashMap;

use crate::hash::FxHashMap;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use crate::config::Config;
use crate::mailbox::ShardId;
use crate::session::PublishedBy;

use super::ConnId;

/// Bytes of output queued for one connection above which QoS 0 messages to it are
/// dropped, its publishers paused and reading it stops (when `max_queued_bytes` is not
/// set).
const DEFAULT_OUT_LIMIT: usize = 4 << 20;

/// Chunks of output queued for one connection above which it is not read (rule 4).
pub(super) const MAX_OUTPUT_CHUNKS: usize = 16 * 1024;

/// What flow control needs to know about a connected subscriber.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    /// Bytes waiting in its connection's output.
    pub(super) queued_bytes: usize,
    /// Its session queue is at `max_queued_messages`.
    pub(super) backlogged: bool,
}

/// A connection's unsent output.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Output {
    pub(super) bytes: usize,
    pub(super) chunks: usize,
}

/// A publishing connection anywhere in the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Publisher {
    pub(super) shard: ShardId,
    pub(super) conn: ConnId,
    pub(super) uid: u64,
}

impl From<PublishedBy> for Publisher {
    fn from(p: PublishedBy) -> Self {
        Self {
            shard: usize::from(p.shard),
            conn: p.conn as ConnId,
            uid: p.conn_uid.get(),
        }
    }
}

/// The read gate of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    Open,
    /// Open again after the broker last declined to read it: restart its keep alive.
    Reopened,
    Closed,
}

/// What a passed keep alive deadline means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeepAlive {
    /// The client was read and sent nothing in time: disconnect it.
    Expired,
    /// The broker did not read it (or only just resumed): restart its clock.
    Restart,
}

/// Why a connection is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stuck {
    /// Its session stayed backlogged without an acknowledgement.
    Unacknowledged,
    /// Its output stayed over the bound without being read.
    Unread,
}

/// What to do when a stall timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stall {
    /// Nothing: it recovered, went away, or the timer is stale.
    Ignore,
    /// Still stuck but it made progress: look again at this time.
    Rearm(Instant),
    /// Stuck without progress for `slow_subscriber_timeout`: disconnect it.
    Cut(Stuck),
}

/// A connection's state when its stall timer fires.
#[derive(Debug, Clone, Copy)]
pub(super) struct StallState {
    /// Its session is connected and backlogged.
    pub(super) backlogged: bool,
    pub(super) output: Output,
    /// Bytes its socket has taken so far.
    pub(super) written: u64,
    /// When its session last had an acknowledgement (or connected).
    pub(super) last_ack: Option<Instant>,
}

/// The publishers a session let go: local ones to read again, remote ones to resume.
#[derive(Debug, Default)]
pub(super) struct Released {
    /// The session's uid (names it in `Control::Resume`).
    pub(super) session_uid: u64,
    /// (conn, uid) on this shard that now wait on nothing.
    pub(super) wake: SmallVec<[(ConnId, u64); 4]>,
    /// Publishers on other shards to send `Control::Resume`.
    pub(super) resume: SmallVec<[Publisher; 2]>,
}

/// Something that holds a connection back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// A session of this shard (key, uid), while it is congested.
    Session(usize, u64),
    /// A session (uid) of another shard, until it sends `Control::Resume`.
    Remote(ShardId, u64),
    /// An ingest handler said "busy" to one of its messages (`ingest.rs`), until it
    /// accepts it.
    Ingest,
}

/// The progress mark of an armed stall timer.
#[derive(Debug, Clone, Copy)]
struct StallMark {
    /// Stuck since (or since its last progress).
    since: Instant,
    /// Bytes its socket had taken then.
    written: u64,
}

/// Per-connection flow state (slot = [`ConnId`]): 24 bytes, every connection has one
/// (issue 14); what holds it back is kept apart, for the few that are held.
#[derive(Debug, Default)]
struct ConnFlow {
    uid: u64,
    /// Shards its messages went to (bit j = shard j): it is not read while one of their
    /// rings is full.
    peers: u64,
    /// The broker declined to read it since it was last read.
    gated: bool,
    /// Something holds it back: it has an entry in [`FlowControl::holds`].
    held: bool,
}

/// What holds one connection back (most hold one thing).
type Holds = SmallVec<[Hold; 1]>;

/// Per-session flow state (slot = session slab key).
#[derive(Debug, Default)]
struct SessionFlow {
    uid: u64,
    /// Publishers paused because this session is congested.
    paused: SmallVec<[Publisher; 2]>,
}

/// Read gating, back-pressure and cut-offs for one shard.
#[derive(Debug)]
pub(super) struct FlowControl {
    me: ShardId,
    out_limit: usize,
    /// `slow_subscriber_timeout` (zero: never cut).
    stall_timeout: Duration,
    /// Peers whose data ring is full (bit j = shard j), as the runtime last reported.
    peer_backlog: u64,
    conns: Vec<ConnFlow>,
    /// What holds each held connection back (only those: [`ConnFlow::held`]).
    holds: FxHashMap<ConnId, Holds>,
    sessions: Vec<SessionFlow>,
    /// Armed stall timers by connection: only stuck connections have one, so an idle
    /// connection pays nothing for them.
    stalls: HashMap<ConnId, StallMark>,
}

impl FlowControl {
    pub(super) fn new(config: &Config, me: ShardId) -> Self {
        let out_limit = if config.max_queued_bytes == 0 {
            DEFAULT_OUT_LIMIT
        } else {
            usize::try_from(config.max_queued_bytes).unwrap_or(usize::MAX)
        };
        Self {
            me,
            out_limit,
            stall_timeout: config.slow_subscriber_timeout,
            peer_backlog: 0,
            conns: Vec::new(),
            holds: FxHashMap::default(),
            sessions: Vec::new(),
            stalls: HashMap::new(),
        }
    }

    fn conn_mut(&mut self, conn: ConnId, uid: u64) -> Option<&mut ConnFlow> {
        self.conns.get_mut(conn).filter(|c| c.uid == uid)
    }

    /// Adds `hold` to connection `conn` (uid `uid`) unless it has it.
    fn add_hold(&mut self, conn: ConnId, uid: u64, hold: Hold) {
        let Some(c) = self.conns.get_mut(conn).filter(|c| c.uid == uid) else {
            return;
        };
        c.held = true;
        let holds = self.holds.entry(conn).or_default();
        if !holds.contains(&hold) {
            holds.push(hold);
        }
    }

    /// Drops the holds of connection `conn` (uid `uid`) that `drop` selects. Returns
    /// (whether one was dropped, whether nothing holds it any more).
    fn drop_holds(&mut self, conn: ConnId, uid: u64, drop: impl Fn(&Hold) -> bool) -> (bool, bool) {
        let Some(c) = self.conns.get_mut(conn).filter(|c| c.uid == uid) else {
            return (false, false);
        };
        let Some(holds) = self.holds.get_mut(&conn).filter(|_| c.held) else {
            return (false, true);
        };
        let before = holds.len();
        holds.retain(|h| !drop(h));
        let dropped = holds.len() < before;
        if holds.is_empty() {
            self.holds.remove(&conn);
            c.held = false;
        }
        (dropped, !c.held)
    }

    /// Forgets every hold of connection slot `conn`.
    fn clear_holds(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(conn) {
            if std::mem::take(&mut c.held) {
                self.holds.remove(&conn);
            }
        }
    }

    // --- inputs: connections and the runtime ------------------------------------------

    /// A new connection `uid` in slot `conn`.
    pub(super) fn on_accept(&mut self, conn: ConnId, uid: u64) {
        if self.conns.len() <= conn {
            self.conns.resize_with(conn + 1, ConnFlow::default);
        }
        self.clear_holds(conn);
        self.conns[conn] = ConnFlow {
            uid,
            ..ConnFlow::default()
        };
        self.stalls.remove(&conn);
    }

    /// The connection is closing or gone: nothing holds it back any more.
    pub(super) fn on_conn_closed(&mut self, conn: ConnId) {
        self.clear_holds(conn);
        if let Some(c) = self.conns.get_mut(conn) {
            c.gated = false;
        }
        self.stalls.remove(&conn);
    }

    /// The connection published a message that went to the shards in `dests`.
    pub(super) fn on_publish(&mut self, conn: ConnId, dests: u64) {
        if let Some(c) = self.conns.get_mut(conn) {
            c.peers |= dests;
        }
    }

    /// The runtime's report: the peers whose data ring is full (bit j = shard j).
    pub(super) fn on_peer_backlog(&mut self, peers: u64) {
        self.peer_backlog = peers;
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

    /// Whether a connection with this output is not read (rule 4).
    pub(super) fn output_over(&self, output: Output) -> bool {
        output.bytes >= self.out_limit || output.chunks >= MAX_OUTPUT_CHUNKS
    }

    /// Whether the gate of `conn` is closed now, with its state (`None`: unknown).
    fn gate_of(
        &mut self,
        conn: ConnId,
        output: Output,
        load: impl Fn(usize, u64) -> Option<Load>,
    ) -> Option<(bool, &mut ConnFlow)> {
        let closed = self.gate_closed(conn, self.conns.get(conn)?, output, &load);
        Some((closed, &mut self.conns[conn]))
    }

    fn gate_closed(
        &self,
        conn: ConnId,
        c: &ConnFlow,
        output: Output,
        load: &impl Fn(usize, u64) -> Option<Load>,
    ) -> bool {
        let holds = match c.held {
            true => self.holds.get(&conn).map_or(&[][..], |h| &h[..]),
            false => &[],
        };
        self.output_over(output)
            || c.peers & self.peer_backlog != 0
            || holds.iter().any(|h| match *h {
                Hold::Remote(..) | Hold::Ingest => true,
                Hold::Session(key, uid) => load(key, uid).is_some_and(|l| self.is_congested(l)),
            })
    }

    /// The read gate of a live, not closing connection with this `output`; `load` tells
    /// the load of a connected session (key, uid), `None` if it is gone or offline.
    pub(super) fn wants_read(
        &mut self,
        conn: ConnId,
        output: Output,
        load: impl Fn(usize, u64) -> Option<Load>,
    ) -> Gate {
        let Some((closed, c)) = self.gate_of(conn, output, load) else {
            return Gate::Open;
        };
        match (closed, c.gated) {
            (true, _) => {
                c.gated = true;
                Gate::Closed
            }
            (false, true) => {
                c.gated = false;
                Gate::Reopened
            }
            (false, false) => Gate::Open,
        }
    }

    /// The keep alive deadline of connection `conn` passed (rule 5).
    pub(super) fn keep_alive_due(
        &mut self,
        conn: ConnId,
        output: Output,
        load: impl Fn(usize, u64) -> Option<Load>,
    ) -> KeepAlive {
        let Some((closed, c)) = self.gate_of(conn, output, load) else {
            return KeepAlive::Expired;
        };
        if closed || c.gated {
            // Still unread, or reopened and not asked about since (so not read yet).
            c.gated = closed;
            KeepAlive::Restart
        } else {
            KeepAlive::Expired
        }
    }

    // --- inputs: what fan-out saw -----------------------------------------------------

    /// Records that `publisher` waits on session `key` (uid `session_uid`); true if it
    /// did not already.
    fn add_paused(&mut self, key: usize, session_uid: u64, publisher: Publisher) -> bool {
        if self.sessions.len() <= key {
            self.sessions.resize_with(key + 1, SessionFlow::default);
        }
        let s = &mut self.sessions[key];
        if s.uid != session_uid {
            // A new session in a reused slot (the old one released its publishers when
            // it ended).
            *s = SessionFlow {
                uid: session_uid,
                paused: SmallVec::new(),
            };
        }
        if s.paused.contains(&publisher) {
            return false;
        }
        s.paused.push(publisher);
        true
    }

    /// Pauses local `publisher` (conn, uid) while session `key` is congested.
    fn pause_local(&mut self, conn: ConnId, uid: u64, key: usize, session_uid: u64) {
        if self.conn_mut(conn, uid).is_none() {
            return;
        }
        self.add_hold(conn, uid, Hold::Session(key, session_uid));
        let publisher = Publisher {
            shard: self.me,
            conn,
            uid,
        };
        self.add_paused(key, session_uid, publisher);
    }

    /// A local publisher's message found every QoS 0 subscriber full (`full`: their
    /// (key, uid)) and went to no other shard: never read only to drop (rule 2).
    pub(super) fn on_qos0_all_full(&mut self, conn: ConnId, uid: u64, full: &[(usize, u64)]) {
        for &(key, session_uid) in full {
            self.pause_local(conn, uid, key, session_uid);
        }
    }

    /// A QoS 1/2 message from `publisher` left connected session `key` (uid `uid`)
    /// backlogged (rule 1). Returns the publisher of another shard to send
    /// `Control::Pause` to, the first time it waits on this session.
    pub(super) fn on_backlogged(
        &mut self,
        key: usize,
        uid: u64,
        publisher: Publisher,
    ) -> Option<Publisher> {
        if publisher.shard == self.me {
            self.pause_local(publisher.conn, publisher.uid, key, uid);
            return None;
        }
        self.add_paused(key, uid, publisher).then_some(publisher)
    }

    /// Whether publishers wait on session `key`.
    pub(super) fn has_paused(&self, key: usize) -> bool {
        self.sessions.get(key).is_some_and(|s| !s.paused.is_empty())
    }

    /// Session `key` drained, was cut, ended or moved away: its paused publishers stop
    /// waiting on it.
    pub(super) fn release(&mut self, key: usize) -> Released {
        let Some(s) = self.sessions.get_mut(key) else {
            return Released::default();
        };
        let mut released = Released {
            session_uid: s.uid,
            ..Released::default()
        };
        for p in std::mem::take(&mut s.paused) {
            if p.shard != self.me {
                released.resume.push(p);
                continue;
            }
            if self.conn_mut(p.conn, p.uid).is_none() {
                continue;
            }
            let (_, free) = self.drop_holds(
                p.conn,
                p.uid,
                |h| matches!(*h, Hold::Session(k, _) if k == key),
            );
            if free {
                released.wake.push((p.conn, p.uid));
            }
        }
        released
    }

    /// Shard `from` says its session `session` (uid) holds connection `conn` (uid
    /// `conn_uid`) back.
    pub(super) fn on_remote_pause(
        &mut self,
        from: ShardId,
        conn: ConnId,
        conn_uid: u64,
        session: u64,
    ) {
        self.add_hold(conn, conn_uid, Hold::Remote(from, session));
    }

    /// Shard `from` says its session `session` lets connection `conn` go. Returns true
    /// when nothing holds it back any more (wake it).
    pub(super) fn on_remote_resume(
        &mut self,
        from: ShardId,
        conn: ConnId,
        conn_uid: u64,
        session: u64,
    ) -> bool {
        let (dropped, free) =
            self.drop_holds(conn, conn_uid, |h| *h == Hold::Remote(from, session));
        dropped && free
    }

    /// An ingest handler is busy with a message of connection `conn` (uid): it is not
    /// read until the handler accepts it (rule 7).
    pub(super) fn pause_ingest(&mut self, conn: ConnId, uid: u64) {
        self.add_hold(conn, uid, Hold::Ingest);
    }

    /// The ingest handlers took every message held for `conn`. Returns true when
    /// nothing holds it back any more (wake it).
    pub(super) fn release_ingest(&mut self, conn: ConnId, uid: u64) -> bool {
        let (dropped, free) = self.drop_holds(conn, uid, |h| *h == Hold::Ingest);
        dropped && free
    }

    // --- slow-subscriber cut-off (rule 6) ---------------------------------------------

    /// Connection `conn` got stuck (backlogged, or output over the bound): arms its stall
    /// timer once. `written`: the bytes its socket has taken so far. Returns when the
    /// timer should fire (`None`: off or armed already).
    pub(super) fn arm_stall(
        &mut self,
        conn: ConnId,
        written: u64,
        now: Instant,
    ) -> Option<Instant> {
        if self.stall_timeout.is_zero() || conn >= self.conns.len() {
            return None;
        }
        if self.stalls.contains_key(&conn) {
            return None;
        }
        let mark = StallMark {
            since: now,
            written,
        };
        self.stalls.insert(conn, mark);
        Some(now + self.stall_timeout)
    }

    /// The stall timer of connection `conn` (uid `uid`) fired; `state` is `None` if it
    /// is gone or closing.
    pub(super) fn on_stall_timer(
        &mut self,
        conn: ConnId,
        uid: u64,
        state: Option<StallState>,
        now: Instant,
    ) -> Stall {
        let output_over = state.is_some_and(|s| self.output_over(s.output));
        if self.conn_mut(conn, uid).is_none() {
            return Stall::Ignore;
        }
        let (Some(mark), Some(state)) = (self.stalls.remove(&conn), state) else {
            return Stall::Ignore;
        };
        if !state.backlogged && !output_over {
            return Stall::Ignore;
        }
        let mut since = mark.since;
        if output_over && state.written != mark.written {
            since = now; // it read some of its queued output
        }
        if state.backlogged {
            since = since.max(state.last_ack.unwrap_or(since));
        }
        if now >= since + self.stall_timeout {
            return Stall::Cut(if output_over {
                Stuck::Unread
            } else {
                Stuck::Unacknowledged
            });
        }
        let mark = StallMark {
            since,
            written: state.written,
        };
        self.stalls.insert(conn, mark);
        Stall::Rearm(since + self.stall_timeout)
    }

    /// The shard could not make progress for anyone (persistence holds its output and
    /// reads): not the connection's fault, so its stall clock restarts at `now` and the
    /// timer re-arms for a full `slow_subscriber_timeout` from there.
    pub(super) fn excuse_stall(&mut self, conn: ConnId, uid: u64, now: Instant) -> Stall {
        if self.conn_mut(conn, uid).is_none() {
            return Stall::Ignore;
        }
        let Some(mark) = self.stalls.get_mut(&conn) else {
            return Stall::Ignore;
        };
        mark.since = now;
        Stall::Rearm(now + self.stall_timeout)
    }

    /// Persistence stopped holding the shard at `now`: every stall clock restarts there.
    pub(super) fn restart_stalls(&mut self, now: Instant) {
        for mark in self.stalls.values_mut() {
            mark.since = mark.since.max(now);
        }
    }

    /// `slow_subscriber_timeout` in seconds, for the log line of a cut.
    pub(super) fn stall_timeout_secs(&self) -> u64 {
        self.stall_timeout.as_secs()
    }
}

#[cfg(test)]
mod sizes {
    /// Every connection has a `ConnFlow` (issue 14): what holds a connection back lives
    /// in a map of the few that are held, not in 32 inline bytes of each.
    #[test]
    fn a_connection_flow_entry_is_24_bytes() {
        assert_eq!(std::mem::size_of::<super::ConnFlow>(), 24);
    }
}
