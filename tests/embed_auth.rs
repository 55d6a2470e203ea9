//! The embedding API's access hook (`BrokerBuilder::access`) against an embedded broker,
//! with rumqttc (3.1.1 and 5) and mosquitto_pub: refused logins get the right CONNACK
//! codes, refused publishes are 0x87 (v5) or acknowledged and dropped (3.1.1), refused
//! subscriptions 0x87 / 0x80, a will the hook refuses refuses the CONNECT, the hook sees
//! the right client (id, user, password, listener, address, protocol level), and the
//! password / ACL files decide before it.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{v4_options, TIMEOUT, V4};
use rumqttc::v5::mqttbytes::v5 as mq5;
use rumqttc::v5::mqttbytes::QoS as Qos5;
use shardmq::{AccessHook, Broker, BrokerHandle, Config, ConnectInfo, Decision, Provenance};

/// One call the hook saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    call: &'static str,
    client_id: String,
    username: Option<String>,
    password: Option<Vec<u8>>,
    listener: usize,
    peer: SocketAddr,
    level: u8,
    /// Topic or filter (empty for a login).
    what: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// The host's rules: user `alice` needs password `pw`; users `banned` and `down` are
/// refused with their decisions; nobody publishes under `denied/`, nobody subscribes to
/// a filter containing `secret`.
struct Rules(Log);

impl Rules {
    fn record(&self, call: &'static str, p: &Provenance<'_>, password: Option<&[u8]>, what: &str) {
        self.0.lock().unwrap().push(Seen {
            call,
            client_id: p.client_id().to_owned(),
            username: p.username().map(str::to_owned),
            password: password.map(<[u8]>::to_vec),
            listener: p.listener(),
            peer: p.peer(),
            level: p.protocol_level(),
            what: what.to_owned(),
        });
    }
}

impl AccessHook for Rules {
    fn authenticate(&mut self, c: &ConnectInfo<'_>) -> Decision {
        self.record("login", &c.provenance(), c.password(), "");
        match c.username() {
            Some("alice") if c.password() == Some(b"pw") => Decision::Allow,
            Some("alice") => Decision::BadCredentials,
            Some("banned") => Decision::Banned,
            Some("down") => Decision::Unavailable,
            Some("nobody") => Decision::NotAuthorized,
            _ => Decision::Allow,
        }
    }

    fn authorize_publish(&mut self, client: &Provenance<'_>, topic: &str) -> bool {
        self.record("publish", client, None, topic);
        !topic.starts_with("denied/")
    }

    fn authorize_subscribe(&mut self, client: &Provenance<'_>, filter: &str) -> bool {
        self.record("subscribe", client, None, filter);
        !filter.contains("secret")
    }
}

/// An embedded broker with the hook on every shard, two shards, `listeners` listeners.
fn start(config: Config) -> (BrokerHandle, Log) {
    let log: Log = Arc::default();
    let for_shards = Arc::clone(&log);
    let broker = Broker::builder(config)
        .access(move |_shard| Rules(Arc::clone(&for_shards)))
        .start()
        .unwrap();
    (broker, log)
}

fn config(listeners: usize) -> Config {
    let mut config = Config::with_listener("127.0.0.1:0".parse().unwrap());
    for _ in 1..listeners {
        config.listeners.push(shardmq::config::Listener::new(
            0,
            Some("127.0.0.1".to_owned()),
        ));
    }
    config.threads = Some(2);
    config
}

fn seen(log: &Log, call: &str, client_id: &str) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.call == call && s.client_id == client_id)
        .cloned()
        .collect()
}

/// A 3.1.1 client's CONNACK code (refused or not).
fn v4_connack(opts: rumqttc::MqttOptions) -> rumqttc::ConnectReturnCode {
    let c = V4::start(opts);
    let got = c.events.recv_timeout(TIMEOUT).expect("an event");
    match got {
        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => a.code,
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn v4_with(id: &str, port: u16, user: &str, password: &str) -> rumqttc::MqttOptions {
    let mut o = v4_options(id, port);
    o.set_credentials(user, password);
    o
}

/// An MQTT 5 rumqttc client on its own thread; events (and the error that ends it) in a
/// channel.
struct V5 {
    client: rumqttc::v5::Client,
    events: crossbeam_channel::Receiver<Result<mq5::Packet, rumqttc::v5::ConnectionError>>,
}

impl V5 {
    fn start(id: &str, port: u16, login: Option<(&str, &str)>) -> Self {
        let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        if let Some((user, password)) = login {
            o.set_credentials(user, password);
        }
        let (client, mut conn) = rumqttc::v5::Client::new(o, 100);
        let (tx, events) = crossbeam_channel::unbounded();
        std::thread::spawn(move || loop {
            match conn.recv_timeout(TIMEOUT) {
                Ok(Ok(rumqttc::v5::Event::Incoming(p))) => {
                    if tx.send(Ok(p)).is_err() {
                        return;
                    }
                }
                Ok(Ok(_)) | Err(rumqttc::v5::RecvTimeoutError::Timeout) => {}
                Ok(Err(e)) => {
                    let _ = tx.send(Err(e));
                    return;
                }
                Err(rumqttc::v5::RecvTimeoutError::Disconnected) => return,
            }
        });
        Self { client, events }
    }

    /// The CONNACK code, refused or not.
    fn connack(&self) -> mq5::ConnectReturnCode {
        match self.events.recv_timeout(TIMEOUT).expect("an event") {
            Ok(mq5::Packet::ConnAck(a)) => a.code,
            Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => code,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    fn wait<T>(&self, mut pick: impl FnMut(&mq5::Packet) -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(p)) => {
                    if let Some(t) = pick(&p) {
                        return t;
                    }
                }
                other => panic!("connection ended or timed out: {other:?}"),
            }
        }
    }

    fn publish_qos1(&self, topic: &str) -> mq5::PubAckReason {
        self.client
            .publish(topic, Qos5::AtLeastOnce, false, "x")
            .unwrap();
        self.wait(|p| match p {
            mq5::Packet::PubAck(a) => Some(a.reason),
            _ => None,
        })
    }

    fn subscribe(&self, filter: &str) -> mq5::SubscribeReasonCode {
        self.client.subscribe(filter, Qos5::AtLeastOnce).unwrap();
        self.wait(|p| match p {
            mq5::Packet::SubAck(a) => Some(a.return_codes[0]),
            _ => None,
        })
    }
}

#[test]
fn refused_logins_get_their_connack_codes() {
    let (broker, log) = start(config(1));
    let port = broker.port();
    // 3.1.1: a wrong password and "not authorised" are 5 (as Mosquitto), unavailable 3.
    use rumqttc::ConnectReturnCode as V3;
    assert_eq!(
        v4_connack(v4_with("a3", port, "alice", "no")),
        V3::NotAuthorized
    );
    assert_eq!(
        v4_connack(v4_with("n3", port, "nobody", "x")),
        V3::NotAuthorized
    );
    assert_eq!(
        v4_connack(v4_with("b3", port, "banned", "x")),
        V3::NotAuthorized
    );
    assert_eq!(
        v4_connack(v4_with("d3", port, "down", "x")),
        V3::ServiceUnavailable
    );
    assert_eq!(v4_connack(v4_with("ok3", port, "alice", "pw")), V3::Success);
    // 5: each decision has its own reason code.
    use mq5::ConnectReturnCode as R5;
    let code = |id, user| V5::start(id, port, Some((user, "x"))).connack();
    assert_eq!(code("a5", "alice"), R5::BadUserNamePassword);
    assert_eq!(code("n5", "nobody"), R5::NotAuthorized);
    assert_eq!(code("b5", "banned"), R5::Banned);
    assert_eq!(code("d5", "down"), R5::ServerUnavailable);
    assert_eq!(
        V5::start("ok5", port, Some(("alice", "pw"))).connack(),
        R5::Success
    );
    // The refused clients were put to the hook (the files allow everyone here).
    for id in ["a3", "n3", "b3", "d3", "a5", "n5", "b5", "d5"] {
        assert_eq!(seen(&log, "login", id).len(), 1, "{id}");
    }
}

#[test]
fn refused_login_with_mosquitto_pub() {
    let Some(tool) = common::mosquitto_tool("mosquitto_pub") else {
        return;
    };
    let (broker, log) = start(config(1));
    let run = |user: &str, password: &str| {
        std::process::Command::new(&tool)
            .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
            .args(["-i", "mp", "-u", user, "-P", password, "-t", "t", "-m", "x"])
            .output()
            .unwrap()
    };
    let refused = run("alice", "wrong");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(err.contains("not authori"), "mosquitto_pub said: {err}");
    assert!(run("alice", "pw").status.success());
    let logins = seen(&log, "login", "mp");
    assert_eq!(logins.len(), 2);
    assert_eq!(logins[0].password.as_deref(), Some(&b"wrong"[..]));
}

#[test]
fn refused_publish_is_0x87_in_v5_and_dropped_in_v3() {
    let (broker, _log) = start(config(1));
    let port = broker.port();
    let sub = V4::connect("watcher", port);
    sub.subscribe("#", rumqttc::QoS::AtLeastOnce);

    // 5: PUBACK 0x87, nothing delivered; the next allowed message goes through.
    let p5 = V5::start("p5", port, None);
    assert_eq!(p5.connack(), mq5::ConnectReturnCode::Success);
    assert_eq!(
        p5.publish_qos1("denied/v5"),
        mq5::PubAckReason::NotAuthorized
    );
    assert_ne!(p5.publish_qos1("ok/v5"), mq5::PubAckReason::NotAuthorized);
    assert_eq!(sub.next_publish().unwrap().topic, "ok/v5");

    // 3.1.1: acknowledged (the client's inflight is freed) and dropped.
    let p3 = V4::connect("p3", port);
    p3.publish("denied/v3", rumqttc::QoS::AtLeastOnce, false, "x");
    let acked = p3.wait_for(|ev| match ev {
        rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) => Some(a.pkid),
        _ => None,
    });
    assert!(acked.is_some(), "3.1.1 PUBACK of a refused message");
    p3.publish("ok/v3", rumqttc::QoS::AtLeastOnce, false, "x");
    assert_eq!(sub.next_publish().unwrap().topic, "ok/v3");
}

#[test]
fn refused_subscribe_is_0x87_in_v5_and_0x80_in_v3() {
    let (broker, _log) = start(config(1));
    let port = broker.port();
    let s5 = V5::start("s5", port, None);
    assert_eq!(s5.connack(), mq5::ConnectReturnCode::Success);
    assert_eq!(
        s5.subscribe("secret/#"),
        mq5::SubscribeReasonCode::NotAuthorized
    );
    // The hook sees a shared filter whole.
    assert_eq!(
        s5.subscribe("$share/g/secret/x"),
        mq5::SubscribeReasonCode::NotAuthorized
    );
    assert!(matches!(
        s5.subscribe("open/#"),
        mq5::SubscribeReasonCode::Success(_)
    ));

    let s3 = V4::connect("s3", port);
    assert_eq!(
        s3.subscribe("secret/#", rumqttc::QoS::AtLeastOnce),
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    assert!(matches!(
        s3.subscribe("open/#", rumqttc::QoS::AtLeastOnce)[..],
        [rumqttc::SubscribeReasonCode::Success(_)]
    ));
    // A refused subscription receives nothing; the allowed one does.
    let p = V4::connect("pub", port);
    p.publish("secret/a", rumqttc::QoS::AtLeastOnce, false, "x");
    p.publish("open/a", rumqttc::QoS::AtLeastOnce, false, "x");
    assert_eq!(s3.next_publish().unwrap().topic, "open/a");
}

#[test]
fn a_will_the_hook_refuses_refuses_the_connect() {
    let (broker, log) = start(config(1));
    let mut o = v4_options("willing", broker.port());
    o.set_last_will(rumqttc::LastWill::new(
        "denied/will",
        "gone",
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    assert_eq!(v4_connack(o), rumqttc::ConnectReturnCode::NotAuthorized);
    let asked = seen(&log, "publish", "willing");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].what, "denied/will");
}

#[test]
fn the_hook_sees_the_client_as_it_connected() {
    let (broker, log) = start(config(2));
    let second = broker.local_addrs()[1].port();
    let c5 = V5::start("prov5", second, Some(("alice", "pw")));
    assert_eq!(c5.connack(), mq5::ConnectReturnCode::Success);
    assert_ne!(c5.publish_qos1("tele/5"), mq5::PubAckReason::NotAuthorized);
    let c3 = V4::connect("prov3", broker.port());
    c3.subscribe("tele/#", rumqttc::QoS::AtMostOnce);

    let login = &seen(&log, "login", "prov5")[0];
    assert_eq!(login.username.as_deref(), Some("alice"));
    assert_eq!(login.password.as_deref(), Some(&b"pw"[..]));
    assert_eq!((login.listener, login.level), (1, 5));
    assert_eq!(login.peer.ip().to_string(), "127.0.0.1");
    assert_ne!(
        login.peer.port(),
        second,
        "the client's port, not the listener's"
    );
    let publish = &seen(&log, "publish", "prov5")[0];
    assert_eq!(publish.what, "tele/5");
    assert_eq!(
        (
            &publish.username,
            publish.listener,
            publish.level,
            publish.peer
        ),
        (&login.username, 1, 5, login.peer)
    );
    let sub = &seen(&log, "subscribe", "prov3")[0];
    assert_eq!(
        (sub.listener, sub.level, sub.username.as_deref()),
        (0, 4, None)
    );
    assert_eq!(sub.what, "tele/#");
    // An empty client id: the hook sees the one the broker assigned.
    let anon = V5::start("", broker.port(), None);
    assert_eq!(anon.connack(), mq5::ConnectReturnCode::Success);
    let logins = log.lock().unwrap().clone();
    assert!(logins
        .iter()
        .any(|s| s.call == "login" && !s.client_id.is_empty() && s.level == 5 && s.listener == 0));
}

#[test]
fn the_files_decide_before_the_hook() {
    use shardmq::internals::auth::{HashKind, PasswordHash};
    let dir = common::temp_dir("embed-auth");
    let passwords = dir.join("pw");
    let hash = PasswordHash::new(HashKind::Sha512, b"pw").unwrap().encode();
    std::fs::write(&passwords, format!("alice:{hash}\nbob:{hash}\n")).unwrap();
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite files/#\ntopic readwrite denied/#\n",
    )
    .unwrap();
    let mut config = config(1);
    config.allow_anonymous = false;
    config.password_file = Some(passwords);
    config.acl_file = Some(acl);
    let (broker, log) = start(config);
    let port = broker.port();
    // The password file refuses: the hook is not asked.
    assert_eq!(
        v4_connack(v4_with("f1", port, "bob", "wrong")),
        rumqttc::ConnectReturnCode::NotAuthorized
    );
    assert!(seen(&log, "login", "f1").is_empty());
    // The file allows, the hook refuses ("nobody" is not in the file, so use "bob" with
    // its right password: the hook allows any user but alice with a wrong password).
    assert_eq!(
        v4_connack(v4_with("f2", port, "bob", "pw")),
        rumqttc::ConnectReturnCode::Success
    );
    assert_eq!(seen(&log, "login", "f2").len(), 1);
    // The ACL refuses: not asked. The ACL allows, the hook refuses: refused.
    let a = V5::start("f3", port, Some(("alice", "pw")));
    assert_eq!(a.connack(), mq5::ConnectReturnCode::Success);
    assert_eq!(a.publish_qos1("other/x"), mq5::PubAckReason::NotAuthorized);
    assert_eq!(a.publish_qos1("denied/x"), mq5::PubAckReason::NotAuthorized);
    assert_ne!(a.publish_qos1("files/x"), mq5::PubAckReason::NotAuthorized);
    let asked: Vec<String> = seen(&log, "publish", "f3")
        .into_iter()
        .map(|s| s.what)
        .collect();
    assert_eq!(asked, ["denied/x", "files/x"]);
    assert_eq!(
        a.subscribe("other/#"),
        mq5::SubscribeReasonCode::NotAuthorized
    );
    assert!(seen(&log, "subscribe", "f3").is_empty());
}
