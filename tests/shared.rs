//! Shared subscriptions (`$share/GROUP/FILTER`) against the real binary with clients
//! nobody here wrote: mosquitto_sub -V mqttv5, rumqttc's v5 client, Eclipse Paho's Python
//! client (3.1.1 and 5.0), two shards, and a restart with persistence. Interop parts are
//! skipped (with a message) when the tools are missing, unless SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::persist::{persist_config, stop_clean};
use common::{temp_dir, BrokerProc, TIMEOUT};
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Event, MqttOptions};

/// A rumqttc v5 client driven by a background thread; incoming packets on a channel.
struct V5 {
    client: Client,
    events: crossbeam_channel::Receiver<Event>,
    /// The error that ended the event loop (a server DISCONNECT is one).
    error: crossbeam_channel::Receiver<String>,
}

impl V5 {
    fn connect(id: &str, port: u16, clean: bool) -> Self {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_start(clean);
        if !clean {
            opts.set_session_expiry_interval(Some(3600));
        }
        let (client, mut conn) = Client::new(opts, 100);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (err_tx, err_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || loop {
            match conn.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(ev)) => {
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    let _ = err_tx.send(format!("{e:?}"));
                    return;
                }
                Err(rumqttc::v5::RecvTimeoutError::Disconnected) => return,
                Err(rumqttc::v5::RecvTimeoutError::Timeout) => {}
            }
        });
        Self {
            client,
            events: rx,
            error: err_rx,
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

    fn suback(&self, filter: Filter) -> Vec<SubscribeReasonCode> {
        self.client.subscribe_many(vec![filter]).unwrap();
        self.wait(TIMEOUT, |p| match p {
            Packet::SubAck(a) => Some(a.return_codes.clone()),
            _ => None,
        })
        .expect("SUBACK")
    }

    /// Publishes received within `quiet` of each other (and of the call).
    fn drain(&self, quiet: Duration) -> Vec<String> {
        let mut got = Vec::new();
        while let Some(p) = self.wait(quiet, |p| match p {
            Packet::Publish(p) => Some(String::from_utf8_lossy(&p.payload).into_owned()),
            _ => None,
        }) {
            got.push(p);
        }
        got
    }
}

const QUIET: Duration = Duration::from_millis(700);

/// Publishes `n` QoS 1 messages "m0".."m{n-1}" to `topic` and waits for their PUBACKs.
fn publish_n(publisher: &V5, topic: &str, n: usize) {
    for i in 0..n {
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, format!("m{i}"))
            .unwrap();
    }
    let mut acked = 0;
    while acked < n {
        publisher
            .wait(TIMEOUT, |p| matches!(p, Packet::PubAck(_)).then_some(()))
            .expect("PUBACK");
        acked += 1;
    }
}

#[test]
fn rumqttc_v5_members_on_two_shards_share_the_stream() {
    let broker = BrokerProc::start("threads 2");
    let members: Vec<V5> = (0..6)
        .map(|i| V5::connect(&format!("member-{i}"), broker.port, true))
        .collect();
    let ack = members[0]
        .wait(TIMEOUT, |p| match p {
            Packet::ConnAck(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    let props = ack.properties.unwrap();
    assert_eq!(props.shared_subscription_available, Some(1));
    let group = || Filter::new("$share/workers/jobs/+", QoS::AtLeastOnce);
    for m in &members {
        assert_eq!(
            m.suback(group()),
            [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        );
    }
    let plain = V5::connect("plain", broker.port, true);
    plain.suback(Filter::new("jobs/#", QoS::AtLeastOnce));
    // Enough connections that SO_REUSEPORT puts some on each shard (12 with the monitor).
    let _idle: Vec<V5> = (0..3)
        .map(|i| V5::connect(&format!("idle-{i}"), broker.port, true))
        .collect();
    let publisher = V5::connect("publisher", broker.port, true);
    common::assert_both_shards_used(broker.port);

    publish_n(&publisher, "jobs/x", 24);
    let got: Vec<Vec<String>> = members.iter().map(|m| m.drain(QUIET)).collect();
    let mut all: Vec<String> = got.iter().flatten().cloned().collect();
    all.sort();
    let mut want: Vec<String> = (0..24).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(all, want, "each message to exactly one member");
    let counts: Vec<usize> = got.iter().map(Vec::len).collect();
    assert_eq!(counts, [4; 6], "round robin over the 6 members");
    assert_eq!(
        plain.drain(QUIET).len(),
        24,
        "plain subscriber gets every message"
    );
}

#[test]
fn rumqttc_v5_share_rules_malformed_no_local_and_retained() {
    let broker = BrokerProc::start("");
    let c = V5::connect("rules", broker.port, true);
    // Malformed share names: SUBACK 0x8F, the connection stays (rumqttc itself refuses
    // to send "$share/g+/t"; the sans-IO tests cover it).
    for bad in ["$share//t", "$share/g"] {
        assert_eq!(
            c.suback(Filter::new(bad, QoS::AtMostOnce)),
            [SubscribeReasonCode::TopicFilterInvalid],
            "{bad}"
        );
    }
    // No retained message on a shared SUBSCRIBE [MQTT-3.8.4].
    let p = V5::connect("retainer", broker.port, true);
    p.client
        .publish("kept", QoS::AtLeastOnce, true, "r")
        .unwrap();
    p.wait(TIMEOUT, |p| matches!(p, Packet::PubAck(_)).then_some(()))
        .unwrap();
    c.suback(Filter::new("$share/g/kept", QoS::AtMostOnce));
    assert!(
        c.drain(QUIET).is_empty(),
        "no retained message on a shared subscribe"
    );
    // No Local on a shared subscription: DISCONNECT 0x82 [MQTT-3.8.3-4].
    let mut f = Filter::new("$share/g/x", QoS::AtMostOnce);
    f.nolocal = true;
    c.client.subscribe_many(vec![f]).unwrap();
    // rumqttc may see the end of the stream before it reports the DISCONNECT it read with
    // it; the reason code byte itself is checked by paho (tests/paho/shared.py) and the
    // sans-IO tests.
    let error = c.error.recv_timeout(TIMEOUT).expect("connection ended");
    assert!(
        error.contains("ProtocolError") || error.contains("ConnectionAborted"),
        "{error}"
    );
    assert!(broker.wait_log("disconnected due to protocol error: unexpected No Local"));
}

#[test]
fn a_persistent_member_keeps_its_group_across_a_restart() {
    let dir = temp_dir("shared-restart");
    let config = format!("threads 2\n{}", persist_config(&dir, "always"));
    let broker = BrokerProc::start(&config);
    let w = V5::connect("worker", broker.port, false);
    w.suback(Filter::new("$share/g/jobs", QoS::AtLeastOnce));
    w.client.disconnect().unwrap();
    assert!(
        broker.wait_log("Client worker disconnected"),
        "DISCONNECT handled"
    );
    stop_clean(broker);

    let broker = BrokerProc::start(&config);
    // Offline persistent member: its group queues for it while nobody else is in it.
    let publisher = V5::connect("publisher", broker.port, true);
    publish_n(&publisher, "jobs", 3);
    let w = V5::connect("worker", broker.port, false);
    let got = w.drain(QUIET);
    assert_eq!(got, ["m0", "m1", "m2"], "restored member of $share/g/jobs");
    stop_clean(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts mosquitto_sub with `args`, to collect `count` messages.
fn mosquitto_sub(port: u16, id: &str, args: &[&str], count: usize) -> std::process::Child {
    let bin = common::mosquitto_tool("mosquitto_sub").unwrap();
    Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", id])
        .args(["-C", &count.to_string(), "-W", "20"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn mosquitto_sub_v5_members_split_the_stream() {
    let (Some(_), Some(pub_bin)) = (
        common::mosquitto_tool("mosquitto_sub"),
        common::mosquitto_tool("mosquitto_pub"),
    ) else {
        return;
    };
    let broker = BrokerProc::start("threads 2");
    let args = ["-V", "mqttv5", "-q", "1", "-t", "$share/g/t"];
    let s1 = mosquitto_sub(broker.port, "sub1", &args, 10);
    let s2 = mosquitto_sub(broker.port, "sub2", &args, 10);
    assert!(broker.wait_log("sub1 1 $share/g/t"), "sub1 subscribed");
    assert!(broker.wait_log("sub2 1 $share/g/t"), "sub2 subscribed");
    let lines: String = (0..20).map(|i| format!("m{i}\n")).collect();
    let mut publisher = Command::new(pub_bin)
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-V", "mqttv5", "-q", "1", "-t", "t", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = publisher.stdin.take().unwrap();
        stdin.write_all(lines.as_bytes()).unwrap();
    }
    assert!(publisher.wait().unwrap().success());
    let out1 = String::from_utf8(s1.wait_with_output().unwrap().stdout).unwrap();
    let out2 = String::from_utf8(s2.wait_with_output().unwrap().stdout).unwrap();
    let (got1, got2): (Vec<&str>, Vec<&str>) = (out1.lines().collect(), out2.lines().collect());
    assert_eq!((got1.len(), got2.len()), (10, 10), "{got1:?} {got2:?}");
    let mut all: Vec<&str> = got1.iter().chain(&got2).copied().collect();
    all.sort_unstable();
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(all, want, "each message to exactly one member");
}

fn paho(protocol: &str) {
    if !common::paho_available() {
        return;
    }
    let broker = BrokerProc::start("threads 2");
    let mut checks = vec![format!("one member per message ({protocol})")];
    if protocol == "5" {
        checks.push("malformed share name 0x8F (5)".into());
        checks.push("no local is a protocol error (5)".into());
    }
    let checks: Vec<&str> = checks.iter().map(String::as_str).collect();
    common::run_python_checks("shared.py", &[&broker.port.to_string(), protocol], &checks);
}

#[test]
fn paho_python_shared_v311() {
    paho("311");
}

#[test]
fn paho_python_shared_v5() {
    paho("5");
}
