//! TLS-PSK listeners with OpenSSL (the `openssl` crate over Debian's libssl; cargo feature
//! `psk`): an `SslContext` built from `psk_hint`, the listener's `psk_file`, `tls_version`,
//! `ciphers` and `ciphers_tls1.3` as Mosquitto builds it, and a non-blocking server
//! session per connection.
//!
//! The session runs over in-memory buffers, exactly like rustls' `read_tls` / `write_tls`:
//! ciphertext read from the mio socket is handed to OpenSSL through [`MemIo`], whose reads
//! say WouldBlock when it is empty (OpenSSL answers WANT_READ), and the records OpenSSL
//! writes into it are written to the socket until WouldBlock. So the runtime drives both
//! kinds of TLS the same way, with no thread and no blocking handshake. Keys live only in
//! the psk_file map and OpenSSL; nothing here logs them.

use std::io::{self, IoSlice, Read, Write};
use std::sync::{Arc, OnceLock};

use mio::net::TcpStream;
use openssl::ex_data::Index;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslStream,
    SslVersion,
};

use super::conn::Outgoing;
use super::tls::TlsError;
use crate::auth::psk::PskFile;
use crate::config::TlsConfig;

/// Mosquitto's cipher list when `ciphers` is not set.
const DEFAULT_CIPHERS: &str = "DEFAULT:!aNULL:!eNULL:!LOW:!EXPORT:!SSLv2:@STRENGTH";
/// Ciphertext read from the socket per call.
const READ_CHUNK: usize = 16 * 1024;
/// Plaintext handed to OpenSSL per `SSL_write` (one TLS record at most).
const RECORD: usize = 16 * 1024;
/// Stop encrypting while this many bytes of records wait for the socket.
const PENDING_RECORDS_LIMIT: usize = 64 * 1024;

extern "C" {
    // libssl (linked by openssl-sys); the openssl crate has no wrapper for it.
    fn SSL_CTX_use_psk_identity_hint(
        ctx: *mut std::ffi::c_void,
        hint: *const std::ffi::c_char,
    ) -> std::ffi::c_int;
}

/// What the PSK callback saw, kept on the session for the identity and for log lines.
#[derive(Debug, Clone)]
enum PskLookup {
    Known(String),
    Unknown(String),
}

/// The per-session slot for [`PskLookup`].
fn lookup_index() -> Result<Index<Ssl, PskLookup>, openssl::error::ErrorStack> {
    static INDEX: OnceLock<Index<Ssl, PskLookup>> = OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| i))
}

/// Builds the OpenSSL context of one PSK listener, reading its psk_file.
pub fn context(tls: &TlsConfig, port: u16) -> Result<SslContext, TlsError> {
    let ssl_err = |option: &'static str, e: openssl::error::ErrorStack| {
        TlsError::new(tls, option, None, format!("OpenSSL: {e}"))
    };
    let Some(path) = &tls.psk_file else {
        return Err(TlsError::new(
            tls,
            "psk_hint",
            None,
            "a PSK listener needs a psk_file".into(),
        ));
    };
    let keys = Arc::new(
        // The error names the psk_file and its line.
        PskFile::load(path).map_err(|e| TlsError::new(tls, "psk_file", None, e.to_string()))?,
    );
    let index = lookup_index().map_err(|e| ssl_err("psk_hint", e))?;
    let mut b =
        SslContextBuilder::new(SslMethod::tls_server()).map_err(|e| ssl_err("psk_hint", e))?;
    let min = match tls.tls_version.as_deref() {
        Some("tlsv1.3") => SslVersion::TLS1_3,
        Some("tlsv1.1") => SslVersion::TLS1_1,
        None | Some("tlsv1.2") => SslVersion::TLS1_2,
        Some(other) => return Err(TlsError::unsupported_version(tls, other)),
    };
    b.set_min_proto_version(Some(min))
        .map_err(|e| ssl_err("tls_version", e))?;
    b.set_options(
        SslOptions::NO_COMPRESSION
            | SslOptions::CIPHER_SERVER_PREFERENCE
            | SslOptions::NO_RENEGOTIATION,
    );
    b.set_mode(SslMode::RELEASE_BUFFERS);
    b.set_session_id_context(format!("shardmq-{port}").as_bytes())
        .map_err(|e| ssl_err("psk_hint", e))?;
    let ciphers = tls.ciphers.as_deref().unwrap_or(DEFAULT_CIPHERS);
    b.set_cipher_list(ciphers)
        .map_err(|e| ssl_err("ciphers", e))?;
    if let Some(suites) = &tls.ciphers_tls13 {
        b.set_ciphersuites(suites)
            .map_err(|e| ssl_err("ciphers_tls1.3", e))?;
    }
    if let Some(hint) = &tls.psk_hint {
        let hint = std::ffi::CString::new(hint.as_str())
            .map_err(|_| TlsError::new(tls, "psk_hint", None, "contains NUL".into()))?;
        // SAFETY: `b` owns a valid SSL_CTX and `hint` is a NUL-terminated string that
        // OpenSSL copies before returning.
        if unsafe { SSL_CTX_use_psk_identity_hint(b.as_ptr().cast(), hint.as_ptr()) } != 1 {
            return Err(TlsError::new(
                tls,
                "psk_hint",
                None,
                "OpenSSL refused the hint".into(),
            ));
        }
    }
    b.set_psk_server_callback(move |ssl, identity, psk| {
        let identity = identity.unwrap_or_default();
        // The file's identities are UTF-8, so a lookup by the raw bytes is exact.
        let shown = String::from_utf8_lossy(identity).into_owned();
        match keys.key(identity) {
            Some(key) if key.len() <= psk.len() => {
                psk[..key.len()].copy_from_slice(key);
                ssl.set_ex_data(index, PskLookup::Known(shown));
                Ok(key.len())
            }
            // 0 = no key: OpenSSL fails the handshake.
            _ => {
                ssl.set_ex_data(index, PskLookup::Unknown(shown));
                Ok(0)
            }
        }
    });
    Ok(b.build())
}

/// The OpenSSL context of a bridge's TLS-PSK connections (`bridge_identity`,
/// `bridge_psk` as hex, `bridge_tls_version` as the minimum), as Mosquitto's bridge
/// sets its client up.
pub fn client_context(
    identity: &str,
    key: Vec<u8>,
    tls_version: Option<&str>,
) -> Result<SslContext, String> {
    let ssl = |e: openssl::error::ErrorStack| format!("OpenSSL: {e}");
    let mut b = SslContextBuilder::new(SslMethod::tls_client()).map_err(ssl)?;
    let min = match tls_version {
        Some("tlsv1.3") => SslVersion::TLS1_3,
        Some("tlsv1.1") => SslVersion::TLS1_1,
        None | Some("tlsv1.2") => SslVersion::TLS1_2,
        Some(other) => return Err(format!("unsupported bridge_tls_version {other}")),
    };
    b.set_min_proto_version(Some(min)).map_err(ssl)?;
    b.set_options(SslOptions::NO_COMPRESSION | SslOptions::NO_RENEGOTIATION);
    b.set_cipher_list(DEFAULT_CIPHERS).map_err(ssl)?;
    let identity =
        std::ffi::CString::new(identity).map_err(|_| "bridge_identity contains NUL".to_string())?;
    b.set_psk_client_callback(move |_ssl, _hint, identity_out, psk_out| {
        let id = identity.as_bytes_with_nul();
        if id.len() > identity_out.len() || key.len() > psk_out.len() {
            return Ok(0); // does not fit: the handshake fails
        }
        identity_out[..id.len()].copy_from_slice(id);
        psk_out[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    Ok(b.build())
}

/// Ciphertext in both directions, for OpenSSL to read from and write to.
#[derive(Default)]
struct MemIo {
    incoming: Vec<u8>,
    /// Bytes of `incoming` OpenSSL has read.
    taken: usize,
    outgoing: Vec<u8>,
    /// Bytes of `outgoing` written to the socket.
    sent: usize,
}

impl Read for MemIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.incoming[self.taken..];
        if rest.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.taken += n;
        Ok(n)
    }
}

impl Write for MemIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The TLS-PSK state of one connection.
pub struct PskConn {
    tls: SslStream<MemIo>,
    handshaking: bool,
    identity_reported: bool,
    /// Plaintext staged for one `SSL_write`.
    plain: Vec<u8>,
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl PskConn {
    pub fn new(context: &SslContext) -> io::Result<Self> {
        Self::with_role(context, false)
    }

    /// The client side (a bridge to a TLS-PSK remote).
    pub fn new_client(context: &SslContext) -> io::Result<Self> {
        Self::with_role(context, true)
    }

    fn with_role(context: &SslContext, client: bool) -> io::Result<Self> {
        let mut ssl = Ssl::new(context).map_err(io::Error::other)?;
        if client {
            ssl.set_connect_state();
        } else {
            ssl.set_accept_state();
        }
        Ok(Self {
            tls: SslStream::new(ssl, MemIo::default()).map_err(io::Error::other)?,
            handshaking: true,
            identity_reported: false,
            plain: Vec::new(),
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.handshaking
    }

    /// Why the handshake failed, with the identity the client offered.
    fn handshake_failure(&self, e: &openssl::ssl::Error) -> io::Error {
        let detail = e
            .ssl_error()
            .map_or_else(|| e.to_string(), ToString::to_string);
        let detail = detail.trim_end_matches(':');
        let lookup = lookup_index()
            .ok()
            .and_then(|i| self.tls.ssl().ex_data(i).cloned());
        match lookup {
            Some(PskLookup::Unknown(id)) => invalid(format!("unknown PSK identity \"{id}\"")),
            Some(PskLookup::Known(id)) => invalid(format!(
                "PSK identity \"{id}\" did not prove its key ({detail})"
            )),
            None => invalid(detail),
        }
    }

    /// Reads decrypted bytes into `buf`: Ok(0) = the peer closed, WouldBlock = nothing
    /// more for now.
    pub fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.handshaking {
                match self.tls.do_handshake() {
                    Ok(()) => self.handshaking = false,
                    Err(e) if e.code() == ErrorCode::WANT_READ => {}
                    Err(e) => {
                        // Send the alert, then give up on the connection.
                        let _ = self.write_records(stream);
                        return Err(self.handshake_failure(&e));
                    }
                }
            }
            if !self.handshaking {
                match self.tls.ssl_read(buf) {
                    Ok(n) => {
                        self.write_records(stream)?;
                        return Ok(n);
                    }
                    Err(e) if e.code() == ErrorCode::ZERO_RETURN => return Ok(0),
                    Err(e) if e.code() == ErrorCode::WANT_READ => {}
                    Err(e) => return Err(invalid(e.to_string())),
                }
            }
            self.write_records(stream)?;
            // OpenSSL wants more ciphertext: everything buffered was consumed.
            let io = self.tls.get_mut();
            io.incoming.clear();
            io.taken = 0;
            io.incoming.resize(READ_CHUNK, 0);
            let res = stream.read(&mut io.incoming);
            io.incoming.truncate(*res.as_ref().unwrap_or(&0));
            match res {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether TLS records are waiting to be written.
    pub fn wants_write(&self) -> bool {
        let io = self.tls.get_ref();
        io.sent < io.outgoing.len()
    }

    /// Encrypts `out` and writes records. Ok(true) when everything was written.
    pub fn flush(&mut self, stream: &mut TcpStream, out: &mut impl Outgoing) -> io::Result<bool> {
        loop {
            while !out.is_empty() && self.pending() < PENDING_RECORDS_LIMIT {
                self.stage(out);
                match self.tls.ssl_write(&self.plain) {
                    Ok(n) => out.consume(n),
                    // Not ready for application data yet (handshake in progress).
                    Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                        break
                    }
                    Err(e) => return Err(invalid(e.to_string())),
                }
            }
            if !self.write_records(stream)? {
                return Ok(false);
            }
            if out.is_empty() {
                return Ok(true);
            }
            if self.handshaking {
                return Ok(false);
            }
        }
    }

    /// Copies up to one record of plaintext from the front of `out` into `self.plain`.
    fn stage(&mut self, out: &impl Outgoing) {
        self.plain.clear();
        let mut iov = [IoSlice::new(&[]); 16];
        let n = out.io_slices(&mut iov);
        for slice in &iov[..n] {
            let room = RECORD - self.plain.len();
            self.plain
                .extend_from_slice(&slice[..slice.len().min(room)]);
            if self.plain.len() == RECORD {
                break;
            }
        }
    }

    fn pending(&self) -> usize {
        let io = self.tls.get_ref();
        io.outgoing.len() - io.sent
    }

    /// Writes pending records. Ok(false) on WouldBlock.
    fn write_records(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        let io = self.tls.get_mut();
        while io.sent < io.outgoing.len() {
            match stream.write(&io.outgoing[io.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        io.outgoing.clear();
        io.sent = 0;
        Ok(true)
    }

    /// Once the handshake is done: `Some(identity)` exactly once (the PSK identity).
    pub fn take_identity(&mut self) -> Option<Option<String>> {
        if self.identity_reported || self.handshaking {
            return None;
        }
        self.identity_reported = true;
        let lookup = lookup_index()
            .ok()
            .and_then(|i| self.tls.ssl().ex_data(i).cloned());
        Some(match lookup {
            Some(PskLookup::Known(id)) => Some(id),
            _ => None,
        })
    }

    /// Queues close_notify (best effort; the socket is closed right after).
    pub fn close(&mut self, stream: &mut TcpStream) {
        if !self.handshaking {
            let _ = self.tls.shutdown();
        }
        let _ = self.write_records(stream);
    }
}
