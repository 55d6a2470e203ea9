//! Ingest handlers (`BrokerBuilder::ingest`) over real sockets: a device's QoS 1/2
//! message is acknowledged only after the handler accepted it, "busy" stops reading the
//! device (TCP pushes back) and never loses a message, the handler runs on the device's
//! shard thread and sees who published.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Raw, TIMEOUT, V4};
use shardmq::{Broker, BrokerHandle, Config, Ingested, Qos0Policy, StartError, Verdict};

/// What a test handler saw and whether it takes messages now.
#[derive(Default)]
struct Host {
    open: AtomicBool,
    /// Every offer, accepted or not.
    offers: AtomicUsize,
    /// Accepted messages: (topic, payload, client id, username, peer, level, listener).
    accepted: Mutex<Vec<Seen>>,
    /// (instance's shard, msg.shard(), thread name) for each offer.
    threads: Mutex<Vec<(usize, usize, String)>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    topic: String,
    payload: Vec<u8>,
    client_id: String,
    username: Option<String>,
    peer: std::net::SocketAddr,
    level: u8,
    listener: usize,
}

impl Host {
    fn offer(&self, shard: usize, m: &Ingested<'_>) -> Verdict {
        self.offers.fetch_add(1, Ordering::SeqCst);
        let name = std::thread::current().name().unwrap_or("").to_owned();
        self.threads.lock().unwrap().push((shard, m.shard(), name));
        if !self.open.load(Ordering::SeqCst) {
            return Verdict::Busy;
        }
        let from = m.provenance();
        self.accepted.lock().unwrap().push(Seen {
            topic: m.topic().to_owned(),
            payload: m.payload().to_vec(),
            client_id: from.client_id().to_owned(),
            username: from.username().map(str::to_owned),
            peer: from.peer(),
            level: from.protocol_level(),
            listener: from.listener(),
        });
        Verdict::Accept
    }

    fn payloads(&self) -> Vec<Vec<u8>> {
        let seen = self.accepted.lock().unwrap();
        seen.iter().map(|s| s.payload.clone()).collect()
    }
}

fn start(host: &Arc<Host>, threads: usize, qos0: Qos0Policy) -> BrokerHandle {
    let mut config = Config::with_listener("127.0.0.1:0".parse().unwrap());
    config.threads = Some(threads);
    let h = Arc::clone(host);
    Broker::builder(config)
        .ingest_with("telemetry/#", qos0, move |shard| {
            let h = Arc::clone(&h);
            move |m: &Ingested<'_>| h.offer(shard, m)
        })
        .start()
        .unwrap()
}

fn wait(cond: impl FnMut() -> bool) {
    assert!(
        common::wait_until(TIMEOUT, cond),
        "condition not met in time"
    );
}

#[test]
fn qos1_is_acknowledged_only_after_the_handler_accepts() {
    let host = Arc::new(Host::default());
    let broker = start(&host, 1, Qos0Policy::Drop);
    let sub = V4::connect("watcher", broker.port());
    sub.subscribe("telemetry/#", rumqttc::QoS::AtLeastOnce);
    let (mut dev, _, rc) = Raw::mqtt_connect(broker.port(), "dev-1", true);
    assert_eq!(rc, 0);
    dev.send(&common::publish(
        "telemetry/t1",
        1,
        false,
        false,
        7,
        b"21.5",
    ));
    // Busy, offered again and again: no PUBACK, nothing routed.
    wait(|| host.offers.load(Ordering::SeqCst) >= 3);
    assert!(
        dev.recv_within(Duration::from_millis(200)).is_none(),
        "PUBACK before the handler accepted"
    );
    assert!(sub.next_publish_within(Duration::from_millis(50)).is_none());
    host.open.store(true, Ordering::SeqCst);
    let ack = dev.recv().expect("PUBACK once accepted");
    assert_eq!((ack.first, ack.packet_id()), (0x40, 7));
    assert_eq!(host.payloads(), vec![b"21.5".to_vec()]); // exactly once
    let routed = sub.next_publish().expect("routed once accepted");
    assert_eq!(&routed.payload[..], b"21.5");
}

#[test]
fn qos2_pubrec_only_after_accept_and_a_resend_after_a_lost_connection_is_delivered() {
    let host = Arc::new(Host::default());
    let broker = start(&host, 1, Qos0Policy::Drop);
    let port = broker.port();
    let (mut dev, _, _) = Raw::mqtt_connect(port, "dev-q2", false);
    dev.send(&common::publish(
        "telemetry/q2",
        2,
        false,
        false,
        9,
        b"first",
    ));
    wait(|| host.offers.load(Ordering::SeqCst) >= 2);
    assert!(dev.recv_within(Duration::from_millis(100)).is_none());
    // The connection is lost while the handler holds the message: never acknowledged,
    // so the device sends it again (DUP) on its resumed session.
    drop(dev);
    let (mut dev, present, _) = Raw::mqtt_connect(port, "dev-q2", false);
    assert!(present);
    host.open.store(true, Ordering::SeqCst);
    dev.send(&common::publish(
        "telemetry/q2",
        2,
        false,
        true,
        9,
        b"first",
    ));
    let rec = dev.recv().expect("PUBREC");
    assert_eq!((rec.first, rec.packet_id()), (0x50, 9));
    // Delivered to the handler (not taken for a duplicate of the unacknowledged one).
    assert_eq!(host.payloads(), vec![b"first".to_vec()]);
    dev.send(&common::ack(0x62, 9));
    assert_eq!(dev.recv().expect("PUBCOMP").first, 0x70);
}

/// Writes as many copies of `frame` as the socket takes until it has taken nothing for
/// `quiet`. Returns how many were written whole and how far the next one got.
fn write_until_blocked(
    stream: &mut std::net::TcpStream,
    frame: &[u8],
    quiet: Duration,
) -> (usize, usize) {
    stream.set_nonblocking(true).unwrap();
    let (mut whole, mut at) = (0, 0);
    let mut last_progress = Instant::now();
    let give_up = Instant::now() + TIMEOUT;
    while last_progress.elapsed() < quiet {
        assert!(Instant::now() < give_up, "the broker never pushed back");
        match stream.write(&frame[at..]) {
            Ok(n) => {
                at += n;
                if at == frame.len() {
                    at = 0;
                    whole += 1;
                }
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("write failed: {e}"),
        }
    }
    stream.set_nonblocking(false).unwrap();
    (whole, at)
}

#[test]
fn busy_handler_back_pressures_the_device_and_loses_nothing() {
    let host = Arc::new(Host::default());
    let broker = start(&host, 1, Qos0Policy::BackPressure);
    let (mut dev, _, _) = Raw::mqtt_connect(broker.port(), "dev-flood", true);
    let frame = common::publish("telemetry/flood", 0, false, false, 0, &[7u8; 1024]);
    // The broker stops reading: the socket buffers fill and writes block.
    let (mut written, at) =
        write_until_blocked(&mut dev.stream, &frame, Duration::from_millis(500));
    assert!(written > 0);
    assert!(host.offers.load(Ordering::SeqCst) > 0);
    assert!(host.payloads().is_empty());
    host.open.store(true, Ordering::SeqCst);
    if at != 0 {
        // The half-written frame, now that the broker reads again.
        dev.send(&frame[at..]);
        written += 1;
    }
    // Every message written arrives, none dropped.
    wait(|| host.payloads().len() == written);
    assert!(host.payloads().iter().all(|p| p == &vec![7u8; 1024]));
}

#[test]
fn qos0_busy_with_drop_policy_is_dropped_and_the_device_is_read_on() {
    let host = Arc::new(Host::default());
    let broker = start(&host, 1, Qos0Policy::Drop);
    let sub = V4::connect("watcher0", broker.port());
    sub.subscribe("telemetry/#", rumqttc::QoS::AtMostOnce);
    let (mut dev, _, _) = Raw::mqtt_connect(broker.port(), "dev-q0", true);
    for i in 0..10u8 {
        dev.send(&common::publish("telemetry/q0", 0, false, false, 0, &[i]));
    }
    // Not held: the subscriber gets all ten, the handler none.
    for i in 0..10u8 {
        let p = sub.next_publish().expect("routed");
        assert_eq!(&p.payload[..], &[i]);
    }
    assert_eq!(host.offers.load(Ordering::SeqCst), 10);
    assert!(host.payloads().is_empty());
}

#[test]
fn handler_runs_on_the_device_shard_and_sees_its_provenance() {
    let host = Arc::new(Host::default());
    host.open.store(true, Ordering::SeqCst);
    let broker = start(&host, 2, Qos0Policy::Drop);
    // Devices until both shards have had one (SO_REUSEPORT spreads them by address).
    let mut devices = Vec::new();
    for i in 0..64 {
        let id = format!("dev-p{i}");
        let (mut dev, _, _) = Raw::mqtt_connect(broker.port(), &id, true);
        dev.send(&common::publish(
            "telemetry/p",
            1,
            false,
            false,
            1,
            id.as_bytes(),
        ));
        assert_eq!(dev.recv().expect("PUBACK").first, 0x40);
        devices.push((id, dev.stream.local_addr().unwrap(), dev));
        let threads = host.threads.lock().unwrap();
        if threads.iter().any(|t| t.1 == 0) && threads.iter().any(|t| t.1 == 1) {
            break;
        }
    }
    let seen = host.accepted.lock().unwrap().clone();
    assert_eq!(seen.len(), devices.len());
    for (id, addr, _) in &devices {
        let s = seen.iter().find(|s| &s.client_id == id).expect("seen");
        assert_eq!(s.payload, id.as_bytes());
        assert_eq!(s.peer, *addr);
        assert_eq!((s.level, s.listener, s.username.as_deref()), (4, 0, None));
    }
    let threads = host.threads.lock().unwrap();
    let mut shards_used = std::collections::HashSet::new();
    for (instance, shard, name) in threads.iter() {
        assert_eq!(instance, shard, "an instance only runs on its own shard");
        assert_eq!(name, &format!("shardmq-shard-{shard}"));
        shards_used.insert(*shard);
    }
    assert_eq!(shards_used.len(), 2, "devices on both shards");
}

#[test]
fn username_and_protocol_level_from_rumqttc() {
    let host = Arc::new(Host::default());
    host.open.store(true, Ordering::SeqCst);
    let broker = start(&host, 1, Qos0Policy::Drop);
    let mut opts = common::v4_options("rumqttc-dev", broker.port());
    opts.set_credentials("alice", "secret");
    let dev = V4::connect_with(opts);
    dev.publish(
        "telemetry/u",
        rumqttc::QoS::AtLeastOnce,
        false,
        b"x".to_vec(),
    );
    dev.wait_for(|ev| {
        matches!(ev, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))).then_some(())
    })
    .expect("PUBACK");
    let seen = host.accepted.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].client_id, "rumqttc-dev");
    assert_eq!(seen[0].username.as_deref(), Some("alice"));
    assert_eq!(seen[0].topic, "telemetry/u");
}

#[test]
fn an_invalid_or_shared_filter_stops_the_start() {
    for filter in ["telemetry/#/x", "$share/g/telemetry/#"] {
        let config = Config::with_listener("127.0.0.1:0".parse().unwrap());
        let err = Broker::builder(config)
            .ingest(filter, |_| |_: &Ingested<'_>| Verdict::Accept)
            .start()
            .err()
            .expect("refused");
        assert!(matches!(err, StartError::Ingest { .. }), "{err}");
        assert!(err.to_string().contains(filter), "{err}");
    }
}
