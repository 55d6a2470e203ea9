//! What CONNACK says, per protocol version: MQTT 5 properties as configured, and the
//! MQTT 3.1 (MQIsdp) CONNACK whose first byte 3.1 reserves.

use super::harness::{connect, Harness};
use crate::codec::{Packet, ProtocolVersion};

#[test]
fn mqtt_3_1_connack_never_sets_session_present() {
    let mut h = Harness::new(Harness::default_config());
    let (first, ack) = h.connect_with(connect("mqisdp", ProtocolVersion::V31, false));
    assert!(!ack.session_present);
    h.send(first, Packet::Disconnect(Default::default()));
    let conn = h.open(ProtocolVersion::V31);
    let mut buf = bytes::BytesMut::new();
    let c = Packet::Connect(Box::new(connect("mqisdp", ProtocolVersion::V31, false)));
    crate::codec::encode(&c, ProtocolVersion::V31, &mut buf).unwrap();
    h.broker.on_read(conn, &mut buf, h.now);
    let out = h.broker.output(conn).unwrap();
    let mut iov = [std::io::IoSlice::new(&[]); 4];
    let n = out.io_slices(&mut iov);
    let bytes: Vec<u8> = iov[..n].iter().flat_map(|s| s.to_vec()).collect();
    // The session was resumed (it is persistent), but 3.1 has no session-present flag.
    assert_eq!(bytes, [0x20, 0x02, 0x00, 0x00]);
    // The same reconnect in 3.1.1 says the session is present [MQTT-3.2.2-2].
    let (_, ack) = h.connect_with(connect("mqtt311", ProtocolVersion::V311, false));
    assert!(!ack.session_present);
    let (_, ack) = h.connect_with(connect("mqtt311", ProtocolVersion::V311, false));
    assert!(ack.session_present);
}
