//! `use_subject_as_username` against a real broker process: a client certificate with a
//! multi-attribute subject, mosquitto_pub over TLS, and the username the broker took
//! compared with OpenSSL's own RFC 2253 rendering of the subject (Mosquitto's form).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::tls::{listener_port, publish, run, tools, Pki};
use common::BrokerProc;

#[test]
fn use_subject_as_username_takes_the_subject_dn_as_mosquitto_prints_it() {
    let Some(t) = tools() else { return };
    let pki = Pki::generate(&t.openssl);
    // A client certificate whose subject has several attributes and needs escapes.
    let (key, csr, crt) = (pki.path("dn.key"), pki.path("dn.csr"), pki.path("dn.crt"));
    run(Command::new(&t.openssl)
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", "/C=GB/O=Example, Ltd/OU=IoT/CN=dev 1"])
        .args(["-keyout", &key, "-out", &csr]));
    let ext = pki.path("dn.ext");
    std::fs::write(
        &ext,
        "basicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n",
    )
    .unwrap();
    run(Command::new(&t.openssl)
        .args(["x509", "-req", "-days", "2", "-in", &csr])
        .args(["-CA", &pki.path("ca.crt"), "-CAkey", &pki.path("ca.key")])
        .args(["-CAcreateserial", "-extfile", &ext, "-out", &crt]));
    let shown = Command::new(&t.openssl)
        .args([
            "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", &crt,
        ])
        .output()
        .unwrap();
    let shown = String::from_utf8(shown.stdout).unwrap();
    let dn = shown
        .trim_end()
        .strip_prefix("subject=")
        .unwrap()
        .to_string();
    assert_eq!(dn, "CN=dev 1,OU=IoT,O=Example\\, Ltd,C=GB");

    let b = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
         require_certificate true\nuse_subject_as_username true",
        pki.path("ca.crt"),
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let port = listener_port(&b, 1);
    let args: Vec<String> = vec![
        "--cafile".into(),
        pki.path("ca.crt"),
        "--cert".into(),
        crt,
        "--key".into(),
        key,
        "-i".into(),
        "dn-client".into(),
    ];
    assert!(publish(&t, port, "dn/x", "hello", &args));
    assert!(
        b.wait_log(&format!("as dn-client (p2, c1, k60, u'{dn}')")),
        "{:?}",
        b.log_lines()
    );
}
