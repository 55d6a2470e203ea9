//! Interop with the Mosquitto project's own command-line clients. Skipped (with a message)
//! when they are not installed, unless SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::{BrokerProc, V4};

/// Runs mosquitto_sub collecting `count` messages; returns its stdout lines.
fn sub_collect(port: u16, args: &[&str], count: usize, ready: impl FnOnce()) -> Vec<String> {
    let bin = common::mosquitto_tool("mosquitto_sub").unwrap();
    let child = Command::new(bin)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-C",
            &count.to_string(),
            "-W",
            "20",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    ready();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn pub_run(port: u16, args: &[&str]) {
    let bin = common::mosquitto_tool("mosquitto_pub").unwrap();
    let st = Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "mosquitto_pub {args:?} failed");
}

fn have_tools() -> bool {
    common::mosquitto_tool("mosquitto_sub").is_some()
        && common::mosquitto_tool("mosquitto_pub").is_some()
}

#[test]
fn mosquitto_pub_to_mosquitto_sub_all_qos() {
    if !have_tools() {
        return;
    }
    let broker = BrokerProc::start("");
    for qos in ["0", "1", "2"] {
        let topic = format!("interop/q{qos}");
        let lines = sub_collect(
            broker.port,
            &["-t", &topic, "-q", qos, "-v", "-i", &format!("s{qos}")],
            1,
            || {
                assert!(
                    broker.wait_log(&format!("s{qos} {qos} {topic}")),
                    "subscription registered"
                );
                pub_run(
                    broker.port,
                    &["-t", &topic, "-q", qos, "-m", &format!("hello {qos}")],
                );
            },
        );
        assert_eq!(lines, vec![format!("{topic} hello {qos}")]);
    }
}

#[test]
fn mosquitto_retained_then_late_subscriber_then_delete() {
    if !have_tools() {
        return;
    }
    let broker = BrokerProc::start("");
    pub_run(
        broker.port,
        &["-t", "interop/ret", "-r", "-q", "1", "-m", "kept"],
    );
    let lines = sub_collect(
        broker.port,
        &["-t", "interop/#", "-v", "-F", "%r %t %p"],
        1,
        || {},
    );
    assert_eq!(lines, vec!["1 interop/ret kept"]);
    pub_run(broker.port, &["-t", "interop/ret", "-r", "-q", "1", "-n"]);
    // After the delete, a subscriber with --retained-only gets nothing within 1 s.
    let bin = common::mosquitto_tool("mosquitto_sub").unwrap();
    let out = Command::new(bin)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-t",
            "interop/#",
            "-W",
            "1",
            "-v",
        ])
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "retained message deleted: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn mosquitto_sub_v5_and_v31_and_rumqttc_together() {
    if !have_tools() {
        return;
    }
    let broker = BrokerProc::start("");
    let rc = V4::connect("rumq", broker.port);
    rc.subscribe("mix/#", rumqttc::QoS::AtLeastOnce);
    let lines = sub_collect(
        broker.port,
        &["-t", "mix/#", "-V", "mqttv5", "-v", "-i", "v5sub"],
        2,
        || {
            assert!(
                broker.wait_log("v5sub 0 mix/#"),
                "v5 subscription registered"
            );
            pub_run(
                broker.port,
                &["-t", "mix/a", "-V", "mqttv31", "-m", "from31"],
            );
            pub_run(
                broker.port,
                &["-t", "mix/b", "-V", "mqttv311", "-q", "2", "-m", "from311"],
            );
        },
    );
    assert_eq!(lines, vec!["mix/a from31", "mix/b from311"]);
    assert_eq!(&rc.next_publish().unwrap().payload[..], b"from31");
    assert_eq!(&rc.next_publish().unwrap().payload[..], b"from311");
}

#[test]
fn mosquitto_v5_user_properties_are_forwarded() {
    if !have_tools() {
        return;
    }
    let broker = BrokerProc::start("");
    let lines = sub_collect(
        broker.port,
        &["-t", "props", "-V", "5", "-F", "%P %p", "-i", "psub"],
        1,
        || {
            assert!(broker.wait_log("psub 0 props"));
            pub_run(
                broker.port,
                &[
                    "-t",
                    "props",
                    "-V",
                    "5",
                    "-m",
                    "body",
                    "-D",
                    "publish",
                    "user-property",
                    "k1",
                    "v1",
                ],
            );
        },
    );
    assert_eq!(lines, vec!["k1:v1 body"]);
}

#[test]
fn many_messages_through_mosquitto_clients_in_order() {
    if !have_tools() {
        return;
    }
    let broker = BrokerProc::start("");
    let body: String = (0..500).map(|i| format!("line {i}\n")).collect();
    let lines = sub_collect(
        broker.port,
        &["-t", "bulk", "-q", "1", "-i", "bulksub"],
        500,
        || {
            assert!(broker.wait_log("bulksub 1 bulk"));
            let bin = common::mosquitto_tool("mosquitto_pub").unwrap();
            let mut child = Command::new(bin)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &broker.port.to_string(),
                    "-t",
                    "bulk",
                    "-q",
                    "1",
                    "-l",
                ])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success());
        },
    );
    let expected: Vec<String> = (0..500).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "all 500 delivered, in order");
}
