//! Interop with Eclipse Paho's Python client (`pip install paho-mqtt`): MQTT 3.1.1 and
//! 5.0, QoS 0/1/2, user properties, retained, will. Skipped (with a message) when python3
//! or paho-mqtt is missing, unless SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{paho_available, BrokerProc};

fn run(protocol: &str) {
    if !paho_available() {
        return;
    }
    let broker = BrokerProc::start("");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho/roundtrip.py");
    let out = Command::new("python3")
        .args([script, &broker.port.to_string(), protocol])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paho {protocol} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in ["qos 0/1/2", "retained", "will"] {
        assert!(
            stdout.contains(&format!("ok {check} ({protocol})")),
            "{stdout}"
        );
    }
}

#[test]
fn paho_python_mqtt_311() {
    run("311");
}

#[test]
fn paho_python_mqtt_5() {
    run("5");
}
