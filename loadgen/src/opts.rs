//! Command line: one subcommand per scenario (and per Open MQTT Benchmark Suite preset),
//! all sharing one set of flags, resolved once into a `Plan` the workers read. It owns
//! defaults and validation; it never opens sockets.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::path::PathBuf;

use crate::stamp::STAMP_LEN;
use crate::wire::Version;

#[derive(Parser, Debug)]
#[command(
    name = "shardmq-loadgen",
    version,
    about = "MQTT 3.1.1/5.0 load generator: loss, order and end-to-end latency, closed or open loop"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// N publishers -> M subscribers on one topic (default 8 -> 1).
    FanIn(Opts),
    /// 1 publisher -> N subscribers on one topic (default 1 -> 100).
    FanOut(Opts),
    /// N publisher/subscriber pairs, each pair on its own topic (default 100).
    Pairs(Opts),
    /// MQTT 5 shared subscription: N publishers -> M subscribers in `$share/GROUP/...`.
    Shared(Opts),
    /// Open and hold N idle connections at --connect-rate; reports connect latency and
    /// (with --broker-pid) broker memory per connection.
    Conn(Opts),
    /// --connections clients each looping connect / CONNACK / DISCONNECT.
    Churn(Opts),
    /// mqttbs singlenode-fanout-5-1000-5-250K: 5 pubs (50 msg/s each, QoS 1, 16 B) on 5
    /// topics, 1000 subs on all 5 topics (subscribers scaled by --scale).
    #[command(name = "fanout-5-1000-5-250K")]
    Fanout5k(Opts),
    /// mqttbs singlenode-p2p-50K-50K-50K-50K: 50K pairs, QoS 1, 1 msg/s each, 16 B.
    #[command(name = "p2p-50K")]
    P2p50k(Opts),
    /// mqttbs singlenode-sharesub-50K-500-50K-50K: 50K pubs on test/N at 1 msg/s, QoS 1,
    /// 500 subs on `$share/benchmark/test/#`, MQTT 5.
    #[command(name = "sharesub-50K-500")]
    Sharesub50k(Opts),
    /// mqttbs singlenode-conn-tcp-1M-5K: 1M connections at 5K/s, MQTT 3.1.1, keepalive 300.
    #[command(name = "conn-tcp-1M-5K")]
    ConnTcp1m(Opts),
}

#[derive(Args, Debug, Clone)]
pub struct Opts {
    /// Broker host (IPv4 address or name resolving to one).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    #[arg(long)]
    pub protocol: Option<u8>,
    #[arg(long)]
    pub publishers: Option<usize>,
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Publisher/subscriber pairs (pairs scenario).
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Distinct topics; publisher i publishes to topic i % topics.
    #[arg(long)]
    pub topics: Option<usize>,
    #[arg(long)]
    pub qos: Option<u8>,
    /// Payload bytes (at least 16: stream id, sequence, timestamp).
    #[arg(long)]
    pub payload: Option<usize>,
    /// Base topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Number of levels in each topic (base levels padded with l1/l2/...).
    #[arg(long)]
    pub topic_depth: Option<usize>,
    /// Persistent sessions (clean session 0 / clean start 0 + session expiry 300 s).
    #[arg(long)]
    pub persistent: bool,
    /// Measured seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of publishing before measuring (excluded from stats).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Seconds to wait after publishers stop for in-flight messages.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// Closed loop: messages a publisher may have sent but not yet seen received.
    #[arg(long, default_value_t = 100)]
    pub inflight: usize,
    /// Open loop: messages per second per publisher (latency from the intended send time).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Pause (microseconds) after an event-loop turn that moved few messages, so more
    /// accumulate per wakeup. Default 200 in closed loop at QoS 0; 0 in open loop (latency
    /// runs) and at QoS 1/2 (where acknowledgement round trips bound throughput). With many
    /// ready sockets holding few messages each it is one such pause per 50 (at most 20).
    #[arg(long)]
    pub coalesce_us: Option<f64>,
    /// Open loop: messages due within this many microseconds of a wakeup are sent with it
    /// (stamped with their actual, earlier, send time), saving wakeups.
    #[arg(long, default_value_t = 100.0)]
    pub timer_slack_us: f64,
    /// Event-loop threads (clients are spread over them).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Connections (conn, churn).
    #[arg(long)]
    pub connections: Option<usize>,
    /// New connections per second over all threads (0 = as fast as possible).
    #[arg(long)]
    pub connect_rate: Option<f64>,
    /// Local addresses to bind client sockets to, round robin (e.g. 127.0.0.1,127.0.0.2).
    #[arg(long, value_delimiter = ',')]
    pub bind: Vec<Ipv4Addr>,
    /// Keep alive seconds in CONNECT.
    #[arg(long)]
    pub keepalive: Option<u16>,
    /// Broker process id: report its CPU time and memory.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write throughput over time and the latency percentile curve as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Preset scale factor (e.g. 0.01 on a small machine).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Shared subscription group name.
    #[arg(long)]
    pub group: Option<String>,
    /// Client id prefix (default lg<pid>, or "lg" with --persistent).
    #[arg(long)]
    pub client_prefix: Option<String>,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
    /// No progress line each second.
    #[arg(long)]
    pub quiet: bool,
    /// MQTT over WebSockets (the broker's websockets listener on --port).
    #[arg(long)]
    pub ws: bool,
    /// Request path of the WebSocket upgrade (with --ws).
    #[arg(long, default_value = "/mqtt")]
    pub ws_path: String,
}

/// What kind of worker loop a scenario needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    PubSub,
    Conn,
    Churn,
}

/// Which topics a subscriber subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubMode {
    /// Every subscriber subscribes to every topic.
    AllTopics,
    /// Subscriber j subscribes to topic j % topics only.
    OneEach,
    /// Every subscriber joins one shared group over all topics.
    Shared,
}

/// The resolved run: everything a worker needs, immutable once built.
#[derive(Clone, Debug)]
pub struct Plan {
    pub scenario: String,
    pub kind: Kind,
    pub version: Version,
    pub addr: SocketAddrV4,
    pub publishers: usize,
    pub subscribers: usize,
    pub connections: usize,
    pub topics: usize,
    pub sub_mode: SubMode,
    pub qos: u8,
    pub payload: usize,
    pub topic_prefix: String,
    pub group: String,
    pub clean: bool,
    pub keepalive: u16,
    pub duration: f64,
    pub warmup: f64,
    pub drain: f64,
    pub inflight: usize,
    pub rate: Option<f64>,
    pub threads: usize,
    pub coalesce_us: f64,
    pub timer_slack_us: f64,
    pub connect_rate: f64,
    pub bind: Vec<Ipv4Addr>,
    pub broker_pid: Option<u32>,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub client_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub quiet: bool,
    /// MQTT over WebSockets: the upgrade's request path.
    pub ws: Option<String>,
    pub command_line: String,
}

impl Plan {
    /// Topic publisher `i` publishes to.
    pub fn topic(&self, t: usize) -> String {
        format!("{}/{}", self.topic_prefix, t % self.topics.max(1))
    }

    /// Filters subscriber `j` subscribes to.
    pub fn filters(&self, j: usize) -> Vec<String> {
        match self.sub_mode {
            SubMode::OneEach => vec![self.topic(j)],
            SubMode::AllTopics if self.topics <= 16 => {
                (0..self.topics).map(|t| self.topic(t)).collect()
            }
            SubMode::AllTopics => vec![format!("{}/+", self.topic_prefix)],
            SubMode::Shared => vec![format!("$share/{}/{}/#", self.group, self.topic_prefix)],
        }
    }

    /// How many subscribers receive each message of publisher `i`.
    pub fn fanout(&self, i: usize) -> u64 {
        let s = self.subscribers;
        match self.sub_mode {
            SubMode::AllTopics => s as u64,
            SubMode::Shared => u64::from(s > 0),
            SubMode::OneEach => {
                let n = self.topics.max(1);
                let t = i % n;
                (s / n + usize::from(t < s % n)) as u64
            }
        }
    }

    /// Publishers only (fan-in --subscribers 0): throughput is what the broker
    /// acknowledged (QoS 1/2) or was sent (QoS 0); no end-to-end latency.
    pub fn publishers_only(&self) -> bool {
        self.kind == Kind::PubSub && self.subscribers == 0
    }

    pub fn is_open_loop(&self) -> bool {
        self.rate.is_some()
    }
}

fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale).round() as usize).max(1)
}

/// Resolves a subcommand and its flags into a `Plan` (presets fill what the user left).
pub fn resolve(cmd: Cmd, command_line: String) -> Result<Plan> {
    struct D {
        name: &'static str,
        kind: Kind,
        p: usize,
        s: usize,
        t: Option<usize>,
        mode: SubMode,
        qos: u8,
        rate: Option<f64>,
        v: u8,
        keepalive: u16,
        conns: usize,
        crate_: f64,
        prefix: &'static str,
        group: &'static str,
    }
    let base = D {
        name: "",
        kind: Kind::PubSub,
        p: 1,
        s: 1,
        t: Some(1),
        mode: SubMode::AllTopics,
        qos: 0,
        rate: None,
        v: 4,
        keepalive: 60,
        conns: 0,
        crate_: 0.0,
        prefix: "lg/bench",
        group: "g",
    };
    let (o, d) = match cmd {
        Cmd::FanIn(o) => (
            o,
            D {
                name: "fan-in",
                p: 8,
                s: 1,
                ..base
            },
        ),
        Cmd::FanOut(o) => (
            o,
            D {
                name: "fan-out",
                p: 1,
                s: 100,
                ..base
            },
        ),
        Cmd::Pairs(o) => {
            let n = o.pairs.unwrap_or(100);
            (
                o,
                D {
                    name: "pairs",
                    p: n,
                    s: n,
                    t: None,
                    mode: SubMode::OneEach,
                    ..base
                },
            )
        }
        Cmd::Shared(o) => (
            o,
            D {
                name: "shared",
                p: 8,
                s: 4,
                t: None,
                mode: SubMode::Shared,
                v: 5,
                ..base
            },
        ),
        Cmd::Conn(o) => (
            o,
            D {
                name: "conn",
                kind: Kind::Conn,
                conns: 1000,
                ..base
            },
        ),
        Cmd::Churn(o) => (
            o,
            D {
                name: "churn",
                kind: Kind::Churn,
                conns: 10,
                ..base
            },
        ),
        Cmd::Fanout5k(o) => {
            let s = scaled(1000, o.scale);
            (
                o,
                D {
                    name: "fanout-5-1000-5-250K",
                    p: 5,
                    s,
                    t: Some(5),
                    qos: 1,
                    rate: Some(50.0),
                    keepalive: 300,
                    ..base
                },
            )
        }
        Cmd::P2p50k(o) => {
            let n = scaled(50_000, o.scale);
            (
                o,
                D {
                    name: "p2p-50K",
                    p: n,
                    s: n,
                    t: None,
                    mode: SubMode::OneEach,
                    qos: 1,
                    rate: Some(1.0),
                    keepalive: 300,
                    ..base
                },
            )
        }
        Cmd::Sharesub50k(o) => {
            let (p, s) = (scaled(50_000, o.scale), scaled(500, o.scale));
            let d = D {
                name: "sharesub-50K-500",
                p,
                s,
                t: None,
                mode: SubMode::Shared,
                qos: 1,
                rate: Some(1.0),
                v: 5,
                keepalive: 300,
                prefix: "test",
                group: "benchmark",
                ..base
            };
            (o, d)
        }
        Cmd::ConnTcp1m(o) => {
            let (n, r) = (scaled(1_000_000, o.scale), scaled(5000, o.scale) as f64);
            (
                o,
                D {
                    name: "conn-tcp-1M-5K",
                    kind: Kind::Conn,
                    conns: n,
                    crate_: r,
                    keepalive: 300,
                    ..base
                },
            )
        }
    };
    let version_level = o.protocol.unwrap_or(d.v);
    let Some(version) = Version::from_level(version_level) else {
        bail!("--protocol must be 4 (MQTT 3.1.1) or 5, not {version_level}");
    };
    let (mut publishers, mut subscribers) =
        (o.publishers.unwrap_or(d.p), o.subscribers.unwrap_or(d.s));
    if d.mode == SubMode::OneEach {
        if let Some(n) = o.pairs {
            publishers = n;
            subscribers = n;
        }
    }
    if d.mode == SubMode::Shared && version != Version::V5 {
        bail!("shared subscriptions need --protocol 5");
    }
    let topics = o.topics.or(d.t).unwrap_or(publishers).max(1);
    let qos = o.qos.unwrap_or(d.qos);
    if qos > 2 {
        bail!("--qos must be 0, 1 or 2");
    }
    let payload = o.payload.unwrap_or(16);
    if payload < STAMP_LEN {
        bail!("--payload must be at least {STAMP_LEN} bytes (stream id, sequence, timestamp)");
    }
    if d.kind == Kind::PubSub && publishers == 0 {
        bail!("need at least one publisher");
    }
    // fan-in with no subscriber measures ingestion (publishers only, acknowledgements at
    // QoS 1/2); every other messaging scenario needs someone to deliver to.
    if d.kind == Kind::PubSub && subscribers == 0 && d.name != "fan-in" {
        bail!(
            "{} needs at least one subscriber (only fan-in takes --subscribers 0)",
            d.name
        );
    }
    if o.threads == 0 || o.inflight == 0 {
        bail!("--threads and --inflight must be at least 1");
    }
    if o.duration.is_nan()
        || o.duration <= 0.0
        || o.warmup.is_nan()
        || o.warmup < 0.0
        || o.drain.is_nan()
        || o.drain < 0.0
    {
        bail!("--duration must be > 0, --warmup and --drain >= 0");
    }
    if let Some(r) = o.rate {
        if r.is_nan() || r <= 0.0 {
            bail!("--rate must be > 0 messages per second per publisher");
        }
    }
    let mut prefix = o.topic.clone().unwrap_or_else(|| d.prefix.to_string());
    if let Some(depth) = o.topic_depth {
        // final level is the topic index; pad the base to depth - 1 levels
        let mut levels = prefix.split('/').count();
        let mut k = 1;
        while levels + 1 < depth {
            prefix.push_str(&format!("/l{k}"));
            levels += 1;
            k += 1;
        }
    }
    let addr = (o.host.as_str(), o.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve broker host {}", o.host))?
        .find_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .with_context(|| format!("{} has no IPv4 address", o.host))?;
    let clean = !o.persistent;
    let client_prefix = o.client_prefix.clone().unwrap_or_else(|| {
        if clean {
            format!("lg{}", std::process::id())
        } else {
            "lg".to_string()
        }
    });
    Ok(Plan {
        scenario: d.name.to_string(),
        kind: d.kind,
        version,
        addr,
        publishers: if d.kind == Kind::PubSub {
            publishers
        } else {
            0
        },
        subscribers: if d.kind == Kind::PubSub {
            subscribers
        } else {
            0
        },
        connections: o.connections.unwrap_or(d.conns),
        topics,
        sub_mode: d.mode,
        qos,
        payload,
        topic_prefix: prefix,
        group: o.group.clone().unwrap_or_else(|| d.group.to_string()),
        clean,
        keepalive: o.keepalive.unwrap_or(d.keepalive),
        duration: o.duration,
        warmup: o.warmup,
        drain: o.drain,
        inflight: o.inflight.min(65_000),
        rate: o.rate.or(d.rate),
        threads: o.threads,
        coalesce_us: o
            .coalesce_us
            // QoS 1/2 throughput is bounded by the broker's inflight window divided by the
            // acknowledgement round trip: a pause there measures the pause, not the broker.
            .unwrap_or(if o.rate.or(d.rate).is_some() || qos > 0 {
                0.0
            } else {
                200.0
            })
            .max(0.0),
        timer_slack_us: o.timer_slack_us.max(0.0),
        connect_rate: o.connect_rate.unwrap_or(d.crate_),
        bind: o.bind.clone(),
        broker_pid: o.broker_pid,
        json: o.json.clone(),
        plot: o.plot.clone(),
        client_prefix,
        username: o.username.clone(),
        password: o.password.clone(),
        quiet: o.quiet,
        ws: o.ws.then(|| o.ws_path.clone()),
        command_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Plan {
        let mut v = vec!["shardmq-loadgen"];
        v.extend_from_slice(args);
        let cli = Cli::try_parse_from(v).unwrap();
        resolve(cli.cmd, String::new()).unwrap()
    }

    #[test]
    fn fan_in_interface_scripts_use() {
        let p = plan(&[
            "fan-in",
            "--host",
            "127.0.0.1",
            "--port",
            "1883",
            "--publishers",
            "8",
            "--subscribers",
            "1",
            "--qos",
            "0",
            "--payload",
            "16",
            "--duration",
            "10",
            "--json",
            "out.json",
        ]);
        assert_eq!(
            (p.publishers, p.subscribers, p.qos, p.payload),
            (8, 1, 0, 16)
        );
        assert_eq!(p.fanout(3), 1);
        assert_eq!(p.filters(0), vec!["lg/bench/0".to_string()]);
    }

    #[test]
    fn fan_in_without_subscribers_is_publishers_only() {
        let p = plan(&[
            "fan-in",
            "--publishers",
            "4",
            "--subscribers",
            "0",
            "--qos",
            "1",
        ]);
        assert!(p.publishers_only());
        assert_eq!((p.publishers, p.subscribers, p.qos), (4, 0, 1));
        // Nobody receives: no delivery is expected, so none can be counted lost.
        assert_eq!(p.fanout(0), 0);
        assert_eq!(p.fanout(3), 0);
        assert!(!plan(&["fan-in"]).publishers_only());
        assert!(!plan(&["conn"]).publishers_only());
        // Only fan-in accepts it; no publisher is never accepted.
        for args in [
            &["fan-out", "--subscribers", "0"][..],
            &["pairs", "--pairs", "0"],
            &["shared", "--subscribers", "0"],
            &["fan-in", "--publishers", "0", "--subscribers", "0"],
        ] {
            let mut v = vec!["x"];
            v.extend_from_slice(args);
            let cli = Cli::try_parse_from(v).unwrap();
            assert!(resolve(cli.cmd, String::new()).is_err(), "{args:?}");
        }
    }

    #[test]
    fn presets_scale() {
        let p = plan(&["fanout-5-1000-5-250K", "--scale", "0.01"]);
        assert_eq!(
            (p.publishers, p.subscribers, p.topics, p.qos),
            (5, 10, 5, 1)
        );
        assert_eq!(p.filters(0).len(), 5);
        assert_eq!(p.fanout(4), 10);
        let p = plan(&["p2p-50K", "--scale", "0.01"]);
        assert_eq!((p.publishers, p.subscribers, p.topics), (500, 500, 500));
        assert_eq!(p.fanout(7), 1);
        assert_eq!(p.filters(7), vec!["lg/bench/7".to_string()]);
        let p = plan(&["sharesub-50K-500", "--scale", "0.01"]);
        assert_eq!(
            (p.publishers, p.subscribers, p.version),
            (500, 5, Version::V5)
        );
        assert_eq!(p.filters(0), vec!["$share/benchmark/test/#".to_string()]);
        let p = plan(&["conn-tcp-1M-5K", "--scale", "0.001"]);
        assert_eq!(
            (p.connections, p.connect_rate, p.keepalive),
            (1000, 5.0, 300)
        );
    }

    #[test]
    fn topic_depth_pads_levels() {
        let p = plan(&["fan-in", "--topic", "a", "--topic-depth", "4"]);
        assert_eq!(p.topic(0), "a/l1/l2/0");
    }

    #[test]
    fn rejects_bad_flags() {
        for args in [
            &["fan-in", "--payload", "8"][..],
            &["fan-in", "--qos", "3"],
            &["shared", "--protocol", "4"],
            &["fan-in", "--protocol", "3"],
        ] {
            let mut v = vec!["x"];
            v.extend_from_slice(args);
            let cli = Cli::try_parse_from(v).unwrap();
            assert!(resolve(cli.cmd, String::new()).is_err(), "{args:?}");
        }
    }
}
