//! MQTT 5 basics with rumqttc's v5 client: reason codes, properties forwarded,
//! assigned client identifier, session expiry.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{BrokerProc, TIMEOUT};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, Packet, PubAckReason, PublishProperties,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Event, MqttOptions};

struct V5 {
    client: Client,
    events: crossbeam_channel::Receiver<Event>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl V5 {
    fn start(opts: MqttOptions) -> Self {
        let (client, mut conn) = Client::new(opts, 100);
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                match conn.recv_timeout(Duration::from_millis(50)) {
                    Ok(Ok(ev)) => {
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                    Ok(Err(_)) | Err(rumqttc::v5::RecvTimeoutError::Disconnected) => return,
                    Err(rumqttc::v5::RecvTimeoutError::Timeout) => {}
                }
            }
        });
        Self {
            client,
            events: rx,
            stop,
        }
    }

    fn wait<T>(&self, timeout: Duration, mut f: impl FnMut(&Packet) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Incoming(p)) => {
                    if let Some(t) = f(&p) {
                        return Some(t);
                    }
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    fn connack(&self) -> ConnAck {
        self.wait(TIMEOUT, |p| match p {
            Packet::ConnAck(a) => Some(a.clone()),
            _ => None,
        })
        .expect("CONNACK")
    }

    fn next_publish(&self, timeout: Duration) -> Option<rumqttc::v5::mqttbytes::v5::Publish> {
        self.wait(timeout, |p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
    }
}

impl Drop for V5 {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn opts(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

#[test]
fn v5_properties_are_forwarded_to_subscribers() {
    let broker = BrokerProc::start("");
    let sub = V5::start(opts("sub5", broker.port));
    assert_eq!(sub.connack().code, ConnectReturnCode::Success);
    sub.client.subscribe("p/1", QoS::AtLeastOnce).unwrap();
    sub.wait(TIMEOUT, |p| matches!(p, Packet::SubAck(_)).then_some(()))
        .expect("SUBACK");

    let publ = V5::start(opts("pub5", broker.port));
    publ.connack();
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"corr-1")),
        user_properties: vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
        ],
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    publ.client
        .publish_with_properties("p/1", QoS::AtLeastOnce, false, "body", props)
        .unwrap();
    let ack = publ
        .wait(TIMEOUT, |p| match p {
            Packet::PubAck(a) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ack.reason, PubAckReason::Success);

    let got = sub.next_publish(TIMEOUT).expect("delivered");
    let p = got.properties.expect("properties forwarded");
    assert_eq!(p.payload_format_indicator, Some(1));
    assert_eq!(p.response_topic.as_deref(), Some("reply/here"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"corr-1"[..]));
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        p.user_properties,
        vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into())
        ],
        "user properties in order [MQTT-3.3.2-18]"
    );
}

/// PUBACK carries reason 0x10 when nobody subscribed.
#[test]
fn v5_puback_no_matching_subscribers() {
    let broker = BrokerProc::start("");
    let publ = V5::start(opts("lonely", broker.port));
    publ.connack();
    publ.client
        .publish("nobody/listens", QoS::AtLeastOnce, false, "x")
        .unwrap();
    let ack = publ
        .wait(TIMEOUT, |p| match p {
            Packet::PubAck(a) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ack.reason, PubAckReason::NoMatchingSubscribers);
}

/// An empty client id gets an Assigned Client Identifier [MQTT-3.2.2-16].
#[test]
fn v5_assigned_client_identifier() {
    let broker = BrokerProc::start("");
    let c = V5::start(opts("", broker.port));
    let ack = c.connack();
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let id = ack
        .properties
        .and_then(|p| p.assigned_client_identifier)
        .expect("assigned id");
    assert!(!id.is_empty());
}

/// Session expiry: a session with expiry > 0 survives a disconnect and keeps messages.
#[test]
fn v5_session_expiry_keeps_session() {
    let broker = BrokerProc::start("");
    let mut o = opts("exp5", broker.port);
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(300));
    let sub = V5::start(o.clone());
    sub.connack();
    sub.client.subscribe("keep5", QoS::AtLeastOnce).unwrap();
    sub.wait(TIMEOUT, |p| matches!(p, Packet::SubAck(_)).then_some(()))
        .unwrap();
    sub.client.disconnect().unwrap();
    sub.wait(Duration::from_millis(500), |_| None::<()>);
    drop(sub);

    let publ = V5::start(opts("pub-exp", broker.port));
    publ.connack();
    publ.client
        .publish("keep5", QoS::AtLeastOnce, false, "stored")
        .unwrap();
    publ.wait(TIMEOUT, |p| matches!(p, Packet::PubAck(_)).then_some(()))
        .unwrap();

    let sub = V5::start(o);
    let ack = sub.connack();
    assert!(ack.session_present);
    assert_eq!(
        &sub.next_publish(TIMEOUT).expect("queued message").payload[..],
        b"stored"
    );
}

/// Session expiry 0 (the default in v5): the session ends with the connection.
#[test]
fn v5_session_expiry_zero_ends_session() {
    let broker = BrokerProc::start("");
    let mut o = opts("noexp5", broker.port);
    o.set_clean_start(false);
    let c = V5::start(o.clone());
    c.connack();
    c.client.disconnect().unwrap();
    c.wait(Duration::from_millis(500), |_| None::<()>);
    drop(c);
    let c = V5::start(o);
    assert!(!c.connack().session_present);
}

/// Topic aliases with rumqttc: the broker announces `max_topic_alias` [MQTT-3.2.2-17],
/// accepts an alias the client sets with its topic [MQTT-3.3.2-12], and aliases a topic
/// it sends the subscriber from its second delivery on, within the subscriber's maximum
/// [MQTT-3.3.2-11]. rumqttc reports PUBLISHes as they came on the wire (then resolves the
/// alias itself, and would answer an unknown one with DISCONNECT 0x82: it stays up).
#[test]
fn v5_topic_aliases_both_ways() {
    let broker = BrokerProc::start("max_topic_alias 5\n");
    let mut o = opts("alias-sub", broker.port);
    o.set_topic_alias_max(Some(2));
    let sub = V5::start(o);
    let ack = sub.connack();
    assert_eq!(ack.properties.and_then(|p| p.topic_alias_max), Some(5));
    sub.client.subscribe("al/#", QoS::AtLeastOnce).unwrap();
    sub.wait(TIMEOUT, |p| matches!(p, Packet::SubAck(_)).then_some(()))
        .expect("SUBACK");

    let publ = V5::start(opts("alias-pub", broker.port));
    publ.connack();
    for i in 0..4 {
        let props = PublishProperties {
            topic_alias: Some(5),
            ..Default::default()
        };
        publ.client
            .publish_with_properties("al/hot", QoS::AtLeastOnce, false, format!("m{i}"), props)
            .unwrap();
        let ack = publ
            .wait(TIMEOUT, |p| match p {
                Packet::PubAck(a) => Some(a.clone()),
                _ => None,
            })
            .expect("PUBACK");
        assert_eq!(ack.reason, PubAckReason::Success);
    }
    let got: Vec<(String, Option<u16>, String)> = (0..4)
        .map(|_| {
            let p = sub.next_publish(TIMEOUT).expect("delivered");
            (
                String::from_utf8(p.topic.to_vec()).unwrap(),
                p.properties.and_then(|p| p.topic_alias),
                String::from_utf8(p.payload.to_vec()).unwrap(),
            )
        })
        .collect();
    let hot = "al/hot".to_owned();
    assert_eq!(
        got,
        [
            (hot.clone(), None, "m0".to_owned()),
            (hot, Some(1), "m1".to_owned()),
            (String::new(), Some(1), "m2".to_owned()),
            (String::new(), Some(1), "m3".to_owned()),
        ]
    );
}

/// SIGTERM: a v5 client is told the server is shutting down (DISCONNECT 0x8B) before its
/// connection closes (3.14.2.1). (Raw bytes: rumqttc drops the event of a DISCONNECT
/// when its event loop ends on it.)
#[test]
fn v5_shutdown_sends_disconnect_0x8b() {
    let broker = BrokerProc::start("");
    let mut raw = common::Raw::connect(broker.port);
    // CONNECT: "MQTT" level 5, clean start, keep alive 30, no properties, id "bye5".
    let mut body = Vec::new();
    common::mqtt_str(b"MQTT", &mut body);
    body.extend_from_slice(&[5, 0x02, 0, 30, 0]);
    common::mqtt_str(b"bye5", &mut body);
    raw.send(&common::frame(0x10, &body));
    let ack = raw.recv().expect("CONNACK");
    assert_eq!((ack.first, ack.body[1]), (0x20, 0));
    broker.signal(libc::SIGTERM);
    let d = raw.recv().expect("DISCONNECT before the close");
    assert_eq!((d.first, d.body.first().copied()), (0xE0, Some(0x8B)));
    assert!(raw.recv().is_none(), "closed after the DISCONNECT");
}
