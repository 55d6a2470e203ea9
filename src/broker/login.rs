//! Logins the host's access hook deferred ([`super::access::ConnectInfo::defer`]): the
//! CONNECT waits here, its connection unread (`ConnState::AwaitLogin`) with what the
//! client pipelined after it kept, until the ticket's answer comes back as a command
//! ([`Broker::on_login_answer`]) or `connect_timeout` passes (then CONNACK "server
//! unavailable"). An answer for a connection that left, or that came too late, finds
//! nothing and is ignored; every entry leaves by its answer or its timer, so the table
//! never holds more than one CONNECT per connection. It never decides a login itself
//! (the host does, through the hook) and never reads a socket.

use std::time::Instant;

use crate::codec::{Connect, Packet, ReasonCode};
use crate::session;

use super::access::{ConnectCheck, LoginAnswer};
use super::timers::Timer;
use super::{Broker, ConnId, ConnState};

/// A CONNECT waiting for the host's answer.
#[derive(Debug)]
struct Deferred {
    uid: u64,
    connect: Box<Connect>,
    accepted: session::Accepted,
    identity: Option<Box<str>>,
    queued: Vec<Packet>,
    deadline: Instant,
}

/// The deferred logins of one shard.
#[derive(Debug, Default)]
pub(super) struct Logins {
    pending: crate::hash::Map<ConnId, Deferred>,
}

impl Logins {
    fn take(&mut self, conn: ConnId, uid: u64) -> Option<Deferred> {
        match self.pending.get(&conn) {
            Some(d) if d.uid == uid => self.pending.remove(&conn),
            _ => None,
        }
    }

    /// A packet the client pipelined after its deferred CONNECT (at most a read's worth:
    /// the connection is not read meanwhile).
    pub(super) fn queue(&mut self, conn: ConnId, uid: u64, packet: Packet) {
        if let Some(d) = self.pending.get_mut(&conn).filter(|d| d.uid == uid) {
            d.queued.push(packet);
        }
    }
}

impl Broker {
    /// The hook took a ticket: the CONNECT waits for its answer.
    pub(super) fn defer_login(
        &mut self,
        conn: ConnId,
        uid: u64,
        connect: Box<Connect>,
        accepted: session::Accepted,
        identity: Option<Box<str>>,
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        c.state = ConnState::AwaitLogin;
        let deadline = now + self.config.connect_timeout;
        self.logins.pending.insert(
            conn,
            Deferred {
                uid,
                connect,
                accepted,
                identity,
                queued: Vec::new(),
                deadline,
            },
        );
        self.timers.push(deadline, Timer::Connect { conn, uid });
    }

    /// A ticket's answer (a command from the runtime).
    pub fn on_login_answer(&mut self, answer: LoginAnswer, now: Instant) {
        let LoginAnswer {
            conn,
            uid,
            decision,
        } = answer;
        let Some(d) = self.logins.take(conn, uid) else {
            return; // the client left, or timed out
        };
        let Some(c) = self
            .conns
            .get(conn)
            .filter(|c| c.uid == uid && c.state == ConnState::AwaitLogin)
        else {
            return;
        };
        let (listener, peer) = (c.listener, c.peer);
        if let Some(reason) = decision.refusal() {
            return self.refuse_connack(conn, &d.connect, reason);
        }
        let check = ConnectCheck {
            conn,
            conn_uid: uid,
            client_id: &d.accepted.client_id,
            username: d.connect.username.as_ref(),
            password: d.connect.password.as_deref(),
            certificate: d.identity.as_deref(),
            clean_start: d.connect.clean_start,
            listener,
            peer,
            protocol_level: super::ingest_hook::protocol_level(d.connect.protocol),
            will_topic: d.connect.will.as_ref().map(|w| &w.topic),
        };
        if let Err(reason) = self.access.authorize_will(&check) {
            return self.refuse_connack(conn, &d.connect, reason);
        }
        self.admit(conn, d.connect, d.accepted, d.queued, now);
    }

    /// The connect timer of `conn` fired: a deferred login still unanswered at its
    /// deadline is refused ("server unavailable"). Returns whether the timer was the
    /// deferred login's (then nothing else is checked).
    pub(super) fn expire_login(&mut self, conn: ConnId, uid: u64, now: Instant) -> bool {
        let due = self
            .logins
            .pending
            .get(&conn)
            .is_some_and(|d| d.uid == uid && now >= d.deadline);
        if !due {
            return self
                .conns
                .get(conn)
                .is_some_and(|c| c.uid == uid && c.state == ConnState::AwaitLogin);
        }
        let Some(d) = self.logins.take(conn, uid) else {
            return false;
        };
        let live = self
            .conns
            .get(conn)
            .filter(|c| c.uid == uid && c.state == ConnState::AwaitLogin)
            .map(|c| c.peer);
        if let Some(peer) = live {
            crate::log_notice!(
                "Client {} from {peer}: the host did not answer its login within \
                 connect_timeout, refused as unavailable.",
                d.accepted.client_id
            );
            self.refuse_connack(conn, &d.connect, ReasonCode::SERVER_UNAVAILABLE);
        }
        true
    }
}
