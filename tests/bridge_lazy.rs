//! `start_type lazy` with real processes on loopback: an edge shardmq bridged to a
//! central shardmq connects only once `threshold` messages wait for the remote, delivers
//! them all in order at QoS 1, closes the connection after `idle_timeout`, and waits for
//! `threshold` messages again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::bridge::publish_all;
use common::{num, watch_sys, BrokerProc, V4};
use rumqttc::QoS;

const THRESHOLD: usize = 5;

/// The edge's `$SYS` figures of bridge `up` once `queued` reads `n`.
fn wait_queued(edge: &BrokerProc, n: u64) -> std::collections::HashMap<String, String> {
    let seen = watch_sys(edge.port, "$SYS/broker/bridge/up/#", |s| {
        num(s, "$SYS/broker/bridge/up/queued") == n
    });
    assert_eq!(num(&seen, "$SYS/broker/bridge/up/queued"), n, "{seen:?}");
    seen
}

/// What the central subscriber receives next: message payloads (`lz/a`) and bridge
/// states (`s0` / `s1`), until `until` holds for the list.
fn receive(sub: &V4, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut got = Vec::new();
    while !until(&got) {
        let Some(p) = sub.next_publish() else {
            panic!("nothing more arrived; so far {got:?}");
        };
        let body = String::from_utf8_lossy(&p.payload).into_owned();
        if p.topic == "lz/a" {
            got.push(body);
        } else {
            got.push(format!("s{body}"));
        }
    }
    got
}

fn attempts(edge: &BrokerProc) -> usize {
    edge.log_lines()
        .iter()
        .filter(|l| l.contains("Connecting bridge up"))
        .count()
}

#[test]
fn lazy_bridge_connects_at_threshold_delivers_in_order_and_closes_when_idle() {
    let central = BrokerProc::start("");
    let sub = V4::connect("central-sub", central.port);
    sub.subscribe("lz/#", QoS::AtLeastOnce);
    sub.subscribe("$SYS/broker/connection/edge1/state", QoS::AtLeastOnce);
    let edge = BrokerProc::start(&format!(
        "sys_interval 1\nconnection up\naddress 127.0.0.1:{}\nremote_clientid edge1\n\
         restart_timeout 1\nstart_type lazy\nthreshold {THRESHOLD}\nidle_timeout 2\n\
         topic lz/# out 1\n",
        central.port
    ));
    // The bridge's local session and its subscription exist once the priming
    // connection closed (before that, a message would find no subscriber).
    assert!(edge.wait_log("Client local.edge1 closed its connection."));
    let publisher = V4::connect("publisher", edge.port);

    for round in 0..2 {
        let first = round * THRESHOLD;
        // One message short of the threshold: they wait in the bridge's local session
        // (the figure is taken in the loop iteration that checks the threshold) and the
        // bridge does not connect.
        publish_all(&publisher, "lz/a", first..first + THRESHOLD - 1);
        let seen = wait_queued(&edge, (THRESHOLD - 1) as u64);
        assert_eq!(num(&seen, "$SYS/broker/bridge/up/connected"), 0, "{seen:?}");
        assert_eq!(attempts(&edge), round, "connected below the threshold");

        // The threshold: the bridge connects and delivers them all, in order.
        publish_all(&publisher, "lz/a", first + THRESHOLD - 1..first + THRESHOLD);
        let got = receive(&sub, |g| {
            g.iter().filter(|m| !m.starts_with('s')).count() == THRESHOLD
        });
        let messages: Vec<String> = got
            .iter()
            .filter(|m| !m.starts_with('s'))
            .cloned()
            .collect();
        let want: Vec<String> = (first..first + THRESHOLD).map(|i| i.to_string()).collect();
        assert_eq!(messages, want, "received {got:?}");
        assert!(
            got.contains(&"s1".to_string()),
            "no state 1 before the messages: {got:?}"
        );
        assert_eq!(attempts(&edge), round + 1);

        // Idle for idle_timeout: the bridge closes the connection without DISCONNECT,
        // so the central broker publishes its will (state 0).
        let got = receive(&sub, |g| g.last().is_some_and(|m| m == "s0"));
        assert!(got.iter().all(|m| m.starts_with('s')), "{got:?}");
        assert!(edge.wait_log("exceeded its idle timeout"));
        let seen = wait_queued(&edge, 0);
        let connected = watch_sys(edge.port, "$SYS/broker/bridge/up/connected", |s| {
            s.get("$SYS/broker/bridge/up/connected")
                .is_some_and(|v| v == "0")
        });
        assert_eq!(
            num(&connected, "$SYS/broker/bridge/up/connected"),
            0,
            "{seen:?}"
        );
    }
}
