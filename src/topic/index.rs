//! The subscription index: a trie by topic level mapping topic filters to subscribers.
//!
//! Each node holds its exact children in a hash map keyed by the level string (looked up
//! by `&str`, so matching never builds a `String`), a separate child for '+', and the
//! subscribers whose filter ends at this node (`exact`) or at this node followed by '#'
//! (`hash`). Matching a topic walks the trie with an explicit stack that lives on the
//! machine stack for up to 32 pending branches, so the publish hot path does not allocate.
//! Nothing here recurses (insert, remove, match and drop are all loops), so a 65,535-level
//! filter cannot overflow the stack. It never does I/O and never panics on any input.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use smallvec::SmallVec;

use super::name::TopicFilter;
use crate::hash::{FxHashMap, SeededState};

/// Above this many subscribers on one filter, a key -> position map makes insert and
/// remove O(1); below it a linear scan of the dense vector is faster.
const INDEXED_ABOVE: usize = 16;

/// Subscribers of one (filter, slot): a dense vector (fast to iterate on publish) plus a
/// position index once it grows.
struct Subs<K, V> {
    entries: Vec<(K, V)>,
    pos: Option<Box<FxHashMap<K, usize>>>,
}

impl<K, V> Default for Subs<K, V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            pos: None,
        }
    }
}

impl<K: Copy + Eq + Hash, V> Subs<K, V> {
    fn position(&self, key: &K) -> Option<usize> {
        match &self.pos {
            Some(pos) => pos.get(key).copied(),
            None => self.entries.iter().position(|(k, _)| k == key),
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        let i = self.position(key)?;
        self.entries.get(i).map(|(_, v)| v)
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(i) = self.position(&key) {
            if let Some((_, v)) = self.entries.get_mut(i) {
                return Some(std::mem::replace(v, value));
            }
        }
        self.entries.push((key, value));
        let i = self.entries.len() - 1;
        match &mut self.pos {
            Some(pos) => {
                pos.insert(key, i);
            }
            None if self.entries.len() > INDEXED_ABOVE => {
                let pos = self
                    .entries
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (*k, i))
                    .collect();
                self.pos = Some(Box::new(pos));
            }
            None => {}
        }
        None
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.position(key)?;
        if i >= self.entries.len() {
            return None;
        }
        let (_, v) = self.entries.swap_remove(i);
        if let Some(pos) = &mut self.pos {
            pos.remove(key);
            if let Some((moved, _)) = self.entries.get(i) {
                pos.insert(*moved, i);
            }
            if self.entries.len() <= INDEXED_ABOVE / 2 {
                self.pos = None;
            }
        }
        Some(v)
    }

    #[inline]
    fn for_each(&self, f: &mut impl FnMut(&K, &V)) {
        for (k, v) in &self.entries {
            f(k, v);
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The subscribers attached to one node.
struct Slots<K, V> {
    /// Filters that end exactly at this node ("a/b").
    exact: Subs<K, V>,
    /// Filters that end with '#' below this node ("a/b/#"): they match this node and
    /// everything under it [MQTT-4.7.1-2].
    hash: Subs<K, V>,
}

impl<K, V> Default for Slots<K, V> {
    fn default() -> Self {
        Self {
            exact: Subs::default(),
            hash: Subs::default(),
        }
    }
}

struct Node<K, V, S> {
    children: HashMap<Box<str>, Self, S>,
    plus: Option<Box<Self>>,
    slots: Option<Box<Slots<K, V>>>,
}

impl<K, V, S: Default> Node<K, V, S> {
    fn new() -> Self {
        Self {
            children: HashMap::with_hasher(S::default()),
            plus: None,
            slots: None,
        }
    }
}

impl<K, V, S> Node<K, V, S> {
    fn branch_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }
}

impl<K, V, S: BuildHasher> Node<K, V, S> {
    #[inline]
    fn step(&self, level: &str) -> Option<&Self> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn step_mut(&mut self, level: &str) -> Option<&mut Self> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }
}

impl<K, V, S> Drop for Node<K, V, S> {
    /// Iterative, so that dropping a very deep trie cannot overflow the stack.
    fn drop(&mut self) {
        if self.children.is_empty() && self.plus.is_none() {
            return;
        }
        let mut stack: Vec<Self> = self.children.drain().map(|(_, n)| n).collect();
        if let Some(p) = self.plus.take() {
            stack.push(*p);
        }
        while let Some(mut n) = stack.pop() {
            stack.extend(n.children.drain().map(|(_, c)| c));
            if let Some(p) = n.plus.take() {
                stack.push(*p);
            }
        }
    }
}

/// A node still to visit while matching, with the topic levels left below it (`None`
/// once every level is consumed).
type Pending<'a, K, V, S> = (&'a Node<K, V, S>, Option<&'a str>);

/// Splits "a/b/c" into ("a", Some("b/c")) and "a" into ("a", None).
#[inline]
fn split_first(rest: &str) -> (&str, Option<&str>) {
    match rest.as_bytes().iter().position(|&b| b == b'/') {
        Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i + 1..)),
        None => (rest, None),
    }
}

/// Splits a filter into its non-'#' levels and whether it ends in '#'.
fn filter_path(filter: &str) -> (SmallVec<[&str; 16]>, bool) {
    let mut levels: SmallVec<[&str; 16]> = filter.split('/').collect();
    let hash = levels.last() == Some(&"#");
    if hash {
        levels.pop();
    }
    (levels, hash)
}

/// A subscription index: (topic filter, subscriber key) -> per-subscription value.
///
/// `K` identifies a subscriber (a slab index, a shard id); `V` is per-subscription data
/// (options). A key may hold several filters; each (filter, key) pair holds one value.
/// `S` hashes level strings, which clients choose: the default [`SeededState`] is keyed by
/// a per-process secret, so nobody can compute colliding levels offline (HashDoS).
pub struct TopicIndex<K, V, S = SeededState> {
    root: Node<K, V, S>,
    len: usize,
}

impl<K: Copy + Eq + Hash, V> TopicIndex<K, V, SeededState> {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<K, V, S: Default> Default for TopicIndex<K, V, S> {
    fn default() -> Self {
        Self {
            root: Node::new(),
            len: 0,
        }
    }
}

impl<K: Copy + Eq + Hash, V, S: BuildHasher + Default> TopicIndex<K, V, S> {
    /// Adds `key`'s subscription to `filter`. Returns the previous value when `key` was
    /// already subscribed to exactly this filter (the subscription is replaced
    /// [MQTT-3.8.4-3]).
    pub fn insert(&mut self, filter: &TopicFilter, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        let mut hash = false;
        let mut levels = filter.levels().peekable();
        while let Some(level) = levels.next() {
            if level == "#" && levels.peek().is_none() {
                hash = true;
                break;
            }
            node = if level == "+" {
                &mut **node.plus.get_or_insert_with(|| Box::new(Node::new()))
            } else {
                node.children
                    .entry(Box::from(level))
                    .or_insert_with(Node::new)
            };
        }
        let slots = node.slots.get_or_insert_with(Box::default);
        let subs = if hash {
            &mut slots.hash
        } else {
            &mut slots.exact
        };
        let old = subs.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value of `key`'s subscription to exactly `filter`, if any.
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        let (levels, hash) = filter_path(filter);
        let mut node = &self.root;
        for level in &levels {
            node = node.step(level)?;
        }
        let slots = node.slots.as_deref()?;
        if hash {
            slots.hash.get(key)
        } else {
            slots.exact.get(key)
        }
    }

    /// How many keys are subscribed to exactly `filter` (no wildcard matching).
    pub fn subscribers_of(&self, filter: &str) -> usize {
        let (levels, hash) = filter_path(filter);
        let mut node = &self.root;
        for level in &levels {
            match node.step(level) {
                Some(n) => node = n,
                None => return 0,
            }
        }
        node.slots.as_deref().map_or(0, |slots| {
            if hash {
                slots.hash.len()
            } else {
                slots.exact.len()
            }
        })
    }

    /// Removes `key`'s subscription to exactly `filter` (no wildcard matching: "a/+"
    /// removes the "a/+" subscription). Prunes nodes left empty.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let (levels, hash) = filter_path(filter);
        // Read-only pass: find the target and the shallowest node that becomes empty.
        let cut = {
            let mut path: SmallVec<[&Node<K, V, S>; 16]> = SmallVec::new();
            let mut node = &self.root;
            for level in &levels {
                node = node.step(level)?;
                path.push(node);
            }
            let slots = node.slots.as_deref()?;
            let (subs, other) = if hash {
                (&slots.hash, &slots.exact)
            } else {
                (&slots.exact, &slots.hash)
            };
            subs.position(key)?;
            let target_empties = subs.len() == 1 && other.is_empty() && node.branch_count() == 0;
            let mut cut = None;
            if target_empties && !path.is_empty() {
                cut = Some(path.len());
                for d in (1..path.len()).rev() {
                    let n = path.get(d - 1)?;
                    if n.slots.is_none() && n.branch_count() == 1 {
                        cut = Some(d);
                    } else {
                        break;
                    }
                }
            }
            cut
        };
        // Mutable pass: take the value.
        let mut node = &mut self.root;
        for level in &levels {
            node = node.step_mut(level)?;
        }
        let slots = node.slots.as_deref_mut()?;
        let value = if hash {
            slots.hash.remove(key)
        } else {
            slots.exact.remove(key)
        }?;
        if slots.hash.is_empty() && slots.exact.is_empty() {
            node.slots = None;
        }
        self.len -= 1;
        // Prune: detach the first node of the chain that is now empty.
        if let Some(cut) = cut {
            let mut node = &mut self.root;
            for level in levels.iter().take(cut - 1) {
                match node.step_mut(level) {
                    Some(n) => node = n,
                    None => return Some(value),
                }
            }
            if let Some(level) = levels.get(cut - 1) {
                if *level == "+" {
                    node.plus = None;
                } else {
                    node.children.remove(*level);
                }
            }
        }
        Some(value)
    }

    /// Calls `f` once per (filter, key) subscription whose filter matches `topic`. A key
    /// subscribed through two overlapping filters is reported twice; the caller merges.
    /// Does not allocate unless more than 32 wildcard branches are pending at once.
    #[inline]
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&K, &V)) {
        let mut stack: SmallVec<[Pending<'_, K, V, S>; 32]> = SmallVec::new();
        // A filter starting with '+' or '#' never matches a topic starting with '$'
        // [MQTT-4.7.2-1]: at the root, only exact children are followed.
        let root = &self.root;
        if !topic.starts_with('$') {
            if let Some(s) = &root.slots {
                s.hash.for_each(&mut f);
            }
        }
        let (level, next) = split_first(topic);
        if let Some(c) = root.children.get(level) {
            stack.push((c, next));
        }
        if !topic.starts_with('$') {
            if let Some(p) = &root.plus {
                stack.push((p, next));
            }
        }
        while let Some((node, rest)) = stack.pop() {
            if let Some(s) = &node.slots {
                // '#' matches the parent level and any number of children
                // [MQTT-4.7.1-2].
                s.hash.for_each(&mut f);
                if rest.is_none() {
                    s.exact.for_each(&mut f);
                }
            }
            let Some(rest) = rest else { continue };
            let (level, next) = split_first(rest);
            if let Some(c) = node.children.get(level) {
                stack.push((c, next));
            }
            if let Some(p) = &node.plus {
                stack.push((p, next));
            }
        }
    }

    /// True when at least one subscription matches `topic`. Walks the whole match set
    /// (the common case, no match, costs the same as stopping early would).
    pub fn has_match(&self, topic: &str) -> bool {
        let mut any = false;
        self.for_each_match(topic, |_, _| any = true);
        any
    }

    /// Number of (filter, key) subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every subscription.
    pub fn clear(&mut self) {
        self.root = Node::new();
        self.len = 0;
    }
}

impl<K, V, S> std::fmt::Debug for TopicIndex<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicIndex")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
