//! The local side of a [`Link`]: the packets the broker sends the bridge's local session
//! (CONNACK, then `out` messages and the acknowledgements of `in` ones), relayed to the
//! remote with the same QoS rules as the module above. No IO.

use std::time::Instant;

use bytes::BytesMut;
use smallvec::smallvec;

use super::{ack, next_id, Link, Remote, MAX_IN};
use crate::codec::{
    self, Ack, AckKind, ByteStr, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS,
    ReasonCode, SubAck, Subscribe, SubscriptionOptions,
};

impl Link {
    /// Before the remote was ever reached: creates the bridge's local session and its
    /// `out` subscriptions (CONNECT and SUBSCRIBE in `local_out`), so that what is
    /// published locally from the start waits for the remote, as with Mosquitto. The
    /// runtime opens the local connection itself and closes it once [`Link::primed`].
    pub fn prime(&mut self, now: Instant) {
        self.reset();
        self.priming = true;
        self.subacks_pending = 0;
        self.local_connect(now);
    }

    /// The local session and its subscriptions exist: the priming connection may close.
    pub fn primed(&self) -> bool {
        self.priming && self.local_up && self.subacks_pending == 0
    }

    /// Bytes the local broker sent to the bridge's local session.
    pub fn on_local(&mut self, buf: &mut BytesMut, now: Instant) -> Result<(), String> {
        loop {
            match codec::decode(buf, ProtocolVersion::V5, MAX_IN) {
                Ok(None) => return Ok(()),
                Ok(Some(packet)) => self.local_packet(packet, now)?,
                Err(e) => return Err(format!("bad packet from the local broker: {e}")),
            }
        }
    }

    fn local_packet(&mut self, packet: Packet, now: Instant) -> Result<(), String> {
        match packet {
            Packet::ConnAck(ack) => {
                if ack.reason != ReasonCode::SUCCESS {
                    return Err(format!(
                        "the local broker refused the bridge (0x{:02x})",
                        ack.reason.0
                    ));
                }
                self.local_up = true;
                self.local_keepalive = ack.properties.server_keep_alive.unwrap_or(0);
                let filters: Vec<(ByteStr, SubscriptionOptions)> = self
                    .map
                    .local_subscriptions()
                    .map(|(f, qos)| {
                        let options = SubscriptionOptions {
                            qos,
                            no_local: true,
                            retain_as_published: true,
                            retain_handling: 0,
                        };
                        (ByteStr::from(f), options)
                    })
                    .collect();
                for f in filters {
                    let id = next_id(&mut self.next_local_id, &self.inbound);
                    let sub = Subscribe {
                        packet_id: id,
                        filters: smallvec![f],
                        properties: Properties::default(),
                    };
                    self.local_send(&Packet::Subscribe(sub), now);
                    self.subacks_pending += 1;
                }
                if self.settings.notifications && !self.priming {
                    self.notify_local(b"1", now);
                }
            }
            Packet::Publish(p) => self.local_publish(p, now),
            Packet::Ack(a) => self.local_ack(&a, now)?,
            Packet::SubAck(SubAck { reasons, .. }) => {
                self.subacks_pending = self.subacks_pending.saturating_sub(1);
                if reasons.iter().any(|r| r.is_error()) {
                    crate::log_warning!(
                        "Warning: bridge {}: a local subscription was refused.",
                        self.settings.name
                    );
                }
            }
            Packet::PingResp | Packet::UnsubAck(_) => {}
            Packet::Disconnect(Disconnect { reason, .. }) => {
                return Err(format!(
                    "the local broker disconnected the bridge (0x{:02x})",
                    reason.0
                ))
            }
            other => return Err(format!("unexpected {} from the local broker", other.name())),
        }
        Ok(())
    }

    fn local_publish(&mut self, p: Publish, now: Instant) {
        let local_id = p.packet_id;
        if let (QoS::ExactlyOnce, Some(lid)) = (p.qos, local_id) {
            if self.outbound_local.contains_key(&lid) {
                return; // a resend of a message on its way already
            }
        }
        if self.remote != Remote::Up {
            // Priming, or the remote just went: not acknowledged, so the local session
            // keeps a QoS 1/2 message and sends it again on the next connection.
            if p.qos == QoS::AtMostOnce {
                self.stats.dropped += 1;
            }
            return;
        }
        let mut properties = if self.settings.version.is_v5() {
            p.properties
        } else {
            Properties::default()
        };
        properties.clear_connection_scoped();
        let mut remote = Publish {
            dup: false,
            qos: p.qos,
            retain: p.retain && self.settings.outgoing_retain,
            topic: ByteStr::default(),
            // A placeholder id of the right size until the size check passed.
            packet_id: (p.qos != QoS::AtMostOnce).then_some(1),
            properties,
            payload: p.payload,
        };
        let mapped = self.map.to_remote(p.topic.as_str());
        if let Some(t) = &mapped {
            remote.topic = ByteStr::from(t.clone());
        }
        let max = self.settings.max_packet_size as usize;
        let too_big = max > 0
            && codec::encoded_len(&Packet::Publish(remote.clone()), self.settings.version)
                .map_or(true, |n| n > max);
        if mapped.is_none() || too_big {
            // Not forwarded, ever: acknowledged so that the local session lets it go.
            self.stats.dropped += 1;
            match (p.qos, local_id) {
                (QoS::AtLeastOnce, Some(id)) => self.local_send(&ack(AckKind::PubAck, id), now),
                (QoS::ExactlyOnce, Some(id)) => self.local_send(&ack(AckKind::PubRec, id), now),
                _ => {}
            }
            return;
        }
        remote.packet_id = match (p.qos, local_id) {
            (QoS::AtMostOnce, _) | (_, None) => None,
            (qos, Some(lid)) => {
                let rid = next_id(&mut self.next_remote_id, &self.outbound);
                self.outbound.insert(rid, lid);
                if qos == QoS::ExactlyOnce {
                    self.outbound_local.insert(lid, rid);
                }
                Some(rid)
            }
        };
        self.stats.sent += 1;
        self.remote_send(&Packet::Publish(remote), now);
    }

    fn local_ack(&mut self, a: &Ack, now: Instant) -> Result<(), String> {
        match a.kind {
            // In, QoS 1: the local broker has it; the remote may forget it.
            AckKind::PubAck => {
                if let Some((rid, _)) = self.inbound.remove(&a.packet_id) {
                    self.remote_send(&ack(AckKind::PubAck, rid), now);
                }
            }
            // In, QoS 2: the local broker owns it: release locally, PUBREC remotely.
            AckKind::PubRec => {
                self.local_send(&ack(AckKind::PubRel, a.packet_id), now);
                if let Some((rid, _)) = self.inbound.remove(&a.packet_id) {
                    self.remote_send(&ack(AckKind::PubRec, rid), now);
                }
            }
            AckKind::PubComp => {}
            // Out, QoS 2, the local session's second half.
            AckKind::PubRel => {
                self.outbound_local.remove(&a.packet_id);
                self.local_send(&ack(AckKind::PubComp, a.packet_id), now);
            }
        }
        Ok(())
    }
}
