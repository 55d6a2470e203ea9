//! The embedding API: start a broker in-process on port 0, talk to it, inject a message,
//! stop it.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::V4;
use shardmq::{Broker, Config, Outgoing, QoS};

#[test]
fn start_inject_and_stop_in_process() {
    let config = Config::with_listener("127.0.0.1:0".parse().unwrap());
    let broker = Broker::builder(config).start().unwrap();
    let port = broker.port();
    assert_ne!(port, 0);
    let sub = V4::connect("embedded-sub", port);
    sub.subscribe("embedded/#", rumqttc::QoS::AtLeastOnce);
    broker
        .publish(Outgoing::new("embedded/in", &b"from the host process"[..]).qos(QoS::AtLeastOnce))
        .unwrap();
    let p = sub.next_publish().expect("injected message delivered");
    assert_eq!(p.topic, "embedded/in");
    assert_eq!(&p.payload[..], b"from the host process");
    broker.stop();
    // The port is released.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn two_brokers_in_one_process() {
    let a = Broker::builder(Config::with_listener("127.0.0.1:0".parse().unwrap()))
        .start()
        .unwrap();
    let b = Broker::builder(Config::with_listener("127.0.0.1:0".parse().unwrap()))
        .start()
        .unwrap();
    assert_ne!(a.port(), b.port());
    V4::connect("on-a", a.port()).disconnect();
    V4::connect("on-b", b.port()).disconnect();
}

// ---------------------------------------------------------------------------------------
// In-process subscriptions (`BrokerHandle::subscribe`), two shards.

use std::collections::HashMap;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use shardmq::{BrokerHandle, SubscribeError};

const WAIT: Duration = Duration::from_secs(5);

fn two_shards() -> BrokerHandle {
    let mut config = Config::with_listener("127.0.0.1:0".parse().unwrap());
    config.threads = Some(2);
    Broker::builder(config).start().unwrap()
}

fn inject(broker: &BrokerHandle, topic: &str, retain: bool, payload: &'static [u8]) {
    broker
        .publish(
            Outgoing::new(topic, Bytes::from_static(payload))
                .qos(QoS::AtLeastOnce)
                .retain(retain),
        )
        .unwrap();
}

#[test]
fn subscription_receives_every_publisher_in_order_across_shards() {
    let broker = two_shards();
    let sub = broker.subscribe("ingest/#", QoS::AtLeastOnce).unwrap();
    // A network subscriber too, so messages also cross shards (they must not reach the
    // in-process subscription twice).
    let watcher = V4::connect("ingest-watcher", broker.port());
    watcher.subscribe("ingest/#", rumqttc::QoS::AtMostOnce);
    // Eight connections: SO_REUSEPORT spreads them over both shards (all on one shard
    // has probability 1/128).
    let publishers: Vec<V4> = (0..8)
        .map(|i| V4::connect(&format!("ingest-pub-{i}"), broker.port()))
        .collect();
    const PER: usize = 50;
    for seq in 0..PER {
        for (i, p) in publishers.iter().enumerate() {
            p.publish(
                &format!("ingest/{i}"),
                rumqttc::QoS::AtLeastOnce,
                false,
                format!("{i}:{seq}"),
            );
        }
    }
    let mut next: HashMap<usize, usize> = HashMap::new();
    for _ in 0..PER * publishers.len() {
        let m = sub.recv_timeout(WAIT).expect("every message arrives");
        let text = std::str::from_utf8(m.payload()).unwrap();
        let (i, seq) = text.split_once(':').unwrap();
        let (i, seq): (usize, usize) = (i.parse().unwrap(), seq.parse().unwrap());
        assert_eq!(m.topic(), format!("ingest/{i}"));
        assert_eq!((m.qos(), m.is_retained()), (QoS::AtLeastOnce, false));
        let expected = next.entry(i).or_insert(0);
        assert_eq!(seq, *expected, "in order per publisher");
        *expected += 1;
    }
    assert!(next.values().all(|&n| n == PER));
    assert_eq!(sub.dropped(), 0);
    assert!(watcher.next_publish().is_some());
    std::thread::sleep(Duration::from_millis(100));
    assert!(sub.try_recv().is_err(), "nothing delivered twice");
}

#[test]
fn retained_messages_come_first() {
    let broker = two_shards();
    inject(&broker, "state/a", true, b"A");
    // A client's retained message reaches every shard's replica asynchronously: wait
    // until a probe subscription sees it.
    let client = V4::connect("retainer", broker.port());
    client.publish("state/b", rumqttc::QoS::AtLeastOnce, true, "B");
    assert!(common::wait_until(WAIT, || {
        let probe = broker.subscribe("state/b", QoS::AtMostOnce).unwrap();
        probe.recv_timeout(Duration::from_millis(20)).is_ok()
    }));
    let sub = broker.subscribe("state/+", QoS::ExactlyOnce).unwrap();
    client.publish("state/c", rumqttc::QoS::AtMostOnce, false, "C");
    let mut retained: Vec<(String, Bytes)> = (0..2)
        .map(|_| {
            let m = sub.recv_timeout(WAIT).unwrap();
            assert!(m.is_retained());
            assert_eq!(m.qos(), QoS::AtLeastOnce);
            (m.topic().to_owned(), m.payload().clone())
        })
        .collect();
    retained.sort();
    assert_eq!(
        retained,
        [
            ("state/a".to_owned(), Bytes::from_static(b"A")),
            ("state/b".to_owned(), Bytes::from_static(b"B")),
        ]
    );
    let live = sub.recv_timeout(WAIT).unwrap();
    assert_eq!((live.topic(), live.is_retained()), ("state/c", false));
    assert_eq!(live.qos(), QoS::AtMostOnce);
    assert!(sub.recv_timeout(Duration::from_millis(100)).is_err());
}

#[test]
fn wildcard_filters_and_the_dollar_rule() {
    let broker = two_shards();
    let plus = broker.subscribe("site/+/temp", QoS::AtMostOnce).unwrap();
    let all = broker.subscribe("#", QoS::AtMostOnce).unwrap();
    let sys = broker.subscribe("$SYS/embed/#", QoS::AtMostOnce).unwrap();
    let client = V4::connect("wild", broker.port());
    client.publish("site/1/temp", rumqttc::QoS::AtLeastOnce, false, "1");
    client.publish("site/1/humidity", rumqttc::QoS::AtLeastOnce, false, "2");
    client.publish("site/2/temp", rumqttc::QoS::AtLeastOnce, false, "3");
    // [MQTT-4.7.2-1]: '#' does not match a '$' topic.
    inject(&broker, "$SYS/embed/x", false, b"sys");
    let topics = |s: &shardmq::Subscription, n: usize| -> Vec<String> {
        (0..n)
            .map(|_| s.recv_timeout(WAIT).unwrap().topic().to_owned())
            .collect()
    };
    assert_eq!(topics(&plus, 2), ["site/1/temp", "site/2/temp"]);
    assert_eq!(
        topics(&all, 3),
        ["site/1/temp", "site/1/humidity", "site/2/temp"]
    );
    assert_eq!(topics(&sys, 1), ["$SYS/embed/x"]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(all.try_iter().all(|m| !m.topic().starts_with('$')));
    assert!(plus.try_recv().is_err());
    assert!(matches!(
        broker.subscribe("a/#/b", QoS::AtMostOnce),
        Err(SubscribeError::InvalidFilter(_))
    ));
    assert!(matches!(
        broker.subscribe("$share/g", QoS::AtMostOnce),
        Err(SubscribeError::InvalidFilter(_))
    ));
}

#[test]
fn dropping_the_subscription_removes_it_from_every_shard() {
    let broker = two_shards();
    let sub = broker.subscribe("gone/#", QoS::AtMostOnce).unwrap();
    inject(&broker, "gone/1", false, b"1");
    assert_eq!(sub.recv_timeout(WAIT).unwrap().topic(), "gone/1");
    // Keep the channel open from this side: once every shard has removed the
    // subscription (and its sender), the channel reports disconnection.
    let rx = sub.receiver().clone();
    drop(sub);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Err(RecvTimeoutError::Disconnected) => break,
            Ok(m) => panic!("delivered after unsubscribe: {m:?}"),
            Err(RecvTimeoutError::Timeout) => {
                assert!(std::time::Instant::now() < deadline, "a shard kept it");
            }
        }
    }
    // Publishing on both shards afterwards delivers nothing and costs nothing.
    let clients: Vec<V4> = (0..4)
        .map(|i| V4::connect(&format!("gone-{i}"), broker.port()))
        .collect();
    for c in &clients {
        c.publish("gone/2", rumqttc::QoS::AtLeastOnce, false, "x");
    }
    inject(&broker, "gone/3", false, b"3");
    assert!(rx.try_recv().is_err());
}

#[test]
fn inject_and_subscribe_round_trip_without_network_clients() {
    let broker = two_shards();
    let sub = broker.subscribe("loop/+", QoS::ExactlyOnce).unwrap();
    for i in 0..100u32 {
        broker
            .publish(Outgoing::new("loop/x", i.to_be_bytes().to_vec()).qos(QoS::ExactlyOnce))
            .unwrap();
    }
    for i in 0..100u32 {
        let m = sub.recv_timeout(WAIT).unwrap();
        assert_eq!(m.payload(), &Bytes::from(i.to_be_bytes().to_vec()));
        assert_eq!(m.qos(), QoS::ExactlyOnce);
    }
    // The channel ends when the broker stops.
    broker.stop();
    assert!(sub.recv().is_err());
}

#[test]
fn full_subscription_drops_and_counts_without_stalling_the_broker() {
    let broker = two_shards();
    let slow = broker
        .subscribe_with_capacity("flood/#", QoS::AtLeastOnce, 4)
        .unwrap();
    let watcher = V4::connect("flood-watcher", broker.port());
    watcher.subscribe("flood/#", rumqttc::QoS::AtLeastOnce);
    let publisher = V4::connect("flood-pub", broker.port());
    const N: usize = 200;
    for i in 0..N {
        publisher.publish("flood/x", rumqttc::QoS::AtLeastOnce, false, i.to_string());
    }
    for i in 0..N {
        let p = watcher
            .next_publish()
            .expect("the network subscriber gets everything");
        assert_eq!(p.payload, i.to_string().as_bytes());
    }
    assert_eq!(slow.receiver().len(), 4);
    assert_eq!(slow.dropped(), (N - 4) as u64);
    // The first four were kept, in order.
    let kept: Vec<Bytes> = slow.try_iter().map(|m| m.payload().clone()).collect();
    assert_eq!(
        kept,
        ["0", "1", "2", "3"].map(|s| Bytes::from(s.as_bytes().to_vec()))
    );
}

// ---------------------------------------------------------------------------------------
// Provenance: a delivered `Message` says who published it.

#[test]
fn delivered_messages_say_who_published_them() {
    use shardmq::Source;
    let broker = two_shards();
    inject(&broker, "who/retained", true, b"R");
    assert!(common::wait_until(WAIT, || {
        let probe = broker.subscribe("who/retained", QoS::AtMostOnce).unwrap();
        probe.recv_timeout(Duration::from_millis(20)).is_ok()
    }));
    let sub = broker.subscribe("who/#", QoS::AtLeastOnce).unwrap();
    let m = sub.recv_timeout(WAIT).unwrap();
    assert_eq!((m.topic(), m.source()), ("who/retained", &Source::Retained));

    // A 3.1.1 client with a user name.
    let mut o = common::v4_options("who-client", broker.port());
    o.set_credentials("ursula", "pw");
    o.set_last_will(rumqttc::LastWill::new(
        "who/will",
        "gone",
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    let client = V4::connect_with(o);
    client.publish("who/client", rumqttc::QoS::AtLeastOnce, false, "C");
    let m = sub.recv_timeout(WAIT).unwrap();
    assert_eq!(m.topic(), "who/client");
    let Source::Client(from) = m.source() else {
        panic!("expected a client source, got {:?}", m.source());
    };
    assert_eq!(from.client_id(), "who-client");
    assert_eq!(from.username(), Some("ursula"));
    assert_eq!((from.listener(), from.protocol_level()), (0, 4));
    assert_eq!(from.peer().ip().to_string(), "127.0.0.1");
    assert_ne!(from.peer().port(), broker.port());

    // The host.
    inject(&broker, "who/host", false, b"H");
    let m = sub.recv_timeout(WAIT).unwrap();
    assert_eq!((m.topic(), m.source()), ("who/host", &Source::Host));

    // The broker: the client's will, once its connection drops.
    client.drop_connection();
    let m = sub.recv_timeout(WAIT).unwrap();
    assert_eq!((m.topic(), m.source()), ("who/will", &Source::Broker));
}

// ---------------------------------------------------------------------------------------
// In-process members of shared subscription groups.

/// The next message of any member within `timeout`: (member index, topic, payload);
/// members 0..n are in-process subscriptions, member n the network client.
fn next_of_group(
    subs: &[shardmq::Subscription],
    net: &V4,
    timeout: Duration,
) -> Option<(usize, String, String)> {
    let mut select = crossbeam_channel::Select::new();
    for s in subs {
        select.recv(s.receiver());
    }
    select.recv(&net.events);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let op = select.select_deadline(deadline).ok()?;
        let i = op.index();
        if i < subs.len() {
            let m = op.recv(subs[i].receiver()).ok()?;
            let payload = String::from_utf8(m.payload().to_vec()).unwrap();
            return Some((i, m.topic().to_owned(), payload));
        }
        match op.recv(&net.events).ok()? {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                let payload = String::from_utf8(p.payload.to_vec()).unwrap();
                return Some((i, p.topic, payload));
            }
            Ok(_) => {}
            Err(e) => panic!("network member's connection ended: {e}"),
        }
    }
}

#[test]
fn in_process_and_network_members_split_a_shared_group() {
    const GROUP: &str = "$share/workers/jobs/#";
    let broker = two_shards();
    let mut subs: Vec<shardmq::Subscription> = (0..3)
        .map(|_| {
            broker
                .subscribe_with_capacity(GROUP, QoS::AtLeastOnce, 100_000)
                .unwrap()
        })
        .collect();
    let net = V4::connect("net-worker", broker.port());
    net.subscribe(GROUP, rumqttc::QoS::AtLeastOnce);
    // Publishers on both shards (SO_REUSEPORT: all eight on one has probability 1/128).
    let publishers: Vec<V4> = (0..8)
        .map(|i| V4::connect(&format!("jobs-pub-{i}"), broker.port()))
        .collect();

    // Membership reaches the other shard asynchronously: warm up until every member has
    // had a message.
    let mut got = [false; 4];
    let warm = common::wait_until(4 * WAIT, || {
        for p in &publishers {
            p.publish("jobs/warmup", rumqttc::QoS::AtLeastOnce, false, "w");
        }
        while let Some((i, _, _)) = next_of_group(&subs, &net, Duration::from_millis(50)) {
            got[i] = true;
        }
        got.iter().all(|&g| g)
    });
    assert!(warm, "every member gets messages: {got:?}");

    const PER: usize = 100;
    for seq in 0..PER {
        for (i, p) in publishers.iter().enumerate() {
            p.publish(
                &format!("jobs/{i}"),
                rumqttc::QoS::AtLeastOnce,
                false,
                format!("{i}:{seq}"),
            );
        }
    }
    let total = PER * publishers.len();
    let mut seen = std::collections::HashSet::new();
    let mut per_member = [0usize; 4];
    while seen.len() < total {
        let (member, topic, payload) = next_of_group(&subs, &net, WAIT)
            .unwrap_or_else(|| panic!("lost: {} of {total} arrived", seen.len()));
        if topic == "jobs/warmup" {
            continue; // a late warm-up message
        }
        assert!(seen.insert(payload.clone()), "{payload} delivered twice");
        per_member[member] += 1;
    }
    assert!(
        per_member.iter().all(|&n| n > 0),
        "the stream is split: {per_member:?}"
    );
    assert!(subs.iter().all(|s| s.dropped() == 0));
    // Nothing more: every message went to exactly one member.
    let extra = next_of_group(&subs, &net, Duration::from_millis(300))
        .filter(|(_, topic, _)| topic != "jobs/warmup");
    assert!(extra.is_none(), "delivered twice: {extra:?}");

    // A member leaves (its host side gone at once, the shards told asynchronously):
    // the others get every message published after it left.
    drop(subs.remove(0));
    for seq in 0..PER {
        for (i, p) in publishers.iter().enumerate() {
            let payload = format!("after {i}:{seq}");
            p.publish(
                &format!("jobs/{i}"),
                rumqttc::QoS::AtLeastOnce,
                false,
                payload,
            );
        }
    }
    let mut after = std::collections::HashSet::new();
    while after.len() < total {
        let (_, topic, payload) = next_of_group(&subs, &net, WAIT)
            .unwrap_or_else(|| panic!("lost after a member left: {} of {total}", after.len()));
        if topic != "jobs/warmup" {
            assert!(after.insert(payload.clone()), "{payload} delivered twice");
        }
    }
    assert!(subs.iter().all(|s| s.dropped() == 0));
}

/// Host publishes are spread over the shards by topic (`BrokerHandle::publish`): one
/// thread's messages on each topic still reach an MQTT subscriber and an in-process one
/// in the order they were published, interleaved over several topics, on two shards.
#[test]
fn host_publishes_keep_their_order_per_topic_across_shards() {
    const TOPICS: usize = 8;
    const PER_TOPIC: u32 = 300;
    let broker = two_shards();
    let inproc = broker
        .subscribe_with_capacity("order/#", QoS::AtLeastOnce, TOPICS * PER_TOPIC as usize)
        .unwrap();
    let mqtt = V4::connect("order-sub", broker.port());
    mqtt.subscribe("order/#", rumqttc::QoS::AtLeastOnce);
    for i in 0..PER_TOPIC {
        for t in 0..TOPICS {
            let m = Outgoing::new(format!("order/{t}"), i.to_string()).qos(QoS::AtLeastOnce);
            broker.publish_timeout(m, WAIT).unwrap();
        }
    }
    let total = TOPICS * PER_TOPIC as usize;
    let check = |got: Vec<(String, u32)>, who: &str| {
        assert_eq!(got.len(), total, "{who}: every message");
        let mut next: HashMap<String, u32> = HashMap::new();
        for (topic, n) in got {
            let want = next.entry(topic.clone()).or_insert(0);
            assert_eq!(n, *want, "{who}: out of order on {topic}");
            *want += 1;
        }
    };
    let from_inproc = (0..total)
        .map(|_| {
            let m = inproc.recv_timeout(WAIT).unwrap();
            let n = std::str::from_utf8(m.payload()).unwrap().parse().unwrap();
            (m.topic().to_owned(), n)
        })
        .collect();
    check(from_inproc, "in-process");
    let from_mqtt = (0..total)
        .map(|_| {
            let p = mqtt.next_publish().expect("a host message");
            let n = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
            (p.topic, n)
        })
        .collect();
    check(from_mqtt, "MQTT");
}

/// The MQTT 5 properties a host sets on an `Outgoing` reach an MQTT 5 subscriber
/// (rumqttc) and an in-process one; a message no client could publish comes back in
/// `PublishError::Invalid` with its reason, and nothing of it is delivered.
#[test]
fn host_message_properties_reach_subscribers_and_bad_messages_come_back() {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use shardmq::{InvalidMessage, PublishError, TopicError};

    let broker = two_shards();
    let inproc = broker.subscribe("props/#", QoS::AtLeastOnce).unwrap();
    let mut o = rumqttc::v5::MqttOptions::new("props-v5", "127.0.0.1", broker.port());
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut conn) = rumqttc::v5::Client::new(o, 100);
    let (tx, events) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        while let Ok(Ok(ev)) = conn.recv_timeout(WAIT) {
            if let rumqttc::v5::Event::Incoming(p) = ev {
                if tx.send(p).is_err() {
                    return;
                }
            }
        }
    });
    let next = |want: fn(&P5) -> bool| loop {
        let p = events.recv_timeout(WAIT).expect("a packet from the broker");
        if want(&p) {
            return p;
        }
    };
    client
        .subscribe("props/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .unwrap();
    next(|p| matches!(p, P5::SubAck(_)));

    let bad = Outgoing::new("props/+", "x");
    match broker.publish(bad.clone()) {
        Err(PublishError::Invalid { message, reason }) => {
            assert_eq!(*message, bad);
            assert_eq!(reason, InvalidMessage::Topic(TopicError::WildcardInName));
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let not_utf8 = Outgoing::new("props/a", vec![0xc3]).payload_is_utf8(true);
    assert!(matches!(
        broker.publish_routed(not_utf8, WAIT),
        Err(PublishError::Invalid {
            reason: InvalidMessage::NotUtf8,
            ..
        })
    ));

    let m = Outgoing::new("props/a", "{\"t\":71.5}")
        .qos(QoS::AtLeastOnce)
        .message_expiry(Duration::from_secs(600))
        .content_type("application/json")
        .response_topic("props/reply")
        .correlation_data(&b"req-7"[..])
        .user_property("unit", "celsius")
        .user_property("unit", "kelvin")
        .payload_is_utf8(true);
    assert!(broker.publish_routed(m, WAIT).unwrap());

    let P5::Publish(p) = next(|p| matches!(p, P5::Publish(_))) else {
        unreachable!()
    };
    assert_eq!(
        (&p.topic[..], &p.payload[..]),
        (&b"props/a"[..], &b"{\"t\":71.5}"[..])
    );
    let props = p.properties.expect("MQTT 5 properties");
    assert_eq!(props.content_type.as_deref(), Some("application/json"));
    assert_eq!(props.response_topic.as_deref(), Some("props/reply"));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"req-7"[..]));
    assert_eq!(props.payload_format_indicator, Some(1));
    assert!(props
        .message_expiry_interval
        .is_some_and(|s| (590..=600).contains(&s)));
    let units =
        [("unit", "celsius"), ("unit", "kelvin")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(props.user_properties, units.to_vec());

    let got = inproc.recv_timeout(WAIT).unwrap();
    assert_eq!(got.topic(), "props/a");
    assert_eq!(got.source(), &shardmq::Source::Host);
    let props = got.properties();
    assert_eq!(props.content_type(), Some("application/json"));
    assert_eq!(props.response_topic(), Some("props/reply"));
    assert_eq!(
        props.correlation_data().map(|b| &b[..]),
        Some(&b"req-7"[..])
    );
    assert!(props.payload_is_utf8());
    assert_eq!(props.message_expiry_secs(), Some(600));
    assert_eq!(
        props.user_properties().collect::<Vec<_>>(),
        [("unit", "celsius"), ("unit", "kelvin")]
    );
    // Nothing of the refused messages arrived.
    assert!(inproc.try_recv().is_err());
}
