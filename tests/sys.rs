//! $SYS topics as Mosquitto names them, published every sys_interval.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{BrokerProc, V4};
use rumqttc::QoS;

#[test]
fn sys_topics_are_published() {
    let broker = BrokerProc::start("sys_interval 1");
    let publ = V4::connect("counted", broker.port);
    for _ in 0..3 {
        publ.publish("some/topic", QoS::AtLeastOnce, true, "x");
    }
    let sub = V4::connect("sysmon", broker.port);
    sub.subscribe("$SYS/#", QoS::AtMostOnce);
    let wanted = [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/clients/total",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/retained messages/count",
        "$SYS/broker/load/messages/received/1min",
    ];
    let mut seen: HashMap<String, String> = HashMap::new();
    let ok = common::wait_until(common::TIMEOUT, || {
        while let Some(p) = sub.next_publish_within(std::time::Duration::from_millis(50)) {
            seen.insert(
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            );
        }
        let num = |t: &str| seen.get(t).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // The first values may predate our clients (they are retained from the last
        // tick): wait for a tick that counts them.
        wanted.iter().all(|t| seen.contains_key(*t))
            && num("$SYS/broker/clients/connected") >= 2
            && num("$SYS/broker/messages/received") >= 3
    });
    assert!(
        ok,
        "missing $SYS topics; saw {:?}",
        seen.keys().collect::<Vec<_>>()
    );
    assert!(seen["$SYS/broker/version"].starts_with("shardmq"));
    let connected: u64 = seen["$SYS/broker/clients/connected"].parse().unwrap();
    assert!(connected >= 2, "two clients connected: {connected}");
    let received: u64 = seen["$SYS/broker/messages/received"].parse().unwrap();
    assert!(received >= 3);
    // Retained "some/topic" plus the retained $SYS topics themselves may count; at least 1.
    let retained: u64 = seen["$SYS/broker/retained messages/count"].parse().unwrap();
    assert!(retained >= 1);
    assert!(seen["$SYS/broker/uptime"].ends_with("seconds"));
}
