//! The coordinator's path through the ingest handlers (`ingest.rs`): a client's PUBLISH
//! is offered to the matching handlers before it is acknowledged and routed; one that a
//! handler is busy with is held, its connection paused (flow control's rule 7) and a
//! retry timer armed; when the handlers take it, it is acknowledged and routed, and what
//! the connection sent behind it is handled in order before it is read again.
//!
//! It never acknowledges a message a matching handler has not accepted, and never drops
//! one at QoS 1/2.

use std::time::Instant;

use std::cell::Cell;

use crate::codec::{ProtocolVersion, Publish, ReasonCode};

use super::embed::Source;
use super::ingest::{Defer, HeldPublish, IngestEntry, Ingested, Next, Offer, Provenance};
use super::ingest_ack::{AckSink, Outcome, PendingAck, TokenOutcome};
use super::sessions::Slot;
use super::timers::Timer;
use super::{Broker, ConnId};

/// MQTT's protocol level of `v` (the CONNECT byte).
pub(super) const fn protocol_level(v: ProtocolVersion) -> u8 {
    match v {
        ProtocolVersion::V31 => 3,
        ProtocolVersion::V311 => 4,
        ProtocolVersion::V5 => 5,
    }
}

/// The client of session `slot`, connected from `peer`.
pub(super) fn provenance(slot: &Slot, peer: std::net::SocketAddr) -> Provenance<'_> {
    Provenance {
        client_id: slot.session.client_id(),
        username: slot.username.as_deref(),
        listener: slot.listener,
        peer,
        protocol_level: protocol_level(slot.session.version()),
    }
}

impl Broker {
    /// Who published a message `route` delivers to the in-process subscribers: the
    /// client of `origin` (connection, session), else the host or the broker.
    pub(super) fn source_of(&self, origin: Option<(ConnId, usize)>) -> Source {
        let client = origin.and_then(|(conn, key)| {
            let (slot, c) = (self.sessions.get(key)?, self.conns.get(conn)?);
            Some(Source::Client(provenance(slot, c.peer).to_origin()))
        });
        match client {
            Some(source) => source,
            None if self.injecting => Source::Host,
            None => Source::Broker,
        }
    }

    /// Installs this shard's ingest handlers (before it serves clients); their ack
    /// tokens report through `sink`.
    pub fn set_ingest(&mut self, handlers: Vec<IngestEntry>, sink: Option<AckSink>) {
        self.ingest.set_handlers(handlers);
        self.ingest_sink = sink;
    }

    /// Offers a client's `publish` (session `key`, connection `conn`) to the ingest
    /// handlers not in `retry.accepted`. Returns it when every matching handler took it
    /// (route it now), with its place in the connection's acknowledgement order when
    /// its acknowledgement must wait (ack tokens); `None` when one was busy (it is held,
    /// the connection paused).
    pub(super) fn ingest_gate(
        &mut self,
        key: usize,
        conn: ConnId,
        publish: Publish,
        retry: Retry,
        now: Instant,
    ) -> Option<(Publish, Option<u64>)> {
        if self.ingest.is_empty() {
            return Some((publish, retry.seq));
        }
        let (Some(slot), Some(c)) = (self.sessions.get(key), self.conns.get(conn)) else {
            return Some((publish, retry.seq));
        };
        let uid = c.uid;
        let defer = Defer {
            sink: self.ingest_sink.as_ref(),
            conn,
            uid,
            seq: retry
                .seq
                .unwrap_or_else(|| self.ingest.awaiting.next_seq(conn, uid)),
            issued: Cell::new(0),
        };
        let msg = Ingested {
            publish: &publish,
            from: provenance(slot, c.peer),
            shard: self.cross.me(),
            defer: &defer,
        };
        let offer = self.ingest.offer(&msg, retry.accepted);
        let issued = defer.issued.get();
        self.stats.publish_dropped += std::mem::take(&mut self.ingest.dropped);
        let mut seq = retry.seq;
        if issued > 0 {
            seq = Some(self.ingest.awaiting.reserve(conn, uid, seq, issued));
        }
        match offer {
            Offer::Accepted => Some((publish, seq)),
            Offer::Busy { accepted } => {
                let held = HeldPublish {
                    key,
                    publish,
                    accepted,
                    seq,
                };
                let delay = self.ingest.hold(conn, uid, &held);
                self.flow.pause_ingest(conn, uid);
                self.timers
                    .push(now + delay, Timer::IngestRetry { conn, uid });
                None
            }
        }
    }

    /// The retry timer of connection `conn` (uid): offers its held message again; once
    /// taken, acknowledges and routes it and handles what the connection sent after it.
    pub(super) fn retry_ingest(&mut self, conn: ConnId, uid: u64, now: Instant) {
        let Some(held) = self.ingest.take_publish(conn, uid) else {
            return;
        };
        let key = held.key;
        let retry = Retry {
            accepted: held.accepted,
            seq: held.seq,
        };
        if let Some((publish, seq)) = self.ingest_gate(key, conn, held.publish, retry, now) {
            self.route_and_ack(key, conn, publish, seq, now);
        }
        loop {
            match self.ingest.next_queued(conn, uid) {
                Next::Packet(packet) => self.handle_packet(conn, *packet, now),
                Next::Held | Next::Gone => return,
                Next::Released => {
                    if self.flow.release_ingest(conn, uid) {
                        self.conns.wake(conn, uid);
                    }
                    return;
                }
            }
        }
    }

    /// Sends the acknowledgement of a routed (or refused) message of `conn` now, or
    /// queues it behind those that wait for ack tokens (`seq`: its reserved place).
    pub(super) fn ack_in_order(
        &mut self,
        conn: ConnId,
        seq: Option<u64>,
        ack: PendingAck,
        now: Instant,
    ) {
        if seq.is_none() && !self.ingest.awaiting.waits(conn) {
            // No ack token in play (always so without ingest handlers): nothing to order.
            return self.acknowledge_now(ack, now);
        }
        let uid = self.conns.get(conn).map(|c| c.uid);
        let seq = match (uid, seq) {
            (Some(_), Some(seq)) => seq,
            (Some(uid), None) if self.ingest.awaiting.waits(conn) => {
                self.ingest.awaiting.reserve(conn, uid, None, 0)
            }
            _ => return self.acknowledge_now(ack, now),
        };
        let uid = uid.unwrap_or_default();
        for ready in self.ingest.awaiting.routed(conn, uid, seq, ack) {
            self.acknowledge_now(ready, now);
        }
    }

    /// An ack token came back (acked, or dropped: then the device is disconnected and
    /// sends its unacknowledged messages again).
    pub fn on_ingest_token(&mut self, token: TokenOutcome, now: Instant) {
        match self.ingest.awaiting.on_token(token) {
            Outcome::Wait => {}
            Outcome::Send(ready) => {
                for ack in ready {
                    self.acknowledge_now(ack, now);
                }
            }
            Outcome::Close => {
                let conn = token.conn;
                crate::log_notice!(
                    "An ingest ack token was dropped without ack, disconnecting connection {conn}."
                );
                self.disconnect_with(conn, ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR);
                self.end_connection(conn, now, true);
            }
        }
    }

    /// Connection `conn` ends: what it held goes (never acknowledged: the device sends
    /// it again), and a held QoS 2 id is forgotten so that the resend is delivered.
    pub(super) fn ingest_conn_end(&mut self, conn: ConnId) {
        if let Some((key, id)) = self.ingest.on_conn_end(conn) {
            if let Some(slot) = self.sessions.get_mut(key) {
                slot.session.forget_inbound_qos2(id);
            }
        }
    }
}

/// What an earlier offer of a held message left: the handlers that took it, its place
/// in the acknowledgement order.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Retry {
    pub(super) accepted: u64,
    pub(super) seq: Option<u64>,
}
