//! Unit tests of the encode-once helpers: the PUBLISH flags byte and where the packet
//! identifier sits in an encoded header.

use crate::broker::routing::{packet_id_offset, publish_flags};
use crate::codec::QoS;

#[test]
fn packet_id_offset_skips_varint_and_topic() {
    // PUBLISH qos1, remaining length 200 (2-byte varint), topic "a/b", id 0x0102.
    let h = [0x32, 0xC8, 0x01, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x02];
    assert_eq!(packet_id_offset(&h), Some(8));
    assert_eq!(packet_id_offset(&h[..9]), None);
    assert_eq!(packet_id_offset(&[]), None);
}

#[test]
fn flags_byte() {
    assert_eq!(publish_flags(QoS::ExactlyOnce, true, true), 0x3D);
    assert_eq!(publish_flags(QoS::AtMostOnce, false, false), 0x30);
}
