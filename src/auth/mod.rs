//! Authentication and authorisation: Mosquitto password files ([`password`]), ACL files
//! compiled into topic indexes ([`acl`]), the `shardmq passwd` tool ([`passwd`]), and the
//! parsers for TLS identity files: `psk_file` ([`psk`]) and `crlfile` ([`crl`]), which the
//! runtime's TLS listeners load.
//!
//! [`Security`] is everything loaded from the files of a [`Config`], one [`Domain`] per
//! listener (shared by all listeners unless `per_listener_settings`). It is built once by
//! the runtime, shared read-only by every shard as an `Arc`, and replaced whole on SIGHUP;
//! a reload that fails keeps the old one. This module reads files only in
//! [`Security::load`] and the passwd tool; it never touches sockets, and never logs a
//! password.

pub mod acl;
pub mod crl;
pub mod enhanced;
pub mod passwd;
pub mod password;
pub mod psk;
pub mod scram;
pub mod x509;

use std::sync::Arc;

pub use acl::{Acl, AclError, ClientAcl};
pub use password::{HashKind, PasswordError, PasswordFile, PasswordHash};

use crate::codec::{ByteStr, ReasonCode};
use crate::config::Config;

/// Why the security files of a config cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The `password_file` cannot be used.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The `acl_file` cannot be used.
    #[error(transparent)]
    Acl(#[from] AclError),
}

/// The rules for the clients of one listener (or of all, without `per_listener_settings`).
#[derive(Debug, Default)]
pub struct Domain {
    pub allow_anonymous: bool,
    pub passwords: Option<PasswordFile>,
    pub acl: Option<Acl>,
}

impl Domain {
    /// Checks a CONNECT's credentials. A client without username is anonymous; with a
    /// password file, a username must be in it with the right password (v5 0x86, which
    /// 3.1.1 maps to 0x05 as Mosquitto does). Without a password file any username is
    /// accepted (Mosquitto's behaviour). `identity` (a client certificate's CN with
    /// `use_identity_as_username`) replaces the username and skips the password.
    pub fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        identity_verified: bool,
    ) -> Result<(), ReasonCode> {
        let Some(username) = username else {
            return if self.allow_anonymous {
                Ok(())
            } else {
                Err(ReasonCode::NOT_AUTHORIZED)
            };
        };
        if identity_verified {
            return Ok(());
        }
        match &self.passwords {
            Some(file) if !file.check(username, password) => {
                Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
            }
            _ => Ok(()),
        }
    }

    /// The ACL state of a new connection; `None` when no `acl_file` applies (everything
    /// is allowed).
    pub fn client_acl(&self, username: Option<&str>, client_id: &str) -> Option<ClientAcl> {
        self.acl.as_ref().map(|a| a.client(username, client_id))
    }
}

/// The loaded security files of a config.
#[derive(Debug)]
pub struct Security {
    listeners: Vec<Arc<Domain>>,
    fallback: Arc<Domain>,
    /// The domain of [`BRIDGE_LISTENER`]: anonymous, no ACL.
    bridge: Arc<Domain>,
}

/// The listener index of a bridge's local connection (`crate::bridge`): a trusted local
/// member that no password or ACL check applies to, as Mosquitto 2's bridges. It is a
/// `u32` so that it survives persistence unchanged.
pub const BRIDGE_LISTENER: usize = u32::MAX as usize;

fn bridge_domain() -> Arc<Domain> {
    Arc::new(Domain {
        allow_anonymous: true,
        passwords: None,
        acl: None,
    })
}

impl Security {
    /// `allow_anonymous` only, no files read: what a sans-IO broker starts with.
    pub fn open(config: &Config) -> Self {
        Self::build(config, |_, _| Ok(Domain::default()))
            .unwrap_or_else(|_: AuthError| Self::deny_all())
    }

    /// Reads every `password_file` and `acl_file` the config names.
    pub fn load(config: &Config) -> Result<Self, AuthError> {
        Self::build(config, |pw, acl| {
            Ok(Domain {
                allow_anonymous: false,
                passwords: pw.map(PasswordFile::load).transpose()?,
                acl: acl.map(Acl::load).transpose()?,
            })
        })
    }

    /// One domain for every listener (embedding, tests and fuzzing).
    pub fn with_domain(domain: Domain) -> Self {
        Self {
            listeners: Vec::new(),
            fallback: Arc::new(domain),
            bridge: bridge_domain(),
        }
    }

    fn deny_all() -> Self {
        Self {
            listeners: Vec::new(),
            fallback: Arc::new(Domain::default()),
            bridge: bridge_domain(),
        }
    }

    fn build(
        config: &Config,
        mut load: impl FnMut(
            Option<&std::path::Path>,
            Option<&std::path::Path>,
        ) -> Result<Domain, AuthError>,
    ) -> Result<Self, AuthError> {
        let mut global = load(config.password_file.as_deref(), config.acl_file.as_deref())?;
        global.allow_anonymous = config.allow_anonymous;
        let global = Arc::new(global);
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let allow_anonymous = l.allow_anonymous.unwrap_or(config.allow_anonymous);
            if config.per_listener_settings {
                let mut d = load(l.password_file.as_deref(), l.acl_file.as_deref())?;
                d.allow_anonymous = allow_anonymous;
                listeners.push(Arc::new(d));
            } else if allow_anonymous == global.allow_anonymous {
                listeners.push(Arc::clone(&global));
            } else {
                // allow_anonymous set inside a listener block without per_listener_settings.
                let mut d = load(config.password_file.as_deref(), config.acl_file.as_deref())?;
                d.allow_anonymous = allow_anonymous;
                listeners.push(Arc::new(d));
            }
        }
        Ok(Self {
            listeners,
            fallback: global,
            bridge: bridge_domain(),
        })
    }

    /// The domain of listener `index` (the global one for an unknown index, the bridges'
    /// for [`BRIDGE_LISTENER`]).
    pub fn domain(&self, listener: usize) -> &Arc<Domain> {
        if listener == BRIDGE_LISTENER {
            return &self.bridge;
        }
        self.listeners.get(listener).unwrap_or(&self.fallback)
    }

    /// Whether any domain has an ACL (lets the broker skip per-message checks).
    pub fn has_acl(&self) -> bool {
        self.fallback.acl.is_some() || self.listeners.iter().any(|d| d.acl.is_some())
    }
}

/// Whether a client may publish to `topic` when no ACL applies: anywhere but the broker's
/// own `$SYS` tree (which only an ACL rule starting with `$` can open), as in Mosquitto,
/// whose one exception we keep: `$SYS/broker/connection/+/state`, where a bridge reports
/// its state. Denied messages are acknowledged and dropped in 3.1.1 and refused with
/// 0x87 in MQTT 5, like any ACL denial; a will on such a topic refuses the CONNECT.
pub fn may_write_without_acl(topic: &str) -> bool {
    // Mosquitto compares the first four bytes ("$SYS", "$SYSx/..." included).
    if !topic.starts_with("$SYS") {
        return true;
    }
    let mut levels = topic.split('/');
    matches!(
        (
            levels.next(),
            levels.next(),
            levels.next(),
            levels.next(),
            levels.next(),
            levels.next()
        ),
        (
            Some("$SYS"),
            Some("broker"),
            Some("connection"),
            Some(_),
            Some("state"),
            None
        )
    )
}

/// The security state of one session: who it connected as (to re-derive its ACL after a
/// reload) and its ACL with the decision cache.
#[derive(Debug)]
pub struct ClientSecurity {
    listener: usize,
    username: Option<String>,
    client_id: String,
    acl: Option<ClientAcl>,
}

impl ClientSecurity {
    pub fn new(
        security: &Security,
        listener: usize,
        username: Option<&str>,
        client_id: &str,
    ) -> Self {
        let mut this = Self {
            listener,
            username: username.map(str::to_owned),
            client_id: client_id.to_owned(),
            acl: None,
        };
        this.reload(security);
        this
    }

    /// Applies reloaded rules (drops the decision cache).
    pub fn reload(&mut self, security: &Security) {
        self.acl = security
            .domain(self.listener)
            .client_acl(self.username.as_deref(), &self.client_id);
    }

    /// May the client receive a message on `topic` (checked per delivered message)?
    pub fn may_read(&mut self, topic: &ByteStr) -> bool {
        self.acl.as_mut().map_or(true, |a| a.may_read(topic))
    }

    /// May the client publish to `topic`? Without an ACL, see [`may_write_without_acl`].
    pub fn may_write(&mut self, topic: &ByteStr) -> bool {
        match self.acl.as_mut() {
            Some(a) => a.may_write(topic),
            None => may_write_without_acl(topic),
        }
    }

    /// May the client subscribe to `filter`?
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.acl.as_ref().map_or(true, |a| a.may_subscribe(filter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticate_rules() {
        let pw = PasswordFile::parse(
            &format!(
                "u:{}\n",
                PasswordHash::new(HashKind::Sha512, b"p").unwrap().encode()
            ),
            std::path::Path::new("pw"),
        )
        .unwrap();
        let d = Domain {
            allow_anonymous: false,
            passwords: Some(pw),
            acl: None,
        };
        assert_eq!(
            d.authenticate(None, None, false),
            Err(ReasonCode::NOT_AUTHORIZED)
        );
        assert_eq!(d.authenticate(Some("u"), Some(b"p"), false), Ok(()));
        assert_eq!(
            d.authenticate(Some("u"), Some(b"x"), false),
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        );
        assert_eq!(
            d.authenticate(Some("v"), Some(b"p"), false),
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        );
        assert_eq!(d.authenticate(Some("cert-cn"), None, true), Ok(()));
        let open = Domain {
            allow_anonymous: true,
            ..Domain::default()
        };
        assert_eq!(open.authenticate(None, None, false), Ok(()));
        assert_eq!(open.authenticate(Some("any"), None, false), Ok(()));
    }

    #[test]
    fn sys_is_read_only_without_acl() {
        for denied in [
            "$SYS",
            "$SYS/broker/uptime",
            "$SYS/x",
            "$SYSTEM/x",
            "$SYS/broker/connection/b1/state/x",
            "$SYS/broker/connection/state",
        ] {
            assert!(!may_write_without_acl(denied), "{denied}");
        }
        for allowed in [
            "a/$SYS",
            "$share/g/x",
            "$other",
            "sys",
            "$SYS/broker/connection/b1/state",
        ] {
            assert!(may_write_without_acl(allowed), "{allowed}");
        }
        let c = Config::default();
        let mut no_acl = ClientSecurity::new(&Security::open(&c), 0, None, "c");
        assert!(!no_acl.may_write(&ByteStr::from("$SYS/broker/uptime")));
        assert!(no_acl.may_write(&ByteStr::from("a/b")));
        // An ACL decides on its own: a '$' rule can open $SYS to a client.
        let acl = Acl::parse("topic write $SYS/test/#\n", std::path::Path::new("acl")).unwrap();
        let open = Security::with_domain(Domain {
            allow_anonymous: true,
            passwords: None,
            acl: Some(acl),
        });
        let mut with_acl = ClientSecurity::new(&open, 0, None, "c");
        assert!(with_acl.may_write(&ByteStr::from("$SYS/test/x")));
        assert!(!with_acl.may_write(&ByteStr::from("$SYS/broker/uptime")));
    }

    #[test]
    fn per_listener_domains() {
        let mut c = Config {
            allow_anonymous: false,
            ..Config::default()
        };
        c.listeners.push(crate::config::Listener::new(1884, None));
        c.listeners[1].allow_anonymous = Some(true);
        let s = Security::open(&c);
        assert!(!s.domain(0).allow_anonymous);
        assert!(s.domain(1).allow_anonymous);
        assert!(!s.domain(7).allow_anonymous);
        assert!(!s.has_acl());
    }
}
