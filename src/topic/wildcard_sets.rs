//! [`WildcardSets`]: a persistent index from topic filters with '+' or '#' to the set of
//! shards (`u64`, bit j = shard j) subscribed to them, shared by every shard of the
//! process as read-mostly snapshots, like [`super::ShardSets`] for wildcard-free filters.
//!
//! It is a trie whose nodes are not linked by pointers but named by a keyed hash of
//! their path: the node of the filter prefix "a/+/b" has the key
//! `child(child(child(ROOT, "a"), "+"), "b")`, and every node is one entry of a
//! [`FingerprintMap`] (the persistent map of `shard_sets.rs`): the shards whose filter
//! ends at the node, those whose filter ends at the node followed by '#', and how many
//! (shard, filter) entries continue below it through an exact level or through '+'. A
//! change copies only the leaves of the nodes on the filter's path (and the map's root
//! and inner nodes that a snapshot still shares), never a wide node's whole child map,
//! so a clone (a snapshot) costs one reference count and a change costs about one small
//! leaf per filter level. Memory: one 32-byte entry per distinct node, independent of the
//! number of shards (a filter adds one node per level it does not share with another).
//!
//! Matching a topic walks the levels from the root with an explicit stack (on the
//! machine stack for up to 32 pending branches): at each node one lookup for the exact
//! child and one for the '+' child, each only when some filter continues that way. A
//! filter starting with a wildcard never matches a topic starting with '$'
//! [MQTT-4.7.2-1]. Two paths with one key (a 64-bit collision of the hash, keyed by a
//! per-process secret, so not computable offline) merge their entries: while both are
//! present that only adds shards to a match (a message sent to a shard that then finds
//! no subscriber for it); but if one shard had a filter ending at each of the two paths,
//! removing one clears that shard's bit for both (the other filter then gets no messages
//! from other shards until it is subscribed again). The chance that any two of n distinct
//! nodes collide is about n^2 / 2^65 (3e-8 for a million nodes). Nothing here recurses, allocates on a lookup (below 32 pending
//! branches), does I/O or panics.

use std::hash::{BuildHasher, Hash, Hasher};

use smallvec::SmallVec;

use super::shard_sets::FingerprintMap;
use crate::hash::SeededState;

/// The key of the root node (the empty prefix).
const ROOT: u64 = 0x6a09_e667_f3bc_c908;

/// One node of the trie: the entry of its key.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Node {
    /// Shards with a filter ending here ("a/b" for node "a/b").
    exact: u64,
    /// Shards with a filter ending here followed by '#' ("a/b/#" for node "a/b").
    hash: u64,
    /// (shard, filter) entries continuing below through an exact level.
    below: u32,
    /// (shard, filter) entries continuing below through '+'.
    below_plus: u32,
}

/// The key of the child of node `parent` at `level` ("+" for the '+' child: a topic
/// level never is "+").
#[inline]
fn child(parent: u64, level: &str) -> u64 {
    let mut h = SeededState.build_hasher();
    h.write_u64(parent);
    level.hash(&mut h);
    h.finish()
}

/// Splits "a/b/c" into ("a", Some("b/c")) and "a" into ("a", None).
#[inline]
fn split_first(rest: &str) -> (&str, Option<&str>) {
    match rest.as_bytes().iter().position(|&b| b == b'/') {
        Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i + 1..)),
        None => (rest, None),
    }
}

/// The keys of the nodes on `filter`'s path, root first, each with whether the path
/// goes on from it through '+'; the key of the node the filter ends at; whether it ends
/// with '#'.
fn path_of(filter: &str) -> (SmallVec<[(u64, bool); 16]>, u64, bool) {
    let mut path: SmallVec<[(u64, bool); 16]> = SmallVec::new();
    let mut key = ROOT;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level == "#" && levels.peek().is_none() {
            return (path, key, true);
        }
        path.push((key, level == "+"));
        key = child(key, level);
    }
    (path, key, false)
}

/// Wildcard filter -> shard set; see the module documentation.
#[derive(Clone, Default)]
pub struct WildcardSets {
    nodes: FingerprintMap<Node>,
    /// (shard, filter) entries.
    len: usize,
}

impl WildcardSets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (`add`) or removes shard `shard` (below 64) to or from the set of `filter` (a
    /// valid filter; '#' only as its last level). Returns whether the shard was in the
    /// set before.
    pub fn set(&mut self, filter: &str, shard: usize, add: bool) -> bool {
        let bit = 1u64 << (shard % 64);
        let (path, key, hash) = path_of(filter);
        let end = self.nodes.get(key);
        let before = if hash { end.hash } else { end.exact } & bit != 0;
        if before == add {
            return before;
        }
        for &(k, plus) in &path {
            let mut node = self.nodes.get(k);
            let count = if plus {
                &mut node.below_plus
            } else {
                &mut node.below
            };
            *count = if add {
                count.saturating_add(1)
            } else {
                count.saturating_sub(1)
            };
            self.nodes.replace(k, node);
        }
        let mut node = self.nodes.get(key);
        let ends = if hash {
            &mut node.hash
        } else {
            &mut node.exact
        };
        if add {
            *ends |= bit;
            self.len += 1;
        } else {
            *ends &= !bit;
            self.len -= 1;
        }
        self.nodes.replace(key, node);
        before
    }

    /// The shards subscribed to exactly `filter` (no matching: "a/+" is the set of
    /// "a/+").
    pub fn get(&self, filter: &str) -> u64 {
        let (_, key, hash) = path_of(filter);
        let end = self.nodes.get(key);
        if hash {
            end.hash
        } else {
            end.exact
        }
    }

    /// The shards with a filter matching the topic name `topic`.
    pub fn shards_matching(&self, topic: &str) -> u64 {
        if self.nodes.is_empty() {
            return 0;
        }
        let dollar = topic.starts_with('$');
        let mut shards = 0u64;
        let mut stack: SmallVec<[(u64, Node, Option<&str>); 32]> = SmallVec::new();
        let root = self.nodes.get(ROOT);
        if !dollar {
            // '#' alone matches every topic but those starting with '$' [MQTT-4.7.2-1].
            shards |= root.hash;
        }
        let (level, rest) = split_first(topic);
        self.push_children(&mut stack, ROOT, root, level, rest, !dollar);
        while let Some((key, node, rest)) = stack.pop() {
            // '#' matches the parent level and any number of children [MQTT-4.7.1-2].
            shards |= node.hash;
            let Some(rest) = rest else {
                shards |= node.exact;
                continue;
            };
            let (level, next) = split_first(rest);
            self.push_children(&mut stack, key, node, level, next, true);
        }
        shards
    }

    /// Pushes the children of node `key` that `level` leads to (with the levels left
    /// below them).
    #[inline]
    fn push_children<'t>(
        &self,
        stack: &mut SmallVec<[(u64, Node, Option<&'t str>); 32]>,
        key: u64,
        node: Node,
        level: &str,
        rest: Option<&'t str>,
        plus: bool,
    ) {
        if node.below > 0 {
            let k = child(key, level);
            let c = self.nodes.get(k);
            if c != Node::default() {
                stack.push((k, c, rest));
            }
        }
        if plus && node.below_plus > 0 {
            let k = child(key, "+");
            let c = self.nodes.get(k);
            if c != Node::default() {
                stack.push((k, c, rest));
            }
        }
    }

    /// Number of (shard, filter) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Trie nodes (map entries).
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

impl std::fmt::Debug for WildcardSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WildcardSets")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::topic::matches;

    const FILTERS: &[&str] = &[
        "#", "+", "+/#", "a/#", "a/+", "a/+/c", "a/b/#", "+/b", "+/+/c", "a/+/+", "$SYS/#",
        "$SYS/+", "+/b/#", "a//+", "/+", "+/", "a/b/c/#", "a/+/c/#",
    ];
    const TOPICS: &[&str] = &[
        "a",
        "a/b",
        "a/b/c",
        "a/x/c",
        "a/b/c/d",
        "b",
        "x/b",
        "x/b/y",
        "$SYS/a",
        "$SYS",
        "a//c",
        "/b",
        "/",
        "",
        "a/",
        "$SYS/a/b",
        "a/b/c/d/e",
    ];

    /// The shards the naive matcher finds among `subs` for `topic`.
    fn naive(subs: &HashSet<(usize, usize)>, topic: &str) -> u64 {
        subs.iter()
            .filter(|&&(f, _)| matches(FILTERS[f], topic))
            .fold(0, |acc, &(_, s)| acc | 1 << s)
    }

    proptest! {
        /// Random additions and removals over several shards: every topic's shard set
        /// is the naive matcher's, every snapshot keeps the sets of its time, and an
        /// emptied index holds no node.
        #[test]
        fn agrees_with_the_naive_matcher(
            ops in prop::collection::vec((0..FILTERS.len(), 0usize..5, any::<bool>()), 0..120),
        ) {
            let mut sets = WildcardSets::new();
            let mut subs: HashSet<(usize, usize)> = HashSet::new();
            let mut snapshots = Vec::new();
            for (i, &(f, shard, add)) in ops.iter().enumerate() {
                let before = subs.contains(&(f, shard));
                prop_assert_eq!(sets.set(FILTERS[f], shard, add), before);
                if add { subs.insert((f, shard)); } else { subs.remove(&(f, shard)); }
                prop_assert_eq!(sets.len(), subs.len());
                if i % 10 == 0 {
                    snapshots.push((sets.clone(), subs.clone()));
                }
            }
            for topic in TOPICS {
                prop_assert_eq!(sets.shards_matching(topic), naive(&subs, topic), "{}", topic);
            }
            for (snap, then) in &snapshots {
                for topic in TOPICS {
                    prop_assert_eq!(snap.shards_matching(topic), naive(then, topic));
                }
            }
            for &(f, shard) in &subs.clone() {
                prop_assert!(sets.set(FILTERS[f], shard, false));
            }
            prop_assert!(sets.is_empty());
            prop_assert_eq!(sets.node_count(), 0);
        }
    }

    #[test]
    fn a_leading_wildcard_never_matches_a_dollar_topic() {
        let mut sets = WildcardSets::new();
        sets.set("#", 0, true);
        sets.set("+/a", 1, true);
        sets.set("$SYS/#", 2, true);
        assert_eq!(sets.shards_matching("$SYS/a"), 0b100); // [MQTT-4.7.2-1]
        assert_eq!(sets.shards_matching("x/a"), 0b011);
    }

    /// 10,000 filters under one '+' level share the path above it: one node each.
    #[test]
    fn a_filter_costs_one_node_per_level_it_does_not_share() {
        let mut sets = WildcardSets::new();
        for i in 0..10_000 {
            sets.set(&format!("bench/+/{i}"), 1, true);
        }
        assert_eq!(sets.node_count(), 10_000 + 3);
        assert_eq!(sets.shards_matching("bench/x/77"), 0b10);
        assert_eq!(sets.shards_matching("bench/x/10000"), 0);
    }

    /// A very deep filter and topic: no recursion, no overflow.
    #[test]
    fn deep_filters_are_walked_without_recursion() {
        let mut sets = WildcardSets::new();
        let deep = vec!["+"; 60_000].join("/");
        sets.set(&deep, 3, true);
        let topic = vec!["x"; 60_000].join("/");
        assert_eq!(sets.shards_matching(&topic), 0b1000);
        assert!(sets.set(&deep, 3, false));
        assert!(sets.is_empty());
    }
}
