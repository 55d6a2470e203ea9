//! CONNECT acceptance rules that do not need the broker's session table: protocol level,
//! client identifier rules (assignment, rejection), the authentication hook, keep alive
//! negotiation, session expiry and the CONNACK properties we announce.
//!
//! It never looks up or takes over sessions (the broker does) and never encodes bytes.

use std::time::Duration;

use bytes::Bytes;

use crate::auth::Domain;
use crate::codec::{ByteStr, Connect, Properties, ProtocolVersion, ReasonCode};
use crate::config::Config;

/// When a session ends after its network connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionExpiry {
    /// Never expires (v5 0xFFFFFFFF, or v3 persistent without `persistent_client_expiration`).
    Never,
    /// Expires this long after disconnect; zero = ends with the connection.
    After(Duration),
}

impl SessionExpiry {
    pub const fn ends_at_disconnect(self) -> bool {
        matches!(self, Self::After(d) if d.is_zero())
    }

    /// From a v5 Session Expiry Interval [MQTT-3.1.2-23].
    pub fn from_v5_interval(interval: u32) -> Self {
        if interval == u32::MAX {
            Self::Never
        } else {
            Self::After(Duration::from_secs(u64::from(interval)))
        }
    }
}

/// The parameters of an accepted CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub client_id: ByteStr,
    /// The broker chose the id (sent back as Assigned Client Identifier in v5).
    pub assigned_id: bool,
    /// Keep alive in force, seconds (0 = none).
    pub keep_alive: u16,
    /// Set when the server overrides the client's keep alive (v5 Server Keep Alive).
    pub server_keep_alive: Option<u16>,
    pub expiry: SessionExpiry,
    /// MQTT 5 enhanced authentication that let the client in (set by the broker).
    pub auth: Option<EnhancedAuth>,
}

/// The outcome of MQTT 5 enhanced authentication: the method (which a re-authentication
/// must use again [MQTT-4.12.1-1]) and the data for the CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnhancedAuth {
    pub method: ByteStr,
    pub data: Option<Bytes>,
}

/// Checks a CONNECT against the configuration and the listener's security `domain`
/// (`identity_verified`: the username is a verified client-certificate identity, or the
/// user enhanced authentication established, and needs no password). `auto_id`
/// yields a fresh unique suffix for an assigned client id. `Err` carries the v5 reason
/// code; map it with [`connack_code`] for the client's version.
pub fn accept(
    connect: &Connect,
    config: &Config,
    domain: &Domain,
    identity_verified: bool,
    auto_id: impl FnOnce() -> u64,
) -> Result<Accepted, ReasonCode> {
    let v = connect.protocol;
    if connect.properties.authentication_method.is_some() && !identity_verified {
        // The broker runs enhanced authentication before this; a method that did not
        // run is refused [MQTT-4.12.0-1].
        return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
    }
    if connect.will.as_ref().is_some_and(|w| w.retain) && !config.retain_available {
        return Err(ReasonCode::RETAIN_NOT_SUPPORTED); // [MQTT-3.2.2-13]
    }
    let mut assigned_id = false;
    let client_id = if connect.client_id.is_empty() {
        let allowed = match v {
            // 3.1 requires 1..=23 characters.
            ProtocolVersion::V31 => false,
            // [MQTT-3.1.3-7] [MQTT-3.1.3-8]: empty id only with clean session.
            ProtocolVersion::V311 => connect.clean_start,
            // [MQTT-3.1.3-6]: the server assigns one.
            ProtocolVersion::V5 => true,
        };
        if !allowed || !config.allow_zero_length_clientid {
            return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }
        assigned_id = true;
        ByteStr::from(format!("{}{:016x}", config.auto_id_prefix, auto_id()))
    } else {
        // Lives as long as the session: compact, so it does not pin the read buffer,
        // and one allocation however often the broker clones it.
        connect.client_id.compact_shared()
    };
    if let Some(prefixes) = &config.clientid_prefixes {
        if !prefixes.is_empty() && !client_id.starts_with(prefixes.as_str()) {
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
    }
    authenticate(
        domain,
        connect.username.as_ref(),
        connect.password.as_ref(),
        identity_verified,
    )?;

    let max_ka = config.max_keepalive;
    if !v.is_v5()
        && max_ka != u16::MAX
        && max_ka != 0
        && (connect.keep_alive == 0 || connect.keep_alive > max_ka)
    {
        // 3.1.1 cannot be told another keep alive: refused as Mosquitto does (CONNACK 2).
        return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }
    let (keep_alive, server_keep_alive) =
        negotiate_keep_alive(v, connect.keep_alive, config.max_keepalive);
    let expiry = match v {
        ProtocolVersion::V5 => {
            SessionExpiry::from_v5_interval(connect.properties.session_expiry_interval.unwrap_or(0))
        }
        _ if connect.clean_start => SessionExpiry::After(Duration::ZERO),
        _ => config
            .persistent_client_expiration
            .map_or(SessionExpiry::Never, SessionExpiry::After),
    };
    Ok(Accepted {
        client_id,
        assigned_id,
        keep_alive,
        server_keep_alive,
        expiry,
        auth: None,
    })
}

/// The authentication hook: `allow_anonymous` and the password file of the listener's
/// [`Domain`]. Returns the v5 reason code on refusal (0x87 anonymous, 0x86 credentials).
pub fn authenticate(
    domain: &Domain,
    username: Option<&ByteStr>,
    password: Option<&Bytes>,
    identity_verified: bool,
) -> Result<(), ReasonCode> {
    domain.authenticate(
        username.map(ByteStr::as_str),
        password.map(|p| &p[..]),
        identity_verified,
    )
}

/// v5 Server Keep Alive: when `max_keepalive` is set and the client asks for more (or for
/// none), the server's value applies [MQTT-3.2.2-21].
fn negotiate_keep_alive(v: ProtocolVersion, requested: u16, max: u16) -> (u16, Option<u16>) {
    if v.is_v5() && max != u16::MAX && max != 0 && (requested == 0 || requested > max) {
        (max, Some(max))
    } else {
        (requested, None)
    }
}

/// The CONNACK code for `version`: v5 reason codes map to the 3.1.1 return codes.
pub const fn connack_code(version: ProtocolVersion, reason: ReasonCode) -> ReasonCode {
    if version.is_v5() {
        return reason;
    }
    match reason.0 {
        0x00 => ReasonCode::V3_ACCEPTED,
        0x84 => ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION,
        0x85 => ReasonCode::V3_IDENTIFIER_REJECTED,
        // Mosquitto answers a wrong password with 5 (not authorised), not 4.
        0x86 | 0x87 | 0x8A => ReasonCode::V3_NOT_AUTHORIZED,
        _ => ReasonCode::V3_SERVER_UNAVAILABLE,
    }
}

/// Properties of a successful v5 CONNACK: the limits this broker enforces.
pub fn connack_properties(config: &Config, accepted: &Accepted) -> Properties {
    let mut p = Properties::default();
    if config.max_inflight_messages != u16::MAX {
        p.receive_maximum = Some(config.max_inflight_messages.max(1));
    }
    if config.max_packet_size != 0 {
        p.maximum_packet_size = Some(config.max_packet_size);
    }
    if !config.retain_available {
        p.retain_available = Some(0);
    }
    // [MQTT-3.2.2-17]: absent means 0, no aliases.
    if config.max_topic_alias > 0 {
        p.topic_alias_maximum = Some(config.max_topic_alias);
    }
    p.shared_subscription_available = Some(1);
    if accepted.assigned_id {
        p.assigned_client_identifier = Some(accepted.client_id.clone());
    }
    p.server_keep_alive = accepted.server_keep_alive;
    if let Some(auth) = &accepted.auth {
        // 3.2.2.3.17 / 3.2.2.3.18: the method of the CONNECT, and its last data.
        p.authentication_method = Some(auth.method.clone());
        p.authentication_data.clone_from(&auth.data);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> Domain {
        Domain {
            allow_anonymous: true,
            ..Domain::default()
        }
    }

    fn connect(v: ProtocolVersion, id: &str, clean: bool) -> Connect {
        Connect {
            protocol: v,
            clean_start: clean,
            keep_alive: 60,
            client_id: ByteStr::from(id),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    #[test]
    fn mqtt_3_1_3_8_empty_id_without_clean_session_rejected() {
        let c = Config::default();
        let r = accept(
            &connect(ProtocolVersion::V311, "", false),
            &c,
            &open(),
            false,
            || 1,
        );
        assert_eq!(r.map(|_| ()), Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID));
        assert_eq!(
            connack_code(
                ProtocolVersion::V311,
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
            ),
            ReasonCode(2)
        );
    }

    #[test]
    fn empty_id_assigned_with_prefix() {
        let c = Config::default();
        let a = accept(
            &connect(ProtocolVersion::V5, "", false),
            &c,
            &open(),
            false,
            || 0xab,
        )
        .unwrap();
        assert!(a.assigned_id);
        assert_eq!(a.client_id.as_str(), "auto-00000000000000ab");
        assert!(accept(
            &connect(ProtocolVersion::V31, "", true),
            &c,
            &open(),
            false,
            || 1
        )
        .is_err());
    }

    #[test]
    fn anonymous_refused_when_not_allowed() {
        let c = Config::default();
        let r = accept(
            &connect(ProtocolVersion::V311, "a", true),
            &c,
            &Domain::default(),
            false,
            || 1,
        );
        assert_eq!(r.map(|_| ()), Err(ReasonCode::NOT_AUTHORIZED));
        assert_eq!(
            connack_code(ProtocolVersion::V311, ReasonCode::NOT_AUTHORIZED),
            ReasonCode(5)
        );
    }

    #[test]
    fn server_keep_alive_caps_v5_only() {
        assert_eq!(
            negotiate_keep_alive(ProtocolVersion::V5, 0, 30),
            (30, Some(30))
        );
        assert_eq!(
            negotiate_keep_alive(ProtocolVersion::V5, 10, 30),
            (10, None)
        );
        assert_eq!(
            negotiate_keep_alive(ProtocolVersion::V311, 100, 30),
            (100, None)
        );
    }
}
