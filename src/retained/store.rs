//! The retained-message trie: one node per topic level, the retained message (if any) on
//! the node where its topic ends. It owns the messages (shared `Arc`s) and answers
//! lookups, budgeted ones included: children are kept in key order, so a budgeted walk
//! stops anywhere and resumes from a [`RetainedCursor`] (the path by key) without
//! collecting matches ahead. It never decides who receives them, never replicates (the
//! broker's cross-shard part does) and never reads the clock.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;

use crate::codec::{ByteStr, Properties, QoS};
use crate::topic::{TopicFilter, TopicName};

/// A retained message as delivered to new subscribers. Shared by `Arc`, so delivering it
/// to many subscribers copies no payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedMessage {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub properties: Properties,
    /// The client that published it (`None`: the broker, the host, or unknown), for
    /// `check_retain_source`.
    pub source: Option<Arc<RetainSource>>,
    /// When its v5 Message Expiry Interval runs out (`None`: never): from then on it is
    /// no longer sent to new subscribers [MQTT-3.3.2-5]. The caller has the clock.
    pub expires_at: Option<Instant>,
}

impl RetainedMessage {
    /// The deadline of a message with `properties` received at `now`.
    pub fn expiry_from(properties: &Properties, now: Instant) -> Option<Instant> {
        let secs = properties.message_expiry_interval?;
        now.checked_add(Duration::from_secs(u64::from(secs)))
    }

    /// The whole seconds of expiry left at `now` (rounded up), `Some(0)` once expired,
    /// `None` for a message that does not expire.
    pub fn expiry_left(&self, now: Instant) -> Option<u32> {
        let left = self.expires_at?.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs).unwrap_or(u32::MAX))
    }
}

/// Who published a retained message: what its ACL is derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainSource {
    pub client_id: ByteStr,
    pub username: Option<ByteStr>,
    /// Index of the listener it came in on.
    pub listener: usize,
}

/// Children in key order, so that a walk can stop anywhere and resume after the last key
/// it took (a [`RetainedCursor`]) whatever was set or deleted meanwhile. Level strings
/// come from publishers: an ordered map has no hash to flood.
#[derive(Default)]
struct Node {
    children: BTreeMap<Box<str>, Self>,
    msg: Option<Arc<RetainedMessage>>,
}

impl Drop for Node {
    /// Iterative, so that dropping a very deep trie cannot overflow the stack.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut stack: Vec<Self> = std::mem::take(&mut self.children).into_values().collect();
        while let Some(mut n) = stack.pop() {
            stack.extend(std::mem::take(&mut n.children).into_values());
        }
    }
}

/// Splits "a/b/c" into ("a", Some("b/c")) and "a" into ("a", None).
fn split_first(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((level, next)) => (level, Some(next)),
        None => (rest, None),
    }
}

enum Visit<'a> {
    /// Match the remaining filter levels (`None`: all consumed) below `node`.
    Filter(&'a Node, Option<&'a str>, bool),
    /// Everything in this subtree matches (under a '#').
    All(&'a Node),
}

/// The filter level of a node whose every descendant matches (below a '#').
const ALL: usize = usize::MAX;

/// One node on the path of a budgeted walk, between calls: owned keys, re-found in the
/// trie on the next call.
#[derive(Debug, Clone)]
struct Frame {
    /// The node's key under its parent (empty for the root).
    key: Box<str>,
    /// The filter level its children are matched against ([`ALL`] below a '#').
    level: usize,
    /// The last child the walk entered (`None`: none yet).
    after: Option<Box<str>>,
}

/// The same during a call, borrowing from the trie.
struct Step<'s> {
    key: &'s str,
    node: &'s Node,
    level: usize,
    after: Option<Cow<'s, str>>,
}

/// Where a budgeted retained lookup ([`RetainedStore::matches_budgeted`]) stands between
/// calls: the path from the root to the node being walked, by key. Start with
/// `RetainedCursor::default()` for each new subscription.
#[derive(Debug, Default, Clone)]
pub struct RetainedCursor {
    started: bool,
    done: bool,
    path: Vec<Frame>,
    /// Nodes the last call visited.
    visited: usize,
}

impl RetainedCursor {
    /// Whether every match has been handed out.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Trie nodes the last call visited (its work, bounded by its budget).
    pub fn visited(&self) -> usize {
        self.visited
    }
}

/// The next child of `step` the walk enters, in key order: (key, child, its level).
fn next_child<'s>(
    step: &Step<'s>,
    levels: &[&str],
    at_root: bool,
) -> Option<(&'s str, &'s Node, usize)> {
    let children = &step.node.children;
    let after = step.after.as_deref();
    let (wild, child_level) = match step.level {
        ALL => (true, ALL),
        l => match levels.get(l) {
            Some(&"#") => (true, ALL),
            Some(&"+") => (true, l + 1),
            Some(exact) => {
                if after.is_some() {
                    return None;
                }
                let (k, c) = children.get_key_value(*exact)?;
                return Some((k, c, l + 1));
            }
            None => return None,
        },
    };
    debug_assert!(wild);
    let from = after.map_or(Bound::Unbounded, Bound::Excluded);
    let (mut k, mut c) = children.range::<str, _>((from, Bound::Unbounded)).next()?;
    if at_root && k.starts_with('$') {
        // A wildcard at the root skips '$' topics [MQTT-4.7.2-1]: they sort in
        // ["$", "%"), so jump past them.
        (k, c) = children
            .range::<str, _>((Bound::Included("%"), Bound::Unbounded))
            .next()?;
    }
    Some((k, c, child_level))
}

/// Whether a node reached with filter level `level` holds a match: below a '#', with
/// every filter level consumed, or where a '#' follows (the parent level matches too
/// [MQTT-4.7.1-2]).
fn matches_here(level: usize, levels: &[&str]) -> bool {
    level == ALL || level == levels.len() || levels.get(level) == Some(&"#")
}

/// The retained message per topic, in a trie by topic level.
#[derive(Default)]
pub struct RetainedStore {
    root: Node,
    len: usize,
    payload_bytes: usize,
}

impl std::fmt::Debug for RetainedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetainedStore")
            .field("len", &self.len)
            .field("payload_bytes", &self.payload_bytes)
            .finish()
    }
}

impl RetainedStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sum of the retained payload sizes (for a memory limit and metrics).
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Stores `msg` as the retained message of its topic, replacing the previous one, and
    /// returns the previous one. An empty payload deletes the topic's retained message
    /// and is not itself stored [MQTT-3.3.1-10] [MQTT-3.3.1-11]. A topic that is not a
    /// valid topic name (empty, or with a wildcard) is ignored: the codec never yields one.
    pub fn set(&mut self, msg: RetainedMessage) -> Option<Arc<RetainedMessage>> {
        if msg.payload.is_empty() {
            return self.remove(msg.topic.as_str()); // [MQTT-3.3.1-10] [MQTT-3.3.1-11]
        }
        if TopicName::parse(msg.topic.as_str()).is_err() {
            return None;
        }
        let mut node = &mut self.root;
        for level in msg.topic.as_str().split('/') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        self.payload_bytes += msg.payload.len();
        let old = node.msg.replace(Arc::new(msg));
        match &old {
            Some(o) => self.payload_bytes -= o.payload.len(),
            None => self.len += 1,
        }
        old
    }

    /// The retained message of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&Arc<RetainedMessage>> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.msg.as_ref()
    }

    /// Deletes the retained message of `topic` and prunes the nodes left empty.
    pub fn remove(&mut self, topic: &str) -> Option<Arc<RetainedMessage>> {
        // Read-only pass: the shallowest depth from which the chain becomes empty.
        let depth = topic.split('/').count();
        let cut = {
            let mut node = &self.root;
            let mut cut = None;
            for (d, level) in topic.split('/').enumerate() {
                node = node.children.get(level)?;
                let removable = if d + 1 == depth {
                    node.msg.is_some() && node.children.is_empty()
                } else {
                    node.msg.is_none() && node.children.len() == 1
                };
                match (removable, cut) {
                    (true, None) => cut = Some(d),
                    (false, _) => cut = None,
                    (true, Some(_)) => {}
                }
            }
            node.msg.as_ref()?;
            cut
        };
        let mut node = &mut self.root;
        let old = match cut {
            Some(cut) => {
                let mut levels = topic.split('/');
                for level in levels.by_ref().take(cut) {
                    node = node.children.get_mut(level)?;
                }
                let level = levels.next()?;
                let mut detached = node.children.remove(level)?;
                // Walk the detached chain down to the message.
                let mut n = &mut detached;
                for level in levels {
                    n = n.children.get_mut(level)?;
                }
                n.msg.take()
            }
            None => {
                for level in topic.split('/') {
                    node = node.children.get_mut(level)?;
                }
                node.msg.take()
            }
        };
        if let Some(o) = &old {
            self.len -= 1;
            self.payload_bytes -= o.payload.len();
        }
        old
    }

    /// Calls `f` for every retained message whose topic matches `filter`, walking only the
    /// branches the filter can reach. A filter starting with '+' or '#' skips topics
    /// starting with '$' [MQTT-4.7.2-1].
    pub fn for_each_match(&self, filter: &TopicFilter, mut f: impl FnMut(&Arc<RetainedMessage>)) {
        let mut stack = vec![Visit::Filter(&self.root, Some(filter.as_str()), true)];
        while let Some(visit) = stack.pop() {
            match visit {
                Visit::All(node) => {
                    if let Some(m) = &node.msg {
                        f(m);
                    }
                    stack.extend(node.children.values().map(Visit::All));
                }
                Visit::Filter(node, None, _) => {
                    if let Some(m) = &node.msg {
                        f(m);
                    }
                }
                Visit::Filter(node, Some(rest), at_root) => {
                    let (level, next) = split_first(rest);
                    // At the root a wildcard skips '$' topics [MQTT-4.7.2-1].
                    let wild_children = node
                        .children
                        .iter()
                        .filter(|(k, _)| !(at_root && k.starts_with('$')))
                        .map(|(_, c)| c);
                    match level {
                        "#" => {
                            // The parent level matches too [MQTT-4.7.1-2].
                            if let Some(m) = &node.msg {
                                f(m);
                            }
                            stack.extend(wild_children.map(Visit::All));
                        }
                        "+" => stack.extend(wild_children.map(|c| Visit::Filter(c, next, false))),
                        exact => {
                            if let Some(c) = node.children.get(exact) {
                                stack.push(Visit::Filter(c, next, false));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Budgeted, resumable form of [`RetainedStore::for_each_match`] for a driver that
    /// must not stall: walks the trie from where `cursor` stopped, visiting at most
    /// `visits` nodes and pushing at most `max` matching messages onto `out` (each at
    /// least 1), and returns `true` once the walk is complete. Nothing is collected ahead:
    /// the cursor keeps only the path (by key) to where it stopped, so a SUBSCRIBE to `#`
    /// over a million retained messages costs the same per call as one over ten. Matches
    /// come in key order (level by level). The store may change between calls: a topic
    /// deleted before the walk reaches it is not handed out, one replaced is handed out as
    /// it is then, one created behind the cursor is not (a subscriber gets it live).
    pub fn matches_budgeted(
        &self,
        filter: &TopicFilter,
        cursor: &mut RetainedCursor,
        max: usize,
        visits: usize,
        out: &mut Vec<Arc<RetainedMessage>>,
    ) -> bool {
        cursor.visited = 0;
        if cursor.done {
            return true;
        }
        if !cursor.started {
            cursor.started = true;
            cursor.path = vec![Frame {
                key: Box::from(""),
                level: 0,
                after: None,
            }];
        }
        let levels: SmallVec<[&str; 8]> = filter.as_str().split('/').collect();
        // Find the path again: a node deleted meanwhile ends it, and its parent goes on
        // after its key.
        let mut path: Vec<Step<'_>> = Vec::with_capacity(cursor.path.len());
        for frame in std::mem::take(&mut cursor.path) {
            let (key, node) = match path.last() {
                None => ("", &self.root),
                Some(parent) => match parent.node.children.get_key_value(&*frame.key) {
                    Some((k, n)) => (&**k, n),
                    None => break,
                },
            };
            path.push(Step {
                key,
                node,
                level: frame.level,
                after: frame.after.map(|a| Cow::Owned(a.into_string())),
            });
        }
        let (max, visits) = (max.max(1), visits.max(1));
        let mut handed = 0;
        while cursor.visited < visits && handed < max {
            let at_root = path.len() == 1;
            let Some(step) = path.last_mut() else {
                break;
            };
            let Some((key, child, level)) = next_child(step, &levels, at_root) else {
                path.pop();
                continue;
            };
            step.after = Some(Cow::Borrowed(key));
            cursor.visited += 1;
            if matches_here(level, &levels) {
                if let Some(m) = &child.msg {
                    out.push(Arc::clone(m));
                    handed += 1;
                }
            }
            if (level == ALL || level < levels.len()) && !child.children.is_empty() {
                path.push(Step {
                    key,
                    node: child,
                    level,
                    after: None,
                });
            }
        }
        if path.is_empty() {
            cursor.done = true;
            return true;
        }
        // Keep the path by key for the next call.
        cursor.path = path
            .into_iter()
            .map(|step| Frame {
                key: Box::from(step.key),
                level: step.level,
                after: step.after.map(|a| Box::from(a.as_ref())),
            })
            .collect();
        false
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
