//! The packet trace of `log_type debug` / `all` (and `-v`), line for line as Mosquitto 2
//! prints it: "Received PUBLISH from c (d0, q1, r0, m3, 'a/b', ... (5 bytes))",
//! "Sending CONNACK to c (0, 0)", SUBSCRIBE with one "\tFILTER (QoS n)" line a filter,
//! PUBACK / PUBREC / PUBREL / PUBCOMP, PINGREQ / PINGRESP, DISCONNECT, and the will of a
//! new client. The formats are Mosquitto's `log__printf` calls in its `handle_*.c` and
//! `send_*.c`.
//!
//! Callers ask [`on`] first (one relaxed atomic load, the whole cost when the trace is
//! off) and only then look up names or format anything. Nothing here changes state.

use crate::codec::{
    AckKind, ByteStr, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode, Will,
};
use crate::log::Level;

/// Whether the packet trace is written.
#[inline]
pub(super) fn on() -> bool {
    crate::log::enabled(Level::Debug)
}

/// A packet received from client `id` (PUBLISH and CONNECT have their own lines).
pub(super) fn received(id: &str, packet: &Packet) {
    match packet {
        Packet::Ack(a) => match a.kind {
            AckKind::PubAck => crate::log_debug!(
                "Received PUBACK from {id} (Mid: {}, RC:{})",
                a.packet_id,
                a.reason.0
            ),
            AckKind::PubRec => {
                crate::log_debug!("Received PUBREC from {id} (Mid: {})", a.packet_id);
            }
            AckKind::PubRel => {
                crate::log_debug!("Received PUBREL from {id} (Mid: {})", a.packet_id);
            }
            AckKind::PubComp => crate::log_debug!(
                "Received PUBCOMP from {id} (Mid: {}, RC:{})",
                a.packet_id,
                a.reason.0
            ),
        },
        Packet::Subscribe(_) => crate::log_debug!("Received SUBSCRIBE from {id}"),
        Packet::Unsubscribe(_) => crate::log_debug!("Received UNSUBSCRIBE from {id}"),
        Packet::PingReq => crate::log_debug!("Received PINGREQ from {id}"),
        Packet::Disconnect(_) => crate::log_debug!("Received DISCONNECT from {id}"),
        Packet::Auth(_) => crate::log_debug!("Received AUTH from {id}"),
        _ => {}
    }
}

/// A PUBLISH as Mosquitto describes it: direction, peer, flags, packet id, topic, size.
pub(super) struct PublishLine<'a> {
    pub(super) dup: bool,
    pub(super) qos: QoS,
    pub(super) retain: bool,
    pub(super) packet_id: Option<PacketId>,
    pub(super) topic: &'a str,
    pub(super) payload_len: usize,
}

impl<'a> PublishLine<'a> {
    /// `publish` as received (or sent unchanged).
    pub(super) fn of(publish: &'a Publish) -> Self {
        Self {
            dup: publish.dup,
            qos: publish.qos,
            retain: publish.retain,
            packet_id: publish.packet_id,
            topic: &publish.topic,
            payload_len: publish.payload.len(),
        }
    }

    pub(super) fn received(&self, id: &str) {
        self.write("Received PUBLISH from", id);
    }

    pub(super) fn sending(&self, id: &str) {
        self.write("Sending PUBLISH to", id);
    }

    fn write(&self, what: &str, id: &str) {
        crate::log_debug!(
            "{what} {id} (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(self.dup),
            self.qos as u8,
            u8::from(self.retain),
            self.packet_id.unwrap_or(0),
            self.topic,
            self.payload_len
        );
    }
}

/// A packet sent to `to` (the client id, or the peer's address before there is one).
/// PUBLISH has [`PublishLine`].
pub(super) fn sending(to: &str, packet: &Packet, version: ProtocolVersion) {
    match packet {
        Packet::ConnAck(a) => crate::log_debug!(
            "Sending CONNACK to {to} ({}, {})",
            u8::from(a.session_present),
            a.reason.0
        ),
        Packet::Ack(a) => {
            // 3.1.1 acknowledgements carry no reason code: Mosquitto prints rc0.
            let rc = if version.is_v5() {
                a.reason
            } else {
                ReasonCode::SUCCESS
            };
            match a.kind {
                AckKind::PubAck => {
                    crate::log_debug!("Sending PUBACK to {to} (m{}, rc{})", a.packet_id, rc.0);
                }
                AckKind::PubRec => {
                    crate::log_debug!("Sending PUBREC to {to} (m{}, rc{})", a.packet_id, rc.0);
                }
                AckKind::PubRel => crate::log_debug!("Sending PUBREL to {to} (m{})", a.packet_id),
                AckKind::PubComp => {
                    crate::log_debug!("Sending PUBCOMP to {to} (m{})", a.packet_id);
                }
            }
        }
        Packet::SubAck(_) => crate::log_debug!("Sending SUBACK to {to}"),
        Packet::UnsubAck(_) => crate::log_debug!("Sending UNSUBACK to {to}"),
        Packet::PingResp => crate::log_debug!("Sending PINGRESP to {to}"),
        Packet::Disconnect(d) => crate::log_debug!("Sending DISCONNECT to {to} (rc{})", d.reason.0),
        Packet::Auth(_) => crate::log_debug!("Sending AUTH to {to}"),
        _ => {}
    }
}

/// The will lines Mosquitto prints after "New client connected" (taken before the will
/// moves into its session).
pub(super) struct WillLine(Option<(usize, bool, QoS, ByteStr)>);

impl WillLine {
    pub(super) fn of(will: Option<&Will>) -> Self {
        Self(will.map(|w| (w.payload.len(), w.retain, w.qos, w.topic.clone())))
    }

    pub(super) fn write(&self) {
        match &self.0 {
            None => crate::log_debug!("No will message specified."),
            Some((len, retain, qos, topic)) => {
                crate::log_debug!(
                    "Will message specified ({len} bytes) (r{}, q{}).",
                    u8::from(*retain),
                    *qos as u8
                );
                crate::log_debug!("\t{topic}");
            }
        }
    }
}
