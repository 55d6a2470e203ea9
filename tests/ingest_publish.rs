//! Host-side publishing that waits (`BrokerHandle::publish_routed`): it waits for room
//! instead of refusing, returns once the broker routed the message, and says whether any
//! subscription matched.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{TIMEOUT, V4};
use shardmq::{Broker, Config, Outgoing, QoS};

fn message(topic: &str, payload: &'static [u8]) -> Outgoing {
    Outgoing::new(topic, Bytes::from_static(payload)).qos(QoS::AtLeastOnce)
}

#[test]
fn returns_once_routed_with_whether_anyone_matched() {
    let mut config = Config::with_listener("127.0.0.1:0".parse().unwrap());
    config.threads = Some(2);
    let broker = Broker::builder(config).start().unwrap();
    let sub = broker.subscribe("valves/#", QoS::AtLeastOnce).unwrap();
    let mqtt = V4::connect("valve-3", broker.port());
    mqtt.subscribe("valves/3/set", rumqttc::QoS::AtLeastOnce);

    assert!(broker
        .publish_routed(message("valves/3/set", b"open"), TIMEOUT)
        .unwrap());
    // Routed before it returned: the in-process subscription has it already.
    let m = sub
        .try_recv()
        .expect("in the channel when publish_routed returned");
    assert_eq!(&m.payload()[..], b"open");
    assert_eq!(
        &mqtt.next_publish().expect("delivered").payload[..],
        b"open"
    );

    assert!(!broker
        .publish_routed(message("nobody/listens", b"x"), TIMEOUT)
        .unwrap());
}

#[test]
fn waits_for_room_instead_of_refusing() {
    let config = Config::with_listener("127.0.0.1:0".parse().unwrap());
    let broker = Arc::new(Broker::builder(config).publish_capacity(1).start().unwrap());
    let sub = broker
        .subscribe_with_capacity("load/#", QoS::AtMostOnce, 10_000)
        .unwrap();
    // Four threads, one slot: each call waits for room; none is refused.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let broker = Arc::clone(&broker);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    broker
                        .publish_routed(message("load/x", b"y"), Duration::from_secs(60))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(sub.try_iter().count(), 800);
    assert_eq!(sub.dropped(), 0);
}
