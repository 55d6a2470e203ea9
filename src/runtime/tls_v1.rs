//! X.509 version 1 client certificates, which `openssl x509 -req` makes when no
//! extensions are given and which many Mosquitto set-ups use. rustls-webpki accepts
//! only version 3 end-entity certificates, and no well-kept Rust verifier accepts
//! version 1, so shardmq refuses them, but says why and how to make a version 3
//! certificate instead of webpki's bare `UnsupportedCertVersion`.
//!
//! [`ExplainV1`] wraps the client certificate verifier and only rewrites that one
//! refusal; every decision stays webpki's. It never accepts what the inner verifier
//! refuses.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

/// Why a version 1 client certificate was refused, and what to do about it.
pub struct V1Certificate;

/// rustls shows a `CertificateError::Other` with `{:?}`, so Debug is the message too:
/// the handshake failure line then says why and how to fix it.
impl std::fmt::Debug for V1Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for V1Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the client certificate is X.509 version 1 (as `openssl x509 -req` makes it without \
             extensions); shardmq accepts version 3 only: sign the request again with an \
             extension, e.g. `openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key \
             -CAcreateserial -days 365 -out client.crt -extfile <(printf \
             'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\\n')`",
        )
    }
}

impl std::error::Error for V1Certificate {}

/// The version of a DER certificate: 1, 2 or 3; `None` if it does not parse that far.
pub fn x509_version(der: &[u8]) -> Option<u8> {
    /// Skips a tag and a DER length; returns what follows the header.
    fn enter(der: &[u8], tag: u8) -> Option<&[u8]> {
        let (&t, rest) = der.split_first()?;
        if t != tag {
            return None;
        }
        let (&len, rest) = rest.split_first()?;
        let skip = if len & 0x80 == 0 {
            0
        } else {
            usize::from(len & 0x7F)
        };
        rest.get(skip..)
    }
    let tbs = enter(enter(der, 0x30)?, 0x30)?;
    match tbs.first()? {
        // [0] EXPLICIT Version: INTEGER 0 = v1, 1 = v2, 2 = v3.
        0xA0 => {
            let version = enter(enter(tbs, 0xA0)?, 0x02)?;
            version.first().map(|v| v.saturating_add(1))
        }
        // No version field: the default, v1.
        0x02 => Some(1),
        _ => None,
    }
}

/// A client certificate verifier that explains a refused version 1 certificate.
#[derive(Debug)]
pub struct ExplainV1(pub Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ExplainV1 {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| {
                if x509_version(end_entity) == Some(1) {
                    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                        Arc::new(V1Certificate),
                    )))
                } else {
                    e
                }
            })
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.0.requires_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_der() {
        // SEQUENCE { SEQUENCE { [0] { INTEGER 2 } ... } }: v3.
        assert_eq!(
            x509_version(&[0x30, 0x08, 0x30, 0x06, 0xA0, 0x03, 0x02, 0x01, 0x02, 0x02]),
            Some(3)
        );
        // No [0]: the serial number INTEGER comes first: v1.
        assert_eq!(
            x509_version(&[0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x07]),
            Some(1)
        );
        // Long-form lengths.
        assert_eq!(
            x509_version(&[0x30, 0x82, 0x01, 0x00, 0x30, 0x81, 0xF0, 0x02, 0x01, 0x07]),
            Some(1)
        );
        for bad in [
            &[][..],
            &[0x30],
            &[0x31, 0, 0],
            &[0x30, 0x02, 0x30, 0x00],
            &[0x30, 0x82],
        ] {
            assert_eq!(x509_version(bad), None);
        }
    }
}
