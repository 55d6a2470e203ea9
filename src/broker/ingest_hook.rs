//! The coordinator's path through the ingest handlers (`ingest.rs`): a client's PUBLISH
//! is offered to the matching handlers before it is acknowledged and routed; one that a
//! handler is busy with is held, its connection paused (flow control's rule 7) and a
//! retry timer armed; when the handlers take it, it is acknowledged and routed, and what
//! the connection sent behind it is handled in order before it is read again.
//!
//! It never acknowledges a message a matching handler has not accepted, and never drops
//! one at QoS 1/2.

use std::time::Instant;

use crate::codec::{ByteStr, ProtocolVersion, Publish};

use super::ingest::{HeldPublish, IngestEntry, Ingested, Next, Offer, Provenance};
use super::timers::Timer;
use super::{Broker, ConnId};

/// MQTT's protocol level of `v` (the CONNECT byte).
const fn protocol_level(v: ProtocolVersion) -> u8 {
    match v {
        ProtocolVersion::V31 => 3,
        ProtocolVersion::V311 => 4,
        ProtocolVersion::V5 => 5,
    }
}

impl Broker {
    /// Installs this shard's ingest handlers (before it serves clients).
    pub fn set_ingest(&mut self, handlers: Vec<IngestEntry>) {
        self.ingest.set_handlers(handlers);
    }

    /// Offers a client's `publish` (session `key`, connection `conn`) to the ingest
    /// handlers not in `accepted`. Returns it when every matching handler took it (ack
    /// and route it now); `None` when one was busy (it is held, the connection paused).
    pub(super) fn ingest_gate(
        &mut self,
        key: usize,
        conn: ConnId,
        publish: Publish,
        accepted: u64,
        now: Instant,
    ) -> Option<Publish> {
        if self.ingest.is_empty() {
            return Some(publish);
        }
        let (Some(slot), Some(c)) = (self.sessions.get(key), self.conns.get(conn)) else {
            return Some(publish);
        };
        let uid = c.uid;
        let msg = Ingested {
            publish: &publish,
            from: Provenance {
                client_id: slot.session.client_id().as_str(),
                username: slot.username.as_ref().map(ByteStr::as_str),
                listener: slot.listener,
                peer: c.peer,
                protocol_level: protocol_level(slot.session.version()),
            },
            shard: self.cross.me(),
        };
        let offer = self.ingest.offer(&msg, accepted);
        self.stats.publish_dropped += std::mem::take(&mut self.ingest.dropped);
        match offer {
            Offer::Accepted => Some(publish),
            Offer::Busy { accepted } => {
                let held = HeldPublish {
                    key,
                    publish,
                    accepted,
                };
                let delay = self.ingest.hold(conn, uid, held);
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
        if let Some(publish) = self.ingest_gate(key, conn, held.publish, held.accepted, now) {
            self.route_and_ack(key, conn, publish, now);
        }
        loop {
            match self.ingest.next_queued(conn, uid) {
                Next::Packet(packet) => self.handle_packet(conn, packet, now),
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
