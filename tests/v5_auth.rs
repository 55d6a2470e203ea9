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

fn python_available() -> bool {
    let ok = Command::new("python3")
        .arg("-c")
        .arg("import hashlib, hmac")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("SHARDMQ_REQUIRE_INTEROP").as_deref() != Ok("1"),
            "python3 not found and SHARDMQ_REQUIRE_INTEROP=1"
        );
        eprintln!("SKIPPED: python3 not found");
    }
    ok
}

#[test]
fn scram_sha_256_connect_reauthenticate_and_refusals() {
    if !python_available() {
        return;
    }
    let file = scram_password_file();
    let broker = BrokerProc::start(&format!(
        "allow_anonymous false\npassword_file {}\n",
        file.display()
    ));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho/v5_scram.py");
    let out = Command::new("python3")
        .args([script, &broker.port.to_string(), "carol", "s3cret pass"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SCRAM client failed:\n{stdout}\n{}\n{:?}",
        String::from_utf8_lossy(&out.stderr),
        broker.log_lines()
    );
    for check in [
        "scram connect",
        "scram re-authentication",
        "re-authentication with another method refused",
        "wrong password refused",
        "unknown method refused",
    ] {
        assert!(stdout.contains(&format!("ok {check}")), "{stdout}");
    }
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
