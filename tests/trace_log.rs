//! The packet trace of `log_type all` (what `-v` turns on) line for line against a real
//! Mosquitto 2 running the same client session: mosquitto_sub / mosquitto_pub over MQTT
//! 3.1.1 and 5, QoS 0/1/2, a retained message, a will, then a refused login. Timestamps
//! and ports aside, every "Received ..." / "Sending ..." / will line must match.
//! Skipped (with a message) without the mosquitto broker and clients, unless
//! SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{BrokerProc, MosquittoProc};

const PASSWORD: &str = "s3cret";

/// Runs the scripted session against the broker on `port`; `log` reads the broker's log
/// lines so far (to wait for the subscription before publishing).
fn session(port: u16, log: &dyn Fn() -> Vec<String>) {
    let sub = common::mosquitto_tool("mosquitto_sub").unwrap();
    let publ = common::mosquitto_tool("mosquitto_pub").unwrap();
    let port = port.to_string();
    let auth = ["-u", "alice", "-P", PASSWORD];
    let base = |bin: &Path| {
        let mut c = Command::new(bin);
        c.args(["-h", "127.0.0.1", "-p", &port]).args(auth);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    };
    let mut sub1 = base(&sub)
        .args([
            "-V", "mqttv311", "-q", "2", "-t", "a/#", "-i", "sub1", "-C", "3",
        ])
        .args([
            "--will-topic",
            "wills/sub1",
            "--will-payload",
            "bye",
            "--will-qos",
            "1",
        ])
        .spawn()
        .unwrap();
    assert!(common::wait_until(common::TIMEOUT, || log()
        .iter()
        .any(|l| l.contains("Sending SUBACK to sub1"))));
    for args in [
        &["-q", "1", "-t", "a/b", "-m", "hello", "-i", "pub1"][..],
        &["-q", "2", "-r", "-t", "a/c", "-m", "hello2", "-i", "pub2"][..],
        &[
            "-V", "mqttv5", "-q", "0", "-t", "a/d", "-m", "x", "-i", "pub3",
        ][..],
    ] {
        assert!(
            base(&publ).args(args).status().unwrap().success(),
            "{args:?}"
        );
    }
    assert!(sub1.wait().unwrap().success(), "sub1 got its 3 messages");
    let sub5 = base(&sub)
        .args([
            "-V", "mqttv5", "-q", "1", "-t", "a/#", "-i", "sub5", "-C", "1",
        ])
        .status()
        .unwrap();
    assert!(sub5.success(), "sub5 got the retained message");
    // A refused login: wrong password.
    let refused = Command::new(&publ)
        .args(["-h", "127.0.0.1", "-p", &port, "-u", "alice", "-P", "wrong"])
        .args(["-t", "a/x", "-m", "no", "-i", "intruder"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!refused.success());
    assert!(common::wait_until(common::TIMEOUT, || log()
        .iter()
        .any(|l| l.contains("not authorised"))));
}

/// The trace lines of a log, without timestamps, sorted (clients run one after the
/// other, but a subscriber's acknowledgement may pass the next publisher's CONNECT).
fn trace(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .filter_map(|l| l.split_once(": ").map(|(_, rest)| rest.to_string()))
        .filter(|l| {
            l.starts_with("Received ")
                || l.starts_with("Sending ")
                || l.starts_with("Will message")
                || l.starts_with("No will")
                || l == "Client <unknown> disconnected, not authorised."
        })
        .collect();
    out.sort();
    out
}

#[test]
fn packet_trace_matches_mosquitto_line_for_line() {
    let (Some(mosquitto), Some(_), Some(passwd)) = (
        common::mosquitto_broker(),
        common::mosquitto_tool("mosquitto_sub"),
        common::mosquitto_tool("mosquitto_passwd"),
    ) else {
        return;
    };
    let dir = common::temp_dir("trace");
    let pw = dir.join("passwd");
    std::fs::write(&pw, "").unwrap();
    let made = Command::new(passwd)
        .arg("-b")
        .arg(&pw)
        .args(["alice", PASSWORD])
        .status()
        .unwrap();
    assert!(made.success());
    let common_conf = format!("allow_anonymous false\npassword_file {}\n", pw.display());

    // Mosquitto, logging into a file.
    let mlog = dir.join("mosquitto.log");
    let m = MosquittoProc::start(
        &mosquitto,
        &dir,
        &format!(
            "{common_conf}log_type all\nlog_dest file {}\n",
            mlog.display()
        ),
    );
    let read_mlog = || -> Vec<String> {
        std::fs::read_to_string(&mlog)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    session(m.port, &read_mlog);
    m.stop();
    let want = trace(&read_mlog());

    let b = BrokerProc::start_config(&format!(
        "listener 0 127.0.0.1\n{common_conf}log_type all\n"
    ));
    session(b.port, &|| b.log_lines());
    let got = trace(&b.log_lines());
    assert!(want.len() > 30, "Mosquitto's trace: {want:#?}");
    assert_eq!(got, want);
}
