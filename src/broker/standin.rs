//! TEMPORARY stand-ins for `crate::topic` and `crate::retained` until those branches
//! land in main: same API, naive implementations. Delete after merging.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{ByteStr, Properties, QoS};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter(ByteStr);

impl TopicFilter {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<ByteStr> for TopicFilter {
    type Error = ();
    fn try_from(s: ByteStr) -> Result<Self, ()> {
        let st = s.as_str();
        if st.is_empty() {
            return Err(());
        }
        let levels: Vec<&str> = st.split('/').collect();
        for (i, l) in levels.iter().enumerate() {
            if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
                return Err(());
            }
            if l.contains('+') && *l != "+" {
                return Err(());
            }
        }
        Ok(Self(s))
    }
}

pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[derive(Debug)]
pub struct TopicIndex<K, V> {
    entries: Vec<(ByteStr, K, V)>,
}

impl<K: Copy + Eq, V> TopicIndex<K, V> {
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
    pub fn insert(&mut self, filter: &TopicFilter, key: K, value: V) -> Option<V> {
        for e in &mut self.entries {
            if e.0 == filter.0 && e.1 == key {
                return Some(std::mem::replace(&mut e.2, value));
            }
        }
        self.entries.push((filter.0.clone(), key, value));
        None
    }
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let pos = self
            .entries
            .iter()
            .position(|e| e.0.as_str() == filter && e.1 == *key)?;
        Some(self.entries.swap_remove(pos).2)
    }
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&K, &V)) {
        for e in &self.entries {
            if matches(e.0.as_str(), topic) {
                f(&e.1, &e.2);
            }
        }
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedMessage {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub properties: Properties,
}

#[derive(Debug, Default)]
pub struct RetainedStore {
    map: HashMap<ByteStr, Arc<RetainedMessage>>,
}

impl RetainedStore {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&mut self, msg: RetainedMessage) {
        if msg.payload.is_empty() {
            self.map.remove(&msg.topic);
        } else {
            self.map.insert(msg.topic.clone(), Arc::new(msg));
        }
    }
    pub fn for_each_match(&self, filter: &TopicFilter, mut f: impl FnMut(&Arc<RetainedMessage>)) {
        for (t, m) in &self.map {
            if matches(filter.as_str(), t.as_str()) {
                f(m);
            }
        }
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
}
