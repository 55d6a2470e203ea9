//! Interop with Eclipse Paho's Python client (`pip install paho-mqtt`): MQTT 3.1.1 and
//! 5.0, QoS 0/1/2, user properties, retained, will. Skipped (with a message) when python3
//! or paho-mqtt is missing, unless SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used)]

mod common;

use common::{paho_available, BrokerProc};

fn run(protocol: &str) {
    if !paho_available() {
        return;
    }
    let broker = BrokerProc::start("");
    let checks: Vec<String> = ["qos 0/1/2", "retained", "will"]
        .iter()
        .map(|c| format!("{c} ({protocol})"))
        .collect();
    let checks: Vec<&str> = checks.iter().map(String::as_str).collect();
    common::run_python_checks(
        "roundtrip.py",
        &[&broker.port.to_string(), protocol],
        &checks,
    );
}

#[test]
fn paho_python_mqtt_311() {
    run("311");
}

#[test]
fn paho_python_mqtt_5() {
    run("5");
}
