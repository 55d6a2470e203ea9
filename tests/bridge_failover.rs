//! `round_robin false` (the default) with real processes on loopback: a bridge whose
//! primary address is down works on its secondary, tries the primary every 5 s while
//! there, moves back once the primary accepts connections, and loses no QoS 1 message
//! on the way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::bridge::{free_port, publish_all, wait_bridge_up};
use common::{BrokerProc, LOG_TYPES, TIMEOUT, V4};
use rumqttc::QoS;

#[test]
fn round_robin_false_moves_back_to_the_primary_without_losing_qos1() {
    let primary_port = free_port();
    let secondary = BrokerProc::start("");
    let on_secondary = V4::connect("sub-secondary", secondary.port);
    on_secondary.subscribe("rr/#", QoS::AtLeastOnce);
    let edge = BrokerProc::start(&format!(
        "connection up\naddress 127.0.0.1:{primary_port} 127.0.0.1:{}\nremote_clientid edge1\n\
         restart_timeout 1\ntopic rr/# out 1\n",
        secondary.port
    ));
    wait_bridge_up(secondary.port, "edge1");
    let publisher = V4::connect("publisher", edge.port);
    publish_all(&publisher, "rr/a", 0..10);

    // The primary comes up; the bridge is still on the secondary, and messages keep
    // flowing while it moves.
    let primary = BrokerProc::start_config(&format!(
        "listener {primary_port} 127.0.0.1\nallow_anonymous true\n{LOG_TYPES}"
    ));
    let on_primary = V4::connect("sub-primary", primary.port);
    on_primary.subscribe("rr/#", QoS::AtLeastOnce);
    publish_all(&publisher, "rr/a", 10..20);
    wait_bridge_up(primary.port, "edge1");
    assert!(edge.wait_log("switching back to it"));
    publish_all(&publisher, "rr/a", 20..30);

    // Every message reached one of the two remotes.
    let want: BTreeSet<String> = (0..30).map(|i| i.to_string()).collect();
    let mut seen = BTreeSet::new();
    let mut after_switch = BTreeSet::new();
    let deadline = Instant::now() + TIMEOUT;
    while seen != want && Instant::now() < deadline {
        for (c, on_primary) in [(&on_secondary, false), (&on_primary, true)] {
            while let Some(p) = c.next_publish_within(Duration::from_millis(50)) {
                let body = String::from_utf8_lossy(&p.payload).into_owned();
                if on_primary {
                    after_switch.insert(body.clone());
                }
                seen.insert(body);
            }
        }
    }
    assert_eq!(seen, want, "lost: {:?}", want.difference(&seen));
    // The ones published after the move went to the primary.
    assert!(
        (20..30).all(|i| after_switch.contains(&i.to_string())),
        "{after_switch:?}"
    );
}
