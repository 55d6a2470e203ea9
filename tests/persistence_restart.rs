//! Session state that must survive a restart of the real binary beyond queued messages:
//! inbound QoS 2 packet ids awaiting PUBREL (a DUP resend after `kill -9` is not
//! delivered twice, and a PUBREL after the restart frees the id for good), retained
//! messages queued for a persistent session by its SUBSCRIBE, and the user a persistent
//! session belongs to (its ACL applies while it is offline after a restart).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::persist::{
    connect_as, crash, drain_publishes, expect_ack, persist_config, publish_acked, stop_clean,
};
use common::{ack, publish, temp_dir, BrokerProc, Raw};

const QUIET: Duration = Duration::from_millis(700);

/// Payloads received by the persistent subscriber `id` (QoS 2 flows completed).
fn collect(broker: &BrokerProc, id: &str) -> Vec<Vec<u8>> {
    let (mut sub, present, _) = Raw::mqtt_connect(broker.port, id, false);
    assert!(present, "session of {id} not restored");
    let got = drain_publishes(&mut sub, QUIET);
    sub.disconnect();
    got.into_iter().map(|g| g.1).collect()
}

#[test]
fn qos2_resent_with_dup_after_kill_9_between_pubrec_and_pubrel_is_delivered_once() {
    let dir = temp_dir("persist-qos2");
    let config = persist_config(&dir, "always");
    let broker = BrokerProc::start(&config);
    let (mut sub, _, _) = Raw::mqtt_connect(broker.port, "q2-sub", false);
    assert_eq!(sub.subscribe(1, &[("q2/#", 2)]), vec![2]);
    sub.disconnect();

    // PUBLISH, PUBREC, and the broker dies before the PUBREL.
    let (mut publisher, _, _) = Raw::mqtt_connect(broker.port, "q2-pub", false);
    publisher.send(&publish("q2/x", 2, false, false, 7, b"once"));
    expect_ack(&mut publisher, 5, 7);
    crash(broker);

    let broker = BrokerProc::start(&config);
    let (mut publisher, present, _) = Raw::mqtt_connect(broker.port, "q2-pub", false);
    assert!(present, "publisher session not restored");
    // The client did not see a PUBCOMP: it resends with DUP, then releases [MQTT-4.3.3-10].
    publisher.send(&publish("q2/x", 2, false, true, 7, b"once"));
    expect_ack(&mut publisher, 5, 7);
    publisher.send(&ack(0x62, 7));
    expect_ack(&mut publisher, 7, 7);
    let got = collect(&broker, "q2-sub");
    assert_eq!(got, vec![b"once".to_vec()], "delivered {} times", got.len());

    // The PUBREL after the restart was recorded: after another crash id 7 is free, and a
    // new message with it is delivered, not taken for a duplicate.
    crash(broker);
    let broker = BrokerProc::start(&config);
    let (mut publisher, present, _) = Raw::mqtt_connect(broker.port, "q2-pub", false);
    assert!(present);
    publisher.send(&publish("q2/x", 2, false, false, 7, b"reused"));
    expect_ack(&mut publisher, 5, 7);
    publisher.send(&ack(0x62, 7));
    expect_ack(&mut publisher, 7, 7);
    assert_eq!(collect(&broker, "q2-sub"), vec![b"reused".to_vec()]);
    stop_clean(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retained_messages_queued_by_subscribe_survive_kill_9() {
    let dir = temp_dir("persist-retained-queue");
    let config = format!(
        "{}max_inflight_messages 1\n",
        persist_config(&dir, "always")
    );
    let broker = BrokerProc::start(&config);
    let (mut publisher, _, _) = Raw::mqtt_connect(broker.port, "pub", true);
    for i in 1..=3u16 {
        publish_acked(&mut publisher, &format!("r/{i}"), i, true, b"kept");
    }
    publisher.disconnect();
    // A persistent QoS 1 subscriber that does not acknowledge: one retained message is
    // in flight (window 1), two wait in its queue.
    let (mut sub, _, _) = Raw::mqtt_connect(broker.port, "slow", false);
    sub.send(&common::subscribe(1, &[("r/#", 1)]));
    let mut kinds = Vec::new();
    while kinds.iter().filter(|&&k| k == 3).count() < 1 || !kinds.contains(&9) {
        kinds.push(sub.recv().expect("SUBACK and a retained PUBLISH").kind());
    }
    assert!(sub.recv_within(Duration::from_millis(200)).is_none());
    crash(broker);

    let broker = BrokerProc::start(&config);
    let (mut sub, present, _) = Raw::mqtt_connect(broker.port, "slow", false);
    assert!(present);
    let mut topics: Vec<String> = drain_publishes(&mut sub, QUIET)
        .into_iter()
        .map(|g| g.0)
        .collect();
    topics.sort();
    assert_eq!(topics, ["r/1", "r/2", "r/3"]);
    stop_clean(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn restored_session_is_authorised_as_its_user_while_offline() {
    let dir = temp_dir("persist-acl");
    let acl = dir.join("acl");
    // Anonymous clients may publish to u/# but not read it; user u may read it.
    std::fs::write(&acl, "topic write u/#\n\nuser u\ntopic read u/#\n").unwrap();
    let config = format!(
        "{}acl_file {}\n",
        persist_config(&dir, "interval"),
        acl.display()
    );
    let broker = BrokerProc::start(&config);
    let (mut u, _) = connect_as(broker.port, "u-client", false, "u");
    assert_eq!(u.subscribe(1, &[("u/#", 1)]), vec![1]);
    u.disconnect();
    stop_clean(broker);

    let broker = BrokerProc::start(&config);
    assert!(broker.wait_log("Restored 1 persistent sessions"));
    let (mut publisher, _, _) = Raw::mqtt_connect(broker.port, "anon", true);
    publish_acked(&mut publisher, "u/x", 1, false, b"for u");
    let (mut u, present) = connect_as(broker.port, "u-client", false, "u");
    assert!(present);
    let got = drain_publishes(&mut u, QUIET);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_slice()),
        ("u/x", &b"for u"[..])
    );
    stop_clean(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
