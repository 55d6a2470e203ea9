//! Per-stream delivery checking on the subscriber side: classifies each arriving sequence
//! number as in order, after a gap, late (reordered) or duplicate, with a 256-message
//! window of recently seen numbers. It owns counts only; loss is computed by the caller as
//! expected - unique at the end. It never allocates after a stream's first message.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const WINDOW: u64 = 256;

/// How one arrival relates to what the stream delivered before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next number, or a jump forward (earlier numbers may still come, late).
    InOrder,
    /// Lower than one already seen and not seen before: reordered.
    Late,
    /// Seen before (within the window).
    Duplicate,
    /// So far behind the newest that the window cannot tell; counted as reordered.
    TooOld,
}

/// State of one (subscriber, stream) pair.
#[derive(Clone, Debug, Default)]
pub struct StreamTracker {
    /// Highest sequence number seen + 1 (0 = nothing yet).
    next: u64,
    /// Bit `s % 256` set when `s` in `[next-256, next)` was seen.
    seen: [u64; 4],
}

impl StreamTracker {
    #[inline]
    fn bit(s: u64) -> (usize, u64) {
        (((s % WINDOW) / 64) as usize, 1u64 << (s % 64))
    }

    #[inline]
    pub fn observe(&mut self, seq: u32) -> Arrival {
        let s = u64::from(seq);
        if s >= self.next {
            if s - self.next >= WINDOW {
                self.seen = [0; 4];
            } else {
                for gap in self.next..s {
                    let (w, b) = Self::bit(gap);
                    self.seen[w] &= !b;
                }
            }
            let (w, b) = Self::bit(s);
            self.seen[w] |= b;
            self.next = s + 1;
            return Arrival::InOrder;
        }
        if self.next - s > WINDOW {
            return Arrival::TooOld;
        }
        let (w, b) = Self::bit(s);
        if self.seen[w] & b != 0 {
            Arrival::Duplicate
        } else {
            self.seen[w] |= b;
            Arrival::Late
        }
    }
}

/// Cheap hasher for dense u32 stream ids (no DoS concern: ids are ours).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Streams keyed by (subscriber << 32 | stream id), or by stream id alone when a shared
/// group delivers each stream to any member.
pub type StreamMap = HashMap<u64, StreamTracker, BuildHasherDefault<IdHasher>>;

/// Totals of a set of arrivals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub received: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

impl Counts {
    #[inline]
    pub fn add(&mut self, a: Arrival) {
        self.received += 1;
        match a {
            Arrival::InOrder => {}
            Arrival::Late | Arrival::TooOld => self.reordered += 1,
            Arrival::Duplicate => self.duplicated += 1,
        }
    }
    /// Distinct messages: what loss is counted against.
    pub fn unique(&self) -> u64 {
        self.received - self.duplicated
    }
    pub fn merge(&mut self, o: &Self) {
        self.received += o.received;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u32]) -> Counts {
        let mut t = StreamTracker::default();
        let mut c = Counts::default();
        for &s in seqs {
            c.add(t.observe(s));
        }
        c
    }

    #[test]
    fn in_order_stream_is_clean() {
        let seqs: Vec<u32> = (0..10_000).collect();
        assert_eq!(
            run(&seqs),
            Counts {
                received: 10_000,
                duplicated: 0,
                reordered: 0
            }
        );
    }

    #[test]
    fn gaps_are_loss_not_reorder() {
        let c = run(&[0, 1, 5, 6, 100, 1000]);
        assert_eq!((c.received, c.duplicated, c.reordered), (6, 0, 0));
        // expected 1001 messages, 6 unique: loss is the caller's expected - unique.
        assert_eq!(1001 - c.unique(), 995);
    }

    #[test]
    fn duplicates_are_detected_in_and_out_of_order() {
        let c = run(&[0, 1, 1, 2, 0, 2]);
        assert_eq!((c.received, c.duplicated, c.reordered), (6, 3, 0));
        assert_eq!(c.unique(), 3);
    }

    #[test]
    fn late_arrival_is_reordered_once_then_duplicate() {
        let c = run(&[0, 2, 1, 1, 3]);
        assert_eq!((c.received, c.duplicated, c.reordered), (5, 1, 1));
    }

    #[test]
    fn window_slides_and_clears_old_bits() {
        let mut t = StreamTracker::default();
        for s in 0..300 {
            assert_eq!(t.observe(s), Arrival::InOrder);
        }
        // 299 is newest; 44..300 are in the window, 43 is out of it.
        assert_eq!(t.observe(43), Arrival::TooOld);
        assert_eq!(t.observe(44), Arrival::Duplicate);
        // jump far ahead: everything old becomes too old, the bit for a reused
        // slot must not claim a duplicate.
        assert_eq!(t.observe(1000), Arrival::InOrder);
        assert_eq!(t.observe(1000 - 255), Arrival::Late);
        assert_eq!(t.observe(1000 - 256), Arrival::TooOld);
    }

    #[test]
    fn gap_within_window_clears_stale_bits() {
        let mut t = StreamTracker::default();
        for s in 0..256 {
            t.observe(s);
        }
        // 256..=259 reuse the slots of 0..=3; skipping 256..259 must clear them.
        assert_eq!(t.observe(260), Arrival::InOrder);
        assert_eq!(t.observe(257), Arrival::Late);
    }

    #[test]
    fn stream_map_keeps_streams_apart() {
        let mut m = StreamMap::default();
        let mut c = Counts::default();
        for s in 0..10u32 {
            for stream in 0..3u64 {
                c.add(m.entry(stream).or_default().observe(s));
            }
        }
        assert_eq!((c.received, c.duplicated, c.reordered), (30, 0, 0));
    }
}
