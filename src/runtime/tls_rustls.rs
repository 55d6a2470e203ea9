//! Certificate TLS listeners with rustls (ring provider): building a `ServerConfig` from a
//! listener's `certfile` / `keyfile` / `cafile` / `capath` / `require_certificate` /
//! `crlfile` / `tls_version` / `ciphers` / `ciphers_tls1.3`, and driving a non-blocking
//! `rustls::ServerConnection` from the mio loop — ciphertext from the socket with
//! `read_tls` / `process_new_packets`, plaintext out of `reader()` into the connection's
//! read buffer; plaintext from the output queue into `writer()`, records to the socket
//! with `write_tls`. No extra threads.
//!
//! It never blocks, never interprets MQTT bytes and never logs key material. The verified
//! client certificate's subject CN is what `use_identity_as_username` uses, its subject DN
//! (`auth::x509`) what `use_subject_as_username` uses.

use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CipherSuite, RootCertStore, ServerConfig, ServerConnection};

use super::conn::Outgoing;
use super::tls::TlsError;
use crate::auth::x509;
use crate::config::TlsConfig;

/// OpenSSL's names (what mosquitto.conf's `ciphers` / `ciphers_tls1.3` hold) of the
/// suites rustls' ring provider implements.
const SUITE_NAMES: &[(&str, CipherSuite)] = &[
    (
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

fn read_file(tls: &TlsConfig, option: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|e| TlsError::new(tls, option, Some(path), format!("cannot read: {e}")))
}

pub(super) fn certs(
    tls: &TlsConfig,
    option: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(tls, option, path)?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut &pem[..]).collect();
    let certs = certs.map_err(|e| TlsError::new(tls, option, Some(path), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            tls,
            option,
            Some(path),
            "no certificate found".into(),
        ));
    }
    Ok(certs)
}

pub(super) fn key(tls: &TlsConfig, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(tls, "keyfile", path)?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| TlsError::new(tls, "keyfile", Some(path), e.to_string()))?
        .ok_or_else(|| TlsError::new(tls, "keyfile", Some(path), "no private key found".into()))
}

/// The ring provider with only the suites `ciphers` / `ciphers_tls1.3` name, in their
/// order. Only exact suite names are understood: an OpenSSL keyword or an unknown name is
/// an error, never a silently different set.
fn provider(tls: &TlsConfig) -> Result<CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if tls.ciphers.is_none() && tls.ciphers_tls13.is_none() {
        return Ok(provider);
    }
    let all = std::mem::take(&mut provider.cipher_suites);
    let is13 = |s: &rustls::SupportedCipherSuite| s.tls13().is_some();
    let pick = |option: &'static str, list: &str, tls13: bool| {
        let mut picked = Vec::new();
        for name in list.split([':', ',', ' ']).filter(|n| !n.is_empty()) {
            let wanted = SUITE_NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| *s);
            let suite = all
                .iter()
                .find(|s| Some(s.suite()) == wanted && is13(s) == tls13)
                .ok_or_else(|| {
                    let names: Vec<&str> = SUITE_NAMES
                        .iter()
                        .filter(|(n, _)| n.starts_with("TLS_") == tls13)
                        .map(|(n, _)| *n)
                        .collect();
                    TlsError::new(
                        tls,
                        option,
                        None,
                        format!(
                            "cipher '{name}' is not supported on a certificate listener \
                             (supported: {})",
                            names.join(":")
                        ),
                    )
                })?;
            picked.push(*suite);
        }
        Ok::<_, TlsError>(picked)
    };
    let tls12 = match &tls.ciphers {
        Some(list) => pick("ciphers", list, false)?,
        None => all.iter().filter(|s| !is13(s)).copied().collect(),
    };
    let tls13 = match &tls.ciphers_tls13 {
        Some(list) => pick("ciphers_tls1.3", list, true)?,
        None => all.iter().filter(|s| is13(s)).copied().collect(),
    };
    provider.cipher_suites = tls13.into_iter().chain(tls12).collect();
    Ok(provider)
}

/// The trusted CAs of `cafile` and `capath`.
pub(super) fn roots(tls: &TlsConfig) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &tls.cafile {
        for c in certs(tls, "cafile", ca)? {
            roots
                .add(c)
                .map_err(|e| TlsError::new(tls, "cafile", Some(ca), e.to_string()))?;
        }
    }
    if let Some(dir) = &tls.capath {
        let entries = fs::read_dir(dir)
            .map_err(|e| TlsError::new(tls, "capath", Some(dir), format!("cannot read: {e}")))?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_file() {
                // Non-certificate files in a capath are skipped, as OpenSSL does.
                for c in certs(tls, "capath", &p).unwrap_or_default() {
                    let _ = roots.add(c);
                }
            }
        }
    }
    Ok(roots)
}

/// Builds the rustls server configuration of one certificate listener, reading its files.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(provider(tls)?);
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.tls_version.as_deref() {
        Some("tlsv1.3") => &[&rustls::version::TLS13],
        // tls_version is the minimum; rustls has no TLS 1.1, so 1.2 is the floor.
        None | Some("tlsv1.2" | "tlsv1.1") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some(other) => return Err(TlsError::unsupported_version(tls, other)),
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::new(tls, "ciphers", None, e.to_string()))?;
    let roots = roots(tls)?;
    let crls = match &tls.crlfile {
        Some(path) => crate::auth::crl::parse(&read_file(tls, "crlfile", path)?)
            .map_err(|e| TlsError::new(tls, "crlfile", Some(path), e.to_string()))?,
        None => Vec::new(),
    };
    let builder = if roots.is_empty() {
        if tls.crlfile.is_some() || tls.require_certificate {
            let option = if tls.crlfile.is_some() {
                "crlfile"
            } else {
                "require_certificate"
            };
            return Err(TlsError::new(
                tls,
                option,
                None,
                "no CA certificate in cafile / capath to check client certificates".into(),
            ));
        }
        builder.with_no_client_auth()
    } else {
        let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        if !crls.is_empty() {
            // As Mosquitto's X509_V_FLAG_CRL_CHECK: the client certificate is checked, a
            // certificate whose issuer has no CRL in the file is refused, and so is every
            // certificate once the CRL is past its nextUpdate.
            v = v
                .with_crls(crls)
                .only_check_end_entity_revocation()
                .enforce_revocation_expiration();
        }
        if !tls.require_certificate {
            v = v.allow_unauthenticated();
        }
        let verifier = v
            .build()
            .map_err(|e| TlsError::new(tls, "crlfile", tls.crlfile.as_deref(), e.to_string()))?;
        // A version 1 client certificate is refused with the reason and the fix.
        builder.with_client_cert_verifier(Arc::new(super::tls_v1::ExplainV1(verifier)))
    };
    let (Some(certfile), Some(keyfile)) = (&tls.certfile, &tls.keyfile) else {
        return Err(TlsError::new(
            tls,
            "certfile",
            None,
            "certfile and keyfile are required".into(),
        ));
    };
    let mut config = builder
        .with_single_cert(certs(tls, "certfile", certfile)?, key(tls, keyfile)?)
        .map_err(|e| TlsError::new(tls, "keyfile", Some(keyfile), e.to_string()))?;
    // Mosquitto sets SSL_OP_CIPHER_SERVER_PREFERENCE: the listed order decides.
    config.ignore_client_order = tls.ciphers.is_some() || tls.ciphers_tls13.is_some();
    Ok(Arc::new(config))
}

/// The TLS state of one connection.
pub struct RustlsConn {
    conn: ServerConnection,
    /// The identity was handed to the broker already.
    identity_reported: bool,
    /// `use_subject_as_username`: the identity is the whole subject DN, not its CN.
    subject_dn: bool,
}

impl RustlsConn {
    pub fn new(config: &Arc<ServerConfig>, subject_dn: bool) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: ServerConnection::new(Arc::clone(config))?,
            identity_reported: false,
            subject_dn,
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
    pub fn flush(&mut self, stream: &mut TcpStream, out: &mut impl Outgoing) -> io::Result<bool> {
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

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Once the handshake is done: `Some(identity)` exactly once (the subject CN of the
    /// verified client certificate, if any; its whole subject DN in Mosquitto's form with
    /// `use_subject_as_username`).
    pub fn take_identity(&mut self) -> Option<Option<String>> {
        if self.identity_reported || self.conn.is_handshaking() {
            return None;
        }
        self.identity_reported = true;
        let cert = self.conn.peer_certificates().and_then(|c| c.first());
        Some(cert.and_then(|c| {
            if self.subject_dn {
                x509::subject_dn(c)
            } else {
                x509::subject_cn(c)
            }
        }))
    }

    /// Queues close_notify (best effort; the socket is closed right after).
    pub fn close(&mut self, stream: &mut TcpStream) {
        self.conn.send_close_notify();
        let _ = self.write_records(stream);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unsupported_tls_version_is_an_error() {
        let cfg = TlsConfig {
            tls_version: Some("sslv3".into()),
            ..TlsConfig::default()
        };
        assert!(server_config(&cfg).is_err());
    }

    #[test]
    fn cipher_names_map_to_rustls_suites_and_anything_else_is_an_error() {
        let cfg = |ciphers: Option<&str>, tls13: Option<&str>| TlsConfig {
            ciphers: ciphers.map(str::to_string),
            ciphers_tls13: tls13.map(str::to_string),
            ..TlsConfig::default()
        };
        let p = provider(&cfg(Some("ECDHE-RSA-AES128-GCM-SHA256"), None)).unwrap();
        let names: Vec<CipherSuite> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert!(names.contains(&CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256));
        assert!(!names.contains(&CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384));
        assert!(names.contains(&CipherSuite::TLS13_AES_256_GCM_SHA384));
        let p = provider(&cfg(None, Some("TLS_CHACHA20_POLY1305_SHA256"))).unwrap();
        let tls13: Vec<CipherSuite> = p
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_some())
            .map(|s| s.suite())
            .collect();
        assert_eq!(tls13, [CipherSuite::TLS13_CHACHA20_POLY1305_SHA256]);
        for (c, t) in [
            (Some("HIGH:!aNULL"), None),
            (Some("AES128-SHA"), None),
            (Some("TLS_AES_128_GCM_SHA256"), None),
            (None, Some("ECDHE-RSA-AES128-GCM-SHA256")),
        ] {
            let e = provider(&cfg(c, t)).unwrap_err().to_string();
            assert!(e.contains("not supported"), "{e}");
        }
    }
}
