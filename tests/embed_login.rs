//! Deferred logins of the embedding API's access hook (`ConnectInfo::defer`): a hook
//! that asks a slow user store hands the ticket to another thread, the client waits
//! (its pipelined packets kept) while every other client is served, and the answer lets
//! it in or refuses it with the decision's CONNACK code; a dropped ticket, an unanswered
//! one (after `connect_timeout`) and a "deferred" without a ticket refuse it as
//! unavailable. Embedded broker, raw 3.1.1 sockets, rumqttc 5 and mosquitto_pub.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{connect_v311, publish, Raw, TIMEOUT};
use crossbeam_channel::{Receiver, Sender};
use rumqttc::v5::mqttbytes::v5 as mq5;
use shardmq::{AccessHook, Broker, BrokerHandle, Config, ConnectInfo, Decision, LoginTicket};

/// Defers every login whose client id starts with `defer`, sending the ticket to the
/// test; `noticket` returns Deferred without taking one; everyone else is let in now.
struct Slow(Sender<(String, LoginTicket)>);

impl AccessHook for Slow {
    fn authenticate(&mut self, c: &ConnectInfo<'_>) -> Decision {
        if c.client_id().starts_with("noticket") {
            return Decision::Deferred;
        }
        if !c.client_id().starts_with("defer") {
            return Decision::Allow;
        }
        match self.0.send((c.client_id().to_owned(), c.defer())) {
            Ok(()) => Decision::Deferred,
            Err(_) => Decision::Unavailable,
        }
    }
}

fn start(
    threads: usize,
    connect_timeout: Duration,
) -> (BrokerHandle, Receiver<(String, LoginTicket)>) {
    let mut config = Config::with_listener("127.0.0.1:0".parse().unwrap());
    config.threads = Some(threads);
    config.connect_timeout = connect_timeout;
    let (tx, rx) = crossbeam_channel::unbounded();
    let broker = Broker::builder(config)
        .access(move |_shard| Slow(tx.clone()))
        .start()
        .unwrap();
    (broker, rx)
}

/// The next ticket, for `client_id`.
fn ticket(rx: &Receiver<(String, LoginTicket)>, client_id: &str) -> LoginTicket {
    let (id, t) = rx.recv_timeout(TIMEOUT).expect("the hook deferred a login");
    assert_eq!(id, client_id);
    t
}

/// CONNECT and a pipelined QoS 1 PUBLISH in one write.
fn connect_and_publish(port: u16, client_id: &str, topic: &str) -> Raw {
    let mut raw = Raw::connect(port);
    let mut bytes = connect_v311(client_id, true, 60, None);
    bytes.extend(publish(topic, 1, false, false, 7, b"hello"));
    raw.send(&bytes);
    raw
}

#[test]
fn a_deferred_login_waits_for_its_answer_while_others_are_served() {
    for threads in [1, 2] {
        let (broker, rx) = start(threads, Duration::from_secs(30));
        let port = broker.port();
        let (mut watcher, _, code) = Raw::mqtt_connect(port, "watcher", true);
        assert_eq!(code, 0);
        assert_eq!(watcher.subscribe(1, &[("t/#", 1)]), vec![1]);

        let mut slow = connect_and_publish(port, "defer-slow", "t/slow");
        let held = ticket(&rx, "defer-slow");
        // Nothing comes back while the host has not answered...
        assert!(slow.recv_within(Duration::from_millis(500)).is_none());
        // ...and other clients connect, publish and receive meanwhile.
        let (mut other, _, code) = Raw::mqtt_connect(port, "other", true);
        assert_eq!(code, 0);
        other.send(&publish("t/other", 0, false, false, 0, b"x"));
        let p = watcher.recv().expect("t/other delivered");
        assert_eq!(p.kind(), 3);
        // A second deferred login answered first: not blocked behind the first.
        let mut fast = connect_and_publish(port, "defer-fast", "t/fast");
        ticket(&rx, "defer-fast").answer(Decision::Allow);
        let ack = fast.recv().expect("CONNACK");
        assert_eq!((ack.first, ack.body[1]), (0x20, 0), "threads {threads}");
        let puback = fast.recv().expect("PUBACK of the pipelined PUBLISH");
        assert_eq!((puback.kind(), puback.packet_id()), (4, 7));

        held.answer(Decision::Allow);
        let ack = slow.recv().expect("CONNACK");
        assert_eq!((ack.first, ack.body[1]), (0x20, 0), "threads {threads}");
        let puback = slow.recv().expect("PUBACK of the pipelined PUBLISH");
        assert_eq!((puback.kind(), puback.packet_id()), (4, 7));
        // The pipelined messages were routed.
        let mut topics = Vec::new();
        while topics.len() < 2 {
            let p = watcher.recv().expect("a pipelined message delivered");
            if p.kind() == 3 {
                let len = usize::from(u16::from_be_bytes([p.body[0], p.body[1]]));
                topics.push(String::from_utf8(p.body[2..2 + len].to_vec()).unwrap());
                if p.first & 0x06 != 0 {
                    watcher.send(&common::ack(0x40, p.packet_id()));
                }
            }
        }
        topics.sort();
        assert_eq!(topics, ["t/fast", "t/slow"]);
        broker.stop();
    }
}

#[test]
fn refusals_through_a_ticket_get_their_connack_codes() {
    let (broker, rx) = start(2, Duration::from_secs(30));
    let port = broker.port();
    // 3.1.1: bad credentials -> 5 (as Mosquitto), a dropped ticket -> 3 (unavailable).
    let mut bad = connect_and_publish(port, "defer-bad", "t/bad");
    ticket(&rx, "defer-bad").answer(Decision::BadCredentials);
    let ack = bad.recv().expect("CONNACK");
    assert_eq!((ack.first, ack.body[1]), (0x20, 5));
    assert!(bad.closed_by_broker());
    let mut dropped = connect_and_publish(port, "defer-dropped", "t/x");
    drop(ticket(&rx, "defer-dropped"));
    let ack = dropped.recv().expect("CONNACK");
    assert_eq!((ack.first, ack.body[1]), (0x20, 3));
    assert!(dropped.closed_by_broker());

    // MQTT 5 (rumqttc): banned -> 0x8A.
    let mut o = rumqttc::v5::MqttOptions::new("defer-v5", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (_client, mut conn) = rumqttc::v5::Client::new(o, 10);
    let answer = std::thread::spawn(move || ticket(&rx, "defer-v5").answer(Decision::Banned));
    let got = conn.recv_timeout(TIMEOUT).expect("an event");
    match got {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, mq5::ConnectReturnCode::Banned);
        }
        other => panic!("expected a refused CONNACK, got {other:?}"),
    }
    answer.join().unwrap();
    broker.stop();
}

#[test]
fn an_unanswered_login_is_refused_after_connect_timeout() {
    let (broker, rx) = start(1, Duration::from_secs(1));
    let port = broker.port();
    let mut waiting = connect_and_publish(port, "defer-forever", "t/x");
    let kept = ticket(&rx, "defer-forever");
    let ack = waiting.recv().expect("CONNACK after connect_timeout");
    assert_eq!((ack.first, ack.body[1]), (0x20, 3));
    assert!(waiting.closed_by_broker());
    // A late answer finds nothing (and breaks nothing).
    kept.answer(Decision::Allow);
    let (_ok, _, code) = Raw::mqtt_connect(port, "after", true);
    assert_eq!(code, 0);

    // Deferred without a ticket: unavailable at once.
    let mut raw = connect_and_publish(port, "noticket", "t/x");
    let ack = raw.recv().expect("CONNACK");
    assert_eq!((ack.first, ack.body[1]), (0x20, 3));
    broker.stop();
}

#[test]
fn mosquitto_pub_gets_through_a_deferred_login() {
    let Some(pub_bin) = common::mosquitto_tool("mosquitto_pub") else {
        return;
    };
    let (broker, rx) = start(2, Duration::from_secs(30));
    let sensors = broker.subscribe("m/#", shardmq::QoS::AtLeastOnce).unwrap();
    let answer = std::thread::spawn(move || {
        ticket(&rx, "defer-mosq").answer(Decision::Allow);
        ticket(&rx, "defer-mosq-no").answer(Decision::NotAuthorized);
    });
    let run = |id: &str| {
        Command::new(&pub_bin)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port().to_string(),
                "-i",
                id,
            ])
            .args(["-t", "m/1", "-m", "v", "-q", "1"])
            .output()
            .unwrap()
    };
    let ok = run("defer-mosq");
    assert!(ok.status.success(), "{ok:?}");
    let m = sensors.recv_timeout(TIMEOUT).expect("delivered");
    assert_eq!(m.topic(), "m/1");
    let refused = run("defer-mosq-no");
    assert!(!refused.status.success(), "{refused:?}");
    answer.join().unwrap();
    broker.stop();
}
