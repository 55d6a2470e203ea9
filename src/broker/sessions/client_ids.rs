//! The client-id map of a shard's sessions: client id -> slab key, in 8 bytes a bucket.
//!
//! Every connected client has an entry, so its size counts for every idle connection
//! (issue 14): a map keyed by the client id itself keeps a 32-byte `Bytes` handle (and
//! its shared header) in each of 40-byte buckets. Here a bucket is one `u64`: 32 bits of
//! the client id's seeded hash and the 32-bit slab key of the session that holds the id,
//! which is where the id itself is read to confirm a hit. A second id with the same 32
//! hash bits (or a key beyond 32 bits) goes to a small exact map, `spill`, that is empty
//! almost always: a lookup that misses the table looks there only when it is not empty.
//!
//! Invariant: an id is in at most one of the two, and a table entry's id (the id of the
//! slot it names) hashes to the entry's hash bits.
//!
//! It never owns a client id and never looks at anything of a session but its id: the
//! caller passes `id_of`, the client id of a slab key.

use std::hash::{BuildHasher, Hash, Hasher};

use crate::codec::ByteStr;
use crate::hash::{FxBuildHasher, Map, SeededState};

/// A table entry: hash bits above, slab key below. Hashed and compared by the hash bits
/// only, so that a lookup finds the entry of a hash without knowing its key.
#[derive(Debug, Clone, Copy)]
struct Entry(u64);

impl Entry {
    fn new(hash: u32, key: u32) -> Self {
        Self((u64::from(hash) << 32) | u64::from(key))
    }

    fn hash_bits(self) -> u32 {
        (self.0 >> 32) as u32
    }

    fn key(self) -> usize {
        (self.0 & u64::from(u32::MAX)) as usize
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.hash_bits() == other.hash_bits()
    }
}

impl Eq for Entry {}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u32(self.hash_bits());
    }
}

/// 32 bits of the seeded hash of a client id (clients choose ids: HashDoS).
fn hash_bits(id: &ByteStr) -> u32 {
    (SeededState.hash_one(id.as_str()) >> 32) as u32
}

/// Client id -> slab key of the session (or stub) that holds it.
#[derive(Debug, Default)]
pub(super) struct ClientIds {
    /// The hash bits are already seeded: the set's own hasher only spreads them.
    table: std::collections::HashSet<Entry, FxBuildHasher>,
    spill: Map<ByteStr, usize>,
}

impl ClientIds {
    /// Maps `id` to `key` (replacing what it mapped to). `id_of` gives the client id of
    /// another slab key.
    pub(super) fn insert<'a>(
        &mut self,
        id: &ByteStr,
        key: usize,
        id_of: impl Fn(usize) -> Option<&'a ByteStr>,
    ) {
        let hash = hash_bits(id);
        let probe = Entry::new(hash, 0);
        let taken = self.table.get(&probe).copied();
        let others = taken.is_some_and(|e| id_of(e.key()) != Some(id));
        match u32::try_from(key) {
            Ok(key32) if !others => {
                self.table.replace(Entry::new(hash, key32));
                if !self.spill.is_empty() {
                    self.spill.remove(id);
                }
            }
            _ => {
                // Another id with the same hash bits holds the table's entry, or the key
                // does not fit: exact, in the spill map.
                if taken.is_some() && !others {
                    self.table.remove(&probe);
                }
                self.spill.insert(id.clone(), key);
            }
        }
    }

    /// The key `id` maps to.
    pub(super) fn get<'a>(
        &self,
        id: &ByteStr,
        id_of: impl Fn(usize) -> Option<&'a ByteStr>,
    ) -> Option<usize> {
        if let Some(e) = self.table.get(&Entry::new(hash_bits(id), 0)) {
            if id_of(e.key()) == Some(id) {
                return Some(e.key());
            }
        }
        if self.spill.is_empty() {
            return None;
        }
        self.spill.get(id).copied()
    }

    /// Unmaps `id` if it maps to `key` (the slot that holds it goes away); true if it
    /// did.
    pub(super) fn remove(&mut self, id: &ByteStr, key: usize) -> bool {
        let probe = Entry::new(hash_bits(id), 0);
        if self.table.get(&probe).is_some_and(|e| e.key() == key) {
            self.table.remove(&probe);
            return true;
        }
        if self.spill.get(id) == Some(&key) {
            self.spill.remove(id);
            return true;
        }
        false
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.table.is_empty() && self.spill.is_empty()
    }

    /// Maps `hash` bits of a made-up id straight to `key` (tests: forces a collision).
    #[cfg(test)]
    fn insert_hashed(&mut self, id: &ByteStr, key: u32) {
        self.table.replace(Entry::new(hash_bits(id), key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids of a little slab.
    fn slab(ids: &[&str]) -> Vec<ByteStr> {
        ids.iter().map(|s| ByteStr::from(*s)).collect()
    }

    #[test]
    fn maps_and_unmaps_ids() {
        let ids = slab(&["a", "b", "c"]);
        let id_of = |k: usize| ids.get(k);
        let mut m = ClientIds::default();
        for (k, id) in ids.iter().enumerate() {
            m.insert(id, k, id_of);
        }
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(m.get(id, id_of), Some(k));
        }
        assert_eq!(m.get(&ByteStr::from("d"), id_of), None);
        // Only the key that holds it unmaps it.
        assert!(!m.remove(&ids[1], 0));
        assert!(m.remove(&ids[1], 1));
        assert_eq!(m.get(&ids[1], id_of), None);
        assert!(!m.remove(&ids[1], 1));
        assert!(m.remove(&ids[0], 0) && m.remove(&ids[2], 2));
        assert!(m.is_empty());
    }

    #[test]
    fn a_new_slot_for_the_same_id_takes_it_over() {
        // Slots 0 and 1 both hold "x" (a takeover: the new session, then the old one
        // goes away).
        let ids = slab(&["x", "x"]);
        let id_of = |k: usize| ids.get(k);
        let mut m = ClientIds::default();
        m.insert(&ids[0], 0, id_of);
        m.insert(&ids[1], 1, id_of);
        assert_eq!(m.get(&ids[0], id_of), Some(1));
        assert!(!m.remove(&ids[0], 0), "the old slot no longer owns the id");
        assert_eq!(m.get(&ids[0], id_of), Some(1));
        assert!(m.remove(&ids[0], 1));
        assert!(m.is_empty());
    }

    #[test]
    fn ids_with_the_same_hash_bits_stay_apart() {
        // Slot 0 holds "p"; its table entry is made to carry the hash bits of "q", as if
        // both ids had the same 32 bits. "q" then goes to the spill map.
        let ids = slab(&["p", "q", "q"]);
        let id_of = |k: usize| ids.get(k);
        let mut m = ClientIds::default();
        let (p, q) = (&ids[0], &ids[1]);
        m.insert_hashed(q, 0);
        m.insert(q, 1, id_of);
        assert_eq!(m.spill.len(), 1);
        assert_eq!(m.get(q, id_of), Some(1), "found in the spill map");
        // A new slot for "q" replaces its spilled mapping.
        m.insert(q, 2, id_of);
        assert_eq!(m.get(q, id_of), Some(2));
        assert!(!m.remove(q, 1));
        // The entry of slot 0 (hash bits of "q", id "p") is not "p"'s.
        assert_eq!(m.get(p, id_of), None);
        assert!(m.remove(q, 2));
        assert!(m.spill.is_empty());
    }

    #[test]
    fn an_id_moves_from_the_spill_map_when_the_table_entry_frees() {
        let ids = slab(&["p", "q", "q"]);
        let id_of = |k: usize| ids.get(k);
        let mut m = ClientIds::default();
        m.insert_hashed(&ids[1], 0); // "p" at slot 0 with "q"'s bits
        m.insert(&ids[1], 1, id_of); // spilled
        m.table.clear(); // slot 0 went away (its entry with it)
        m.insert(&ids[2], 2, id_of); // "q" again: into the table, out of the spill map
        assert!(m.spill.is_empty());
        assert_eq!(m.get(&ids[1], id_of), Some(2));
        assert!(!m.remove(&ids[1], 1), "the stale spilled mapping is gone");
    }

    #[test]
    fn a_key_beyond_32_bits_is_kept_exactly() {
        let big = usize::try_from(u64::from(u32::MAX) + 7).unwrap_or(usize::MAX);
        let id = ByteStr::from("wide");
        let id_of = |k: usize| (k == 3 || k == big).then_some(&id);
        let mut m = ClientIds::default();
        m.insert(&id, 3, id_of);
        m.insert(&id, big, id_of);
        assert_eq!(m.get(&id, id_of), Some(big));
        assert!(
            !m.remove(&id, 3),
            "the table entry went with the new mapping"
        );
        assert!(m.remove(&id, big));
        assert!(m.is_empty());
    }

    #[test]
    fn an_entry_is_8_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 8);
    }
}
