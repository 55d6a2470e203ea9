//! TLS listeners with rustls (ring provider): building a `ServerConfig` from a listener's
//! `certfile` / `keyfile` / `cafile` / `capath` / `require_certificate` / `tls_version`,
//! and driving a non-blocking `rustls::ServerConnection` from the mio loop — ciphertext
//! from the socket with `read_tls` / `process_new_packets`, plaintext out of `reader()`
//! into the connection's read buffer; plaintext from the output queue into `writer()`,
//! records to the socket with `write_tls`. No extra threads.
//!
//! It never blocks, never interprets MQTT bytes and never logs key material. The verified
//! client certificate's subject CN is what `use_identity_as_username` uses.

use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use crate::broker::OutQueue;
use crate::config::TlsConfig;

/// Why a listener's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut &pem[..]).collect();
    let certs = certs.map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?
        .ok_or_else(|| TlsError::Invalid(format!("{}: no private key found", path.display())))
}

/// Builds the rustls server configuration of one listener.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.tls_version.as_deref() {
        Some("tlsv1.3") => &[&rustls::version::TLS13],
        // tlsv1.2 is the minimum Mosquitto's option sets; rustls has no TLS 1.1.
        None | Some("tlsv1.2" | "tlsv1.1") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some(other) => {
            return Err(TlsError::Invalid(format!(
                "unsupported tls_version {other}"
            )))
        }
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &tls.cafile {
        for c in certs(ca)? {
            roots
                .add(c)
                .map_err(|e| TlsError::Invalid(format!("{}: {e}", ca.display())))?;
        }
    }
    if let Some(dir) = &tls.capath {
        let entries = fs::read_dir(dir).map_err(|source| TlsError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_file() {
                // Non-certificate files in a capath are skipped, as OpenSSL does.
                for c in certs(&p).unwrap_or_default() {
                    let _ = roots.add(c);
                }
            }
        }
    }
    let builder = if roots.is_empty() {
        builder.with_no_client_auth()
    } else {
        let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let v = if tls.require_certificate {
            v
        } else {
            v.allow_unauthenticated()
        };
        builder.with_client_cert_verifier(v.build().map_err(|e| TlsError::Invalid(e.to_string()))?)
    };
    let (Some(certfile), Some(keyfile)) = (&tls.certfile, &tls.keyfile) else {
        return Err(TlsError::Invalid(
            "certfile and keyfile are required".into(),
        ));
    };
    let config = builder
        .with_single_cert(certs(certfile)?, key(keyfile)?)
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", keyfile.display())))?;
    Ok(Arc::new(config))
}

/// The TLS state of one connection.
pub struct TlsConn {
    conn: ServerConnection,
    /// The identity was handed to the broker already.
    identity_reported: bool,
}

impl TlsConn {
    pub fn new(config: &Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: ServerConnection::new(Arc::clone(config))?,
            identity_reported: false,
        })
    }

    /// Reads decrypted bytes into `buf`: Ok(0) = the peer closed, WouldBlock = nothing
    /// more for now. Handshake records are answered on the way.
    pub fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(stream) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Send the alert, then give up on the connection.
                let _ = self.write_records(stream);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            self.write_records(stream)?;
        }
    }

    /// Whether TLS records are waiting to be written.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Encrypts `out` and writes records. Ok(true) when everything was written.
    pub fn flush(&mut self, stream: &mut TcpStream, out: &mut OutQueue) -> io::Result<bool> {
        loop {
            while !out.is_empty() {
                let mut iov = [IoSlice::new(&[]); 16];
                let n = out.io_slices(&mut iov);
                let written = self.conn.writer().write_vectored(&iov[..n])?;
                if written == 0 {
                    break; // rustls' buffer is full: write records first
                }
                out.consume(written);
            }
            if !self.write_records(stream)? {
                return Ok(false);
            }
            if out.is_empty() {
                return Ok(true);
            }
        }
    }

    /// Writes pending records. Ok(false) on WouldBlock.
    fn write_records(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Once the handshake is done: `Some(identity)` exactly once (the subject CN of the
    /// verified client certificate, if any).
    pub fn take_identity(&mut self) -> Option<Option<String>> {
        if self.identity_reported || self.conn.is_handshaking() {
            return None;
        }
        self.identity_reported = true;
        Some(
            self.conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| subject_cn(c)),
        )
    }

    /// Queues close_notify (best effort; the socket is closed right after).
    pub fn close(&mut self, stream: &mut TcpStream) {
        self.conn.send_close_notify();
        let _ = self.write_records(stream);
    }
}

/// One DER element: (tag, contents, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject commonName (OID 2.5.4.3) of an X.509 certificate.
pub fn subject_cn(cert: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let (_, certificate, _) = der(cert)?;
    let (_, tbs, _) = der(certificate)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature, issuer, validity, subject.
    let (tag, _, r) = der(rest)?;
    if tag == 0xA0 {
        rest = r;
    }
    for _ in 0..4 {
        let (_, _, r) = der(rest)?;
        rest = r;
    }
    let (_, mut subject, _) = der(rest)?;
    while !subject.is_empty() {
        let (_, set, r) = der(subject)?;
        subject = r;
        let (_, attr, _) = der(set)?;
        let (oid_tag, oid, value) = der(attr)?;
        if oid_tag == 0x06 && oid == CN {
            let (_, v, _) = der(value)?;
            return String::from_utf8(v.to_vec()).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_never_panics_on_garbage() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x82, 0xFF],
        ] {
            assert!(subject_cn(input).is_none());
        }
    }

    #[test]
    fn unsupported_tls_version_is_an_error() {
        let cfg = TlsConfig {
            tls_version: Some("sslv3".into()),
            ..TlsConfig::default()
        };
        assert!(server_config(&cfg).is_err());
    }
}
