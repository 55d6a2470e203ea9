//! `log_dest topic`: the broker's log lines arrive on `$SYS/broker/log/<level>` as
//! Mosquitto publishes them (N for notices, I for information, M/subscribe for
//! subscriptions; never debug lines), to a rumqttc subscriber of `$SYS/broker/log/#`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{BrokerProc, V4};

#[test]
fn log_lines_are_published_on_sys_broker_log() {
    let broker = BrokerProc::start("log_dest stderr\nlog_dest topic\nlog_type all\n");
    let watcher = V4::connect("log-watcher", broker.port);
    watcher.subscribe("$SYS/broker/log/#", rumqttc::QoS::ExactlyOnce);
    let probe = V4::connect("log-probe", broker.port);
    probe.subscribe("probe/filter", rumqttc::QoS::AtMostOnce);
    let mut notice = None;
    let mut info = None;
    let mut subscribe = None;
    while notice.is_none() || info.is_none() || subscribe.is_none() {
        let p = watcher
            .next_publish()
            .expect("a log line on $SYS/broker/log");
        let text = String::from_utf8_lossy(&p.payload).into_owned();
        assert_ne!(
            p.topic, "$SYS/broker/log/D",
            "debug lines are never published"
        );
        if p.topic == "$SYS/broker/log/N" && text.contains("New connection from") {
            assert_eq!(p.qos, rumqttc::QoS::ExactlyOnce);
            notice = Some(text);
        } else if p.topic == "$SYS/broker/log/I" && text.contains("as log-probe") {
            info = Some(text);
        } else if p.topic == "$SYS/broker/log/M/subscribe" && text.contains("probe/filter") {
            subscribe = Some(text);
        }
    }
    // Mosquitto's payload: the line with its timestamp prefix ("1700000000: ...").
    let notice = notice.unwrap();
    let (ts, _) = notice.split_once(": ").expect("timestamp prefix");
    assert!(ts.parse::<u64>().is_ok(), "{notice}");
    probe.disconnect();
    watcher.disconnect();
}
