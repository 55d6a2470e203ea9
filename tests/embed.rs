//! The embedding API: start a broker in-process on port 0, talk to it, inject a message,
//! stop it.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::V4;
use shardmq::codec::{ByteStr, Publish, QoS};
use shardmq::{Broker, Config};

#[test]
fn start_inject_and_stop_in_process() {
    let config = Config::with_listener("127.0.0.1:0".parse().unwrap());
    let broker = Broker::builder(config).start().unwrap();
    let port = broker.port();
    assert_ne!(port, 0);
    let sub = V4::connect("embedded-sub", port);
    sub.subscribe("embedded/#", rumqttc::QoS::AtLeastOnce);
    broker.publish(Publish {
        topic: ByteStr::from("embedded/in"),
        qos: QoS::AtLeastOnce,
        payload: Bytes::from_static(b"from the host process"),
        ..Publish::default()
    });
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
