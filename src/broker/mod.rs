//! Sans-IO per-shard broker: a coordinator of owned parts, quinn-proto style. Each part
//! keeps its own state behind its own methods and never reaches into another part; the
//! coordinator ([`Broker`]) passes each what it needs and applies what it returns:
//!
//! - `connections.rs`: the connection table (slab key = [`ConnId`] = the runtime's mio
//!   Token), per-connection output queues, the transmit / close queues, uids;
//! - `sessions.rs`: the slab of sessions, the client-id map, takeover, expiry and wills;
//! - `routing/`: the subscription index (with the other shards' interest), fan-out
//!   planning and encode-once, the retained store and its budgeted delivery, in-process
//!   subscribers;
//! - `cross/`: everything about the other shards: the outbox, the interest protocol and
//!   held SUBACKs, the home-shard directory and session hand-off, retained replication,
//!   `$SYS` reports;
//! - `flow.rs`: read gating and cut-offs, as one policy.
//!
//! The coordinator's own files hold the paths through those parts: `connect.rs` (CONNECT
//! and packet dispatch), `auth.rs` (MQTT 5 enhanced authentication exchanges), `lifecycle.rs` (ends of connections and sessions, wills),
//! `publish.rs` (a PUBLISH from decode to output queues and other shards), `subscribe.rs`,
//! `shared.rs` (shared subscription groups: membership, member choice, hand-over),
//! `shard_msg.rs` (what other shards send), `timers.rs` (deadlines and `$SYS`),
//! `persist_hook.rs` (records for persistence). It keeps only what every path shares:
//! the config, statistics, timers, security rules and the persistence hook.
//!
//! It never touches sockets, threads or the clock: the runtime feeds it bytes and `now`,
//! and drains what it wants written and closed. Driver contract, in order, once per event
//! loop iteration:
//!
//! 1. mail from other shards into `on_shard_message` (control lane first, always: no
//!    session's congestion ever stops a shard from draining its inboxes);
//!    `on_accept` / `on_read` / `on_writable` / `on_closed` for each readiness event,
//!    `on_timeout(now)` when `poll_timeout()` has passed;
//! 2. `while let Some(conn) = poll_transmit()` -> write `output(conn)` with writev until
//!    empty or WouldBlock (keep WRITABLE interest while non-empty); call it until `None`:
//!    the next call compacts what the previous connection's socket did not take, so that
//!    output kept past the iteration pins no read buffer (`out_queue.rs`);
//! 3. `while let Some(conn) = poll_close()` -> flush what can be flushed, then close the
//!    socket (do NOT call `on_closed` for it afterwards);
//! 4. `run_deferred(now)` while `has_deferred_work()` (budgeted retained lookups), and
//!    move `poll_shard_message()` output into the mailboxes (N > 1) on the message's
//!    `lane()`, then report which peers' data rings are full with `on_peer_backlog`;
//! 5. sleep until readiness, mail or `poll_timeout()` (not at all while deferred work
//!    remains).
//!
//! With persistence (`enable_persistence`), before writing any output in 2 and 3 (and
//! before a write on a WRITABLE event): if `has_persist_events()`, `drain_persist` and
//! append the records (with `persistence_fsync always`, fsync them): acknowledgements
//! queued this iteration then reach the publisher only after what they acknowledge is
//! durable. If it cannot write them, it calls `set_persist_held(true)` and sends no
//! output and no mail until it can (`wants_read` is false meanwhile).
//!
//! Back-pressure: read a connection only while `wants_read(conn, now)` (ask before every
//! read call: the answer also restarts the keep alive of a connection that was not read).
//! When it may turn true again, `poll_transmit` yields that connection once (its output
//! may be empty): the runtime re-checks `wants_read` for every connection `poll_transmit`
//! yields and resumes reading a paused one. The whole policy is `flow.rs`'s.

pub mod access; // the host's access hook of the embedding API
mod ack_batch; // the acknowledgements of one read, one output chunk
mod auth;
mod bridge_member; // clients that connect with Mosquitto's bridge bit
mod connect;
mod connections;
mod console; // what the HTTP console reads and does (src/console)
mod cross;
pub mod embed; // in-process subscriptions of the embedding API
mod flow;
pub mod ingest; // ingest handlers of the embedding API
pub mod ingest_ack; // their deferred acknowledgements
pub mod ingest_channel; // the channel form of a handler
mod ingest_hook;
mod lifecycle;
mod login; // logins the access hook deferred
mod memory_limit; // memory_limit: each shard's share and its gauge
mod mount; // mount_point per listener
mod options; // Mosquitto's per-listener and delivery options
mod out_queue;
pub mod outgoing; // the host's messages (BrokerHandle::publish) of the embedding API
mod persist_hook; // persistence (src/persist): event hook + restore
mod publish;
mod routing;
mod sessions;
mod shard_msg;
mod shared;
mod subscribe;
mod timers;
mod trace; // the packet trace of log_type debug, as Mosquitto prints it

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::auth::{ClientSecurity, Security};
use crate::codec::{self, ByteStr};
use crate::config::Config;
use crate::mailbox::MAX_SHARDS;
use crate::metrics::Stats;
use crate::session::Limits;

use connections::{ConnState, Connections};
use cross::CrossShard;
use flow::FlowControl;
use routing::Routing;
use sessions::{Sessions, Slot};
use timers::{Timer, Timers};

pub use crate::mailbox::ShardId;
pub use cross::{home_shard, Control, InterestTable, MovedSession, ShardMsg, ShardReport};
pub use out_queue::OutQueue;

/// Identifies a connection within a shard: the slab key and the mio Token.
pub type ConnId = usize;

/// Largest packet MQTT can encode (remaining length 268435455 + 5 header bytes).
const MQTT_MAX_PACKET: u32 = 268_435_460;

/// The per-shard broker. See the module documentation for its parts and the driver
/// contract.
#[derive(Debug)]
pub struct Broker {
    config: Arc<Config>,
    /// Shared by the shard's sessions.
    limits: Arc<Limits>,
    max_packet_in: u32,
    /// Password and ACL rules (replaced whole on reload).
    security: Arc<Security>,
    stats: Stats,
    timers: Timers,
    /// Persistence events for the runtime (empty and unused when persistence is off).
    persist: persist_hook::PersistHook,
    conns: Connections,
    sessions: Sessions,
    routing: Routing,
    cross: CrossShard,
    flow: FlowControl,
    /// `memory_limit`: this shard's share and its gauge.
    memory: memory_limit::MemoryLimit,
    /// The embedding host's ingest handlers and the messages they hold.
    ingest: ingest::Ingest,
    /// Where the ingest handlers' ack tokens report (the runtime's; `None` in sans-IO
    /// tests without one: tokens then acknowledge nothing).
    ingest_sink: Option<ingest_ack::AckSink>,
    /// The embedding host's access hook (`access.rs`), after the password / ACL files.
    access: access::Access,
    logins: login::Logins,
    /// Routing a message of the host's (`inject`), not one of the broker's own.
    injecting: bool,
    /// The host's count of refused `BrokerHandle::publish` calls, from the first message
    /// it published (for `$SYS`).
    embed_refused: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// MQTT 5 enhanced authentication exchanges in progress (`auth.rs`).
    auth: auth::AuthFlows,
    /// The acknowledgements owed to the connection being read, queued as one chunk.
    acks: ack_batch::AckBatch,
    /// The session whose acknowledgements in the read being handled freed its window:
    /// refilled once per read (`connect.rs` `finish_refill`).
    refill: Option<usize>,
}

impl Broker {
    /// A single-shard broker (what the sans-IO tests drive).
    pub fn new(config: Arc<Config>, now: Instant) -> Self {
        Self::new_shard(config, 0, 1, &InterestTable::new(), now)
    }

    /// Shard `shard` of `shards` (session uids are strided by the shard count so they
    /// stay unique across shards). Every shard of one broker gets the same `interest`
    /// table (the other shards' interest in wildcard-free filters, `cross/interest.rs`).
    pub fn new_shard(
        config: Arc<Config>,
        shard: ShardId,
        shards: usize,
        interest: &Arc<InterestTable>,
        now: Instant,
    ) -> Self {
        let shards = shards.clamp(1, MAX_SHARDS);
        let mut timers = Timers::new(now);
        if !config.sys_interval.is_zero() {
            timers.push(now, Timer::Sys);
        }
        let max_packet_in = if config.max_packet_size == 0 {
            MQTT_MAX_PACKET
        } else {
            config.max_packet_size
        };
        let mut stats = Stats::new(now);
        stats.update_load(now);
        Self {
            limits: Arc::new(Limits::from_config(&config)),
            max_packet_in,
            security: Arc::new(Security::open(&config)),
            stats,
            timers,
            persist: persist_hook::PersistHook::default(),
            conns: Connections::new(shard, shards),
            sessions: Sessions::default(),
            routing: Routing::new(
                shard,
                shards,
                config.shared_subscription_strategy,
                Arc::clone(interest),
            ),
            cross: CrossShard::new(shard, shards, Arc::clone(interest)),
            flow: FlowControl::new(&config, shard),
            memory: memory_limit::MemoryLimit::new(&config, shards),
            ingest: ingest::Ingest::default(),
            ingest_sink: None,
            access: access::Access::default(),
            logins: login::Logins::default(),
            injecting: false,
            embed_refused: None,
            auth: auth::AuthFlows::default(),
            acks: ack_batch::AckBatch::default(),
            refill: None,
            config,
        }
    }

    /// Installs loaded password / ACL rules (at start and on SIGHUP); every session's ACL
    /// is re-derived and its decision cache dropped. Connections stay up.
    pub fn set_security(&mut self, security: Arc<Security>) {
        let has_acl = security.has_acl();
        for (_, slot) in self.sessions.iter_mut() {
            if !has_acl {
                slot.security = None;
            } else if let Some(s) = slot.security.as_mut() {
                s.reload(&security);
            } else if !slot.is_stub() {
                // Connected or offline: checked as its user from now on.
                slot.security = Some(Box::new(ClientSecurity::new(
                    &security,
                    slot.listener,
                    slot.username.as_deref().map(ByteStr::as_str),
                    slot.session.client_id().as_str(),
                )));
            }
        }
        self.security = security;
    }

    /// Installs this shard's instance of the host's access hook (before it serves
    /// clients); `sink` takes the answers of the logins it defers.
    pub fn set_access(
        &mut self,
        hook: Box<dyn access::AccessHook>,
        sink: Option<access::LoginSink>,
    ) {
        self.access.set(hook, sink);
    }

    /// The runtime reports a TLS connection's verified client-certificate identity
    /// (before any MQTT bytes of that connection are fed in).
    pub fn set_identity(&mut self, conn: ConnId, identity: Option<String>) {
        if let Some(c) = self.conns.get_mut(conn) {
            c.identity = identity.map(String::into_boxed_str);
        }
    }

    /// A fresh uid (connections, sessions, assigned client ids).
    fn uid(&mut self) -> u64 {
        self.conns.next_uid()
    }

    pub fn on_accept(&mut self, conn: ConnId, peer: SocketAddr, listener: usize, now: Instant) {
        let uid = self.conns.accept(conn, peer, listener);
        self.flow.on_accept(conn, uid);
        self.ingest_conn_end(conn); // nothing of an earlier connection in this slot
        self.stats.connections_accepted += 1;
        // From accept, not from the last byte: a client trickling a CONNECT is cut too.
        self.timers.push(
            now + self.config.connect_timeout,
            Timer::Connect { conn, uid },
        );
    }

    /// Consumes every complete frame in `buf`, leaves a partial one.
    pub fn on_read(&mut self, conn: ConnId, buf: &mut BytesMut, now: Instant) {
        self.acks.begin(conn);
        self.decode(conn, buf, now);
        self.finish_refill(now);
        self.queue_acks();
        self.acks.end();
        // What the client sent may have left it more output than it reads (flow
        // control's rule 4): then it is not read, and cut if it never catches up.
        let over = self
            .conns
            .get(conn)
            .is_some_and(|c| self.flow.output_over(publish::output_of(c)));
        if over {
            self.arm_stall(conn, now);
        }
    }

    fn decode(&mut self, conn: ConnId, buf: &mut BytesMut, now: Instant) {
        loop {
            let Some(c) = self.conns.get(conn) else {
                buf.clear();
                return;
            };
            if c.state == ConnState::Closing {
                buf.clear();
                return;
            }
            let version = c.version;
            let awaiting_connect = c.state == ConnState::AwaitConnect;
            if awaiting_connect && bridge_member::take_bridge_bit(buf) {
                if let Some(c) = self.conns.get_mut(conn) {
                    c.bridge = true;
                }
            }
            let before = buf.len();
            let max = self.max_packet_in(conn);
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

    /// The largest packet `conn` may send now: before its CONNECT only a small CONNECT
    /// is buffered (`max_connect_packet_size`, refused from its header), after it
    /// `max_packet_size`. The runtime holds a WebSocket frame to the same bound.
    pub fn max_packet_in(&self, conn: ConnId) -> u32 {
        match self.conns.get(conn).map(|c| c.state) {
            Some(ConnState::AwaitConnect) => {
                self.max_packet_in.min(self.config.max_connect_packet_size)
            }
            _ => self.max_packet_in,
        }
    }

    /// The connection's output queue drained; lets back-pressure release.
    pub fn on_writable(&mut self, conn: ConnId, now: Instant) {
        let _ = now;
        if let Some(ConnState::Active(key)) = self.conns.get(conn).map(|c| c.state) {
            self.maybe_release(key);
        }
    }

    /// Socket EOF/error: an abnormal disconnect unless DISCONNECT was received.
    pub fn on_closed(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
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
        self.flow.on_conn_closed(conn);
        self.conns.remove(conn);
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
        self.conns.poll_transmit()
    }

    pub fn output(&mut self, conn: ConnId) -> Option<&mut OutQueue> {
        self.conns.output(conn)
    }

    /// The runtime flushes, then closes; no `on_closed` after.
    #[must_use]
    pub fn poll_close(&mut self) -> Option<ConnId> {
        self.conns.poll_close()
    }

    /// Whether to read `conn` now. False while it is closing or its CONNECT waits for
    /// its home shard (what the client pipelined behind CONNECT stays in the socket: at
    /// most one read's worth is queued), while it feeds a
    /// subscriber that cannot take more (here or on another shard), while a peer its
    /// messages went to has a full ring, and while its own output is over the bound. The
    /// policy is `flow.rs`'s; when reading resumes, the connection's keep alive clock
    /// restarts at `now`. Also false while it has as many SUBACKs waiting for the other
    /// shards as it may (`cross/interest.rs`).
    pub fn wants_read(&mut self, conn: ConnId, now: Instant) -> bool {
        let Some(c) = self.conns.get(conn) else {
            return false;
        };
        let state = c.state;
        if matches!(
            state,
            ConnState::Closing | ConnState::AwaitHome | ConnState::AwaitLogin
        ) || self.cross.held_subacks_at_limit(conn)
            || self.persist_held()
        {
            return false;
        }
        let output = publish::output_of(c);
        let (sessions, conns) = (&self.sessions, &self.conns);
        let gate = self.flow.wants_read(conn, output, |key, uid| {
            publish::load_of(sessions, conns, key, uid)
        });
        match (gate, state) {
            (flow::Gate::Reopened, ConnState::Active(key)) => {
                if let Some(slot) = self.sessions.get_mut(key) {
                    slot.session.restart_keep_alive(now);
                }
            }
            (flow::Gate::Closed, _) if self.flow.output_over(output) => self.arm_stall(conn, now),
            _ => {}
        }
        gate != flow::Gate::Closed
    }

    /// The runtime's report, after moving mail into the rings: the peers whose data ring
    /// is full (bit j = shard j). Connections whose messages went there are not read
    /// until the bit clears.
    pub fn on_peer_backlog(&mut self, peers: u64) {
        self.flow.on_peer_backlog(peers);
    }

    /// Embedding: publishes a message from inside the process as if from a client. Its
    /// slot in the host's publish channel (if any) is given back once it is routed.
    pub fn inject(&mut self, injected: impl Into<embed::Injected>, now: Instant) {
        let injected = injected.into();
        if self.embed_refused.is_none() {
            self.embed_refused = injected.refused().cloned();
        }
        let embed::Injected {
            publish,
            slot,
            routed,
        } = injected;
        self.injecting = true; // in-process subscribers see `Source::Host`
        let matched = self.route(publish, None, now);
        self.injecting = false;
        drop(slot);
        if let Some(routed) = routed {
            self.reply_when_written(routed, matched); // persistence hook
        }
    }

    /// Installs an in-process subscription on this shard; with `with_retained`, first
    /// offers it the matching retained messages of this shard's replica (the runtime asks
    /// one shard only, so they arrive once).
    pub fn add_internal(&mut self, sub: embed::InternalSub, with_retained: bool) {
        if sub.share.is_some() {
            self.join_internal(sub); // one member of a shared group (shared.rs)
            return;
        }
        let dropped = self.routing.add_internal(sub, with_retained);
        self.stats
            .dropped(crate::metrics::DropReason::InProcess, dropped);
    }

    /// Removes an in-process subscription from this shard; false if it was not there.
    pub fn remove_internal(&mut self, id: u64) -> bool {
        self.leave_internal(id) || self.routing.remove_internal(id)
    }

    /// Number of in-process subscriptions installed on this shard.
    pub fn internal_subscriptions(&self) -> usize {
        self.routing.internal_subscriptions()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn shard(&self) -> ShardId {
        self.cross.me()
    }

    pub fn shard_count(&self) -> usize {
        self.cross.shards()
    }

    /// The runtime's measure of this shard's event-loop lag, microseconds.
    pub fn set_loop_lag(&mut self, us: u64) {
        self.cross.note_loop_lag(us);
    }

    pub fn loop_lag_us(&self) -> u64 {
        self.cross.loop_lag_us()
    }

    /// Refreshes the counters that are gauges rather than events.
    fn refresh_gauges(&mut self) {
        self.stats.clients_total = self.sessions.clients_total();
        self.stats.subscriptions = self.routing.local_subscriptions();
        self.stats.shared_subscriptions = self.sessions.shared_subscriptions();
        self.stats.retained = self.routing.retained_len() as u64;
        self.stats.stored = self.sessions.stored();
        self.stats.stored_bytes = self.sessions.held_bytes();
        self.stats.output_bytes = self.conns.held_bytes();
        self.stats.subscribe_paused = self.cross.held_suback_limit_hits();
        if let Some(refused) = &self.embed_refused {
            self.stats.embed_publish_refused = refused.load(std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Memory this shard keeps alive for messages in transit, as its limits count it:
    /// (session queues and inflight windows, output queues). Walks every session and
    /// connection: for `$SYS` and tests, not for a hot path.
    pub fn held_bytes(&self) -> (u64, u64) {
        (self.sessions.held_bytes(), self.conns.held_bytes())
    }

    /// This shard's counters for $SYS, with gauges refreshed.
    pub fn shard_report(&mut self) -> ShardReport {
        self.refresh_gauges();
        ShardReport {
            shard: self.cross.me(),
            stats: self.stats.clone(),
            loop_lag_us: self.cross.loop_lag_us(),
        }
    }
}
