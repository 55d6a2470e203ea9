//! In-process subscriptions of the embedding API: the [`Message`] a host process receives,
//! the [`Subscription`] it receives them through, and each shard's small table of
//! internal subscribers (filter -> bounded channel).
//!
//! Every shard holds every internal subscription (the runtime installs it on all shards),
//! and a shard delivers only the messages published on it (`route`), never those other
//! shards hand it: so a message reaches a subscription exactly once, without a
//! cross-shard hop. The table is consulted only when it is non-empty, so the publish path
//! pays one length check when no host process subscribes. A delivered message's topic
//! and payload are one copy per publish (shared by the matching subscriptions), so
//! messages the host keeps never pin a connection's read buffer.
//!
//! It must never block a shard: delivery is `try_send`; a message for a full channel is
//! dropped and counted (`publish_dropped` and [`Subscription::dropped`]), whatever its
//! QoS. It never touches threads or sockets itself: unsubscribing on drop is a closure the
//! runtime supplies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvError, RecvTimeoutError, Sender, TrySendError};
use smallvec::SmallVec;

use crate::codec::{ByteStr, Properties, Publish, QoS};
use crate::retained::RetainedMessage;
use crate::topic::{TopicError, TopicFilter, TopicIndex};

use super::Broker;

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
    fn from_publish(p: &Publish, qos: QoS) -> Self {
        Self {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
            qos: p.qos.min(qos),
            retain: false,
            properties: p.properties.clone(),
        }
    }

    fn from_retained(m: &RetainedMessage, qos: QoS) -> Self {
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

#[derive(Debug)]
struct Entry {
    filter: TopicFilter,
    tx: Sender<Message>,
    dropped: Arc<AtomicU64>,
    /// A QoS 1/2 drop was logged already (once per subscription and shard).
    warned: bool,
}

/// A shard's internal subscribers.
#[derive(Debug, Default)]
pub(super) struct InternalSubs {
    index: TopicIndex<u64, QoS>,
    subs: HashMap<u64, Entry>,
}

impl InternalSubs {
    pub(super) fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    fn remove(&mut self, id: u64) -> bool {
        match self.subs.remove(&id) {
            Some(e) => {
                self.index.remove(e.filter.as_str(), &id);
                true
            }
            None => false,
        }
    }
}

/// Offers `msg` to a subscription's channel; counts (and for QoS 1/2 logs once) a drop.
/// Returns false when the receiving side is gone.
fn offer(entry: &mut Entry, msg: Message, dropped: &mut u64) -> bool {
    match entry.tx.try_send(msg) {
        Ok(()) => true,
        Err(TrySendError::Full(msg)) => {
            *dropped += 1;
            entry.dropped.fetch_add(1, Ordering::Relaxed);
            if msg.qos != QoS::AtMostOnce && !entry.warned {
                entry.warned = true;
                crate::log_warning!(
                    "Warning: in-process subscription to {} is full; QoS {} messages are being dropped.",
                    entry.filter,
                    msg.qos as u8
                );
            }
            true
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

impl Broker {
    /// Installs an in-process subscription on this shard; with `with_retained`, first
    /// offers it the matching retained messages of this shard's replica (the runtime asks
    /// one shard only, so they arrive once).
    pub fn add_internal(&mut self, sub: InternalSub, with_retained: bool) {
        let mut entry = Entry {
            filter: sub.filter,
            tx: sub.tx,
            dropped: sub.dropped,
            warned: false,
        };
        if with_retained {
            let mut found = Vec::new();
            self.retained
                .for_each_match(&entry.filter, |m| found.push(Arc::clone(m)));
            let mut dropped = 0;
            for m in found {
                if !offer(
                    &mut entry,
                    Message::from_retained(&m, sub.qos),
                    &mut dropped,
                ) {
                    return; // nobody is listening any more
                }
            }
            self.stats.publish_dropped += dropped;
        }
        self.internal.remove(sub.id);
        self.internal.index.insert(&entry.filter, sub.id, sub.qos);
        self.internal.subs.insert(sub.id, entry);
    }

    /// Removes an in-process subscription from this shard; false if it was not there.
    pub fn remove_internal(&mut self, id: u64) -> bool {
        self.internal.remove(id)
    }

    /// Number of in-process subscriptions installed on this shard.
    pub fn internal_subscriptions(&self) -> usize {
        self.internal.subs.len()
    }

    /// Delivers a message published on this shard to the matching in-process
    /// subscriptions (the $-rule [MQTT-4.7.2-1] is the index's). Returns whether any
    /// matched.
    pub(super) fn deliver_internal(&mut self, publish: &Publish) -> bool {
        let InternalSubs { index, subs } = &mut self.internal;
        let mut dropped = 0;
        let mut gone: SmallVec<[u64; 2]> = SmallVec::new();
        // The host may keep messages for long: copied once per publish (not per
        // subscription) so they never pin the connection's read buffer.
        let mut compact: Option<Publish> = None;
        index.for_each_match(publish.topic.as_str(), |id, qos| {
            let Some(entry) = subs.get_mut(id) else {
                return;
            };
            let p = compact.get_or_insert_with(|| Publish {
                topic: publish.topic.compact(),
                payload: Bytes::copy_from_slice(&publish.payload),
                qos: publish.qos,
                properties: publish.properties.clone(),
                ..Publish::default()
            });
            if !offer(entry, Message::from_publish(p, *qos), &mut dropped) {
                gone.push(*id);
            }
        });
        self.stats.publish_dropped += dropped;
        for id in gone {
            self.internal.remove(id);
        }
        compact.is_some()
    }
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
    pub fn new(
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
