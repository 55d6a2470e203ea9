//! Sans-IO tests of flow control (`flow.rs`), one or more per rule, on one shard or on
//! the mesh of `shards.rs`: a stuck subscriber on one shard pauses a publisher on the
//! other and lets it go when it drains, is cut, ends or moves away; keep alive of a
//! connection the broker does not read; the cut-off measured from acknowledgements;
//! gating on a client's own output; the peer backlog; QoS 0 across shards; and the one
//! control message that must keep its place behind data (`Installed`), delivered in the
//! worst order the mailbox's two lanes allow.
//!
//! The harness delivers whatever a test sends, so a test plays the runtime: it sends a
//! publisher's packets only while `wants_read` says so, and asks again after each step as
//! the runtime does for a connection it did not read.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::codec::{AckKind, Connect, Packet, ProtocolVersion, QoS};
use crate::config::Config;

use super::harness::{connect, Harness};
use super::shards::Mesh;
use crate::broker::flow::MAX_OUTPUT_CHUNKS;
use crate::broker::{ConnId, ShardMsg};
use crate::mailbox::Lane;

const V4: ProtocolVersion = ProtocolVersion::V311;
const STALL: Duration = Duration::from_secs(10);

/// One message in flight and two queued make a subscriber backlogged.
fn small_queues() -> Config {
    Config {
        max_inflight_messages: 1,
        max_queued_messages: 2,
        slow_subscriber_timeout: STALL,
        ..Harness::default_config()
    }
}

/// Publishes QoS 1 on `topic` from `p` on shard `shard` while the shard reads it, up to
/// `n` messages (ids from `first`); settles after each. Returns how many went.
fn publish_while_read(
    m: &mut Mesh,
    shard: usize,
    p: ConnId,
    topic: &str,
    first: u16,
    n: u16,
) -> u16 {
    for i in 0..n {
        let h = &mut m.shards[shard];
        if !h.broker.wants_read(p, h.now) {
            return i;
        }
        h.publish(p, topic, b"m", QoS::AtLeastOnce, false, Some(first + i));
        m.settle();
    }
    n
}

fn reads(m: &mut Mesh, shard: usize, conn: ConnId) -> bool {
    let h = &mut m.shards[shard];
    h.broker.wants_read(conn, h.now)
}

/// Advances every shard's clock by `d` in 100 ms steps, settling the mesh after each
/// and asking about `asked` as the runtime would (shard, conn).
fn advance(m: &mut Mesh, d: Duration, asked: &[(usize, ConnId)]) {
    let step = Duration::from_millis(100);
    let mut left = d;
    while !left.is_zero() {
        let s = step.min(left);
        for h in &mut m.shards {
            h.advance(s);
        }
        m.settle();
        for &(shard, conn) in asked {
            reads(m, shard, conn);
        }
        left -= s;
    }
}

/// A two-shard mesh: the persistent (or not) subscriber S on shard 1 on `t` with QoS
/// 1, publisher P on shard 0 that has filled S's window and queue and is paused.
fn stuck_on_shard_1(persistent: bool) -> (Mesh, ConnId, ConnId) {
    let mut m = Mesh::with_config(2, &small_queues());
    let (s, _) = m.connect(1, "s", !persistent);
    m.subscribe(1, s, "t", QoS::AtLeastOnce);
    let (p, _) = m.connect(0, "p", true);
    assert_eq!(
        publish_while_read(&mut m, 0, p, "t", 1, 10),
        3,
        "1 in flight + 2 queued, then the pause from shard 1 holds P back"
    );
    assert!(!reads(&mut m, 0, p));
    assert_eq!(m.shards[1].broker.stats().publish_dropped, 0);
    (m, s, p)
}

#[test]
fn remote_subscriber_pauses_only_its_publisher_and_resumes_it_when_it_drains() {
    let (mut m, s, p) = stuck_on_shard_1(false);
    // Another publisher on shard 0 feeding a healthy subscriber on shard 1 is not held
    // back, and shard 1 keeps taking its messages.
    let (cold_sub, _) = m.connect(1, "cold-sub", true);
    m.subscribe(1, cold_sub, "cold", QoS::AtMostOnce);
    let (cold, _) = m.connect(0, "cold", true);
    for _ in 0..5 {
        assert!(reads(&mut m, 0, cold));
        m.shards[0].publish(cold, "cold", b"c", QoS::AtMostOnce, false, None);
        m.settle();
    }
    for _ in 0..5 {
        assert_eq!(&m.shards[1].expect_publish(cold_sub).payload[..], b"c");
    }
    assert!(!reads(&mut m, 0, p), "P still held back");
    // S acknowledges: below its limit again, shard 1 resumes P.
    m.shards[0].transmitted.clear();
    let first = m.shards[1].expect_publish(s);
    m.shards[1].ack(s, AckKind::PubAck, first.packet_id.unwrap());
    m.settle();
    assert!(reads(&mut m, 0, p));
    assert!(
        m.shards[0].transmitted.contains(&p),
        "poll_transmit yields the resumed publisher"
    );
}

#[test]
fn no_subscriber_is_cut_for_a_stall_while_persistence_holds_the_shard() {
    let (mut m, s, p) = stuck_on_shard_1(true);
    // The shard's log cannot be written for longer than slow_subscriber_timeout: nothing
    // is written or read on shard 1 meanwhile, so S's lack of progress is not its fault.
    let now = m.shards[1].now;
    m.shards[1].broker.set_persist_held(true, now);
    advance(&mut m, STALL + STALL / 2, &[(0, p)]);
    assert!(
        !m.shards[1].is_closed(s),
        "cut while persistence held the shard"
    );
    // The disk takes writes again: S gets a full timeout from there, then is cut.
    let now = m.shards[1].now;
    m.shards[1].broker.set_persist_held(false, now);
    advance(&mut m, STALL - Duration::from_secs(1), &[(0, p)]);
    assert!(
        !m.shards[1].is_closed(s),
        "cut before a full timeout after the hold"
    );
    advance(&mut m, Duration::from_secs(2), &[(0, p)]);
    assert!(
        m.shards[1].is_closed(s),
        "not cut after slow_subscriber_timeout"
    );
}

#[test]
fn stuck_subscriber_is_cut_after_the_timeout_despite_pings_and_releases_its_publisher() {
    let (mut m, s, p) = stuck_on_shard_1(true);
    // S reads (the harness takes its output) and pings every second: PINGRESPs are no
    // progress; only an acknowledgement would be.
    for _ in 0..9 {
        m.shards[1].send(s, Packet::PingReq);
        advance(&mut m, Duration::from_secs(1), &[(0, p)]);
    }
    assert!(
        !m.shards[1].is_closed(s),
        "cut before slow_subscriber_timeout"
    );
    assert!(!reads(&mut m, 0, p));
    m.shards[1].send(s, Packet::PingReq);
    advance(&mut m, Duration::from_secs(2), &[(0, p)]);
    assert!(
        m.shards[1].is_closed(s),
        "not cut after slow_subscriber_timeout"
    );
    assert!(reads(&mut m, 0, p), "the cut released P");
    // The persistent session kept the three messages.
    let (s2, present) = m.connect(1, "s", false);
    assert!(present);
    let mut got = 0;
    while let Some(Packet::Publish(msg)) = m.shards[1].recv(s2) {
        got += 1;
        m.shards[1].ack(s2, AckKind::PubAck, msg.packet_id.unwrap());
        m.settle();
    }
    assert_eq!(got, 3);
}

#[test]
fn slow_subscriber_that_keeps_acknowledging_is_not_cut() {
    let (mut m, s, p) = stuck_on_shard_1(true);
    // One acknowledgement every 5 s (half the timeout), and P refills the queue at
    // once: S stays backlogged for 40 s but makes progress.
    for id in 4..12 {
        advance(&mut m, Duration::from_secs(5), &[(0, p)]);
        let msg = m.shards[1].expect_publish(s);
        m.shards[1].ack(s, AckKind::PubAck, msg.packet_id.unwrap());
        m.settle();
        assert_eq!(publish_while_read(&mut m, 0, p, "t", id, 10), 1);
        assert!(!reads(&mut m, 0, p));
    }
    assert!(!m.shards[1].is_closed(s));
}

#[test]
fn remote_publisher_resumes_when_the_subscriber_session_ends() {
    let (mut m, s, p) = stuck_on_shard_1(false);
    m.shards[1].drop_conn(s);
    m.settle();
    assert!(reads(&mut m, 0, p));
}

#[test]
fn remote_publisher_resumes_when_the_subscriber_moves_away() {
    let (mut m, _s, p) = stuck_on_shard_1(true);
    // S reconnects on shard 0: its session (with the three messages) moves there, the
    // old shard lets P go.
    let (s2, present) = m.connect(0, "s", false);
    assert!(present);
    assert!(reads(&mut m, 0, p), "the move released P");
    let mut got = 0;
    while let Some(Packet::Publish(msg)) = m.shards[0].recv(s2) {
        got += 1;
        m.shards[0].ack(s2, AckKind::PubAck, msg.packet_id.unwrap());
        m.settle();
    }
    assert_eq!(got, 3);
}

#[test]
fn a_publisher_that_is_not_read_is_not_timed_out_and_its_clock_restarts() {
    let never_cut = Config {
        slow_subscriber_timeout: Duration::ZERO,
        ..small_queues()
    };
    let mut m = Mesh::with_config(2, &never_cut);
    let (s, _) = m.connect(1, "s", true);
    m.subscribe(1, s, "t", QoS::AtLeastOnce);
    // P: keep alive 2 s, so 3 s without a packet would cut it.
    let h = &mut m.shards[0];
    let p = h.open(V4);
    let c = Connect {
        keep_alive: 2,
        ..connect("p", V4, true)
    };
    h.send(p, Packet::Connect(Box::new(c)));
    m.settle();
    assert!(matches!(m.shards[0].expect(p), Packet::ConnAck(_)));
    assert_eq!(publish_while_read(&mut m, 0, p, "t", 1, 10), 3);
    // 20 s unread (the runtime asks every iteration and is told no): never timed out.
    advance(&mut m, Duration::from_secs(20), &[(0, p)]);
    assert!(!m.shards[0].is_closed(p));
    // S drains; the runtime asks, reads P again, and P's clock restarts then.
    while let Some(Packet::Publish(msg)) = m.shards[1].recv(s) {
        m.shards[1].ack(s, AckKind::PubAck, msg.packet_id.unwrap());
        m.settle();
    }
    assert!(reads(&mut m, 0, p));
    advance(&mut m, Duration::from_millis(2900), &[(0, p)]);
    assert!(
        !m.shards[0].is_closed(p),
        "1.5 x keep alive from the resume"
    );
    // P sends nothing after being read again: keep alive applies as usual.
    advance(&mut m, Duration::from_millis(300), &[(0, p)]);
    assert!(
        m.shards[0].is_closed(p),
        "keep alive still applies after the resume"
    );
}

#[test]
fn own_output_over_the_byte_bound_gates_reading_and_is_cut_without_progress() {
    let config = Config {
        max_queued_bytes: 64,
        slow_subscriber_timeout: STALL,
        ..Harness::default_config()
    };
    let mut h = Harness::new(config);
    let c = h.connect("deaf", V4);
    h.stalled.insert(c); // never reads its socket
    let mut sent = 0u16;
    while h.broker.wants_read(c, h.now) {
        sent += 1;
        assert!(sent < 100, "a client that does not read is read forever");
        h.publish(c, "x", b"m", QoS::AtLeastOnce, false, Some(sent));
    }
    // What the output holds counts its bytes and a chunk's overhead each (48 bytes).
    assert_eq!(
        sent, 2,
        "2 PUBACKs of 4 bytes with their chunks' overhead fill a 64-byte output"
    );
    h.advance(STALL - Duration::from_secs(1));
    assert!(!h.is_closed(c));
    h.advance(Duration::from_secs(2));
    assert!(h.is_closed(c), "not cut after slow_subscriber_timeout");
}

#[test]
fn own_output_of_many_small_frames_gates_reading_until_it_is_read() {
    let mut h = Harness::new(Config {
        max_queued_bytes: 1024,
        slow_subscriber_timeout: STALL,
        ..Harness::default_config()
    });
    let c = h.connect("pinger", V4);
    h.stalled.insert(c);
    // One read of 1000 PINGREQs: 2000 bytes of PINGRESPs, frames that outlive the
    // iteration are compacted into one chunk, and the bytes alone pass the bound.
    let pings = [0xC0u8, 0x00].repeat(1000);
    h.send_bytes(c, &pings);
    assert!(!h.broker.wants_read(c, h.now));
    assert!(h.broker.output(c).unwrap().chunks() < MAX_OUTPUT_CHUNKS);
    // It reads some of it before the timeout: progress, so not cut, and read again.
    h.advance(STALL - Duration::from_secs(1));
    h.unstall(c);
    assert!(h.broker.wants_read(c, h.now));
    h.advance(STALL * 2);
    assert!(!h.is_closed(c));
}

#[test]
fn a_full_peer_ring_holds_back_only_the_publishers_that_feed_that_peer() {
    let mut m = Mesh::with_config(2, &Harness::default_config());
    let (far, _) = m.connect(1, "far-sub", true);
    m.subscribe(1, far, "far", QoS::AtMostOnce);
    let (near, _) = m.connect(0, "near-sub", true);
    m.subscribe(0, near, "near", QoS::AtMostOnce);
    let (p_far, _) = m.connect(0, "p-far", true);
    let (p_near, _) = m.connect(0, "p-near", true);
    m.shards[0].publish(p_far, "far", b"1", QoS::AtMostOnce, false, None);
    m.shards[0].publish(p_near, "near", b"1", QoS::AtMostOnce, false, None);
    m.settle();
    m.shards[0].broker.on_peer_backlog(0b10);
    assert!(!reads(&mut m, 0, p_far), "its messages go to the full ring");
    assert!(reads(&mut m, 0, p_near), "its messages stay on this shard");
    assert!(reads(&mut m, 0, near), "a subscriber that never published");
    m.shards[0].broker.on_peer_backlog(0);
    assert!(reads(&mut m, 0, p_far));
}

#[test]
fn qos0_to_full_outputs_on_another_shard_is_dropped_without_pausing() {
    let config = Config {
        max_queued_bytes: 64,
        ..Harness::default_config()
    };
    let mut m = Mesh::with_config(2, &config);
    let (far, _) = m.connect(1, "far", true);
    m.subscribe(1, far, "t", QoS::AtMostOnce);
    m.shards[1].stalled.insert(far);
    let (p, _) = m.connect(0, "p", true);
    for _ in 0..20 {
        assert!(reads(&mut m, 0, p));
        m.shards[0].publish(p, "t", b"0123456789", QoS::AtMostOnce, false, None);
        m.settle();
    }
    assert!(m.shards[1].broker.stats().publish_dropped > 0);
    assert!(
        reads(&mut m, 0, p),
        "what other shards' subscribers took is unknown here"
    );
}

#[test]
fn qos0_full_local_subscriber_pauses_only_when_no_other_shard_got_the_message() {
    let config = Config {
        max_queued_bytes: 64,
        ..Harness::default_config()
    };
    let mut m = Mesh::with_config(2, &config);
    let (full, _) = m.connect(0, "full", true);
    m.subscribe(0, full, "t/#", QoS::AtMostOnce);
    m.shards[0].stalled.insert(full);
    let (p, _) = m.connect(0, "p", true);
    // Only the full local subscriber: never read only to drop.
    for _ in 0..20 {
        m.shards[0].publish(p, "t/a", b"0123456789", QoS::AtMostOnce, false, None);
        m.settle();
    }
    assert!(!reads(&mut m, 0, p));
    m.shards[0].unstall(full);
    m.settle();
    assert!(reads(&mut m, 0, p));
    // A healthy subscriber on shard 1 takes the messages: the full one does not pause.
    let (healthy, _) = m.connect(1, "healthy", true);
    m.subscribe(1, healthy, "t/#", QoS::AtMostOnce);
    m.shards[0].stalled.insert(full);
    for _ in 0..20 {
        assert!(reads(&mut m, 0, p));
        m.shards[0].publish(p, "t/b", b"0123456789", QoS::AtMostOnce, false, None);
        m.settle();
    }
    assert_eq!(m.shards[1].clients[&healthy].received.len(), 20);
}

/// Data held back by [`settle_control_first`]: (from, to, message), in send order.
type Held = Vec<(usize, usize, ShardMsg)>;

/// Delivers shard messages in the worst order the mailbox allows: every control-lane
/// message at once, every data-lane one held back (in order) in `held`.
fn settle_control_first(m: &mut Mesh, held: &mut Held) {
    loop {
        let mut now = Vec::new();
        for (i, h) in m.shards.iter_mut().enumerate() {
            h.drive();
            while let Some((to, msg)) = h.broker.poll_shard_message() {
                if to == i || msg.lane() == Lane::Control {
                    now.push((i, to, msg));
                } else {
                    held.push((i, to, msg));
                }
            }
        }
        if now.is_empty() {
            return;
        }
        for (from, to, msg) in now {
            let h = &mut m.shards[to];
            let at = h.now;
            h.broker.on_shard_message(from, msg, at);
        }
    }
}

/// Delivers the held data in order, then settles.
fn release_data(m: &mut Mesh, held: &mut Held) {
    for (from, to, msg) in held.drain(..) {
        let h = &mut m.shards[to];
        let at = h.now;
        h.broker.on_shard_message(from, msg, at);
    }
    m.settle();
}

#[test]
fn installed_never_overtakes_a_publish_sent_to_the_stub_before_it() {
    let mut m = Mesh::with_config(2, &Harness::default_config());
    let (c, _) = m.connect(0, "mover", false);
    m.subscribe(0, c, "t", QoS::AtLeastOnce);
    m.shards[0].drop_conn(c);
    let (p, _) = m.connect(1, "p", true);
    // The session's client reconnects on shard 1; while its claim is under way, a
    // client of shard 1 publishes to it: shard 1 has no session for it yet and sends
    // the message to shard 0, which will hold it in the stub.
    let h = &mut m.shards[1];
    let c2 = h.open(V4);
    h.send(c2, Packet::Connect(Box::new(connect("mover", V4, false))));
    h.publish(p, "t", b"during", QoS::AtLeastOnce, false, Some(1));
    // Control flows (claim, takeover, move), data waits: if `Installed` overtook the
    // publish, the stub would end before holding it and the message would be lost.
    let mut held = Held::new();
    settle_control_first(&mut m, &mut held);
    match m.shards[1].expect(c2) {
        Packet::ConnAck(a) => assert!(a.session_present),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    release_data(&mut m, &mut held);
    assert_eq!(&m.shards[1].expect_publish(c2).payload[..], b"during");
}

#[test]
fn a_pause_overtaking_data_still_holds_the_publisher() {
    let mut m = Mesh::with_config(2, &small_queues());
    let (s, _) = m.connect(1, "s", true);
    m.subscribe(1, s, "t", QoS::AtLeastOnce);
    let (p, _) = m.connect(0, "p", true);
    let mut held = Held::new();
    // Three publishes reach shard 1 and make S backlogged; the fourth is still in the
    // data lane when the pause (control) arrives.
    for id in 1..=3 {
        m.shards[0].publish(p, "t", b"m", QoS::AtLeastOnce, false, Some(id));
    }
    settle_control_first(&mut m, &mut held);
    release_data(&mut m, &mut held);
    assert!(!reads(&mut m, 0, p));
    m.shards[0].publish(p, "t", b"m", QoS::AtLeastOnce, false, Some(4));
    settle_control_first(&mut m, &mut held);
    assert_eq!(held.len(), 1, "the fourth publish waits in the data lane");
    assert!(!reads(&mut m, 0, p));
    // S drains: the resume (control) overtakes the fourth publish, which is then
    // queued, never dropped, and pauses P again.
    let first = m.shards[1].expect_publish(s);
    m.shards[1].ack(s, AckKind::PubAck, first.packet_id.unwrap());
    settle_control_first(&mut m, &mut held);
    assert!(reads(&mut m, 0, p));
    release_data(&mut m, &mut held);
    assert!(
        !reads(&mut m, 0, p),
        "queued over the limit again: paused again"
    );
    let mut got = 1;
    while let Some(Packet::Publish(msg)) = m.shards[1].recv(s) {
        got += 1;
        m.shards[1].ack(s, AckKind::PubAck, msg.packet_id.unwrap());
        m.settle();
    }
    assert_eq!(got, 4);
    assert!(reads(&mut m, 0, p));
}
