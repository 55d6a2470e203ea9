//! Certificate revocation lists for `crlfile`: bytes of a file -> checked CRLs.
//!
//! Sans-IO: [`parse`] takes the file's bytes (PEM, one or more `X509 CRL` blocks, as
//! Mosquitto reads it; or a single DER CRL) and returns the CRLs in DER after each one
//! parsed with webpki, the parser the rustls verifier uses, so that a file the verifier
//! would choke on stops the start instead of the first client's handshake. Revocation
//! itself is checked by rustls' `WebPkiClientVerifier`. This module reads no file and
//! never panics on any input (it is a fuzz target).

use rustls::pki_types::CertificateRevocationListDer;

/// Why a CRL file cannot be used (the caller adds the file name and option).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    #[error("no certificate revocation list found (expected PEM \"X509 CRL\" blocks)")]
    Empty,
    #[error("unreadable PEM: {0}")]
    Pem(String),
    #[error("certificate revocation list {index} is invalid: {reason}")]
    Invalid { index: usize, reason: String },
}

/// Splits and checks the CRLs in `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, CrlError> {
    let mut crls = Vec::new();
    if bytes.starts_with(&[0x30]) {
        // A DER file: one CRL, no PEM armour.
        crls.push(CertificateRevocationListDer::from(bytes.to_vec()));
    } else {
        for crl in rustls_pemfile::crls(&mut &bytes[..]) {
            crls.push(crl.map_err(|e| CrlError::Pem(e.to_string()))?);
        }
    }
    if crls.is_empty() {
        return Err(CrlError::Empty);
    }
    for (i, crl) in crls.iter().enumerate() {
        webpki::OwnedCertRevocationList::from_der(crl.as_ref()).map_err(|e| CrlError::Invalid {
            index: i + 1,
            reason: format!("{e:?}"),
        })?;
    }
    Ok(crls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_ca_crls_parse_as_pem_and_der() {
        // `openssl ca -gencrl` output (one revoked certificate), as the fuzz seeds keep it.
        let pem = include_bytes!("../../fuzz/corpus/crl/seed-00");
        let der = include_bytes!("../../fuzz/corpus/crl/seed-01");
        let from_pem = parse(pem).map_err(|e| e.to_string());
        assert_eq!(from_pem.as_ref().map(Vec::len), Ok(1));
        let from_der = parse(der).map_err(|e| e.to_string());
        assert_eq!(from_der, from_pem);
        // Two CRLs in one PEM file are both kept.
        let two = [&pem[..], &pem[..]].concat();
        assert_eq!(parse(&two).map(|c| c.len()), Ok(2));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert_eq!(parse(b""), Err(CrlError::Empty));
        assert_eq!(parse(b"hello"), Err(CrlError::Empty));
        // A certificate is not a CRL.
        let cert = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert_eq!(parse(cert), Err(CrlError::Empty));
        let bad_pem = b"-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n";
        assert!(matches!(
            parse(bad_pem),
            Err(CrlError::Invalid { index: 1, .. })
        ));
        assert!(matches!(
            parse(&[0x30, 0x82, 0xff]),
            Err(CrlError::Invalid { .. })
        ));
    }
}
