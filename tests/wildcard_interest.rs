//! Wildcard subscriptions across shards (issue 14: the other shards learn a wildcard
//! filter from the process-wide interest table, not from a copy in their own trie): a real
//! `shardmq` with `threads 2`, rumqttc clients spread over both shards by SO_REUSEPORT
//! (checked through `$SYS/broker/shards/N/clients/connected`). A subscriber to a filter
//! with '+' or '#' gets what every publisher, on either shard, publishes after its SUBACK,
//! and nothing after it unsubscribed.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{assert_both_shards_used, BrokerProc, V4};
use rumqttc::QoS;

const PUBS: usize = 16;

/// Waits for the UNSUBACK of `filter`.
fn unsubscribe(sub: &V4, filter: &str) {
    sub.client.unsubscribe(filter).unwrap();
    sub.wait_for(|ev| match ev {
        rumqttc::Event::Incoming(rumqttc::Packet::UnsubAck(_)) => Some(()),
        _ => None,
    })
    .expect("UNSUBACK");
}

#[test]
fn wildcard_subscriber_gets_both_shards_messages_until_it_unsubscribes() {
    let broker = BrokerProc::start("threads 2\nsys_interval 1\n");
    let port = broker.port;
    // With 16 publishers, all on the subscriber's shard about once in 65,000 runs.
    let pubs: Vec<V4> = (0..PUBS)
        .map(|i| V4::connect(&format!("wi-pub{i}"), port))
        .collect();
    let sub = V4::connect("wi-sub", port);
    assert_both_shards_used(port);
    for (round, filter) in ["wi/+/t", "wi/#", "+/+/t"].into_iter().enumerate() {
        // Subscribed: every publisher's message arrives, whichever shard it is on.
        sub.subscribe(filter, QoS::AtLeastOnce);
        for (i, p) in pubs.iter().enumerate() {
            p.publish(
                &format!("wi/{i}/t"),
                QoS::AtLeastOnce,
                false,
                format!("{round}:{i}"),
            );
        }
        let mut got = BTreeSet::new();
        while got.len() < PUBS {
            let p = sub
                .next_publish_within(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("{filter}: only {got:?} of {PUBS} arrived"));
            assert_eq!(
                p.topic,
                format!(
                    "wi/{}/t",
                    String::from_utf8_lossy(&p.payload)
                        .split(':')
                        .nth(1)
                        .unwrap()
                )
            );
            assert!(
                got.insert(String::from_utf8_lossy(&p.payload).into_owned()),
                "{filter}: {p:?} twice"
            );
        }
        // Unsubscribed, then subscribed to a fresh wildcard-free marker topic: its
        // SUBACK waits until every shard applied this shard's interest changes in order,
        // the removal included.
        unsubscribe(&sub, filter);
        let marker = format!("wi-mark/{round}");
        sub.subscribe(&marker, QoS::AtLeastOnce);
        // Each publisher sends a message the filter would match, then a marker: the
        // markers come after anything the filter would still have delivered (per
        // publisher order), and nothing but markers may arrive.
        for (i, p) in pubs.iter().enumerate() {
            p.publish(&format!("wi/{i}/t"), QoS::AtLeastOnce, false, "late");
            p.publish(&marker, QoS::AtLeastOnce, false, format!("{i}"));
        }
        let mut markers = BTreeSet::new();
        while markers.len() < PUBS {
            let p = sub
                .next_publish_within(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("{filter}: only {markers:?} markers arrived"));
            assert_eq!(p.topic, marker, "{filter}: delivered after UNSUBACK: {p:?}");
            markers.insert(String::from_utf8_lossy(&p.payload).into_owned());
        }
        unsubscribe(&sub, &marker);
    }
}
