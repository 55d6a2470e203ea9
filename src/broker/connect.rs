//! The coordinator's CONNECT path and packet dispatch: the CONNECT handshake (accept or
//! refuse, ask the home shard, client-id takeover, session present) and each later
//! packet handed to its session, with the resulting action (route, subscribe, ...)
//! carried out through the parts. Ends of connections and sessions are `lifecycle.rs`'s.
//!
//! It never blocks and never trusts the client: every refusal is a CONNACK or DISCONNECT
//! with the spec's code and a log line, then a close.

use crate::metrics::DropReason;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::ClientSecurity;

use crate::codec::{
    Ack, AckKind, ByteStr, ConnAck, Connect, DecodeError, Packet, Properties, ProtocolVersion,
    Publish, ReasonCode,
};
use crate::session::{self, Action, Session};

use super::access::{ConnectCheck, Login};
use super::cross::{MovedSession, PendingConnect};
use super::ingest_ack::PendingAck;
use super::options;
use super::trace;
use super::{Broker, ConnId, ConnState, Slot};

/// Mosquitto's protocol number in "New client connected ... (p2, c1, k60)".
const fn mosquitto_protocol(v: ProtocolVersion) -> u8 {
    match v {
        ProtocolVersion::V31 => 1,
        ProtocolVersion::V311 => 2,
        ProtocolVersion::V5 => 5,
    }
}

impl Broker {
    /// A PUBACK, PUBREC or PUBCOMP of session `key` in the read being handled: the
    /// session takes it at once ([`Session::acknowledge`]); the refill of its window and
    /// the write of its output wait for [`Self::finish_refill`].
    fn ack_in_read(&mut self, key: usize, ack: &Ack, now: Instant) {
        if self.refill.is_some_and(|k| k != key) {
            self.finish_refill(now);
        }
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        let outcome = slot.session.acknowledge(ack, now);
        self.persist.dirty(key, &slot.session);
        if outcome != session::AckOutcome::Unknown {
            self.refill = Some(key);
        }
    }

    /// Refills the window of the session whose acknowledgements this read handled,
    /// writes its output (the messages the window let out, PUBRELs) and lets its paused
    /// publishers go if it drained: what `Session::handle_packet` and the dispatch below
    /// do after each acknowledgement, once for all of them.
    pub(super) fn finish_refill(&mut self, now: Instant) {
        let Some(key) = self.refill.take() else {
            return;
        };
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        let expired = slot.session.refill(now);
        self.stats.dropped(DropReason::Expired, expired as u64);
        self.flush_session(key, now);
        self.maybe_release(key);
    }

    pub(super) fn handle_packet(&mut self, conn: ConnId, packet: Packet, now: Instant) {
        if self.ingest.holds(conn) {
            // Behind a message an ingest handler is busy with, in order.
            self.ingest.queue(conn, packet);
            return;
        }
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        match c.state {
            ConnState::AwaitConnect => match packet {
                Packet::Connect(connect) => self.on_connect(conn, connect, now),
                Packet::Auth(auth) if c.version.is_v5() => self.on_auth(conn, &auth, now),
                other => {
                    // [MQTT-3.1.0-1]: the first packet must be CONNECT.
                    crate::log_notice!(
                        "Client <unknown> from {} sent {} before CONNECT, disconnecting.",
                        c.peer,
                        other.name()
                    );
                    self.close_conn(conn);
                }
            },
            ConnState::Active(key) => {
                // PUBACK / PUBREC / PUBCOMP in a read: the window is refilled and the
                // session's output written once per read, not once per acknowledgement
                // (`finish_refill`, before any other packet and at the end of the read).
                let packet = match packet {
                    Packet::Ack(ack)
                        if ack.kind != AckKind::PubRel
                            && self.acks.gathers(conn)
                            && !trace::on() =>
                    {
                        return self.ack_in_read(key, &ack, now);
                    }
                    other => other,
                };
                if self.refill.is_some() {
                    self.finish_refill(now);
                }
                // PUBLISH is the hot case: checked in place and routed without passing
                // through `Session::handle_packet` (one move of a large value fewer).
                let packet = match packet {
                    Packet::Publish(mut publish) => {
                        if self.refuse_publish_qos(key, conn, publish.qos, now)
                            || self.refuse_unacknowledged(key, conn, publish.qos, now)
                        {
                            return; // max_qos, memory_limit
                        }
                        let Some(slot) = self.sessions.get_mut(key) else {
                            return;
                        };
                        match slot.session.accept_publish(now, &mut publish) {
                            Err(err) => self.protocol_error(conn, &err, now),
                            Ok(false) => self.flush_session(key, now),
                            Ok(true) => self.on_publish(key, conn, publish, now),
                        }
                        return;
                    }
                    Packet::Auth(auth) => {
                        self.on_auth(conn, &auth, now); // enhanced authentication
                        return;
                    }
                    other => other,
                };
                let Some(slot) = self.sessions.get_mut(key) else {
                    return;
                };
                if trace::on() {
                    trace::received(slot.session.client_id(), &packet);
                }
                let mut expired = 0;
                let is_ack = matches!(packet, Packet::Ack(_));
                let released =
                    super::persist_hook::PersistHook::pubrel_releases(&slot.session, &packet);
                let result = slot.session.handle_packet(now, packet, &mut expired);
                if is_ack {
                    self.persist.dirty(key, &slot.session);
                    self.persist.qos2_released(&slot.session, released);
                }
                self.stats.dropped(DropReason::Expired, expired as u64);
                match result {
                    Err(err) => self.protocol_error(conn, &err, now),
                    Ok(None) => {
                        self.flush_session(key, now);
                        self.maybe_release(key);
                    }
                    Ok(Some(Action::Route(publish))) => self.on_publish(key, conn, publish, now),
                    Ok(Some(Action::Subscribe(mut sub))) => {
                        self.bridge_subscription(conn, &mut sub);
                        self.on_subscribe(key, sub, now);
                    }
                    Ok(Some(Action::Unsubscribe(unsub))) => self.on_unsubscribe(key, unsub, now),
                    Ok(Some(Action::Disconnect { publish_will })) => {
                        if crate::log::connection_messages() {
                            crate::log_info!("Client {} disconnected.", slot.session.client_id());
                        }
                        self.end_connection(conn, now, publish_will);
                    }
                }
            }
            ConnState::AwaitLogin => {
                // Pipelined after CONNECT: handled once the host let the client in.
                let uid = c.uid;
                self.logins.queue(conn, uid, packet);
            }
            ConnState::AwaitHome => {
                // Pipelined after CONNECT: replayed once the session is in place.
                let claim = c.uid;
                self.cross.queue_pipelined(claim, packet);
            }
            ConnState::Closing => {}
        }
    }

    fn on_publish(&mut self, key: usize, conn: ConnId, publish: Publish, now: Instant) {
        self.stats
            .publish_in(publish.qos as u8, publish.payload.len());
        let Some(publish) = self.mount_publish(key, conn, publish, now) else {
            return; // mount_point
        };
        if !publish.properties.subscription_identifiers.is_empty() {
            // [MQTT-3.3.4-6]: only the server sends Subscription Identifiers.
            let err = session::ProtocolError::Unexpected("Subscription Identifier");
            self.protocol_error(conn, &err, now);
            return;
        }
        let (qos, packet_id) = (publish.qos, publish.packet_id);
        let limit = self.config.message_size_limit;
        let reason = if limit != 0 && publish.payload.len() > limit as usize {
            let id = self
                .sessions
                .get(key)
                .map(|s| s.session.client_id().to_string())
                .unwrap_or_default();
            crate::log_limited!(
                crate::log::Level::Notice,
                now,
                "Dropped too large PUBLISH from {id} (q{}, {} bytes).",
                qos as u8,
                publish.payload.len()
            );
            self.stats.dropped(DropReason::TooLarge, 1);
            ReasonCode::PACKET_TOO_LARGE
        } else if !self.may_write(key, conn, &publish.topic) {
            // ACL: v5 gets 0x87 on PUBACK/PUBREC; 3.1.1 is acknowledged and dropped, as
            // Mosquitto does.
            crate::log_limited!(
                crate::log::Level::Debug,
                now,
                "Denied PUBLISH from {} (q{}, '{}', ... ({} bytes)).",
                self.sessions
                    .get(key)
                    .map(|s| s.session.client_id().clone())
                    .unwrap_or_default(),
                qos as u8,
                publish.topic,
                publish.payload.len()
            );
            self.stats.dropped(DropReason::Acl, 1);
            ReasonCode::NOT_AUTHORIZED
        } else if self.over_memory_limit(now) {
            if !self.refuse_for_memory(key, conn, qos, now) {
                return; // disconnected unacknowledged
            }
            ReasonCode::QUOTA_EXCEEDED
        } else {
            if trace::on() {
                self.trace_received_publish(key, &publish);
            }
            self.memory
                .note_accepted(publish.topic.len() + publish.payload.len());
            // Ingest handlers first: a busy one holds the message, unacknowledged.
            let retry = super::ingest_hook::Retry::default();
            if let Some((publish, seq)) = self.ingest_gate(key, conn, publish, retry, now) {
                self.route_and_ack(key, conn, publish, seq, now);
            }
            return;
        };
        let ack = PendingAck {
            key,
            qos,
            packet_id,
            reason,
        };
        self.ack_in_order(conn, None, ack, now);
    }

    /// Routes a client's PUBLISH and acknowledges it (v5: 0x10 when nobody matched), in
    /// order behind acknowledgements that wait for ingest ack tokens (`seq`: its place).
    pub(super) fn route_and_ack(
        &mut self,
        key: usize,
        conn: ConnId,
        publish: Publish,
        seq: Option<u64>,
        now: Instant,
    ) {
        let (qos, packet_id) = (publish.qos, publish.packet_id);
        let reason = if self.route(publish, Some((conn, key)), now) {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        };
        let ack = PendingAck {
            key,
            qos,
            packet_id,
            reason,
        };
        self.ack_in_order(conn, seq, ack, now);
    }

    /// Sends the PUBACK / PUBREC of a routed (or refused) PUBLISH of session `key`.
    pub(super) fn acknowledge_now(&mut self, ack: PendingAck, now: Instant) {
        let PendingAck {
            key,
            qos,
            packet_id,
            reason,
        } = ack;
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        let ack = slot.session.publish_ack(qos, packet_id, reason);
        let queued = slot.session.has_transmits();
        let conn = slot.conn;
        self.persist_inbound_qos2(key, qos, packet_id); // persistence hook
        match (ack, conn) {
            // The common case: written at once, not through the session's queue (which
            // an idle publisher would allocate and free again for every message).
            (Some(ack), Some(conn)) if !queued => self.write_transmit(key, conn, ack, now),
            (Some(ack), _) => {
                if let Some(slot) = self.sessions.get_mut(key) {
                    slot.session.queue_transmit(ack);
                }
                self.flush_session(key, now);
            }
            (None, _) => self.flush_session(key, now),
        }
    }

    /// The trace line of a PUBLISH that is routed.
    fn trace_received_publish(&self, key: usize, publish: &Publish) {
        if let Some(slot) = self.sessions.get(key) {
            trace::PublishLine::of(publish).received(slot.session.client_id());
        }
    }

    /// ACL write check for session `key` (without an ACL: anything but `$SYS`), then the
    /// host's access hook.
    fn may_write(&mut self, key: usize, conn: ConnId, topic: &ByteStr) -> bool {
        let Some(slot) = self.sessions.get_mut(key) else {
            return false;
        };
        let files = slot.security.as_mut().map_or_else(
            || crate::auth::may_write_without_acl(topic),
            |s| s.may_write(topic),
        );
        if !files || !self.access.is_set() {
            return files; // no connection lookup per PUBLISH without a host hook
        }
        let peer = self.conns.get(conn).map(|c| c.peer);
        self.access.may_publish(slot, peer, topic.as_str())
    }

    fn on_connect(&mut self, conn: ConnId, connect: Box<Connect>, now: Instant) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        c.version = connect.protocol;
        if connect.protocol.is_v5() && connect.properties.authentication_method.is_some() {
            self.begin_auth(conn, connect, now); // auth.rs; back in the next function
            return;
        }
        self.on_connect_authenticated(conn, connect, None, now);
    }

    /// CONNECT, once enhanced authentication (if the client asked for it) succeeded:
    /// `auth` is its outcome, and `connect.username` the user it established.
    pub(super) fn on_connect_authenticated(
        &mut self,
        conn: ConnId,
        mut connect: Box<Connect>,
        auth: Option<session::EnhancedAuth>,
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let (listener, conn_uid, peer) = (c.listener, c.uid, c.peer);
        // --- security hook: TLS identity as username, then password / ACL checks.
        let identity = c.identity.clone();
        let use_identity = self.config.uses_identity_as_username(listener);
        if use_identity {
            // Without a verified certificate identity the client is anonymous.
            connect.username = identity.clone().map(|i| ByteStr::from(String::from(i)));
            connect.password = None;
        }
        let security = Arc::clone(&self.security);
        let domain = security.domain(listener);
        let auto = self.uid();
        if options::will_qos_refused(&self.config, listener, &connect) {
            return self.refuse_connack(conn, &connect, ReasonCode::QOS_NOT_SUPPORTED);
        }
        if !super::mount::mount_will(&self.config, listener, &mut connect) {
            return self.refuse_connack(conn, &connect, ReasonCode::TOPIC_NAME_INVALID);
        }
        let verified = use_identity || auth.is_some();
        let verdict = session::accept(&connect, &self.config, domain, verified, || auto)
            .and_then(|a| {
                let username = connect.username.as_ref();
                options::username_as_client_id(&self.config, listener, username, a)
            })
            .and_then(|a| {
                let will_ok = connect.will.as_ref().map_or(true, |w| {
                    let username = connect.username.as_ref().map(ByteStr::as_str);
                    ClientSecurity::new(&security, listener, username, a.client_id.as_str())
                        .may_write(&w.topic)
                });
                if will_ok {
                    Ok(a)
                } else {
                    Err(ReasonCode::NOT_AUTHORIZED)
                }
            });
        // The host's hook decides after the files (`access.rs`); it may defer
        // (`login.rs`, back in `admit`).
        let verdict = verdict.and_then(|a| {
            let check = ConnectCheck {
                conn,
                conn_uid,
                client_id: &a.client_id,
                username: connect.username.as_ref(),
                password: connect.password.as_deref(),
                certificate: identity.as_deref(),
                clean_start: connect.clean_start,
                listener,
                peer,
                protocol_level: super::ingest_hook::protocol_level(connect.protocol),
                will_topic: connect.will.as_ref().map(|w| &w.topic),
            };
            self.access.authenticate(&check).map(|login| (a, login))
        });
        let (accepted, login) = match verdict {
            Ok((a, login)) => (session::Accepted { auth, ..a }, login),
            Err(reason) => return self.refuse_connack(conn, &connect, reason),
        };
        if login == Login::Deferred {
            self.defer_login(conn, conn_uid, connect, accepted, identity, now);
            return;
        }
        self.admit(conn, connect, accepted, Vec::new(), now);
    }

    /// An authenticated CONNECT goes on: to its client id's home shard first (N > 1),
    /// then [`Broker::finish_connect`]; `queued`: packets the client pipelined after
    /// it, handled after it.
    pub(super) fn admit(
        &mut self,
        conn: ConnId,
        connect: Box<Connect>,
        accepted: session::Accepted,
        queued: Vec<Packet>,
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let conn_uid = c.uid;
        if self.cross.is_multi() {
            // The client id's home shard knows where its session lives [MQTT-3.1.4-3].
            c.state = ConnState::AwaitHome;
            let clean_start = connect.clean_start;
            let pending = PendingConnect {
                conn,
                connect,
                accepted,
                queued,
            };
            self.cross.claim(conn_uid, clean_start, Box::new(pending));
            return;
        }
        self.finish_connect(conn, connect, &accepted, None, now);
        for packet in queued {
            self.handle_packet(conn, packet, now);
        }
    }

    /// Refuses a CONNECT with `reason` (v5's code; 3.1.1 gets its CONNACK return code,
    /// or no CONNACK at all for a will QoS above `max_qos`, as Mosquitto), then closes.
    pub(super) fn refuse_connack(&mut self, conn: ConnId, connect: &Connect, reason: ReasonCode) {
        let Some(peer) = self.conns.get(conn).map(|c| c.peer) else {
            return;
        };
        let version = connect.protocol;
        let code = session::connack_code(version, reason);
        if version.is_v5() || reason != ReasonCode::QOS_NOT_SUPPORTED {
            let ack = ConnAck {
                session_present: false,
                reason: code,
                properties: Properties::default(),
            };
            self.send_packet(conn, &Packet::ConnAck(ack), version);
            let not_authorised = matches!(
                reason,
                ReasonCode::NOT_AUTHORIZED | ReasonCode::BAD_USER_NAME_OR_PASSWORD
            );
            if not_authorised {
                // Mosquitto 2's line: the client has no id until it is authorised.
                if crate::log::connection_messages() {
                    crate::log_notice!("Client <unknown> disconnected, not authorised.");
                }
            } else {
                crate::log_notice!(
                    "Client {} from {peer} refused: CONNACK 0x{:02x}.",
                    connect.client_id,
                    code.0
                );
            }
        } else {
            crate::log_notice!(
                "Client {} from {peer} refused: will QoS above max_qos.",
                connect.client_id
            );
        }
        self.close_conn(conn);
    }

    /// Completes an accepted CONNECT: takes over a local session of the same client id,
    /// resumes it (or `moved`, a session that came from another shard) or starts a new
    /// one, and sends CONNACK.
    pub(super) fn finish_connect(
        &mut self,
        conn: ConnId,
        mut connect: Box<Connect>,
        accepted: &session::Accepted,
        moved: Option<MovedSession>,
        now: Instant,
    ) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        let (peer, conn_uid, version) = (c.peer, c.uid, connect.protocol);
        let (listener, security) = (c.listener, Arc::clone(&self.security));
        let client_id = accepted.client_id.clone(); // compact since session::accept

        // Takeover: the old connection of this client id is closed [MQTT-3.1.4-3].
        if let Some(old) = self.sessions.live_conn_of(&client_id) {
            crate::log_notice!("Client {client_id} already connected, closing old connection.");
            self.disconnect_with(old, ReasonCode::SESSION_TAKEN_OVER);
            self.end_connection(old, now, true);
        }
        if let Some(moved) = moved {
            if !connect.clean_start {
                self.install(moved, conn_uid, now);
            }
        }
        let mut session_present = false;
        let existing = self.sessions.live_key_of(&client_id);
        let key = match existing {
            // [MQTT-3.1.2-4]: resume the session unless clean start.
            Some(key) if !connect.clean_start => {
                session_present = true;
                key
            }
            other => {
                if let Some(key) = other {
                    self.end_session(key, now); // [MQTT-3.1.2-6]
                }
                let uid = self.uid();
                let session = Session::new(client_id.clone(), uid, Arc::clone(&self.limits));
                if let Some(stub) = self.sessions.key_of(&client_id) {
                    self.end_session(stub, now);
                }
                self.sessions.add(Slot::new(session))
            }
        };
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        let will = connect.will.take();
        let will_line = trace::on().then(|| trace::WillLine::of(will.as_ref()));
        slot.session.attach(now, &connect, accepted, will);
        slot.conn = Some(conn);
        slot.claim = conn_uid;
        slot.listener = listener;
        slot.username = connect.username.as_ref().map(|u| Box::new(u.compact()));
        slot.security = security.has_acl().then(|| {
            Box::new(ClientSecurity::new(
                &security,
                listener,
                connect.username.as_ref().map(ByteStr::as_str),
                client_id.as_str(),
            ))
        });
        let properties = if version.is_v5() {
            let mut p = session::connack_properties(&self.config, accepted);
            options::announce_max_qos(&self.config, listener, &mut p);
            p
        } else {
            Properties::default()
        };
        // [MQTT-3.2.2-1] [MQTT-3.2.2-2]: session present only when resumed. MQTT 3.1
        // (MQIsdp) has no such flag: its first CONNACK byte is reserved, always 0.
        slot.session.send(Packet::ConnAck(ConnAck {
            session_present: session_present && version != ProtocolVersion::V31,
            reason: ReasonCode::SUCCESS,
            properties,
        }));
        let expired = slot.session.resume(now);
        self.stats.dropped(DropReason::Expired, expired as u64);
        let keep_alive = slot.session.poll_timeout();
        if let Some(c) = self.conns.get_mut(conn) {
            c.state = ConnState::Active(key);
        }
        self.arm_keep_alive(conn, conn_uid, keep_alive, now);
        self.stats.client_connected();
        self.stats.clients_total = self.sessions.len() as u64;
        let user = connect
            .username
            .as_ref()
            .map(|u| format!(", u'{u}'"))
            .unwrap_or_default();
        if crate::log::connection_messages() {
            crate::log_info!(
                "New client connected from {} as {client_id} (p{}, c{}, k{}{user}).",
                peer,
                mosquitto_protocol(version),
                u8::from(connect.clean_start),
                accepted.keep_alive
            );
        }
        if let Some(line) = will_line {
            line.write();
        }
        self.persist_session_open(key);
        self.flush_session(key, now);
    }

    /// A first frame that does not decode. An unsupported protocol level gets its CONNACK
    /// (0x01 in 3.1.1 framing, 0x84 for 5 and later) [MQTT-3.1.2-2]; anything else closes.
    pub(super) fn refuse_undecodable_connect(&mut self, conn: ConnId, err: &DecodeError) {
        let peer = self.conns.get(conn).map(|c| c.peer);
        if let DecodeError::UnsupportedProtocolVersion { level } = *err {
            let (version, reason) = if level >= 5 {
                (
                    ProtocolVersion::V5,
                    ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                )
            } else {
                (
                    ProtocolVersion::V311,
                    ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION,
                )
            };
            let ack = ConnAck {
                session_present: false,
                reason,
                properties: Properties::default(),
            };
            self.send_packet(conn, &Packet::ConnAck(ack), version);
        }
        if let Some(peer) = peer {
            crate::log_notice!(
                "Client <unknown> from {peer} sent a bad CONNECT: {err}, disconnecting."
            );
        }
        self.close_conn(conn);
    }
}
