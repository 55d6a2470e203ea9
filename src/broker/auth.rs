//! The coordinator's MQTT 5 enhanced authentication path (4.12): a CONNECT that names an
//! Authentication Method runs that method's exchange (`auth::enhanced`) over AUTH packets
//! before it is accepted, and a connected client re-authenticates with AUTH 0x19. The
//! exchanges in progress are kept here, one per connection, tagged with the connection's
//! uid so that a reused slot never picks up a stale one.
//!
//! It never checks credentials itself (the method does) and never lets a connection past
//! CONNECT without the method's success; every refusal is a CONNACK (or, once connected,
//! a DISCONNECT) with the method's reason code and a log line.

use std::time::Instant;

use bytes::Bytes;

use crate::auth::enhanced::{self, AuthExchange, AuthStep};
use crate::codec::ReasonCode;
use crate::codec::{
    Auth, ByteStr, ConnAck, Connect, Packet, Properties, PropertyValues, ProtocolVersion,
};
use crate::session::{EnhancedAuth, ProtocolError};

use super::connections::ConnState;
use super::{Broker, ConnId};

/// An exchange waiting for the client's next AUTH.
#[derive(Debug)]
struct Pending {
    conn_uid: u64,
    method: ByteStr,
    next: Box<dyn AuthExchange>,
    /// The CONNECT it will let in; `None` for a re-authentication.
    connect: Option<Box<Connect>>,
}

/// The exchanges in progress on one shard.
#[derive(Debug, Default)]
pub(super) struct AuthFlows {
    pending: crate::hash::Map<ConnId, Pending>,
}

impl AuthFlows {
    fn take(&mut self, conn: ConnId, conn_uid: u64) -> Option<Pending> {
        let p = self.pending.remove(&conn)?;
        (p.conn_uid == conn_uid).then_some(p)
    }
}

fn auth_packet(reason: ReasonCode, method: &ByteStr, data: Option<Vec<u8>>) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Properties::from(PropertyValues {
            authentication_method: Some(method.clone()),
            authentication_data: data.map(Bytes::from),
            ..PropertyValues::default()
        }),
    })
}

impl Broker {
    /// A v5 CONNECT with an Authentication Method: runs its first step. Unknown methods
    /// get CONNACK 0x8C [MQTT-4.12.0-1].
    pub(super) fn begin_auth(&mut self, conn: ConnId, connect: Box<Connect>, now: Instant) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        let (listener, conn_uid, peer) = (c.listener, c.uid, c.peer);
        let method = connect
            .properties
            .authentication_method
            .clone()
            .unwrap_or_default();
        let Some(authenticator) = enhanced::authenticator(method.as_str()) else {
            crate::log_notice!(
                "Client {} from {peer} refused: unknown authentication method '{method}'.",
                connect.client_id
            );
            self.refuse_connect(conn, ReasonCode::BAD_AUTHENTICATION_METHOD);
            return;
        };
        let data = connect
            .properties
            .authentication_data
            .clone()
            .unwrap_or_default();
        let step = authenticator.start(self.security.domain(listener), &data);
        let pending = Pending {
            conn_uid,
            method,
            next: Box::new(Unused),
            connect: Some(connect),
        };
        self.auth_step(conn, pending, step, now);
    }

    /// An AUTH packet: the next step of this connection's exchange (before CONNACK or
    /// during a re-authentication), or the start of a re-authentication (0x19).
    pub(super) fn on_auth(&mut self, conn: ConnId, auth: &Auth, now: Instant) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        let (conn_uid, state, listener) = (c.uid, c.state, c.listener);
        let method = auth.properties.authentication_method.clone();
        let data = auth
            .properties
            .authentication_data
            .clone()
            .unwrap_or_default();
        if let Some(pending) = self.auth.take(conn, conn_uid) {
            // [MQTT-4.12.0-5]: the method stays the same; only 0x18 continues.
            if method.as_ref() != Some(&pending.method)
                || auth.reason != ReasonCode::CONTINUE_AUTHENTICATION
            {
                self.auth_protocol_error(conn, state, now);
                return;
            }
            let step = pending.next.step(&data);
            let pending = Pending {
                next: Box::new(Unused),
                ..pending
            };
            self.auth_step(conn, pending, step, now);
            return;
        }
        // Re-authentication [MQTT-4.12.1-1]: only by a client that authenticated with a
        // method, with that method, starting with 0x19.
        let ConnState::Active(key) = state else {
            self.auth_protocol_error(conn, state, now);
            return;
        };
        let current = self
            .sessions
            .get(key)
            .and_then(|s| s.session.auth_method().cloned());
        let (Some(current), Some(method)) = (current, method) else {
            self.auth_protocol_error(conn, state, now);
            return;
        };
        if method != current || auth.reason != ReasonCode::RE_AUTHENTICATE {
            self.auth_protocol_error(conn, state, now);
            return;
        }
        let Some(authenticator) = enhanced::authenticator(method.as_str()) else {
            self.auth_protocol_error(conn, state, now);
            return;
        };
        let step = authenticator.start(self.security.domain(listener), &data);
        let pending = Pending {
            conn_uid,
            method,
            next: Box::new(Unused),
            connect: None,
        };
        self.auth_step(conn, pending, step, now);
    }

    /// Carries out one step of `pending`'s exchange.
    fn auth_step(&mut self, conn: ConnId, mut pending: Pending, step: AuthStep, now: Instant) {
        match step {
            AuthStep::Continue { data, next } => {
                let packet = auth_packet(
                    ReasonCode::CONTINUE_AUTHENTICATION,
                    &pending.method,
                    Some(data),
                );
                self.send_auth(conn, packet, now);
                pending.next = next;
                self.auth.pending.insert(conn, pending);
            }
            AuthStep::Success { username, data } => match pending.connect {
                Some(mut connect) => {
                    connect.username = Some(ByteStr::from(username));
                    connect.password = None;
                    let auth = EnhancedAuth {
                        method: pending.method,
                        data: data.map(Bytes::from),
                    };
                    self.on_connect_authenticated(conn, connect, Some(auth), now);
                }
                None => self.reauthenticated(conn, &pending.method, &username, data, now),
            },
            AuthStep::Failure(reason) => {
                let who = pending
                    .connect
                    .as_ref()
                    .map(|c| c.client_id.to_string())
                    .unwrap_or_else(|| format!("on connection {conn}"));
                crate::log_notice!(
                    "Client {who} failed {} authentication: 0x{:02x}.",
                    pending.method,
                    reason.0
                );
                if pending.connect.is_some() {
                    self.refuse_connect(conn, reason);
                } else {
                    self.disconnect_with(conn, reason);
                    self.end_connection(conn, now, true);
                    self.close_conn(conn);
                }
            }
        }
    }

    /// A re-authentication succeeded: the same user goes on (AUTH 0x00); another user
    /// on this connection is refused, its ACLs were another's.
    fn reauthenticated(
        &mut self,
        conn: ConnId,
        method: &ByteStr,
        username: &str,
        data: Option<Vec<u8>>,
        now: Instant,
    ) {
        let Some(ConnState::Active(key)) = self.conns.get(conn).map(|c| c.state) else {
            return;
        };
        let same = self
            .sessions
            .get(key)
            .is_some_and(|s| s.username.as_deref().map(ByteStr::as_str) == Some(username));
        if !same {
            crate::log_notice!(
                "Client re-authenticated as another user on connection {conn}, disconnecting."
            );
            self.disconnect_with(conn, ReasonCode::NOT_AUTHORIZED);
            self.end_connection(conn, now, true);
            self.close_conn(conn);
            return;
        }
        self.send_auth(conn, auth_packet(ReasonCode::SUCCESS, method, data), now);
    }

    /// Sends an AUTH: through the session once connected (ordered with its output),
    /// straight to the connection before.
    fn send_auth(&mut self, conn: ConnId, packet: Packet, now: Instant) {
        match self.conns.get(conn).map(|c| c.state) {
            Some(ConnState::Active(key)) => {
                if let Some(slot) = self.sessions.get_mut(key) {
                    slot.session.send(packet);
                }
                self.flush_session(key, now);
            }
            Some(_) => self.send_packet(conn, &packet, ProtocolVersion::V5),
            None => {}
        }
    }

    /// An AUTH that does not fit the exchange (wrong method or reason, none expected):
    /// a Protocol Error, CONNACK 0x82 before CONNACK, DISCONNECT 0x82 after.
    fn auth_protocol_error(&mut self, conn: ConnId, state: ConnState, now: Instant) {
        if matches!(state, ConnState::Active(_)) {
            self.protocol_error(conn, &ProtocolError::Unexpected("AUTH"), now);
        } else {
            if let Some(c) = self.conns.get(conn) {
                crate::log_notice!(
                    "Client <unknown> from {} sent an unexpected AUTH, disconnecting.",
                    c.peer
                );
            }
            self.refuse_connect(conn, ReasonCode::PROTOCOL_ERROR);
        }
    }

    /// CONNACK with `reason` (v5: authentication only runs for v5) and close.
    fn refuse_connect(&mut self, conn: ConnId, reason: ReasonCode) {
        let ack = ConnAck {
            session_present: false,
            reason,
            properties: Properties::default(),
        };
        self.send_packet(conn, &Packet::ConnAck(ack), ProtocolVersion::V5);
        self.close_conn(conn);
    }
}

/// The placeholder of a `Pending` between two steps (its exchange was consumed).
#[derive(Debug)]
struct Unused;

impl AuthExchange for Unused {
    fn step(self: Box<Self>, _data: &[u8]) -> AuthStep {
        AuthStep::Failure(ReasonCode::UNSPECIFIED_ERROR)
    }
}
