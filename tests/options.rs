//! Mosquitto's per-listener and delivery options against a real broker process with real
//! clients (mosquitto_pub / mosquitto_sub, rumqttc) and raw sockets: `max_qos`,
//! `upgrade_outgoing_qos`, `use_username_as_clientid`.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{BrokerProc, Raw, V4};
use rumqttc::{QoS, SubscribeReasonCode};

#[test]
fn max_qos_caps_subscriptions_and_refuses_publishes_above_it() {
    let broker = BrokerProc::start("max_qos 1");
    // rumqttc (3.1.1): SUBSCRIBE QoS 2 is granted 1.
    let sub = V4::connect("sub", broker.port);
    assert_eq!(
        sub.subscribe("t", QoS::ExactlyOnce),
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    // A raw 3.1.1 PUBLISH at QoS 2 closes the connection, routes nothing.
    let (mut raw, _, rc) = Raw::mqtt_connect(broker.port, "raw", true);
    assert_eq!(rc, 0);
    raw.send(&common::publish("t", 2, false, false, 1, b"too high"));
    assert!(raw.closed_by_broker(), "QoS 2 above max_qos 1 must close");
    assert!(broker.wait_log("Too high QoS in PUBLISH from raw, disconnecting."));
    // QoS 1 still flows.
    let p = V4::connect("pub", broker.port);
    p.publish("t", QoS::AtLeastOnce, false, "fine");
    let got = sub.next_publish().expect("the QoS 1 message");
    assert_eq!(&got.payload[..], b"fine");

    // mosquitto_pub (MQTT 5) reads CONNACK's Maximum QoS and refuses to send QoS 2.
    let Some(pub_bin) = common::mosquitto_tool("mosquitto_pub") else {
        return;
    };
    let out = Command::new(pub_bin)
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-V", "5", "-q", "2", "-t", "t", "-m", "x", "-i", "v5pub"])
        .output()
        .unwrap();
    // It exits 0 after saying so.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("QoS not supported"),
        "mosquitto_pub -q 2 should refuse against max_qos 1: {stderr}"
    );
}

#[test]
fn upgrade_outgoing_qos_delivers_qos0_at_the_subscription_qos() {
    let broker = BrokerProc::start("upgrade_outgoing_qos true");
    let sub = V4::connect("sub", broker.port);
    sub.subscribe("t", QoS::AtLeastOnce);
    let p = V4::connect("pub", broker.port);
    p.publish("t", QoS::AtMostOnce, false, "up");
    let got = sub.next_publish().expect("delivered");
    assert_eq!((&got.payload[..], got.qos), (&b"up"[..], QoS::AtLeastOnce));
}

#[test]
fn use_username_as_clientid_makes_the_username_the_client_id() {
    let broker = BrokerProc::start("use_username_as_clientid true");
    let mut o = common::v4_options("first-id", broker.port);
    o.set_credentials("alice", "");
    o.set_clean_session(false);
    let first = V4::connect_with(o);
    assert!(broker.wait_log(" as alice (p2, c0"));
    first.subscribe("t", QoS::AtLeastOnce);
    // Another client id with the same username takes the session over.
    let mut o = common::v4_options("second-id", broker.port);
    o.set_credentials("alice", "");
    o.set_clean_session(false);
    let second = V4::start(o);
    let ack = second.wait_connack();
    assert!(ack.session_present, "same client id, same session");
    assert!(broker.wait_log("Client alice already connected, closing old connection."));
    // Without a username: not authorised.
    let (_, _, rc) = Raw::mqtt_connect(broker.port, "anon", true);
    assert_eq!(rc, 5);
}

#[test]
fn mount_point_separates_a_listener_into_its_own_branch() {
    let broker = BrokerProc::start("listener 0 127.0.0.1\nmount_point site1/");
    let mounted_port = common::tls::listener_port(&broker, 1);
    let outside = V4::connect("outside", broker.port);
    outside.subscribe("#", QoS::AtMostOnce);
    let inner = V4::connect("inner", mounted_port);
    inner.subscribe("sensors/#", QoS::AtLeastOnce);
    // A plain client publishes under site1/: the mounted client sees it without prefix.
    let plain = V4::connect("plain", broker.port);
    plain.publish("site1/sensors/t", QoS::AtLeastOnce, false, "21");
    let got = inner
        .next_publish()
        .expect("delivered to the mounted client");
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("sensors/t", &b"21"[..])
    );
    assert_eq!(outside.next_publish().unwrap().topic, "site1/sensors/t");
    // The mounted client publishes: everyone else sees it under site1/.
    let Some(pub_bin) = common::mosquitto_tool("mosquitto_pub") else {
        return;
    };
    let ok = Command::new(pub_bin)
        .args(["-h", "127.0.0.1", "-p", &mounted_port.to_string()])
        .args(["-t", "sensors/h", "-m", "40", "-i", "inner-pub"])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(outside.next_publish().unwrap().topic, "site1/sensors/h");
    assert_eq!(inner.next_publish().unwrap().topic, "sensors/h");
}

#[test]
fn check_retain_source_hides_a_retained_message_its_publisher_may_no_longer_write() {
    let dir = common::temp_dir("retain-source");
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "topic read #\nuser alice\ntopic write status/#\ntopic write other/#\n",
    )
    .unwrap();
    let broker = BrokerProc::start(&format!(
        "acl_file {}\ncheck_retain_source true",
        acl.display()
    ));
    let mut o = common::v4_options("alice-dev", broker.port);
    o.set_credentials("alice", "");
    let alice = V4::connect_with(o);
    alice.publish("status/a", QoS::AtLeastOnce, true, "up");
    let acked = alice.wait_for(|ev| match ev {
        rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => Some(()),
        _ => None,
    });
    assert!(acked.is_some(), "status/a stored");
    let r1 = V4::connect("r1", broker.port);
    r1.subscribe("status/#", QoS::AtLeastOnce);
    assert_eq!(&r1.next_publish().expect("retained").payload[..], b"up");
    // alice loses the right to write status/#.
    std::fs::write(&acl, "topic read #\nuser alice\ntopic write other/#\n").unwrap();
    broker.signal(libc::SIGHUP);
    assert!(broker.wait_log("Password and ACL files reloaded"));
    alice.publish("other/x", QoS::AtLeastOnce, true, "still mine");
    let acked = alice.wait_for(|ev| match ev {
        rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => Some(()),
        _ => None,
    });
    assert!(acked.is_some(), "other/x stored");
    let r2 = V4::connect("r2", broker.port);
    r2.subscribe("status/#", QoS::AtLeastOnce);
    r2.subscribe("other/#", QoS::AtLeastOnce);
    // other/# was looked up after status/#: its message arriving first and alone means
    // status/a was withheld.
    let got = r2.next_publish().expect("other/x retained");
    assert_eq!(got.topic, "other/x");
    assert!(r2
        .next_publish_within(std::time::Duration::from_millis(300))
        .is_none());
}

/// What `mosquitto_pub -d` prints for one QoS 1 MQTT 5 publish against `port`.
fn mosquitto_pub_v5_debug(port: u16, id: &str) -> Option<String> {
    let bin = common::mosquitto_tool("mosquitto_pub")?;
    let out = Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "5", "-d"])
        .args(["-q", "1", "-t", "elsewhere", "-m", "x", "-i", id])
        .output()
        .unwrap();
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn memory_limit_refuses_publishes_while_an_offline_queue_holds_it() {
    let broker = BrokerProc::start("memory_limit 300000\nthreads 1");
    // An offline persistent session whose queue will hold the memory.
    let (mut sub, _, rc) = Raw::mqtt_connect(broker.port, "offline", false);
    assert_eq!(rc, 0);
    sub.subscribe(1, &[("t", 1)]);
    sub.disconnect();
    // A 3.1.1 publisher fills it, one acknowledged QoS 1 message at a time, until the
    // broker refuses one: it is disconnected without a PUBACK (it would resend it).
    let (mut filler, _, _) = Raw::mqtt_connect(broker.port, "filler", true);
    let mut accepted = 0u16;
    loop {
        let id = accepted + 1;
        filler.send(&common::publish("t", 1, false, false, id, &[b'x'; 10_000]));
        match filler.recv() {
            Some(ack) => {
                assert_eq!((ack.kind(), ack.packet_id()), (4, id), "PUBACK");
                accepted += 1;
            }
            None => break, // closed by the broker
        }
        assert!(accepted < 100, "memory_limit never refused the filler");
    }
    assert!((25..=31).contains(&accepted), "{accepted} accepted");
    assert!(broker.wait_log("Client filler disconnected: memory_limit reached."));
    // MQTT 5: PUBACK 0x97 (151), Quota exceeded.
    let Some(out) = mosquitto_pub_v5_debug(broker.port, "refused5") else {
        return;
    };
    assert!(out.contains("received PUBACK (Mid: 1, RC:151)"), "{out}");
    // The session comes back and takes its messages: memory is released.
    let (mut sub, present, _) = Raw::mqtt_connect(broker.port, "offline", false);
    assert!(present);
    for _ in 0..accepted {
        let m = loop {
            let m = sub.recv().expect("a queued message");
            if m.kind() == 3 {
                break m;
            }
        };
        sub.send(&common::ack(0x40, m.publish_parts().1));
    }
    let ok = common::wait_until(common::TIMEOUT, || {
        mosquitto_pub_v5_debug(broker.port, "accepted5")
            .is_some_and(|o| o.contains("received PUBACK (Mid: 1, RC:16)"))
    });
    assert!(
        ok,
        "accepted again (0x10: no subscriber) once the memory is released"
    );
}
