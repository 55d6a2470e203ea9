//! A bridge's state on the HTTP console's `/metrics` (curl, as Prometheus scrapes it):
//! `shardmq_bridge_up{bridge="NAME"}` follows the remote connection, and the sent and
//! queued figures follow real messages. Needs `mosquitto_passwd` for the console's
//! password file (otherwise SKIPPED).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::console::{get_as, metric_sum, ConsoleBroker, VIEWER};
use common::{wait_until, BrokerProc, TIMEOUT, V4};
use rumqttc::QoS;

/// Scrapes `/metrics` until `name{bridge="up"}` reads `want`; the last text.
fn wait_metric(edge: &ConsoleBroker, name: &str, want: f64) -> String {
    let mut text = String::new();
    let sample = format!("{name}{{bridge=\"up\"}}");
    let ok = wait_until(TIMEOUT, || {
        text = get_as(&edge.url("/metrics"), VIEWER).body;
        metric_sum(&text, &sample) == Some(want)
    });
    assert!(ok, "{sample} never read {want}:\n{text}");
    text
}

#[test]
fn bridge_up_and_message_figures_on_metrics() {
    let mut central = BrokerProc::start("");
    let sub = V4::connect("central-sub", central.port);
    sub.subscribe("m/#", QoS::AtLeastOnce);
    let Some(edge) = ConsoleBroker::start(&format!(
        "connection up\naddress 127.0.0.1:{}\nremote_clientid edge1\nrestart_timeout 1\n\
         topic m/# out 1\n",
        central.port
    )) else {
        return;
    };
    let text = wait_metric(&edge, "shardmq_bridge_up", 1.0);
    assert!(text.contains("# TYPE shardmq_bridge_up gauge"), "{text}");
    assert!(text.contains("# TYPE shardmq_bridge_sent_messages_total counter"));

    let publisher = V4::connect("publisher", edge.broker.port);
    for i in 0..3 {
        publisher.publish("m/a", QoS::AtLeastOnce, false, format!("{i}"));
    }
    for _ in 0..3 {
        assert!(sub.next_publish().is_some(), "the bridge did not forward");
    }
    wait_metric(&edge, "shardmq_bridge_sent_messages_total", 3.0);

    // The remote goes: the bridge is down and what is published waits for it.
    drop(sub);
    central.signal(libc::SIGKILL);
    assert!(central.wait_exit().is_some());
    wait_metric(&edge, "shardmq_bridge_up", 0.0);
    for i in 0..2 {
        publisher.publish("m/a", QoS::AtLeastOnce, false, format!("late {i}"));
    }
    let text = wait_metric(&edge, "shardmq_bridge_queued_messages", 2.0);
    assert_eq!(
        metric_sum(&text, "shardmq_bridge_sent_messages_total{bridge=\"up\"}"),
        Some(3.0)
    );
}
