//! Security, black-box over loopback: password files made by mosquitto_passwd ($6$ and
//! $7$) and by `shardmq passwd`, CONNACK codes for bad credentials, ACL enforcement on
//! SUBSCRIBE, PUBLISH and per delivered message (wildcards spanning denied topics, $SYS,
//! wildcards in PUBLISH), clientid_prefixes, and SIGHUP reloads of both files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{frame, mqtt_str, BrokerProc, Raw};

/// CONNECT with credentials; `level` 4 (3.1.1) or 5.
fn connect_packet(level: u8, id: &str, user: Option<&str>, pass: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str(b"MQTT", &mut body);
    body.push(level);
    let mut flags = 0x02;
    if user.is_some() {
        flags |= 0x80;
    }
    if pass.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    if level == 5 {
        body.push(0);
    }
    mqtt_str(id.as_bytes(), &mut body);
    if let Some(u) = user {
        mqtt_str(u.as_bytes(), &mut body);
    }
    if let Some(p) = pass {
        mqtt_str(p.as_bytes(), &mut body);
    }
    frame(0x10, &body)
}

/// Connects and returns the client and the CONNACK return / reason code.
fn connect(port: u16, level: u8, id: &str, user: Option<&str>, pass: Option<&str>) -> (Raw, u8) {
    let mut raw = Raw::connect(port);
    raw.send(&connect_packet(level, id, user, pass));
    let ack = raw.recv().expect("CONNACK");
    assert_eq!(ack.first, 0x20, "expected CONNACK, got {ack:?}");
    (raw, ack.body[1])
}

fn connected(port: u16, level: u8, id: &str, user: Option<&str>, pass: Option<&str>) -> Raw {
    let (raw, code) = connect(port, level, id, user, pass);
    assert_eq!(code, 0, "{id} refused");
    raw
}

fn subscribe_v5(raw: &mut Raw, packet_id: u16, filter: &str, qos: u8) -> u8 {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.push(0);
    mqtt_str(filter.as_bytes(), &mut body);
    body.push(qos);
    raw.send(&frame(0x82, &body));
    let ack = raw.recv().expect("SUBACK");
    assert_eq!(ack.kind(), 9, "{ack:?}");
    // packet id, properties length (0), reason.
    ack.body[3]
}

fn publish_v5_qos1(raw: &mut Raw, topic: &str, packet_id: u16, payload: &[u8]) -> u8 {
    let mut body = Vec::new();
    mqtt_str(topic.as_bytes(), &mut body);
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.push(0);
    body.extend_from_slice(payload);
    raw.send(&frame(0x32, &body));
    let mut ack = raw.recv().expect("PUBACK");
    while ack.kind() == 3 {
        ack = raw.recv().expect("PUBACK"); // own message delivered first
    }
    assert_eq!(ack.kind(), 4, "{ack:?}");
    ack.body.get(2).copied().unwrap_or(0)
}

/// Topics of the PUBLISH packets that arrive within `wait`.
fn drain_topics(raw: &mut Raw, wait: Duration) -> Vec<String> {
    let mut topics = Vec::new();
    let deadline = std::time::Instant::now() + wait;
    while let Some(p) = raw.recv_within(
        deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_millis(1)),
    ) {
        if p.kind() == 3 {
            topics.push(p.publish_parts().0);
        }
    }
    topics
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn mosquitto_passwd(file: &Path, args: &[&str]) -> bool {
    let Some(tool) = common::mosquitto_tool("mosquitto_passwd") else {
        return false;
    };
    let ok = Command::new(tool)
        .args(args)
        .arg(file)
        .args(["alice", "secret"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "mosquitto_passwd {args:?} failed");
    true
}

fn broker_with(lines: &str) -> BrokerProc {
    // BrokerProc::start writes `allow_anonymous true`; the later line wins.
    BrokerProc::start(lines)
}

fn check_password_file(file: &Path) {
    let b = broker_with(&format!(
        "allow_anonymous false\npassword_file {}",
        file.display()
    ));
    // Right password, both versions.
    connected(b.port, 4, "ok4", Some("alice"), Some("secret"));
    connected(b.port, 5, "ok5", Some("alice"), Some("secret"));
    // Wrong password: 3.1.1 gets 5 (as Mosquitto), v5 gets 0x86.
    assert_eq!(connect(b.port, 4, "w4", Some("alice"), Some("nope")).1, 5);
    assert_eq!(
        connect(b.port, 5, "w5", Some("alice"), Some("nope")).1,
        0x86
    );
    assert_eq!(connect(b.port, 4, "np", Some("alice"), None).1, 5);
    // Unknown user.
    assert_eq!(
        connect(b.port, 5, "u5", Some("mallory"), Some("secret")).1,
        0x86
    );
    // Anonymous refused: 5 / 0x87.
    assert_eq!(connect(b.port, 4, "a4", None, None).1, 5);
    assert_eq!(connect(b.port, 5, "a5", None, None).1, 0x87);
}

#[test]
fn password_file_pbkdf2_from_mosquitto_passwd() {
    let dir = common::temp_dir("pw7");
    let file = dir.join("pw");
    if !mosquitto_passwd(&file, &["-c", "-b"]) {
        return;
    }
    assert!(std::fs::read_to_string(&file).unwrap().contains(":$7$"));
    check_password_file(&file);
}

#[test]
fn password_file_sha512_from_mosquitto_passwd() {
    let dir = common::temp_dir("pw6");
    let file = dir.join("pw");
    if !mosquitto_passwd(&file, &["-H", "sha512", "-c", "-b"]) {
        return;
    }
    assert!(std::fs::read_to_string(&file).unwrap().contains(":$6$"));
    check_password_file(&file);
}

#[test]
fn shardmq_passwd_creates_edits_and_deletes() {
    let dir = common::temp_dir("spw");
    let file = dir.join("pw");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shardmq"))
            .arg("passwd")
            .args(args)
            .output()
            .unwrap()
    };
    let f = file.to_str().unwrap();
    assert!(run(&["-c", "-b", f, "alice", "secret"]).status.success());
    assert!(run(&["-H", "sha512", "-b", f, "bob", "pw"])
        .status
        .success());
    assert!(run(&["-b", f, "carol", "x"]).status.success());
    assert!(run(&["-D", f, "carol"]).status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("alice:$7$101$") && text.contains("\nbob:$6$"),
        "{text}"
    );
    assert!(!text.contains("carol"));
    let out = run(&["-D", f, "carol"]);
    assert!(!out.status.success());
    // Nothing on standard input: mosquitto_passwd's message instead of a hang.
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .args(["passwd", f, "dave"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Error: Empty password."), "{err}");
    check_password_file(&file);
}

#[test]
fn shardmq_passwd_upgrades_plain_text() {
    let dir = common::temp_dir("spwu");
    let file = write(&dir, "pw", "alice:secret\n");
    let ok = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .args(["passwd", "-U"])
        .arg(&file)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    check_password_file(&file);
}

#[test]
fn bad_password_file_stops_the_start() {
    let dir = common::temp_dir("badpw");
    let file = write(&dir, "pw", "alice:plaintext\n");
    let conf = write(
        &dir,
        "c.conf",
        &format!("listener 0 127.0.0.1\npassword_file {}\n", file.display()),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("pw"), "{err}");
}

#[test]
fn clientid_prefixes_refuse_others() {
    let b = broker_with("clientid_prefixes sensor-");
    connected(b.port, 4, "sensor-1", None, None);
    assert_eq!(connect(b.port, 4, "other", None, None).1, 5);
    assert_eq!(connect(b.port, 5, "other5", None, None).1, 0x87);
}

const ACL: &str = "\
topic read public/#

user alice
topic readwrite data/#
topic deny data/secret/#
topic read $SYS/broker/uptime

user bob
topic readwrite data/#
topic readwrite $SYS/#

pattern readwrite home/%u/#
";

fn acl_broker(dir: &Path) -> (BrokerProc, PathBuf) {
    let acl = write(dir, "acl", ACL);
    let b = broker_with(&format!("acl_file {}\nsys_interval 1", acl.display()));
    (b, acl)
}

#[test]
fn acl_wildcard_subscription_does_not_leak_denied_topics() {
    let dir = common::temp_dir("acl1");
    let (b, _) = acl_broker(&dir);
    let mut alice = connected(b.port, 4, "alice", Some("alice"), None);
    assert_eq!(alice.subscribe(1, &[("data/#", 0), ("#", 0)]), vec![0, 0]);
    let mut bob = connected(b.port, 4, "bob", Some("bob"), None);
    for t in ["data/a", "data/secret/key", "data/b", "home/bob/x", "other"] {
        bob.send(&common::publish(t, 0, false, false, 0, t.as_bytes()));
    }
    let topics = drain_topics(&mut alice, Duration::from_millis(700));
    assert_eq!(topics, vec!["data/a", "data/b"], "leaked: {topics:?}");
}

#[test]
fn acl_denied_subscribe_codes() {
    let dir = common::temp_dir("acl2");
    let (b, _) = acl_broker(&dir);
    let mut alice = connected(b.port, 4, "alice4", Some("alice"), None);
    // 3.1.1: 0x80 for each denied filter, granted QoS for the others.
    assert_eq!(
        alice.subscribe(
            1,
            &[
                ("data/secret/#", 1),
                ("data/x", 1),
                ("nothing/#", 0),
                ("$SYS/#", 0)
            ]
        ),
        vec![0x80, 1, 0x80, 0]
    );
    let mut alice5 = connected(b.port, 5, "alice5", Some("alice"), None);
    assert_eq!(subscribe_v5(&mut alice5, 2, "data/secret/k", 0), 0x87);
    assert_eq!(subscribe_v5(&mut alice5, 3, "data/+", 1), 1);
    // Anonymous: only public/#.
    let mut anon = connected(b.port, 4, "anon", None, None);
    assert_eq!(
        anon.subscribe(4, &[("public/#", 0), ("data/#", 0)]),
        vec![0, 0x80]
    );
}

#[test]
fn acl_denied_publish_is_dropped_but_acknowledged() {
    let dir = common::temp_dir("acl3");
    let (b, _) = acl_broker(&dir);
    let mut bob = connected(b.port, 4, "bob-sub", Some("bob"), None);
    assert_eq!(bob.subscribe(1, &[("#", 0)]), vec![0]);
    // 3.1.1 QoS 1 to a denied topic: PUBACK anyway, nothing delivered.
    let mut anon = connected(b.port, 4, "anon-pub", None, None);
    anon.send(&common::publish("data/x", 1, false, false, 7, b"no"));
    let ack = anon.recv().unwrap();
    assert_eq!((ack.first, ack.packet_id()), (0x40, 7));
    // v5: PUBACK 0x87.
    let mut alice = connected(b.port, 5, "alice-pub", Some("alice"), None);
    assert_eq!(publish_v5_qos1(&mut alice, "data/secret/k", 9, b"no"), 0x87);
    assert_eq!(publish_v5_qos1(&mut alice, "data/ok", 10, b"yes"), 0);
    let topics = drain_topics(&mut bob, Duration::from_millis(500));
    assert_eq!(topics, vec!["data/ok"]);
    // A wildcard in a PUBLISH topic is a malformed packet: disconnected [MQTT-3.3.2-2].
    let mut bad = connected(b.port, 4, "bad", Some("bob"), None);
    bad.send(&common::publish("data/+", 0, false, false, 0, b"x"));
    assert!(bad.closed_by_broker());
    let mut bad = connected(b.port, 4, "bad2", Some("bob"), None);
    bad.send(&common::publish("data/#", 0, false, false, 0, b"x"));
    assert!(bad.closed_by_broker());
}

#[test]
fn acl_sys_topics_need_dollar_rules() {
    let dir = common::temp_dir("acl4");
    let (b, _) = acl_broker(&dir);
    // alice: only $SYS/broker/uptime; bob: $SYS/#.
    let mut alice = connected(b.port, 4, "alice-sys", Some("alice"), None);
    assert_eq!(alice.subscribe(1, &[("$SYS/#", 0)]), vec![0]);
    let mut bob = connected(b.port, 4, "bob-sys", Some("bob"), None);
    assert_eq!(bob.subscribe(1, &[("$SYS/#", 0)]), vec![0]);
    let a = drain_topics(&mut alice, Duration::from_millis(2500));
    let b_topics = drain_topics(&mut bob, Duration::from_millis(300));
    assert!(
        !a.is_empty() && a.iter().all(|t| t == "$SYS/broker/uptime"),
        "{a:?}"
    );
    assert!(
        b_topics.iter().any(|t| t != "$SYS/broker/uptime"),
        "{b_topics:?}"
    );
    // Anonymous has no $ rule: '#' never grants $SYS.
    let mut anon = connected(b.port, 4, "anon-sys", None, None);
    assert_eq!(anon.subscribe(1, &[("$SYS/#", 0)]), vec![0x80]);
    // Clients may not publish to $SYS without a $ rule.
    let mut alice5 = connected(b.port, 5, "alice5-sys", Some("alice"), None);
    assert_eq!(publish_v5_qos1(&mut alice5, "$SYS/fake", 1, b"x"), 0x87);
}

#[test]
fn acl_patterns_substitute_username() {
    let dir = common::temp_dir("acl5");
    let (b, _) = acl_broker(&dir);
    let mut carol = connected(b.port, 5, "carol", Some("carol"), None);
    assert_eq!(subscribe_v5(&mut carol, 1, "home/carol/#", 0), 0);
    assert_eq!(subscribe_v5(&mut carol, 2, "home/dave/#", 0), 0x87);
    assert_eq!(publish_v5_qos1(&mut carol, "home/carol/t", 3, b"x"), 0);
    assert_eq!(publish_v5_qos1(&mut carol, "home/dave/t", 4, b"x"), 0x87);
}

#[test]
fn acl_retained_messages_are_checked() {
    let dir = common::temp_dir("acl6");
    let (b, _) = acl_broker(&dir);
    let mut bob = connected(b.port, 4, "bob-ret", Some("bob"), None);
    bob.send(&common::publish("data/secret/r", 1, true, false, 1, b"s"));
    assert_eq!(bob.recv().unwrap().first, 0x40);
    bob.send(&common::publish("data/open", 1, true, false, 2, b"o"));
    assert_eq!(bob.recv().unwrap().first, 0x40);
    let mut alice = connected(b.port, 4, "alice-ret", Some("alice"), None);
    assert_eq!(alice.subscribe(1, &[("data/#", 0)]), vec![0]);
    let topics = drain_topics(&mut alice, Duration::from_millis(500));
    assert_eq!(topics, vec!["data/open"]);
}

#[test]
fn sighup_reloads_acl_and_passwords_without_dropping_connections() {
    let dir = common::temp_dir("hup");
    let acl = write(&dir, "acl", "user alice\ntopic readwrite a/#\n");
    let pw = dir.join("pw");
    let run = |args: &[&str]| {
        assert!(Command::new(env!("CARGO_BIN_EXE_shardmq"))
            .arg("passwd")
            .args(args)
            .status()
            .unwrap()
            .success());
    };
    let pws = pw.to_str().unwrap();
    run(&["-c", "-b", pws, "alice", "one"]);
    let b = broker_with(&format!(
        "allow_anonymous false\npassword_file {pws}\nacl_file {}",
        acl.display()
    ));
    let mut alice = connected(b.port, 5, "alice", Some("alice"), Some("one"));
    assert_eq!(subscribe_v5(&mut alice, 1, "b/x", 0), 0x87);
    // New rules, new password.
    write(
        &dir,
        "acl",
        "user alice\ntopic readwrite a/#\ntopic readwrite b/#\n",
    );
    run(&["-b", pws, "alice", "two"]);
    b.signal(libc::SIGHUP);
    assert!(b.wait_log("Password and ACL files reloaded"));
    // The same connection now has the new rights.
    assert_eq!(subscribe_v5(&mut alice, 2, "b/x", 0), 0);
    assert_eq!(publish_v5_qos1(&mut alice, "b/x", 3, b"hi"), 0);
    assert_eq!(
        connect(b.port, 5, "old", Some("alice"), Some("one")).1,
        0x86
    );
    connected(b.port, 5, "new", Some("alice"), Some("two"));
    // A broken file keeps the old rules and says why.
    write(&dir, "acl", "frobnicate\n");
    b.signal(libc::SIGHUP);
    assert!(b.wait_log("keeping the old rules"));
    assert_eq!(subscribe_v5(&mut alice, 4, "b/y", 0), 0);
    connected(b.port, 5, "still", Some("alice"), Some("two"));
}

// ---------------------------------------------------------------------------------------
// Limits and hardening.

/// A connection that never sends CONNECT is closed after the CONNECT timeout (10 s).
#[test]
fn connection_without_connect_is_closed_after_timeout() {
    let b = BrokerProc::start("");
    let mut raw = Raw::connect(b.port);
    let t0 = std::time::Instant::now();
    assert!(raw.closed_by_broker());
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    assert!(b.wait_log("did not send CONNECT in time"));
}

#[test]
fn max_connections_per_listener() {
    // BrokerProc's `listener 0` line comes first, so this applies to that listener. One
    // shard: with N shards each gets 1/N of the limit (SO_REUSEPORT spreads connections).
    let b = BrokerProc::start("threads 1\nmax_connections 2");
    let _a = connected(b.port, 4, "m1", None, None);
    let _b = connected(b.port, 4, "m2", None, None);
    let mut third = Raw::connect(b.port);
    third.try_send(&connect_packet(4, "m3", None, None));
    assert!(
        third.recv().is_none(),
        "third connection must get no CONNACK"
    );
    drop(_a);
    // A slot frees up once a connection ends.
    assert!(common::wait_until(common::TIMEOUT, || {
        let mut r = Raw::connect(b.port);
        r.try_send(&connect_packet(4, "m4", None, None));
        r.recv_within(Duration::from_millis(500)).is_some()
    }));
}

#[test]
fn max_connection_rate_limits_reconnect_storms() {
    let b = BrokerProc::start("threads 1\nmax_connection_rate 5");
    let mut accepted = 0;
    for i in 0..30 {
        let mut r = Raw::connect(b.port);
        r.try_send(&connect_packet(4, &format!("storm{i}"), None, None));
        if r.recv_within(Duration::from_millis(500)).is_some() {
            accepted += 1;
        }
    }
    assert!((5..=15).contains(&accepted), "accepted {accepted} of 30");
    assert!(b.wait_log("max_connection_rate exceeded"));
    std::thread::sleep(Duration::from_millis(1100));
    connected(b.port, 4, "after-storm", None, None);
}

#[test]
fn message_size_limit_drops_v3_and_refuses_v5() {
    let b = BrokerProc::start("message_size_limit 100");
    let mut sub = connected(b.port, 4, "msl-sub", None, None);
    assert_eq!(sub.subscribe(1, &[("big/#", 0)]), vec![0]);
    let mut p3 = connected(b.port, 4, "msl-p3", None, None);
    p3.send(&common::publish("big/a", 1, false, false, 1, &[b'x'; 200]));
    assert_eq!(p3.recv().unwrap().first, 0x40); // acknowledged, dropped
    let mut p5 = connected(b.port, 5, "msl-p5", None, None);
    assert_eq!(publish_v5_qos1(&mut p5, "big/b", 2, &[b'x'; 200]), 0x95);
    assert_eq!(publish_v5_qos1(&mut p5, "big/c", 3, b"small"), 0);
    assert_eq!(
        drain_topics(&mut sub, Duration::from_millis(500)),
        vec!["big/c"]
    );
}

#[test]
fn max_keepalive_refuses_v311_and_overrides_v5() {
    let b = BrokerProc::start("max_keepalive 30");
    // connect_packet asks for 60 s.
    assert_eq!(connect(b.port, 4, "ka4", None, None).1, 2);
    let mut raw = Raw::connect(b.port);
    raw.send(&connect_packet(5, "ka5", None, None));
    let ack = raw.recv().unwrap();
    assert_eq!(ack.body[1], 0);
    // Server Keep Alive (0x13) = 30 among the CONNACK properties.
    assert!(ack.body.windows(3).any(|w| w == [0x13, 0, 30]), "{ack:?}");
}

/// A subscriber that never reads is cut off once its queue stays full, while a publisher
/// floods QoS 0; the broker's memory stays bounded and a healthy subscriber keeps
/// receiving afterwards.
#[test]
fn slow_subscriber_is_cut_off_and_memory_stays_bounded() {
    let b = BrokerProc::start("threads 2\nmax_queued_bytes 1000000\nslow_subscriber_timeout 2");
    let mut slow = Raw::connect(b.port);
    slow.send(&connect_packet(4, "slow", None, None));
    assert_eq!(slow.recv().unwrap().first, 0x20);
    slow.send(&common::subscribe(1, &[("flood", 0)]));
    assert_eq!(slow.recv().unwrap().kind(), 9);
    // From here on `slow` never reads.
    let before = b.rss_kib();
    let port = b.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    let flooder = std::thread::spawn(move || {
        let mut p = Raw::connect(port);
        p.send(&connect_packet(4, "flooder", None, None));
        p.recv().unwrap();
        p.stream
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let frame = common::publish("flood", 0, false, false, 0, &[b'x'; 1024]);
        let batch = frame.repeat(64);
        let mut sent = 0usize;
        let mut at = 0;
        // Never abandon a partial frame: a timed-out write resumes where it stopped.
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = common::write_resuming(&mut p.stream, &batch, &mut at) {
                panic!("flooder: {e}");
            }
            if at == batch.len() {
                at = 0;
                sent += 64;
            }
        }
        sent
    });
    assert!(
        b.wait_log("has not read its full queue"),
        "slow subscriber not cut off"
    );
    let peak = b.rss_kib();
    // The flood goes on; a healthy subscriber gets messages again.
    let mut healthy = connected(b.port, 4, "healthy", None, None);
    assert_eq!(healthy.subscribe(1, &[("flood", 0)]), vec![0]);
    let got = healthy.recv_within(Duration::from_secs(5));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    assert!(
        got.is_some_and(|p| p.kind() == 3),
        "no message after the cut-off; log: {:?}",
        b.log_lines().iter().rev().take(12).collect::<Vec<_>>()
    );
    assert!(sent > 1000, "flooder sent only {sent}");
    assert!(
        peak < before + 64 * 1024,
        "RSS grew from {before} KiB to {peak} KiB"
    );
}
