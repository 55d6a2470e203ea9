//! Helpers for the persistence tests (tests/persistence*.rs): a persistence config, clean
//! stop and `kill -9` of the real binary, and raw-socket QoS 1 / QoS 2 flows that
//! acknowledge what the broker sends and report what arrived.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ack, frame, mqtt_str, publish, BrokerProc, Raw};

/// `persistence true` in `dir` with `persistence_fsync fsync`, queues unbounded.
pub fn persist_config(dir: &Path, fsync: &str) -> String {
    format!(
        "persistence true\npersistence_location {}/\npersistence_fsync {fsync}\n\
         max_queued_messages 1000000\n",
        dir.display()
    )
}

pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("mosquitto.db.log")
}

/// SIGTERM and wait: the clean shutdown path (final snapshot).
pub fn stop_clean(mut broker: BrokerProc) {
    broker.signal(libc::SIGTERM);
    assert!(broker.wait_exit().is_some(), "broker did not stop");
}

/// `kill -9` and wait.
pub fn crash(mut broker: BrokerProc) {
    broker.signal(libc::SIGKILL);
    assert!(broker.wait_exit().is_some(), "broker did not die");
}

/// Publishes with QoS 1 and waits for the PUBACK.
pub fn publish_acked(raw: &mut Raw, topic: &str, id: u16, retain: bool, payload: &[u8]) {
    raw.send(&publish(topic, 1, retain, false, id, payload));
    let a = raw.recv().expect("PUBACK");
    assert_eq!(a.kind(), 4, "expected PUBACK, got {a:?}");
    assert_eq!(a.packet_id(), id);
}

/// Reads PUBLISH packets until none arrives for `quiet`, acknowledging QoS 1 (PUBACK)
/// and QoS 2 (PUBREC, then PUBCOMP for the broker's PUBREL): (topic, payload, QoS, DUP).
pub fn drain_publishes(raw: &mut Raw, quiet: Duration) -> Vec<(String, Vec<u8>, u8)> {
    let mut got = Vec::new();
    while let Some(p) = raw.recv_within(quiet) {
        match p.kind() {
            3 => {
                let (topic, id, payload) = p.publish_parts();
                let qos = (p.first >> 1) & 3;
                match qos {
                    1 => raw.send(&ack(0x40, id)),
                    2 => raw.send(&ack(0x50, id)),
                    _ => {}
                }
                got.push((topic, payload, qos));
            }
            6 => raw.send(&ack(0x70, p.packet_id())), // PUBREL -> PUBCOMP
            _ => {}
        }
    }
    got
}

/// MQTT 3.1.1 CONNECT with a user name (no password), keep alive 60 s.
pub fn connect_as(port: u16, client_id: &str, clean: bool, username: &str) -> (Raw, bool) {
    let mut body = Vec::new();
    mqtt_str(b"MQTT", &mut body);
    body.push(4);
    body.push(0x80 | if clean { 0x02 } else { 0 });
    body.extend_from_slice(&60u16.to_be_bytes());
    mqtt_str(client_id.as_bytes(), &mut body);
    mqtt_str(username.as_bytes(), &mut body);
    let mut raw = Raw::connect(port);
    raw.send(&frame(0x10, &body));
    let ack = raw.recv().expect("CONNACK");
    assert_eq!(ack.first, 0x20, "expected CONNACK, got {ack:?}");
    assert_eq!(ack.body[1], 0, "CONNACK refused: {ack:?}");
    (raw, ack.body[0] & 1 == 1)
}

/// Expects the next packet to be the ack `kind` (4 PUBACK, 5 PUBREC, 7 PUBCOMP) for `id`.
pub fn expect_ack(raw: &mut Raw, kind: u8, id: u16) {
    let p = raw.recv().expect("an acknowledgement");
    assert_eq!((p.kind(), p.packet_id()), (kind, id), "got {p:?}");
}
