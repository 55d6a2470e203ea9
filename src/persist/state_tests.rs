//! State tests: records applied in order, and a state's own records rebuilding it.

use bytes::Bytes;

use super::*;
use crate::persist::record::stage;

fn id() -> ByteStr {
    ByteStr::from("c1")
}

fn msg(seq: u64) -> Record {
    Record::Message {
        client_id: id(),
        seq,
        qos: QoS::AtLeastOnce,
        retain: false,
        sub_ids: vec![],
        received: 0,
        publish: Publish {
            qos: QoS::AtLeastOnce,
            topic: ByteStr::from("t"),
            packet_id: Some(1),
            payload: Bytes::from(seq.to_string()),
            ..Publish::default()
        },
    }
}

fn open() -> Record {
    Record::SessionOpen {
        client_id: id(),
        version: 4,
        expiry: EXPIRY_NEVER,
    }
}

#[test]
fn window_completes_messages_below_it_except_inflight() {
    let mut s = State::default();
    s.apply(open());
    for seq in 1..=5 {
        s.apply(msg(seq));
    }
    s.apply(Record::Window {
        client_id: id(),
        done_below: 4,
        inflight: vec![InflightEntry {
            seq: 2,
            packet_id: 9,
            stage: stage::PUBCOMP,
        }],
    });
    let sess = &s.sessions[&id()];
    assert_eq!(sess.messages.keys().copied().collect::<Vec<_>>(), [2, 4, 5]);
    assert_eq!(sess.inflight[&2], (9, stage::PUBCOMP));
}

#[test]
fn records_about_unknown_sessions_are_ignored() {
    let mut s = State::default();
    s.apply(msg(1));
    s.apply(Record::WillDone { client_id: id() });
    assert!(s.is_empty());
}

#[test]
fn snapshot_records_rebuild_the_same_state() {
    let mut s = State::default();
    s.apply(open());
    s.apply(Record::Subscribe {
        client_id: id(),
        filter: ByteStr::from("a/#"),
        options: 1,
        id: 0,
    });
    for seq in 1..=3 {
        s.apply(msg(seq));
    }
    s.apply(Record::Window {
        client_id: id(),
        done_below: 2,
        inflight: vec![InflightEntry {
            seq: 2,
            packet_id: 5,
            stage: stage::PUBACK,
        }],
    });
    s.apply(Record::SessionUser {
        client_id: id(),
        listener: 1,
        username: Some(ByteStr::from("alice")),
        identity: Some(ByteStr::from("alice-cert")),
    });
    s.apply(Record::InboundQos2 {
        client_id: id(),
        packet_id: 12,
    });
    s.apply(Record::SessionOffline {
        client_id: id(),
        at: 10,
        expiry: 60,
    });
    s.apply(Record::Retain {
        publish: Publish {
            retain: true,
            topic: ByteStr::from("r"),
            payload: Bytes::from_static(b"x"),
            ..Publish::default()
        },
    });
    let mut rebuilt = State::default();
    s.to_records(|r| rebuilt.apply(r));
    assert_eq!(rebuilt, s);
    assert_eq!(s.sessions[&id()].expires_at(), Some(60_010));
}

#[test]
fn routed_messages_leave_when_every_destination_delivered_them() {
    let mut s = State::default();
    let routed = |n: u64, seqs: Vec<(u8, u64)>| Record::Routed {
        boot: 1,
        from: 0,
        n,
        seqs,
        received: 0,
        publish: Publish {
            qos: QoS::AtLeastOnce,
            topic: ByteStr::from("t"),
            packet_id: Some(1),
            ..Publish::default()
        },
    };
    s.apply(routed(1, vec![(1, 1), (2, 1)]));
    s.apply(routed(2, vec![(1, 2)]));
    s.apply(routed(3, vec![(2, 2)]));
    s.apply(Record::Delivered {
        boot: 1,
        from: 0,
        to: 1,
        upto: 2,
    });
    assert_eq!(s.routed.keys().map(|k| k.2).collect::<Vec<_>>(), [1, 3]);
    let mut rebuilt = State::default();
    s.to_records(|r| rebuilt.apply(r));
    assert_eq!(rebuilt, s);
    s.apply(Record::Delivered {
        boot: 1,
        from: 0,
        to: 2,
        upto: 1,
    });
    assert_eq!(s.routed.keys().map(|k| k.2).collect::<Vec<_>>(), [3]);
    s.apply(Record::RoutedClear { keep_boot: 2 });
    assert!(s.is_empty());
}

#[test]
fn inbound_qos2_ids_are_held_until_released_and_user_is_per_connection() {
    let mut s = State::default();
    s.apply(open());
    let held = |s: &State| -> Vec<u16> { s.sessions[&id()].inbound_qos2.iter().copied().collect() };
    for packet_id in [3, 9] {
        s.apply(Record::InboundQos2 {
            client_id: id(),
            packet_id,
        });
    }
    s.apply(Record::InboundQos2Released {
        client_id: id(),
        packet_id: 3,
    });
    assert_eq!(held(&s), [9]);
    s.apply(Record::SessionUser {
        client_id: id(),
        listener: 0,
        username: Some(ByteStr::from("u")),
        identity: None,
    });
    assert!(s.sessions[&id()].user.is_some());
    // Resumed by a connection without a user: the ids stay, the user does not.
    s.apply(open());
    assert_eq!(held(&s), [9]);
    assert!(s.sessions[&id()].user.is_none());
    // A new session (clean start) starts with none.
    s.apply(Record::SessionGone { client_id: id() });
    s.apply(open());
    assert!(held(&s).is_empty());
}

#[test]
fn empty_retained_payload_deletes() {
    let mut s = State::default();
    let mut p = Publish {
        retain: true,
        topic: ByteStr::from("r"),
        payload: Bytes::from_static(b"x"),
        ..Publish::default()
    };
    s.apply(Record::Retain { publish: p.clone() });
    p.payload = Bytes::new();
    s.apply(Record::Retain { publish: p });
    assert!(s.retained.is_empty());
}

#[test]
fn a_retained_message_keeps_its_source_until_replaced() {
    let retain = |payload: &'static [u8]| Record::Retain {
        publish: Publish {
            retain: true,
            topic: ByteStr::from("status/a"),
            payload: Bytes::from_static(payload),
            ..Publish::default()
        },
    };
    let source = Record::RetainSource {
        topic: ByteStr::from("status/a"),
        client_id: id(),
        username: Some(ByteStr::from("alice")),
        listener: 1,
    };
    let mut s = State::default();
    s.apply(source.clone());
    s.apply(retain(b"up"));
    assert_eq!(s.retained_sources[&ByteStr::from("status/a")].listener, 1);
    // A snapshot rebuilds it.
    let mut rebuilt = State::default();
    s.to_records(|r| rebuilt.apply(r));
    assert_eq!(rebuilt, s);
    // Replaced by a message without a known source (the broker's): no source.
    s.apply(retain(b"down"));
    assert!(s.retained_sources.is_empty());
    // Deleted: no source is kept for a topic without a message.
    s.apply(source.clone());
    s.apply(retain(b""));
    assert!(s.retained.is_empty() && s.retained_sources.is_empty());
    // A source whose message was torn off the log's tail is not kept either, nor given
    // to the next message.
    s.apply(source);
    s.apply(Record::Retain {
        publish: Publish {
            retain: true,
            topic: ByteStr::from("status/b"),
            payload: Bytes::from_static(b"x"),
            ..Publish::default()
        },
    });
    assert!(s.retained_sources.is_empty());
}
