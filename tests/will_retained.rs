//! Last Will and Testament, keepalive, and retained messages.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{BrokerProc, Raw, V4};
use rumqttc::{LastWill, QoS};

fn will_client(id: &str, port: u16, keep_alive: u64) -> V4 {
    let mut o = common::v4_options(id, port);
    o.set_keep_alive(Duration::from_secs(keep_alive));
    o.set_last_will(LastWill::new("wills/x", "gone", QoS::AtLeastOnce, false));
    V4::connect_with(o)
}

#[test]
fn will_is_published_when_the_connection_drops() {
    let broker = BrokerProc::start("");
    let watcher = V4::connect("watcher", broker.port);
    watcher.subscribe("wills/#", QoS::AtLeastOnce);
    let c = will_client("dying", broker.port, 30);
    c.drop_connection();
    let p = watcher.next_publish().expect("will delivered");
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("wills/x", &b"gone"[..])
    );
    assert_eq!(p.qos, QoS::AtLeastOnce);
}

#[test]
fn will_is_not_published_after_disconnect() {
    let broker = BrokerProc::start("");
    let watcher = V4::connect("watcher", broker.port);
    watcher.subscribe("wills/#", QoS::AtLeastOnce);
    let c = will_client("polite", broker.port, 30);
    c.disconnect();
    assert!(watcher
        .next_publish_within(Duration::from_millis(800))
        .is_none());
}

/// [MQTT-3.1.2-24] keepalive: a silent client is disconnected after 1.5 x keep alive, and
/// its will is published.
#[test]
fn mqtt_3_1_2_24_keepalive_expiry_publishes_will() {
    let broker = BrokerProc::start("");
    let watcher = V4::connect("watcher", broker.port);
    watcher.subscribe("wills/#", QoS::AtLeastOnce);
    let mut raw = Raw::connect(broker.port);
    let start = Instant::now();
    raw.send(&common::connect_v311(
        "silent",
        true,
        1,
        Some(("wills/silent", b"timeout", 0, false)),
    ));
    assert_eq!(raw.recv().unwrap().first, 0x20);
    let p = watcher.next_publish().expect("will after keepalive expiry");
    let waited = start.elapsed();
    assert_eq!(p.topic, "wills/silent");
    assert!(
        waited >= Duration::from_millis(1400),
        "not before 1.5 x keepalive: {waited:?}"
    );
    assert!(raw.closed_by_broker());
}

/// PINGREQ keeps a connection alive past its keepalive.
#[test]
fn pingreq_keeps_the_connection_alive() {
    let broker = BrokerProc::start("");
    let mut raw = Raw::connect(broker.port);
    raw.send(&common::connect_v311("pinger", true, 1, None));
    assert_eq!(raw.recv().unwrap().first, 0x20);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3000) {
        raw.send(&[0xC0, 0x00]);
        let resp = raw.recv().expect("PINGRESP");
        assert_eq!(resp.first, 0xD0);
        std::thread::sleep(Duration::from_millis(500)); // the client's own ping period
    }
}

/// A killed process (mosquitto_sub, SIGKILL) gets its will published.
#[test]
fn will_on_killed_mosquitto_sub() {
    let Some(sub_bin) = common::mosquitto_tool("mosquitto_sub") else {
        return;
    };
    let broker = BrokerProc::start("");
    let watcher = V4::connect("watcher", broker.port);
    watcher.subscribe("wills/#", QoS::AtLeastOnce);
    let mut child = std::process::Command::new(sub_bin)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-t",
            "nothing",
            "-i",
            "victim",
        ])
        .args([
            "--will-topic",
            "wills/victim",
            "--will-payload",
            "killed",
            "--will-qos",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(broker.wait_log("victim"), "mosquitto_sub connected");
    child.kill().unwrap();
    let _ = child.wait();
    let p = watcher.next_publish().expect("will of the killed client");
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("wills/victim", &b"killed"[..])
    );
}

#[test]
fn retained_set_replace_delete() {
    let broker = BrokerProc::start("");
    let publ = V4::connect("pub", broker.port);
    publ.publish("r/a", QoS::AtLeastOnce, true, "first");
    publ.publish("r/a", QoS::AtLeastOnce, true, "second");
    publ.publish("r/b", QoS::AtLeastOnce, true, "bee");
    publ.publish("r/c", QoS::AtLeastOnce, true, "sea");
    publ.publish("r/c", QoS::AtLeastOnce, true, ""); // delete [MQTT-3.3.1-10]
    publ.wait_for(|ev| match ev {
        rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) if a.pkid == 5 => Some(()),
        _ => None,
    })
    .unwrap();

    let sub = V4::connect("late", broker.port);
    sub.subscribe("r/+", QoS::AtLeastOnce);
    let mut got: Vec<(String, Vec<u8>, bool)> = (0..2)
        .map(|_| {
            let p = sub.next_publish().unwrap();
            (p.topic.clone(), p.payload.to_vec(), p.retain)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("r/a".into(), b"second".to_vec(), true),
            ("r/b".into(), b"bee".to_vec(), true)
        ],
        "latest retained per topic, retain flag set [MQTT-3.3.1-8]"
    );
    assert!(
        sub.next_publish_within(Duration::from_millis(400))
            .is_none(),
        "deleted one not sent"
    );

    // Live messages to an existing subscription carry retain=0 [MQTT-3.3.1-9].
    publ.publish("r/a", QoS::AtLeastOnce, true, "third");
    let p = sub.next_publish().unwrap();
    assert_eq!(&p.payload[..], b"third");
    assert!(!p.retain);
}

#[test]
fn retained_message_is_not_matched_across_dollar_topics() {
    let broker = BrokerProc::start("");
    let publ = V4::connect("pub", broker.port);
    publ.publish("$app/state", QoS::AtLeastOnce, true, "hidden");
    publ.publish("app/state", QoS::AtLeastOnce, true, "shown");
    publ.wait_for(|ev| match ev {
        rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) if a.pkid == 2 => Some(()),
        _ => None,
    })
    .unwrap();
    let sub = V4::connect("late", broker.port);
    sub.subscribe("#", QoS::AtMostOnce);
    let p = sub.next_publish().unwrap();
    assert_eq!(p.topic, "app/state");
    let sub2 = V4::connect("late2", broker.port);
    sub2.subscribe("$app/#", QoS::AtMostOnce);
    assert_eq!(sub2.next_publish().unwrap().topic, "$app/state");
}
