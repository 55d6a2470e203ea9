//! TLS listeners, black-box: certificates are generated at run time with `openssl` (a CA,
//! a server certificate for localhost / 127.0.0.1, a client certificate), and
//! mosquitto_pub / mosquitto_sub connect with `--cafile` (and `--cert` / `--key`).
//! Skipped with a message when openssl or the mosquitto clients are missing, unless
//! SHARDMQ_REQUIRE_INTEROP=1. PSK, CRLs and reloads have their own files (tls_*.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::tls::{listener_port, plain_client_refused, refused_start, roundtrip, tools, Pki};
use common::BrokerProc;
use std::process::{Command, Stdio};

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

#[test]
fn tls_listener_serves_mosquitto_clients() {
    let Some(t) = tools() else { return };
    let pki = Pki::generate(&t.openssl);
    let b = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\ncertfile {}\nkeyfile {}",
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let port = listener_port(&b, 1);
    let ca = pki.client_args(None);
    assert!(roundtrip(&t, port, "tls/a", &ca, &ca));
    // MQTT 5 over TLS too.
    let mut v5 = ca;
    v5.extend(args(&["-V", "mqttv5"]));
    assert!(roundtrip(&t, port, "tls/b", &v5, &v5));
    // A plain-text client on the TLS port gets nothing and the broker carries on.
    assert!(plain_client_refused(port));
    // The failed handshake is logged with the peer address and the reason.
    assert!(b.wait_log("Client connection from 127.0.0.1:"));
    assert!(
        b.log_lines()
            .iter()
            .any(|l| l.contains("failed: TLS handshake failed") && l.contains("127.0.0.1:")),
        "{:?}",
        b.log_lines()
    );
    let (_c, _, code) = common::Raw::mqtt_connect(b.port, "plain-ok", true);
    assert_eq!(code, 0);
}

#[test]
fn tls_require_certificate_and_identity_as_username() {
    let Some(t) = tools() else { return };
    let pki = Pki::generate(&t.openssl);
    let acl = pki.dir.join("acl");
    std::fs::write(&acl, "user client1\ntopic readwrite id/#\n").unwrap();
    let b = BrokerProc::start(&format!(
        "acl_file {}\nlistener 0 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
         require_certificate true\nuse_identity_as_username true",
        acl.display(),
        pki.path("ca.crt"),
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let port = listener_port(&b, 1);
    let with_cert = pki.client_args(Some("client1"));
    // The certificate's CN is the username: the ACL for client1 applies.
    assert!(roundtrip(&t, port, "id/x", &with_cert, &with_cert));
    // Without a client certificate the handshake fails, and the log says why.
    let ca = pki.client_args(None);
    assert!(!roundtrip(&t, port, "id/y", &ca, &ca));
    assert!(b.wait_log("failed: TLS handshake failed: peer sent no certificates"));
    // A certificate from another CA is refused.
    let rogue = pki.client_args(Some("rogue"));
    assert!(!roundtrip(&t, port, "id/z", &rogue, &rogue));
}

#[test]
fn tls_version_13_only() {
    let Some(t) = tools() else { return };
    let pki = Pki::generate(&t.openssl);
    let b = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\ncertfile {}\nkeyfile {}\ntls_version tlsv1.3",
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let port = listener_port(&b, 1);
    let ca = pki.path("ca.crt");
    let mut v13 = pki.client_args(None);
    v13.extend(args(&["--tls-version", "tlsv1.3"]));
    assert!(roundtrip(&t, port, "v/13", &v13, &v13));
    // mosquitto clients treat --tls-version as a minimum; openssl s_client can insist.
    let handshake = |flag: &str| {
        Command::new(&t.openssl)
            .args(["s_client", flag, "-connect", &format!("127.0.0.1:{port}")])
            .args(["-CAfile", &ca, "-verify_return_error"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(handshake("-tls1_3"));
    assert!(!handshake("-tls1_2"));
}

#[test]
fn tls_cipher_list_is_honoured_on_certificate_listeners() {
    let Some(t) = tools() else { return };
    let pki = Pki::generate(&t.openssl);
    let b = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\ncertfile {}\nkeyfile {}\nciphers ECDHE-ECDSA-AES128-GCM-SHA256\n\
         ciphers_tls1.3 TLS_CHACHA20_POLY1305_SHA256",
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let port = listener_port(&b, 1);
    let ca = pki.path("ca.crt");
    let cipher = |extra: &[&str]| {
        let out = Command::new(&t.openssl)
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-CAfile", &ca, "-verify_return_error"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), text)
    };
    let (ok, text) = cipher(&["-tls1_3"]);
    assert!(
        ok && text.contains("TLS_CHACHA20_POLY1305_SHA256"),
        "{text}"
    );
    let (ok, text) = cipher(&["-tls1_2"]);
    assert!(
        ok && text.contains("ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{text}"
    );
    let (ok, _) = cipher(&["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"]);
    assert!(!ok, "a suite left out of `ciphers` was negotiated");
}

#[test]
fn tls_bad_key_file_stops_the_start() {
    let dir = common::temp_dir("badtls");
    let err = refused_start(&format!(
        "listener 0 127.0.0.1\ncertfile {0}/missing.crt\nkeyfile {0}/missing.key\n",
        dir.display()
    ));
    assert!(
        err.contains("missing.crt") && err.contains("certfile") && err.contains("line 2"),
        "{err}"
    );
    // An unknown cipher name stops the start too, naming the option and line.
    let Some(t) = tools() else { return };
    let pki = Pki::generate(&t.openssl);
    let err = refused_start(&format!(
        "listener 0 127.0.0.1\ncertfile {}\nkeyfile {}\nciphers HIGH:!aNULL\n",
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    assert!(
        err.contains("ciphers") && err.contains("line 4") && err.contains("HIGH"),
        "{err}"
    );
}
