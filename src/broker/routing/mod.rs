//! The routing part of a shard's broker: where messages go. It owns the subscription
//! index (local subscriptions only, under their session's slab key), this shard's
//! snapshot of the process-wide interest of every shard (a hash lookup per publish while
//! some shard has a wildcard-free filter, a walk of the shared wildcard trie while some
//! shard has a wildcard filter; see `cross/interest.rs`), fan-out
//! planning (matching, and merging a client's overlapping subscriptions into one
//! delivery; a message from another shard is matched from the last few received topics'
//! results while the index is unchanged, `recent.rs`), the shared subscription groups and their choice of one member per message
//! (`shared.rs`), encode-once ([`Encoder`]), the retained store with its budgeted delivery
//! jobs, and the in-process (embedding) subscribers.
//!
//! It decides *who* gets a message and *as what*, never whether a subscriber can take it:
//! sessions, connections and flow control are the coordinator's to consult. It never
//! sends to another shard, never queues output and never blocks.

mod encode;
mod internal;
mod recent;
mod shared;

use std::collections::VecDeque;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::codec::{Publish, QoS};
use crate::config::ShareStrategy;
use crate::mailbox::ShardId;
use crate::retained::{RetainedCursor, RetainedMessage, RetainedStore};
use crate::session::{Message, Subscription};
use crate::topic::{TopicFilter, TopicIndex};

use super::cross::{InterestSnapshot, InterestTable};
use super::embed::InternalSub;

pub(super) use encode::{frame_class, Encoder, Frame, Frames};
#[cfg(test)]
pub(super) use encode::{packet_id_offset, publish_flags};
pub(super) use shared::{hash_str, LocalPick};

/// Retained messages handed to one subscription per batch.
pub(super) const RETAINED_BATCH: usize = 256;
/// Retained-store nodes one batch may visit (a filter that matches little of a large
/// store costs at most this per batch, not a walk of the whole store).
pub(super) const RETAINED_VISITS: usize = 4 * RETAINED_BATCH;

/// One subscriber's share of a message: the merge of its matching subscriptions.
#[derive(Debug)]
pub(super) struct Target {
    /// The session's slab key.
    pub(super) key: usize,
    /// The delivery QoS: the message's, at most the highest granted [MQTT-3.8.4-6].
    pub(super) qos: QoS,
    /// RETAIN as forwarded [MQTT-3.3.1-9] (v5 Retain As Published [MQTT-3.3.1-12]).
    pub(super) retain: bool,
    /// Every matching subscription identifier (v5).
    pub(super) sub_ids: SmallVec<[u32; 1]>,
}

/// Whether a key occurs twice in `targets`. `seen` is a bit set by key, all zero on
/// entry and on return (it only grows, to the highest session key).
fn has_repeated_key(seen: &mut Vec<u64>, targets: &[(usize, Subscription)]) -> bool {
    let mut repeated = None;
    for (n, &(key, _)) in targets.iter().enumerate() {
        let (word, bit) = (key / 64, 1u64 << (key % 64));
        if word >= seen.len() {
            seen.resize(word + 1, 0);
        }
        let Some(w) = seen.get_mut(word) else { break };
        if *w & bit != 0 {
            repeated = Some(n);
            break;
        }
        *w |= bit;
    }
    let set = repeated.unwrap_or(targets.len());
    for &(key, _) in targets.iter().take(set) {
        if let Some(w) = seen.get_mut(key / 64) {
            *w = 0;
        }
    }
    repeated.is_some()
}

/// A retained lookup in progress for one subscription.
#[derive(Debug)]
pub(super) struct RetainedJob {
    pub(super) key: usize,
    pub(super) uid: u64,
    pub(super) filter: TopicFilter,
    pub(super) granted: QoS,
    pub(super) sub_id: Option<u32>,
    cursor: RetainedCursor,
}

impl RetainedJob {
    pub(super) fn new(
        key: usize,
        uid: u64,
        filter: TopicFilter,
        granted: QoS,
        sub_id: Option<u32>,
    ) -> Self {
        Self {
            key,
            uid,
            filter,
            granted,
            sub_id,
            cursor: RetainedCursor::default(),
        }
    }
}

/// Index, retained store and fan-out planning of one shard.
#[derive(Debug)]
pub(super) struct Routing {
    /// Local subscriptions.
    index: TopicIndex<usize, Subscription>,
    /// Bumped by every change of `index` (never 0), so that `recent` is exact.
    generation: u64,
    /// Local matches of the last topics other shards sent (see `recent.rs`).
    recent: recent::RecentMatches,
    /// Every shard's interest: the newest snapshot of the process-wide table an
    /// `Interest` message brought (this shard's own bit masked out by `others`).
    remote: InterestSnapshot,
    /// The table itself (tests only: routing reads snapshots, never the live table).
    #[cfg_attr(not(test), allow(dead_code))]
    table: Arc<InterestTable>,
    /// Every shard but this one.
    others: u64,
    retained: RetainedStore,
    /// Retained lookups continued by `run_deferred`.
    jobs: VecDeque<RetainedJob>,
    internal: internal::InternalSubs,
    /// Shared subscription groups.
    groups: shared::Groups,
    /// Reused list of local matches.
    targets: Vec<(usize, Subscription)>,
    /// Scratch bit set by session key, all zero between calls: finds a session matched
    /// through two filters without sorting the targets (see [`Routing::take_targets`]).
    seen: Vec<u64>,
    encoder: Encoder,
}

impl Routing {
    /// Routing of shard `me` of `shards`, with the shared subscription `strategy`.
    pub(super) fn new(
        me: ShardId,
        shards: usize,
        strategy: ShareStrategy,
        table: Arc<InterestTable>,
    ) -> Self {
        Self {
            index: TopicIndex::new(),
            generation: 1,
            recent: recent::RecentMatches::default(),
            remote: InterestSnapshot::default(),
            table,
            others: !(1u64 << (me % 64)),
            retained: RetainedStore::new(),
            jobs: VecDeque::new(),
            internal: internal::InternalSubs::default(),
            groups: shared::Groups::new(me, shards, strategy),
            targets: Vec::new(),
            seen: Vec::new(),
            encoder: Encoder::new(),
        }
    }

    pub(super) fn encoder(&mut self) -> &mut Encoder {
        &mut self.encoder
    }

    // --- the index ----------------------------------------------------------------------

    /// Adds (or replaces) session `key`'s subscription to `filter`. Returns true when the
    /// session had none to this filter (the shard's interest may have grown).
    pub(super) fn subscribe(
        &mut self,
        filter: &TopicFilter,
        key: usize,
        sub: Subscription,
    ) -> bool {
        self.generation += 1;
        self.index.insert(filter, key, sub).is_none()
    }

    /// Local subscriptions to exactly `filter`.
    pub(super) fn subscribers_of(&self, filter: &str) -> usize {
        self.index.subscribers_of(filter)
    }

    /// Removes session `key`'s subscription to `filter`; true if there was one.
    pub(super) fn unsubscribe(&mut self, filter: &str, key: usize) -> bool {
        self.generation += 1;
        self.index.remove(filter, &key).is_some()
    }

    /// Another shard changed its interest: `snapshot` is the process-wide table as it
    /// was after the change (kept when newer than the one this shard routes by).
    pub(super) fn set_remote_interest(&mut self, snapshot: &InterestSnapshot) {
        self.remote.update(snapshot);
    }

    /// The process-wide interest table this shard shares with its siblings.
    #[cfg(test)]
    pub(super) fn interest_table(&self) -> &Arc<InterestTable> {
        &self.table
    }

    /// Local subscriptions (the index, plus this shard's members of shared groups).
    pub(super) fn local_subscriptions(&self) -> u64 {
        (self.index.len() + self.groups.local_members()) as u64
    }

    // --- shared subscription groups (see `shared.rs`) -------------------------------------

    /// The shared subscription groups (membership, member choice; see `shared.rs`).
    pub(super) fn groups(&self) -> &shared::Groups {
        &self.groups
    }

    pub(super) fn groups_mut(&mut self) -> &mut shared::Groups {
        &mut self.groups
    }

    /// The publishing shard's choice of member for each group matching `topic` (see
    /// `shared.rs`); returns the other shards that serve a group. One emptiness check
    /// while no group exists.
    #[inline]
    pub(super) fn route_groups(&mut self, topic: &str, client_hash: Option<u64>) -> u64 {
        if self.groups.is_empty() {
            return 0;
        }
        self.groups.route(topic, client_hash)
    }

    /// Shards (other than this one) with a subscriber matching `topic`.
    #[cfg(test)]
    pub(super) fn remote_dests(&self, topic: &str) -> u64 {
        self.remote_dests_of(topic)
    }

    /// Other shards with a filter matching `topic`. Emptiness checks only while no other
    /// shard has a subscription.
    #[inline]
    fn remote_dests_of(&self, topic: &str) -> u64 {
        self.remote.shards_for(topic) & self.others
    }

    // --- fan-out planning ---------------------------------------------------------------

    /// Matches `topic`: the local subscriptions go into the target list (see
    /// [`Routing::take_targets`]); returns the set of other shards with subscribers (bit
    /// j = shard j), or 0 when `remote` is false (a message another shard handed us).
    /// The local part is answered from the last few matched topics while the index is
    /// unchanged (`recent.rs`): a publisher's stream on one topic, or a stream another
    /// shard hands us, walks the trie once, not once per message.
    pub(super) fn match_topic(&mut self, topic: &str, remote: bool) -> u64 {
        if !self
            .recent
            .lookup(topic, self.generation, &mut self.targets)
        {
            self.walk(topic);
            self.recent.store(topic, self.generation, &self.targets);
        }
        if remote {
            self.remote_dests_of(topic)
        } else {
            0
        }
    }

    /// [`Routing::match_topic`] of a message another shard handed us (no remote
    /// destinations).
    pub(super) fn match_received(&mut self, topic: &str) {
        self.match_topic(topic, false);
    }

    /// The local subscriptions matching `topic` into the target list: one walk of the
    /// trie, no cache.
    fn walk(&mut self, topic: &str) {
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        self.index
            .for_each_match(topic, |k, s| targets.push((*k, *s)));
        self.targets = targets;
    }

    /// Empties the target list (a message only for shared subscription groups).
    pub(super) fn clear_targets(&mut self) {
        self.targets.clear();
    }

    /// Whether the last [`Routing::match_topic`] found local subscriptions.
    pub(super) fn has_targets(&self) -> bool {
        !self.targets.is_empty()
    }

    /// The local matches of the last [`Routing::match_topic`], each session's matches
    /// next to each other (what [`Routing::next_target`] merges); give the list back with
    /// [`Routing::put_targets`] (it is reused). The list is sorted only when a session
    /// matched through two filters: the index reports each (filter, session) once, so
    /// the common case (every session once) is one pass over a bit set, not a sort of
    /// the fan-out (a sort of 1,000 targets was a fifth of a QoS 0 fan-out's
    /// instructions).
    pub(super) fn take_targets(&mut self) -> Vec<(usize, Subscription)> {
        let mut targets = std::mem::take(&mut self.targets);
        if targets.len() > 1 && has_repeated_key(&mut self.seen, &targets) {
            targets.sort_unstable_by_key(|t| t.0);
        }
        targets
    }

    pub(super) fn put_targets(&mut self, targets: Vec<(usize, Subscription)>) {
        self.targets = targets;
    }

    /// The next subscriber's [`Target`] in `targets` (a session's matches next to each
    /// other) from `*i` on,
    /// merging its overlapping subscriptions into one delivery at the highest QoS
    /// [MQTT-3.3.5-1]. `is_origin(key)` says whether session `key` published `msg` (for No
    /// Local [MQTT-3.8.3-3]); it is asked only when a subscription sets No Local. `None`
    /// for a session all of whose matching subscriptions are No Local. `upgrade_qos`:
    /// `upgrade_outgoing_qos`.
    #[inline]
    pub(super) fn next_target(
        targets: &[(usize, Subscription)],
        i: &mut usize,
        msg: &Message,
        upgrade_qos: bool,
        mut is_origin: impl FnMut(usize) -> bool,
    ) -> Option<Target> {
        let key = targets.get(*i)?.0;
        let mut granted: Option<QoS> = None;
        let mut retain_as_published = false;
        let mut sub_ids: SmallVec<[u32; 1]> = SmallVec::new();
        while *i < targets.len() && targets[*i].0 == key {
            let sub = targets[*i].1;
            *i += 1;
            if sub.options.no_local && msg.origin.is_some() && is_origin(key) {
                continue; // [MQTT-3.8.3-3]
            }
            // One copy at the highest QoS of the overlapping subscriptions [MQTT-3.3.5-1].
            granted = granted.max(Some(sub.options.qos));
            retain_as_published |= sub.options.retain_as_published;
            if let Some(id) = sub.id {
                sub_ids.push(id);
            }
        }
        let granted = granted?;
        Some(Target {
            key,
            // [MQTT-3.8.4-6], unless `upgrade_outgoing_qos`.
            qos: super::options::outgoing_qos(msg.publish.qos, granted, upgrade_qos),
            // [MQTT-3.3.1-9] / v5 Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13].
            retain: retain_as_published && msg.publish.retain,
            sub_ids,
        })
    }

    // --- retained -----------------------------------------------------------------------

    /// Stores, replaces or (empty payload) deletes a retained message [MQTT-3.3.1-5]
    /// [MQTT-3.3.1-10]. Its topic and payload come compacted; so are its properties here
    /// (it is kept until replaced, and must not pin a read buffer).
    pub(super) fn set_retained(&mut self, mut msg: RetainedMessage) {
        if !msg.properties.is_empty() {
            msg.properties = msg.properties.compact();
        }
        self.retained.set(msg);
    }

    pub(super) fn retained_len(&self) -> usize {
        self.retained.len()
    }

    /// The retained store, read-only (tests, and the HTTP console's rows).
    pub(super) fn retained(&self) -> &RetainedStore {
        &self.retained
    }

    /// The next batch of retained messages for `job` into `found`: the store's walk
    /// resumes where the job's cursor stopped and visits at most [`RETAINED_VISITS`]
    /// nodes, handing at most [`RETAINED_BATCH`] messages. Returns true when the lookup
    /// is complete.
    pub(super) fn retained_batch(
        &self,
        job: &mut RetainedJob,
        found: &mut Vec<Arc<RetainedMessage>>,
    ) -> bool {
        self.retained.matches_budgeted(
            &job.filter,
            &mut job.cursor,
            RETAINED_BATCH,
            RETAINED_VISITS,
            found,
        )
    }

    /// Keeps `job` for `run_deferred`.
    pub(super) fn defer_job(&mut self, job: RetainedJob) {
        self.jobs.push_back(job);
    }

    pub(super) fn has_jobs(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Store nodes each deferred job visited in its last batch.
    #[cfg(test)]
    pub(super) fn job_visits(&self) -> Vec<usize> {
        self.jobs.iter().map(|j| j.cursor.visited()).collect()
    }

    /// The deferred jobs, to run one round of batches (put back what remains with
    /// [`Routing::defer_job`]).
    pub(super) fn take_jobs(&mut self) -> VecDeque<RetainedJob> {
        std::mem::take(&mut self.jobs)
    }

    // --- in-process subscribers -----------------------------------------------------------

    /// Installs an in-process subscription; with `with_retained`, first offers it the
    /// matching retained messages of this shard's replica. Returns the messages dropped.
    pub(super) fn add_internal(&mut self, sub: InternalSub, with_retained: bool) -> u64 {
        let retained = with_retained.then_some(&self.retained);
        self.internal.add(sub, retained)
    }

    /// The in-process subscribers (for shared-group members, `shared.rs`).
    pub(in crate::broker) fn internal(&self) -> &internal::InternalSubs {
        &self.internal
    }

    /// [`Routing::internal`], to change.
    pub(in crate::broker) fn internal_mut(&mut self) -> &mut internal::InternalSubs {
        &mut self.internal
    }

    pub(super) fn remove_internal(&mut self, id: u64) -> bool {
        self.internal.remove(id)
    }

    pub(super) fn internal_subscriptions(&self) -> usize {
        self.internal.len()
    }

    /// Whether this shard has in-process subscribers (the publish path's one check).
    pub(super) fn has_internal(&self) -> bool {
        !self.internal.is_empty()
    }

    /// Offers a message published on this shard by `source` to the in-process
    /// subscribers. Returns whether any matched and how many copies were dropped.
    pub(super) fn deliver_internal(
        &mut self,
        publish: &Publish,
        source: &crate::broker::embed::Source,
    ) -> (bool, u64) {
        self.internal.deliver(publish, source)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::SubscriptionOptions;

    fn sub() -> Subscription {
        Subscription {
            options: SubscriptionOptions::default(),
            id: None,
        }
    }

    proptest! {
        /// The bit set finds a repeated key exactly when there is one, and is all zero
        /// again afterwards (the next call starts clean).
        #[test]
        fn has_repeated_key_matches_a_set(keys in prop::collection::vec(0usize..300, 0..64)) {
            let mut seen = Vec::new();
            let targets: Vec<_> = keys.iter().map(|&k| (k, sub())).collect();
            let unique: std::collections::HashSet<_> = keys.iter().collect();
            prop_assert_eq!(has_repeated_key(&mut seen, &targets), unique.len() != keys.len());
            prop_assert!(seen.iter().all(|&w| w == 0));
        }

        /// Whatever the match order, `take_targets` leaves each session's matches next
        /// to each other (what `next_target` merges).
        #[test]
        fn take_targets_groups_each_session(keys in prop::collection::vec(0usize..40, 0..64)) {
            let mut routing = Routing::new(0, 1, ShareStrategy::default(), Arc::default());
            routing.targets = keys.iter().map(|&k| (k, sub())).collect();
            let targets = routing.take_targets();
            let mut got: Vec<usize> = targets.iter().map(|t| t.0).collect();
            got.dedup();
            let unique: std::collections::HashSet<_> = keys.iter().collect();
            prop_assert_eq!(got.len(), unique.len());
            prop_assert_eq!(targets.len(), keys.len());
            prop_assert!(routing.seen.iter().all(|&w| w == 0));
        }
    }
}
