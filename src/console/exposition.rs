//! `GET /metrics`: the shards' published figures ([`super::board`]) as Prometheus text
//! exposition 0.0.4, or OpenMetrics 1.0 when the scraper asks for it in `Accept`.
//!
//! Names follow Prometheus' conventions: `shardmq_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_total` on counters, one `shard` label per shard's series
//! (sum them with `sum by ()`). A family is written only from figures a shard really
//! published: a shard that has not published yet has no samples. Bridges are labelled
//! by name (`shardmq_bridge_up{bridge="NAME"}`, from `crate::bridge::figures`). This
//! module only formats text: it never blocks, never touches a shard and never reads the
//! clock (`now` comes in).

use std::fmt::Write as _;
use std::time::Instant;

use super::board::{Histogram, ShardView};
use crate::metrics::{DropReason, Stats};

/// The `Content-Type` of Prometheus' text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The `Content-Type` of OpenMetrics.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics (as Prometheus 2.x sends it).
pub fn wants_openmetrics(accept: Option<&[u8]>) -> bool {
    accept
        .and_then(|a| std::str::from_utf8(a).ok())
        .is_some_and(|a| {
            a.split(',').any(|part| {
                part.trim()
                    .split(';')
                    .next()
                    .is_some_and(|t| t.trim() == "application/openmetrics-text")
            })
        })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Writes families in either format.
struct Out {
    text: String,
    openmetrics: bool,
}

impl Out {
    /// `# HELP` and `# TYPE` of a family; `name` is the sample name (with `_total` for a
    /// counter, which OpenMetrics leaves out of the family name).
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let family = if self.openmetrics && kind == Kind::Counter {
            name.strip_suffix("_total").unwrap_or(name)
        } else {
            name
        };
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.text, "# HELP {family} {help}");
        let _ = writeln!(self.text, "# TYPE {family} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
        }
    }

    fn histogram(&mut self, name: &str, labels: &str, h: &Histogram) {
        for (le, count) in h.cumulative() {
            let le = le.map_or_else(|| "+Inf".to_string(), |us| seconds(us).to_string());
            let _ = writeln!(self.text, "{name}_bucket{{{labels},le=\"{le}\"}} {count}");
        }
        self.sample(&format!("{name}_sum"), labels, seconds(h.sum_us));
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

#[allow(clippy::cast_precision_loss)] // microsecond sums far below 2^52
fn seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Escapes a label value (backslash, quote, newline).
pub fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What the exposition needs besides the shards' views.
#[derive(Debug, Clone)]
pub struct Info {
    pub version: &'static str,
    pub started: Instant,
    /// Per listener: (index, protocol name, port).
    pub listeners: Vec<(usize, &'static str, u16)>,
}

/// One counter or gauge read from each shard's [`Stats`].
struct PerShard {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&Stats) -> u64,
}

const PER_SHARD: &[PerShard] = &[
    PerShard { name: "shardmq_connections", kind: Kind::Gauge, help: "Clients connected (CONNECT accepted, not yet closed).", value: |s| s.clients_connected },
    PerShard { name: "shardmq_connections_maximum", kind: Kind::Gauge, help: "Most clients connected at once since the start.", value: |s| s.clients_maximum },
    PerShard { name: "shardmq_connections_accepted_total", kind: Kind::Counter, help: "TCP connections accepted (MQTT, WebSockets and HTTP listeners).", value: |s| s.connections_accepted },
    PerShard { name: "shardmq_sessions", kind: Kind::Gauge, help: "Sessions held: connected plus disconnected persistent ones.", value: |s| s.clients_total },
    PerShard { name: "shardmq_subscriptions", kind: Kind::Gauge, help: "Subscriptions (filter, client) held.", value: |s| s.subscriptions },
    PerShard { name: "shardmq_packets_received_total", kind: Kind::Counter, help: "MQTT packets of any type received.", value: |s| s.messages_received },
    PerShard { name: "shardmq_packets_sent_total", kind: Kind::Counter, help: "MQTT packets of any type sent.", value: |s| s.messages_sent },
    PerShard { name: "shardmq_received_bytes_total", kind: Kind::Counter, help: "Bytes of MQTT packets received.", value: |s| s.bytes_received },
    PerShard { name: "shardmq_sent_bytes_total", kind: Kind::Counter, help: "Bytes of MQTT packets sent.", value: |s| s.bytes_sent },
    PerShard { name: "shardmq_publish_received_payload_bytes_total", kind: Kind::Counter, help: "Payload bytes of the PUBLISH packets received.", value: |s| s.publish_bytes_received },
    PerShard { name: "shardmq_publish_sent_payload_bytes_total", kind: Kind::Counter, help: "Payload bytes of the PUBLISH packets sent.", value: |s| s.publish_bytes_sent },
    PerShard { name: "shardmq_sessions_expired_total", kind: Kind::Counter, help: "Disconnected persistent sessions that expired and were removed.", value: |s| s.clients_expired },
    PerShard { name: "shardmq_shared_subscriptions", kind: Kind::Gauge, help: "Shared ($share/) subscriptions held.", value: |s| s.shared_subscriptions },
    PerShard { name: "shardmq_stored_messages", kind: Kind::Gauge, help: "Messages held in session queues and inflight windows.", value: |s| s.stored },
    PerShard { name: "shardmq_stored_bytes", kind: Kind::Gauge, help: "Memory those messages keep alive.", value: |s| s.stored_bytes },
    PerShard { name: "shardmq_output_bytes", kind: Kind::Gauge, help: "Memory held by connections' output queues.", value: |s| s.output_bytes },
    PerShard { name: "shardmq_subscribe_paused_total", kind: Kind::Counter, help: "Times a connection was not read because it had the most SUBACKs waiting for other shards.", value: |s| s.subscribe_paused },
    PerShard { name: "shardmq_embed_publish_refused_total", kind: Kind::Counter, help: "Embedding-API publishes refused because the publish channel was full.", value: |s| s.embed_publish_refused },
];

/// The exposition of every shard's last view.
pub fn render(views: &[ShardView], info: &Info, now: Instant, openmetrics: bool) -> String {
    let mut out = Out {
        text: String::with_capacity(16 * 1024),
        openmetrics,
    };
    out.family(
        "shardmq_build_info",
        Kind::Gauge,
        "Always 1; the version as a label.",
    );
    out.sample(
        "shardmq_build_info",
        &format!("version=\"{}\"", label_value(info.version)),
        1,
    );
    out.family(
        "shardmq_uptime_seconds",
        Kind::Gauge,
        "Seconds since the broker started.",
    );
    out.sample(
        "shardmq_uptime_seconds",
        "",
        now.saturating_duration_since(info.started).as_secs(),
    );
    out.family(
        "shardmq_shards",
        Kind::Gauge,
        "Shards (event-loop threads).",
    );
    out.sample("shardmq_shards", "", views.len());
    out.family(
        "shardmq_listener_info",
        Kind::Gauge,
        "Always 1 per configured listener; its protocol and port as labels.",
    );
    for (index, protocol, port) in &info.listeners {
        out.sample(
            "shardmq_listener_info",
            &format!("listener=\"{index}\",protocol=\"{protocol}\",port=\"{port}\""),
            1,
        );
    }
    let published: Vec<(usize, &ShardView, &Stats)> = views
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.stats.as_ref().map(|s| (i, v, s)))
        .collect();
    for f in PER_SHARD {
        out.family(f.name, f.kind, f.help);
        for (shard, _, stats) in &published {
            out.sample(f.name, &format!("shard=\"{shard}\""), (f.value)(stats));
        }
    }
    // Per QoS and per drop reason: one series per (shard, label).
    type ByQos = fn(&Stats) -> [u64; 3];
    let by_qos: [(&str, &str, ByQos); 2] = [
        (
            "shardmq_publish_received_total",
            "PUBLISH packets received, by QoS.",
            |s| s.publish_received_qos,
        ),
        (
            "shardmq_publish_sent_total",
            "PUBLISH packets sent, by QoS.",
            |s| s.publish_sent_qos,
        ),
    ];
    for (name, help, values) in by_qos {
        out.family(name, Kind::Counter, help);
        for (shard, _, stats) in &published {
            for (qos, v) in values(stats).iter().enumerate() {
                out.sample(name, &format!("shard=\"{shard}\",qos=\"{qos}\""), v);
            }
        }
    }
    out.family(
        "shardmq_publish_dropped_total",
        Kind::Counter,
        "Messages dropped, by reason: queue_full (a full subscriber or offline queue), expired, acl, too_large, slow_subscriber (cut for not reading), in_process (an embedding-API subscriber's channel full), encode.",
    );
    for (shard, _, stats) in &published {
        for (reason, v) in DropReason::ALL.iter().zip(stats.dropped_by_reason) {
            out.sample(
                "shardmq_publish_dropped_total",
                &format!("shard=\"{shard}\",reason=\"{}\"", reason.name()),
                v,
            );
        }
    }
    out.family(
        "shardmq_inflight_messages",
        Kind::Gauge,
        "Messages sent and not yet acknowledged, over every session.",
    );
    for (shard, v, _) in &published {
        out.sample(
            "shardmq_inflight_messages",
            &format!("shard=\"{shard}\""),
            v.inflight,
        );
    }
    out.family(
        "shardmq_queued_messages",
        Kind::Gauge,
        "Messages queued behind the inflight windows, over every session.",
    );
    for (shard, v, _) in &published {
        out.sample(
            "shardmq_queued_messages",
            &format!("shard=\"{shard}\""),
            v.queued,
        );
    }
    out.family(
        "shardmq_mailbox_depth_messages",
        Kind::Gauge,
        "Data messages a shard sent the other shards and they have not taken yet (rings, as the sender last saw them, and overflow).",
    );
    for (shard, v, _) in &published {
        out.sample(
            "shardmq_mailbox_depth_messages",
            &format!("shard=\"{shard}\""),
            v.mailbox_depth,
        );
    }
    out.family(
        "shardmq_mailbox_backlog_messages",
        Kind::Gauge,
        "Messages waiting in a shard's outboxes because a peer's ring was full.",
    );
    for (shard, v, _) in &published {
        out.sample(
            "shardmq_mailbox_backlog_messages",
            &format!("shard=\"{shard}\""),
            v.mailbox_backlog,
        );
    }
    // Every shard holds a replica of the retained store: shard 0's is the broker's.
    if let Some((_, v, stats)) = published.iter().find(|(shard, _, _)| *shard == 0) {
        out.family(
            "shardmq_retained_messages",
            Kind::Gauge,
            "Retained messages held.",
        );
        out.sample("shardmq_retained_messages", "", stats.retained);
        out.family(
            "shardmq_retained_bytes",
            Kind::Gauge,
            "Payload bytes of the retained messages held.",
        );
        out.sample("shardmq_retained_bytes", "", v.retained_bytes);
    }
    out.family(
        "shardmq_loop_lag_seconds",
        Kind::Histogram,
        "Event-loop lag per iteration: how long readiness seen at its start waited for it to finish.",
    );
    for (shard, v, _) in &published {
        out.histogram(
            "shardmq_loop_lag_seconds",
            &format!("shard=\"{shard}\""),
            &v.loop_lag,
        );
    }
    if let Some(p) = crate::metrics::persist::figures() {
        out.family(
            "shardmq_persistence_log_bytes",
            Kind::Gauge,
            "Bytes in the live persistence log.",
        );
        out.sample("shardmq_persistence_log_bytes", "", p.log_bytes);
        out.family(
            "shardmq_persistence_failing",
            Kind::Gauge,
            "1 while a shard holds its output because the log cannot be written.",
        );
        out.sample("shardmq_persistence_failing", "", u64::from(p.holding > 0));
        out.family(
            "shardmq_persistence_write_failures_total",
            Kind::Counter,
            "Failed appends and fsyncs of the persistence log.",
        );
        out.sample(
            "shardmq_persistence_write_failures_total",
            "",
            p.write_failures,
        );
        out.family(
            "shardmq_persistence_compaction_failures_total",
            Kind::Counter,
            "Failed compactions of the persistence log into a snapshot (each is retried).",
        );
        out.sample(
            "shardmq_persistence_compaction_failures_total",
            "",
            p.compaction_failures,
        );
        out.family(
            "shardmq_persistence_last_fsync_timestamp_seconds",
            Kind::Gauge,
            "Unix time the last fsync of the live log ended (0: none yet).",
        );
        #[allow(clippy::cast_precision_loss)] // milliseconds since 1970 fit in f64
        let last = p.last_unix_ms as f64 / 1e3;
        out.sample("shardmq_persistence_last_fsync_timestamp_seconds", "", last);
        out.family("shardmq_persistence_fsync_seconds", Kind::Histogram, "Latency of the live log's fsyncs (with `persistence_fsync always`, the append's write and fsync).");
        let mut acc = 0;
        for (i, c) in p.buckets.iter().enumerate() {
            acc += c;
            let le = crate::metrics::persist::FSYNC_BUCKETS_US
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |us| seconds(*us).to_string());
            out.sample(
                "shardmq_persistence_fsync_seconds_bucket",
                &format!("le=\"{le}\""),
                acc,
            );
        }
        out.sample(
            "shardmq_persistence_fsync_seconds_sum",
            "",
            seconds(p.sum_us),
        );
        out.sample("shardmq_persistence_fsync_seconds_count", "", p.count);
    }
    // --- bridges: `shardmq_bridge_up{bridge="NAME"}` (gauge, 1 while connected) and
    // their message figures, as the shard running each last pinned them.
    bridges(&mut out, &crate::bridge::figures::all());
    if openmetrics {
        out.text.push_str("# EOF\n");
    }
    out.text
}

/// One family per bridge figure, a `bridge` label per running bridge (nothing without
/// bridges).
fn bridges(out: &mut Out, rows: &[(String, crate::bridge::figures::Figures)]) {
    use crate::bridge::figures::Figures;
    type Family = (&'static str, Kind, &'static str, fn(&Figures) -> u64);
    const FAMILIES: &[Family] = &[
        (
            "shardmq_bridge_up",
            Kind::Gauge,
            "1 while the bridge's remote connection is up.",
            |f| u64::from(f.connected),
        ),
        (
            "shardmq_bridge_sent_messages_total",
            Kind::Counter,
            "Messages the bridge forwarded to its remote.",
            |f| f.sent,
        ),
        (
            "shardmq_bridge_received_messages_total",
            Kind::Counter,
            "Messages the bridge received from its remote and published locally.",
            |f| f.received,
        ),
        (
            "shardmq_bridge_queued_messages",
            Kind::Gauge,
            "Messages the bridge's local session holds for the remote (queued and in flight).",
            |f| f.queued,
        ),
        (
            "shardmq_bridge_dropped_messages_total",
            Kind::Counter,
            "Messages the bridge did not forward (too big, or no topic line maps them).",
            |f| f.dropped,
        ),
        (
            "shardmq_bridge_reconnects_total",
            Kind::Counter,
            "Connections to the remote after the first.",
            |f| f.reconnects,
        ),
    ];
    if rows.is_empty() {
        return;
    }
    for (name, kind, help, value) in FAMILIES {
        out.family(name, *kind, help);
        for (bridge, f) in rows {
            out.sample(
                name,
                &format!("bridge=\"{}\"", label_value(bridge)),
                value(f),
            );
        }
    }
}

#[cfg(test)]
#[path = "exposition_tests.rs"]
mod tests;
