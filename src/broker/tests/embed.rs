//! In-process subscriptions on one shard: QoS, retained first, the $-rule, full channels,
//! removal, refused filters.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::Receiver;

use crate::broker::embed::{parse_filter, InternalSub, Message, SubscribeError};
use crate::broker::Broker;
use crate::codec::{ByteStr, Publish, QoS};
use crate::topic::TopicFilter;

fn sub(id: u64, filter: &str, qos: QoS, cap: usize) -> (InternalSub, Receiver<Message>) {
    let (tx, rx) = crossbeam_channel::bounded(cap);
    let s = InternalSub {
        id,
        filter: TopicFilter::parse(filter).unwrap(),
        qos,
        tx,
        dropped: Arc::default(),
        share: None,
    };
    (s, rx)
}

fn publish(topic: &str, qos: QoS, retain: bool) -> Publish {
    Publish {
        topic: ByteStr::from(topic),
        qos,
        retain,
        payload: Bytes::from_static(b"x"),
        ..Publish::default()
    }
}

fn broker() -> Broker {
    Broker::new(Arc::new(crate::config::Config::default()), Instant::now())
}

#[test]
fn inject_reaches_internal_subscription_with_lower_qos() {
    let mut b = broker();
    let (s, rx) = sub(1, "a/+", QoS::AtMostOnce, 8);
    b.add_internal(s, true);
    b.inject(publish("a/b", QoS::AtLeastOnce, false), Instant::now());
    b.inject(publish("b/b", QoS::AtLeastOnce, false), Instant::now());
    let m = rx.try_recv().unwrap();
    assert_eq!(
        (m.topic.as_str(), m.qos, m.retain),
        ("a/b", QoS::AtMostOnce, false)
    );
    assert!(rx.try_recv().is_err());
}

#[test]
fn retained_first_then_live() {
    let mut b = broker();
    b.inject(publish("r/1", QoS::AtLeastOnce, true), Instant::now());
    let (s, rx) = sub(1, "r/#", QoS::ExactlyOnce, 8);
    b.add_internal(s, true);
    b.inject(publish("r/2", QoS::AtMostOnce, false), Instant::now());
    let m = rx.try_recv().unwrap();
    assert_eq!(
        (m.topic.as_str(), m.qos, m.retain),
        ("r/1", QoS::AtLeastOnce, true)
    );
    assert_eq!(rx.try_recv().unwrap().topic.as_str(), "r/2");
}

#[test]
fn mqtt_4_7_2_1_wildcard_does_not_match_sys() {
    let mut b = broker();
    let (s, rx) = sub(1, "#", QoS::AtMostOnce, 8);
    b.add_internal(s, true);
    let (s, rx_sys) = sub(2, "$SYS/#", QoS::AtMostOnce, 8);
    b.add_internal(s, true);
    b.inject(publish("$SYS/x", QoS::AtMostOnce, false), Instant::now());
    assert!(rx.try_recv().is_err());
    assert_eq!(rx_sys.try_recv().unwrap().topic.as_str(), "$SYS/x");
}

#[test]
fn full_channel_drops_and_counts() {
    let mut b = broker();
    let (s, rx) = sub(1, "t", QoS::AtLeastOnce, 1);
    let dropped = Arc::clone(&s.dropped);
    b.add_internal(s, false);
    for _ in 0..3 {
        b.inject(publish("t", QoS::AtLeastOnce, false), Instant::now());
    }
    assert_eq!(rx.len(), 1);
    assert_eq!(dropped.load(Ordering::Relaxed), 2);
    assert_eq!(b.stats().publish_dropped, 2);
}

#[test]
fn removed_or_disconnected_subscription_is_forgotten() {
    let mut b = broker();
    let (s, rx) = sub(1, "t", QoS::AtMostOnce, 4);
    b.add_internal(s, false);
    assert!(b.remove_internal(1));
    assert!(!b.remove_internal(1));
    b.inject(publish("t", QoS::AtMostOnce, false), Instant::now());
    assert!(rx.try_recv().is_err());
    let (s, rx) = sub(2, "t", QoS::AtMostOnce, 4);
    b.add_internal(s, false);
    drop(rx);
    b.inject(publish("t", QoS::AtMostOnce, false), Instant::now());
    assert_eq!(b.internal_subscriptions(), 0);
}

#[test]
fn invalid_filters_are_refused_shared_ones_parsed() {
    let (filter, share) = parse_filter("$share/g/t/#").unwrap();
    assert_eq!(filter.as_str(), "t/#");
    assert_eq!(share.as_ref().map(ByteStr::as_str), Some("$share/g/t/#"));
    assert!(matches!(
        parse_filter("$share/g"),
        Err(SubscribeError::InvalidFilter(_))
    ));
    assert!(matches!(
        parse_filter("a/#/b"),
        Err(SubscribeError::InvalidFilter(_))
    ));
    assert!(parse_filter("a/+/b").is_ok());
}

#[test]
fn host_publishes_in_flight_are_bounded_and_refusals_counted() {
    use crate::broker::embed::{Injected, PublishSlots};
    let slots = PublishSlots::new(2);
    let a = slots.try_take().unwrap();
    let b = slots.try_take().unwrap();
    assert!(
        slots.try_take().is_none(),
        "a third message while two are in flight"
    );
    assert!(slots
        .take_timeout(std::time::Duration::from_millis(1))
        .is_none());
    assert_eq!(slots.refused(), 2);
    // The shard routes one: its slot is free again, and $SYS learns the refusals.
    let mut br = broker();
    let (s, rx) = sub(1, "h/#", QoS::AtMostOnce, 8);
    br.add_internal(s, false);
    br.inject(
        Injected::new(publish("h/1", QoS::AtMostOnce, false), a),
        Instant::now(),
    );
    assert_eq!(rx.try_recv().unwrap().topic.as_str(), "h/1");
    assert_eq!(br.shard_report().stats.embed_publish_refused, 2);
    let c = slots.try_take().expect("a slot was given back");
    assert!(slots.try_take().is_none());
    drop((b, c));
    assert!(slots.try_take().is_some());
}

/// `publish_routed` with persistence on: the host is answered only once the records of
/// the message were drained and written (`persist_written`, which the runtime calls after
/// the write, at the point a client's PUBACK is released); without persistence, at once.
#[test]
fn routed_reply_waits_for_the_write_of_its_records_with_persistence() {
    use crate::broker::embed::{Injected, PublishSlots};
    use crate::persist::Record;

    let slots = PublishSlots::new(4);
    let routed = |b: &mut Broker, topic: &str| {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let slot = slots.try_take().unwrap();
        b.inject(
            Injected::reporting(publish(topic, QoS::AtLeastOnce, true), slot, tx),
            Instant::now(),
        );
        rx
    };

    let mut plain = broker();
    assert_eq!(routed(&mut plain, "p/1").try_recv(), Ok(false));

    let mut b = broker();
    b.enable_persistence(Instant::now(), 1_700_000_000_000, 1);
    let rx = routed(&mut b, "p/1");
    assert!(
        rx.try_recv().is_err(),
        "answered before its records were drained"
    );
    b.persist_written(); // nothing drained yet: nothing is written
    assert!(
        rx.try_recv().is_err(),
        "answered before its records were written"
    );
    assert!(b.has_persist_events());
    let mut records = Vec::new();
    b.drain_persist(&mut records);
    assert!(matches!(records.as_slice(), [Record::Retain { .. }]));
    // A message routed after the drain waits for the next write.
    let later = routed(&mut b, "p/2");
    assert!(rx.try_recv().is_err(), "answered before the write");
    b.persist_written();
    assert_eq!(rx.try_recv(), Ok(false));
    assert!(later.try_recv().is_err());
    b.drain_persist(&mut records);
    b.persist_written();
    assert_eq!(later.try_recv(), Ok(false));
}
