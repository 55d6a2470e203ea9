//! `crlfile` on a certificate listener with `require_certificate true`, black-box: a test
//! CA issues two client certificates, revokes one with `openssl ca -revoke` and writes a
//! CRL with `openssl ca -gencrl`; mosquitto_pub/sub with the revoked certificate are
//! refused (and the log says so), with the other they are served. A missing or broken CRL
//! file stops the start naming the file, the option and its line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::tls::{listener_port, refused_start, roundtrip, tools, Pki};
use common::BrokerProc;

#[test]
fn revoked_client_certificate_is_refused_the_other_accepted() {
    let Some(t) = tools() else { return };
    let pki = Pki::generate(&t.openssl);
    pki.issue("client2", "client2", "client_ext");
    pki.revoke("client2");
    pki.gencrl("crl.pem");
    let b = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
         crlfile {}",
        pki.path("ca.crt"),
        pki.path("server.crt"),
        pki.path("server.key"),
        pki.path("crl.pem")
    ));
    let port = listener_port(&b, 1);
    let good = pki.client_args(Some("client1"));
    assert!(
        roundtrip(&t, port, "crl/ok", &good, &good),
        "{:?}",
        b.log_lines()
    );
    let revoked = pki.client_args(Some("client2"));
    assert!(!roundtrip(&t, port, "crl/revoked", &revoked, &revoked));
    assert!(b.wait_log("failed: TLS handshake failed: invalid peer certificate: Revoked"));
    // The same certificate without a CRL is fine: the refusal is the CRL's doing.
    let plain = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true",
        pki.path("ca.crt"),
        pki.path("server.crt"),
        pki.path("server.key"),
    ));
    let port = listener_port(&plain, 1);
    assert!(roundtrip(&t, port, "crl/none", &revoked, &revoked));
}

#[test]
fn missing_or_broken_crl_file_stops_the_start() {
    let Some(openssl) = common::tls::openssl() else {
        return;
    };
    let pki = Pki::generate(&openssl);
    let broken = pki.dir.join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let not_a_crl = pki.path("ca.crt");
    let missing = pki.dir.join("missing.pem");
    for (crl, why) in [
        (missing.to_str().unwrap(), "cannot read"),
        (broken.to_str().unwrap(), "invalid"),
        (not_a_crl.as_str(), "no certificate revocation list"),
    ] {
        let err = refused_start(&format!(
            "listener 0 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
             require_certificate true\ncrlfile {crl}\n",
            pki.path("ca.crt"),
            pki.path("server.crt"),
            pki.path("server.key"),
        ));
        assert!(
            err.contains("crlfile")
                && err.contains(crl)
                && err.contains("c.conf line 6")
                && err.contains(why),
            "{err}"
        );
    }
}
