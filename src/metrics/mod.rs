//! Per-shard counters and the `$SYS` topic set Mosquitto publishes.
//!
//! [`Stats`] is a struct of plain integers owned by one shard (no atomics on the hot path);
//! the runtime or an embedding reads a snapshot by cloning it. This module never routes a
//! message itself: [`Stats::sys_messages`] only says which `$SYS` topics carry which text,
//! and the broker publishes them.

pub mod persist;

use std::time::{Duration, Instant};

/// Mosquitto's load averages: exponential moving averages of a per-minute rate over
/// 1, 5 and 15 minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

impl Load {
    /// Folds in `delta` events counted over `elapsed`, like Mosquitto's `calc_load`.
    fn update(&mut self, delta: u64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        #[allow(clippy::cast_precision_loss)] // counters far below 2^52
        let per_minute = delta as f64 * 60.0 / secs;
        for (value, window) in [
            (&mut self.one, 60.0),
            (&mut self.five, 300.0),
            (&mut self.fifteen, 900.0),
        ] {
            let exponent = (-secs / window).exp();
            *value = exponent * *value + (1.0 - exponent) * per_minute;
        }
    }
}

/// Why a message was dropped (the `reason` label of `shardmq_publish_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A subscriber's queue or output was full (QoS 0 to a full subscriber, an offline
    /// session's queue overflowing).
    QueueFull,
    /// Its v5 Message Expiry Interval passed before delivery.
    Expired,
    /// The ACL denied the publisher.
    Acl,
    /// Larger than `message_size_limit`, or than the subscriber's Maximum Packet Size.
    TooLarge,
    /// Thrown away with a subscriber cut for not reading (`slow_subscriber_timeout`).
    SlowSubscriber,
    /// An in-process (embedding API) subscriber's channel was full.
    InProcess,
    /// The message could not be encoded for the subscriber.
    Encode,
}

impl DropReason {
    pub const ALL: [Self; 7] = [
        Self::QueueFull,
        Self::Expired,
        Self::Acl,
        Self::TooLarge,
        Self::SlowSubscriber,
        Self::InProcess,
        Self::Encode,
    ];

    /// The label value.
    pub const fn name(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Expired => "expired",
            Self::Acl => "acl",
            Self::TooLarge => "too_large",
            Self::SlowSubscriber => "slow_subscriber",
            Self::InProcess => "in_process",
            Self::Encode => "encode",
        }
    }
}

/// Counters of one shard. Every field is a plain number; read a snapshot with `clone()`.
#[derive(Debug, Clone)]
pub struct Stats {
    pub started: Instant,
    /// Connections that completed CONNECT and are still open.
    pub clients_connected: u64,
    /// Sessions known to the shard: connected plus disconnected persistent ones.
    pub clients_total: u64,
    /// Highest `clients_connected` seen.
    pub clients_maximum: u64,
    /// Connections ever accepted (sockets).
    pub connections_accepted: u64,
    /// CONNECTs accepted.
    pub connects: u64,
    /// Disconnected persistent sessions that expired and were removed.
    pub clients_expired: u64,
    /// Shared (`$share/`) subscriptions held.
    pub shared_subscriptions: u64,
    /// Payload bytes of the PUBLISH packets received / sent.
    pub publish_bytes_received: u64,
    pub publish_bytes_sent: u64,
    /// MQTT packets of any type received / sent.
    pub messages_received: u64,
    pub messages_sent: u64,
    /// PUBLISH packets received / sent.
    pub publish_received: u64,
    pub publish_sent: u64,
    /// Messages dropped: QoS 0 to a full subscriber, offline queue overflow, too large
    /// for the client's Maximum Packet Size, expired.
    pub publish_dropped: u64,
    /// `publish_dropped` by [`DropReason`] (indexed like [`DropReason::ALL`]).
    pub dropped_by_reason: [u64; 7],
    /// PUBLISH packets received / sent by QoS (0, 1, 2).
    pub publish_received_qos: [u64; 3],
    pub publish_sent_qos: [u64; 3],
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Active subscriptions (filter, client) pairs.
    pub subscriptions: u64,
    /// Retained messages held.
    pub retained: u64,
    /// Messages held in session queues and inflight windows.
    pub stored: u64,
    /// Memory those messages keep alive (their footprints, as `max_queued_bytes` counts).
    pub stored_bytes: u64,
    /// Memory held by connections' output queues (as the output limit counts it).
    pub output_bytes: u64,
    /// Times a connection stopped being read because it had the most SUBACKs it may
    /// have waiting for the other shards.
    pub subscribe_paused: u64,
    /// `BrokerHandle::publish` calls refused because the embed channel was full.
    pub embed_publish_refused: u64,
    /// PUBLISH packets refused because the shard held `memory_limit` (its share) already.
    pub publish_refused_memory: u64,
    /// Shared subscription deliveries that passed over the member the strategy named
    /// because it had no room (full, offline or not acknowledging) and another had.
    pub shared_skipped: u64,
    pub load_received: Load,
    pub load_sent: Load,
    pub load_publish_received: Load,
    pub load_publish_sent: Load,
    pub load_bytes_received: Load,
    pub load_bytes_sent: Load,
    pub load_connections: Load,
    pub load_publish_dropped: Load,
    /// Sockets accepted (Mosquitto's `load/sockets`; `load/connections` counts CONNECTs).
    pub load_sockets: Load,
    last_load: Option<(Instant, [u64; 9])>,
}

impl Stats {
    pub fn new(now: Instant) -> Self {
        Self {
            started: now,
            clients_connected: 0,
            clients_total: 0,
            clients_maximum: 0,
            connections_accepted: 0,
            connects: 0,
            clients_expired: 0,
            shared_subscriptions: 0,
            publish_bytes_received: 0,
            publish_bytes_sent: 0,
            messages_received: 0,
            messages_sent: 0,
            publish_received: 0,
            publish_sent: 0,
            publish_dropped: 0,
            dropped_by_reason: [0; 7],
            publish_received_qos: [0; 3],
            publish_sent_qos: [0; 3],
            bytes_received: 0,
            bytes_sent: 0,
            subscriptions: 0,
            retained: 0,
            stored: 0,
            stored_bytes: 0,
            output_bytes: 0,
            subscribe_paused: 0,
            embed_publish_refused: 0,
            publish_refused_memory: 0,
            shared_skipped: 0,
            load_received: Load::default(),
            load_sent: Load::default(),
            load_publish_received: Load::default(),
            load_publish_sent: Load::default(),
            load_bytes_received: Load::default(),
            load_bytes_sent: Load::default(),
            load_connections: Load::default(),
            load_publish_dropped: Load::default(),
            load_sockets: Load::default(),
            last_load: None,
        }
    }

    pub fn client_connected(&mut self) {
        self.connects += 1;
        self.clients_connected += 1;
        self.clients_maximum = self.clients_maximum.max(self.clients_connected);
    }

    /// `n` messages dropped for `reason`.
    pub fn dropped(&mut self, reason: DropReason, n: u64) {
        self.publish_dropped += n;
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
            self.dropped_by_reason[i] += n;
        }
    }

    /// A PUBLISH of QoS `qos` (0-2) with `payload` bytes received.
    pub fn publish_in(&mut self, qos: u8, payload: usize) {
        self.publish_received += 1;
        self.publish_bytes_received += payload as u64;
        if let Some(c) = self.publish_received_qos.get_mut(usize::from(qos)) {
            *c += 1;
        }
    }

    /// A PUBLISH of QoS `qos` (0-2) with `payload` bytes sent.
    pub fn publish_out(&mut self, qos: u8, payload: usize) {
        self.publish_sent += 1;
        self.publish_bytes_sent += payload as u64;
        if let Some(c) = self.publish_sent_qos.get_mut(usize::from(qos)) {
            *c += 1;
        }
    }

    pub fn client_disconnected(&mut self) {
        self.clients_connected = self.clients_connected.saturating_sub(1);
    }

    fn load_counters(&self) -> [u64; 9] {
        [
            self.messages_received,
            self.messages_sent,
            self.publish_received,
            self.publish_sent,
            self.bytes_received,
            self.bytes_sent,
            self.connects,
            self.publish_dropped,
            self.connections_accepted,
        ]
    }

    /// Updates the load averages; call once per `sys_interval`.
    pub fn update_load(&mut self, now: Instant) {
        let current = self.load_counters();
        if let Some((last, prev)) = self.last_load {
            let elapsed = now.saturating_duration_since(last);
            let loads = [
                &mut self.load_received,
                &mut self.load_sent,
                &mut self.load_publish_received,
                &mut self.load_publish_sent,
                &mut self.load_bytes_received,
                &mut self.load_bytes_sent,
                &mut self.load_connections,
                &mut self.load_publish_dropped,
                &mut self.load_sockets,
            ];
            for ((load, cur), old) in loads.into_iter().zip(current).zip(prev) {
                load.update(cur.saturating_sub(old), elapsed);
            }
        }
        self.last_load = Some((now, current));
    }

    /// The `$SYS` topics and their payloads as Mosquitto names them.
    pub fn sys_messages(&self, now: Instant) -> Vec<(&'static str, String)> {
        let uptime = now.saturating_duration_since(self.started).as_secs();
        let mut out = vec![
            (
                "$SYS/broker/version",
                format!("shardmq {}", env!("CARGO_PKG_VERSION")),
            ),
            ("$SYS/broker/uptime", format!("{uptime} seconds")),
            (
                "$SYS/broker/clients/connected",
                self.clients_connected.to_string(),
            ),
            (
                "$SYS/broker/clients/active",
                self.clients_connected.to_string(),
            ),
            ("$SYS/broker/clients/total", self.clients_total.to_string()),
            (
                "$SYS/broker/clients/disconnected",
                self.clients_total
                    .saturating_sub(self.clients_connected)
                    .to_string(),
            ),
            ("$SYS/broker/clients/inactive", {
                self.clients_total
                    .saturating_sub(self.clients_connected)
                    .to_string()
            }),
            (
                "$SYS/broker/clients/maximum",
                self.clients_maximum.to_string(),
            ),
            (
                "$SYS/broker/messages/received",
                self.messages_received.to_string(),
            ),
            ("$SYS/broker/messages/sent", self.messages_sent.to_string()),
            (
                "$SYS/broker/publish/messages/received",
                self.publish_received.to_string(),
            ),
            (
                "$SYS/broker/publish/messages/sent",
                self.publish_sent.to_string(),
            ),
            (
                "$SYS/broker/publish/messages/dropped",
                self.publish_dropped.to_string(),
            ),
            (
                "$SYS/broker/bytes/received",
                self.bytes_received.to_string(),
            ),
            ("$SYS/broker/bytes/sent", self.bytes_sent.to_string()),
            (
                "$SYS/broker/publish/bytes/received",
                self.publish_bytes_received.to_string(),
            ),
            (
                "$SYS/broker/publish/bytes/sent",
                self.publish_bytes_sent.to_string(),
            ),
            (
                "$SYS/broker/clients/expired",
                self.clients_expired.to_string(),
            ),
            (
                "$SYS/broker/shared_subscriptions/count",
                self.shared_subscriptions.to_string(),
            ),
            (
                "$SYS/broker/subscriptions/count",
                self.subscriptions.to_string(),
            ),
            (
                "$SYS/broker/retained messages/count",
                self.retained.to_string(),
            ),
            ("$SYS/broker/store/messages/count", self.stored.to_string()),
            ("$SYS/broker/messages/stored", self.stored.to_string()),
            (
                "$SYS/broker/store/messages/bytes",
                self.stored_bytes.to_string(),
            ),
            ("$SYS/broker/output/bytes", self.output_bytes.to_string()),
            (
                "$SYS/broker/subscribe/paused",
                self.subscribe_paused.to_string(),
            ),
            (
                "$SYS/broker/publish/embed/refused",
                self.embed_publish_refused.to_string(),
            ),
            (
                "$SYS/broker/publish/messages/refused/memory",
                self.publish_refused_memory.to_string(),
            ),
            (
                "$SYS/broker/shared/skipped",
                self.shared_skipped.to_string(),
            ),
        ];
        let loads: [(&'static str, &Load); 9] = [
            ("messages/received", &self.load_received),
            ("messages/sent", &self.load_sent),
            ("publish/received", &self.load_publish_received),
            ("publish/sent", &self.load_publish_sent),
            ("bytes/received", &self.load_bytes_received),
            ("bytes/sent", &self.load_bytes_sent),
            ("connections", &self.load_connections),
            ("publish/dropped", &self.load_publish_dropped),
            ("sockets", &self.load_sockets),
        ];
        for (name, load) in loads {
            for (window, value) in [
                ("1min", load.one),
                ("5min", load.five),
                ("15min", load.fifteen),
            ] {
                out.push((sys_load_topic(name, window), format!("{value:.2}")));
            }
        }
        if let Some((current, maximum)) = heap() {
            out.push(("$SYS/broker/heap/current", current.to_string()));
            out.push(("$SYS/broker/heap/maximum", maximum.to_string()));
        }
        if let Some(p) = persist::figures() {
            let failing = u8::from(p.holding > 0).to_string();
            out.push(("$SYS/broker/persistence/failing", failing));
            let failures = p.write_failures.to_string();
            out.push(("$SYS/broker/persistence/write_failures", failures));
            let failures = p.compaction_failures.to_string();
            out.push(("$SYS/broker/persistence/compaction_failures", failures));
        }
        out
    }
}

/// The process's heap in use (glibc's `mallinfo2`: bytes in allocated chunks, plus
/// mmapped ones) and the most seen, for `$SYS/broker/heap/*` (Mosquitto's memory
/// tracking); `None` on other C libraries.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap() -> Option<(u64, u64)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static MAXIMUM: AtomicU64 = AtomicU64::new(0);
    // SAFETY: mallinfo2 only reads the allocator's statistics; it takes no pointers.
    let info = unsafe { libc::mallinfo2() };
    let current = (info.uordblks as u64).saturating_add(info.hblkhd as u64);
    let maximum = MAXIMUM.fetch_max(current, Ordering::Relaxed).max(current);
    Some((current, maximum))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap() -> Option<(u64, u64)> {
    None
}

/// `$SYS/broker/load/<name>/<window>` as a static string (the set is closed).
fn sys_load_topic(name: &str, window: &str) -> &'static str {
    macro_rules! table {
        ($($n:literal),*) => {
            match (name, window) {
                $(
                    ($n, "1min") => concat!("$SYS/broker/load/", $n, "/1min"),
                    ($n, "5min") => concat!("$SYS/broker/load/", $n, "/5min"),
                    ($n, "15min") => concat!("$SYS/broker/load/", $n, "/15min"),
                )*
                _ => "$SYS/broker/load/unknown",
            }
        };
    }
    table!(
        "messages/received",
        "messages/sent",
        "publish/received",
        "publish/sent",
        "bytes/received",
        "bytes/sent",
        "connections",
        "publish/dropped",
        "sockets"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_average_converges_to_rate() {
        let t0 = Instant::now();
        let mut s = Stats::new(t0);
        s.update_load(t0);
        for i in 1..=200u64 {
            s.messages_received = i * 600; // 600 per 10 s = 3600 per minute
            s.update_load(t0 + Duration::from_secs(i * 10));
        }
        assert!(
            (s.load_received.one - 3600.0).abs() < 1.0,
            "{:?}",
            s.load_received
        );
    }

    #[test]
    fn sys_topics_are_mosquitto_names() {
        let t0 = Instant::now();
        let s = Stats::new(t0);
        let msgs = s.sys_messages(t0 + Duration::from_secs(5));
        let find = |t: &str| msgs.iter().find(|(n, _)| *n == t).map(|(_, v)| v.clone());
        assert_eq!(find("$SYS/broker/uptime").as_deref(), Some("5 seconds"));
        assert!(find("$SYS/broker/load/messages/received/15min").is_some());
        assert!(find("$SYS/broker/retained messages/count").is_some());
    }
}
