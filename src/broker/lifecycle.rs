//! The coordinator's ends of things: closing a connection (with a v5 DISCONNECT when the
//! spec asks for one), a session losing its connection (its will now or after its delay,
//! its expiry), a session ending (its subscriptions leave the index, the other shards and
//! flow control are told), and a protocol violation. The session-local decisions are the
//! sessions part's; this applies them to timers, routing, cross-shard state and flow
//! control, in the order the spec needs.
//!
//! It never blocks, and every abnormal end has a log line.

use std::time::Instant;

use crate::codec::{
    ByteStr, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Will,
};
use crate::session::ProtocolError;

use super::connections::ConnState;
use super::timers::Timer;
use super::{Broker, ConnId};

impl Broker {
    /// Sends a v5 DISCONNECT with `reason` to an active v5 connection (nothing for 3.1.1).
    pub(super) fn disconnect_with(&mut self, conn: ConnId, reason: ReasonCode) {
        self.disconnect_explained(conn, reason, None);
    }

    /// [`Broker::disconnect_with`] with a Reason String saying why, left out when it
    /// would make the packet larger than the client's Maximum Packet Size [MQTT-3.1.2-25]
    /// (a DISCONNECT may carry one whatever Request Problem Information said
    /// [MQTT-3.1.2-29]).
    fn disconnect_explained(&mut self, conn: ConnId, reason: ReasonCode, why: Option<String>) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        let ConnState::Active(key) = c.state else {
            return;
        };
        if !c.version.is_v5() {
            return;
        }
        let max = self
            .sessions
            .get(key)
            .map_or(u32::MAX, |s| s.session.client_max_packet_size());
        let mut d = Disconnect {
            reason,
            properties: Properties::default(),
        };
        if let Some(why) = why {
            // Fixed header (1 + up to 3), reason (1), property length (up to 2), string
            // (3 + len): an upper bound of the packet's size.
            if 10 + why.len() <= max as usize {
                d.properties.reason_string = Some(ByteStr::from(why));
            }
        }
        self.send_packet(conn, &Packet::Disconnect(d), ProtocolVersion::V5);
    }

    /// The broker stops: every connected v5 client gets DISCONNECT 0x8B (Server shutting
    /// down) in its output, which the runtime flushes before it closes the sockets.
    pub fn on_shutdown(&mut self) {
        for conn in self.conns.ids() {
            self.disconnect_with(conn, ReasonCode::SERVER_SHUTTING_DOWN);
        }
    }

    /// Marks a connection for `poll_close` (idempotent).
    pub(super) fn close_conn(&mut self, conn: ConnId) {
        self.ingest_conn_end(conn);
        if self.conns.close(conn) {
            self.flow.on_conn_closed(conn);
        }
    }

    /// Detaches the session of an active connection (publishing the will when
    /// `publish_will`), starts its expiry, and closes the connection.
    pub(super) fn end_connection(&mut self, conn: ConnId, now: Instant, publish_will: bool) {
        self.cross.drop_held_subacks(conn);
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        let ConnState::Active(key) = c.state else {
            self.close_conn(conn);
            return;
        };
        self.close_conn(conn);
        self.stats.client_disconnected();
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        slot.conn = None;
        let will = slot.session.detach(publish_will);
        self.maybe_release(key);
        self.session_offline(key, will, now);
    }

    /// A session just lost its connection: the will now or after its delay, then the
    /// session ends or waits for its expiry.
    pub(super) fn session_offline(&mut self, key: usize, will: Option<Will>, now: Instant) {
        let Some(off) = self.sessions.offline(key, will, now) else {
            return;
        };
        let uid = off.uid;
        if let Some(will) = off.will_now {
            self.publish_will(will, now);
        }
        if let Some(at) = off.will_at {
            self.timers.push(at, Timer::WillDelay { key, uid });
        }
        if let Some(at) = off.expires_at {
            self.timers.push(at, Timer::SessionExpiry { key, uid });
        }
        if off.end {
            self.end_session(key, now);
        }
        self.persist_session_offline(key, now);
    }

    /// Removes a session: its subscriptions leave the index (a shared subscription's
    /// unacknowledged messages go to another member of its group), its client id is freed
    /// (and its home shard told), and the publishers paused on it read again.
    pub(super) fn end_session(&mut self, key: usize, now: Instant) {
        let Some((mut slot, owned_id)) = self.sessions.remove(key) else {
            return;
        };
        self.stats.clients_total = self.sessions.len() as u64;
        let stub = slot.is_stub();
        if !stub {
            // A stub's session lives on (moved to another shard).
            self.persist_session_gone(slot.session.client_id());
        }
        for filter in slot.session.take_subscriptions() {
            self.unindex_subscription(key, &filter, Some(&mut slot.session), now);
        }
        if owned_id && self.cross.is_multi() && !stub {
            self.cross
                .forget(slot.session.client_id().clone(), slot.claim);
        }
        self.release_paused(key);
    }

    /// Publishes a will as a normal message (the Will Delay Interval is not forwarded).
    pub(super) fn publish_will(&mut self, will: Will, now: Instant) {
        let mut properties = will.properties;
        if let Some(p) = properties.values_mut() {
            p.will_delay_interval = None;
        }
        let publish = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain && self.config.retain_available,
            topic: will.topic,
            // Placeholder id so the header template can be encoded from it directly.
            packet_id: (will.qos != QoS::AtMostOnce).then_some(1),
            properties,
            payload: will.payload,
        };
        self.route(publish, None, now);
    }

    /// A protocol violation by a connected client: v5 DISCONNECT with the reason code,
    /// a log line naming the client, will published, connection closed.
    pub(super) fn protocol_error(&mut self, conn: ConnId, err: &ProtocolError, now: Instant) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        let name = match c.state {
            ConnState::Active(key) => self
                .sessions
                .get(key)
                .map(|s| s.session.client_id().to_string()),
            _ => None,
        }
        .unwrap_or_else(|| format!("<unknown> from {}", c.peer));
        crate::log_notice!("Client {name} disconnected due to protocol error: {err}.");
        self.disconnect_explained(conn, err.reason_code(), Some(err.to_string()));
        self.end_connection(conn, now, true);
        self.close_conn(conn);
    }
}
