//! Test harness without sockets (quinn's `Pair`, broker-sized): one [`Broker`], a virtual
//! clock and in-memory clients that encode packets with the codec and decode whatever the
//! broker wrote to them. `drive()` runs the driver contract until nothing is pending.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use smallvec::smallvec;

use crate::codec::{
    self, Ack, AckKind, ByteStr, ConnAck, Connect, Packet, PacketId, Properties, ProtocolVersion,
    Publish, QoS, SubAck, Subscribe, SubscriptionOptions, Will,
};
use crate::config::Config;

use crate::broker::{Broker, ConnId};

pub struct Client {
    pub version: ProtocolVersion,
    /// Bytes written by the broker and not decoded yet.
    pub wire: BytesMut,
    pub received: VecDeque<Packet>,
    /// Closed by the broker (`poll_close`).
    pub closed: bool,
    /// Bytes the broker wrote to it.
    pub bytes: usize,
}

pub struct Harness {
    pub broker: Broker,
    pub now: Instant,
    pub clients: HashMap<ConnId, Client>,
    /// Connections whose socket does not accept writes (output stays queued).
    pub stalled: std::collections::HashSet<ConnId>,
    /// Connections `poll_transmit` yielded, in order.
    pub transmitted: Vec<ConnId>,
    next_conn: ConnId,
}

impl Harness {
    pub fn new(config: Config) -> Self {
        Self::new_shard(config, 0, 1, &crate::broker::InterestTable::new())
    }

    /// The `n` shards of one broker, sharing its interest table (see `shards.rs` for the
    /// mesh that connects them).
    pub fn new_shards(config: &Config, n: usize) -> Vec<Self> {
        let table = crate::broker::InterestTable::new();
        (0..n)
            .map(|i| Self::new_shard(config.clone(), i, n, &table))
            .collect()
    }

    /// Shard `shard` of `shards`, with the interest table its sibling shards share.
    pub fn new_shard(
        config: Config,
        shard: usize,
        shards: usize,
        table: &Arc<crate::broker::InterestTable>,
    ) -> Self {
        let now = Instant::now();
        Self {
            broker: Broker::new_shard(Arc::new(config), shard, shards, table, now),
            now,
            clients: HashMap::new(),
            stalled: Default::default(),
            transmitted: Vec::new(),
            next_conn: 0,
        }
    }

    pub fn default_config() -> Config {
        Config {
            sys_interval: Duration::ZERO,
            ..Config::default()
        }
    }

    /// A new TCP connection (no CONNECT yet).
    pub fn open(&mut self, version: ProtocolVersion) -> ConnId {
        self.open_on(version, 0)
    }

    /// A new TCP connection on the config's listener `listener`.
    pub fn open_on(&mut self, version: ProtocolVersion, listener: usize) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        let peer: SocketAddr = format!("127.0.0.1:{}", 40000 + conn).parse().unwrap();
        self.broker.on_accept(conn, peer, listener, self.now);
        self.clients.insert(
            conn,
            Client {
                version,
                wire: BytesMut::new(),
                received: VecDeque::new(),
                closed: false,
                bytes: 0,
            },
        );
        conn
    }

    pub fn send_bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        let mut buf = BytesMut::from(bytes);
        self.broker.on_read(conn, &mut buf, self.now);
        assert!(buf.is_empty(), "broker left {} bytes", buf.len());
        self.drive();
    }

    #[allow(clippy::needless_pass_by_value)] // test API: callers build packets inline
    pub fn send(&mut self, conn: ConnId, packet: Packet) {
        let version = self.clients[&conn].version;
        let mut buf = BytesMut::new();
        codec::encode(&packet, version, &mut buf).unwrap();
        self.send_bytes(conn, &buf);
    }

    /// The client's socket closes without DISCONNECT.
    pub fn drop_conn(&mut self, conn: ConnId) {
        self.broker.on_closed(conn, self.now);
        if let Some(c) = self.clients.get_mut(&conn) {
            c.closed = true;
        }
        self.drive();
    }

    /// Runs steps 2 and 3 of the driver contract until nothing is pending.
    pub fn drive(&mut self) {
        loop {
            let mut progress = false;
            if self.broker.has_deferred_work() && self.broker.run_deferred(self.now) {
                progress = true;
            }
            while let Some(conn) = self.broker.poll_transmit() {
                progress = true;
                self.transmitted.push(conn);
                if !self.stalled.contains(&conn) {
                    self.flush(conn);
                }
            }
            while let Some(conn) = self.broker.poll_close() {
                progress = true;
                self.flush(conn);
                if let Some(c) = self.clients.get_mut(&conn) {
                    c.closed = true;
                }
            }
            if !progress {
                break;
            }
        }
    }

    /// Step 2 and 3 of the driver contract once (output and closes), without the deferred
    /// work `drive` runs to the end.
    pub fn drive_output(&mut self) {
        while let Some(conn) = self.broker.poll_transmit() {
            self.transmitted.push(conn);
            if !self.stalled.contains(&conn) {
                self.flush(conn);
            }
        }
        while let Some(conn) = self.broker.poll_close() {
            self.flush(conn);
            if let Some(c) = self.clients.get_mut(&conn) {
                c.closed = true;
            }
        }
    }

    /// The socket of `conn` accepts writes again.
    pub fn unstall(&mut self, conn: ConnId) {
        self.stalled.remove(&conn);
        self.flush(conn);
        self.drive();
    }

    fn flush(&mut self, conn: ConnId) {
        let Some(out) = self.broker.output(conn) else {
            return;
        };
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        while !out.is_empty() {
            let mut written = 0;
            {
                let mut iov = [std::io::IoSlice::new(&[]); 64];
                let n = out.io_slices(&mut iov);
                for s in &iov[..n] {
                    client.wire.extend_from_slice(s);
                    written += s.len();
                }
                client.bytes += written;
            }
            out.consume(written);
        }
        while let Some(p) = codec::decode(&mut client.wire, client.version, 0).unwrap() {
            client.received.push_back(p);
        }
        self.broker.on_writable(conn, self.now);
    }

    /// Advances the virtual clock, firing due timers.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.broker.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.broker.on_timeout(self.now);
            self.drive();
        }
        self.now = end;
        self.broker.on_timeout(self.now);
        self.drive();
    }

    pub fn recv(&mut self, conn: ConnId) -> Option<Packet> {
        self.clients.get_mut(&conn)?.received.pop_front()
    }

    pub fn expect(&mut self, conn: ConnId) -> Packet {
        self.recv(conn)
            .unwrap_or_else(|| panic!("connection {conn} received nothing"))
    }

    pub fn expect_publish(&mut self, conn: ConnId) -> Publish {
        match self.expect(conn) {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    pub fn expect_ack(&mut self, conn: ConnId, kind: AckKind) -> Ack {
        match self.expect(conn) {
            Packet::Ack(a) if a.kind == kind => a,
            other => panic!("expected {kind:?}, got {other:?}"),
        }
    }

    pub fn assert_idle(&mut self, conn: ConnId) {
        assert!(
            self.clients[&conn].received.is_empty(),
            "unexpected: {:?}",
            self.clients[&conn].received
        );
    }

    pub fn is_closed(&self, conn: ConnId) -> bool {
        self.clients[&conn].closed
    }

    /// Opens a connection and sends `connect`; returns the connection and its CONNACK.
    pub fn connect_with(&mut self, connect: Connect) -> (ConnId, ConnAck) {
        let conn = self.open(connect.protocol);
        self.send(conn, Packet::Connect(Box::new(connect)));
        match self.expect(conn) {
            Packet::ConnAck(a) => (conn, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// CONNECT with `id`, clean start and keep alive 60; asserts success.
    pub fn connect(&mut self, id: &str, version: ProtocolVersion) -> ConnId {
        let (conn, ack) = self.connect_with(connect(id, version, true));
        assert_eq!(ack.reason.0, 0, "CONNACK {ack:?}");
        conn
    }

    pub fn subscribe(&mut self, conn: ConnId, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_opts(
            conn,
            filter,
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
            None,
        )
    }

    pub fn subscribe_opts(
        &mut self,
        conn: ConnId,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> SubAck {
        let mut properties = Properties::default();
        if let Some(id) = id {
            properties.subscription_identifiers.push(id);
        }
        self.send(
            conn,
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: smallvec![(ByteStr::from(filter), options)],
                properties,
            }),
        );
        match self.expect(conn) {
            Packet::SubAck(a) => a,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub fn publish(
        &mut self,
        conn: ConnId,
        topic: &str,
        payload: &'static [u8],
        qos: QoS,
        retain: bool,
        id: Option<PacketId>,
    ) {
        self.send(
            conn,
            Packet::Publish(publish(topic, payload, qos, retain, id)),
        );
    }

    pub fn ack(&mut self, conn: ConnId, kind: AckKind, packet_id: PacketId) {
        self.send(conn, ack(kind, packet_id));
    }
}

pub fn connect(id: &str, version: ProtocolVersion, clean: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 60,
        client_id: ByteStr::from(id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

pub fn will(topic: &str, payload: &'static [u8], qos: QoS, retain: bool) -> Will {
    Will {
        topic: ByteStr::from(topic),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: Properties::default(),
    }
}

pub fn publish(
    topic: &str,
    payload: &'static [u8],
    qos: QoS,
    retain: bool,
    id: Option<PacketId>,
) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: ByteStr::from(topic),
        packet_id: id,
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    }
}

pub fn ack(kind: AckKind, packet_id: PacketId) -> Packet {
    Packet::Ack(Ack {
        kind,
        packet_id,
        reason: codec::ReasonCode::SUCCESS,
        properties: Properties::default(),
    })
}
