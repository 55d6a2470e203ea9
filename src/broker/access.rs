//! Access hooks of the embedding API: the host's [`AccessHook`] (one instance per shard)
//! decides who may connect ([`ConnectInfo`] -> [`Decision`]) and what a client may publish
//! and subscribe to, next to the `password_file` / `acl_file` rules.
//!
//! Order: the files decide first (`allow_anonymous`, `password_file`, `acl_file`, and the
//! `$SYS` rule without an ACL); only what they allow is put to the hook, so a hook can
//! narrow access, never widen it. Refusals take the files' paths, with their reason codes
//! and log lines: a refused login gets CONNACK 0x86 / 0x87 / 0x8A / 0x88 (MQTT 5) or the
//! 3.1.1 code Mosquitto sends for it (5, or 3 for "unavailable"); a refused publish is
//! PUBACK/PUBREC 0x87 in MQTT 5 and acknowledged and dropped in 3.1.1; a refused
//! subscription is SUBACK 0x87 (MQTT 5) or 0x80 (3.1.1); a will on a topic the hook
//! refuses refuses the CONNECT (0x87). Bridges' local connections are trusted and not
//! put to the hook.
//!
//! The hook runs on the shard thread and must not block (no I/O to a user store in the
//! call: keep what it needs in memory, refreshed by another thread). This module only
//! asks the hook; it never sends a packet or touches a socket.

use std::fmt;
use std::net::SocketAddr;

use crate::auth::BRIDGE_LISTENER;
use crate::codec::{ByteStr, ReasonCode};

use super::ingest::Provenance;
use super::sessions::Slot;

/// The host's answer to a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Let the client in (the files allowed it too).
    Allow,
    /// Wrong user name or password: CONNACK 0x86 (MQTT 5), 5 in 3.1.1 (as Mosquitto).
    BadCredentials,
    /// The client is not authorised to connect: CONNACK 0x87 (MQTT 5), 5 in 3.1.1.
    NotAuthorized,
    /// The client is banned: CONNACK 0x8A (MQTT 5), 5 in 3.1.1.
    Banned,
    /// The host cannot decide now (its user store is unavailable): CONNACK 0x88 (MQTT
    /// 5), 3 (server unavailable) in 3.1.1. The client may retry later.
    Unavailable,
}

impl Decision {
    /// The MQTT 5 reason code of a refusal (`None` for [`Decision::Allow`]).
    const fn refusal(self) -> Option<ReasonCode> {
        match self {
            Self::Allow => None,
            Self::BadCredentials => Some(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            Self::NotAuthorized => Some(ReasonCode::NOT_AUTHORIZED),
            Self::Banned => Some(ReasonCode::BANNED),
            Self::Unavailable => Some(ReasonCode::SERVER_UNAVAILABLE),
        }
    }
}

/// A CONNECT the files let through, put to [`AccessHook::authenticate`].
///
/// ```
/// # fn f(c: &shardmq::ConnectInfo<'_>) {
/// println!("{} ({:?}, cert {:?}) from {} on listener {}, MQTT level {}, {} password bytes",
///     c.client_id(), c.username(), c.certificate_identity(), c.peer(), c.listener(),
///     c.protocol_level(), c.password().map_or(0, <[u8]>::len));
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct ConnectInfo<'a> {
    client: Provenance<'a>,
    password: Option<&'a [u8]>,
    certificate: Option<&'a str>,
    clean_start: bool,
}

impl fmt::Debug for ConnectInfo<'_> {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectInfo")
            .field("client", &self.client)
            .field("password", &self.password.map(|_| "<hidden>"))
            .field("certificate", &self.certificate)
            .field("clean_start", &self.clean_start)
            .finish()
    }
}

impl<'a> ConnectInfo<'a> {
    /// The client identifier (the one the broker assigned, for an empty one).
    pub fn client_id(&self) -> &'a str {
        self.client.client_id()
    }

    /// The user name of the CONNECT (or the certificate identity, with
    /// `use_identity_as_username` / `use_subject_as_username`); `None` if anonymous.
    pub fn username(&self) -> Option<&'a str> {
        self.client.username()
    }

    /// The password of the CONNECT, as sent (MQTT passwords are binary).
    pub fn password(&self) -> Option<&'a [u8]> {
        self.password
    }

    /// The verified TLS client certificate's identity: its subject CN, or its whole
    /// subject DN with `use_subject_as_username`; `None` without a client certificate.
    pub fn certificate_identity(&self) -> Option<&'a str> {
        self.certificate
    }

    /// The listener it connected to (an index into the configuration's listeners, and
    /// into [`crate::BrokerHandle::local_addrs`]).
    pub fn listener(&self) -> usize {
        self.client.listener()
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.client.peer()
    }

    /// The MQTT protocol level: 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0).
    pub fn protocol_level(&self) -> u8 {
        self.client.protocol_level()
    }

    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub fn clean_start(&self) -> bool {
        self.clean_start
    }

    /// The same client as the later [`AccessHook::authorize_publish`] /
    /// [`AccessHook::authorize_subscribe`] calls see it.
    pub fn provenance(&self) -> Provenance<'a> {
        self.client
    }
}

/// The host's access rules, set with [`crate::BrokerBuilder::access`]; one instance per
/// shard, called on that shard's thread. Every call must return at once: no blocking
/// I/O, no lock held by a slow thread (a host with a remote user store keeps a cache
/// that another thread refreshes, and answers [`Decision::Unavailable`] for what it does
/// not know yet).
///
/// Only what `password_file`, `acl_file` and `allow_anonymous` allow reaches the hook.
/// The authorisation calls are not cached: they run for every PUBLISH and for every
/// filter of a SUBSCRIBE.
///
/// ```
/// use shardmq::{AccessHook, ConnectInfo, Decision, Provenance};
///
/// struct Tenants;
///
/// impl AccessHook for Tenants {
///     fn authenticate(&mut self, c: &ConnectInfo<'_>) -> Decision {
///         match (c.username(), c.password()) {
///             (Some(user), Some(b"secret")) if c.client_id().starts_with(user) => {
///                 Decision::Allow
///             }
///             _ => Decision::BadCredentials,
///         }
///     }
///
///     fn authorize_publish(&mut self, client: &Provenance<'_>, topic: &str) -> bool {
///         // Each user publishes under its own prefix only.
///         client.username().is_some_and(|u| topic.starts_with(&format!("tenants/{u}/")))
///     }
/// }
/// ```
pub trait AccessHook: Send {
    /// May this client connect?
    fn authenticate(&mut self, connect: &ConnectInfo<'_>) -> Decision;

    /// May `client` publish to `topic` (also asked for a CONNECT's will topic)? The
    /// default allows everything.
    fn authorize_publish(&mut self, client: &Provenance<'_>, topic: &str) -> bool {
        let _ = (client, topic);
        true
    }

    /// May `client` subscribe to `filter` (as sent, with a `$share/GROUP/` prefix if it
    /// has one)? The default allows everything.
    fn authorize_subscribe(&mut self, client: &Provenance<'_>, filter: &str) -> bool {
        let _ = (client, filter);
        true
    }
}

/// One shard's hook, if the host set one.
#[derive(Default)]
pub(super) struct Access {
    hook: Option<Box<dyn AccessHook>>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// A CONNECT as [`Access::authenticate`] needs it.
pub(super) struct ConnectCheck<'a> {
    pub(super) client_id: &'a ByteStr,
    pub(super) username: Option<&'a ByteStr>,
    pub(super) password: Option<&'a [u8]>,
    pub(super) certificate: Option<&'a str>,
    pub(super) clean_start: bool,
    pub(super) listener: usize,
    pub(super) peer: SocketAddr,
    pub(super) protocol_level: u8,
    pub(super) will_topic: Option<&'a ByteStr>,
}

impl Access {
    pub(super) fn set(&mut self, hook: Box<dyn AccessHook>) {
        self.hook = Some(hook);
    }

    /// Whether the host set a hook (without one every check below allows).
    pub(super) fn is_set(&self) -> bool {
        self.hook.is_some()
    }

    /// The hook's verdict on a CONNECT the files allowed: `Err(reason)` (MQTT 5 code)
    /// refuses it. A will topic is put to `authorize_publish` after a successful login.
    pub(super) fn authenticate(&mut self, c: &ConnectCheck<'_>) -> Result<(), ReasonCode> {
        let Some(hook) = self.hook.as_mut() else {
            return Ok(());
        };
        if c.listener == BRIDGE_LISTENER {
            return Ok(());
        }
        let client = Provenance {
            client_id: c.client_id,
            username: c.username,
            listener: c.listener,
            peer: c.peer,
            protocol_level: c.protocol_level,
        };
        let info = ConnectInfo {
            client,
            password: c.password,
            certificate: c.certificate,
            clean_start: c.clean_start,
        };
        if let Some(reason) = hook.authenticate(&info).refusal() {
            return Err(reason);
        }
        match c.will_topic {
            Some(topic) if !hook.authorize_publish(&client, topic.as_str()) => {
                Err(ReasonCode::NOT_AUTHORIZED)
            }
            _ => Ok(()),
        }
    }

    /// May the session in `slot` (connected from `peer`) publish to `topic`?
    pub(super) fn may_publish(
        &mut self,
        slot: &Slot,
        peer: Option<SocketAddr>,
        topic: &str,
    ) -> bool {
        self.ask(slot, peer, |hook, client| {
            hook.authorize_publish(client, topic)
        })
    }

    /// May the session in `slot` (connected from `peer`) subscribe to `filter`?
    pub(super) fn may_subscribe(
        &mut self,
        slot: &Slot,
        peer: Option<SocketAddr>,
        filter: &str,
    ) -> bool {
        self.ask(slot, peer, |hook, client| {
            hook.authorize_subscribe(client, filter)
        })
    }

    fn ask(
        &mut self,
        slot: &Slot,
        peer: Option<SocketAddr>,
        question: impl FnOnce(&mut dyn AccessHook, &Provenance<'_>) -> bool,
    ) -> bool {
        let Some(hook) = self.hook.as_mut() else {
            return true;
        };
        if slot.listener == BRIDGE_LISTENER {
            return true;
        }
        // A session without a connection sends nothing; refuse rather than guess.
        let Some(peer) = peer else {
            return false;
        };
        question(hook.as_mut(), &super::ingest_hook::provenance(slot, peer))
    }
}
