//! What the HTTP console asks of one shard's broker: its connections, subscriptions and
//! retained messages as rows ([`crate::console::board`]), the inflight and queued totals
//! for `/metrics`, and an administrator's disconnect. The runtime calls these between
//! iterations (rows once a second, never per message) and pins the result on the board.
//!
//! It only reads the parts through their query methods, and the disconnect takes the
//! same path as a keep-alive cut (v5 DISCONNECT 0x98 Administrative action, will
//! published); it never touches a socket and never blocks.

use std::time::Instant;

use crate::codec::{QoS, ReasonCode};
use crate::console::board::{ConnRow, RetainedRow, SubRow};
use crate::topic::TopicFilter;

use super::connections::ConnState;
use super::Broker;

/// Bytes of a retained payload shown in its row.
const PREVIEW: usize = 64;

pub(crate) fn qos_level(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

impl Broker {
    /// Up to `max` connected clients and up to `max` subscriptions of this shard's
    /// sessions (connected or not).
    pub fn console_rows(&self, max: usize) -> (Vec<ConnRow>, Vec<SubRow>) {
        let shard = self.cross.me();
        let mut conns = Vec::new();
        let mut subs = Vec::new();
        for (_, slot) in self.sessions.iter() {
            if slot.is_stub() {
                continue;
            }
            let s = &slot.session;
            let client_id = s.client_id().as_str();
            if let Some(c) = slot.conn.and_then(|conn| self.conns.get(conn)) {
                if conns.len() < max && matches!(c.state, ConnState::Active(_)) {
                    conns.push(ConnRow {
                        client_id: client_id.to_string(),
                        username: slot.username.as_ref().map(|u| u.as_str().to_string()),
                        peer: c.peer,
                        protocol: s.version().level(),
                        keep_alive: s.keep_alive_secs(),
                        inflight: s.inflight_len(),
                        queued: s.queued_len(),
                        bytes_out: c.written(),
                        listener: c.listener,
                        shard,
                    });
                }
            }
            for (filter, sub) in s.subscriptions() {
                if subs.len() >= max {
                    break;
                }
                subs.push(SubRow {
                    client_id: client_id.to_string(),
                    filter: filter.as_str().to_string(),
                    qos: qos_level(sub.options.qos),
                    online: s.is_connected(),
                    shard,
                });
            }
        }
        (conns, subs)
    }

    /// Messages inflight and queued over every session of this shard.
    pub fn console_totals(&self) -> (u64, u64) {
        let (mut inflight, mut queued) = (0u64, 0u64);
        for (_, slot) in self.sessions.iter() {
            inflight += slot.session.inflight_len() as u64;
            queued += slot.session.queued_len() as u64;
        }
        (inflight, queued)
    }

    /// Payload bytes of this shard's retained store (a replica of the whole store).
    pub fn retained_payload_bytes(&self) -> u64 {
        self.routing.retained().payload_bytes() as u64
    }

    /// Up to `max` retained messages (topics that do not start with `$`).
    pub fn retained_rows(&self, max: usize) -> Vec<RetainedRow> {
        let mut rows = Vec::new();
        let Ok(all) = TopicFilter::parse("#") else {
            return rows;
        };
        self.routing.retained().for_each_match(&all, |m| {
            if rows.len() < max {
                let cut = &m.payload[..m.payload.len().min(PREVIEW)];
                rows.push(RetainedRow {
                    topic: m.topic.as_str().to_string(),
                    qos: qos_level(m.qos),
                    bytes: m.payload.len(),
                    preview: String::from_utf8_lossy(cut).into_owned(),
                });
            }
        });
        rows
    }

    /// An administrator disconnects `client_id` if its connection is on this shard: a v5
    /// client gets DISCONNECT 0x98 (Administrative action), its will is published, a
    /// persistent session stays. Returns whether the client was here.
    pub fn admin_disconnect(&mut self, client_id: &str, now: Instant) -> bool {
        let Some(conn) = self.sessions.live_conn_of(&client_id.into()) else {
            return false;
        };
        crate::log_notice!("Client {client_id} disconnected by an administrator (HTTP console).");
        self.disconnect_with(conn, ReasonCode::ADMINISTRATIVE_ACTION);
        self.end_connection(conn, now, true);
        true
    }
}
