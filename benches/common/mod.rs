//! Set-up shared by the benchmarks: the topic-index shapes of `topic.rs` and the 1,000
//! subscriber fan-out broker of `fanout.rs`, also driven by `instructions.rs`.
#![allow(dead_code, clippy::unwrap_used)] // each benchmark uses part of it

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shardmq::internals::broker::{Broker, ConnId};
use shardmq::internals::codec::{
    encode, ByteStr, Connect, Packet, Properties, PropertyValues, ProtocolVersion, Publish, QoS,
    Subscribe, SubscriptionOptions,
};
use shardmq::internals::topic::{TopicFilter, TopicIndex};
use shardmq::Config;
use smallvec::smallvec;

#[derive(Clone, Copy)]
pub enum Shape {
    /// "s/{a}/{b}"
    Exact,
    /// "s/{a}/+/{b}"
    Plus,
    /// "s/{a}/{b}/#"
    Hash,
}

impl Shape {
    pub const ALL: [Self; 3] = [Self::Exact, Self::Plus, Self::Hash];

    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Plus => "plus",
            Self::Hash => "hash",
        }
    }

    fn filter(self, a: usize, b: usize) -> String {
        match self {
            Self::Exact => format!("s/{a}/{b}"),
            Self::Plus => format!("s/{a}/+/{b}"),
            Self::Hash => format!("s/{a}/{b}/#"),
        }
    }

    fn topic(self, a: usize, b: usize) -> String {
        match self {
            Self::Exact => format!("s/{a}/{b}"),
            Self::Plus => format!("s/{a}/dev7/{b}"),
            Self::Hash => format!("s/{a}/{b}/x/y"),
        }
    }
}

/// An index of `n` subscriptions of `shape`.
pub fn build<S: BuildHasher + Default>(shape: Shape, n: usize) -> TopicIndex<usize, u8, S> {
    let mut idx = TopicIndex::default();
    for i in 0..n {
        let filter = shape.filter(i / 1000, i % 1000);
        if let Ok(f) = TopicFilter::parse(&filter) {
            idx.insert(&f, i, 0);
        }
    }
    idx
}

/// 1024 topics that each match exactly one subscription of an index of `n`, spread over
/// the whole index by a small LCG.
pub fn topics(shape: Shape, n: usize) -> Vec<String> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..1024)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let i = (x >> 33) as usize % n;
            shape.topic(i / 1000, i % 1000)
        })
        .collect()
}

pub const SUBSCRIBERS: usize = 1000;

fn connect_and_subscribe(
    b: &mut Broker,
    conn: ConnId,
    version: ProtocolVersion,
    filter: &str,
    topic_alias_maximum: Option<u16>,
    now: Instant,
) {
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    b.on_accept(conn, peer, 0, now);
    let mut buf = BytesMut::new();
    let connect = Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 0,
        client_id: ByteStr::from(format!("c{conn}")),
        will: None,
        username: None,
        password: None,
        properties: Properties::from(PropertyValues {
            topic_alias_maximum,
            ..PropertyValues::default()
        }),
    }));
    encode(&connect, version, &mut buf).unwrap();
    if !filter.is_empty() {
        let sub = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: smallvec![(ByteStr::from(filter), SubscriptionOptions::default())],
            properties: Properties::default(),
        });
        encode(&sub, version, &mut buf).unwrap();
    }
    b.on_read(conn, &mut buf, now);
}

/// Drains every output queue; returns the bytes queued.
pub fn drain(b: &mut Broker) -> usize {
    let mut n = 0;
    while let Some(conn) = b.poll_transmit() {
        if let Some(out) = b.output(conn) {
            n += out.len();
            out.clear();
        }
    }
    n
}

/// A one-shard broker with [`SUBSCRIBERS`] subscribers (half on `fan/out/topic`, half on
/// `fan/+/topic`; every `v5_every`-th on MQTT 5, none when 0) and one publisher, plus the
/// encoded QoS 0 PUBLISH that reaches them all.
pub struct Fanout {
    pub broker: Broker,
    pub publisher: ConnId,
    pub frame: BytesMut,
    pub now: Instant,
}

impl Fanout {
    pub fn new(v5_every: usize) -> Self {
        Self::with_topic_aliases(v5_every, None)
    }

    /// As [`Fanout::new`], the MQTT 5 subscribers announcing Topic Alias Maximum
    /// `aliases` (the broker then sends them the topic once, then its alias).
    pub fn with_topic_aliases(v5_every: usize, aliases: Option<u16>) -> Self {
        let now = Instant::now();
        let config = Config {
            sys_interval: Duration::ZERO,
            ..Config::default()
        };
        let mut b = Broker::new(Arc::new(config), now);
        for conn in 0..SUBSCRIBERS {
            let version = if v5_every != 0 && conn % v5_every == 0 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V311
            };
            let filter = if conn % 2 == 0 {
                "fan/out/topic"
            } else {
                "fan/+/topic"
            };
            let aliases = if version == ProtocolVersion::V5 {
                aliases
            } else {
                None
            };
            connect_and_subscribe(&mut b, conn, version, filter, aliases, now);
        }
        let publisher = SUBSCRIBERS;
        connect_and_subscribe(&mut b, publisher, ProtocolVersion::V311, "", None, now);
        drain(&mut b);
        let mut frame = BytesMut::new();
        let p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteStr::from("fan/out/topic"),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::from_static(b"0123456789abcdef"),
        };
        encode(&Packet::Publish(p), ProtocolVersion::V311, &mut frame).unwrap();
        Self {
            broker: b,
            publisher,
            frame,
            now,
        }
    }

    /// One publish to every subscriber; returns the bytes queued.
    pub fn publish_once(&mut self) -> usize {
        let mut buf = self.frame.clone();
        self.broker.on_read(self.publisher, &mut buf, self.now);
        drain(&mut self.broker)
    }
}
