//! TLS to a bridge's remote (`bridge_cafile` ...) with rustls, as the listeners: the
//! client configuration built from a bridge's files ([`client_config`], checked when the
//! broker prepares, so that a bad file stops the start), and [`BridgeTls`], a
//! non-blocking `rustls::ClientConnection` between the bridge's socket and its link's
//! bytes. `bridge_insecure` skips the host name check only: the chain is still verified
//! against the bridge's CAs.
//!
//! With `bridge_psk` the session is OpenSSL's instead (`bridge_psk.rs`); [`BridgeTls`]
//! drives either the same way. It never blocks, never interprets MQTT bytes and never
//! logs key material.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::BytesMut;
use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct};

use super::tls::TlsError;
use super::tls_rustls::{certs, key, roots};
use crate::config::BridgeConfig;

/// `bridge_insecure`: the chain is verified, the name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The rustls client configuration of a TLS bridge (reads its files).
pub fn client_config(b: &BridgeConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let tls = &b.tls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.tls_version.as_deref() {
        Some("tlsv1.3") => &[&rustls::version::TLS13],
        // The minimum; rustls has no TLS 1.1, so 1.2 is the floor.
        None | Some("tlsv1.2" | "tlsv1.1") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some(other) => return Err(TlsError::unsupported_version(tls, other)),
    };
    let roots = roots(tls)?;
    if roots.is_empty() {
        return Err(TlsError::new(
            tls,
            "cafile",
            tls.cafile.as_deref().or(tls.capath.as_deref()),
            "no CA certificate to verify the remote with".into(),
        ));
    }
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| TlsError::new(tls, "cafile", None, e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::new(tls, "tls_version", None, e.to_string()))?;
    let builder = if b.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
    } else {
        builder.with_webpki_verifier(verifier)
    };
    let mut config = match (&tls.certfile, &tls.keyfile) {
        (Some(certfile), Some(keyfile)) => builder
            .with_client_auth_cert(certs(tls, "certfile", certfile)?, key(tls, keyfile)?)
            .map_err(|e| TlsError::new(tls, "keyfile", Some(keyfile), e.to_string()))?,
        _ => builder.with_no_client_auth(),
    };
    if let Some(alpn) = &b.alpn {
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    }
    Ok(Arc::new(config))
}

/// The host part of a bridge address `host:port` (`[v6]:port` too), for SNI and the
/// certificate's name check.
fn host(address: &str) -> &str {
    let h = address.rsplit_once(':').map_or(address, |(h, _)| h);
    h.trim_start_matches('[').trim_end_matches(']')
}

/// What a bridge's TLS connections are made from: certificates (rustls) or, with
/// `bridge_psk`, a pre-shared key (OpenSSL, `bridge_psk.rs`).
#[derive(Clone)]
pub enum ClientTls {
    Cert(Arc<ClientConfig>),
    #[cfg(feature = "psk")]
    Psk(openssl::ssl::SslContext),
}

/// The TLS setup of bridge `b`; `None` when it connects in clear.
pub fn client_tls(b: &BridgeConfig) -> Result<Option<ClientTls>, String> {
    if b.uses_psk() {
        #[cfg(feature = "psk")]
        return super::bridge_psk::context(b).map(|c| Some(ClientTls::Psk(c)));
        #[cfg(not(feature = "psk"))]
        return Err("TLS-PSK needs shardmq built with the `psk` feature".into());
    }
    if b.uses_tls() {
        return client_config(b)
            .map(|c| Some(ClientTls::Cert(c)))
            .map_err(|e| e.to_string());
    }
    Ok(None)
}

/// One TLS connection to a bridge's remote.
pub enum BridgeTls {
    Cert(Box<ClientConnection>),
    #[cfg(feature = "psk")]
    Psk(Box<super::tls_psk::PskConn>),
}

impl BridgeTls {
    pub fn new(config: &ClientTls, address: &str) -> Result<Self, String> {
        match config {
            ClientTls::Cert(config) => {
                let name = ServerName::try_from(host(address).to_string())
                    .map_err(|e| format!("TLS: bad server name {}: {e}", host(address)))?;
                let conn = ClientConnection::new(Arc::clone(config), name)
                    .map_err(|e| format!("TLS setup: {e}"))?;
                Ok(Self::Cert(Box::new(conn)))
            }
            #[cfg(feature = "psk")]
            ClientTls::Psk(context) => super::tls_psk::PskConn::new_client(context)
                .map(|p| Self::Psk(Box::new(p)))
                .map_err(|e| format!("TLS-PSK setup: {e}")),
        }
    }

    /// Reads what the socket has and decrypts it into `out`. `Ok(true)`: the remote
    /// closed the connection.
    pub fn read(&mut self, stream: &mut TcpStream, out: &mut BytesMut) -> io::Result<bool> {
        match self {
            Self::Cert(conn) => read_cert(conn, stream, out),
            #[cfg(feature = "psk")]
            Self::Psk(p) => super::bridge_psk::read(p, stream, out),
        }
    }

    /// Encrypts what the TLS session takes of `out` (removed from it) and writes records
    /// until the socket is full. `Ok(true)` when everything was written.
    pub fn write(&mut self, stream: &mut TcpStream, out: &mut BytesMut) -> io::Result<bool> {
        match self {
            Self::Cert(conn) => write_cert(conn, stream, out),
            #[cfg(feature = "psk")]
            Self::Psk(p) => super::bridge_psk::write(p, stream, out),
        }
    }
}

fn read_cert(
    conn: &mut ClientConnection,
    stream: &mut TcpStream,
    out: &mut BytesMut,
) -> io::Result<bool> {
    let mut eof = false;
    loop {
        match conn.read_tls(stream) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        process(conn)?;
    }
    process(conn)?;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match conn.reader().read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(eof),
            Err(e) => return Err(e),
        }
    }
}

fn process(conn: &mut ClientConnection) -> io::Result<()> {
    conn.process_new_packets()
        .map(|_| ())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))
}

fn write_cert(
    conn: &mut ClientConnection,
    stream: &mut TcpStream,
    out: &mut BytesMut,
) -> io::Result<bool> {
    if !out.is_empty() && !conn.is_handshaking() {
        let n = conn.writer().write(out)?;
        let _ = out.split_to(n);
    }
    while conn.wants_write() {
        match conn.write_tls(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out.is_empty())
}

#[cfg(test)]
mod tests {
    use super::host;

    #[test]
    fn host_of_an_address() {
        assert_eq!(host("broker.example:8883"), "broker.example");
        assert_eq!(host("127.0.0.1:1883"), "127.0.0.1");
        assert_eq!(host("[::1]:8883"), "::1");
    }
}
