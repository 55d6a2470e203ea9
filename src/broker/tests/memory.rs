//! What outlives a loop iteration never pins a read buffer (issue 9): a message kept in a
//! session queue, in the inflight window or in a full output holds a compacted copy of
//! its bytes, not a slice of the 64 KiB buffer it was read with; and the accounting
//! ([`Broker::held_bytes`]) counts what is really kept.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;

use crate::codec::{self, Packet, ProtocolVersion, QoS};

use super::harness::{connect, publish, Harness};
use crate::broker::{out_queue::CHUNK_OVERHEAD, Broker, ConnId};

const V4: ProtocolVersion = ProtocolVersion::V311;
const READ_BUFFER: usize = 64 * 1024;

/// One read of a busy publisher: a 64 KiB buffer of small QoS 0 PUBLISHes nobody
/// subscribes to, with one `payload`-byte message to `q` (QoS `qos`) among them.
fn busy_read(payload: &'static [u8], qos: QoS) -> BytesMut {
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let noise = publish("noise/x", &[b'n'; 100], QoS::AtMostOnce, false, None);
    let mut i = 0;
    while buf.len() + 200 < READ_BUFFER {
        if i == 100 {
            let id = (qos != QoS::AtMostOnce).then_some(1);
            let p = publish("q", payload, qos, false, id);
            codec::encode(&Packet::Publish(p), V4, &mut buf).unwrap();
        } else {
            codec::encode(&Packet::Publish(noise.clone()), V4, &mut buf).unwrap();
        }
        i += 1;
    }
    assert!(buf.capacity() == READ_BUFFER, "the buffer did not grow");
    buf
}

/// Feeds `buf` to the broker as one read of `conn`, then runs the iteration's output.
/// Returns whether the read buffer could be reused afterwards, i.e. whether nothing the
/// broker kept still refers to it.
fn read_and_check_released(h: &mut Harness, conn: ConnId, mut buf: BytesMut) -> bool {
    let now = h.now;
    h.broker.on_read(conn, &mut buf, now);
    assert!(buf.is_empty());
    h.drive();
    buf.try_reclaim(READ_BUFFER / 2)
}

fn footprint_of(payload: &'static [u8], qos: QoS) -> usize {
    let p = publish("q", payload, qos, false, Some(1));
    crate::session::Message::new(p, std::time::Instant::now(), None).footprint()
}

fn queued(b: &Broker) -> u64 {
    b.held_bytes().0
}

#[test]
fn a_message_queued_for_an_offline_session_does_not_pin_the_read_buffer() {
    let mut h = Harness::new(Harness::default_config());
    let (s, _) = h.connect_with(connect("s", V4, false));
    h.subscribe(s, "q", QoS::AtLeastOnce);
    h.send(s, Packet::Disconnect(Default::default()));
    let p = h.connect("p", V4);
    assert_eq!(queued(&h.broker), 0);

    let released = read_and_check_released(&mut h, p, busy_read(b"0123456789", QoS::AtLeastOnce));
    assert!(
        released,
        "one queued 10-byte message pins the 64 KiB read buffer"
    );
    // What the queue keeps, as max_queued_bytes counts it: one small message.
    assert_eq!(
        queued(&h.broker),
        footprint_of(b"0123456789", QoS::AtLeastOnce) as u64
    );
    assert!(queued(&h.broker) < 1024);

    let (s, _) = h.connect_with(connect("s", V4, false));
    assert_eq!(&h.expect_publish(s).payload[..], b"0123456789");
}

#[test]
fn an_inflight_message_does_not_pin_the_read_buffer() {
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V4);
    h.subscribe(s, "q", QoS::AtLeastOnce);
    let p = h.connect("p", V4);

    let released = read_and_check_released(&mut h, p, busy_read(b"0123456789", QoS::AtLeastOnce));
    // Sent, but kept in the window until the subscriber's PUBACK.
    let m = h.expect_publish(s);
    assert_eq!(&m.payload[..], b"0123456789");
    assert!(
        released,
        "an inflight 10-byte message pins the 64 KiB read buffer"
    );
    assert_eq!(
        queued(&h.broker),
        footprint_of(b"0123456789", QoS::AtLeastOnce) as u64
    );
    h.ack(s, codec::AckKind::PubAck, m.packet_id.unwrap());
    assert_eq!(queued(&h.broker), 0);
}

#[test]
fn a_frame_left_in_a_full_output_does_not_pin_the_read_buffer() {
    // QoS 0 to a subscriber whose socket takes nothing: the frame stays in its output
    // queue past the iteration. Its 600-byte payload is shared, not inlined, so without
    // compaction it would be a slice of the publisher's read buffer.
    const PAYLOAD: &[u8] = &[b'p'; 600];
    let mut h = Harness::new(Harness::default_config());
    let s = h.connect("s", V4);
    h.subscribe(s, "q", QoS::AtMostOnce);
    let p = h.connect("p", V4);
    h.stalled.insert(s);

    let released = read_and_check_released(&mut h, p, busy_read(PAYLOAD, QoS::AtMostOnce));
    assert!(
        released,
        "a 600-byte frame in a full output pins the 64 KiB read buffer"
    );
    // Counted as held: header and payload, two chunks.
    let (_, output) = h.broker.held_bytes();
    // Fixed header byte, two remaining-length bytes, topic length and "q", payload.
    let frame = 1 + 2 + 2 + 1 + PAYLOAD.len();
    assert_eq!(output as usize, frame + 2 * CHUNK_OVERHEAD);
    h.unstall(s);
    assert_eq!(&h.expect_publish(s).payload[..], PAYLOAD);
}
