//! Cross-core queues: one bounded SPSC ring per ordered pair of shards (i -> j), a
//! per-destination overflow that keeps order when a ring is full, and coalesced wakeups.
//!
//! A shard writes into its rings during an iteration and publishes each ring once at the
//! end ([`Outbox::flush`]); the consumer is woken only on the sleeping edge: before it
//! blocks in `poll` it sets its [`Parker`] flag and re-checks its rings, and a producer
//! that publishes calls the wake function only if it finds the flag set (clearing it). So
//! while shards are busy no message costs a syscall, and a sleeping shard costs exactly
//! one `wake` per batch. This module knows nothing of MQTT or mio: messages are a type
//! parameter and waking is a callback. It never blocks and never drops a message.
//!
//! The lock-free parts are model-checked with loom (`loom_tests.rs`: every interleaving
//! of a producer and a consumer for the ring, wraparound, batched publish / release, drop
//! with taken-but-unreleased elements, and the parker's no-lost-wakeup protocol):
//! `RUSTFLAGS="--cfg loom" cargo test --lib mailbox` (add `CARGO_TARGET_DIR=target/loom`
//! to keep the normal build: the flag rebuilds every crate; 5-10 minutes from scratch on
//! 2 busy cores, a few seconds to run). The ordinary tests
//! (`tests.rs`) also run under Miri: `cargo +nightly miri test --lib mailbox::` (needs
//! `rustup +nightly component add miri rust-src`; about 4 minutes, mostly building).

mod ring;
mod sync;

pub use ring::{ring, Consumer, Producer};

use std::collections::VecDeque;
use std::sync::Arc;

use sync::{fence, AtomicBool, Ordering};

/// Index of a shard (0..N).
pub type ShardId = usize;

/// Most shards a mesh may have (destination sets are `u64` bit masks).
pub const MAX_SHARDS: usize = 64;

/// The "asleep, wake me" flag of one shard.
#[derive(Debug, Default)]
pub struct Parker {
    sleeping: AtomicBool,
}

impl Parker {
    /// Consumer, before blocking: announces the sleep. The caller must then re-check its
    /// inboxes ([`Inbox::has_mail`]) and call [`Parker::awake`] instead of sleeping if
    /// any has mail.
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Consumer, after waking (or instead of sleeping).
    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Producer, after publishing: true exactly once per sleep (the caller then wakes
    /// the consumer).
    pub fn should_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel)
    }
}

/// The sending side of one shard: a ring to every other shard plus the overflow.
pub struct Outbox<T> {
    me: ShardId,
    rings: Vec<Option<Producer<T>>>,
    /// Messages that did not fit in their ring, in order; sent before anything newer.
    overflow: Vec<VecDeque<T>>,
    /// Rings written since the last flush.
    dirty: u64,
    parkers: Arc<[Parker]>,
}

/// The receiving side of one shard.
pub struct Inbox<T> {
    me: ShardId,
    rings: Vec<Option<Consumer<T>>>,
    parkers: Arc<[Parker]>,
}

/// Builds the full mesh for `n` shards with rings of `capacity` messages: returns each
/// shard's (outbox, inbox).
pub fn mesh<T>(n: usize, capacity: usize) -> Vec<(Outbox<T>, Inbox<T>)> {
    let n = n.clamp(1, MAX_SHARDS);
    let parkers: Arc<[Parker]> = (0..n).map(|_| Parker::default()).collect();
    let mut producers: Vec<Vec<Option<Producer<T>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut consumers: Vec<Vec<Option<Consumer<T>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let (p, c) = ring(capacity);
                producers[i][j] = Some(p);
                consumers[j][i] = Some(c);
            }
        }
    }
    producers
        .into_iter()
        .zip(consumers)
        .enumerate()
        .map(|(me, (rings_out, rings_in))| {
            (
                Outbox {
                    me,
                    rings: rings_out,
                    overflow: (0..n).map(|_| VecDeque::new()).collect(),
                    dirty: 0,
                    parkers: Arc::clone(&parkers),
                },
                Inbox {
                    me,
                    rings: rings_in,
                    parkers: Arc::clone(&parkers),
                },
            )
        })
        .collect()
}

impl<T> Outbox<T> {
    pub fn shard(&self) -> ShardId {
        self.me
    }

    /// Queues `msg` for shard `to` (visible after the next [`Outbox::flush`]). Never
    /// fails: a full ring spills into the ordered overflow. Sending to oneself or to a
    /// shard that does not exist hands the message back.
    pub fn send(&mut self, to: ShardId, msg: T) -> Result<(), T> {
        let Some(Some(ring)) = self.rings.get(to) else {
            return Err(msg);
        };
        let overflow = &mut self.overflow[to];
        if overflow.is_empty() {
            match ring.write(msg) {
                Ok(()) => {
                    self.dirty |= 1 << to;
                    return Ok(());
                }
                Err(msg) => overflow.push_back(msg),
            }
        } else {
            overflow.push_back(msg);
        }
        Ok(())
    }

    /// Moves overflow into rings with room, publishes every written ring, and calls
    /// `wake(j)` for each destination that was asleep.
    pub fn flush(&mut self, mut wake: impl FnMut(ShardId)) {
        for (to, overflow) in self.overflow.iter_mut().enumerate() {
            let Some(Some(ring)) = self.rings.get(to) else {
                continue;
            };
            while let Some(msg) = overflow.pop_front() {
                if let Err(msg) = ring.write(msg) {
                    overflow.push_front(msg);
                    break;
                }
                self.dirty |= 1 << to;
            }
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        while dirty != 0 {
            let to = dirty.trailing_zeros() as usize;
            dirty &= dirty - 1;
            if let Some(Some(ring)) = self.rings.get(to) {
                ring.publish();
                if self.parkers[to].should_wake() {
                    wake(to);
                }
            }
        }
    }

    /// Messages waiting in the overflow (their ring was full): the shard should stop
    /// reading its publishers until this is zero again.
    pub fn backlog(&self) -> usize {
        self.overflow.iter().map(VecDeque::len).sum()
    }
}

impl<T> Inbox<T> {
    pub fn shard(&self) -> ShardId {
        self.me
    }

    pub fn parker(&self) -> &Parker {
        &self.parkers[self.me]
    }

    /// Whether any ring has a published message.
    pub fn has_mail(&self) -> bool {
        self.rings.iter().flatten().any(|r| !r.is_empty())
    }

    /// Hands up to `budget` messages per source ring to `f(from, msg)`, in order per
    /// source. Returns how many were handled.
    pub fn drain(&mut self, budget: usize, mut f: impl FnMut(ShardId, T)) -> usize {
        let mut total = 0;
        for (from, ring) in self.rings.iter().enumerate() {
            let Some(ring) = ring else { continue };
            let mut n = 0;
            while n < budget {
                let Some(msg) = ring.take() else { break };
                f(from, msg);
                n += 1;
            }
            ring.release();
            total += n;
        }
        total
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
