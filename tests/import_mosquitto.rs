//! Migrating from Mosquitto: the Debian `mosquitto` binary runs with persistence, gets
//! retained messages, offline persistent sessions (MQTT 3.1.1 and 5) with queued QoS 1/2
//! messages and a QoS 1 message in flight, and saves its `mosquitto.db` at shutdown.
//! shardmq pointed at the same directory refuses to start over that file and names the
//! import command; after `shardmq import-mosquitto-db`, it starts and everything
//! arrives, the in-flight message again with its packet id. Skipped when mosquitto is
//! not installed (a failure with SHARDMQ_REQUIRE_INTEROP=1).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::tls::refused_start;
use common::{BrokerProc, MosquittoProc, Raw, V4};

fn tool(name: &str, args: &[&str]) {
    let bin = common::mosquitto_tool(name).unwrap();
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{name} {args:?}: {out:?}");
}

fn publish(port: u16, args: &[&str]) {
    let p = port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &p];
    all.extend_from_slice(args);
    tool("mosquitto_pub", &all);
}

/// What mosquitto_sub prints (trimmed) for `args` against shardmq on `port`.
fn sub_output(port: u16, args: &[&str]) -> String {
    let bin = common::mosquitto_tool("mosquitto_sub").unwrap();
    let out = Command::new(bin)
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `shardmq import-mosquitto-db DB -c CONF` (the config text written into `dir`);
/// returns its report.
fn import(db: &std::path::Path, dir: &std::path::Path, conf: &str) -> String {
    let conf_file = dir.join("shardmq.conf");
    std::fs::write(&conf_file, conf).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .arg("import-mosquitto-db")
        .arg(db)
        .arg("-c")
        .arg(&conf_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The next PUBLISH a raw client receives (acknowledging nothing).
fn next_publish(raw: &mut Raw) -> common::RawPacket {
    loop {
        let p = raw.recv().expect("a PUBLISH");
        if p.kind() == 3 {
            return p;
        }
    }
}

#[test]
fn mosquittos_retained_messages_and_sessions_arrive_after_the_import() {
    let Some(bin) = common::mosquitto_broker() else {
        return;
    };
    if common::mosquitto_tool("mosquitto_sub").is_none()
        || common::mosquitto_tool("mosquitto_pub").is_none()
    {
        return;
    }
    let dir = common::temp_dir("import");
    let m = MosquittoProc::start(
        &bin,
        &dir,
        &format!(
            "allow_anonymous true\npersistence true\npersistence_location {}/\n\
             autosave_interval 1",
            dir.display()
        ),
    );
    let mp = m.port.to_string();
    let mp = mp.as_str();
    // Offline persistent sessions: MQTT 3.1.1 (never expires) and MQTT 5 (1 hour).
    tool(
        "mosquitto_sub",
        &[
            "-p", mp, "-u", "alice", "-c", "-i", "sess1", "-q", "1", "-t", "q/#", "-E",
        ],
    );
    tool(
        "mosquitto_sub",
        &[
            "-p", mp, "-V", "5", "-c", "-i", "sess5", "-x", "3600", "-q", "2", "-t", "v5/#", "-E",
        ],
    );
    // A session with a QoS 1 message in flight: received, never acknowledged.
    let (mut raw, _, code) = Raw::mqtt_connect(m.port, "inflight1", false);
    assert_eq!(code, 0);
    raw.subscribe(1, &[("f/#", 1)]);
    publish(m.port, &["-q", "1", "-t", "f/x", "-m", "in-flight"]);
    let first = next_publish(&mut raw);
    let (_, inflight_id, _) = first.publish_parts();
    drop(raw);
    // Retained messages, one with MQTT 5 properties.
    publish(m.port, &["-r", "-q", "1", "-t", "r/a", "-m", "retained-a"]);
    publish(m.port, &["-r", "-q", "0", "-t", "r/b", "-m", "retained-b"]);
    publish(
        m.port,
        &[
            "-V",
            "5",
            "-r",
            "-q",
            "1",
            "-t",
            "r/c",
            "-m",
            "retained-c",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
        ],
    );
    // Queued for the offline sessions.
    for i in 1..=3 {
        publish(
            m.port,
            &["-q", "1", "-t", "q/x", "-m", &format!("queued-{i}")],
        );
    }
    publish(
        m.port,
        &["-V", "5", "-q", "2", "-t", "v5/y", "-m", "v5-queued"],
    );
    m.stop();
    let db = dir.join("mosquitto.db");
    assert!(db.exists(), "mosquitto saved its database");

    // shardmq on the same persistence directory: the default persistence_file is
    // Mosquitto's name, and Mosquitto's format is refused, never ignored.
    // Only alice may read q/#: a message for sess1 is queued while it is offline only if
    // the import kept its user.
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "topic write q/#\ntopic read r/#\ntopic read v5/#\ntopic read f/#\n\
         user alice\ntopic read q/#\n",
    )
    .unwrap();
    let conf = format!(
        "listener 0 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
         acl_file {}\n",
        dir.display(),
        acl.display()
    );
    let err = refused_start(&conf);
    assert!(
        err.contains("is a Mosquitto persistence file (format version 6)")
            && err.contains("shardmq import-mosquitto-db"),
        "{err}"
    );
    let report = import(&db, &dir, &conf);
    assert!(
        report.contains("3 retained messages, 3 persistent sessions with 3 subscriptions, 4 queued and 1 in-flight messages"),
        "{report}"
    );
    assert!(
        dir.join("mosquitto.db.mosquitto").exists(),
        "Mosquitto's file kept"
    );

    let b = BrokerProc::start_config(&conf);
    // Retained messages, with their properties.
    let c = V4::connect("reader", b.port);
    c.subscribe("r/#", rumqttc::QoS::AtLeastOnce);
    let mut got: Vec<(String, Vec<u8>)> = (0..3)
        .map(|_| {
            let p = c.next_publish().expect("a retained message");
            assert!(p.retain);
            (p.topic.clone(), p.payload.to_vec())
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("r/a".to_string(), b"retained-a".to_vec()),
            ("r/b".to_string(), b"retained-b".to_vec()),
            ("r/c".to_string(), b"retained-c".to_vec())
        ]
    );
    c.disconnect();
    // mosquitto_sub and mosquitto_pub were checked at the start.
    assert_eq!(
        sub_output(
            b.port,
            &["-V", "5", "-t", "r/c", "-C", "1", "-W", "10", "-F", "%t %p %P"]
        ),
        "r/c retained-c k:v"
    );

    // sess1 is still offline: a message for its imported subscription is queued, as
    // alice's ACL allows (the import kept the session's user).
    let p = V4::connect("publisher", b.port);
    p.publish("q/later", rumqttc::QoS::AtLeastOnce, false, "later");
    p.disconnect();
    // On reconnection the queued messages arrive, without subscribing again.
    let mut o = common::v4_options("sess1", b.port);
    o.set_clean_session(false);
    o.set_credentials("alice", "");
    let s1 = V4::connect_with(o);
    for i in 1..=3 {
        let p = s1.next_publish().expect("a queued message");
        assert_eq!(
            (p.topic.as_str(), p.payload.as_ref()),
            ("q/x", format!("queued-{i}").as_bytes())
        );
    }
    let later = s1
        .next_publish()
        .expect("queued for the imported subscription and user");
    assert_eq!(later.payload.as_ref(), b"later");
    s1.disconnect();

    // sess5 (MQTT 5): its QoS 2 message.
    let v5 = [
        "-V", "5", "-c", "-i", "sess5", "-x", "3600", "-q", "2", "-t", "v5/#", "-C", "1", "-W",
        "10", "-F", "%t %p %q",
    ];
    assert_eq!(sub_output(b.port, &v5), "v5/y v5-queued 2");

    // inflight1: the unacknowledged message again, same packet id, DUP set
    // [MQTT-4.4.0-1].
    let (mut raw, present, code) = Raw::mqtt_connect(b.port, "inflight1", false);
    assert_eq!((present, code), (true, 0));
    let again = next_publish(&mut raw);
    let (topic, id, payload) = again.publish_parts();
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("f/x", &b"in-flight"[..])
    );
    assert_eq!(id, inflight_id);
    assert_eq!(again.first & 0x08, 0x08, "DUP");
}

/// Mosquitto keeps an incoming QoS 2 message until its client's PUBREL; after the import,
/// shardmq has delivered it (once) to the offline subscriber, and the client's PUBREL
/// completes it (PUBCOMP).
#[test]
fn an_incoming_qos2_message_awaiting_pubrel_is_completed_after_the_import() {
    let Some(bin) = common::mosquitto_broker() else {
        return;
    };
    if common::mosquitto_tool("mosquitto_sub").is_none() {
        return;
    }
    let dir = common::temp_dir("import-qos2");
    let m = MosquittoProc::start(
        &bin,
        &dir,
        &format!(
            "allow_anonymous true\npersistence true\npersistence_location {}/",
            dir.display()
        ),
    );
    let mp = m.port.to_string();
    tool(
        "mosquitto_sub",
        &["-p", &mp, "-c", "-i", "qsub", "-q", "2", "-t", "h/#", "-E"],
    );
    let (mut raw, _, code) = Raw::mqtt_connect(m.port, "holder", false);
    assert_eq!(code, 0);
    raw.send(&common::publish("h/x", 2, false, false, 42, b"held"));
    let pubrec = raw.recv().expect("PUBREC");
    assert_eq!((pubrec.kind(), pubrec.packet_id()), (5, 42));
    drop(raw); // no PUBREL: Mosquitto keeps the message for it
    m.stop();
    let db = dir.join("mosquitto.db");

    let conf = format!(
        "listener 0 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n",
        dir.display()
    );
    let report = import(&db, &dir, &conf);
    assert!(
        report.contains("1 incoming QoS 2 messages awaiting PUBREL (delivered")
            && !report.contains("left out"),
        "{report}"
    );

    let b = BrokerProc::start_config(&conf);
    let (mut raw, present, code) = Raw::mqtt_connect(b.port, "holder", false);
    assert_eq!((present, code), (true, 0));
    // The client had its PUBREC: on reconnection it resends PUBREL [MQTT-4.4.0-1].
    raw.send(&common::ack(0x62, 42));
    let pubcomp = raw.recv().expect("PUBCOMP");
    assert_eq!((pubcomp.kind(), pubcomp.packet_id()), (7, 42));
    // The subscriber gets it once.
    let got = sub_output(
        b.port,
        &[
            "-c", "-i", "qsub", "-q", "2", "-t", "h/#", "-C", "2", "-W", "3",
        ],
    );
    assert_eq!(got, "held");
}
