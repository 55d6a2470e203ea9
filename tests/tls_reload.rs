//! SIGHUP reloads TLS files for new connections without dropping existing ones,
//! black-box: the served certificate (as `openssl s_client` sees it) changes from A to B,
//! a subscriber connected before the reload keeps receiving, a broken key file keeps B
//! and logs why; a replaced psk_file admits the new identity and refuses the removed one
//! while the removed identity's open connection stays up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[cfg(feature = "psk")]
use common::tls::psk_args;
use common::tls::{listener_port, publish, served_subject, tools, Pki, Sub};
use common::{wait_until, BrokerProc, TIMEOUT};

/// Waits for the `n`-th log line containing `needle`.
fn wait_log_count(b: &BrokerProc, needle: &str, n: usize) -> bool {
    wait_until(TIMEOUT, || {
        b.log_lines().iter().filter(|l| l.contains(needle)).count() >= n
    })
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_only() {
    let Some(t) = tools() else { return };
    let pki = Pki::generate(&t.openssl);
    pki.issue("server_b", "localhost-b", "server_ext");
    let (live_crt, live_key) = (pki.path("live.crt"), pki.path("live.key"));
    std::fs::copy(pki.path("server.crt"), &live_crt).unwrap();
    std::fs::copy(pki.path("server.key"), &live_key).unwrap();
    let b = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\ncertfile {live_crt}\nkeyfile {live_key}"
    ));
    let port = listener_port(&b, 1);
    let ca_file = pki.path("ca.crt");
    let ca = pki.client_args(None);
    assert_eq!(
        served_subject(&t.openssl, port, &ca_file).as_deref(),
        Some("subject=CN = localhost")
    );
    // A subscriber connected with certificate A.
    let mut old = Sub::start(&t, port, "reload/#", &ca);
    assert!(old.subscribed());

    std::fs::copy(pki.path("server_b.crt"), &live_crt).unwrap();
    std::fs::copy(pki.path("server_b.key"), &live_key).unwrap();
    b.signal(libc::SIGHUP);
    assert!(
        wait_log_count(&b, "TLS files of listener", 1),
        "{:?}",
        b.log_lines()
    );
    assert_eq!(
        served_subject(&t.openssl, port, &ca_file).as_deref(),
        Some("subject=CN = localhost-b")
    );
    // The old connection is still up and served.
    assert!(publish(&t, port, "reload/x", "after-b", &ca));
    assert!(
        old.wait_line("reload/x after-b", TIMEOUT),
        "{}",
        old.output()
    );

    // A broken key: the reload fails, says why, and B stays.
    std::fs::write(
        &live_key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    b.signal(libc::SIGHUP);
    assert!(b.wait_log("TLS reload of listener"));
    assert!(
        b.log_lines()
            .iter()
            .any(|l| l.contains("TLS reload of listener") && l.contains("keyfile")),
        "{:?}",
        b.log_lines()
    );
    assert_eq!(
        served_subject(&t.openssl, port, &ca_file).as_deref(),
        Some("subject=CN = localhost-b")
    );
    assert!(publish(&t, port, "reload/y", "still-b", &ca));
    assert!(old.wait_line("reload/y still-b", TIMEOUT));
}

#[cfg(feature = "psk")]
#[test]
fn sighup_reloads_the_psk_file() {
    let Some(t) = tools() else { return };
    let dir = common::temp_dir("pskreload");
    let file = dir.join("psk");
    std::fs::write(&file, "alice:a11ce\n").unwrap();
    let b = BrokerProc::start(&format!(
        "psk_file {}\nlistener 0 127.0.0.1\npsk_hint reload",
        file.display()
    ));
    let port = listener_port(&b, 1);
    let mut alice = Sub::start(&t, port, "psk/#", &psk_args("alice", "a11ce", &[]));
    assert!(alice.subscribed());
    assert!(!publish(
        &t,
        port,
        "psk/x",
        "early",
        &psk_args("carol", "ca201", &[])
    ));

    std::fs::write(&file, "carol:ca201\n").unwrap();
    b.signal(libc::SIGHUP);
    assert!(wait_log_count(&b, "TLS files of listener", 1));
    assert!(publish(
        &t,
        port,
        "psk/x",
        "from-carol",
        &psk_args("carol", "ca201", &[])
    ));
    // alice's session predates the reload and stays; a new alice connection is refused.
    assert!(
        alice.wait_line("psk/x from-carol", TIMEOUT),
        "{}",
        alice.output()
    );
    assert!(!publish(
        &t,
        port,
        "psk/x",
        "new-alice",
        &psk_args("alice", "a11ce", &[])
    ));

    // A broken psk_file keeps carol's key and names the line.
    std::fs::write(&file, "carol:ca201\ndave:not-hex\n").unwrap();
    b.signal(libc::SIGHUP);
    assert!(b.wait_log("TLS reload of listener"));
    assert!(
        b.log_lines()
            .iter()
            .any(|l| l.contains("psk_file") && l.contains("line 2")),
        "{:?}",
        b.log_lines()
    );
    assert!(publish(
        &t,
        port,
        "psk/x",
        "still-carol",
        &psk_args("carol", "ca201", &[])
    ));
    assert!(alice.wait_line("psk/x still-carol", TIMEOUT));
}
