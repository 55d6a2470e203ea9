//! A shard's table of in-process subscribers (embedding API): filter -> bounded channel.
//!
//! Every shard holds every internal subscription (the runtime installs it on all shards),
//! and a shard offers them only the messages published on it, never those other shards
//! hand it: so a message reaches a subscription exactly once, without a cross-shard hop.
//! The table is consulted only when it is non-empty, so the publish path pays one length
//! check when no host process subscribes. A delivered message's topic and payload are one
//! copy per publish (shared by the matching subscriptions), so messages the host keeps
//! never pin a connection's read buffer.
//!
//! It must never block a shard: delivery is `try_send`; a message for a full channel is
//! dropped and counted (returned to the caller for `publish_dropped`, and in
//! [`crate::Subscription::dropped`]), whatever its QoS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use smallvec::SmallVec;

use crate::broker::embed::{InternalSub, Message, Source};
use crate::codec::{Publish, QoS};
use crate::retained::RetainedStore;
use crate::topic::{TopicFilter, TopicIndex};

#[derive(Debug)]
struct Entry {
    filter: TopicFilter,
    tx: Sender<Message>,
    dropped: Arc<AtomicU64>,
    /// A QoS 1/2 drop was logged already (once per subscription and shard).
    warned: bool,
}

/// An in-process member of a shared subscription group (`$share/GROUP/FILTER`): it
/// sits in routing's group table on one shard only, like a session, and gets the copies
/// that shard's member choice gives it.
#[derive(Debug)]
pub(in crate::broker) struct GroupMember {
    /// `$share/GROUP/FILTER` as subscribed.
    pub(in crate::broker) share: crate::codec::ByteStr,
    entry: Entry,
}

/// A shard's internal subscribers.
#[derive(Debug, Default)]
pub(in crate::broker) struct InternalSubs {
    index: TopicIndex<u64, QoS>,
    subs: HashMap<u64, Entry>,
    /// In-process members of shared groups that this shard holds, by subscription id.
    members: HashMap<u64, GroupMember>,
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

impl InternalSubs {
    pub(super) fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.subs.len()
    }

    /// Removes a subscription; false if it was not there.
    pub(super) fn remove(&mut self, id: u64) -> bool {
        match self.subs.remove(&id) {
            Some(e) => {
                self.index.remove(e.filter.as_str(), &id);
                true
            }
            None => false,
        }
    }

    /// Installs `sub`; with `retained`, first offers it the matching messages of that
    /// store. Returns the messages dropped on a full channel.
    pub(super) fn add(&mut self, sub: InternalSub, retained: Option<&RetainedStore>) -> u64 {
        let mut entry = Entry {
            filter: sub.filter,
            tx: sub.tx,
            dropped: sub.dropped,
            warned: false,
        };
        let mut dropped = 0;
        if let Some(store) = retained {
            // Offered as the walk finds them: nothing collected (the channel's capacity
            // bounds what is kept; the rest is counted as dropped).
            let filter = entry.filter.clone();
            let mut gone = false;
            store.for_each_match(&filter, |m| {
                if !gone {
                    gone = !offer(&mut entry, Message::from_retained(m, sub.qos), &mut dropped);
                }
            });
            if gone {
                return 0; // nobody is listening any more
            }
        }
        self.remove(sub.id);
        self.index.insert(&entry.filter, sub.id, sub.qos);
        self.subs.insert(sub.id, entry);
        dropped
    }

    /// Holds in-process group member `sub` (its `share` is set).
    pub(in crate::broker) fn add_member(&mut self, sub: InternalSub, share: crate::codec::ByteStr) {
        let entry = Entry {
            filter: sub.filter,
            tx: sub.tx,
            dropped: sub.dropped,
            warned: false,
        };
        self.members.insert(sub.id, GroupMember { share, entry });
    }

    /// Forgets in-process group member `id`; returns it if it was here.
    pub(in crate::broker) fn remove_member(&mut self, id: u64) -> Option<GroupMember> {
        self.members.remove(&id)
    }

    /// Whether member `id`'s channel has room (a gone or unknown member has none).
    pub(in crate::broker) fn member_has_room(&self, id: u64) -> bool {
        self.members.get(&id).is_some_and(|m| !m.entry.tx.is_full())
    }

    /// Offers `msg` to member `id`. Returns the copies dropped (a full channel), or
    /// `None` when the member's receiving side is gone (or it is unknown): the message
    /// was not taken.
    pub(in crate::broker) fn offer_member(&mut self, id: u64, msg: Message) -> Option<u64> {
        let m = self.members.get_mut(&id)?;
        let mut dropped = 0;
        offer(&mut m.entry, msg, &mut dropped).then_some(dropped)
    }

    /// Offers a message published on this shard to the matching subscriptions (the
    /// $-rule [MQTT-4.7.2-1] is the index's), saying it came from `source`. Returns
    /// whether any matched and how many copies were dropped.
    pub(super) fn deliver(&mut self, publish: &Publish, source: &Source) -> (bool, u64) {
        let Self { index, subs, .. } = self;
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
                properties: publish.properties.compact(),
                ..Publish::default()
            });
            if !offer(entry, Message::from_publish(p, *qos, source), &mut dropped) {
                gone.push(*id);
            }
        });
        for id in gone {
            self.remove(id);
        }
        (compact.is_some(), dropped)
    }
}
