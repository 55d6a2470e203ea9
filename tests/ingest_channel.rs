//! Ingest handlers in channel form (`BrokerBuilder::ingest_channel`) and ack tokens: the
//! device is read on while its acknowledgements wait for the host's tokens, which release
//! them in order; a full channel back-pressures; a dropped token disconnects the device;
//! a tokio task can be the host.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Raw, TIMEOUT, V4};
use crossbeam_channel::Receiver;
use shardmq::{Broker, BrokerHandle, Config, Delivery, IngestSender, Qos0Policy};

fn start(capacity: usize) -> (BrokerHandle, Receiver<Delivery>) {
    let (tx, rx) = crossbeam_channel::bounded::<Delivery>(capacity);
    let config = Config::with_listener("127.0.0.1:0".parse().unwrap());
    let broker = Broker::builder(config)
        .ingest_channel("telemetry/#", Qos0Policy::Drop, move |_| tx.clone())
        .start()
        .unwrap();
    (broker, rx)
}

fn no_packet(dev: &mut Raw) {
    let p = dev.recv_within(Duration::from_millis(200));
    assert!(p.is_none(), "unexpected {p:?}");
}

#[test]
fn acknowledgements_wait_for_their_tokens_and_go_out_in_order() {
    let (broker, rx) = start(16);
    let (mut dev, _, _) = Raw::mqtt_connect(broker.port(), "dev-tok", true);
    for id in 1..=3u16 {
        dev.send(&common::publish(
            "telemetry/t",
            1,
            false,
            false,
            id,
            &[id as u8],
        ));
    }
    // The device is read on: the host has all three, none acknowledged yet.
    let mut got: Vec<Delivery> = (0..3).map(|_| rx.recv_timeout(TIMEOUT).unwrap()).collect();
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d.message.payload()[..], [i as u8 + 1]);
        assert_eq!(d.message.origin().client_id(), "dev-tok");
        assert_eq!(d.message.origin().protocol_level(), 4);
    }
    no_packet(&mut dev);
    let third = got.pop().unwrap();
    let second = got.pop().unwrap();
    let first = got.pop().unwrap();
    second.token.ack();
    no_packet(&mut dev); // 2 waits behind 1 [MQTT-4.6.0-2]
    first.token.ack();
    for id in 1..=2 {
        let ack = dev.recv().expect("PUBACK");
        assert_eq!((ack.first, ack.packet_id()), (0x40, id));
    }
    no_packet(&mut dev);
    third.token.ack();
    let ack = dev.recv().expect("PUBACK");
    assert_eq!((ack.first, ack.packet_id()), (0x40, 3));
}

#[test]
fn a_full_channel_holds_the_device_back_and_loses_nothing() {
    let (broker, rx) = start(1);
    let (mut dev, _, _) = Raw::mqtt_connect(broker.port(), "dev-full", true);
    for id in 1..=5u16 {
        dev.send(&common::publish(
            "telemetry/f",
            1,
            false,
            false,
            id,
            &[id as u8],
        ));
    }
    for id in 1..=5u8 {
        let d = rx.recv_timeout(TIMEOUT).expect("every message, in order");
        assert_eq!(d.message.payload()[..], [id]);
        d.token.ack();
    }
    for id in 1..=5 {
        let ack = dev.recv().expect("PUBACK");
        assert_eq!((ack.first, ack.packet_id()), (0x40, id));
    }
}

#[test]
fn a_token_dropped_without_ack_disconnects_the_device() {
    let (broker, rx) = start(4);
    let (mut dev, _, _) = Raw::mqtt_connect(broker.port(), "dev-drop", true);
    dev.send(&common::publish("telemetry/d", 1, false, false, 1, b"x"));
    drop(rx.recv_timeout(TIMEOUT).unwrap()); // token dropped, never acked
    assert!(dev.closed_by_broker(), "device not disconnected");
}

/// A tokio channel as the host's side.
struct TokioSender(tokio::sync::mpsc::Sender<Delivery>);

impl IngestSender for TokioSender {
    fn has_room(&self) -> bool {
        self.0.capacity() > 0
    }
    fn send(&mut self, d: Delivery) -> Result<(), Delivery> {
        self.0.try_send(d).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(d)
            | tokio::sync::mpsc::error::TrySendError::Closed(d) => d,
        })
    }
}

#[test]
fn a_tokio_task_acknowledges() {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(64);
    let config = Config::with_listener("127.0.0.1:0".parse().unwrap());
    let broker = Broker::builder(config)
        .ingest_channel("telemetry/#", Qos0Policy::Drop, move |_| {
            TokioSender(tx.clone())
        })
        .start()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (seen_tx, seen) = crossbeam_channel::unbounded();
    let host = std::thread::spawn(move || {
        rt.block_on(async move {
            while let Some(d) = rx.recv().await {
                tokio::task::yield_now().await; // "stored"
                seen_tx.send(d.message.topic().to_owned()).unwrap();
                d.token.ack();
            }
        });
    });
    let dev = V4::connect("tokio-dev", broker.port());
    dev.publish(
        "telemetry/tokio",
        rumqttc::QoS::AtLeastOnce,
        false,
        b"1".to_vec(),
    );
    dev.wait_for(|ev| {
        matches!(ev, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))).then_some(())
    })
    .expect("PUBACK after the task acked");
    assert_eq!(seen.try_recv().unwrap(), "telemetry/tokio");
    drop(dev);
    broker.stop(); // drops the senders: the task ends
    host.join().unwrap();
}
