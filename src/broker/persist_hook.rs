//! The broker's side of persistence: hooks in the connection, subscription and fan-out
//! code push [`Record`]s into a `Vec` (no I/O, nothing at all when persistence is off),
//! which the runtime drains once per loop iteration with [`Broker::drain_persist`] and
//! writes in one go; and [`restore`] rebuilds retained messages and sessions from a
//! [`State`](crate::persist::State) before listeners accept.
//!
//! Only persistent sessions (session expiry not zero) are recorded: their subscriptions,
//! every message they accept (live, or retained on SUBSCRIBE), inbound QoS 2 ids from
//! PUBREC to PUBREL, and who they connected as. The outbound window of a session that
//! acknowledged or was sent something is recorded once per iteration (at drain time),
//! not once per packet. A record is pushed in the same iteration as the acknowledgement
//! it backs, so the runtime writes it before the acknowledgement leaves. It never reads
//! the clock: wall-clock times come from the anchor the runtime gives
//! [`Broker::enable_persistence`].

mod restore;

use std::time::Instant;

use crossbeam_channel::Sender;

use crate::codec::{AckKind, ByteStr, Packet, PacketId, Publish, QoS, SubscriptionOptions};
use crate::persist::{InflightEntry, Record, EXPIRY_NEVER};
use crate::retained::RetainSource;
use crate::session::{Delivery, Message, Outgoing, Session, SessionExpiry, Subscription};

use super::Broker;

/// Persistence events waiting for the runtime.
#[derive(Debug, Default)]
pub(super) struct PersistHook {
    enabled: bool,
    /// (monotonic, Unix ms) at the same moment.
    anchor: Option<(Instant, u64)>,
    events: Vec<Record>,
    /// Sessions (key, uid) whose window changed this iteration.
    dirty: Vec<(usize, u64)>,
    /// Client ids with a persistent session on record.
    persisted: crate::hash::Set<ByteStr>,
    scratch: Vec<(u64, PacketId, u8)>,
    /// This process run (shared by every shard), to key messages between shards.
    boot: u64,
    /// QoS 1/2 messages this shard sent to other shards, and per destination ring.
    routed_n: u64,
    sent_seq: Vec<u64>,
    /// Per source shard: QoS 1/2 messages received and delivered; sources to report.
    received_seq: Vec<u64>,
    received_dirty: Vec<u8>,
    /// The runtime could not write the records: read nothing until it can.
    held: bool,
    /// Host publishes (`BrokerHandle::publish_routed`) routed this iteration, told
    /// whether anything matched once their records are written: not drained yet, and
    /// drained (in the runtime's batch) but not written yet.
    replies: Vec<(Sender<bool>, bool)>,
    drained_replies: Vec<(Sender<bool>, bool)>,
}

impl PersistHook {
    pub(super) fn unix_ms(&self, t: Instant) -> u64 {
        let Some((at, ms)) = self.anchor else {
            return 0;
        };
        if t >= at {
            ms.saturating_add(u64::try_from(t.duration_since(at).as_millis()).unwrap_or(0))
        } else {
            ms.saturating_sub(u64::try_from(at.duration_since(t).as_millis()).unwrap_or(0))
        }
    }

    /// Whether `session` is recorded (persistence on, session outlives its connection).
    pub(super) fn wants(&self, session: &Session) -> bool {
        self.enabled && !session.expiry().ends_at_disconnect()
    }

    /// A message `session.deliver` accepted (call only when it returned Sent or Queued).
    pub(super) fn message(
        &mut self,
        key: usize,
        session: &Session,
        msg: &Message,
        out: (QoS, bool, &[u32]),
    ) {
        let (qos, retain, sub_ids) = out;
        if !self.wants(session) || (qos == QoS::AtMostOnce && session.is_connected()) {
            return;
        }
        self.events.push(Record::Message {
            client_id: session.client_id().clone(),
            seq: session.last_seq(),
            qos,
            retain,
            sub_ids: sub_ids.to_vec(),
            received: self.unix_ms(msg.received),
            publish: msg.publish.clone(),
        });
        if session.is_connected() {
            self.dirty.push((key, session.uid()));
        }
    }

    /// A subscription of `session` was added or replaced (`Some`) or removed (`None`).
    pub(super) fn subscribe(
        &mut self,
        session: &Session,
        filter: &ByteStr,
        sub: Option<Subscription>,
    ) {
        if !self.wants(session) {
            return;
        }
        let client_id = session.client_id().clone();
        let filter = filter.clone();
        self.events.push(match sub {
            Some(sub) => Record::Subscribe {
                client_id,
                filter,
                options: options_byte(sub.options),
                id: sub.id.unwrap_or(0),
            },
            None => Record::Unsubscribe { client_id, filter },
        });
    }

    /// Shard `from` sent `msg` (QoS 1/2) to the shards in `dests`: record it here, before
    /// this shard acknowledges it, until each destination records its delivery.
    pub(super) fn routed(&mut self, from: usize, msg: &Message, dests: u64) {
        if !self.enabled || msg.publish.qos == QoS::AtMostOnce || dests == 0 {
            return;
        }
        self.routed_n += 1;
        let mut seqs = Vec::with_capacity(dests.count_ones() as usize);
        let mut remaining = dests;
        while remaining != 0 {
            let to = remaining.trailing_zeros() as usize;
            remaining &= remaining - 1;
            if self.sent_seq.len() <= to {
                self.sent_seq.resize(to + 1, 0);
            }
            self.sent_seq[to] += 1;
            seqs.push((to as u8, self.sent_seq[to]));
        }
        self.events.push(Record::Routed {
            boot: self.boot,
            from: from as u8,
            n: self.routed_n,
            seqs,
            received: self.unix_ms(msg.received),
            publish: msg.publish.clone(),
        });
    }

    /// A QoS 1/2 message from shard `from` was delivered here (rings are FIFO, so the
    /// count is the sender's ring sequence number).
    pub(super) fn received_remote(&mut self, from: usize, msg: &Message) {
        if !self.enabled || msg.publish.qos == QoS::AtMostOnce {
            return;
        }
        if self.received_seq.len() <= from {
            self.received_seq.resize(from + 1, 0);
        }
        self.received_seq[from] += 1;
        if !self.received_dirty.contains(&(from as u8)) {
            self.received_dirty.push(from as u8);
        }
    }

    /// `session` accepted a message (`delivery`): records it, as [`PersistHook::message`]
    /// does. `out` is a copy of what was offered, taken only when [`PersistHook::wants`]
    /// the session.
    pub(super) fn delivered(
        &mut self,
        key: usize,
        session: &Session,
        delivery: Delivery,
        out: Option<&Outgoing>,
    ) {
        if let (Delivery::Sent | Delivery::Queued, Some(o)) = (delivery, out) {
            self.message(key, session, &o.msg, (o.qos, o.retain, &o.sub_ids));
        }
    }

    /// The inbound QoS 2 id a PUBREL in `packet` releases, if `session` holds it (ask
    /// before the session handles the packet, record with [`PersistHook::qos2_released`]
    /// after).
    pub(super) fn pubrel_releases(session: &Session, packet: &Packet) -> Option<PacketId> {
        match packet {
            Packet::Ack(a) if a.kind == AckKind::PubRel && session.awaits_pubrel(a.packet_id) => {
                Some(a.packet_id)
            }
            _ => None,
        }
    }

    /// PUBREL released the inbound QoS 2 `id` of `session` (from
    /// [`PersistHook::pubrel_releases`]).
    pub(super) fn qos2_released(&mut self, session: &Session, id: Option<PacketId>) {
        if let Some(packet_id) = id {
            if self.wants(session) {
                self.events.push(Record::InboundQos2Released {
                    client_id: session.client_id().clone(),
                    packet_id,
                });
            }
        }
    }

    /// The session of `client_id` moved to another shard, which records it from now on.
    pub(super) fn moved_out(&mut self, client_id: &ByteStr) {
        self.persisted.remove(client_id);
    }

    /// The window of session `key` changed (an acknowledgement arrived).
    pub(super) fn dirty(&mut self, key: usize, session: &Session) {
        if self.wants(session) {
            self.dirty.push((key, session.uid()));
        }
    }
}

fn expiry_secs(e: SessionExpiry) -> u32 {
    match e {
        SessionExpiry::Never => EXPIRY_NEVER,
        SessionExpiry::After(d) => u32::try_from(d.as_secs())
            .unwrap_or(EXPIRY_NEVER - 1)
            .min(EXPIRY_NEVER - 1),
    }
}

/// The SUBSCRIBE options byte (MQTT 5 layout; 3.1.1 uses the QoS bits only).
pub(super) fn options_byte(o: SubscriptionOptions) -> u8 {
    (o.qos as u8)
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling & 3) << 4)
}

pub(super) fn options_from_byte(b: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_u8(b & 3).unwrap_or(QoS::ExactlyOnce),
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: (b >> 4) & 3,
    }
}

impl Broker {
    /// Turns persistence events on. `unix_ms` is the wall clock at `now`; `boot`
    /// identifies this process run (the same on every shard).
    pub fn enable_persistence(&mut self, now: Instant, unix_ms: u64, boot: u64) {
        self.persist.enabled = true;
        self.persist.anchor = Some((now, unix_ms));
        self.persist.boot = boot;
    }

    /// The runtime could not write the drained records and holds this shard's output
    /// until it can (`true`), or wrote them (`false`). While held, [`Broker::wants_read`]
    /// is false for every connection: nothing new is accepted into memory and the
    /// publishers get TCP back-pressure.
    ///
    /// When the hold ends at `now`, every connection's `slow_subscriber_timeout` clock
    /// restarts there: nobody could make progress while the shard held.
    pub fn set_persist_held(&mut self, held: bool, now: Instant) {
        if self.persist.held && !held {
            self.flow.restart_stalls(now);
        }
        self.persist.held = held;
    }

    /// The host's `publish_routed` message was routed (`matched`: whether any
    /// subscription matched): with persistence on, `routed` is told once the records it
    /// made are written ([`Broker::persist_written`]), at the point a client's PUBACK
    /// would be released; without, now.
    pub(super) fn reply_when_written(&mut self, routed: Sender<bool>, matched: bool) {
        if self.persist.enabled {
            self.persist.replies.push((routed, matched));
        } else {
            let _ = routed.try_send(matched); // never waits: room for one
        }
    }

    /// The runtime wrote every record [`Broker::drain_persist`] gave it (as
    /// `persistence_fsync` says) and holds nothing: the host publishes whose records
    /// they were are answered now.
    pub fn persist_written(&mut self) {
        for (routed, matched) in self.persist.drained_replies.drain(..) {
            let _ = routed.try_send(matched); // never waits: room for one
        }
    }

    pub(super) fn persist_held(&self) -> bool {
        self.persist.held
    }

    /// Whether [`Broker::drain_persist`] has anything (the runtime must write and, with
    /// `persistence_fsync always`, sync it before writing any output).
    pub fn has_persist_events(&self) -> bool {
        !self.persist.events.is_empty()
            || !self.persist.replies.is_empty()
            || !self.persist.dirty.is_empty()
            || !self.persist.received_dirty.is_empty()
    }

    /// Moves this iteration's records into `out`: the events in order, then the current
    /// window of every session whose window changed.
    pub fn drain_persist(&mut self, out: &mut Vec<Record>) {
        out.append(&mut self.persist.events);
        let replies = std::mem::take(&mut self.persist.replies);
        self.persist.drained_replies.extend(replies);
        for from in std::mem::take(&mut self.persist.received_dirty) {
            out.push(Record::Delivered {
                boot: self.persist.boot,
                from,
                to: self.cross.me() as u8,
                upto: self.persist.received_seq[usize::from(from)],
            });
        }
        let mut dirty = std::mem::take(&mut self.persist.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let mut scratch = std::mem::take(&mut self.persist.scratch);
        for &(key, uid) in &dirty {
            let session = match self.sessions.get(key) {
                Some(s) if s.session.uid() == uid => &s.session,
                _ => continue,
            };
            if !self.persist.wants(session) {
                continue;
            }
            let done_below = session.persist_window(&mut scratch);
            out.push(Record::Window {
                client_id: session.client_id().clone(),
                done_below,
                inflight: scratch
                    .iter()
                    .map(|&(seq, packet_id, stage)| InflightEntry {
                        seq,
                        packet_id,
                        stage,
                    })
                    .collect(),
            });
        }
        dirty.clear();
        self.persist.dirty = dirty;
        self.persist.scratch = scratch;
    }

    pub(super) fn persist_retain(&mut self, publish: &Publish, source: Option<&RetainSource>) {
        if self.persist.enabled && !publish.topic.starts_with("$SYS") {
            if let Some(s) = source.filter(|_| !publish.payload.is_empty()) {
                self.persist.events.push(Record::RetainSource {
                    topic: publish.topic.clone(),
                    client_id: s.client_id.clone(),
                    username: s.username.clone(),
                    listener: u32::try_from(s.listener).unwrap_or(u32::MAX),
                });
            }
            self.persist.events.push(Record::Retain {
                publish: publish.clone(),
            });
        }
    }

    /// A session was attached to a connection (new or resumed).
    pub(super) fn persist_session_open(&mut self, key: usize) {
        let Some(slot) = self.sessions.get(key) else {
            return;
        };
        let s = &slot.session;
        if self.persist.wants(s) {
            self.persist.persisted.insert(s.client_id().clone());
            self.persist.events.push(Record::SessionOpen {
                client_id: s.client_id().clone(),
                version: s.version().level(),
                expiry: expiry_secs(s.expiry()),
            });
            // Who it is, for its ACL after a restart (the listener matters with
            // per_listener_settings, even for anonymous clients).
            let conn = slot.conn.and_then(|c| self.conns.get(c));
            self.persist.events.push(Record::SessionUser {
                client_id: s.client_id().clone(),
                listener: conn.map_or(0, |c| u32::try_from(c.listener).unwrap_or(u32::MAX)),
                username: slot.username.as_deref().cloned(),
                identity: conn.and_then(|c| c.identity.as_deref()).map(ByteStr::from),
            });
            self.persist.dirty.push((key, s.uid()));
        } else if self.persist.enabled && self.persist.persisted.remove(s.client_id()) {
            self.persist.events.push(Record::SessionGone {
                client_id: s.client_id().clone(),
            });
        }
    }

    /// The session lost its connection (after its will and expiry were decided).
    pub(super) fn persist_session_offline(&mut self, key: usize, now: Instant) {
        let Some(slot) = self.sessions.get(key) else {
            return;
        };
        let s = &slot.session;
        if !self.persist.wants(s) {
            return;
        }
        let client_id = s.client_id().clone();
        self.persist.persisted.insert(client_id.clone());
        self.persist.events.push(Record::SessionOffline {
            client_id: client_id.clone(),
            at: self.persist.unix_ms(now),
            expiry: expiry_secs(s.expiry()),
        });
        if let Some((at, will)) = s.pending_will.as_deref() {
            self.persist.events.push(Record::Will {
                client_id,
                at: self.persist.unix_ms(*at),
                will: will.clone(),
            });
        }
    }

    /// After the PUBREC of a QoS 2 PUBLISH from session `key`: records the packet id if
    /// the session now holds it until PUBREL (not when the PUBREC carried an error).
    pub(super) fn persist_inbound_qos2(&mut self, key: usize, qos: QoS, id: Option<PacketId>) {
        let (QoS::ExactlyOnce, Some(packet_id)) = (qos, id) else {
            return;
        };
        let Some(slot) = self.sessions.get(key) else {
            return;
        };
        if self.persist.wants(&slot.session) && slot.session.awaits_pubrel(packet_id) {
            self.persist.events.push(Record::InboundQos2 {
                client_id: slot.session.client_id().clone(),
                packet_id,
            });
        }
    }

    pub(super) fn persist_session_gone(&mut self, client_id: &ByteStr) {
        if self.persist.enabled && self.persist.persisted.remove(client_id) {
            self.persist.events.push(Record::SessionGone {
                client_id: client_id.clone(),
            });
        }
    }

    pub(super) fn persist_will_done(&mut self, key: usize) {
        if let Some(slot) = self.sessions.get(key) {
            if self.persist.wants(&slot.session) {
                self.persist.events.push(Record::WillDone {
                    client_id: slot.session.client_id().clone(),
                });
            }
        }
    }
}
