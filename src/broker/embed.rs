//! The types of the embedding API's in-process subscriptions: the [`Message`] a host
//! process receives, the [`Subscription`] it receives them through, the
//! [`InternalSub`] the runtime installs on every shard, and [`SubscribeError`]. Each
//! shard's table of internal subscribers lives in `routing/internal.rs`; why a message
//! reaches a subscription exactly once, and never blocks a shard, is explained there.
//!
//! It never touches threads or sockets itself: unsubscribing on drop is a closure the
//! runtime supplies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvError, RecvTimeoutError, Sender};

use crate::codec::{ByteStr, Properties, Publish, QoS};
use crate::retained::RetainedMessage;
use crate::topic::{TopicError, TopicFilter};

/// Messages an in-process subscription's channel holds by default (see
/// [`crate::BrokerHandle::subscribe_with_capacity`]).
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 4096;

/// A message delivered to an in-process [`Subscription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: ByteStr,
    pub payload: Bytes,
    /// The lower of the publisher's QoS and the subscription's.
    pub qos: QoS,
    /// True only for retained messages delivered when the subscription was made (as an
    /// MQTT subscriber sees them [MQTT-3.3.1-9]).
    pub retain: bool,
    /// The publisher's MQTT 5 properties (topic alias and subscription identifiers
    /// removed); empty for 3.1.1 publishers.
    pub properties: Properties,
}

impl Message {
    pub(in crate::broker) fn from_publish(p: &Publish, qos: QoS) -> Self {
        Self {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
            qos: p.qos.min(qos),
            retain: false,
            properties: p.properties.clone(),
        }
    }

    pub(in crate::broker) fn from_retained(m: &RetainedMessage, qos: QoS) -> Self {
        Self {
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            qos: m.qos.min(qos),
            retain: true,
            properties: m.properties.clone(),
        }
    }
}

/// Why [`crate::BrokerHandle::subscribe`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    #[error("invalid topic filter: {0}")]
    InvalidFilter(#[from] TopicError),
    #[error("shared subscriptions ($share/...) cannot be made in-process")]
    Shared,
    #[error("the broker has stopped")]
    Stopped,
}

/// Validates an in-process subscription's filter.
pub fn parse_filter(filter: &str) -> Result<TopicFilter, SubscribeError> {
    if crate::topic::SharedFilter::is_shared(filter) {
        return Err(SubscribeError::Shared);
    }
    Ok(TopicFilter::parse(filter)?)
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

    pub fn filter(&self) -> &TopicFilter {
        &self.filter
    }

    /// Blocks until a message arrives; errs once the broker has stopped and the channel
    /// is empty.
    pub fn recv(&self) -> Result<Message, RecvError> {
        self.rx.recv()
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

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
