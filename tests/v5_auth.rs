//! MQTT 5 enhanced authentication, SCRAM-SHA-256, against a real broker: credentials
//! written by `shardmq passwd -H scram-sha-256`, a client whose SCRAM is Python's hashlib
//! and hmac (`tests/paho/v5_scram.py`): CONNECT / AUTH / CONNACK with the server's
//! signature checked, re-authentication, a wrong password (0x86), an unknown method
//! (0x8C); and the same user logging in with a plain password (mosquitto_pub).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::BrokerProc;

fn scram_password_file() -> std::path::PathBuf {
    let dir = common::temp_dir("scram");
    let file = dir.join("pw");
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .args(["passwd", "-H", "scram-sha-256", "-c", "-b"])
        .arg(&file)
        .args(["carol", "s3cret pass"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("carol:$scram-sha-256$4096$"), "{text}");
    file
}

#[test]
fn scram_sha_256_connect_reauthenticate_and_refusals() {
    if !common::paho_available() {
        return;
    }
    let file = scram_password_file();
    let broker = BrokerProc::start(&format!(
        "allow_anonymous false\npassword_file {}\n",
        file.display()
    ));
    let checks = [
        "scram connect",
        "scram re-authentication",
        "re-authentication with another method refused",
        "wrong password refused",
        "unknown method refused",
    ];
    let port = broker.port.to_string();
    common::run_python_checks("v5_scram.py", &[&port, "carol", "s3cret pass"], &checks);
}

/// A `$scram-sha-256$` entry also takes a plain CONNECT password.
#[test]
fn scram_entry_accepts_a_plain_password() {
    let Some(pub_bin) = common::mosquitto_tool("mosquitto_pub") else {
        return;
    };
    let file = scram_password_file();
    let broker = BrokerProc::start(&format!(
        "allow_anonymous false\npassword_file {}\n",
        file.display()
    ));
    let run = |password: &str| {
        Command::new(&pub_bin)
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args([
                "-u", "carol", "-P", password, "-t", "t", "-m", "x", "-q", "1",
            ])
            .status()
            .unwrap()
            .success()
    };
    assert!(run("s3cret pass"));
    assert!(!run("wrong"));
}
