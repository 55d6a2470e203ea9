//! The local matches of the last few topics this shard matched: a publisher mostly
//! repeats its topic (and a message from another shard was matched once already by its
//! sender), so routing looks a topic's local subscribers up here before it walks its
//! trie (a cross-shard message's second walk was about 590 of its ~830 extra
//! instructions, `perf/results/2026-12-03-cross-shard.md`; on the publishing side the
//! cache cut fan-in QoS 0 from 3,373 to 2,793 instructions per message and pairs from
//! 3,522 to 3,056, `perf/results/2026-12-03-match-cache.md`). Other shards' interest is
//! not cached: it comes from the interest snapshot on every publish.
//!
//! Exact by construction: an entry holds the index generation it was computed at, and
//! routing bumps the generation on every change of its index (local subscribe and
//! unsubscribe, which every session end, takeover and move goes through; other shards'
//! interest is not in the index but in the interest snapshot), so an entry is used only while the index is the one that produced
//! it. It never walks the index itself, never holds a slice of a message (the topic is
//! copied into a reused buffer) and never grows past [`ENTRIES`] entries of at most
//! [`MAX_TARGETS`] targets and [`MAX_TOPIC`] bytes.

use crate::session::Subscription;

/// Topics remembered (a few publishers interleaving on one peer still hit).
pub(super) const ENTRIES: usize = 4;
/// Longest target list kept: a larger fan-out is matched every time (its per-target work
/// dwarfs one walk, and the cache stays small).
pub(super) const MAX_TARGETS: usize = 256;
/// Longest topic kept, in bytes.
pub(super) const MAX_TOPIC: usize = 256;

#[derive(Debug, Default)]
struct Entry {
    /// Index generation the entry was computed at; 0: empty.
    generation: u64,
    topic: String,
    targets: Vec<(usize, Subscription)>,
}

/// A few (topic -> local targets) results of routing's index at a known generation.
#[derive(Debug, Default)]
pub(super) struct RecentMatches {
    entries: [Entry; ENTRIES],
    /// The entry the next store replaces (round robin).
    next: usize,
}

impl RecentMatches {
    /// Copies the targets remembered for `topic` at `generation` into `out` (cleared
    /// first); false, `out` untouched, when there are none.
    #[inline]
    pub(super) fn lookup(
        &self,
        topic: &str,
        generation: u64,
        out: &mut Vec<(usize, Subscription)>,
    ) -> bool {
        let Some(e) = self
            .entries
            .iter()
            .find(|e| e.generation == generation && e.topic == topic)
        else {
            return false;
        };
        out.clear();
        out.extend_from_slice(&e.targets);
        true
    }

    /// Remembers `targets` as `topic`'s matches at `generation` (nonzero), unless the
    /// topic or the list is too long to keep.
    pub(super) fn store(
        &mut self,
        topic: &str,
        generation: u64,
        targets: &[(usize, Subscription)],
    ) {
        if topic.len() > MAX_TOPIC || targets.len() > MAX_TARGETS {
            return;
        }
        // The topic's own (stale) entry, so one topic never fills two; else an entry of
        // an older generation (useless now); else round robin.
        let slot = self
            .entries
            .iter()
            .position(|e| e.topic == topic)
            .or_else(|| self.entries.iter().position(|e| e.generation != generation))
            .unwrap_or_else(|| {
                let n = self.next;
                self.next = (n + 1) % ENTRIES;
                n
            });
        let Some(e) = self.entries.get_mut(slot) else {
            return;
        };
        e.generation = generation;
        e.topic.clear();
        e.topic.push_str(topic);
        e.targets.clear();
        e.targets.extend_from_slice(targets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::SubscriptionOptions;

    fn sub(id: u32) -> Subscription {
        Subscription {
            options: SubscriptionOptions::default(),
            id: Some(id),
        }
    }

    #[test]
    fn hit_only_at_the_same_generation_and_topic() {
        let mut r = RecentMatches::default();
        let mut out = vec![(9, sub(9))];
        assert!(!r.lookup("a/b", 1, &mut out));
        assert_eq!(out, vec![(9, sub(9))], "a miss leaves the list alone");
        r.store("a/b", 1, &[(1, sub(1)), (2, sub(2))]);
        assert!(r.lookup("a/b", 1, &mut out));
        assert_eq!(out, vec![(1, sub(1)), (2, sub(2))]);
        assert!(!r.lookup("a/b", 2, &mut out), "stale after an index change");
        assert!(!r.lookup("a/c", 1, &mut out));
        assert!(!r.lookup("a/b/", 1, &mut out));
    }

    #[test]
    fn replaces_its_own_topic_then_stale_entries_then_round_robin() {
        let mut r = RecentMatches::default();
        let mut out = Vec::new();
        for (i, t) in ["t0", "t1", "t2", "t3"].iter().enumerate() {
            r.store(t, 1, &[(i, sub(0))]);
        }
        // a stale t1 refreshed in place: t0 (next to go) stays
        r.store("t1", 2, &[(7, sub(0))]);
        r.store("t0", 2, &[]);
        assert!(r.lookup("t0", 2, &mut out));
        assert!(out.is_empty());
        assert!(r.lookup("t1", 2, &mut out));
        assert_eq!(out, vec![(7, sub(0))]);
        // t2 and t3 are stale: t4 takes one of them
        r.store("t4", 2, &[(4, sub(0))]);
        assert!(r.lookup("t4", 2, &mut out));
        assert!(r.lookup("t1", 2, &mut out) && r.lookup("t0", 2, &mut out));
        // all current: round robin (one of t0, t1, t4, t3/t2 goes), the newest stays
        r.store("t5", 2, &[(5, sub(0))]);
        assert!(r.lookup("t5", 2, &mut out));
        let kept = ["t0", "t1", "t2", "t3", "t4"]
            .iter()
            .filter(|t| r.lookup(t, 2, &mut out))
            .count();
        assert_eq!(kept, ENTRIES - 1);
    }

    #[test]
    fn too_long_topics_and_fan_outs_are_not_kept() {
        let mut r = RecentMatches::default();
        let mut out = Vec::new();
        let long = "x".repeat(MAX_TOPIC + 1);
        r.store(&long, 1, &[(1, sub(1))]);
        assert!(!r.lookup(&long, 1, &mut out));
        let many: Vec<_> = (0..=MAX_TARGETS).map(|k| (k, sub(0))).collect();
        r.store("big", 1, &many);
        assert!(!r.lookup("big", 1, &mut out));
        r.store("big", 1, &many[..MAX_TARGETS]);
        assert!(r.lookup("big", 1, &mut out));
        assert_eq!(out.len(), MAX_TARGETS);
    }

    /// One step of the model test.
    #[derive(Debug, Clone)]
    enum Op {
        Subscribe { filter: usize, key: usize, id: u32 },
        Unsubscribe { filter: usize, key: usize },
        Receive { topic: usize },
    }

    const FILTERS: [&str; 9] = [
        "a/b", "a/+", "a/#", "#", "+/b", "a/b/c", "$SYS/x", "+/+/c", "x",
    ];
    const TOPICS: [&str; 7] = ["a/b", "a/c", "a/b/c", "x/b", "$SYS/x", "a", "x"];

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            1 => (0..FILTERS.len(), 0usize..5, 0u32..3)
                .prop_map(|(filter, key, id)| Op::Subscribe { filter, key, id }),
            1 => (0..FILTERS.len(), 0usize..5).prop_map(|(filter, key)| Op::Unsubscribe { filter, key }),
            4 => (0..TOPICS.len()).prop_map(|topic| Op::Receive { topic }),
        ]
    }

    proptest::proptest! {
        /// The cached match of a received message is exactly the uncached walk (same
        /// targets, same order) after any sequence of subscribes (including replacing
        /// a subscription's options) and unsubscribes.
        #[test]
        fn match_received_equals_the_uncached_match(ops in proptest::collection::vec(op(), 1..80)) {
            use std::sync::Arc;
            use crate::codec::QoS;
            use crate::config::ShareStrategy;
            use crate::topic::TopicFilter;
            use super::super::Routing;
            let mut routing = Routing::new(0, 3, ShareStrategy::default(), Arc::default());
            for op in ops {
                match op {
                    Op::Subscribe { filter, key, id } => {
                        let f = TopicFilter::try_from(FILTERS[filter]).expect("valid filter");
                        let mut s = sub(id);
                        s.options.qos = if id == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                        let _ = routing.subscribe(&f, key, s);
                    }
                    Op::Unsubscribe { filter, key } => {
                        let _ = routing.unsubscribe(FILTERS[filter], key);
                    }
                    Op::Receive { topic } => {
                        let topic = TOPICS[topic];
                        routing.match_received(topic);
                        let got = routing.targets.clone();
                        routing.walk(topic);
                        proptest::prop_assert_eq!(&got, &routing.targets, "topic {}", topic);
                    }
                }
            }
        }
    }

    /// The generation `topic` is cached at in `routing` (0: not cached).
    fn routing_generation_hit(routing: &super::super::Routing, topic: &str) -> u64 {
        routing
            .recent
            .entries
            .iter()
            .find(|e| e.topic == topic)
            .map_or(0, |e| e.generation)
    }

    /// The cache is used: a stream of one topic walks the trie once, and any index
    /// change (even one that does not concern the topic) makes the next message walk.
    #[test]
    fn a_repeated_topic_is_answered_from_the_cache_until_the_index_changes() {
        use super::super::Routing;
        use crate::config::ShareStrategy;
        use crate::topic::TopicFilter;
        use std::sync::Arc;
        let mut routing = Routing::new(0, 2, ShareStrategy::default(), Arc::default());
        let f = TopicFilter::try_from("a/+").expect("valid filter");
        let _ = routing.subscribe(&f, 3, sub(1));
        routing.match_received("a/b");
        assert_eq!(routing.targets, vec![(3, sub(1))]);
        assert_eq!(routing_generation_hit(&routing, "a/b"), routing.generation);
        // a cached answer even when the trie would say otherwise proves the lookup is used
        routing.recent.entries[0].targets = vec![(8, sub(8))];
        routing.match_received("a/b");
        assert_eq!(routing.targets, vec![(8, sub(8))]);
        let other = TopicFilter::try_from("z").expect("valid filter");
        let _ = routing.subscribe(&other, 4, sub(2));
        routing.match_received("a/b");
        assert_eq!(
            routing.targets,
            vec![(3, sub(1))],
            "walked again after a change"
        );
    }
}
