//! The types of the embedding API's in-process subscriptions: the [`Message`] a host
//! process receives, the [`Subscription`] it receives them through, the
//! [`InternalSub`] the runtime installs on every shard, and [`SubscribeError`]. Each
//! shard's table of internal subscribers lives in `routing/internal.rs`; why a message
//! reaches a subscription exactly once, and never blocks a shard, is explained there.
//!
//! And the other direction, the host's publishes (an [`Outgoing`], checked on the host's
//! thread, see `outgoing.rs`): [`PublishSlots`] bound the messages published through
//! `BrokerHandle::publish` that the shards have not routed yet
//! ([`DEFAULT_PUBLISH_CAPACITY`]); each travels to the shard its topic hashes to as an
//! [`Injected`] holding one slot, given back when the shard has routed it. At the bound the host gets
//! [`PublishError::Full`] with its message back (or waits, with `publish_timeout`, on its
//! own thread), and the refusal is counted (`$SYS/broker/publish/embed/refused`).
//!
//! It never touches threads or sockets itself and never blocks a shard: unsubscribing on
//! drop is a closure the runtime supplies, and giving a slot back never waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvError, RecvTimeoutError, Sender};

use crate::codec::{ByteStr, Properties, Publish, QoS};
use crate::retained::RetainedMessage;
use crate::topic::{TopicError, TopicFilter};

use super::ingest::Origin;
use super::outgoing::{InvalidMessage, MessageProperties, Outgoing};

/// Messages an in-process subscription's channel holds by default (see
/// [`crate::BrokerHandle::subscribe_with_capacity`]).
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 4096;

/// Messages published through [`crate::BrokerHandle::publish`] that the broker holds
/// before it refuses more, by default (see [`crate::BrokerBuilder::publish_capacity`]).
pub const DEFAULT_PUBLISH_CAPACITY: usize = 4096;

/// Why [`crate::BrokerHandle::publish`] (or `publish_timeout`, `publish_routed`) did
/// not take a message; the message comes back ([`PublishError::into_message`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The broker holds as many messages from the host as it may (its publish capacity):
    /// try again later, or wait with [`crate::BrokerHandle::publish_timeout`].
    #[error("the broker's publish channel is full")]
    Full(Box<Outgoing>),
    /// The broker has stopped (or stopped before it routed the message, or before its
    /// records were written).
    #[error("the broker has stopped")]
    Stopped(Box<Outgoing>),
    /// The message is not one a client could publish (its topic, a property, its size).
    #[error("{reason}")]
    Invalid {
        /// The message.
        message: Box<Outgoing>,
        /// What is wrong with it.
        reason: InvalidMessage,
    },
}

impl PublishError {
    /// The message that was not published.
    pub fn into_message(self) -> Outgoing {
        match self {
            Self::Full(m) | Self::Stopped(m) | Self::Invalid { message: m, .. } => *m,
        }
    }
}

/// The bound on the host's publishes in flight: the slots of a bounded channel, one
/// taken per message by the host, given back by the shard once it routed the message.
#[derive(Debug, Clone)]
pub struct PublishSlots {
    take: Sender<()>,
    give: Receiver<()>,
    refused: Arc<AtomicU64>,
}

/// One taken slot; given back when dropped (never waits).
#[derive(Debug)]
pub struct PublishSlot {
    give: Receiver<()>,
    refused: Arc<AtomicU64>,
}

impl Drop for PublishSlot {
    fn drop(&mut self) {
        let _ = self.give.try_recv();
    }
}

impl PublishSlots {
    /// Room for `capacity` (at least 1) messages in flight.
    pub fn new(capacity: usize) -> Self {
        let (take, give) = crossbeam_channel::bounded(capacity.max(1));
        Self {
            take,
            give,
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    fn slot(&self) -> PublishSlot {
        PublishSlot {
            give: self.give.clone(),
            refused: Arc::clone(&self.refused),
        }
    }

    /// A slot now, or `None` (counted as refused) when every slot is taken.
    pub fn try_take(&self) -> Option<PublishSlot> {
        match self.take.try_send(()) {
            Ok(()) => Some(self.slot()),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// A slot, waiting up to `timeout` on the calling thread (counted as refused when
    /// none frees in time).
    pub fn take_timeout(&self, timeout: Duration) -> Option<PublishSlot> {
        match self.take.send_timeout((), timeout) {
            Ok(()) => Some(self.slot()),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Messages refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// A message from the host on its way to a shard, holding its slot (none for messages
/// injected directly, as tests and benches do).
#[derive(Debug)]
pub struct Injected {
    pub(crate) publish: Publish,
    pub(crate) slot: Option<PublishSlot>,
    /// Told whether any subscription matched once the shard routed it
    /// (`BrokerHandle::publish_routed`).
    pub(crate) routed: Option<Sender<bool>>,
}

impl Injected {
    pub fn new(publish: Publish, slot: PublishSlot) -> Self {
        Self {
            publish,
            slot: Some(slot),
            routed: None,
        }
    }

    /// [`Injected::new`], reporting on `routed` once routed.
    pub(crate) fn reporting(publish: Publish, slot: PublishSlot, routed: Sender<bool>) -> Self {
        Self {
            routed: Some(routed),
            ..Self::new(publish, slot)
        }
    }

    /// The host's count of refusals (what `$SYS` reports), if it came through the slots.
    pub(crate) fn refused(&self) -> Option<&Arc<AtomicU64>> {
        self.slot.as_ref().map(|s| &s.refused)
    }
}

impl From<Publish> for Injected {
    fn from(publish: Publish) -> Self {
        Self {
            publish,
            slot: None,
            routed: None,
        }
    }
}

/// Who published a message delivered to an in-process [`Subscription`].
///
/// ```
/// # fn f(m: &shardmq::Message) {
/// match m.source() {
///     shardmq::Source::Client(from) => println!("from {} at {}", from.client_id(), from.peer()),
///     shardmq::Source::Host => println!("published by this process"),
///     other => println!("{other:?}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// An MQTT client: its client id, user name, listener, address and protocol level.
    Client(Origin),
    /// The host, through [`crate::BrokerHandle::publish`] (or `publish_timeout`,
    /// `publish_routed`).
    Host,
    /// The broker itself: a client's will, a `$SYS` report.
    Broker,
    /// A retained message delivered when the subscription was made (its publisher is
    /// not kept with it).
    Retained,
    /// A message that reached a shared (`$share/`) in-process subscription from another
    /// shard (or handed over by a member that left): who published it does not travel
    /// between shards.
    Unknown,
}

/// A message delivered to an in-process [`Subscription`]. Cloning it is cheap (topic,
/// payload and binary properties are shared, reference-counted buffers).
///
/// ```
/// # fn f(m: &shardmq::Message) {
/// println!("{} ({:?}, {} bytes)", m.topic(), m.qos(), m.payload().len());
/// for (name, value) in m.properties().user_properties() {
///     println!("  {name}: {value}");
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published on.
    pub(crate) topic: ByteStr,
    /// The payload (a copy: it keeps no read buffer alive).
    pub(crate) payload: Bytes,
    /// The lower of the publisher's QoS and the subscription's.
    pub(crate) qos: QoS,
    /// True only for retained messages delivered when the subscription was made.
    pub(crate) retain: bool,
    /// The publisher's MQTT 5 properties (topic alias and subscription identifiers
    /// removed); empty for 3.1.1 publishers.
    pub(crate) properties: Properties,
    /// Who published it.
    pub(crate) source: Source,
}

impl Message {
    /// The topic it was published on.
    pub fn topic(&self) -> &str {
        self.topic.as_str()
    }

    /// The topic as a shared buffer (no copy).
    pub fn topic_bytes(&self) -> Bytes {
        self.topic.as_bytes().clone()
    }

    /// The payload (a shared buffer: cloning it does not copy).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The lower of the publisher's QoS and the subscription's.
    pub fn qos(&self) -> QoS {
        self.qos
    }

    /// True only for retained messages delivered when the subscription was made (as an
    /// MQTT subscriber sees them [MQTT-3.3.1-9]).
    pub fn is_retained(&self) -> bool {
        self.retain
    }

    /// Who published it.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The publisher's MQTT 5 properties (empty for MQTT 3.1.1 publishers).
    pub fn properties(&self) -> MessageProperties<'_> {
        MessageProperties(&self.properties)
    }
}

impl Message {
    pub(in crate::broker) fn from_publish(p: &Publish, qos: QoS, source: &Source) -> Self {
        Self {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
            qos: p.qos.min(qos),
            retain: false,
            properties: p.properties.clone(),
            source: source.clone(),
        }
    }

    pub(in crate::broker) fn from_retained(m: &RetainedMessage, qos: QoS) -> Self {
        Self {
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            qos: m.qos.min(qos),
            retain: true,
            properties: m.properties.clone(),
            source: Source::Retained,
        }
    }
}

/// Why [`crate::BrokerHandle::subscribe`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The filter is not a valid MQTT topic filter.
    #[error("invalid topic filter: {0}")]
    InvalidFilter(#[from] TopicError),
    /// The broker has stopped.
    #[error("the broker has stopped")]
    Stopped,
}

/// Validates an in-process subscription's filter: the filter to match and, for a shared
/// subscription, the whole `$share/GROUP/FILTER`.
pub fn parse_filter(filter: &str) -> Result<(TopicFilter, Option<ByteStr>), SubscribeError> {
    match crate::topic::SharedFilter::try_parse(filter)? {
        Some(share) => Ok((share.filter, Some(ByteStr::from(filter)))),
        None => Ok((TopicFilter::parse(filter)?, None)),
    }
}

/// One shard's copy of an in-process subscription (what the runtime installs).
#[derive(Debug, Clone)]
pub struct InternalSub {
    pub id: u64,
    pub filter: TopicFilter,
    pub qos: QoS,
    pub tx: Sender<Message>,
    /// Messages dropped because the channel was full (shared by every shard's copy).
    pub dropped: Arc<AtomicU64>,
    /// `$share/GROUP/FILTER` for a member of a shared group (held by one shard only).
    pub share: Option<ByteStr>,
}

/// Messages of one in-process subscription, in order per publisher. Dropping it removes
/// the subscription from every shard. The channel ends (`recv` returns an error, `iter`
/// stops) when the broker stops.
pub struct Subscription {
    filter: TopicFilter,
    rx: Receiver<Message>,
    dropped: Arc<AtomicU64>,
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter)
            .field("queued", &self.rx.len())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Used by the runtime: `on_drop` removes the subscription from the shards.
    pub(crate) fn new(
        filter: TopicFilter,
        rx: Receiver<Message>,
        dropped: Arc<AtomicU64>,
        on_drop: Box<dyn FnOnce() + Send + Sync>,
    ) -> Self {
        Self {
            filter,
            rx,
            dropped,
            on_drop: Some(on_drop),
        }
    }

    /// The subscription's topic filter.
    pub fn filter(&self) -> &TopicFilter {
        &self.filter
    }

    /// Blocks until a message arrives; errs once the broker has stopped and the channel
    /// is empty.
    pub fn recv(&self) -> Result<Message, RecvError> {
        self.rx.recv()
    }

    /// [`Subscription::recv`], giving up after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// A message if one is queued, without waiting.
    pub fn try_recv(&self) -> Result<Message, crossbeam_channel::TryRecvError> {
        self.rx.try_recv()
    }

    /// Blocking iterator; ends when the broker stops.
    pub fn iter(&self) -> crossbeam_channel::Iter<'_, Message> {
        self.rx.iter()
    }

    /// Non-blocking iterator over what is queued now.
    pub fn try_iter(&self) -> crossbeam_channel::TryIter<'_, Message> {
        self.rx.try_iter()
    }

    /// The channel itself (e.g. for `crossbeam_channel::select!`).
    pub fn receiver(&self) -> &Receiver<Message> {
        &self.rx
    }

    /// Messages dropped so far because the channel was full (all shards).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}
