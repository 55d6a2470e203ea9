//! Sans-IO per-client MQTT session: the state that belongs to one client id — its
//! subscriptions, the inbound QoS 2 packet ids awaiting PUBREL, the outbound inflight
//! window and queue, keep alive, the will — and the rules of the packets a connected
//! client sends.
//!
//! It never touches sockets, the clock (time arrives as `now`), the subscription index or
//! other sessions: what needs the broker (routing a PUBLISH, changing the index,
//! DISCONNECT) is returned as an [`Action`]. It never encodes bytes: packets to send come
//! out of [`Session::poll_transmit`] as [`Transmit`]s.

mod alias;
mod connect;
mod error;
mod message;
mod outbound;

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::codec::{
    Ack, AckKind, ByteStr, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, Unsubscribe, Will,
};
use crate::config::Config;

use alias::InboundAliases;
pub use alias::{AliasUse, OutboundAliases};
pub use connect::{
    accept, authenticate, connack_code, connack_properties, Accepted, EnhancedAuth, SessionExpiry,
};
pub use error::ProtocolError;
pub use message::{Message, Outgoing, PublishedBy, Transmit};
pub use outbound::AckOutcome;
use outbound::Outbound;

/// Limits a session applies, from [`Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Outbound QoS 1/2 window (`max_inflight_messages`).
    pub max_inflight: u16,
    /// Queue length beyond the window (`max_queued_messages`; 0 = unlimited).
    pub max_queued: usize,
    /// Memory an offline session's queue may hold (`max_queued_bytes`, counted as
    /// [`Message::footprint`]s; `usize::MAX` = unlimited).
    pub max_queued_bytes: usize,
    /// Topic + payload bytes of QoS 1/2 messages in flight (`max_inflight_bytes`; 0 = no
    /// byte limit).
    pub max_inflight_bytes: usize,
    /// Queue QoS 0 messages for an offline session (`queue_qos0_messages`).
    pub queue_qos0: bool,
    /// Our Receive Maximum: QoS 2 publishes a v5 client may have awaiting PUBREL.
    pub receive_maximum: u16,
    pub retain_available: bool,
    /// Our Topic Alias Maximum (`max_topic_alias`): aliases a v5 client may set.
    pub max_topic_alias: u16,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_inflight: config.max_inflight_messages.max(1),
            max_queued: if config.max_queued_messages == 0 {
                usize::MAX
            } else {
                config.max_queued_messages
            },
            max_queued_bytes: if config.max_queued_bytes == 0 {
                usize::MAX
            } else {
                usize::try_from(config.max_queued_bytes).unwrap_or(usize::MAX)
            },
            max_inflight_bytes: usize::try_from(config.max_inflight_bytes).unwrap_or(usize::MAX),
            queue_qos0: config.queue_qos0_messages,
            receive_maximum: config.max_inflight_messages.max(1),
            retain_available: config.retain_available,
            max_topic_alias: config.max_topic_alias,
        }
    }
}

/// One subscription of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub options: SubscriptionOptions,
    /// MQTT 5 Subscription Identifier.
    pub id: Option<u32>,
}

/// What the broker must do after a packet.
#[derive(Debug)]
pub enum Action {
    /// Route this PUBLISH; for QoS 1/2 then call [`Session::acknowledge_publish`].
    Route(Publish),
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    /// The client sent DISCONNECT; `publish_will` for v5 reason 0x04.
    Disconnect {
        publish_will: bool,
    },
}

/// What happened to a message offered to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the transmit queue.
    Sent,
    /// Waiting for a free inflight slot (or for the client to reconnect).
    Queued,
    /// Not kept: offline QoS 0 without `queue_qos0_messages`.
    Skipped,
    /// Offline queue full: dropped (count and log it).
    Dropped,
}

/// The live connection of a session: what every connection needs inline, the rest in
/// [`LinkExtras`] (an idle connection's memory is mostly its session; issue 14).
#[derive(Debug)]
struct Link {
    last_packet: Instant,
    /// The last PUBACK / PUBREC / PUBCOMP that moved an outbound message on (or the
    /// CONNECT): how the broker tells a slow subscriber from a stuck one.
    last_ack: Instant,
    /// Keep alive of the CONNECT, seconds (0: none); MQTT's field is 16 bits.
    keep_alive: u16,
    /// v5 Receive Maximum of the client (65535 for 3.1.1).
    client_receive_maximum: u16,
    /// v5 Maximum Packet Size of the client (`u32::MAX` when absent).
    client_max_packet_size: u32,
    /// Will, enhanced authentication and topic aliases: `None` while the client uses
    /// none of them (most do not).
    extras: Option<Box<LinkExtras>>,
}

/// The parts of a [`Link`] most connections never use.
#[derive(Debug)]
struct LinkExtras {
    /// A `Will` is ~470 bytes (its properties).
    will: Option<Will>,
    /// The enhanced authentication method of the CONNECT (re-authentication uses it).
    auth_method: Option<ByteStr>,
    /// Topic aliases the client set on this connection (created by the first PUBLISH
    /// with an alias).
    inbound_aliases: InboundAliases,
    /// Topic aliases we assign on this connection (`None`: the client takes none).
    outbound_aliases: Option<OutboundAliases>,
}

impl Link {
    /// The extras, created on first use; `alias_max` is our Topic Alias Maximum for
    /// this connection (0 for 3.1.1).
    fn extras_mut(&mut self, alias_max: u16) -> &mut LinkExtras {
        self.extras.get_or_insert_with(|| {
            Box::new(LinkExtras {
                will: None,
                auth_method: None,
                inbound_aliases: InboundAliases::new(alias_max),
                outbound_aliases: None,
            })
        })
    }
}

/// The session state that grows with traffic: subscriptions, the outbound window and
/// queue, inbound QoS 2 ids. Boxed in [`Session`] and created on first use, so an idle
/// connection that never subscribes nor exchanges QoS 1/2 costs 8 bytes for it, not
/// ~170 (issue 14; `broker/sessions.rs` pins the sizes).
#[derive(Debug, Default)]
struct Traffic {
    /// Keyed by client-chosen filters: seeded hashing (HashDoS).
    subscriptions: crate::hash::Map<ByteStr, Subscription>,
    outbound: Outbound,
    /// Inbound QoS 2 packet ids received and not yet released by PUBREL.
    inbound_qos2: Vec<PacketId>,
}

/// What a session without [`Traffic`] reads: no subscriptions, nothing queued.
static NO_TRAFFIC: LazyLock<Traffic> = LazyLock::new(Traffic::default);

/// A client's session.
///
/// Driver order (the broker): [`Session::attach`] after an accepted CONNECT; then per
/// packet [`Session::handle_packet`], carrying out the returned [`Action`]; messages for
/// the client through [`Session::deliver`]; when [`Session::poll_timeout`] passes,
/// [`Session::keep_alive_expired`] (after [`Session::restart_keep_alive`] when the broker
/// did not read the connection for a while); after every call, drain
/// [`Session::poll_transmit`] into the connection's output; [`Session::detach`] when the
/// connection ends.
#[derive(Debug)]
pub struct Session {
    client_id: ByteStr,
    uid: u64,
    version: ProtocolVersion,
    expiry: SessionExpiry,
    /// `None` until the session first subscribes or exchanges QoS 1/2 messages.
    traffic: Option<Box<Traffic>>,
    link: Option<Link>,
    transmits: VecDeque<Transmit>,
    /// Shared by every session of a shard (the same config): 8 bytes, not 32.
    limits: Arc<Limits>,
    /// A will waiting for its v5 Will Delay Interval.
    /// Boxed with its time: 8 bytes in every session, most of which never have one.
    pub pending_will: Option<Box<(Instant, Will)>>,
    /// When this offline session expires.
    pub expires_at: Option<Instant>,
}

impl Session {
    pub fn new(client_id: ByteStr, uid: u64, limits: Arc<Limits>) -> Self {
        Self {
            client_id,
            uid,
            version: ProtocolVersion::V311,
            expiry: SessionExpiry::After(Duration::ZERO),
            traffic: None,
            link: None,
            transmits: VecDeque::new(),
            limits,
            pending_will: None,
            expires_at: None,
        }
    }

    pub fn client_id(&self) -> &ByteStr {
        &self.client_id
    }

    /// Unique for the broker's lifetime (slab keys are reused, this is not).
    pub const fn uid(&self) -> u64 {
        self.uid
    }

    pub const fn version(&self) -> ProtocolVersion {
        self.version
    }

    pub const fn expiry(&self) -> SessionExpiry {
        self.expiry
    }

    /// The keep alive the connected client asked for, seconds (0: none or offline).
    pub fn keep_alive_secs(&self) -> u16 {
        self.link.as_ref().map_or(0, |l| l.keep_alive)
    }

    /// The traffic state (an empty one until created).
    fn traffic(&self) -> &Traffic {
        self.traffic.as_deref().unwrap_or(&NO_TRAFFIC)
    }

    /// The traffic state, created on first use, and the transmit queue.
    fn traffic_mut(&mut self) -> (&mut Traffic, &mut VecDeque<Transmit>) {
        let max_inflight_bytes = self.limits.max_inflight_bytes;
        let traffic = self.traffic.get_or_insert_with(|| {
            Box::new(Traffic {
                outbound: Outbound::with_max_inflight_bytes(max_inflight_bytes),
                ..Traffic::default()
            })
        });
        (traffic, &mut self.transmits)
    }

    pub const fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// Binds the session to a new connection: resends the inflight window with DUP=1 and
    /// PUBREL for PUBREC'd messages, then queued messages [MQTT-4.4.0-1]. A pending
    /// delayed will is cancelled [MQTT-3.1.3-9].
    pub fn attach(
        &mut self,
        now: Instant,
        connect: &crate::codec::Connect,
        accepted: &Accepted,
        will: Option<Will>,
    ) {
        self.version = connect.protocol;
        self.expiry = accepted.expiry;
        self.pending_will = None;
        self.expires_at = None;
        // New tables for every connection [MQTT-3.3.2-7].
        let mut link = Link {
            last_packet: now,
            last_ack: now,
            keep_alive: accepted.keep_alive,
            client_receive_maximum: connect
                .properties
                .receive_maximum
                .unwrap_or(u16::MAX)
                .max(1),
            client_max_packet_size: connect.properties.maximum_packet_size.unwrap_or(u32::MAX),
            extras: None,
        };
        let auth_method = accepted.auth.as_ref().map(|a| a.method.clone());
        let outbound_aliases = connect
            .protocol
            .is_v5()
            .then(|| connect.properties.topic_alias_maximum.unwrap_or(0))
            .and_then(OutboundAliases::new);
        if will.is_some() || auth_method.is_some() || outbound_aliases.is_some() {
            let extras = link.extras_mut(self.alias_max());
            extras.will = will.map(|w| w.compact());
            extras.auth_method = auth_method;
            extras.outbound_aliases = outbound_aliases;
        }
        self.link = Some(link);
    }

    /// Our Topic Alias Maximum for the connection: aliases are v5 only.
    fn alias_max(&self) -> u16 {
        if self.version.is_v5() {
            self.limits.max_topic_alias
        } else {
            0
        }
    }

    /// Queues the resend of the inflight window and the queue, after the CONNACK.
    pub fn resume(&mut self, now: Instant) -> usize {
        if let Some(traffic) = &self.traffic {
            traffic.outbound.resend(&mut self.transmits);
        }
        self.pump(now)
    }

    /// Ends the connection. Returns the will if it must be published (abnormal close, or
    /// v5 DISCONNECT 0x04), which the caller publishes now or after its delay.
    pub fn detach(&mut self, publish_will: bool) -> Option<Will> {
        let link = self.link.take()?;
        self.transmits.clear();
        if !self.limits.queue_qos0 {
            if let Some(traffic) = &mut self.traffic {
                traffic.outbound.drop_queued_qos0();
            }
        }
        if publish_will {
            link.extras.and_then(|e| e.will)
        } else {
            None
        }
    }

    /// The outbound window: our `max_inflight_messages`, lowered to the client's v5
    /// Receive Maximum [MQTT-3.3.4-9].
    fn window(&self) -> usize {
        let client = self
            .link
            .as_ref()
            .map_or(u16::MAX, |l| l.client_receive_maximum);
        usize::from(self.limits.max_inflight.min(client))
    }

    /// The client's Maximum Packet Size (v5), `u32::MAX` when it set none.
    pub fn client_max_packet_size(&self) -> u32 {
        self.link
            .as_ref()
            .map_or(u32::MAX, |l| l.client_max_packet_size)
    }

    /// The enhanced authentication method the client connected with, if any.
    pub fn auth_method(&self) -> Option<&ByteStr> {
        self.link
            .as_ref()
            .and_then(|l| l.extras.as_ref())
            .and_then(|e| e.auth_method.as_ref())
    }

    /// Whether the broker assigns topic aliases to this connection (v5 client with a
    /// Topic Alias Maximum above 0).
    pub fn takes_topic_aliases(&self) -> bool {
        self.link
            .as_ref()
            .and_then(|l| l.extras.as_ref())
            .is_some_and(|e| e.outbound_aliases.is_some())
    }

    /// Counts one PUBLISH of `topic` to the client and says whether to send it with an
    /// alias (see [`OutboundAliases::choose`]); [`AliasUse::Topic`] when the client
    /// takes no aliases.
    pub fn choose_topic_alias(&mut self, topic: &ByteStr) -> AliasUse {
        self.link
            .as_mut()
            .and_then(|l| l.extras.as_mut())
            .and_then(|e| e.outbound_aliases.as_mut())
            .map_or(AliasUse::Topic, |a| a.choose(topic))
    }

    /// A PUBLISH that set `alias` for `topic` is in the client's output.
    pub fn topic_alias_bound(&mut self, topic: &ByteStr, alias: u16) {
        let aliases = self.link.as_mut().and_then(|l| l.extras.as_mut());
        if let Some(a) = aliases.and_then(|e| e.outbound_aliases.as_mut()) {
            a.bound(topic, alias);
        }
    }

    /// When keep alive runs out: 1.5 x keep alive after the last packet [MQTT-3.1.2-24].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = self.link.as_ref()?;
        if link.keep_alive == 0 {
            return None;
        }
        Some(link.last_packet + Duration::from_millis(u64::from(link.keep_alive) * 1500))
    }

    /// Restarts the keep alive clock at `now`: the broker did not read the connection
    /// for a while (flow control), so packets the client sent may still sit unread.
    pub fn restart_keep_alive(&mut self, now: Instant) {
        if let Some(link) = &mut self.link {
            link.last_packet = link.last_packet.max(now);
        }
    }

    /// When the connected client last acknowledged an outbound message (its CONNECT
    /// if never); `None` while offline.
    pub fn last_ack(&self) -> Option<Instant> {
        self.link.as_ref().map(|l| l.last_ack)
    }

    /// Whether the keep alive has run out at `now`.
    pub fn keep_alive_expired(&self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|deadline| now >= deadline)
    }

    /// The next packet to write to the client.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_none()
            && self.transmits.capacity() > 0
            && self.traffic().outbound.inflight_len() == 0
        {
            // Drained: an idle session keeps no transmit buffer. One with messages in
            // flight is streaming: it keeps it rather than allocate it again for the
            // next message (it is freed once the window is acknowledged).
            self.transmits = VecDeque::new();
        }
        t
    }

    /// Memory the session's queue and inflight window keep alive (message footprints).
    pub fn held_bytes(&self) -> usize {
        self.traffic().outbound.held_bytes()
    }

    /// Messages held (inflight + queued), for `$SYS/broker/store/messages/count`.
    pub fn stored(&self) -> usize {
        self.traffic().outbound.stored()
    }

    /// More messages queued than `max_queued_messages`: the publishers feeding this
    /// connected session must be paused.
    pub fn is_backlogged(&self) -> bool {
        self.traffic().outbound.queued_len() >= self.limits.max_queued
    }

    pub fn inflight_len(&self) -> usize {
        self.traffic().outbound.inflight_len()
    }

    pub fn queued_len(&self) -> usize {
        self.traffic().outbound.queued_len()
    }

    /// Offers a message to the session. While connected QoS 1/2 is never dropped (it
    /// waits in the queue, beyond `max_queued_messages` if need be: the caller
    /// back-pressures); offline, the queue is bounded.
    pub fn deliver(&mut self, out: Outgoing) -> Delivery {
        if self.link.is_some() {
            let window = self.window();
            let (traffic, transmits) = self.traffic_mut();
            if traffic.outbound.offer(out, window, transmits) {
                Delivery::Sent
            } else {
                Delivery::Queued
            }
        } else if out.qos == QoS::AtMostOnce && !self.limits.queue_qos0 {
            Delivery::Skipped
        } else if self.traffic().outbound.queued_len() >= self.limits.max_queued
            || self
                .traffic()
                .outbound
                .queued_bytes()
                .saturating_add(outbound::message_bytes(&out))
                > self.limits.max_queued_bytes
        {
            Delivery::Dropped
        } else {
            self.traffic_mut().0.outbound.enqueue(out);
            Delivery::Queued
        }
    }

    /// Takes the QoS 1/2 messages the client has not acknowledged for which `pick` is
    /// true (queued, or inflight before PUBACK / PUBREC), to hand them to another
    /// subscriber (a shared subscription member that left), then refills the window.
    pub fn take_unacked(
        &mut self,
        now: Instant,
        pick: impl FnMut(&Outgoing) -> bool,
    ) -> Vec<Outgoing> {
        let Some(traffic) = &mut self.traffic else {
            return Vec::new();
        };
        let taken = traffic.outbound.take_unacked(pick);
        if !taken.is_empty() {
            self.pump(now);
        }
        taken
    }

    /// Completes an inflight message that could not be sent (too large for the client's
    /// Maximum Packet Size) [MQTT-3.1.2-25], and refills the window.
    pub fn discard_inflight(&mut self, packet_id: PacketId) {
        if let Some(traffic) = &mut self.traffic {
            traffic.outbound.forget(packet_id);
        }
    }

    /// Moves queued messages into the window; returns how many expired on the way.
    fn pump(&mut self, now: Instant) -> usize {
        if self.link.is_none() {
            return 0;
        }
        let window = self.window();
        match &mut self.traffic {
            Some(traffic) => traffic.outbound.pump(window, now, &mut self.transmits),
            None => 0,
        }
    }

    pub fn subscriptions(&self) -> impl Iterator<Item = (&ByteStr, &Subscription)> {
        self.traffic().subscriptions.iter()
    }

    /// Adds or replaces a subscription; returns the previous one [MQTT-3.8.4-3].
    /// `filter` is compacted (see [`ByteStr::compact`]): it lives as long as the session.
    pub fn subscribe(&mut self, filter: &ByteStr, sub: Subscription) -> Option<Subscription> {
        self.traffic_mut()
            .0
            .subscriptions
            .insert(filter.compact(), sub)
    }

    pub fn unsubscribe(&mut self, filter: &ByteStr) -> Option<Subscription> {
        self.traffic
            .as_mut()
            .and_then(|t| t.subscriptions.remove(filter))
    }

    /// Removes every subscription (session discarded); returns the filters.
    pub fn take_subscriptions(&mut self) -> Vec<ByteStr> {
        self.traffic.as_mut().map_or_else(Vec::new, |t| {
            t.subscriptions.drain().map(|(f, _)| f).collect()
        })
    }

    /// Handles a PUBACK, PUBREC or PUBCOMP from the connected client without refilling
    /// the window: what `handle_packet` does for it, less the [`Self::refill`] that the
    /// caller owes when this returns [`AckOutcome::Released`]. A driver that handles a
    /// read's acknowledgements this way refills once per read, before it handles any
    /// other packet of the client and before the read's output is written, so the
    /// client's output order is the one `handle_packet` gives.
    pub fn acknowledge(&mut self, ack: &Ack, now: Instant) -> AckOutcome {
        if let Some(link) = &mut self.link {
            link.last_packet = now;
        }
        let (traffic, transmits) = self.traffic_mut();
        let outcome = traffic.outbound.acknowledge(ack, transmits);
        if outcome != AckOutcome::Unknown {
            if let Some(link) = &mut self.link {
                link.last_ack = now;
            }
        }
        outcome
    }

    /// Moves queued messages into the window freed by acknowledgements (after
    /// [`Self::acknowledge`]); returns how many expired on the way.
    #[must_use]
    pub fn refill(&mut self, now: Instant) -> usize {
        self.pump(now)
    }

    /// Queues a packet for the client (CONNACK, SUBACK, DISCONNECT, ...).
    pub fn send(&mut self, packet: Packet) {
        self.transmits.push_back(Transmit::Packet(Box::new(packet)));
    }

    /// Handles one packet from the connected client. `Err` means: close the connection
    /// (v5: DISCONNECT with `err.reason_code()` first) and publish the will.
    ///
    /// `now` is also the new keep alive reference.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: Packet,
        expired: &mut usize,
    ) -> Result<Option<Action>, ProtocolError> {
        if let Some(link) = &mut self.link {
            link.last_packet = now;
        }
        match packet {
            Packet::Connect(_) => Err(ProtocolError::SecondConnect), // [MQTT-3.1.0-2]
            Packet::Publish(p) => self.on_publish(p),
            Packet::Ack(ack) => {
                if ack.kind == AckKind::PubRel {
                    self.on_pubrel(ack.packet_id);
                } else if self.acknowledge(&ack, now) == AckOutcome::Released {
                    *expired += self.pump(now);
                }
                Ok(None)
            }
            Packet::Subscribe(s) => Ok(Some(Action::Subscribe(s))),
            Packet::Unsubscribe(u) => Ok(Some(Action::Unsubscribe(u))),
            Packet::PingReq => {
                self.transmits.push_back(Transmit::PingResp); // [MQTT-3.12.4-1]
                Ok(None)
            }
            Packet::Disconnect(d) => {
                if let Some(interval) = d.properties.session_expiry_interval {
                    if self.expiry.ends_at_disconnect() && interval != 0 {
                        return Err(ProtocolError::SessionExpiryAfterZero);
                    }
                    self.expiry = SessionExpiry::from_v5_interval(interval);
                }
                Ok(Some(Action::Disconnect {
                    publish_will: self.version.is_v5()
                        && d.reason == ReasonCode::DISCONNECT_WITH_WILL,
                }))
            }
            other @ (Packet::Auth(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => Err(ProtocolError::Unexpected(other.name())),
        }
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<Option<Action>, ProtocolError> {
        Ok(self.check_publish(&mut p)?.then_some(Action::Route(p)))
    }

    /// The PUBLISH half of [`Session::handle_packet`] without moving the packet (the
    /// broker's hot path): refreshes keep alive, checks the packet, records an inbound
    /// QoS 2 id, resolves a topic alias (`p` then has its topic and no alias).
    /// `Ok(true)`: route it, then call [`Session::acknowledge_publish`]; `Ok(false)`: a
    /// duplicate QoS 2 PUBLISH, already answered.
    pub fn accept_publish(&mut self, now: Instant, p: &mut Publish) -> Result<bool, ProtocolError> {
        if let Some(link) = &mut self.link {
            link.last_packet = now;
        }
        self.check_publish(p)
    }

    fn check_publish(&mut self, p: &mut Publish) -> Result<bool, ProtocolError> {
        if p.properties.topic_alias.is_some() {
            let alias_max = self.alias_max();
            match &mut self.link {
                Some(link) => link.extras_mut(alias_max).inbound_aliases.resolve(p)?,
                None => return Err(ProtocolError::TopicAliasInvalid),
            }
        }
        if p.topic.is_empty() {
            return Err(ProtocolError::EmptyTopic);
        }
        if p.retain && !self.limits.retain_available {
            return Err(ProtocolError::RetainNotSupported); // [MQTT-3.3.1-11]
        }
        if p.qos == QoS::ExactlyOnce {
            let Some(id) = p.packet_id else {
                return Err(ProtocolError::Decode(crate::codec::DecodeError::Malformed(
                    "QoS 2 PUBLISH without packet id",
                )));
            };
            if self.traffic().inbound_qos2.contains(&id) {
                // Duplicate before PUBREL: acknowledge again, do not deliver again
                // [MQTT-4.3.3-10].
                self.transmits
                    .push_back(Transmit::Ack(AckKind::PubRec, id, ReasonCode::SUCCESS));
                return Ok(false);
            }
            if self.version.is_v5()
                && self.traffic().inbound_qos2.len() >= usize::from(self.limits.receive_maximum)
            {
                return Err(ProtocolError::ReceiveMaximumExceeded); // [MQTT-3.3.4-8]
            }
            self.traffic_mut().0.inbound_qos2.push(id);
        }
        Ok(true)
    }

    /// Sends the PUBACK / PUBREC of a routed QoS 1/2 PUBLISH. `reason` is v5's (0x10 when
    /// nobody matched); 3.1.1 acks carry none.
    pub fn acknowledge_publish(
        &mut self,
        qos: QoS,
        packet_id: Option<PacketId>,
        reason: ReasonCode,
    ) {
        if let Some(ack) = self.publish_ack(qos, packet_id, reason) {
            self.transmits.push_back(ack);
        }
    }

    /// The PUBACK / PUBREC of a routed QoS 1/2 PUBLISH, as [`Session::acknowledge_publish`]
    /// would queue it, for a driver that writes it at once: it must go out behind
    /// whatever [`Session::poll_transmit`] still holds ([`Session::has_transmits`]).
    /// `None` for QoS 0.
    #[must_use]
    pub fn publish_ack(
        &mut self,
        qos: QoS,
        packet_id: Option<PacketId>,
        reason: ReasonCode,
    ) -> Option<Transmit> {
        let id = packet_id?;
        let reason = if self.version.is_v5() {
            reason
        } else {
            ReasonCode::SUCCESS
        };
        match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Transmit::Ack(AckKind::PubAck, id, reason)),
            QoS::ExactlyOnce => {
                if reason.is_error() {
                    self.forget_inbound_qos2(id);
                }
                Some(Transmit::Ack(AckKind::PubRec, id, reason))
            }
        }
    }

    /// Queues a transmit from [`Session::publish_ack`] behind what is queued already.
    pub fn queue_transmit(&mut self, t: Transmit) {
        self.transmits.push_back(t);
    }

    /// Whether [`Session::poll_transmit`] has anything to yield.
    pub fn has_transmits(&self) -> bool {
        !self.transmits.is_empty()
    }

    // ---- persistence hooks (src/persist) ----

    /// Sequence number of the last message [`Session::deliver`] accepted.
    pub fn last_seq(&self) -> u64 {
        self.traffic().outbound.last_seq()
    }

    /// The outbound window for persistence; see `Outbound::persist_window`.
    pub fn persist_window(&self, inflight: &mut Vec<(u64, PacketId, u8)>) -> u64 {
        self.traffic().outbound.persist_window(inflight)
    }

    /// Sets what a restored (offline) session was last connected with.
    pub fn restore_meta(&mut self, version: ProtocolVersion, expiry: SessionExpiry) {
        self.version = version;
        self.expiry = expiry;
    }

    /// Whether the inbound QoS 2 `id` was received and awaits its PUBREL.
    pub fn awaits_pubrel(&self, id: PacketId) -> bool {
        self.traffic().inbound_qos2.contains(&id)
    }

    /// Forgets inbound QoS 2 `id` that was accepted but never acknowledged (an ingest
    /// handler held it when the connection ended): its resend is a new message.
    pub fn forget_inbound_qos2(&mut self, id: PacketId) {
        if let Some(traffic) = &mut self.traffic {
            traffic.inbound_qos2.retain(|&p| p != id);
        }
    }

    /// Puts back a restored inbound QoS 2 id awaiting PUBREL: a resend with it is
    /// answered, not delivered again [MQTT-4.3.3-10].
    pub fn restore_inbound_qos2(&mut self, id: PacketId) {
        let qos2 = &mut self.traffic_mut().0.inbound_qos2;
        if !qos2.contains(&id) {
            qos2.push(id);
        }
    }

    /// Puts back a restored message (in sequence order), inflight with its packet id
    /// and stage, or queued.
    pub fn restore_message(&mut self, seq: u64, out: Outgoing, inflight: Option<(PacketId, u8)>) {
        self.traffic_mut().0.outbound.restore(seq, out, inflight);
    }

    fn on_pubrel(&mut self, id: PacketId) {
        let qos2 = self.traffic.as_mut().map(|t| &mut t.inbound_qos2);
        let reason = if let Some((qos2, pos)) =
            qos2.and_then(|q| q.iter().position(|&p| p == id).map(|pos| (q, pos)))
        {
            qos2.swap_remove(pos);
            ReasonCode::SUCCESS
        } else if self.version.is_v5() {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        } else {
            ReasonCode::SUCCESS
        };
        self.transmits
            .push_back(Transmit::Ack(AckKind::PubComp, id, reason)); // [MQTT-4.3.3-11]
    }
}
