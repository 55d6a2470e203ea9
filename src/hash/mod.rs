//! Hashing for the broker's maps: [`SeededState`] (with the [`Map`] / [`Set`] aliases) for
//! every map whose keys a client chooses, and the unkeyed [`FxHasher`] for keys the broker
//! picks itself (slab keys, shard ids).
//!
//! A client chooses topic levels, filters and client ids, so it could choose keys that
//! collide under a hash function it knows, and turn every lookup of a map into a scan
//! (HashDoS: 20,000 crafted topic levels under one node make each SUBSCRIBE and PUBLISH
//! on it walk all of them). [`SeededState`] hashes with foldhash keyed by a secret drawn
//! from the operating system's random source once per process, so colliding keys cannot
//! be computed offline; it is as fast as the unkeyed Fx hash on short keys
//! (`cargo bench --bench topic`, perf/results/2026-12-03-hash.md). It is a zero-sized
//! type: a map costs no more memory than with `BuildHasherDefault`.
//!
//! foldhash is not a PRF: an attacker who can watch the iteration order of a map keyed
//! with it could learn the secret. So the shared secret is only for maps whose order
//! nobody outside sees (the topic index, ACL caches, session subscription sets, the
//! broker's directories). Where iteration order reaches clients (the retained store: a
//! `#` subscription receives retained messages in map order) the map keeps std's
//! `RandomState` (SipHash-1-3 with its own random keys per map).
//!
//! This module never allocates, never does I/O beyond the one random seed, and never
//! panics.

mod fx;

pub use fx::{FxBuildHasher, FxHashMap, FxHasher};

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;

use foldhash::fast::FoldHasher;
use foldhash::SharedSeed;

/// The per-process secret of [`SeededState`].
struct Secret {
    per_hasher: u64,
    shared: SharedSeed,
}

static SECRET: OnceLock<Secret> = OnceLock::new();

#[inline]
fn secret() -> &'static Secret {
    SECRET.get_or_init(|| {
        // std's RandomState draws its SipHash keys from the OS random source (getrandom),
        // so its outputs for fixed inputs are unpredictable without those keys.
        let os = RandomState::new();
        Secret {
            per_hasher: os.hash_one(0x5eed_u64),
            shared: SharedSeed::from_u64(os.hash_one(0xfeed_u64)),
        }
    })
}

/// A `BuildHasher` keyed by a random per-process secret: use it (through [`Map`] and
/// [`Set`]) for maps keyed by strings a client chooses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeededState;

impl BuildHasher for SeededState {
    type Hasher = FoldHasher<'static>;

    #[inline]
    fn build_hasher(&self) -> FoldHasher<'static> {
        let s = secret();
        FoldHasher::with_seed(s.per_hasher, &s.shared)
    }
}

/// A `HashMap` keyed by a per-process secret (see the module documentation).
pub type Map<K, V> = std::collections::HashMap<K, V, SeededState>;

/// A `HashSet` keyed by a per-process secret.
pub type Set<K> = std::collections::HashSet<K, SeededState>;

/// Builds `n` distinct 16-byte ASCII strings (no '/', '+', '#' or NUL, so each is a valid
/// topic level) that all have the same [`FxHasher`] hash: what an attacker who knows the
/// hash function computes offline. For tests and the `topic` benchmark.
#[doc(hidden)]
pub fn fx_colliding_levels(n: usize) -> Vec<String> {
    const K: u64 = fx::SEED;
    // K is odd, so it has an inverse modulo 2^64 (Newton's iteration doubles the correct
    // low bits each step: 5 steps from 3 bits reach 96).
    let mut k_inv = K;
    for _ in 0..5 {
        k_inv = k_inv.wrapping_mul(2u64.wrapping_sub(K.wrapping_mul(k_inv)));
    }
    let allowed = |b: u8| (1..0x80).contains(&b) && !matches!(b, b'/' | b'+' | b'#');
    // FxHasher on 16 bytes: h1 = w1 * K, h2 = (rotl(h1, 5) ^ w2) * K. Fixing h2 = T gives
    // w2 = (T * K^-1) ^ rotl(h1, 5) for any w1; keep the pairs where w2 is allowed too.
    let target = 0x0123_4567_89ab_cdef_u64.wrapping_mul(k_inv);
    let mut out = Vec::with_capacity(n);
    let mut counter = 0u64;
    while out.len() < n {
        counter += 1;
        // w1: the counter in base 64 spread over 8 allowed bytes ('0'..'o').
        let mut w1 = [0u8; 8];
        let mut c = counter;
        for b in &mut w1 {
            *b = b'0' + (c % 64) as u8;
            c /= 64;
        }
        let h1 = u64::from_le_bytes(w1).wrapping_mul(K);
        let w2 = (target ^ h1.rotate_left(5)).to_le_bytes();
        if w2.iter().all(|&b| allowed(b)) {
            let mut key = w1.to_vec();
            key.extend_from_slice(&w2);
            if let Ok(s) = String::from_utf8(key) {
                out.push(s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn crafted_fx_collisions_all_collide_under_fx() {
        let keys = fx_colliding_levels(500);
        let fx = FxBuildHasher::default();
        let first = fx.hash_one(keys[0].as_str());
        assert!(keys.iter().all(|k| fx.hash_one(k.as_str()) == first));
        assert_eq!(
            keys.iter().collect::<HashSet<_>>().len(),
            500,
            "keys distinct"
        );
        assert!(keys
            .iter()
            .all(|k| crate::topic::TopicName::parse(k).is_ok()));
    }

    /// The attack keys spread evenly under the seeded hasher: distinct hashes, and no
    /// bucket of a 1,024-bucket table holds more than a handful of the 2,000 keys.
    #[test]
    fn crafted_fx_collisions_spread_under_seeded_state() {
        let keys = fx_colliding_levels(2000);
        let s = SeededState;
        let hashes: HashSet<u64> = keys.iter().map(|k| s.hash_one(k.as_str())).collect();
        assert_eq!(hashes.len(), keys.len());
        let mut buckets = vec![0u32; 1024];
        for h in &hashes {
            buckets[(*h & 1023) as usize] += 1;
        }
        let max = buckets.iter().copied().max().unwrap_or(0);
        assert!(max <= 12, "max bucket load {max} (mean 2)");
    }

    /// The secret comes from the OS: another process hashes the same key differently.
    /// Runs this test binary again as a child that only prints its hash of a probe key.
    #[test]
    fn seed_differs_between_processes() {
        const PROBE: &str = "SHARDMQ_HASH_PROBE";
        if std::env::var_os(PROBE).is_some() {
            println!("\nprobe={:016x}", SeededState.hash_one("a/b/c"));
            return;
        }
        let child = || {
            let exe = std::env::current_exe().unwrap();
            let out = std::process::Command::new(exe)
                .args(["--exact", "hash::tests::seed_differs_between_processes"])
                .args(["--nocapture", "--test-threads=1"])
                .env(PROBE, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split("probe=")
                .nth(1)
                .and_then(|rest| rest.get(..16))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no probe line in {text}"))
        };
        let (a, b) = (child(), child());
        assert_ne!(a, b, "two processes used the same hash seed");
        assert_ne!(a, format!("{:016x}", SeededState.hash_one("a/b/c")));
    }

    #[test]
    fn maps_work() {
        let mut m: Map<String, u32> = Map::default();
        m.insert("x".into(), 1);
        assert_eq!(m.get("x"), Some(&1));
        let mut s: Set<&str> = Set::default();
        assert!(s.insert("a") && !s.insert("a"));
        assert_eq!(std::mem::size_of::<SeededState>(), 0);
    }
}
