//! Server-initiated DISCONNECT of MQTT 5 clients, with the reason code for each case the
//! spec gives one (3.14.2.1): shutdown 0x8B, slow subscriber cut 0x97; takeover 0x8E and
//! keep alive 0x8D are in `connect.rs`. 3.1.1 clients are closed without a packet.

use std::time::Duration;

use super::harness::Harness;
use crate::codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use crate::config::Config;

fn expect_disconnect(h: &mut Harness, conn: usize, reason: ReasonCode) {
    loop {
        match h.expect(conn) {
            Packet::Disconnect(d) => {
                assert_eq!(d.reason, reason);
                return;
            }
            Packet::Publish(_) => {}
            other => panic!("expected DISCONNECT, got {other:?}"),
        }
    }
}

#[test]
fn shutdown_sends_disconnect_0x8b_to_v5_clients() {
    let mut h = Harness::new(Harness::default_config());
    let v5 = h.connect("five", ProtocolVersion::V5);
    let v3 = h.connect("three", ProtocolVersion::V311);
    h.broker.on_shutdown();
    h.drive();
    expect_disconnect(&mut h, v5, ReasonCode::SERVER_SHUTTING_DOWN);
    h.assert_idle(v3);
}

#[test]
fn slow_subscriber_cut_gets_disconnect_0x97() {
    let mut h = Harness::new(Config {
        max_inflight_messages: 1,
        max_queued_messages: 2,
        slow_subscriber_timeout: Duration::from_secs(10),
        ..Harness::default_config()
    });
    let s = h.connect("s", ProtocolVersion::V5);
    h.subscribe(s, "t", QoS::AtLeastOnce);
    let p = h.connect("p", ProtocolVersion::V311);
    for id in 1..=3 {
        h.publish(p, "t", b"x", QoS::AtLeastOnce, false, Some(id));
    }
    // S reads but never acknowledges.
    h.advance(Duration::from_secs(11));
    assert!(h.is_closed(s));
    expect_disconnect(&mut h, s, ReasonCode::QUOTA_EXCEEDED);
}

#[test]
fn protocol_error_disconnect_carries_a_reason_string_that_fits() {
    use super::harness::connect;
    let mut h = Harness::new(Harness::default_config());
    let (c, _) = h.connect_with(connect("big", ProtocolVersion::V5, true));
    h.send(c, Packet::PingResp); // a packet only servers send
    match h.expect(c) {
        Packet::Disconnect(d) => {
            assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR);
            let why = d.properties.reason_string.clone().expect("reason string");
            assert!(why.contains("PINGRESP"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // A client whose Maximum Packet Size cannot take the string gets the code alone
    // [MQTT-3.1.2-25].
    let mut small = connect("small", ProtocolVersion::V5, true);
    small.properties.maximum_packet_size = Some(20);
    let (c, _) = h.connect_with(small);
    h.send(c, Packet::PingResp);
    match h.expect(c) {
        Packet::Disconnect(d) => {
            assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR);
            assert_eq!(d.properties.reason_string, None);
        }
        other => panic!("{other:?}"),
    }
}
