//! The retained-message trie: one node per topic level, the retained message (if any) on
//! the node where its topic ends. It owns the messages (shared `Arc`s) and answers
//! lookups, budgeted ones included; it never decides who receives them, never replicates
//! (the broker's cross-shard part does) and never reads the clock.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

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
}

/// Level strings come from publishers, so the maps keep std's HashDoS-resistant hasher
/// (SipHash, its own random keys per map) rather than [`crate::hash::SeededState`]: a `#`
/// subscriber receives retained messages in map order, which must not leak the secret
/// the topic index shares (see `crate::hash`). This store is on the SUBSCRIBE and
/// retained-PUBLISH paths, not the fan-out path.
#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Self>,
    msg: Option<Arc<RetainedMessage>>,
}

impl Drop for Node {
    /// Iterative, so that dropping a very deep trie cannot overflow the stack.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut stack: Vec<Self> = self.children.drain().map(|(_, n)| n).collect();
        while let Some(mut n) = stack.pop() {
            stack.extend(n.children.drain().map(|(_, c)| c));
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

/// Where a budgeted retained lookup ([`RetainedStore::matches_budgeted`]) stands between
/// calls. Start with `RetainedCursor::default()` for each new subscription.
#[derive(Debug, Default, Clone)]
pub struct RetainedCursor {
    started: bool,
    topics: Vec<ByteStr>,
    next: usize,
}

impl RetainedCursor {
    /// Topics still to hand out (some may be deleted before they are).
    pub fn remaining(&self) -> usize {
        self.topics.len().saturating_sub(self.next)
    }
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

    /// Budgeted form of [`RetainedStore::for_each_match`] for a driver that must not stall:
    /// pushes at most `max` (at least 1) matching messages onto `out` per call and returns
    /// `true` once every match has been handed out. The first call collects the matching
    /// topics (cheap `ByteStr` clones) into `cursor`; later calls look each one up again,
    /// so a message deleted meanwhile is skipped and a replaced one is delivered as it
    /// is now.
    pub fn matches_budgeted(
        &self,
        filter: &TopicFilter,
        cursor: &mut RetainedCursor,
        max: usize,
        out: &mut Vec<Arc<RetainedMessage>>,
    ) -> bool {
        if !cursor.started {
            cursor.started = true;
            cursor.next = 0;
            cursor.topics.clear();
            self.for_each_match(filter, |m| cursor.topics.push(m.topic.clone()));
        }
        let max = max.max(1);
        let mut handed = 0;
        while handed < max {
            let Some(topic) = cursor.topics.get(cursor.next) else {
                break;
            };
            cursor.next += 1;
            if let Some(m) = self.get(topic.as_str()) {
                out.push(Arc::clone(m));
                handed += 1;
            }
        }
        let done = cursor.next >= cursor.topics.len();
        if done {
            cursor.topics = Vec::new();
            cursor.next = 0;
        }
        done
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
