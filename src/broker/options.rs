//! The coordinator's checks for Mosquitto's per-listener and delivery options, one helper
//! per option so that the paths that call them (`connect.rs`, `publish.rs`,
//! `subscribe.rs`, routing) change by one line each: `max_qos` (CONNACK Maximum QoS,
//! wills, PUBLISH, SUBSCRIBE), `upgrade_outgoing_qos`, `use_username_as_clientid` and
//! `check_retain_source`.
//!
//! It decides, it never encodes or queues bytes itself (refusals go through the
//! lifecycle helpers), and a disabled option costs one comparison.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::{ClientSecurity, Security};
use crate::codec::{ByteStr, Connect, Properties, QoS, ReasonCode};
use crate::config::Config;
use crate::retained::{RetainSource, RetainedMessage};
use crate::session::Accepted;

use super::{Broker, ConnId};

/// `max_qos` of listener `index` as a QoS.
pub(super) fn max_qos(config: &Config, index: usize) -> QoS {
    match config.max_qos(index) {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// A will above the listener's `max_qos` refuses the CONNECT (v5 CONNACK 0x9B; 3.1.1 is
/// closed without CONNACK), as Mosquitto 2 does.
pub(super) fn will_qos_refused(config: &Config, listener: usize, connect: &Connect) -> bool {
    connect
        .will
        .as_ref()
        .is_some_and(|w| w.qos > max_qos(config, listener))
}

/// v5 CONNACK Maximum QoS when the listener's `max_qos` is below 2 [MQTT-3.2.2-9].
pub(super) fn announce_max_qos(config: &Config, listener: usize, properties: &mut Properties) {
    let max = max_qos(config, listener);
    if max != QoS::ExactlyOnce {
        properties.maximum_qos = Some(max as u8);
    }
}

/// The QoS granted for a subscription requested at `requested`: at most `max_qos`, as
/// Mosquitto grants it (3.1.1 and 5 alike).
pub(super) fn granted_qos(config: &Config, listener: usize, requested: QoS) -> QoS {
    requested.min(max_qos(config, listener))
}

/// The QoS a message published at `published` goes out at to a subscription granted
/// `granted`: the lower of the two [MQTT-3.8.4-6], or with `upgrade_outgoing_qos` the
/// subscription's (Mosquitto's option, not conformant).
#[inline]
pub(super) fn outgoing_qos(published: QoS, granted: QoS, upgrade: bool) -> QoS {
    if upgrade {
        granted
    } else {
        published.min(granted)
    }
}

/// `use_username_as_clientid`: the username replaces the accepted client id (after the
/// client-id rules and authentication, as Mosquitto); without a username the client is
/// not authorised. An assigned id stays "assigned", so a v5 client that sent none learns
/// its id from CONNACK.
pub(super) fn username_as_client_id(
    config: &Config,
    listener: usize,
    username: Option<&ByteStr>,
    mut accepted: Accepted,
) -> Result<Accepted, ReasonCode> {
    if !config
        .listeners
        .get(listener)
        .is_some_and(|l| l.use_username_as_clientid)
    {
        return Ok(accepted);
    }
    let Some(username) = username else {
        return Err(ReasonCode::NOT_AUTHORIZED);
    };
    accepted.client_id = username.compact();
    Ok(accepted)
}

/// `check_retain_source`: whether the publisher of retained message `m` may still
/// publish to its topic under the ACL in force now (its client id, user name and
/// listener, as Mosquitto 2 re-checks them; Mosquitto 2 does not ask whether that client
/// still exists, and neither does this). A message without a known publisher (the
/// broker's, the host's) is not checked, as in Mosquitto.
pub(super) fn retain_source_may_write(
    config: &Config,
    security: &Security,
    m: &RetainedMessage,
) -> bool {
    if !config.check_retain_source {
        return true;
    }
    let Some(source) = m.source.as_deref() else {
        return true;
    };
    if !security.has_acl() {
        return crate::auth::may_write_without_acl(&m.topic);
    }
    let username = source.username.as_ref().map(ByteStr::as_str);
    ClientSecurity::new(
        security,
        source.listener,
        username,
        source.client_id.as_str(),
    )
    .may_write(&m.topic)
}

impl Broker {
    /// Who session `key` is, as the source of a retained message it publishes.
    pub(super) fn retain_source(&self, key: usize) -> Option<Arc<RetainSource>> {
        let slot = self.sessions.get(key)?;
        Some(Arc::new(RetainSource {
            client_id: slot.session.client_id().clone(),
            username: slot.username.as_deref().cloned(),
            listener: slot.listener,
        }))
    }

    /// A PUBLISH above the listener's `max_qos`: Mosquitto's log line, v5 DISCONNECT
    /// 0x9B, the connection ends (its will is published). Returns whether it was refused.
    pub(super) fn refuse_publish_qos(
        &mut self,
        key: usize,
        conn: ConnId,
        qos: QoS,
        now: Instant,
    ) -> bool {
        let Some(slot) = self.sessions.get(key) else {
            return false;
        };
        if qos <= max_qos(&self.config, slot.listener) {
            return false;
        }
        crate::log_info!(
            "Too high QoS in PUBLISH from {}, disconnecting.",
            slot.session.client_id()
        );
        self.disconnect_with(conn, ReasonCode::QOS_NOT_SUPPORTED);
        self.end_connection(conn, now, true);
        self.close_conn(conn);
        true
    }
}
