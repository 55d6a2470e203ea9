//! Helpers of the bridge tests: a free port to start a remote on later, waiting for a
//! bridge's state notification, and QoS 1 publishes acknowledged one by one.
#![allow(dead_code)]

use rumqttc::QoS;

use super::V4;

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the bridge's retained state on `port` is `1` (remote client id `id`).
pub fn wait_bridge_up(port: u16, id: &str) {
    let c = V4::connect(&format!("watch-{id}-{port}"), port);
    c.subscribe(
        &format!("$SYS/broker/connection/{id}/state"),
        QoS::AtMostOnce,
    );
    let up = c.wait_for(|ev| match ev {
        rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) if &p.payload[..] == b"1" => Some(()),
        _ => None,
    });
    assert!(up.is_some(), "bridge {id} did not come up on port {port}");
}

/// Publishes `range` (the numbers as payloads) on `topic` at QoS 1 and waits for every
/// PUBACK.
pub fn publish_all(publisher: &V4, topic: &str, range: std::ops::Range<usize>) {
    let n = range.len();
    for i in range {
        publisher.publish(topic, QoS::AtLeastOnce, false, format!("{i}"));
    }
    let acked = (0..n).all(|_| {
        publisher
            .wait_for(|ev| match ev {
                rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => Some(()),
                _ => None,
            })
            .is_some()
    });
    assert!(acked, "not every message was acknowledged");
}
