//! The cross-shard side of the broker: the messages shards exchange through their
//! mailboxes ([`ShardMsg`]), the replicated shard-interest index, client-id home shards
//! and the session-move (takeover) protocol, retained replication and $SYS reports.
//!
//! Protocol summary (N > 1 shards):
//! - Interest: when a shard's local index gains its first subscription to a filter it
//!   tells every other shard `Interest{add}`; when it loses the last, `Interest{remove}`.
//!   Additions are acknowledged (`InterestAck`) and the SUBACK waits for them
//!   (`interest.rs`).
//!   Each shard keeps `remote: TopicIndex<ShardId, ()>` and sends one `Arc<Message>` per
//!   interested shard, tagged with the destination set.
//! - Retained: every shard holds a replica; a retained PUBLISH is applied locally and
//!   broadcast (`Retain`), so SUBSCRIBE reads the local replica without a round trip.
//!   Chosen over one owning shard because SUBSCRIBE (with its budgeted wildcard lookup)
//!   then never waits on another core, and retained *sets* are rare next to publishes;
//!   the cost is N copies of the (shared, `Bytes`) payload references and eventual
//!   consistency of microseconds. Sets carry Lamport versions, so concurrent sets of one
//!   topic on two shards leave the same winner in every replica.
//! - Sessions: client id -> home shard `fnv(id) % N` holds the directory (client id ->
//!   shard where the session lives). CONNECT on k sends `Claim` to the home, which
//!   records k and sends `Takeover` to the previous owner s (or `Moved{None}` straight to
//!   k). s closes the old connection, and for a resumed persistent session moves the
//!   `Session` itself (subscriptions, inflight, queue) to k in `Moved`, leaving a stub
//!   until k says `Installed`. Watermarks make the handoff exact: every cross-shard
//!   publish carries its sender's sequence number; `Moved` carries how far s had read
//!   from each shard (k skips direct messages at or below it: already queued), and
//!   `Installed` how far k had read when it installed. The stub forwards at once what
//!   k will never get directly, holds what k might, and on `Installed` forwards only
//!   those k had read before the install (k could not deliver them then).
//!
//! It never blocks and never touches a mailbox itself: the runtime drains
//! [`Broker::poll_shard_message`] into the rings and feeds what arrives into
//! [`Broker::on_shard_message`].

use std::sync::Arc;
use std::time::Instant;

use crate::codec::ByteStr;
use crate::metrics::Stats;
use crate::retained::RetainedMessage;
use crate::session::{Message, Outgoing, Session};
use crate::topic::TopicFilter;

use super::{Broker, ConnId, ConnState};

pub use crate::mailbox::{ShardId, MAX_SHARDS};

/// The key under which shard `j`'s interest sits in the subscription index (far above
/// any slab key).
pub(super) const fn remote_key(j: ShardId) -> usize {
    usize::MAX - j
}

/// The shard a key of the subscription index stands for, `None` for a local session.
pub(super) const fn remote_shard(key: usize) -> Option<ShardId> {
    if key > usize::MAX - MAX_SHARDS {
        Some(usize::MAX - key)
    } else {
        None
    }
}

/// One message between shards. Publishes are the hot case and stay small; control
/// messages are boxed.
#[derive(Debug)]
pub enum ShardMsg {
    /// Deliver to the receiver's local subscribers. `dests` is the set of shards the
    /// sender addressed (bit j = shard j).
    Publish {
        msg: Arc<Message>,
        dests: u64,
        /// The sender's sequence number (handoff watermarks).
        seq: u64,
    },
    Control(Box<Control>),
}

/// Rare cross-shard messages.
#[derive(Debug)]
pub enum Control {
    /// The sender's local index gained (or lost) its only subscriptions to `filter`.
    /// An addition carries a sequence number (`seq > 0`) for the receiver to acknowledge
    /// once applied (see `interest.rs`).
    Interest {
        filter: ByteStr,
        add: bool,
        seq: u64,
    },
    /// The sender applied the receiver's Interest broadcasts up to `seq`.
    InterestAck { seq: u64 },
    /// A retained message was set (empty payload: deleted) on the sender, with its
    /// version (Lamport clock, sender): every replica keeps the highest version per
    /// topic, so concurrent sets on two shards converge to the same winner everywhere.
    Retain(Box<RetainedMessage>, (u64, ShardId)),
    /// To the home shard: a CONNECT for `client_id` arrived on the sender.
    Claim {
        client_id: ByteStr,
        conn: ConnId,
        conn_uid: u64,
        clean_start: bool,
    },
    /// From the home shard to the shard holding the session: hand it to `to`.
    Takeover {
        client_id: ByteStr,
        to: ShardId,
        conn: ConnId,
        conn_uid: u64,
        clean_start: bool,
    },
    /// To the connecting shard: the previous session (resumed) or none.
    Moved {
        client_id: ByteStr,
        conn: ConnId,
        conn_uid: u64,
        session: Option<MovedSession>,
    },
    /// To the previous owner: the moved session is installed, drop the stub after
    /// forwarding what it held that the new shard had not seen (`upto[j]`: the last
    /// sequence number the new shard had taken from shard j, its own for itself).
    Installed {
        client_id: ByteStr,
        uid: u64,
        upto: Vec<u64>,
    },
    /// To the home shard: the session of `client_id` on the sender ended.
    Forget { client_id: ByteStr },
    /// From a stub: a message for the moved session `uid`.
    Forward {
        client_id: ByteStr,
        uid: u64,
        out: Outgoing,
    },
    /// To shard 0 every `sys_interval`: the sender's counters.
    Report(Box<ShardReport>),
    /// Messages the sender published to us and we were the last to hold: dropped here,
    /// on the thread that allocated them, so allocator caches stay per-thread and no
    /// free takes another thread's arena lock.
    Release(Vec<Arc<Message>>),
}

/// A session on its way between shards, with the old shard's watermarks: `floor[j]` is
/// the last sequence number it had taken from shard j (its own last sent for itself)
/// before the move, so those messages are already in the session.
#[derive(Debug)]
pub struct MovedSession {
    pub session: Box<Session>,
    pub floor: Vec<u64>,
}

/// Per-slot state of a session handoff (see the module documentation).
#[derive(Debug)]
pub enum Handoff {
    /// Old shard: the session moved to `to`. Messages `to` may also get directly (it
    /// was a destination, or it sent them) wait in `held` for its `Installed`
    /// watermarks; the others are forwarded at once.
    Stub {
        to: ShardId,
        held: Vec<((ShardId, u64), Outgoing)>,
    },
    /// New shard: skip direct messages the old shard had already queued.
    Arrived { floor: Vec<u64> },
}

/// What a slot in handoff does with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offer {
    Deliver,
    Skip,
    Forward(ShardId),
    Hold,
}

impl Handoff {
    /// Decides for a message from `source` (shard, sequence number) that was sent
    /// directly to the shards in `dests`; `me` is this shard.
    pub(super) fn offer(&self, me: ShardId, dests: u64, source: (ShardId, u64)) -> Offer {
        match self {
            Self::Stub { to, .. } => {
                let direct = *to < MAX_SHARDS && dests & (1 << to) != 0;
                if direct || source.0 == *to {
                    Offer::Hold
                } else {
                    Offer::Forward(*to)
                }
            }
            Self::Arrived { floor } => {
                let (from, seq) = source;
                let queued = from != me && seq != 0 && floor.get(from).is_some_and(|&f| seq <= f);
                if queued {
                    Offer::Skip
                } else {
                    Offer::Deliver
                }
            }
        }
    }

    pub(super) fn hold(&mut self, source: (ShardId, u64), out: Outgoing) {
        if let Self::Stub { held, .. } = self {
            held.push((source, out));
        }
    }
}

/// What one shard tells shard 0 for `$SYS`.
#[derive(Debug, Clone)]
pub struct ShardReport {
    pub shard: ShardId,
    pub stats: Stats,
    /// Event-loop lag (readiness to handling, worst of the last interval), microseconds.
    pub loop_lag_us: u64,
}

/// A CONNECT waiting for its home shard's answer.
#[derive(Debug)]
pub(super) struct PendingConnect {
    pub uid: u64,
    pub connect: Box<crate::codec::Connect>,
    pub accepted: crate::session::Accepted,
    /// Packets the client pipelined after CONNECT, replayed once it completes.
    pub queued: Vec<crate::codec::Packet>,
}

/// FNV-1a: stable across shards and runs, cheap for short client ids.
pub fn home_shard(client_id: &str, shards: usize) -> ShardId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

impl Broker {
    /// Next message for another shard (or for this one: loop it back through
    /// `on_shard_message`). Drain after every call into the broker.
    #[must_use]
    pub fn poll_shard_message(&mut self) -> Option<(ShardId, ShardMsg)> {
        if self.outbox.is_empty() && self.releases_pending {
            self.releases_pending = false;
            for (to, batch) in self.releases.iter_mut().enumerate() {
                if !batch.is_empty() {
                    let batch = std::mem::take(batch);
                    self.outbox
                        .push_back((to, ShardMsg::Control(Box::new(Control::Release(batch)))));
                }
            }
        }
        self.outbox.pop_front()
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn shard_count(&self) -> usize {
        self.shards
    }

    /// False while a connected session fed by other shards is over its queue limit: the
    /// runtime then stops draining its inboxes, so the senders' rings fill and they stop
    /// reading their publishers (cross-shard back-pressure).
    pub fn accepts_remote(&mut self) -> bool {
        if self.remote_congested.is_empty() {
            return true;
        }
        let mut list = std::mem::take(&mut self.remote_congested);
        list.retain(|&(k, u)| self.is_congested(k, u));
        self.remote_congested = list;
        self.remote_congested.is_empty()
    }

    /// The runtime's measure of this shard's event-loop lag, microseconds.
    pub fn set_loop_lag(&mut self, us: u64) {
        self.loop_lag_us = self.loop_lag_us.max(us);
    }

    pub fn loop_lag_us(&self) -> u64 {
        self.loop_lag_us
    }

    pub(super) fn send_control(&mut self, to: ShardId, control: Control) {
        self.outbox
            .push_back((to, ShardMsg::Control(Box::new(control))));
    }

    pub(super) fn broadcast(&mut self, mut make: impl FnMut() -> Control) {
        for j in 0..self.shards {
            if j != self.shard {
                self.send_control(j, make());
            }
        }
    }

    pub(super) fn home_of(&self, client_id: &str) -> ShardId {
        home_shard(client_id, self.shards)
    }

    /// Sends a retained set to every other shard's replica.
    pub(super) fn replicate_retained(&mut self, msg: &RetainedMessage) {
        if self.shards > 1 {
            self.retain_clock += 1;
            let version = (self.retain_clock, self.shard);
            self.retain_versions.insert(msg.topic.clone(), version);
            self.broadcast(|| Control::Retain(Box::new(msg.clone()), version));
        }
    }

    /// Shards (other than this one) with a subscriber matching `topic`.
    #[cfg(test)]
    pub(super) fn remote_dests(&self, topic: &str) -> u64 {
        let mut dests = 0u64;
        self.index.for_each_match(topic, |&k, _| {
            if let Some(j) = remote_shard(k) {
                dests |= 1 << j;
            }
        });
        dests
    }

    /// Local subscriptions (the index minus the other shards' interest entries).
    pub(super) fn local_subscriptions(&self) -> u64 {
        self.index.len().saturating_sub(self.remote_entries) as u64
    }

    /// Hands one message to another shard.
    pub fn on_shard_message(&mut self, from: ShardId, msg: ShardMsg, now: Instant) {
        match msg {
            ShardMsg::Publish { msg, dests, seq } => {
                if let Some(s) = self.seen_seq.get_mut(from) {
                    *s = seq;
                }
                self.fanout_local(&msg, None, dests, (from, seq), now);
                self.persist.received_remote(from, &msg);
                if Arc::strong_count(&msg) == 1 && from != self.shard {
                    if let Some(batch) = self.releases.get_mut(from) {
                        batch.push(msg);
                        self.releases_pending = true;
                    }
                }
            }
            ShardMsg::Control(c) => self.on_control(from, *c, now),
        }
    }

    fn on_control(&mut self, from: ShardId, control: Control, now: Instant) {
        match control {
            Control::Interest { filter, add, seq } => self.on_interest(from, filter, add, seq),
            Control::InterestAck { seq } => self.on_interest_ack(from, seq, now),
            Control::Retain(m, version) => {
                self.retain_clock = self.retain_clock.max(version.0);
                let newer = self
                    .retain_versions
                    .get(&m.topic)
                    .map_or(true, |&v| v < version);
                if !newer {
                    return; // a later set of this topic already won here
                }
                self.retain_versions.insert(m.topic.clone(), version);
                self.retained.set(*m);
                self.stats.retained = self.retained.len() as u64;
            }
            Control::Claim {
                client_id,
                conn,
                conn_uid,
                clean_start,
            } => match self.directory.insert(client_id.clone(), from) {
                Some(owner) => self.send_control(
                    owner,
                    Control::Takeover {
                        client_id,
                        to: from,
                        conn,
                        conn_uid,
                        clean_start,
                    },
                ),
                None => self.send_control(
                    from,
                    Control::Moved {
                        client_id,
                        conn,
                        conn_uid,
                        session: None,
                    },
                ),
            },
            Control::Takeover {
                client_id,
                to,
                conn,
                conn_uid,
                clean_start,
            } => self.on_takeover(client_id, to, conn, conn_uid, clean_start, now),
            Control::Moved {
                client_id,
                conn,
                conn_uid,
                session,
            } => self.on_moved(from, &client_id, conn, conn_uid, session, now),
            Control::Installed {
                client_id,
                uid,
                upto,
            } => {
                let Some(&key) = self.client_ids.get(&client_id) else {
                    return;
                };
                let Some(slot) = self.sessions.get_mut(key) else {
                    return;
                };
                if slot.session.uid() != uid {
                    return;
                }
                let Some(super::shards::Handoff::Stub { to, held }) = slot.forward.as_deref_mut()
                else {
                    return;
                };
                let to = *to;
                for ((shard, seq), out) in std::mem::take(held) {
                    // Not yet taken by the new shard when it installed: forward.
                    if upto.get(shard).is_some_and(|&u| seq > u) {
                        continue;
                    }
                    self.send_control(
                        to,
                        Control::Forward {
                            client_id: client_id.clone(),
                            uid,
                            out,
                        },
                    );
                }
                self.end_session(key);
            }
            Control::Forget { client_id } => {
                if self.directory.get(&client_id) == Some(&from) {
                    self.directory.remove(&client_id);
                }
            }
            Control::Forward {
                client_id,
                uid,
                out,
            } => {
                let Some(&key) = self.client_ids.get(&client_id) else {
                    return;
                };
                let ok = self
                    .sessions
                    .get(key)
                    .is_some_and(|s| s.session.uid() == uid && !s.is_stub());
                if ok {
                    self.deliver_outgoing(key, out, None, now);
                }
            }
            Control::Release(batch) => drop(batch),
            Control::Report(r) => {
                if let Some(slot) = self.reports.get_mut(r.shard) {
                    *slot = Some(*r);
                }
            }
        }
    }

    /// Whether a CONNECT of `client_id` other than `except` (connection, uid) waits for
    /// its home shard here.
    fn pending_for(&self, client_id: &ByteStr, except: Option<(ConnId, u64)>) -> bool {
        self.pending
            .iter()
            .any(|(&c, p)| &p.accepted.client_id == client_id && except != Some((c, p.uid)))
    }

    fn on_takeover(
        &mut self,
        client_id: ByteStr,
        to: ShardId,
        conn: ConnId,
        conn_uid: u64,
        clean_start: bool,
        now: Instant,
    ) {
        let target = (to == self.shard).then_some((conn, conn_uid));
        if self.pending_for(&client_id, target) {
            // Our own earlier CONNECT for this id has not completed: take over after it
            // does.
            self.deferred.push(Control::Takeover {
                client_id,
                to,
                conn,
                conn_uid,
                clean_start,
            });
            return;
        }
        let mut session = None;
        if to != self.shard {
            if let Some(&key) = self.client_ids.get(&client_id) {
                let old = self
                    .sessions
                    .get(key)
                    .filter(|s| !s.is_stub())
                    .and_then(|s| s.conn);
                if let Some(old) = old {
                    crate::log_notice!(
                        "Client {client_id} already connected, closing old connection."
                    );
                    self.disconnect_with(old, crate::codec::ReasonCode::SESSION_TAKEN_OVER);
                    self.end_connection(old, now, true);
                }
                // end_connection may have ended a non-persistent session.
                if let Some(&key) = self.client_ids.get(&client_id) {
                    if self.sessions.get(key).is_some_and(|s| !s.is_stub()) {
                        if clean_start {
                            self.end_session(key); // [MQTT-3.1.2-6]
                        } else {
                            session = self.move_out(key, to);
                        }
                    }
                }
            }
        }
        self.send_control(
            to,
            Control::Moved {
                client_id,
                conn,
                conn_uid,
                session,
            },
        );
    }

    /// Takes the session out of slot `key`, leaving a forwarding stub with the same
    /// subscriptions in its place.
    fn move_out(&mut self, key: usize, to: ShardId) -> Option<MovedSession> {
        let limits = self.limits;
        let floor = self.seen_snapshot();
        let slot = self.sessions.get_mut(key)?;
        let mut stub = Session::new(slot.session.client_id().clone(), slot.session.uid(), limits);
        for (f, s) in slot.session.subscriptions() {
            stub.subscribe(f, *s);
        }
        let session = std::mem::replace(&mut slot.session, stub);
        slot.forward = Some(Box::new(Handoff::Stub {
            to,
            held: Vec::new(),
        }));
        self.persist.moved_out(session.client_id()); // the new shard records it now
        crate::log_notice!(
            "Client {} session moved from shard {} to shard {to}.",
            session.client_id(),
            self.shard
        );
        let paused = std::mem::take(&mut slot.paused);
        self.release_paused(key, paused);
        Some(MovedSession {
            session: Box::new(session),
            floor,
        })
    }

    /// The last sequence number taken from each shard, this shard's last sent for itself.
    fn seen_snapshot(&self) -> Vec<u64> {
        let mut v = self.seen_seq.clone();
        if let Some(me) = v.get_mut(self.shard) {
            *me = self.send_seq;
        }
        v
    }

    fn on_moved(
        &mut self,
        from: ShardId,
        client_id: &ByteStr,
        conn: ConnId,
        conn_uid: u64,
        session: Option<MovedSession>,
        now: Instant,
    ) {
        let moved_uid = session.as_ref().map(|s| s.session.uid());
        let pending = match self.pending.remove(&conn) {
            Some(p) if p.uid == conn_uid => Some(p),
            Some(p) => {
                self.pending.insert(conn, p);
                None
            }
            None => None,
        };
        let live = pending.is_some()
            && self
                .conn(conn)
                .is_some_and(|c| c.uid == conn_uid && c.state == ConnState::AwaitHome);
        match (pending, live) {
            (Some(p), true) => {
                let p = *p;
                self.finish_connect(conn, p.connect, &p.accepted, session, now);
                for packet in p.queued {
                    self.handle_packet(conn, packet, now);
                }
            }
            _ => {
                // The client left before its session arrived: keep the session offline here.
                if let Some(session) = session {
                    let key = self.install(session);
                    self.session_offline(key, None, now);
                } else {
                    let home = self.home_of(client_id.as_str());
                    self.send_control(
                        home,
                        Control::Forget {
                            client_id: client_id.clone(),
                        },
                    );
                }
            }
        }
        if let Some(uid) = moved_uid {
            if from != self.shard {
                self.send_control(
                    from,
                    Control::Installed {
                        client_id: client_id.clone(),
                        uid,
                        upto: self.seen_snapshot(),
                    },
                );
            }
        }
        // Takeovers that arrived while this CONNECT was pending.
        if !self.deferred.is_empty() && !self.pending_for(client_id, None) {
            let deferred = std::mem::take(&mut self.deferred);
            for c in deferred {
                self.on_control(self.shard, c, now);
            }
        }
    }

    /// Puts a session that arrived from another shard into the slab and the index.
    pub(super) fn install(&mut self, moved: MovedSession) -> usize {
        let MovedSession { session, floor } = moved;
        let session = *session;
        if let Some(&old) = self.client_ids.get(session.client_id()) {
            // A stub (or stale entry) of the same client: the moved session wins.
            self.end_session(old);
        }
        let client_id = session.client_id().clone();
        let filters: Vec<(ByteStr, crate::session::Subscription)> = session
            .subscriptions()
            .map(|(f, s)| (f.clone(), *s))
            .collect();
        let key = self.sessions.insert(super::Slot {
            session,
            conn: None,
            paused: Default::default(),
            forward: Some(Box::new(Handoff::Arrived { floor })),
            // Set again by `finish_connect` right after the move.
            security: None,
            username: None,
        });
        self.client_ids.insert(client_id, key);
        for (filter, sub) in filters {
            if let Ok(parsed) = TopicFilter::try_from(filter.clone()) {
                self.index.insert(&parsed, key, sub);
                self.filter_added(&filter);
            }
        }
        self.stats.clients_total = self.sessions.len() as u64;
        key
    }

    /// This shard's counters for $SYS, with gauges refreshed.
    pub fn shard_report(&mut self) -> ShardReport {
        self.refresh_gauges();
        ShardReport {
            shard: self.shard,
            stats: self.stats.clone(),
            loop_lag_us: self.loop_lag_us,
        }
    }

    /// Shard 0: the sum of every shard's last report and its own counters.
    pub(super) fn aggregate_stats(&self) -> Stats {
        let mut total = self.stats.clone();
        for r in self.reports.iter().flatten() {
            if r.shard == self.shard {
                continue;
            }
            let s = &r.stats;
            total.clients_connected += s.clients_connected;
            total.clients_total += s.clients_total;
            total.clients_maximum += s.clients_maximum;
            total.connections_accepted += s.connections_accepted;
            total.messages_received += s.messages_received;
            total.messages_sent += s.messages_sent;
            total.publish_received += s.publish_received;
            total.publish_sent += s.publish_sent;
            total.publish_dropped += s.publish_dropped;
            total.bytes_received += s.bytes_received;
            total.bytes_sent += s.bytes_sent;
            total.subscriptions += s.subscriptions;
            total.stored += s.stored;
            for (t, o) in [
                (&mut total.load_received, &s.load_received),
                (&mut total.load_sent, &s.load_sent),
                (&mut total.load_publish_received, &s.load_publish_received),
                (&mut total.load_publish_sent, &s.load_publish_sent),
                (&mut total.load_bytes_received, &s.load_bytes_received),
                (&mut total.load_bytes_sent, &s.load_bytes_sent),
                (&mut total.load_connections, &s.load_connections),
            ] {
                t.one += o.one;
                t.five += o.five;
                t.fifteen += o.fifteen;
            }
        }
        total
    }

    /// Per-shard $SYS values: `(shard, loop lag in microseconds, clients connected)`.
    pub(super) fn shard_lags(&self) -> Vec<(ShardId, u64, u64)> {
        let mut out = vec![(self.shard, self.loop_lag_us, self.stats.clients_connected)];
        for r in self.reports.iter().flatten() {
            if r.shard != self.shard {
                out.push((r.shard, r.loop_lag_us, r.stats.clients_connected));
            }
        }
        out.sort_unstable();
        out
    }
}
