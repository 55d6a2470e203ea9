//! TLS on a listener, as the rest of the runtime sees it: one [`TlsSlot`] per TLS listener
//! (shared by every shard, reloaded on SIGHUP) and one [`TlsConn`] per connection, driven
//! the same way whichever library is underneath — certificates with rustls
//! ([`super::tls_rustls`]), pre-shared keys with OpenSSL ([`super::tls_psk`], cargo feature
//! `psk`, because rustls has no external-PSK support).
//!
//! A slot's configuration is built from the listener's files once at start and again on
//! each reload; a reload that fails keeps the configuration in force. A new connection
//! takes the slot's current configuration, so connections that are already up never
//! notice a reload. Every failed handshake is logged with the peer address and the
//! reason. Nothing here blocks, interprets MQTT bytes or logs key material.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use mio::net::TcpStream;

use super::conn::Outgoing;
use super::tls_rustls::RustlsConn;
use crate::config::{Location, TlsConfig};

/// Why a listener's TLS files or settings cannot be used: the option, its file and line,
/// the file it names and what is wrong.
#[derive(Debug)]
pub struct TlsError {
    option: &'static str,
    at: Option<Location>,
    path: Option<PathBuf>,
    reason: String,
}

impl TlsError {
    /// An error about `option` of `tls` (its location is looked up in `tls`).
    pub fn new(tls: &TlsConfig, option: &'static str, path: Option<&Path>, reason: String) -> Self {
        Self {
            option,
            at: tls.origin(option).cloned(),
            path: path.map(Path::to_path_buf),
            reason,
        }
    }
}

impl TlsError {
    /// `tls_version` holds a value the config parser would not have let through.
    pub fn unsupported_version(tls: &TlsConfig, version: &str) -> Self {
        Self::new(
            tls,
            "tls_version",
            None,
            format!("unsupported tls_version {version}"),
        )
    }
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.option)?;
        if let Some(path) = &self.path {
            write!(f, " {}", path.display())?;
        }
        if let Some(at) = &self.at {
            write!(f, " (in {at})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for TlsError {}

/// The built configuration of a TLS listener.
#[derive(Clone)]
enum ListenerTls {
    Certificates(Arc<rustls::ServerConfig>),
    #[cfg(feature = "psk")]
    Psk(openssl::ssl::SslContext),
}

impl ListenerTls {
    fn build(tls: &TlsConfig, port: u16) -> Result<Self, TlsError> {
        if tls.is_psk() {
            #[cfg(feature = "psk")]
            return super::tls_psk::context(tls, port).map(Self::Psk);
            #[cfg(not(feature = "psk"))]
            return Err(TlsError::new(
                tls,
                "psk_hint",
                None,
                format!(
                    "listener {port}: TLS-PSK support is not built in \
                     (build shardmq with the cargo feature `psk`)"
                ),
            ));
        }
        let _ = port;
        super::tls_rustls::server_config(tls).map(Self::Certificates)
    }
}

/// The TLS configuration of one listener, shared by the shards, replaceable at run time.
pub struct TlsSlot {
    config: TlsConfig,
    port: u16,
    /// Read once per accepted connection (never on the message path); written on reload.
    current: RwLock<ListenerTls>,
}

impl TlsSlot {
    /// Reads the listener's files and builds its configuration.
    pub fn new(config: &TlsConfig, port: u16) -> Result<Self, TlsError> {
        Ok(Self {
            current: RwLock::new(ListenerTls::build(config, port)?),
            config: config.clone(),
            port,
        })
    }

    /// Re-reads the listener's files (certificates, keys, CAs, CRLs, psk_file). New
    /// connections use the result; on error the configuration in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = ListenerTls::build(&self.config, self.port)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    fn current(&self) -> ListenerTls {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

// The whole TlsConn is boxed in `Conn`, so one more box for the smaller variant would buy
// nothing.
#[allow(clippy::large_enum_variant)]
enum Session {
    Certificates(RustlsConn),
    #[cfg(feature = "psk")]
    Psk(super::tls_psk::PskConn),
}

/// The TLS state of one connection.
pub struct TlsConn {
    session: Session,
    peer: SocketAddr,
}

impl TlsConn {
    /// A server session for a connection from `peer`, with the slot's current settings.
    pub fn new(slot: &TlsSlot, peer: SocketAddr) -> io::Result<Self> {
        let session = match slot.current() {
            ListenerTls::Certificates(config) => {
                let subject_dn = slot.config.use_subject_as_username;
                Session::Certificates(
                    RustlsConn::new(&config, subject_dn).map_err(io::Error::other)?,
                )
            }
            #[cfg(feature = "psk")]
            ListenerTls::Psk(context) => Session::Psk(super::tls_psk::PskConn::new(&context)?),
        };
        Ok(Self { session, peer })
    }

    fn is_handshaking(&self) -> bool {
        match &self.session {
            Session::Certificates(c) => c.is_handshaking(),
            #[cfg(feature = "psk")]
            Session::Psk(c) => c.is_handshaking(),
        }
    }

    /// Reads decrypted bytes into `buf`: Ok(0) = the peer closed, WouldBlock = nothing
    /// more for now. Handshake records are answered on the way; a failed handshake is
    /// logged.
    pub fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        let handshaking = self.is_handshaking();
        let res = match &mut self.session {
            Session::Certificates(c) => c.read(stream, buf),
            #[cfg(feature = "psk")]
            Session::Psk(c) => c.read(stream, buf),
        };
        // Failed = the handshake was under way and did not finish (a handshake that
        // completes and is closed in the same read did not fail).
        if handshaking && self.is_handshaking() {
            match &res {
                Ok(0) => self.log_failed("connection closed during the TLS handshake"),
                Err(e)
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    self.log_failed(&format!("TLS handshake failed: {e}"));
                }
                _ => {}
            }
        }
        res
    }

    fn log_failed(&self, reason: &str) {
        crate::log_notice!("Client connection from {} failed: {reason}.", self.peer);
    }

    /// Whether TLS records are waiting to be written.
    pub fn wants_write(&self) -> bool {
        match &self.session {
            Session::Certificates(c) => c.wants_write(),
            #[cfg(feature = "psk")]
            Session::Psk(c) => c.wants_write(),
        }
    }

    /// Encrypts `out` and writes records. Ok(true) when everything was written.
    pub fn flush(&mut self, stream: &mut TcpStream, out: &mut impl Outgoing) -> io::Result<bool> {
        match &mut self.session {
            Session::Certificates(c) => c.flush(stream, out),
            #[cfg(feature = "psk")]
            Session::Psk(c) => c.flush(stream, out),
        }
    }

    /// Once the handshake is done: `Some(identity)` exactly once — the subject CN of the
    /// verified client certificate, or the PSK identity the client used.
    pub fn take_identity(&mut self) -> Option<Option<String>> {
        match &mut self.session {
            Session::Certificates(c) => c.take_identity(),
            #[cfg(feature = "psk")]
            Session::Psk(c) => c.take_identity(),
        }
    }

    /// Queues close_notify (best effort; the socket is closed right after).
    pub fn close(&mut self, stream: &mut TcpStream) {
        match &mut self.session {
            Session::Certificates(c) => c.close(stream),
            #[cfg(feature = "psk")]
            Session::Psk(c) => c.close(stream),
        }
    }
}
