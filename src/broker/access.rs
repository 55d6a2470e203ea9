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
//! call: keep what it needs in memory, refreshed by another thread). A login it cannot
//! decide from memory it defers: [`ConnectInfo::defer`] gives a [`LoginTicket`] that any
//! thread answers later, while the connection waits (unread, its pipelined packets
//! kept) for at most `connect_timeout`. This module only asks the hook; it never sends a
//! packet or touches a socket (`login.rs` holds the deferred CONNECTs).

use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::BRIDGE_LISTENER;
use crate::codec::{ByteStr, ReasonCode};

use super::ingest::Provenance;
use super::sessions::Slot;
use super::ConnId;

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
    /// The host will answer later, through the [`LoginTicket`] it took with
    /// [`ConnectInfo::defer`] in this call (without one this is [`Decision::Unavailable`]).
    /// As an answer on a ticket it is [`Decision::Unavailable`] too.
    Deferred,
}

impl Decision {
    /// The MQTT 5 reason code of a refusal (`None` for [`Decision::Allow`]).
    pub(super) const fn refusal(self) -> Option<ReasonCode> {
        match self {
            Self::Allow => None,
            Self::BadCredentials => Some(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            Self::NotAuthorized => Some(ReasonCode::NOT_AUTHORIZED),
            Self::Banned => Some(ReasonCode::BANNED),
            Self::Unavailable | Self::Deferred => Some(ReasonCode::SERVER_UNAVAILABLE),
        }
    }
}

/// Where a ticket's answer goes: the runtime turns it into a command to the shard.
#[derive(Clone)]
pub struct LoginSink(Arc<dyn Fn(LoginAnswer) + Send + Sync>);

impl LoginSink {
    pub(crate) fn new(f: impl Fn(LoginAnswer) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl fmt::Debug for LoginSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginSink")
    }
}

/// A deferred login's answer, for the shard that holds the CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginAnswer {
    pub(crate) conn: ConnId,
    pub(crate) uid: u64,
    pub(crate) decision: Decision,
}

/// The host's promise to decide a deferred login ([`ConnectInfo::defer`]): `Send`, so
/// a thread that asks a remote user store answers with [`LoginTicket::answer`]. Dropped
/// unanswered, the client gets [`Decision::Unavailable`]; unanswered within
/// `connect_timeout` after the CONNECT, the same. An answer after the client left, or
/// after the timeout, is ignored.
#[must_use = "dropping a login ticket refuses the client (server unavailable)"]
pub struct LoginTicket {
    target: Option<(LoginSink, LoginAnswer)>,
}

impl fmt::Debug for LoginTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginTicket")
            .field("pending", &self.target.is_some())
            .finish()
    }
}

impl LoginTicket {
    /// Decides the login: [`Decision::Allow`] lets the client in (its will topic is then
    /// put to [`AccessHook::authorize_publish`], on the shard), any other decision
    /// refuses it with that decision's reason code.
    pub fn answer(mut self, decision: Decision) {
        if let Some((sink, answer)) = self.target.take() {
            (sink.0)(LoginAnswer { decision, ..answer });
        }
    }
}

impl Drop for LoginTicket {
    fn drop(&mut self) {
        if let Some((sink, answer)) = self.target.take() {
            (sink.0)(LoginAnswer {
                decision: Decision::Unavailable,
                ..answer
            });
        }
    }
}

/// What [`ConnectInfo::defer`] needs: where the answer goes, and whether a ticket was
/// taken.
pub(super) struct Deferral<'a> {
    sink: Option<&'a LoginSink>,
    conn: ConnId,
    uid: u64,
    taken: Cell<bool>,
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
    deferral: &'a Deferral<'a>,
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

    /// Defers the decision: returns the ticket to answer it with, from any thread,
    /// after [`AccessHook::authenticate`] returned [`Decision::Deferred`]. Meanwhile the
    /// connection is not read (what the client pipelined after its CONNECT is kept and
    /// handled after a successful login) and other clients are served as usual. Copy
    /// what the answer needs (user name, password) out of this `ConnectInfo`: it
    /// borrows the CONNECT only for the call.
    ///
    /// ```
    /// use shardmq::{AccessHook, ConnectInfo, Decision};
    ///
    /// /// Asks a (slow) user store on a thread of its own.
    /// struct RemoteUsers {
    ///     queries: std::sync::mpsc::Sender<(String, Vec<u8>, shardmq::LoginTicket)>,
    /// }
    ///
    /// impl AccessHook for RemoteUsers {
    ///     fn authenticate(&mut self, c: &ConnectInfo<'_>) -> Decision {
    ///         let (Some(user), Some(password)) = (c.username(), c.password()) else {
    ///             return Decision::BadCredentials;
    ///         };
    ///         let query = (user.to_owned(), password.to_vec(), c.defer());
    ///         match self.queries.send(query) {
    ///             Ok(()) => Decision::Deferred, // the store's thread calls ticket.answer(..)
    ///             Err(_) => Decision::Unavailable,
    ///         }
    ///     }
    /// }
    /// ```
    pub fn defer(&self) -> LoginTicket {
        let d = self.deferral;
        d.taken.set(true);
        LoginTicket {
            target: d.sink.map(|sink| {
                let answer = LoginAnswer {
                    conn: d.conn,
                    uid: d.uid,
                    decision: Decision::Unavailable,
                };
                (sink.clone(), answer)
            }),
        }
    }
}

/// The host's access rules, set with [`crate::BrokerBuilder::access`]; one instance per
/// shard, called on that shard's thread. Every call must return at once: no blocking
/// I/O, no lock held by a slow thread. A host with a remote user store keeps a cache
/// that another thread refreshes, or defers a login it cannot decide from memory
/// ([`ConnectInfo::defer`], answered later from any thread); publish and subscribe
/// checks cannot be deferred.
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
    /// Where deferred logins' answers go (set by the runtime).
    sink: Option<LoginSink>,
}

/// The hook's verdict on a CONNECT it did not refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Login {
    /// Decided: let it in.
    Now,
    /// A ticket will answer ([`super::login`]).
    Deferred,
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
    pub(super) conn: ConnId,
    pub(super) conn_uid: u64,
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

impl ConnectCheck<'_> {
    fn provenance(&self) -> Provenance<'_> {
        Provenance {
            client_id: self.client_id,
            username: self.username,
            listener: self.listener,
            peer: self.peer,
            protocol_level: self.protocol_level,
        }
    }
}

impl Access {
    pub(super) fn set(&mut self, hook: Box<dyn AccessHook>, sink: Option<LoginSink>) {
        self.hook = Some(hook);
        self.sink = sink;
    }

    /// Whether the host set a hook (without one every check below allows).
    pub(super) fn is_set(&self) -> bool {
        self.hook.is_some()
    }

    /// The hook's verdict on a CONNECT the files allowed: `Err(reason)` (MQTT 5 code)
    /// refuses it, [`Login::Deferred`] waits for a ticket's answer. A will topic is put
    /// to `authorize_publish` after a successful login (after the answer, if deferred).
    pub(super) fn authenticate(&mut self, c: &ConnectCheck<'_>) -> Result<Login, ReasonCode> {
        let Some(hook) = self.hook.as_mut() else {
            return Ok(Login::Now);
        };
        if c.listener == BRIDGE_LISTENER {
            return Ok(Login::Now);
        }
        let client = c.provenance();
        let deferral = Deferral {
            sink: self.sink.as_ref(),
            conn: c.conn,
            uid: c.conn_uid,
            taken: Cell::new(false),
        };
        let info = ConnectInfo {
            client,
            password: c.password,
            certificate: c.certificate,
            clean_start: c.clean_start,
            deferral: &deferral,
        };
        match hook.authenticate(&info) {
            Decision::Deferred if deferral.taken.get() => return Ok(Login::Deferred),
            Decision::Deferred => {
                crate::log_warning!(
                    "Warning: the access hook deferred the login of {} without taking a \
                     ticket (ConnectInfo::defer); refused as unavailable.",
                    c.client_id
                );
                return Err(ReasonCode::SERVER_UNAVAILABLE);
            }
            decision => {
                if let Some(reason) = decision.refusal() {
                    return Err(reason);
                }
            }
        }
        self.authorize_will(c)
    }

    /// After a successful login: may the client's will be published?
    pub(super) fn authorize_will(&mut self, c: &ConnectCheck<'_>) -> Result<Login, ReasonCode> {
        let Some(hook) = self.hook.as_mut() else {
            return Ok(Login::Now);
        };
        match c.will_topic {
            Some(topic) if !hook.authorize_publish(&c.provenance(), topic.as_str()) => {
                Err(ReasonCode::NOT_AUTHORIZED)
            }
            _ => Ok(Login::Now),
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
