//! MQTT 5 topic aliases and subscription options with clients nobody here wrote:
//! Mosquitto's `mosquitto_pub` / `mosquitto_sub -V mqttv5` and Eclipse Paho's Python
//! client (`tests/paho/v5_alias.py`, `tests/paho/v5_subopts.py`). Skipped (with a
//! message) when they are missing, unless SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::BrokerProc;

/// mosquitto_pub sends the topic and alias 1 once, then the alias alone for every later
/// line; mosquitto_sub (v5) gets every message with its topic. (It announces no Topic
/// Alias Maximum: libmosquitto 2.0 accepts `-D connect topic-alias-maximum` but cannot
/// resolve an alias it receives, it drops the connection as a protocol error; rumqttc
/// and Paho take the broker's aliases, see `v5.rs` and `paho_python_v5_topic_aliases`.)
#[test]
fn mosquitto_pub_and_sub_v5_with_topic_aliases() {
    let (Some(sub_bin), Some(pub_bin)) = (
        common::mosquitto_tool("mosquitto_sub"),
        common::mosquitto_tool("mosquitto_pub"),
    ) else {
        return;
    };
    let broker = BrokerProc::start("");
    let port = broker.port.to_string();
    let sub = Command::new(sub_bin)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-i",
            "alias-sub",
        ])
        .args(["-t", "mal/#", "-q", "1", "-v", "-C", "5", "-W", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        broker.wait_log("alias-sub 1 mal/#"),
        "subscription registered"
    );
    let mut publisher = Command::new(pub_bin)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-i",
            "alias-pub",
        ])
        .args(["-D", "publish", "topic-alias", "1"])
        .args(["-t", "mal/line", "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = publisher.stdin.take().unwrap();
        for i in 0..5 {
            writeln!(stdin, "m{i}").unwrap();
        }
    }
    assert!(publisher.wait().unwrap().success(), "mosquitto_pub failed");
    let out = sub.wait_with_output().unwrap();
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (0..5).map(|i| format!("mal/line m{i}")).collect();
    assert_eq!(lines, expected);
    assert!(
        !broker
            .log_lines()
            .iter()
            .any(|l| l.contains("protocol error")),
        "{:?}",
        broker.log_lines()
    );
}

/// Paho sets an alias and then sends the alias alone; it sees the broker's outbound
/// aliases raw; 0x94 above `max_topic_alias`, 0x82 for an alias never set.
#[test]
fn paho_python_v5_topic_aliases() {
    if !common::paho_available() {
        return;
    }
    let broker = BrokerProc::start("max_topic_alias 4\n");
    let checks = [
        "connack topic alias maximum",
        "inbound alias without topic",
        "outbound alias",
        "invalid aliases refused",
    ];
    common::run_python_checks("v5_alias.py", &[&broker.port.to_string()], &checks);
}

/// Subscription identifiers, No Local, Retain As Published and Retain Handling with Paho
/// (`tests/paho/v5_subopts.py`).
#[test]
fn paho_python_v5_subscription_options() {
    if !common::paho_available() {
        return;
    }
    let broker = BrokerProc::start("");
    let checks = [
        "subscription identifiers",
        "no local",
        "retain as published",
        "retain handling",
    ];
    common::run_python_checks("v5_subopts.py", &[&broker.port.to_string()], &checks);
}
