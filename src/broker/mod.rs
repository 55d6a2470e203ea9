//! Sans-IO per-shard broker: owns the sessions of one shard (a slab keyed by [`ConnId`],
//! which is also the runtime's mio Token), the subscription index, the retained store,
//! the client-id map and takeover, fan-out planning and $SYS statistics.
//!
//! It never touches sockets, threads or the clock: the runtime feeds it bytes and `now`,
//! and drains what it wants written and closed. Driver contract, in order, once per event
//! loop iteration:
//!
//! 1. `on_accept` / `on_read` / `on_writable` / `on_closed` for each readiness event,
//!    `on_timeout(now)` when `poll_timeout()` has passed;
//! 2. `while let Some(conn) = poll_transmit()` -> write `output(conn)` with writev until
//!    empty or WouldBlock (keep WRITABLE interest while non-empty);
//! 3. `while let Some(conn) = poll_close()` -> flush what can be flushed, then close the
//!    socket (do NOT call `on_closed` for it afterwards);
//! 4. `run_deferred(now)` while `has_deferred_work()` (budgeted retained lookups), and
//!    move `poll_shard_message()` output into the mailboxes (N > 1);
//! 5. sleep until readiness, mail or `poll_timeout()` (not at all while deferred work
//!    remains).
//!
//! With persistence (`enable_persistence`), before writing any output in 2 and 3 (and
//! before a write on a WRITABLE event): if `has_persist_events()`, `drain_persist` and
//! append the records (with `persistence_fsync always`, fsync them): acknowledgements
//! queued this iteration then reach the publisher only after what they acknowledge is
//! durable.
//!
//! Back-pressure: `wants_read(conn)` turns false while a connection's messages feed a
//! subscriber whose queue is full. When it may turn true again, `poll_transmit` yields that
//! connection once (its output may be empty): the runtime re-checks `wants_read` for every
//! connection `poll_transmit` yields and resumes reading a paused one.

mod connect;
pub mod embed; // in-process subscriptions of the embedding API
mod interest;
mod out_queue;
mod persist_hook; // persistence (src/persist): event hook + restore
mod route;
mod shards;
mod subscribe;
mod timers;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod tests_connect;
#[cfg(test)]
mod tests_persist;
#[cfg(test)]
mod tests_qos;
#[cfg(test)]
mod tests_session;
#[cfg(test)]
mod tests_shards;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use slab::Slab;
use smallvec::SmallVec;

use crate::codec::{self, ByteStr, Packet, ProtocolVersion, Publish};
use crate::config::Config;
use crate::metrics::Stats;
use crate::session::{Limits, Session, Subscription};

use crate::auth::{ClientSecurity, Security};
use crate::retained::RetainedStore;
use crate::topic::TopicIndex;
pub use out_queue::OutQueue;
pub use shards::{home_shard, Control, ShardId, ShardMsg, ShardReport};
use timers::{Timer, Timers};

/// Identifies a connection within a shard: the slab key and the mio Token.
pub type ConnId = usize;

/// Largest packet MQTT can encode (remaining length 268435455 + 5 header bytes).
const MQTT_MAX_PACKET: u32 = 268_435_460;

/// Bytes of output queued for one connection above which QoS 0 messages to it are
/// dropped and its publishers paused (when `max_queued_bytes` is not set).
const DEFAULT_OUT_LIMIT: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Accepted, waiting for CONNECT.
    AwaitConnect,
    /// CONNECT accepted, waiting for the client id's home shard (N > 1).
    AwaitHome,
    /// CONNECT accepted; the session's slab key.
    Active(usize),
    /// The broker decided to close; waiting for `poll_close`.
    Closing,
}

#[derive(Debug)]
struct Conn {
    uid: u64,
    peer: SocketAddr,
    listener: usize,
    state: ConnState,
    version: ProtocolVersion,
    out: OutQueue,
    /// In `transmit_ready` already.
    transmit_flag: bool,
    /// Sessions (slab key, uid) whose full queues pause reading this connection.
    blocked_on: SmallVec<[(usize, u64); 2]>,
    /// Has sent a PUBLISH (the runtime pauses only publishers while a mailbox to
    /// another shard is full, so subscribers' acknowledgements keep flowing).
    publisher: bool,
    /// Verified TLS client-certificate identity (for `use_identity_as_username`).
    identity: Option<String>,
    /// `OutQueue::written` when the slow-subscriber timer was armed (None = not armed).
    stall_mark: Option<u64>,
}

/// A session plus the broker's bookkeeping about it.
#[derive(Debug)]
struct Slot {
    session: Session,
    conn: Option<ConnId>,
    /// Publishers (conn, conn uid) paused because this session's queue is full.
    paused: SmallVec<[(ConnId, u64); 2]>,
    /// Set while a session moves between shards: on the old shard the slot is a stub
    /// that forwards to the new one; on the new shard it filters duplicates. See
    /// [`shards::Handoff`].
    forward: Option<Box<shards::Handoff>>,
    /// Its ACL (set on every CONNECT); `None` while no ACL is configured, which allows
    /// everything and costs an idle connection no allocation.
    security: Option<Box<ClientSecurity>>,
    /// The user name it connected with, to derive an ACL when a reload adds one.
    username: Option<ByteStr>,
}

impl Slot {
    /// The shard this stub forwards to (`None`: a real session).
    fn stub_to(&self) -> Option<ShardId> {
        match self.forward.as_deref() {
            Some(shards::Handoff::Stub { to, .. }) => Some(*to),
            _ => None,
        }
    }

    fn is_stub(&self) -> bool {
        self.stub_to().is_some()
    }
}

/// The per-shard broker. See the module documentation for the driver contract.
#[derive(Debug)]
pub struct Broker {
    config: Arc<Config>,
    limits: Limits,
    conns: Vec<Option<Conn>>,
    sessions: Slab<Slot>,
    client_ids: HashMap<ByteStr, usize>,
    /// Local subscriptions (key = session slab key) and, replicated from the other shards,
    /// their interest (key = [`shards::remote_key`]): one trie walk per publish finds both.
    index: TopicIndex<usize, Subscription>,
    retained: RetainedStore,
    timers: Timers,
    transmit_ready: VecDeque<ConnId>,
    close_ready: VecDeque<ConnId>,
    /// Returned by the last `poll_close`; freed on the next call.
    last_closed: Option<(ConnId, u64)>,
    stats: Stats,
    next_uid: u64,
    max_packet_in: u32,
    out_limit: usize,
    /// Reused encode buffer.
    scratch: BytesMut,
    /// Reused fan-out target list.
    targets: Vec<(usize, Subscription)>,
    /// Password and ACL rules (replaced whole on reload).
    security: Arc<Security>,
    /// Persistence events for the runtime (empty and unused when persistence is off).
    persist: persist_hook::PersistHook,
    /// This shard and the shard count.
    shard: ShardId,
    shards: usize,
    /// Messages for other shards, in order.
    outbox: VecDeque<(ShardId, ShardMsg)>,
    /// Entries of `index` that stand for other shards' interest (not local subscriptions).
    remote_entries: usize,
    /// Local subscriptions per filter (the interest this shard advertises).
    filter_counts: HashMap<ByteStr, interest::FilterInterest>,
    /// Sequence number of the last Interest addition this shard broadcast, and the
    /// highest each shard acknowledged (see `interest.rs`).
    interest_seq: u64,
    interest_acked: Vec<u64>,
    /// SUBACKs waiting for Interest acknowledgements, in arrival order.
    held_subacks: VecDeque<interest::HeldSubAck>,
    /// Home-shard directory: client id -> shard holding its session.
    directory: HashMap<ByteStr, ShardId>,
    /// CONNECTs waiting for their home shard, by connection.
    pending: HashMap<ConnId, Box<shards::PendingConnect>>,
    /// Takeovers postponed until a pending CONNECT of the same client completes.
    deferred: Vec<Control>,
    /// Sessions fed by other shards that are over their queue limit.
    remote_congested: Vec<(usize, u64)>,
    /// Shard 0: the last report of every shard.
    reports: Vec<Option<ShardReport>>,
    loop_lag_us: u64,
    /// Messages from each shard to hand back for freeing (see `Control::Release`).
    releases: Vec<Vec<Arc<crate::session::Message>>>,
    releases_pending: bool,
    /// Lamport clock and per-topic version of retained sets (N > 1; see `Control::Retain`).
    retain_clock: u64,
    /// Sequence number of the last message this shard sent to other shards, and of the
    /// last one received from each shard (handoff watermarks).
    send_seq: u64,
    seen_seq: Vec<u64>,
    retain_versions: HashMap<ByteStr, (u64, ShardId)>,
    /// Retained lookups continued by `run_deferred`.
    retained_jobs: VecDeque<subscribe::RetainedJob>,
    /// In-process subscriptions of the embedding API (empty unless a host subscribes).
    internal: embed::InternalSubs,
}

impl Broker {
    /// A single-shard broker (what the sans-IO tests drive).
    pub fn new(config: Arc<Config>, now: Instant) -> Self {
        Self::new_shard(config, 0, 1, now)
    }

    /// Shard `shard` of `shards` (session uids are strided by the shard count so they
    /// stay unique across shards).
    pub fn new_shard(config: Arc<Config>, shard: ShardId, shards: usize, now: Instant) -> Self {
        let shards = shards.clamp(1, 64);
        let mut timers = Timers::default();
        if !config.sys_interval.is_zero() {
            timers.push(now, Timer::Sys);
        }
        let max_packet_in = if config.max_packet_size == 0 {
            MQTT_MAX_PACKET
        } else {
            config.max_packet_size
        };
        let out_limit = if config.max_queued_bytes == 0 {
            DEFAULT_OUT_LIMIT
        } else {
            usize::try_from(config.max_queued_bytes).unwrap_or(usize::MAX)
        };
        let mut stats = Stats::new(now);
        stats.update_load(now);
        let config_for_security = Arc::clone(&config);
        Self {
            limits: Limits::from_config(&config),
            config,
            conns: Vec::new(),
            sessions: Slab::new(),
            client_ids: HashMap::new(),
            index: TopicIndex::new(),
            retained: RetainedStore::new(),
            timers,
            transmit_ready: VecDeque::new(),
            close_ready: VecDeque::new(),
            last_closed: None,
            stats,
            max_packet_in,
            out_limit,
            scratch: BytesMut::with_capacity(64 * 1024),
            targets: Vec::new(),
            persist: persist_hook::PersistHook::default(),
            next_uid: shard as u64 + 1,
            shard,
            shards,
            outbox: VecDeque::new(),
            remote_entries: 0,
            filter_counts: HashMap::new(),
            interest_seq: 0,
            interest_acked: vec![0; shards],
            held_subacks: VecDeque::new(),
            directory: HashMap::new(),
            pending: HashMap::new(),
            deferred: Vec::new(),
            remote_congested: Vec::new(),
            reports: (0..shards).map(|_| None).collect(),
            loop_lag_us: 0,
            retained_jobs: VecDeque::new(),
            internal: embed::InternalSubs::default(),
            releases: (0..shards).map(|_| Vec::new()).collect(),
            releases_pending: false,
            retain_clock: 0,
            send_seq: 0,
            seen_seq: vec![0; shards],
            retain_versions: HashMap::new(),
            security: Arc::new(Security::open(&config_for_security)),
        }
    }

    /// Installs loaded password / ACL rules (at start and on SIGHUP); every session's ACL
    /// is re-derived and its decision cache dropped. Connections stay up.
    pub fn set_security(&mut self, security: Arc<Security>) {
        let has_acl = security.has_acl();
        for (_, slot) in &mut self.sessions {
            if !has_acl {
                slot.security = None;
            } else if let Some(s) = slot.security.as_mut() {
                s.reload(&security);
            } else if let Some(c) = slot
                .conn
                .and_then(|c| self.conns.get(c))
                .and_then(Option::as_ref)
            {
                slot.security = Some(Box::new(ClientSecurity::new(
                    &security,
                    c.listener,
                    slot.username.as_ref().map(ByteStr::as_str),
                    slot.session.client_id().as_str(),
                )));
            }
        }
        self.security = security;
    }

    /// The runtime reports a TLS connection's verified client-certificate identity
    /// (before any MQTT bytes of that connection are fed in).
    pub fn set_identity(&mut self, conn: ConnId, identity: Option<String>) {
        if let Some(c) = self.conn_mut(conn) {
            c.identity = identity;
        }
    }

    fn uid(&mut self) -> u64 {
        self.next_uid += self.shards as u64;
        self.next_uid
    }

    fn conn(&self, conn: ConnId) -> Option<&Conn> {
        self.conns.get(conn).and_then(Option::as_ref)
    }

    fn conn_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(conn).and_then(Option::as_mut)
    }

    pub fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, listener: usize, now: Instant) {
        if self.conns.len() <= conn {
            self.conns.resize_with(conn + 1, || None);
        }
        let uid = self.uid();
        if self.last_closed.is_some_and(|(c, _)| c == conn) {
            self.last_closed = None;
        }
        self.conns[conn] = Some(Conn {
            uid,
            peer,
            listener,
            state: ConnState::AwaitConnect,
            version: ProtocolVersion::V311,
            out: OutQueue::default(),
            transmit_flag: false,
            blocked_on: SmallVec::new(),
            publisher: false,
            identity: None,
            stall_mark: None,
        });
        self.stats.connections_accepted += 1;
        // From accept, not from the last byte: a client trickling a CONNECT is cut too.
        self.timers.push(
            now + self.config.connect_timeout,
            Timer::Connect { conn, uid },
        );
    }

    /// Consumes every complete frame in `buf`, leaves a partial one.
    pub fn on_read(&mut self, conn: ConnId, buf: &mut BytesMut, now: Instant) {
        loop {
            let Some(c) = self.conn(conn) else {
                buf.clear();
                return;
            };
            if c.state == ConnState::Closing {
                buf.clear();
                return;
            }
            let version = c.version;
            let awaiting_connect = c.state == ConnState::AwaitConnect;
            let before = buf.len();
            // Before CONNECT only a small CONNECT is buffered (refused from its header).
            let max = if awaiting_connect {
                self.max_packet_in.min(self.config.max_connect_packet_size)
            } else {
                self.max_packet_in
            };
            match codec::decode(buf, version, max) {
                Ok(None) => return,
                Ok(Some(packet)) => {
                    self.stats.messages_received += 1;
                    self.stats.bytes_received += (before - buf.len()) as u64;
                    self.handle_packet(conn, packet, now);
                }
                Err(err) => {
                    self.stats.bytes_received += before as u64;
                    if awaiting_connect {
                        self.refuse_undecodable_connect(conn, &err);
                    } else {
                        self.protocol_error(conn, &crate::session::ProtocolError::Decode(err), now);
                    }
                    buf.clear();
                    return;
                }
            }
        }
    }

    /// The connection's output queue drained; lets back-pressure release.
    pub fn on_writable(&mut self, conn: ConnId, now: Instant) {
        let _ = now;
        if let Some(Conn {
            state: ConnState::Active(key),
            ..
        }) = self.conn(conn)
        {
            let key = *key;
            self.maybe_release(key);
        }
    }

    /// Socket EOF/error: an abnormal disconnect unless DISCONNECT was received.
    pub fn on_closed(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conn(conn) else { return };
        if let ConnState::Active(key) = c.state {
            let id = self
                .sessions
                .get(key)
                .map(|s| s.session.client_id().clone())
                .unwrap_or_default();
            if crate::log::connection_messages() {
                crate::log_info!("Client {id} closed its connection.");
            }
            self.end_connection(conn, now, true);
        }
        self.release_publisher(conn);
        if let Some(slot) = self.conns.get_mut(conn) {
            *slot = None;
        }
    }

    pub fn on_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            self.fire(timer, now);
        }
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Each connection with new output (or whose reads may resume), once.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<ConnId> {
        while let Some(conn) = self.transmit_ready.pop_front() {
            if let Some(c) = self.conn_mut(conn) {
                if c.transmit_flag {
                    c.transmit_flag = false;
                    return Some(conn);
                }
            }
        }
        None
    }

    pub fn output(&mut self, conn: ConnId) -> Option<&mut OutQueue> {
        self.conn_mut(conn).map(|c| &mut c.out)
    }

    /// The runtime flushes, then closes; no `on_closed` after.
    #[must_use]
    pub fn poll_close(&mut self) -> Option<ConnId> {
        if let Some((conn, uid)) = self.last_closed.take() {
            if let Some(slot) = self.conns.get_mut(conn) {
                if slot.as_ref().is_some_and(|c| c.uid == uid) {
                    *slot = None;
                }
            }
        }
        while let Some(conn) = self.close_ready.pop_front() {
            if let Some(c) = self.conn(conn) {
                if c.state == ConnState::Closing {
                    self.last_closed = Some((conn, c.uid));
                    return Some(conn);
                }
            }
        }
        None
    }

    /// False while this connection must not be read: it feeds a subscriber whose queue is
    /// full (back-pressure), or it is closing.
    pub fn wants_read(&self, conn: ConnId) -> bool {
        let Some(c) = self.conn(conn) else {
            return false;
        };
        if c.state == ConnState::Closing {
            return false;
        }
        !c.blocked_on
            .iter()
            .any(|&(key, uid)| self.is_congested(key, uid))
    }

    /// Whether `conn` has published: such connections stop being read while a mailbox
    /// to another shard overflows (cross-shard back-pressure); others keep being read.
    pub fn is_publisher(&self, conn: ConnId) -> bool {
        self.conn(conn).is_some_and(|c| c.publisher)
    }

    /// Embedding: publishes a message from inside the process as if from a client.
    pub fn inject(&mut self, publish: Publish, now: Instant) {
        self.route(publish, None, now);
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Queues `packet` for `conn` directly (used when no session is attached).
    fn send_packet(&mut self, conn: ConnId, packet: &Packet, version: ProtocolVersion) {
        self.scratch.clear();
        if let Err(e) = codec::encode(packet, version, &mut self.scratch) {
            crate::log_warning!(
                "Unable to encode {} for connection {conn}: {e}",
                packet.name()
            );
            return;
        }
        let frame = self.scratch.split().freeze();
        self.push_frame(conn, frame, None);
    }

    /// Appends encoded bytes to a connection's output and flags it for `poll_transmit`.
    fn push_frame(&mut self, conn: ConnId, head: bytes::Bytes, body: Option<bytes::Bytes>) {
        let Some(c) = self.conns.get_mut(conn).and_then(Option::as_mut) else {
            return;
        };
        let n = head.len() + body.as_ref().map_or(0, bytes::Bytes::len);
        c.out.push(head);
        if let Some(b) = body {
            c.out.push(b);
        }
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += n as u64;
        if !c.transmit_flag {
            c.transmit_flag = true;
            self.transmit_ready.push_back(conn);
        }
    }

    /// Whether the session `key` (if it is still `uid`) is connected with a full output or
    /// queue.
    fn is_congested(&self, key: usize, uid: u64) -> bool {
        let Some(slot) = self.sessions.get(key) else {
            return false;
        };
        if slot.session.uid() != uid {
            return false;
        }
        let Some(conn) = slot.conn.and_then(|c| self.conn(c)) else {
            return false;
        };
        conn.out.len() >= self.out_limit || slot.session.is_backlogged()
    }

    /// Pauses `publisher` until session `key` drains.
    fn pause(&mut self, publisher: ConnId, key: usize) {
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        let suid = slot.session.uid();
        let Some(c) = self.conns.get_mut(publisher).and_then(Option::as_mut) else {
            return;
        };
        if !c.blocked_on.iter().any(|&(k, u)| k == key && u == suid) {
            c.blocked_on.push((key, suid));
        }
        let puid = c.uid;
        if !slot
            .paused
            .iter()
            .any(|&(p, u)| p == publisher && u == puid)
        {
            slot.paused.push((publisher, puid));
        }
    }

    /// If session `key` is no longer congested, lets its paused publishers read again.
    fn maybe_release(&mut self, key: usize) {
        let Some(slot) = self.sessions.get(key) else {
            return;
        };
        if slot.paused.is_empty() || self.is_congested(key, slot.session.uid()) {
            return;
        }
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        let paused = std::mem::take(&mut slot.paused);
        self.release_paused(key, paused);
    }

    /// Lets the publishers paused on session `key` read again.
    fn release_paused(&mut self, key: usize, paused: SmallVec<[(ConnId, u64); 2]>) {
        for (p, puid) in paused {
            let Some(c) = self.conns.get_mut(p).and_then(Option::as_mut) else {
                continue;
            };
            if c.uid != puid {
                continue;
            }
            c.blocked_on.retain(|(k, _)| *k != key);
            if c.blocked_on.is_empty() && !c.transmit_flag {
                c.transmit_flag = true;
                self.transmit_ready.push_back(p);
            }
        }
    }

    /// Forgets that `conn` is paused on anything (it is going away).
    fn release_publisher(&mut self, conn: ConnId) {
        if let Some(c) = self.conn_mut(conn) {
            c.blocked_on.clear();
        }
    }

    /// A subscriber's output is full: arms the slow-subscriber timer once
    /// (`slow_subscriber_timeout`).
    fn arm_stall(&mut self, conn: ConnId, now: Instant) {
        let timeout = self.config.slow_subscriber_timeout;
        let Some(c) = self.conns.get_mut(conn).and_then(Option::as_mut) else {
            return;
        };
        if timeout.is_zero() || c.stall_mark.is_some() {
            return;
        }
        c.stall_mark = Some(c.out.written());
        let uid = c.uid;
        self.timers.push(now + timeout, Timer::Stall { conn, uid });
    }

    /// Drains the session's transmits into its connection's output.
    fn flush_session(&mut self, key: usize, now: Instant) {
        let Some(slot) = self.sessions.get(key) else {
            return;
        };
        let Some(conn) = slot.conn else { return };
        loop {
            let Some(slot) = self.sessions.get_mut(key) else {
                return;
            };
            let Some(t) = slot.session.poll_transmit() else {
                break;
            };
            self.write_transmit(key, conn, t, now);
        }
    }

    /// Refreshes the counters that are gauges rather than events.
    fn refresh_gauges(&mut self) {
        self.stats.clients_total =
            self.sessions.iter().filter(|(_, s)| !s.is_stub()).count() as u64;
        self.stats.subscriptions = self.local_subscriptions();
        self.stats.retained = self.retained.len() as u64;
        self.stats.stored = self
            .sessions
            .iter()
            .map(|(_, s)| s.session.stored() as u64)
            .sum();
    }
}
