//! No client can bloat the broker's memory (issue 9), over real sockets and the embedding
//! API: a SUBSCRIBE to everything over a large retained store is delivered in budgeted
//! steps, complete and in order, to a client nobody here wrote; SUBSCRIBEs pipelined
//! beyond the held-SUBACK bound are all answered, in order; the host's publish channel
//! refuses (and counts) or waits instead of growing. The byte-level accounting (nothing
//! pins a read buffer) is tested sans-IO in `src/broker/tests/memory.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{BrokerProc, Raw, TIMEOUT};
use shardmq::{Broker, Config, Outgoing, PublishError, QoS};

/// Topics of the retained store, named so that the walk's order is numeric order.
fn retained_topic(i: usize) -> String {
    format!("r/{:02}/{:03}", i / 1000, i % 1000)
}

#[test]
fn mosquitto_sub_gets_20k_retained_messages_complete_and_in_order() {
    let Some(bin) = common::mosquitto_tool("mosquitto_sub") else {
        return;
    };
    const N: usize = 20_000;
    let broker = BrokerProc::start("");
    // One pipelined write of N retained sets, then a QoS 1 publish: its PUBACK means the
    // shard has applied everything before it.
    let (mut publisher, _, _) = Raw::mqtt_connect(broker.port, "retainer", true);
    let mut burst = Vec::new();
    for i in 0..N {
        burst.extend(common::publish(&retained_topic(i), 0, true, false, 0, b"v"));
    }
    burst.extend(common::publish("sync", 1, false, false, 7, b""));
    publisher.send(&burst);
    let ack = publisher.recv().expect("PUBACK");
    assert_eq!((ack.kind(), ack.packet_id()), (4, 7));

    let out = Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", "r/#", "-v", "-C", &N.to_string(), "-W", "60"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), N, "mosquitto_sub got {} of {N}", lines.len());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            line,
            &format!("{} v", retained_topic(i)),
            "out of order at {i}"
        );
    }
}

#[test]
fn subscribes_pipelined_past_the_held_suback_bound_are_all_answered_in_order() {
    // Two shards: every SUBACK waits for the other shard's interest acknowledgement, so
    // a burst of SUBSCRIBEs reaches the per-connection bound (256) and the broker stops
    // reading the client until acknowledgements arrive, then goes on.
    const N: u16 = 3000;
    let broker = BrokerProc::start("threads 2");
    let (mut client, _, _) = Raw::mqtt_connect(broker.port, "subscriber", true);
    let mut burst = Vec::new();
    for i in 1..=N {
        burst.extend(common::subscribe(i, &[(&format!("pipelined/{i}"), 0)]));
    }
    client.send(&burst);
    for i in 1..=N {
        let ack = client.recv().unwrap_or_else(|| panic!("no SUBACK {i}"));
        assert_eq!((ack.kind(), ack.packet_id()), (9, i));
    }
    // The connection is read normally afterwards.
    client.send(&common::publish("pipelined/7", 1, false, false, 1, b"x"));
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(client.recv().expect("PUBLISH and PUBACK").kind());
    }
    got.sort_unstable();
    assert_eq!(got, [3, 4]);
}

fn in_process(capacity: usize) -> shardmq::BrokerHandle {
    let mut config = Config::with_listener("127.0.0.1:0".parse().unwrap());
    config.threads = Some(2);
    config.sys_interval = Duration::from_secs(1);
    Broker::builder(config)
        .publish_capacity(capacity)
        .start()
        .unwrap()
}

/// A broker whose host may have `capacity` publishes in flight, and an in-process
/// subscriber to them with room for `n`.
fn host_and_subscriber(capacity: usize, n: u32) -> (shardmq::BrokerHandle, shardmq::Subscription) {
    let broker = in_process(capacity);
    let sub = broker
        .subscribe_with_capacity("host/#", QoS::AtLeastOnce, n as usize)
        .unwrap();
    (broker, sub)
}

/// Exactly the messages `numbers` arrive at `sub`, in that order.
fn expect_numbered(sub: &shardmq::Subscription, numbers: impl IntoIterator<Item = u32>) {
    for i in numbers {
        let m = sub.recv_timeout(TIMEOUT).unwrap();
        assert_eq!(m.payload(), &Bytes::from(i.to_be_bytes().to_vec()));
    }
    assert!(sub.try_recv().is_err());
}

fn numbered(i: u32) -> Outgoing {
    Outgoing::new("host/n", i.to_be_bytes().to_vec()).qos(QoS::AtLeastOnce)
}

#[test]
fn host_publish_waits_for_room_and_loses_nothing() {
    const N: u32 = 5000;
    let (broker, sub) = host_and_subscriber(1, N);
    for i in 0..N {
        broker.publish_timeout(numbered(i), TIMEOUT).unwrap();
    }
    expect_numbered(&sub, 0..N);
    assert_eq!(sub.dropped(), 0);
}

#[test]
fn host_publish_refuses_at_the_bound_and_counts_it() {
    const N: u32 = 20_000;
    let (broker, sub) = host_and_subscriber(1, N);
    let sys = broker
        .subscribe("$SYS/broker/publish/embed/refused", QoS::AtMostOnce)
        .unwrap();
    let mut accepted = Vec::new();
    let mut refused = 0u64;
    for i in 0..N {
        match broker.publish(numbered(i)) {
            Ok(()) => accepted.push(i),
            Err(PublishError::Full(p)) => {
                // The message comes back whole.
                assert_eq!(p.payload(), &Bytes::from(i.to_be_bytes().to_vec()));
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // With room for one message, a host publishing in a tight loop outruns the shard
    // (which must be woken for each): some are refused.
    assert!(refused > 0, "no publish was refused");
    // Exactly the accepted ones arrive, in order.
    expect_numbered(&sub, accepted);
    // $SYS reports every refusal (it is published every second).
    let reported = common::wait_until(TIMEOUT, || {
        sys.try_iter()
            .any(|m| std::str::from_utf8(m.payload()).ok() == Some(&refused.to_string()))
    });
    assert!(reported, "$SYS never reported {refused} refusals");

    // Once the broker stops, the message comes back as Stopped.
    broker.request_stop();
    let stopped = common::wait_until(TIMEOUT, || {
        matches!(
            broker.publish_timeout(numbered(0), Duration::from_millis(10)),
            Err(PublishError::Stopped(_))
        )
    });
    assert!(stopped);
}
