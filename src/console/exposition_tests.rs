use std::time::{Duration, Instant};

use super::*;
use crate::console::board::ShardView;

fn views(t0: Instant) -> Vec<ShardView> {
    let mut a = ShardView::default();
    let mut stats = Stats::new(t0);
    stats.clients_connected = 3;
    stats.publish_in(1, 10);
    for _ in 0..41 {
        stats.publish_in(0, 10);
    }
    stats.dropped(crate::metrics::DropReason::Acl, 2);
    stats.retained = 2;
    a.stats = Some(stats);
    a.retained_bytes = 11;
    a.loop_lag.record(70);
    a.loop_lag.record(3_000);
    let b = ShardView {
        stats: Some(Stats::new(t0)),
        ..ShardView::default()
    };
    // A shard that has not published yet has no samples.
    vec![a, b, ShardView::default()]
}

fn info(t0: Instant) -> Info {
    Info {
        version: "9.9.9",
        started: t0,
        listeners: vec![(0, "mqtt", 1883), (1, "http", 8080)],
    }
}

#[test]
fn prometheus_text_has_per_shard_series_and_histograms() {
    let t0 = Instant::now();
    let text = render(&views(t0), &info(t0), t0 + Duration::from_secs(7), false);
    assert!(
        text.contains("# TYPE shardmq_publish_received_total counter\n"),
        "{text}"
    );
    assert!(text.contains("shardmq_publish_received_total{shard=\"0\",qos=\"0\"} 41\n"));
    assert!(text.contains("shardmq_publish_received_total{shard=\"0\",qos=\"1\"} 1\n"));
    assert!(text.contains("shardmq_publish_received_total{shard=\"1\",qos=\"2\"} 0\n"));
    assert!(text.contains("shardmq_publish_dropped_total{shard=\"0\",reason=\"acl\"} 2\n"));
    assert!(text.contains("shardmq_publish_dropped_total{shard=\"0\",reason=\"expired\"} 0\n"));
    assert!(
        !text.contains("shard=\"2\""),
        "unpublished shard 2 has samples"
    );
    assert!(text.contains("shardmq_connections{shard=\"0\"} 3\n"));
    assert!(text.contains("shardmq_uptime_seconds 7\n"));
    assert!(text.contains("shardmq_retained_messages 2\n"));
    assert!(text.contains("shardmq_retained_bytes 11\n"));
    assert!(text.contains("shardmq_loop_lag_seconds_bucket{shard=\"0\",le=\"0.0001\"} 1\n"));
    assert!(text.contains("shardmq_loop_lag_seconds_bucket{shard=\"0\",le=\"+Inf\"} 2\n"));
    assert!(text.contains("shardmq_loop_lag_seconds_count{shard=\"0\"} 2\n"));
    assert!(text.contains("shardmq_loop_lag_seconds_sum{shard=\"0\"} 0.00307\n"));
    assert!(
        text.contains("shardmq_listener_info{listener=\"1\",protocol=\"http\",port=\"8080\"} 1\n")
    );
    assert!(!text.contains("# EOF"));
}

#[test]
fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
    let t0 = Instant::now();
    let text = render(&views(t0), &info(t0), t0, true);
    assert!(
        text.contains("# TYPE shardmq_publish_received counter\n"),
        "{text}"
    );
    assert!(text.contains("shardmq_publish_received_total{shard=\"0\",qos=\"0\"} 41\n"));
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn accept_header_selects_openmetrics() {
    let prometheus_2 = b"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert!(wants_openmetrics(Some(prometheus_2)));
    assert!(!wants_openmetrics(Some(b"text/plain")));
    assert!(!wants_openmetrics(None));
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

#[test]
fn bridges_have_one_family_per_figure_labelled_by_name() {
    use crate::bridge::figures::Figures;
    let mut out = Out {
        text: String::new(),
        openmetrics: false,
    };
    bridges(&mut out, &[]);
    assert!(out.text.is_empty(), "no bridge, no family");
    let up = Figures {
        connected: true,
        sent: 7,
        received: 2,
        queued: 1,
        dropped: 3,
        reconnects: 4,
    };
    let rows = [
        ("up".to_string(), up),
        ("b\"2".to_string(), Figures::default()),
    ];
    bridges(&mut out, &rows);
    let t = &out.text;
    assert!(t.contains("# TYPE shardmq_bridge_up gauge\n"), "{t}");
    assert!(t.contains("shardmq_bridge_up{bridge=\"up\"} 1\n"), "{t}");
    assert!(
        t.contains("shardmq_bridge_up{bridge=\"b\\\"2\"} 0\n"),
        "{t}"
    );
    assert!(t.contains("# TYPE shardmq_bridge_sent_messages_total counter\n"));
    assert!(t.contains("shardmq_bridge_sent_messages_total{bridge=\"up\"} 7\n"));
    assert!(t.contains("shardmq_bridge_received_messages_total{bridge=\"up\"} 2\n"));
    assert!(t.contains("shardmq_bridge_queued_messages{bridge=\"up\"} 1\n"));
    assert!(t.contains("shardmq_bridge_dropped_messages_total{bridge=\"up\"} 3\n"));
    assert!(t.contains("shardmq_bridge_reconnects_total{bridge=\"up\"} 4\n"));
}
