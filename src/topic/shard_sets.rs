//! [`ShardSets`]: a persistent map from a 64-bit key (the fingerprint of a wildcard-free
//! topic filter) to a set of shards (`u64`, bit j = shard j), shared by every shard of
//! the process as read-mostly snapshots.
//!
//! A clone is a snapshot: it shares every node with the original (one reference count).
//! A change copies only the nodes it passes through that a snapshot still shares (the
//! root, one inner node and one leaf: about 1 KiB plus the leaf), so the writer never
//! copies the whole map and a reader's snapshot never changes under it. The tree has two
//! 64-way levels indexed by the key's top 12 bits and sorted leaves below them: a lookup
//! is three dependent loads and a binary search in a leaf of about `len / 4096` entries.
//! The keys must be well spread (a keyed hash): a leaf is rebuilt on each change of one of
//! its keys.
//!
//! Memory: 16 bytes per key plus one small allocation per leaf and 512 bytes per inner
//! node (at most 65), independent of the number of shards. It never allocates on a
//! lookup, never does I/O and never panics.
//!
//! The map itself is generic ([`FingerprintMap`]: 64-bit key -> small `Copy` value):
//! `wildcard_sets.rs` keeps its trie nodes in one.

use std::sync::Arc;

/// Inner nodes are 64-way.
const FANOUT: usize = 64;
const ROOT_SHIFT: u32 = 58;
const INNER_SHIFT: u32 = 52;

type Leaf<V> = Arc<[(u64, V)]>;

#[derive(Clone)]
struct Inner<V> {
    leaves: [Option<Leaf<V>>; FANOUT],
}

#[derive(Clone)]
struct Root<V> {
    inner: [Option<Arc<Inner<V>>>; FANOUT],
}

/// The persistent map behind [`ShardSets`] and `WildcardSets`: a well-spread 64-bit key
/// -> a small `Copy` value, `V::default()` standing for "absent" (see the module
/// documentation for the shape and the cost of a change).
pub(super) struct FingerprintMap<V> {
    root: Option<Arc<Root<V>>>,
    len: usize,
}

impl<V> Clone for FingerprintMap<V> {
    /// A snapshot: shares every node (one reference count).
    fn clone(&self) -> Self {
        Self {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

impl<V> Default for FingerprintMap<V> {
    fn default() -> Self {
        Self { root: None, len: 0 }
    }
}

#[inline]
fn slots(key: u64) -> (usize, usize) {
    (
        (key >> ROOT_SHIFT) as usize % FANOUT,
        (key >> INNER_SHIFT) as usize % FANOUT,
    )
}

impl<V: Copy + Default + PartialEq> FingerprintMap<V> {
    /// The value of `key` (`V::default()` when absent).
    #[inline]
    pub(super) fn get(&self, key: u64) -> V {
        let Some(root) = &self.root else {
            return V::default();
        };
        let (r, i) = slots(key);
        let Some(Some(inner)) = root.inner.get(r) else {
            return V::default();
        };
        let Some(Some(leaf)) = inner.leaves.get(i) else {
            return V::default();
        };
        match leaf.binary_search_by_key(&key, |e| e.0) {
            Ok(p) => leaf.get(p).map_or_else(V::default, |e| e.1),
            Err(_) => V::default(),
        }
    }

    /// Number of keys with a value other than the default.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets `key`'s value (removes the key when it is the default), copying the shared
    /// path.
    pub(super) fn replace(&mut self, key: u64, value: V) {
        let absent = value == V::default();
        if absent && self.get(key) == V::default() {
            return; // nothing to remove: create no node
        }
        let (r, i) = slots(key);
        let root = Arc::make_mut(self.root.get_or_insert_with(|| {
            Arc::new(Root {
                inner: std::array::from_fn(|_| None),
            })
        }));
        let Some(inner_slot) = root.inner.get_mut(r) else {
            return;
        };
        let inner = Arc::make_mut(inner_slot.get_or_insert_with(|| {
            Arc::new(Inner {
                leaves: std::array::from_fn(|_| None),
            })
        }));
        let Some(leaf_slot) = inner.leaves.get_mut(i) else {
            return;
        };
        let old: &[(u64, V)] = leaf_slot.as_deref().unwrap_or(&[]);
        let (new, delta): (Vec<(u64, V)>, isize) = match old.binary_search_by_key(&key, |e| e.0) {
            Ok(p) if absent => {
                let mut v = Vec::with_capacity(old.len() - 1);
                v.extend_from_slice(old.get(..p).unwrap_or(&[]));
                v.extend_from_slice(old.get(p + 1..).unwrap_or(&[]));
                (v, -1)
            }
            Ok(p) => {
                let mut v = old.to_vec();
                if let Some(e) = v.get_mut(p) {
                    e.1 = value;
                }
                (v, 0)
            }
            Err(_) if absent => return,
            Err(p) => {
                let mut v = Vec::with_capacity(old.len() + 1);
                v.extend_from_slice(old.get(..p).unwrap_or(&[]));
                v.push((key, value));
                v.extend_from_slice(old.get(p..).unwrap_or(&[]));
                (v, 1)
            }
        };
        *leaf_slot = (!new.is_empty()).then(|| Arc::from(new));
        let inner_empty = inner.leaves.iter().all(Option::is_none);
        if inner_empty {
            *inner_slot = None;
        }
        if root.inner.iter().all(Option::is_none) {
            self.root = None;
        }
        self.len = self.len.saturating_add_signed(delta);
    }
}

/// key -> shard set; see the module documentation.
#[derive(Clone, Default)]
pub struct ShardSets {
    map: FingerprintMap<u64>,
}

impl ShardSets {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shard set of `key` (0 when absent).
    #[inline]
    pub fn get(&self, key: u64) -> u64 {
        self.map.get(key)
    }

    /// Adds (`add`) or removes shard `shard` (below 64) to or from `key`'s set. Returns
    /// whether the shard was in the set before. A key whose set becomes empty is removed.
    pub fn set(&mut self, key: u64, shard: usize, add: bool) -> bool {
        let bit = 1u64 << (shard % 64);
        let before = self.get(key);
        let after = if add { before | bit } else { before & !bit };
        if after != before {
            self.map.replace(key, after);
        }
        before & bit != 0
    }

    /// Number of keys with a non-empty set.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl std::fmt::Debug for ShardSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSets")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A deterministic, well-spread key sequence (splitmix64).
    fn spread(i: u64) -> u64 {
        let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn agrees_with_a_plain_map_and_snapshots_never_change() {
        let mut sets = ShardSets::new();
        let mut oracle: HashMap<u64, u64> = HashMap::new();
        let mut snapshots: Vec<(ShardSets, HashMap<u64, u64>)> = Vec::new();
        // Few distinct keys (so removals hit), some sharing a leaf (same top 12 bits).
        let keys: Vec<u64> = (0..300)
            .map(|i| {
                if i % 3 == 0 {
                    spread(i) & !0xffff
                } else {
                    spread(i % 150)
                }
            })
            .collect();
        for step in 0..20_000u64 {
            let r = spread(step + 1_000_000);
            let key = keys[(r % keys.len() as u64) as usize];
            let shard = ((r >> 20) % 5) as usize;
            let add = (r >> 40) % 3 != 0;
            let before = oracle.get(&key).copied().unwrap_or(0);
            assert_eq!(sets.set(key, shard, add), before & (1 << shard) != 0);
            let after = if add {
                before | 1 << shard
            } else {
                before & !(1 << shard)
            };
            if after == 0 {
                oracle.remove(&key);
            } else {
                oracle.insert(key, after);
            }
            assert_eq!(sets.get(key), after);
            assert_eq!(sets.len(), oracle.len());
            if step % 1000 == 0 {
                snapshots.push((sets.clone(), oracle.clone()));
            }
        }
        for k in &keys {
            assert_eq!(sets.get(*k), oracle.get(k).copied().unwrap_or(0));
        }
        for (snap, then) in &snapshots {
            assert_eq!(snap.len(), then.len());
            for k in &keys {
                assert_eq!(snap.get(*k), then.get(k).copied().unwrap_or(0));
            }
        }
    }

    #[test]
    fn emptied_map_frees_its_nodes() {
        let mut sets = ShardSets::new();
        for i in 0..1000 {
            sets.set(spread(i), 1, true);
        }
        assert_eq!(sets.len(), 1000);
        for i in 0..1000 {
            assert!(sets.set(spread(i), 1, false));
        }
        assert!(sets.is_empty());
        assert!(sets.map.root.is_none());
        assert_eq!(sets.get(spread(3)), 0);
    }
}
