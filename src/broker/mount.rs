//! `mount_point` per listener, as Mosquitto does it: the listener's prefix goes in front
//! of every topic its clients publish (wills included) and every filter they subscribe or
//! unsubscribe with (inside `$share/GROUP/` for a shared one), so they live in their own
//! branch of the topic tree; on the way out it is stripped again, and a message whose
//! topic does not extend the prefix is not sent to them (Mosquitto drops it silently;
//! here it is counted). ACLs see the mounted topic, as Mosquitto's do. The prefix is
//! literal: `%u` / `%c` are not substituted there (Mosquitto does not either).
//!
//! Only clients of a listener with a mount point pay anything: their PUBLISH topics are
//! copied once with the prefix, and what they receive is encoded for them alone (the
//! shared QoS 0 frames carry the full topic). Nothing here queues or routes.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::codec::{
    self, ByteStr, Connect, EncodeError, PacketId, ProtocolVersion, Publish, ReasonCode,
};
use crate::config::Config;
use crate::session::{AliasUse, Outgoing};

use super::out_queue::Body;
use super::{Broker, ConnId};

/// The longest topic MQTT can carry (a two-byte length).
const MAX_TOPIC: usize = u16::MAX as usize;

/// Listener `listener`'s mount point, if it has one.
pub(super) fn mount_point(config: &Config, listener: usize) -> Option<&str> {
    config.mount_point(listener).filter(|m| !m.is_empty())
}

/// `topic` under `mount`; `None` when it would be longer than a topic can be.
pub(super) fn mounted(mount: &str, topic: &str) -> Option<ByteStr> {
    (mount.len() + topic.len() <= MAX_TOPIC).then(|| ByteStr::from(format!("{mount}{topic}")))
}

/// A subscription filter under `mount`: `$share/GROUP/F` becomes `$share/GROUP/MOUNTF`
/// so that it stays a shared subscription of the mounted branch.
pub(super) fn mounted_filter(mount: &str, filter: &str) -> Option<ByteStr> {
    if let Some(rest) = filter.strip_prefix("$share/") {
        if let Some((group, f)) = rest.split_once('/') {
            let len = "$share/".len() + group.len() + 1 + mount.len() + f.len();
            return (len <= MAX_TOPIC).then(|| ByteStr::from(format!("$share/{group}/{mount}{f}")));
        }
    }
    mounted(mount, filter)
}

/// The topic a client under `mount` sees for `topic`: the rest after the prefix, or
/// `None` (not sent) when `topic` is not strictly under it.
pub(super) fn unmounted<'a>(mount: &str, topic: &'a str) -> Option<&'a str> {
    topic.strip_prefix(mount).filter(|rest| !rest.is_empty())
}

/// One delivery to a client under a mount point: its own header with the topic `topic`
/// (already unmounted), the payload shared. As `Encoder::delivery` does it otherwise
/// (v5 subscription identifiers, the remaining message expiry and the topic alias the
/// session chose included).
pub(super) fn frame(
    out: &Outgoing,
    topic: &str,
    version: ProtocolVersion,
    (packet_id, dup): (Option<PacketId>, bool),
    alias: AliasUse,
    now: Instant,
) -> Result<(Bytes, Body), EncodeError> {
    let p = &out.msg.publish;
    let mut properties = p.properties.clone();
    let mut topic = ByteStr::from(topic);
    if version.is_v5() {
        properties.subscription_identifiers.clone_from(&out.sub_ids);
        if let Some(left) = out.msg.expiry_left(now) {
            properties.message_expiry_interval = Some(left.max(1));
        }
        match alias {
            AliasUse::Topic => {}
            AliasUse::Bind(n) => properties.topic_alias = Some(n),
            // [MQTT-3.3.2-11]: within the client's maximum (the session's table).
            AliasUse::Known(n) => {
                properties.topic_alias = Some(n);
                topic = ByteStr::default();
            }
        }
    } else {
        properties = Default::default();
    }
    let publish = Publish {
        dup,
        qos: out.qos,
        retain: out.retain,
        topic,
        packet_id,
        properties,
        payload: p.payload.clone(),
    };
    let mut buf = BytesMut::new();
    codec::encode_publish_header(&publish, version, &mut buf)?;
    Ok((buf.freeze(), Body::of(&out.msg)))
}

impl Broker {
    /// A PUBLISH of session `key` with its listener's mount point in front of the topic;
    /// `None` when the mounted topic would be too long for MQTT (the client is then
    /// disconnected with 0x90, Topic Name invalid).
    pub(super) fn mount_publish(
        &mut self,
        key: usize,
        conn: ConnId,
        mut publish: Publish,
        now: Instant,
    ) -> Option<Publish> {
        let listener = self.sessions.get(key)?.listener;
        let Some(mount) = mount_point(&self.config, listener) else {
            return Some(publish);
        };
        if let Some(topic) = mounted(mount, &publish.topic) {
            publish.topic = topic;
            return Some(publish);
        }
        crate::log_notice!(
            "Client {} published to a topic too long under mount point '{mount}', disconnecting.",
            self.sessions
                .get(key)
                .map(|s| s.session.client_id().clone())
                .unwrap_or_default()
        );
        self.disconnect_with(conn, ReasonCode::TOPIC_NAME_INVALID);
        self.end_connection(conn, now, true);
        self.close_conn(conn);
        None
    }
}

/// The will of a CONNECT on `listener` under its mount point; false when its topic would
/// be too long for MQTT.
pub(super) fn mount_will(config: &Config, listener: usize, connect: &mut Connect) -> bool {
    let (Some(mount), Some(will)) = (mount_point(config, listener), connect.will.as_mut()) else {
        return true;
    };
    match mounted(mount, &will.topic) {
        Some(topic) => {
            will.topic = topic;
            true
        }
        None => false,
    }
}
