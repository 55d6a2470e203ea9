//! Input limits, black-box over loopback with a real broker process: the pre-CONNECT
//! bound (an oversized CONNECT is refused from its header, 20 of them do not grow the
//! broker), the CONNECT timeout against slowloris clients, topic depth (Mosquitto's 201
//! levels) on SUBSCRIBE, UNSUBSCRIBE, PUBLISH and wills, and `$SYS` being read-only for
//! clients unless an ACL opens it (mosquitto_pub / mosquitto_sub).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect_v311, frame, mqtt_str, rss_kib, var_int, BrokerProc, Raw, TIMEOUT, V4};

/// The fixed header of a CONNECT announcing `remaining` bytes, and the first bytes of a
/// plausible body.
fn huge_connect_start(remaining: usize) -> Vec<u8> {
    let mut out = vec![0x10];
    var_int(remaining, &mut out);
    mqtt_str(b"MQTT", &mut out);
    out.extend_from_slice(&[4, 0x02, 0, 60]);
    out
}

/// True when the broker closes `raw` within `within` (EOF or reset), whatever it sends.
fn closed_within(raw: &mut Raw, within: Duration) -> bool {
    raw.stream.set_read_timeout(Some(within)).unwrap();
    raw.closed_by_broker()
}

#[test]
fn connect_larger_than_the_pre_connect_bound_is_closed_from_its_header() {
    let broker = BrokerProc::start("threads 1");
    // 256 MiB announced, a few bytes sent: refused at once, not after the CONNECT
    // timeout (10 s) and not after buffering anything.
    let mut raw = Raw::connect(broker.port);
    raw.send(&huge_connect_start(256 * 1024 * 1024 - 1));
    assert!(closed_within(&mut raw, Duration::from_secs(5)));
    assert!(broker.wait_log("exceeds the maximum packet size of 65536"));
    // Just under the bound is a CONNECT like any other (a 60 KiB will payload).
    let will = vec![b'w'; 60 * 1024];
    let mut ok = Raw::connect(broker.port);
    ok.send(&connect_v311(
        "big-will",
        true,
        60,
        Some(("w/t", &will, 0, false)),
    ));
    let ack = ok.recv().expect("CONNACK");
    assert_eq!((ack.first, ack.body[1]), (0x20, 0));
}

#[test]
fn max_connect_packet_size_raises_the_bound() {
    let broker = BrokerProc::start("threads 1\nmax_connect_packet_size 200000");
    let will = vec![b'w'; 65_000];
    let mut body = Vec::new();
    mqtt_str(b"MQTT", &mut body);
    body.extend_from_slice(&[5, 0x06, 0, 60, 0]); // v5, clean start + will, no properties
    mqtt_str(b"big", &mut body);
    // Will properties: one 60,000-byte user property, then topic and payload.
    let mut props = vec![0x26];
    mqtt_str(b"k", &mut props);
    mqtt_str(&vec![b'v'; 60_000], &mut props);
    var_int(props.len(), &mut body);
    body.extend_from_slice(&props);
    mqtt_str(b"w/t", &mut body);
    mqtt_str(&will, &mut body);
    let mut raw = Raw::connect(broker.port);
    raw.send(&frame(0x10, &body));
    let ack = raw.recv().expect("CONNACK");
    assert_eq!(ack.first, 0x20);
    assert_eq!(ack.body[1], 0, "reason");
}

/// 20 connections that each announce a 256 MiB CONNECT and try to stream 10 MiB of it:
/// each is closed at its header, so the broker does not grow (it grew by 200 MiB).
#[test]
fn twenty_oversized_connects_do_not_grow_the_broker() {
    let broker = BrokerProc::start("threads 2");
    // A first client warms the broker up (buffers, pools) before the baseline.
    let warm = V4::connect("warm", broker.port);
    let before = rss_kib(broker.pid());
    let chunk = vec![b'x'; 64 * 1024];
    let streams: Vec<std::thread::JoinHandle<(Raw, usize)>> = (0..20)
        .map(|_| {
            let port = broker.port;
            let chunk = chunk.clone();
            std::thread::spawn(move || {
                let mut raw = Raw::connect(port);
                let mut sent = 0;
                if raw.try_send(&huge_connect_start(256 * 1024 * 1024 - 1)) {
                    while sent < 10 * 1024 * 1024 && raw.stream.write_all(&chunk).is_ok() {
                        sent += chunk.len();
                    }
                }
                (raw, sent)
            })
        })
        .collect();
    let mut conns = Vec::new();
    for s in streams {
        conns.push(s.join().unwrap());
    }
    let after = rss_kib(broker.pid());
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 32,
        "broker grew by {grown_mib} MiB ({before} -> {after} KiB)"
    );
    for (raw, sent) in &mut conns {
        assert!(*sent < 10 * 1024 * 1024, "a 10 MiB stream was taken whole");
        assert!(closed_within(raw, Duration::from_secs(5)));
    }
    warm.disconnect();
}

/// A client that trickles a CONNECT one byte a second is cut `connect_timeout` after it
/// connected: the timeout counts from accept, not from the last byte.
#[test]
fn slowloris_is_cut_after_the_connect_timeout() {
    let broker = BrokerProc::start("threads 1\nconnect_timeout 2");
    let mut raw = Raw::connect(broker.port);
    let start = Instant::now();
    let mut writer = raw.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let connect = connect_v311("slow", true, 60, None);
        for b in connect.iter().take(connect.len() - 1).cycle() {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1)); // the attack's pace, not a wait
        }
    });
    assert!(closed_within(&mut raw, TIMEOUT), "never cut");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "cut after {took:?} (connect_timeout 2 s)"
    );
    assert!(broker.wait_log("did not send CONNECT in time"));
    trickle.join().unwrap();
}

// ---------------------------------------------------------------------------------------
// Topic depth

/// Waits until the broker closes `c`'s connection; false if a SUBACK arrives first or
/// nothing happens within the timeout.
fn closed_without_suback(c: &V4) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match c.events.recv_deadline(deadline) {
            Ok(Err(_)) => return true,
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) | Err(_) => return false,
            Ok(Ok(_)) => {}
        }
    }
}

/// 202 levels: one more than Mosquitto's TOPIC_HIERARCHY_LIMIT allows.
fn too_deep() -> String {
    "d/".repeat(201) + "x"
}

/// 201 levels: the deepest allowed.
fn deepest() -> String {
    "d/".repeat(200) + "x"
}

#[test]
fn too_deep_filters_and_topics_close_the_connection_v311() {
    // One shard: the marker published last is routed after anything published before.
    let broker = BrokerProc::start("threads 1");
    let watcher = V4::connect("watcher", broker.port);
    watcher.subscribe("#", rumqttc::QoS::AtMostOnce);

    // SUBSCRIBE with a too-deep filter: closed, no SUBACK; the deepest allowed works.
    let sub = V4::connect("deep-sub", broker.port);
    assert_eq!(
        sub.subscribe(&deepest(), rumqttc::QoS::AtMostOnce),
        [rumqttc::SubscribeReasonCode::Success(
            rumqttc::QoS::AtMostOnce
        )]
    );
    sub.client
        .subscribe(too_deep(), rumqttc::QoS::AtMostOnce)
        .unwrap();
    assert!(closed_without_suback(&sub), "too-deep filter granted");
    assert!(broker.wait_log("topic filter has more than 201 levels"));

    // "/" x 65535: the filter of the report (36 MiB once granted).
    let mut raw = Raw::connect(broker.port);
    raw.send(&connect_v311("slashes", true, 60, None));
    assert_eq!(raw.recv().expect("CONNACK").first, 0x20);
    let before = rss_kib(broker.pid());
    raw.send(&common::subscribe(1, &[(&"/".repeat(65_535), 0)]));
    assert!(closed_within(&mut raw, Duration::from_secs(10)));
    assert!(rss_kib(broker.pid()).saturating_sub(before) < 8 * 1024);

    // UNSUBSCRIBE of a too-deep filter.
    let mut raw = Raw::connect(broker.port);
    raw.send(&connect_v311("deep-unsub", true, 60, None));
    assert_eq!(raw.recv().expect("CONNACK").first, 0x20);
    let mut body = 2u16.to_be_bytes().to_vec();
    mqtt_str(too_deep().as_bytes(), &mut body);
    raw.send(&frame(0xA2, &body));
    assert!(closed_within(&mut raw, Duration::from_secs(10)));

    // PUBLISH to a too-deep topic: closed, never delivered.
    let publisher = V4::connect("deep-pub", broker.port);
    publisher.publish(&too_deep(), rumqttc::QoS::AtMostOnce, false, "no");
    assert!(closed_without_suback(&publisher));
    assert!(broker.wait_log("topic name has more than 201 levels"));

    // A will on a too-deep topic: the CONNECT is refused.
    let mut raw = Raw::connect(broker.port);
    raw.send(&connect_v311(
        "deep-will",
        true,
        60,
        Some((&too_deep(), b"w", 0, false)),
    ));
    assert!(closed_within(&mut raw, Duration::from_secs(10)));

    // The watcher saw nothing of all that: the first message it gets is the marker, and
    // the deepest allowed topic is still an ordinary topic.
    let marker = V4::connect("marker", broker.port);
    marker.publish("marker", rumqttc::QoS::AtMostOnce, false, "m");
    marker.publish(&deepest(), rumqttc::QoS::AtMostOnce, false, "deep");
    let first = watcher.next_publish().expect("marker");
    assert_eq!(first.topic, "marker");
    assert_eq!(watcher.next_publish().expect("deepest").topic, deepest());
}

/// MQTT 5 with Mosquitto's own clients: mosquitto_pub to a too-deep topic gets DISCONNECT
/// 0x90 instead of a PUBACK, mosquitto_sub with a too-deep filter is disconnected.
#[test]
fn too_deep_topics_are_refused_for_mosquitto_clients_v5() {
    let (Some(pub_bin), Some(sub_bin)) = (
        common::mosquitto_tool("mosquitto_pub"),
        common::mosquitto_tool("mosquitto_sub"),
    ) else {
        return;
    };
    let broker = BrokerProc::start("threads 1");
    let port = broker.port.to_string();
    let out = Command::new(&pub_bin)
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1"])
        .args(["-i", "deep-pub5", "-t", &too_deep(), "-m", "no"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(broker.wait_log("deep-pub5 disconnected due to protocol error"));
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "mosquitto_pub succeeded: {said}");

    let out = Command::new(&sub_bin)
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-W", "10"])
        .args(["-i", "deep-sub5", "-t", &too_deep()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // Disconnected at once; without the limit it would wait out -W (exit code 27).
    assert_ne!(
        out.status.code(),
        Some(27),
        "mosquitto_sub was not disconnected"
    );
    assert!(broker.wait_log("deep-sub5 disconnected due to protocol error"));
}

// ---------------------------------------------------------------------------------------
// $SYS

/// Runs mosquitto_pub with `args`; returns (success, stdout + stderr).
fn mosquitto_pub(port: u16, args: &[&str]) -> (bool, String) {
    let bin = common::mosquitto_tool("mosquitto_pub").unwrap();
    let out = Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Starts mosquitto_sub as `id` on `$SYS/test/#` and `marker`, printing the first `count`
/// messages (topic and payload); returns once the broker logged both subscriptions.
fn sys_watcher(broker: &BrokerProc, id: &str, count: usize) -> std::process::Child {
    let bin = common::mosquitto_tool("mosquitto_sub").unwrap();
    let child = Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-i", id])
        .args(["-t", "$SYS/test/#", "-t", "marker", "-v", "-W", "20"])
        .args(["-C", &count.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(broker.wait_log(&format!("{id} 0 marker")));
    child
}

fn lines(child: std::process::Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn clients_may_not_publish_to_sys_without_an_acl() {
    if common::mosquitto_tool("mosquitto_pub").is_none()
        || common::mosquitto_tool("mosquitto_sub").is_none()
    {
        return;
    }
    let broker = BrokerProc::start("threads 1\nlog_type debug"); // "Denied PUBLISH" is debug
    let watcher = sys_watcher(&broker, "sys-watch", 1);
    // 3.1.1: acknowledged and dropped, as Mosquitto does.
    for qos in ["0", "1", "2"] {
        let (ok, said) =
            mosquitto_pub(broker.port, &["-q", qos, "-t", "$SYS/test/x", "-m", "evil"]);
        assert!(ok, "{said}");
    }
    // MQTT 5: refused with 0x87 (Not authorized) on PUBACK / PUBREC.
    for qos in ["1", "2"] {
        let (_, said) = mosquitto_pub(
            broker.port,
            &[
                "-V",
                "mqttv5",
                "-q",
                qos,
                "-t",
                "$SYS/test/x",
                "-m",
                "evil5",
            ],
        );
        assert!(said.contains("Not authorized"), "{said}");
    }
    assert!(broker.wait_log("Denied PUBLISH from"));
    // A will on $SYS is refused like any unauthorised will (CONNACK 0x05).
    let mut raw = Raw::connect(broker.port);
    raw.send(&connect_v311(
        "sys-will",
        true,
        60,
        Some(("$SYS/test/w", b"w", 0, false)),
    ));
    let ack = raw.recv().expect("CONNACK");
    assert_eq!((ack.first, ack.body[1]), (0x20, 0x05));
    let (ok, said) = mosquitto_pub(broker.port, &["-t", "marker", "-m", "done"]);
    assert!(ok, "{said}");
    assert_eq!(lines(watcher), ["marker done"]);
}

#[test]
fn an_acl_rule_can_open_sys_to_a_client() {
    if common::mosquitto_tool("mosquitto_pub").is_none()
        || common::mosquitto_tool("mosquitto_sub").is_none()
    {
        return;
    }
    let dir = common::temp_dir("sys-acl");
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "topic write $SYS/test/#\ntopic read $SYS/#\ntopic readwrite marker\n",
    )
    .unwrap();
    let broker = BrokerProc::start(&format!("threads 1\nacl_file {}", acl.display()));
    let watcher = sys_watcher(&broker, "sys-acl-watch", 2);
    let (ok, said) = mosquitto_pub(
        broker.port,
        &["-q", "1", "-t", "$SYS/test/x", "-m", "granted"],
    );
    assert!(ok, "{said}");
    let (ok, said) = mosquitto_pub(broker.port, &["-t", "marker", "-m", "done"]);
    assert!(ok, "{said}");
    assert_eq!(lines(watcher), ["$SYS/test/x granted", "marker done"]);
}
