//! TLS-PSK listeners, black-box with mosquitto_pub / mosquitto_sub `--psk --psk-identity`:
//! a known identity with its key publishes and subscribes; a wrong key, an unknown
//! identity and a plain-TCP client are refused, each with a log line naming the peer and
//! the reason; `use_identity_as_username` makes the PSK identity the username that the
//! password and ACL rules see. Skipped with a message when the mosquitto clients are
//! missing, unless SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(not(feature = "psk"), allow(dead_code, unused_imports))]

mod common;

use common::tls::{listener_port, plain_client_refused, psk_args, publish, roundtrip, tools, Sub};
use common::BrokerProc;

const ALICE_KEY: &str = "00deadbeef0123456789abcdef";
const BOB_KEY: &str = "c0ffee";

/// A broker with `extra` config, after writing the psk_file (alice and bob) it names as
/// `PSKFILE`.
fn broker(extra: &str) -> BrokerProc {
    let dir = common::temp_dir("psk");
    let file = dir.join("psk");
    std::fs::write(
        &file,
        format!("# test identities\nalice:{ALICE_KEY}\n\n bob : {BOB_KEY}\n"),
    )
    .unwrap();
    BrokerProc::start(&extra.replace("PSKFILE", file.to_str().unwrap()))
}

#[cfg(feature = "psk")]
#[test]
fn psk_clients_publish_and_subscribe() {
    let Some(t) = tools() else { return };
    let b = broker("psk_file PSKFILE\nlistener 0 127.0.0.1\npsk_hint shardmq-test");
    let port = listener_port(&b, 1);
    let alice = psk_args("alice", ALICE_KEY, &[]);
    let bob = psk_args("bob", BOB_KEY, &[]);
    assert!(
        roundtrip(&t, port, "psk/a", &alice, &bob),
        "{:?}",
        b.log_lines()
    );
    // MQTT 5, and TLS 1.2 (where the hint is sent) as well as the default TLS 1.3.
    let v5 = psk_args("alice", ALICE_KEY, &["-V", "mqttv5"]);
    assert!(roundtrip(&t, port, "psk/b", &v5, &v5));
    let v12 = psk_args("bob", BOB_KEY, &["--tls-version", "tlsv1.2"]);
    assert!(roundtrip(&t, port, "psk/c", &v12, &v12));
}

#[cfg(feature = "psk")]
#[test]
fn psk_refuses_wrong_keys_unknown_identities_and_plain_tcp() {
    let Some(t) = tools() else { return };
    let b = broker("psk_file PSKFILE\nlistener 0 127.0.0.1\npsk_hint shardmq-test");
    let port = listener_port(&b, 1);
    let mut sub = Sub::start(&t, port, "psk/#", &psk_args("alice", ALICE_KEY, &[]));
    assert!(sub.subscribed());
    // A wrong key and an unknown identity get no connection, and the log says why.
    assert!(!publish(
        &t,
        port,
        "psk/x",
        "wrong",
        &psk_args("bob", "c0ffef", &[])
    ));
    assert!(b.wait_log("PSK identity \"bob\" did not prove its key"));
    assert!(!publish(
        &t,
        port,
        "psk/x",
        "who",
        &psk_args("carol", BOB_KEY, &[])
    ));
    assert!(b.wait_log("unknown PSK identity \"carol\""));
    // A plain MQTT client on the PSK port gets no CONNACK and is closed.
    assert!(plain_client_refused(port));
    // All three refusals are logged with the peer (the log arrives through a pipe).
    let refusals = || {
        b.log_lines()
            .iter()
            .filter(|l| l.contains("Client connection from 127.0.0.1:") && l.contains("failed"))
            .count()
    };
    assert!(
        common::wait_until(common::TIMEOUT, || refusals() >= 3),
        "{:?}",
        b.log_lines()
    );
    // Nothing from the refused clients arrived; the good one still gets through.
    assert!(publish(
        &t,
        port,
        "psk/x",
        "good",
        &psk_args("bob", BOB_KEY, &[])
    ));
    assert!(sub.wait_line("psk/x good", common::TIMEOUT));
    assert!(!sub.output().contains("psk/x wrong") && !sub.output().contains("psk/x who"));
}

#[cfg(feature = "psk")]
#[test]
fn psk_identity_as_username_meets_passwords_and_acls() {
    let Some(t) = tools() else { return };
    let dir = common::temp_dir("pskacl");
    let (acl, passwd) = (dir.join("acl"), dir.join("passwd"));
    // Only alice may use psk/#; nobody is anonymous; the password file knows nobody we use.
    std::fs::write(&acl, "user alice\ntopic readwrite psk/#\n").unwrap();
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .args(["passwd", "-c", "-b"])
        .arg(&passwd)
        .args(["someone", "secret"])
        .status()
        .unwrap();
    assert!(made.success());
    let b = broker(&format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\npsk_file PSKFILE\n\
         listener 0 127.0.0.1\npsk_hint with-identity\nuse_identity_as_username true\n\
         listener 0 127.0.0.1\npsk_hint without-identity",
        passwd.display(),
        acl.display()
    ));
    let (with_id, without_id) = (listener_port(&b, 1), listener_port(&b, 2));
    // The identity is the username: alice needs no password and her ACL applies.
    let alice = psk_args("alice", ALICE_KEY, &[]);
    assert!(
        roundtrip(&t, with_id, "psk/a", &alice, &alice),
        "{:?}",
        b.log_lines()
    );
    // bob is a valid PSK client, but the ACL gives him nothing.
    let mut bob = Sub::start(
        &t,
        with_id,
        "psk/#",
        &psk_args("bob", BOB_KEY, &["-V", "mqttv311"]),
    );
    assert!(
        bob.wait_line("Subscribed (mid: 1): 128", common::TIMEOUT),
        "{}",
        bob.output()
    );
    // Without use_identity_as_username the same TLS session is an anonymous client.
    let mut anon = Sub::start(&t, without_id, "psk/#", &alice);
    assert!(!anon.subscribed());
    assert!(
        anon.output().contains("not authorised") || anon.output().contains("CONNACK (5)"),
        "{}",
        anon.output()
    );
}

/// Built without the `psk` feature, a PSK option stops the start (never a plain listener).
#[cfg(not(feature = "psk"))]
#[test]
fn without_the_psk_feature_a_psk_listener_refuses_to_start() {
    let err = common::tls::refused_start("listener 0 127.0.0.1\npsk_hint h\npsk_file /p\n");
    assert!(
        err.contains("psk_hint") && err.contains("c.conf line 2") && err.contains("feature"),
        "{err}"
    );
}

/// `openssl s_client` with PSK and the given protocol / cipher flags: did it connect?
#[cfg(feature = "psk")]
fn s_client_psk(openssl: &std::path::Path, port: u16, flags: &[&str]) -> bool {
    std::process::Command::new(openssl)
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-psk_identity", "alice", "-psk", ALICE_KEY])
        .args(flags)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
        .status
        .success()
}

#[cfg(feature = "psk")]
#[test]
fn psk_ciphers_are_honoured_and_a_bad_list_stops_the_start() {
    let Some(t) = tools() else { return };
    let b = broker(
        "psk_file PSKFILE\nlistener 0 127.0.0.1\npsk_hint h\nciphers PSK-AES128-GCM-SHA256\n\
         ciphers_tls1.3 TLS_AES_128_GCM_SHA256",
    );
    let port = listener_port(&b, 1);
    let s = |flags: &[&str]| s_client_psk(&t.openssl, port, flags);
    assert!(s(&["-tls1_2", "-cipher", "PSK-AES128-GCM-SHA256"]));
    assert!(!s(&["-tls1_2", "-cipher", "PSK-AES256-GCM-SHA384"]));
    assert!(s(&["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"]));
    // (A SHA-384 suite cannot carry the SHA-256 PSK at all: CHACHA20 is the real check.)
    assert!(!s(&[
        "-tls1_3",
        "-ciphersuites",
        "TLS_CHACHA20_POLY1305_SHA256"
    ]));
    let err = common::tls::refused_start(
        "psk_file /dev/null\nlistener 0 127.0.0.1\npsk_hint h\nciphers NO-SUCH-CIPHER\n",
    );
    assert!(
        err.contains("ciphers") && err.contains("c.conf line 4"),
        "{err}"
    );
}
