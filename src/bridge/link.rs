//! One bridge connection as a sans-IO relay between two MQTT client sessions: the
//! *remote* one (CONNECT to the other broker, subscriptions for `in` lines) and the
//! *local* one (CONNECT to this broker as a trusted member, MQTT 5, subscriptions for
//! `out` lines with No Local). The runtime moves bytes: [`Link::remote_out`] to the
//! socket, [`Link::local_out`] into `Broker::on_read`, and what it reads from either
//! side into [`Link::on_remote`] / [`Link::on_local`].
//!
//! QoS 1/2 end to end: a message is acknowledged to the side it came from only after
//! the other side acknowledged it (PUBACK, or PUBREC for QoS 2), so nothing acknowledged
//! is lost when either end restarts: unacknowledged messages are sent again by the
//! sender's session (both sessions are persistent by default). While the remote is down
//! the local session is offline, so the broker queues `out` messages for it, bounded by
//! `max_queued_messages` / `max_queued_bytes` and persisted with `persistence true`.
//!
//! Loops: the local subscriptions have No Local (a message the bridge brought in never
//! goes back out); remotely, `try_private` sets Mosquitto's bridge bit and MQTT 5
//! subscriptions have No Local. It never does IO, reads the clock, or panics on input:
//! a remote that sends garbage is an error string for the runtime to log and retry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use smallvec::smallvec;

use super::topics::TopicMap;
use super::Settings;
use crate::codec::{
    self, Ack, AckKind, ByteStr, ConnAck, Connect, Packet, PacketId, Properties, ProtocolVersion,
    Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions, Unsubscribe, Will,
};

/// Largest packet accepted from either side (the remote's are checked by the broker
/// again when they are published locally).
const MAX_IN: u32 = 256 * 1024 * 1024;
/// How long the remote may take to answer CONNECT.
const CONNACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters of one bridge (reported in `$SYS/broker/bridge/NAME/...`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Messages forwarded to the remote.
    pub sent: u64,
    /// Messages received from the remote and published locally.
    pub received: u64,
    /// Messages not forwarded (too big for `bridge_max_packet_size`, or no line maps them).
    pub dropped: u64,
    /// Connections made after the first.
    pub reconnects: u64,
    pub connected: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remote {
    Down,
    AwaitConnAck(Instant),
    Up,
}

/// One bridge's protocol state (see the module doc).
#[derive(Debug)]
pub struct Link {
    settings: Settings,
    map: TopicMap,
    remote: Remote,
    /// This connection attempt sets the bridge bit (cleared after a refusal of it).
    private: bool,
    /// The local session answered CONNACK.
    local_up: bool,
    /// The runtime must open the local connection before feeding `local_out`.
    open_local: bool,
    /// The local connection only creates the session (see [`Link::prime`]).
    priming: bool,
    /// Local SUBSCRIBEs not answered yet.
    subacks_pending: usize,
    /// Bytes for the remote socket.
    pub remote_out: BytesMut,
    /// Bytes for the local broker.
    pub local_out: BytesMut,
    next_remote_id: PacketId,
    next_local_id: PacketId,
    /// In: local packet id -> remote packet id (and the QoS).
    inbound: HashMap<PacketId, (PacketId, QoS)>,
    /// In, QoS 2: remote ids published locally and not released yet (duplicates dropped).
    inbound_remote: HashMap<PacketId, PacketId>,
    /// Out: remote packet id -> local packet id.
    outbound: HashMap<PacketId, PacketId>,
    /// Out, QoS 2: local ids forwarded and not completed (duplicates not forwarded again).
    outbound_local: HashMap<PacketId, PacketId>,
    last_remote_send: Instant,
    /// The last packet to or from the remote other than PINGREQ / PINGRESP (the idle
    /// clock of `start_type lazy`).
    last_traffic: Instant,
    ping_sent: Option<Instant>,
    /// The local broker's Server Keep Alive (0 = none).
    local_keepalive: u16,
    last_local_send: Instant,
    pub stats: LinkStats,
    connections: u64,
}

fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    // Every packet here is built by this module within the protocol's limits.
    if let Err(e) = codec::encode(packet, version, out) {
        crate::log_error!("Error: bridge cannot encode {}: {e}", packet.name());
    }
}

fn ack(kind: AckKind, packet_id: PacketId) -> Packet {
    Packet::Ack(Ack {
        kind,
        packet_id,
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    })
}

fn next_id(id: &mut PacketId, used: &HashMap<PacketId, impl Sized>) -> PacketId {
    for _ in 0..=u16::MAX {
        *id = id.wrapping_add(1).max(1);
        if !used.contains_key(id) {
            break;
        }
    }
    *id
}

impl Link {
    pub fn new(settings: Settings, now: Instant) -> Self {
        let map = TopicMap::new(&settings.topics);
        let private = settings.try_private;
        Self {
            settings,
            map,
            remote: Remote::Down,
            private,
            local_up: false,
            open_local: false,
            priming: false,
            subacks_pending: 0,
            remote_out: BytesMut::new(),
            local_out: BytesMut::new(),
            next_remote_id: 0,
            next_local_id: 0,
            inbound: HashMap::new(),
            inbound_remote: HashMap::new(),
            outbound: HashMap::new(),
            outbound_local: HashMap::new(),
            last_remote_send: now,
            last_traffic: now,
            ping_sent: None,
            local_keepalive: 0,
            last_local_send: now,
            stats: LinkStats::default(),
            connections: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn is_up(&self) -> bool {
        self.remote == Remote::Up
    }

    /// The runtime must accept the local connection now (once per remote connection).
    pub fn take_open_local(&mut self) -> bool {
        std::mem::take(&mut self.open_local)
    }

    fn remote_send(&mut self, packet: &Packet, now: Instant) {
        encode(packet, self.settings.version, &mut self.remote_out);
        self.last_remote_send = now;
        if !matches!(packet, Packet::PingReq) {
            self.last_traffic = now;
        }
    }

    /// `start_type lazy`: when the connection counts as idle (nothing but keep alive
    /// traffic with the remote for `idle_timeout`) and is to be closed.
    pub fn idle_deadline(&self) -> Option<Instant> {
        let lazy = self.settings.lazy?;
        (self.remote == Remote::Up).then(|| self.last_traffic + lazy.idle_timeout)
    }

    fn local_send(&mut self, packet: &Packet, now: Instant) {
        encode(packet, ProtocolVersion::V5, &mut self.local_out);
        self.last_local_send = now;
    }

    /// The remote TCP connection is open: queue CONNECT.
    pub fn start(&mut self, now: Instant) {
        self.reset();
        self.remote = Remote::AwaitConnAck(now);
        let s = &self.settings;
        let will = (s.notifications && !s.notifications_local_only).then(|| Will {
            topic: ByteStr::from(s.notification_topic.clone()),
            payload: Bytes::from_static(b"0"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
        });
        let mut properties = Properties::default();
        if s.version.is_v5() && !s.clean {
            properties.session_expiry_interval = Some(u32::MAX);
        }
        let connect = Connect {
            protocol: s.version,
            clean_start: s.clean,
            keep_alive: s.keepalive,
            client_id: ByteStr::from(s.remote_clientid.clone()),
            will,
            username: s.username.clone().map(ByteStr::from),
            password: s.password.clone().map(Bytes::from),
            properties,
        };
        let v5 = s.version.is_v5();
        let start = self.remote_out.len();
        self.remote_send(&Packet::Connect(Box::new(connect)), now);
        // [Mosquitto] the bridge bit: protocol level | 0x80 (3.1 and 3.1.1 only).
        if self.private && !v5 {
            if let Some(level) = self.remote_out.get_mut(start..).and_then(level_byte) {
                *level |= 0x80;
            }
        }
    }

    /// Forgets everything about the previous connection (the sessions keep what matters).
    pub fn reset(&mut self) {
        self.remote = Remote::Down;
        self.local_up = false;
        self.open_local = false;
        self.priming = false;
        self.subacks_pending = 0;
        self.remote_out.clear();
        self.local_out.clear();
        self.inbound.clear();
        self.inbound_remote.clear();
        self.outbound.clear();
        self.outbound_local.clear();
        self.ping_sent = None;
        self.stats.connected = false;
    }

    /// The connection ended: what to feed the local broker before its connection closes
    /// (the retained `0` notification), left in `local_out`.
    pub fn down(&mut self, now: Instant) {
        let was_local = self.local_up;
        self.reset();
        if was_local && self.settings.notifications {
            self.notify_local(b"0", now);
        }
    }

    fn notify_local(&mut self, state: &'static [u8], now: Instant) {
        let p = Publish {
            retain: true,
            topic: ByteStr::from(self.settings.notification_topic.clone()),
            payload: Bytes::from_static(state),
            ..Publish::default()
        };
        self.local_send(&Packet::Publish(p), now);
    }

    /// When [`Link::on_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.remote {
            Remote::Down => None,
            Remote::AwaitConnAck(since) => Some(since + CONNACK_TIMEOUT),
            Remote::Up => {
                let ka = Duration::from_secs(u64::from(self.settings.keepalive));
                let remote = (self.settings.keepalive > 0).then(|| match self.ping_sent {
                    Some(at) => at + ka,
                    None => self.last_remote_send + ka,
                });
                let lka = Duration::from_secs(u64::from(self.local_keepalive) / 2);
                let local = (self.local_keepalive > 1).then(|| self.last_local_send + lka);
                remote
                    .into_iter()
                    .chain(local)
                    .chain(self.idle_deadline())
                    .min()
            }
        }
    }

    /// Keep alive pings; an error when the remote stalls.
    pub fn on_timeout(&mut self, now: Instant) -> Result<(), String> {
        match self.remote {
            Remote::Down => Ok(()),
            Remote::AwaitConnAck(since) if now >= since + CONNACK_TIMEOUT => {
                Err("no CONNACK from the remote".into())
            }
            Remote::AwaitConnAck(_) => Ok(()),
            Remote::Up => {
                let ka = Duration::from_secs(u64::from(self.settings.keepalive));
                if self.settings.keepalive > 0 {
                    if let Some(at) = self.ping_sent {
                        if now >= at + ka {
                            return Err("the remote did not answer PINGREQ (keep alive)".into());
                        }
                    } else if now >= self.last_remote_send + ka {
                        self.remote_send(&Packet::PingReq, now);
                        self.ping_sent = Some(now);
                    }
                }
                let lka = Duration::from_secs(u64::from(self.local_keepalive) / 2);
                if self.local_up && self.local_keepalive > 1 && now >= self.last_local_send + lka {
                    self.local_send(&Packet::PingReq, now);
                }
                Ok(())
            }
        }
    }

    /// Bytes read from the remote; an error closes the connection (the runtime logs it
    /// with the bridge's name and retries with backoff).
    pub fn on_remote(&mut self, buf: &mut BytesMut, now: Instant) -> Result<(), String> {
        loop {
            match codec::decode(buf, self.settings.version, MAX_IN) {
                Ok(None) => return Ok(()),
                Ok(Some(packet)) => self.remote_packet(packet, now)?,
                Err(e) => {
                    if self.private && matches!(self.remote, Remote::AwaitConnAck(_)) {
                        // Some brokers answer the bridge bit with a CONNACK of another
                        // protocol version: take it as a refusal of the bit.
                        self.private = false;
                        return Err(format!(
                            "the remote did not accept the bridge protocol bit (try_private: \
                             {e}); retrying without it"
                        ));
                    }
                    return Err(format!("bad packet from the remote: {e}"));
                }
            }
        }
    }

    fn remote_packet(&mut self, packet: Packet, now: Instant) -> Result<(), String> {
        if let Packet::ConnAck(ack) = packet {
            return self.remote_connack(&ack, now);
        }
        if self.remote != Remote::Up {
            return Err(format!("{} from the remote before CONNACK", packet.name()));
        }
        if !matches!(packet, Packet::PingResp) {
            self.last_traffic = now;
        }
        match packet {
            Packet::Publish(p) => self.remote_publish(p, now)?,
            Packet::Ack(a) => self.remote_ack(&a, now)?,
            Packet::SubAck(s) => {
                if s.reasons.iter().any(|r| r.is_error()) {
                    crate::log_warning!(
                        "Warning: bridge {}: the remote refused a subscription ({:?}).",
                        self.settings.name,
                        s.reasons.iter().map(|r| r.0).collect::<Vec<_>>()
                    );
                }
            }
            Packet::UnsubAck(_) => {}
            Packet::PingResp => self.ping_sent = None,
            Packet::Disconnect(d) => {
                return Err(format!(
                    "the remote disconnected (reason 0x{:02x})",
                    d.reason.0
                ))
            }
            other => return Err(format!("unexpected {} from the remote", other.name())),
        }
        Ok(())
    }

    fn remote_connack(&mut self, ack: &ConnAck, now: Instant) -> Result<(), String> {
        if !matches!(self.remote, Remote::AwaitConnAck(_)) {
            return Err("a second CONNACK from the remote".into());
        }
        if ack.reason != ReasonCode::SUCCESS {
            let version_refused = ack.reason == ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION
                || ack.reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION;
            if self.private && version_refused {
                // Mosquitto does the same: the remote does not know the bridge bit.
                self.private = false;
                return Err("the remote refused the bridge protocol bit (try_private); \
                            retrying without it"
                    .into());
            }
            return Err(format!(
                "the remote refused CONNECT (code 0x{:02x})",
                ack.reason.0
            ));
        }
        self.remote = Remote::Up;
        self.connections += 1;
        if self.connections > 1 {
            self.stats.reconnects += 1;
        }
        self.stats.connected = true;
        self.ping_sent = None;
        self.open_local = true;
        self.local_connect(now);
        let attempt_unsubscribe = self.settings.attempt_unsubscribe;
        if attempt_unsubscribe {
            let filters: smallvec::SmallVec<[ByteStr; 1]> =
                self.map.remote_out_only().map(ByteStr::from).collect();
            if !filters.is_empty() {
                let id = next_id(&mut self.next_remote_id, &self.outbound);
                let u = Unsubscribe {
                    packet_id: id,
                    filters,
                    properties: Properties::default(),
                };
                self.remote_send(&Packet::Unsubscribe(u), now);
            }
        }
        let v5 = self.settings.version.is_v5();
        let filters: Vec<(ByteStr, SubscriptionOptions)> = self
            .map
            .remote_subscriptions()
            .map(|(f, qos)| {
                let options = SubscriptionOptions {
                    qos,
                    no_local: v5,
                    retain_as_published: v5,
                    retain_handling: 0,
                };
                (ByteStr::from(f), options)
            })
            .collect();
        for f in filters {
            let id = next_id(&mut self.next_remote_id, &self.outbound);
            let sub = Subscribe {
                packet_id: id,
                filters: smallvec![f],
                properties: Properties::default(),
            };
            self.remote_send(&Packet::Subscribe(sub), now);
        }
        if self.settings.notifications && !self.settings.notifications_local_only {
            let p = Publish {
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: ByteStr::from(self.settings.notification_topic.clone()),
                packet_id: Some(next_id(&mut self.next_remote_id, &self.outbound)),
                payload: Bytes::from_static(b"1"),
                ..Publish::default()
            };
            self.remote_send(&Packet::Publish(p), now);
        }
        Ok(())
    }

    /// CONNECT of the local session (MQTT 5, persistent unless `local_cleansession`).
    fn local_connect(&mut self, now: Instant) {
        let s = &self.settings;
        let mut properties = Properties::default();
        if !s.local_clean {
            properties.session_expiry_interval = Some(u32::MAX);
        }
        let connect = Connect {
            protocol: ProtocolVersion::V5,
            clean_start: s.local_clean,
            keep_alive: 0,
            client_id: ByteStr::from(s.local_clientid.clone()),
            will: None,
            username: None,
            password: None,
            properties,
        };
        self.local_send(&Packet::Connect(Box::new(connect)), now);
    }

    fn remote_publish(&mut self, p: Publish, now: Instant) -> Result<(), String> {
        let remote_id = p.packet_id;
        let Some(topic) = self.map.to_local(p.topic.as_str()) else {
            // Not ours (a subscription we no longer have): acknowledged and dropped.
            self.stats.dropped += 1;
            self.ack_remote_publish(p.qos, remote_id, now);
            return Ok(());
        };
        if p.qos == QoS::ExactlyOnce {
            if let Some(id) = remote_id {
                if self.inbound_remote.contains_key(&id) {
                    return Ok(()); // a resend of a message already published locally
                }
            }
        }
        self.stats.received += 1;
        let local_id = match (p.qos, remote_id) {
            (QoS::AtMostOnce, _) | (_, None) => None,
            (qos, Some(rid)) => {
                let lid = next_id(&mut self.next_local_id, &self.inbound);
                self.inbound.insert(lid, (rid, qos));
                if qos == QoS::ExactlyOnce {
                    self.inbound_remote.insert(rid, lid);
                }
                Some(lid)
            }
        };
        let mut properties = p.properties;
        properties.clear_connection_scoped();
        let local = Publish {
            dup: false,
            qos: p.qos,
            retain: p.retain,
            topic: ByteStr::from(topic),
            packet_id: local_id,
            properties,
            payload: p.payload,
        };
        self.local_send(&Packet::Publish(local), now);
        Ok(())
    }

    /// Acknowledges a remote PUBLISH the bridge does not forward.
    fn ack_remote_publish(&mut self, qos: QoS, id: Option<PacketId>, now: Instant) {
        match (qos, id) {
            (QoS::AtLeastOnce, Some(id)) => self.remote_send(&ack(AckKind::PubAck, id), now),
            (QoS::ExactlyOnce, Some(id)) => self.remote_send(&ack(AckKind::PubRec, id), now),
            _ => {}
        }
    }

    fn remote_ack(&mut self, a: &Ack, now: Instant) -> Result<(), String> {
        match a.kind {
            // Out, QoS 1: the remote has it; now the local session may forget it.
            AckKind::PubAck => {
                if let Some(lid) = self.outbound.remove(&a.packet_id) {
                    self.local_send(&ack(AckKind::PubAck, lid), now);
                }
            }
            // Out, QoS 2, first half.
            AckKind::PubRec => {
                if a.reason.is_error() {
                    if let Some(lid) = self.outbound.remove(&a.packet_id) {
                        self.outbound_local.remove(&lid);
                        self.local_send(&ack(AckKind::PubRec, lid), now);
                    }
                } else {
                    self.remote_send(&ack(AckKind::PubRel, a.packet_id), now);
                }
            }
            // Out, QoS 2: the remote owns it; the local session's half starts.
            AckKind::PubComp => {
                if let Some(lid) = self.outbound.remove(&a.packet_id) {
                    self.local_send(&ack(AckKind::PubRec, lid), now);
                }
            }
            // In, QoS 2, second half: the message is published locally already.
            AckKind::PubRel => {
                self.inbound_remote.remove(&a.packet_id);
                self.remote_send(&ack(AckKind::PubComp, a.packet_id), now);
            }
        }
        Ok(())
    }
}

/// The protocol level byte of an encoded CONNECT at the front of `frame`.
fn level_byte(frame: &mut [u8]) -> Option<&mut u8> {
    // Fixed header: type byte, then a 1-4 byte remaining length.
    let mut i = 1;
    while frame.get(i)? & 0x80 != 0 {
        i += 1;
    }
    let name_len = usize::from(u16::from_be_bytes([*frame.get(i + 1)?, *frame.get(i + 2)?]));
    frame.get_mut(i + 3 + name_len)
}

/// The local side: what the broker sends the bridge's local session.
#[path = "link_local.rs"]
mod local;

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
