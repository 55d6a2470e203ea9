//! Bridges with real processes on loopback: shardmq <-> shardmq and shardmq <->
//! Mosquitto (the Debian package, started here), in, out and both directions with
//! prefix remapping at QoS 0/1/2, a both-ways bridge without loops, the remote restarted
//! mid-stream under QoS 1 with nothing lost, and address failover.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::bridge::{free_port, wait_bridge_up};
use common::{num, temp_dir, v4_options, wait_until, watch_sys, BrokerProc, TIMEOUT, V4};
use rumqttc::QoS;

/// How long a message that must not come is waited for.
const ABSENT: Duration = Duration::from_millis(1500);

/// Mosquitto is installed (else the test is skipped, or fails with
/// SHARDMQ_REQUIRE_INTEROP=1: [`common::mosquitto_broker`]).
fn have_mosquitto() -> bool {
    common::mosquitto_broker().is_some()
}

/// A mosquitto process on a fixed port (so that it can be restarted on it).
struct Mosquitto {
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
}

impl Mosquitto {
    fn start(extra: &str) -> Self {
        Self::start_on(free_port(), extra)
    }

    fn start_on(port: u16, extra: &str) -> Self {
        let dir = temp_dir("mosquitto");
        let conf = dir.join("mosquitto.conf");
        let user = if unsafe_is_root() { "user root\n" } else { "" };
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n{user}persistence_location {}/\n{extra}\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut m = Self {
            child: None,
            port,
            conf,
        };
        m.run();
        m
    }

    fn run(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        assert!(
            wait_until(TIMEOUT, || std::net::TcpStream::connect(addr).is_ok()),
            "mosquitto did not start"
        );
    }

    /// SIGTERM (Mosquitto saves its persistence file) and wait for the exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = i32::try_from(c.id()).unwrap();
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unsafe_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn edge(remote: u16, bridge: &str) -> BrokerProc {
    BrokerProc::start(&format!(
        "sys_interval 1\nconnection up\naddress 127.0.0.1:{remote}\nremote_clientid edge1\n\
         restart_timeout 1\n{bridge}"
    ))
}

/// Publishes one QoS 1 message on `port` and waits for its PUBACK (the client stays
/// connected until then).
fn publish_acked(port: u16, topic: &str, qos: QoS, retain: bool, body: &str) {
    let c = V4::connect(&format!("p-{topic}"), port);
    c.publish(topic, qos, retain, body);
    assert!(puback(&c), "no PUBACK for {topic}");
}

/// A persistent QoS 1 subscriber to `filter` at `port`, left offline; connect again with
/// the returned options to collect what was queued for it.
fn offline_collector(port: u16, filter: &str) -> rumqttc::MqttOptions {
    let mut opts = v4_options("collector", port);
    opts.set_clean_session(false);
    let collector = V4::connect_with(opts.clone());
    collector.subscribe(filter, QoS::AtLeastOnce);
    collector.disconnect();
    opts
}

/// Connects with `opts` and collects distinct payloads until `n` arrived (or none comes).
fn collect(opts: rumqttc::MqttOptions, n: usize) -> BTreeSet<String> {
    let c = V4::connect_with(opts);
    let mut seen = BTreeSet::new();
    while seen.len() < n {
        match c.next_publish() {
            Some(p) => {
                seen.insert(payload(&p));
            }
            None => break,
        }
    }
    seen
}

/// Waits for one PUBACK on `c`.
fn puback(c: &V4) -> bool {
    c.wait_for(|ev| match ev {
        rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => Some(()),
        _ => None,
    })
    .is_some()
}

fn payload(p: &rumqttc::Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

#[test]
fn shardmq_to_shardmq_out_and_in_with_prefixes_at_every_qos() {
    let central = BrokerProc::start("");
    let edge = edge(
        central.port,
        "topic s/# out 2 edge/ site1/\ntopic c/# in 2 cmd/ site1/cmd/\n",
    );
    wait_bridge_up(central.port, "edge1");
    wait_bridge_up(edge.port, "edge1");
    let at_central = V4::connect("at-central", central.port);
    at_central.subscribe("site1/s/#", QoS::ExactlyOnce);
    let at_edge = V4::connect("at-edge", edge.port);
    at_edge.subscribe("cmd/#", QoS::ExactlyOnce);
    let pub_edge = V4::connect("pub-edge", edge.port);
    let pub_central = V4::connect("pub-central", central.port);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        pub_edge.publish("edge/s/temp", qos, false, format!("up {qos:?}"));
        let p = at_central.next_publish().expect("out message at central");
        assert_eq!(
            (p.topic.as_str(), payload(&p)),
            ("site1/s/temp", format!("up {qos:?}"))
        );
        assert_eq!(p.qos, qos);
        pub_central.publish("site1/cmd/c/reboot", qos, false, format!("down {qos:?}"));
        let p = at_edge.next_publish().expect("in message at edge");
        assert_eq!(
            (p.topic.as_str(), payload(&p)),
            ("cmd/c/reboot", format!("down {qos:?}"))
        );
        assert_eq!(p.qos, qos);
    }
    // Topics no line maps stay where they are.
    pub_edge.publish("edge/other", QoS::AtLeastOnce, false, "local");
    pub_central.publish("cmd/c/x", QoS::AtLeastOnce, false, "not site1");
    assert!(at_central.next_publish_within(ABSENT).is_none());
    assert!(at_edge.next_publish_within(ABSENT).is_none());
}

/// Both directions on one pattern: each side's subscriber gets each message once.
fn both_ways_without_loop(version: &str) {
    let central = BrokerProc::start("");
    let edge = edge(
        central.port,
        &format!("bridge_protocol_version {version}\ntopic b/# both 1\n"),
    );
    wait_bridge_up(central.port, "edge1");
    let at_central = V4::connect("at-central", central.port);
    at_central.subscribe("b/#", QoS::AtLeastOnce);
    let at_edge = V4::connect("at-edge", edge.port);
    at_edge.subscribe("b/#", QoS::AtLeastOnce);
    let pub_edge = V4::connect("pub-edge", edge.port);
    pub_edge.publish("b/1", QoS::AtLeastOnce, false, "from edge");
    let pub_central = V4::connect("pub-central", central.port);
    pub_central.publish("b/2", QoS::AtLeastOnce, false, "from central");
    for c in [&at_central, &at_edge] {
        let mut got: Vec<String> = (0..2)
            .map(|_| payload(&c.next_publish().expect("message")))
            .collect();
        got.sort();
        assert_eq!(got, vec!["from central", "from edge"]);
        assert!(
            c.next_publish_within(ABSENT).is_none(),
            "a message came back"
        );
    }
}

#[test]
fn shardmq_to_shardmq_both_ways_v5_no_local_has_no_loop() {
    both_ways_without_loop("mqttv50");
}

#[test]
fn shardmq_to_shardmq_both_ways_v311_bridge_bit_has_no_loop() {
    // try_private (default): the central shardmq takes the edge as a bridge.
    both_ways_without_loop("mqttv311");
}

#[test]
fn shardmq_edge_and_mosquitto_central_both_ways_without_loops() {
    if !have_mosquitto() {
        return;
    }
    let central = Mosquitto::start("");
    // try_private (default): Mosquitto treats the bridge as one and sends nothing back.
    let edge = edge(
        central.port,
        "topic t/# both 1\ntopic in/# in 0 local/ remote/\n",
    );
    wait_bridge_up(central.port, "edge1");
    let at_central = V4::connect("at-central", central.port);
    at_central.subscribe("t/#", QoS::AtLeastOnce);
    let at_edge = V4::connect("at-edge", edge.port);
    at_edge.subscribe("t/#", QoS::AtLeastOnce);
    at_edge.subscribe("local/#", QoS::AtLeastOnce);
    let pub_edge = V4::connect("pub-edge", edge.port);
    let pub_central = V4::connect("pub-central", central.port);
    pub_edge.publish("t/a", QoS::AtLeastOnce, false, "from edge");
    pub_central.publish("t/b", QoS::AtLeastOnce, false, "from central");
    for c in [&at_central, &at_edge] {
        let mut got: Vec<String> = (0..2)
            .map(|_| payload(&c.next_publish().expect("message")))
            .collect();
        got.sort();
        assert_eq!(got, vec!["from central", "from edge"]);
        assert!(c.next_publish_within(ABSENT).is_none(), "a message looped");
    }
    pub_central.publish("remote/in/x", QoS::AtMostOnce, false, "renamed");
    let p = at_edge.next_publish().expect("in message");
    assert_eq!(
        (p.topic.as_str(), payload(&p)),
        ("local/in/x", "renamed".to_string())
    );
}

#[test]
fn mosquitto_restarted_mid_stream_under_qos1_loses_nothing() {
    if !have_mosquitto() {
        return;
    }
    let mut central = Mosquitto::start("persistence true\nautosave_interval 1\n");
    // A persistent subscriber at the central broker, offline while the stream flows.
    let opts = offline_collector(central.port, "data/#");
    let edge = edge(central.port, "topic data/# out 1\n");
    wait_bridge_up(central.port, "edge1");
    let publisher = V4::connect("publisher", edge.port);
    const N: usize = 200;
    for i in 0..N {
        if i == N / 2 {
            central.stop();
            central.run();
        }
        publisher.publish("data/x", QoS::AtLeastOnce, false, format!("{i}"));
        // Acknowledged by the edge: from here on the edge answers for it.
        assert!(puback(&publisher), "PUBACK {i}");
    }
    let seen = collect(opts, N);
    let missing: Vec<usize> = (0..N).filter(|i| !seen.contains(&i.to_string())).collect();
    assert!(missing.is_empty(), "lost across the restart: {missing:?}");
    // The bridge's figures: everything sent (at least once), one reconnection, nothing
    // waiting any more.
    let sys = watch_sys(edge.port, "$SYS/broker/bridge/up/#", |s| {
        num(s, "$SYS/broker/bridge/up/sent") >= N as u64
            && num(s, "$SYS/broker/bridge/up/reconnects") >= 1
            && s.get("$SYS/broker/bridge/up/queued").map(String::as_str) == Some("0")
            && s.get("$SYS/broker/bridge/up/connected").map(String::as_str) == Some("1")
    });
    assert!(
        num(&sys, "$SYS/broker/bridge/up/sent") >= N as u64,
        "{sys:?}"
    );
    assert!(
        num(&sys, "$SYS/broker/bridge/up/reconnects") >= 1,
        "{sys:?}"
    );
    assert_eq!(
        sys.get("$SYS/broker/bridge/up/queued").map(String::as_str),
        Some("0")
    );
}

#[test]
fn the_next_address_is_tried_when_the_first_refuses() {
    let central = BrokerProc::start("");
    let dead = free_port();
    let edge = BrokerProc::start(&format!(
        "connection up\naddresses 127.0.0.1:{dead} 127.0.0.1:{}\nremote_clientid edge1\n\
         restart_timeout 1\ntopic f/# out 1\n",
        central.port
    ));
    wait_bridge_up(central.port, "edge1");
    let at_central = V4::connect("at-central", central.port);
    at_central.subscribe("f/#", QoS::AtLeastOnce);
    publish_acked(edge.port, "f/1", QoS::AtLeastOnce, false, "via backup");
    assert_eq!(
        payload(&at_central.next_publish().expect("message")),
        "via backup"
    );
    assert!(edge
        .log_lines()
        .iter()
        .any(|l| l.contains("bridge up") && l.contains("retrying")));
}

#[test]
fn sighup_starts_changed_and_new_bridges_and_stops_removed_ones() {
    let central = BrokerProc::start("");
    let edge = edge(central.port, "topic x/# out 1\n");
    wait_bridge_up(central.port, "edge1");
    let at_central = V4::connect("at-central", central.port);
    at_central.subscribe("x/#", QoS::AtLeastOnce);
    at_central.subscribe("y/#", QoS::AtLeastOnce);
    let publisher = V4::connect("p", edge.port);
    publisher.publish("x/1", QoS::AtLeastOnce, false, "x before");
    assert_eq!(
        payload(&at_central.next_publish().expect("x before")),
        "x before"
    );

    // The bridge's topic changes and a second bridge appears.
    let base = std::fs::read_to_string(&edge.config_path).unwrap();
    let changed = base.replace("topic x/# out 1", "topic y/# out 1")
        + &format!(
            "\nconnection two\naddress 127.0.0.1:{}\nremote_clientid edge2\ntopic z/# out 1\n",
            central.port
        );
    std::fs::write(&edge.config_path, changed).unwrap();
    edge.signal(libc::SIGHUP);
    wait_bridge_up(central.port, "edge2");
    at_central.subscribe("z/#", QoS::AtLeastOnce);
    // The changed bridge reconnected: y goes across, x no longer does.
    let y_arrives = wait_until(TIMEOUT, || {
        publisher.publish("y/1", QoS::AtLeastOnce, false, "y");
        at_central
            .next_publish_within(Duration::from_millis(300))
            .is_some_and(|p| payload(&p) == "y")
    });
    assert!(y_arrives, "the changed bridge did not restart");
    publisher.publish("z/1", QoS::AtLeastOnce, false, "z");
    let mut got = at_central.next_publish().expect("z");
    while payload(&got) == "y" {
        got = at_central.next_publish().expect("z");
    }
    assert_eq!(payload(&got), "z");
    publisher.publish("x/1", QoS::AtLeastOnce, false, "x after");
    while let Some(p) = at_central.next_publish_within(ABSENT) {
        assert_ne!(payload(&p), "x after", "the old definition still runs");
    }

    // Removed: the bridge stops, and the central broker publishes its will.
    std::fs::write(
        &edge.config_path,
        base.split("connection up").next().unwrap(),
    )
    .unwrap();
    let watch = V4::connect("watch-down", central.port);
    watch.subscribe("$SYS/broker/connection/+/state", QoS::AtMostOnce);
    edge.signal(libc::SIGHUP);
    let mut down = BTreeSet::new();
    let all_down = wait_until(TIMEOUT, || {
        while let Some(p) = watch.next_publish_within(Duration::from_millis(100)) {
            if &p.payload[..] == b"0" {
                down.insert(p.topic.clone());
            }
        }
        down.len() == 2
    });
    assert!(all_down, "bridges still up: {down:?}");
}

#[test]
fn tls_to_the_remote_with_a_client_certificate() {
    let Some(t) = common::tls::tools() else {
        eprintln!("openssl not installed; skipped");
        return;
    };
    let pki = common::tls::Pki::generate(&t.openssl);
    let central = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        pki.path("ca.crt"),
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let tls_port = common::tls::listener_port(&central, 1);
    let bridge = |ca: &str| {
        format!(
            "sys_interval 1\nconnection up\naddress localhost:{tls_port}\nremote_clientid edge1\n\
             restart_timeout 1\ntopic s/# out 1\nbridge_cafile {}\nbridge_certfile {}\n\
             bridge_keyfile {}\n",
            pki.path(ca),
            pki.path("client1.crt"),
            pki.path("client1.key")
        )
    };
    let edge = BrokerProc::start(&bridge("ca.crt"));
    wait_bridge_up(central.port, "edge1");
    let at_central = V4::connect("at-central", central.port);
    at_central.subscribe("s/#", QoS::AtLeastOnce);
    publish_acked(edge.port, "s/1", QoS::AtLeastOnce, false, "over TLS");
    assert_eq!(
        payload(&at_central.next_publish().expect("message")),
        "over TLS"
    );

    // A remote whose certificate the bridge's CA did not sign is never connected to.
    let rogue = BrokerProc::start(&bridge("rogue.crt"));
    assert!(rogue.wait_log("bridge up: read: TLS: invalid peer certificate"));
    assert!(!rogue
        .log_lines()
        .iter()
        .any(|l| l.contains("Bridge up connected")));
    drop(edge);
}

#[test]
fn bridge_tls_options_without_a_ca_stop_the_start() {
    let err = common::tls::refused_start(
        "listener 0 127.0.0.1\nconnection up\naddress h\ntopic a\nbridge_certfile /c\nbridge_keyfile /k\n",
    );
    assert!(err.contains("would connect in clear"), "{err}");
    let err = common::tls::refused_start(
        "listener 0 127.0.0.1\nconnection up\naddress h\ntopic a\nbridge_cafile /nonexistent/ca.crt\n",
    );
    assert!(
        err.contains("bridge up") && err.contains("/nonexistent/ca.crt"),
        "{err}"
    );
}

#[test]
fn messages_published_before_the_remote_was_ever_reached_wait_for_it() {
    if !have_mosquitto() {
        return;
    }
    // The central broker knows a persistent subscriber, then is stopped.
    let mut central = Mosquitto::start("persistence true\n");
    let opts = offline_collector(central.port, "q/#");
    central.stop();
    // The edge starts while the central broker is down: its bridge sets up its local
    // session, then fails to reach the remote.
    let edge = edge(central.port, "topic q/# out 1\n");
    assert!(edge.wait_log("bridge up: connect"));
    let publisher = V4::connect("publisher", edge.port);
    const N: usize = 20;
    for i in 0..N {
        publisher.publish("q/x", QoS::AtLeastOnce, false, format!("{i}"));
    }
    assert!((0..N).all(|_| puback(&publisher)));
    central.run();
    wait_bridge_up(central.port, "edge1");
    let seen = collect(opts, N);
    assert_eq!(seen.len(), N, "arrived: {seen:?}");
}

#[test]
fn messages_published_right_after_the_start_are_forwarded() {
    // No waiting for the bridge: the edge accepts clients only once the bridge's local
    // session and its `out` subscription exist on every shard, so a message published
    // by the first client cannot find no subscriber.
    let central = BrokerProc::start("");
    let opts = offline_collector(central.port, "early/#");
    let edge = BrokerProc::start(&format!(
        "threads 2\nconnection up\naddress 127.0.0.1:{}\nremote_clientid edge1\n\
         restart_timeout 1\ntopic early/# out 1\n",
        central.port
    ));
    const N: usize = 20;
    for p in 0..2 {
        let publisher = V4::connect(&format!("early-publisher-{p}"), edge.port);
        for i in 0..N {
            publisher.publish("early/x", QoS::AtLeastOnce, false, format!("{p}-{i}"));
        }
        assert!((0..N).all(|_| puback(&publisher)));
    }
    let seen = collect(opts, 2 * N);
    assert_eq!(seen.len(), 2 * N, "arrived: {seen:?}");
}

#[test]
fn start_type_once_does_not_retry() {
    let dead = free_port();
    let edge = edge(dead, "start_type once\ntopic o/# out 0\n");
    assert!(edge.wait_log("not restarted (start_type once)"));
    // restart_timeout is 1 s: an automatic bridge would have tried again by now.
    let again = wait_until(Duration::from_secs(3), || {
        edge.log_lines()
            .iter()
            .filter(|l| l.contains("Connecting bridge up"))
            .count()
            > 1
    });
    assert!(!again, "start_type once retried");
}

#[test]
fn bridge_bind_address_is_the_peer_address_the_remote_sees() {
    let central = BrokerProc::start("");
    let _edge = edge(
        central.port,
        "bridge_bind_address 127.0.0.2\ntopic b/# out 0\n",
    );
    assert!(
        central.wait_log("New client connected from 127.0.0.2:"),
        "the remote saw another peer: {:?}",
        central.log_lines()
    );
    assert!(central
        .log_lines()
        .iter()
        .any(|l| l.contains("New client connected from 127.0.0.2:") && l.contains(" as edge1 ")));
}

#[cfg(feature = "psk")]
#[test]
fn tls_psk_to_the_remote_and_a_wrong_key_is_refused() {
    let dir = temp_dir("bridge-psk");
    let file = dir.join("psk");
    std::fs::write(&file, "edge:00c0ffee1234\n").unwrap();
    let central = BrokerProc::start(&format!(
        "psk_file {}\nlistener 0 127.0.0.1\npsk_hint central",
        file.display()
    ));
    let psk_port = common::tls::listener_port(&central, 1);
    let edge = edge(
        psk_port,
        "bridge_identity edge\nbridge_psk 00c0ffee1234\ntopic p/# out 1\n",
    );
    wait_bridge_up(central.port, "edge1");
    let sub = V4::connect("psk-sub", central.port);
    sub.subscribe("p/#", QoS::AtLeastOnce);
    publish_acked(edge.port, "p/x", QoS::AtLeastOnce, false, "over psk");
    let p = sub.next_publish().expect("nothing crossed the PSK bridge");
    assert_eq!(payload(&p), "over psk");

    let wrong = BrokerProc::start(&format!(
        "connection up\naddress 127.0.0.1:{psk_port}\nremote_clientid edge2\n\
         restart_timeout 1\nbridge_identity edge\nbridge_psk 0bad\ntopic p/# out 1\n"
    ));
    assert!(wrong.wait_log("Warning: bridge up:"));
    assert!(central.wait_log("PSK identity \"edge\" did not prove its key"));
    assert!(!wrong
        .log_lines()
        .iter()
        .any(|l| l.contains("Bridge up connected")));
}
