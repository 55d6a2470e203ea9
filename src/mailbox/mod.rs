//! Cross-core queues: for each ordered pair of shards (i -> j) two bounded SPSC rings,
//! the *control* lane and the *data* lane, each with a per-destination overflow that
//! keeps order when its ring is full, and coalesced wakeups.
//!
//! A shard writes into its rings during an iteration and publishes each ring once at the
//! end ([`Outbox::flush`]); the consumer is woken only on the sleeping edge: before it
//! blocks in `poll` it sets its [`Parker`] flag and re-checks its rings, and a producer
//! that publishes calls the wake function only if it finds the flag set (clearing it). So
//! while shards are busy no message costs a syscall, and a sleeping shard costs exactly
//! one `wake` per batch; a batch of quiet messages only ([`Outbox::send_quiet`]: nothing
//! waits for them) costs none. This module knows nothing of MQTT or mio: messages are a type
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
//!
//! ## Lanes: control never waits behind data
//!
//! [`Inbox::drain`] takes every source's control lane first (up to a full ring each),
//! then the data lanes under the caller's budget, so a control message published before
//! a drain is handled in that drain however much data waits; and a full data ring only
//! counts in [`Outbox::backlogged`] (which the broker uses to stop reading the
//! publishers that feed that peer), never delays control. Each lane is FIFO; the two
//! lanes of one pair are not ordered with respect to each other: a control message may
//! overtake data sent before it (never the reverse: published before, it is drained
//! before). The broker (`broker::ShardMsg::lane`) sends every `Publish` (and `Shared` publish) on the data lane
//! and every `Control` on the control lane but one. Why, message by message:
//! - `Interest` / `InterestAck`: only ever among themselves (FIFO), which is all the
//!   acknowledgement watermarks need; a publish the sender routed before applying an
//!   interest did not go to the subscriber's shard at all, one routed after is in flight
//!   to a shard that has the subscription already.
//! - `ShareInterest` (a shard's member count of a shared subscription group): among the
//!   interest messages (FIFO). A `Shared` publish (data lane, like `Publish`) routed on a
//!   stale count may reach a shard whose last member of the group left: that shard passes
//!   it on to one with members (`broker/shared.rs`), so a count that lags loses nothing.
//! - `Retain`: replicas converge on versions (Lamport clock, shard), not on arrival
//!   order; the live copy of the same message is sent after it and still arrives after.
//! - `Claim`, `Takeover`, `Moved`, `Forget`: among themselves (FIFO). `Moved` may
//!   overtake publishes the old shard sent before it: the new shard skips direct
//!   publishes at or below the watermarks `Moved` carries whenever they arrive (before
//!   the install they find no session, after it they are filtered), and those are
//!   exactly what the old shard had queued in the session.
//! - `Installed` and `DrainAck` take the **data** lane. `Installed` carries the
//!   watermarks the new shard had taken when it installed, and the stub forwards what it
//!   held up to them. A publish the new shard sent to the stub's shard before installing
//!   (its own client's message for the moving session, which found no session at home)
//!   must reach the stub before `Installed` does, or the stub would drop it: so it keeps
//!   the order of the data it follows. `DrainAck` tells the stub that its sender's data
//!   sent before it are all in, so it must follow them (`broker/cross/handoff.rs`).
//! - `Drain` (new shard to third shards): control, behind the `Interest` the install
//!   broadcast on the same lane, so its receiver knows the new shard's interest when it
//!   answers. `HandoffDone` (old shard to new): control, behind the stub's `Forward`s on
//!   the same lane, so the new shard delivers what it held after every forwarded message.
//! - `Forward`: a stub forwards only what the new shard will not get directly (or had
//!   taken before its install, by those watermarks), so its order against that shard's
//!   direct data does not decide delivery; it travels after `Moved` on the same lane.
//! - `Pause` / `Resume` (flow control) and `Report`: among themselves (FIFO); they
//!   change when a connection is read or what `$SYS` says, not what is delivered.
//! - `Release`: messages handed back to be freed; order is irrelevant. It is the one
//!   message sent quietly ([`Outbox::send_quiet`]): nobody waits for it, so it never
//!   wakes its receiver by itself.

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

/// The lane of a shard pair a message takes (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Rare protocol messages: drained first, never gated by data.
    Control,
    /// The bulk: drained under a budget; a full ring makes [`Outbox::backlogged`].
    Data,
}

/// One value per lane.
#[derive(Debug, Default)]
struct Lanes<X> {
    control: X,
    data: X,
}

impl<X> Lanes<X> {
    fn get_mut(&mut self, lane: Lane) -> &mut X {
        match lane {
            Lane::Control => &mut self.control,
            Lane::Data => &mut self.data,
        }
    }

    /// Control first.
    fn both(&self) -> [&X; 2] {
        [&self.control, &self.data]
    }
}

/// The sending side of one shard: both lanes to every other shard plus their overflow.
pub struct Outbox<T> {
    me: ShardId,
    rings: Vec<Option<Lanes<Producer<T>>>>,
    /// Messages that did not fit in their ring, in order per lane; sent before anything
    /// newer on that lane.
    overflow: Vec<Lanes<VecDeque<T>>>,
    /// Destinations written since the last flush.
    dirty: u64,
    /// Destinations written since the last flush with a message that wakes them (see
    /// [`Outbox::send_quiet`]); a subset of `dirty`.
    urgent: u64,
    parkers: Arc<[Parker]>,
}

/// The receiving side of one shard.
pub struct Inbox<T> {
    me: ShardId,
    rings: Vec<Option<Lanes<Consumer<T>>>>,
    parkers: Arc<[Parker]>,
}

/// Builds the full mesh for `n` shards, data rings of `capacity` messages and control
/// rings of `control_capacity`: returns each shard's (outbox, inbox).
pub fn mesh<T>(n: usize, capacity: usize, control_capacity: usize) -> Vec<(Outbox<T>, Inbox<T>)> {
    let n = n.clamp(1, MAX_SHARDS);
    let parkers: Arc<[Parker]> = (0..n).map(|_| Parker::default()).collect();
    let mut producers: Vec<Vec<Option<Lanes<Producer<T>>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut consumers: Vec<Vec<Option<Lanes<Consumer<T>>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let (pc, cc) = ring(control_capacity);
                let (pd, cd) = ring(capacity);
                producers[i][j] = Some(Lanes {
                    control: pc,
                    data: pd,
                });
                consumers[j][i] = Some(Lanes {
                    control: cc,
                    data: cd,
                });
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
                    overflow: (0..n).map(|_| Lanes::default()).collect(),
                    dirty: 0,
                    urgent: 0,
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

    /// Queues `msg` for shard `to` on `lane` (visible after the next [`Outbox::flush`]).
    /// Never fails: a full ring spills into that lane's ordered overflow. Sending to
    /// oneself or to a shard that does not exist hands the message back.
    pub fn send(&mut self, to: ShardId, lane: Lane, msg: T) -> Result<(), T> {
        self.write(to, lane, msg)?;
        self.urgent |= 1 << to;
        Ok(())
    }

    /// As [`Outbox::send`], but the message does not wake a sleeping receiver by itself:
    /// it is published at the next flush and handled whenever the receiver next runs
    /// (woken by another message, its own readiness or a timer; a receiver about to sleep
    /// sees it in [`Inbox::has_mail`] and does not). For messages no one waits for, such
    /// as memory handed back to be freed: a receiver that sleeps only keeps them longer,
    /// and one wake fewer per batch is a syscall and a context switch saved on each side.
    pub fn send_quiet(&mut self, to: ShardId, lane: Lane, msg: T) -> Result<(), T> {
        self.write(to, lane, msg)
    }

    /// Writes `msg` into its ring (or the lane's overflow) without publishing it.
    fn write(&mut self, to: ShardId, lane: Lane, msg: T) -> Result<(), T> {
        let Some(Some(rings)) = self.rings.get_mut(to) else {
            return Err(msg);
        };
        let ring = rings.get_mut(lane);
        let overflow = self.overflow[to].get_mut(lane);
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
    /// `wake(j)` for each destination that was asleep and got a message that wakes
    /// (anything but [`Outbox::send_quiet`]'s; a message moved out of the overflow always
    /// wakes, as its sender may have had nothing else to say).
    pub fn flush(&mut self, mut wake: impl FnMut(ShardId)) {
        for (to, overflow) in self.overflow.iter_mut().enumerate() {
            let Some(Some(rings)) = self.rings.get_mut(to) else {
                continue;
            };
            for lane in [Lane::Control, Lane::Data] {
                let (ring, overflow) = (rings.get_mut(lane), overflow.get_mut(lane));
                while let Some(msg) = overflow.pop_front() {
                    if let Err(msg) = ring.write(msg) {
                        overflow.push_front(msg);
                        break;
                    }
                    self.dirty |= 1 << to;
                    self.urgent |= 1 << to;
                }
            }
        }
        let urgent = std::mem::take(&mut self.urgent);
        let mut dirty = std::mem::take(&mut self.dirty);
        while dirty != 0 {
            let to = dirty.trailing_zeros() as usize;
            dirty &= dirty - 1;
            if let Some(Some(rings)) = self.rings.get(to) {
                for ring in rings.both() {
                    ring.publish();
                }
                if urgent & 1 << to != 0 && self.parkers[to].should_wake() {
                    wake(to);
                }
            }
        }
    }

    /// Data messages on their way to the other shards: in the rings as this producer last
    /// saw them (an upper bound: a consumer may have taken some since) plus the overflow.
    /// For metrics; it reads no shared state but the cached view.
    pub fn depth(&self) -> usize {
        let rings: usize = self
            .rings
            .iter()
            .flatten()
            .map(|r| r.data.capacity().saturating_sub(r.data.free()))
            .sum();
        rings + self.backlog()
    }

    /// Data messages waiting in the overflow (their ring was full).
    pub fn backlog(&self) -> usize {
        self.overflow.iter().map(|o| o.data.len()).sum()
    }

    /// The destinations whose data ring is full (bit j = shard j): a message for them
    /// waits in the overflow. The shard should stop reading the publishers that feed
    /// them until this bit clears.
    pub fn backlogged(&self) -> u64 {
        self.overflow
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.data.is_empty())
            .fold(0, |mask, (j, _)| mask | 1 << j)
    }
}

impl<T> Inbox<T> {
    pub fn shard(&self) -> ShardId {
        self.me
    }

    pub fn parker(&self) -> &Parker {
        &self.parkers[self.me]
    }

    /// Whether any ring (either lane) has a published message.
    pub fn has_mail(&self) -> bool {
        self.rings
            .iter()
            .flatten()
            .any(|r| r.both().iter().any(|c| !c.is_empty()))
    }

    /// Hands messages to `f(from, msg)`: first every source's control lane (up to a
    /// ring's worth each), then up to `budget` data messages per source, in order per
    /// lane and source. Returns how many were handled.
    pub fn drain(&mut self, budget: usize, mut f: impl FnMut(ShardId, T)) -> usize {
        let mut total = 0;
        for lane in [Lane::Control, Lane::Data] {
            for (from, rings) in self.rings.iter_mut().enumerate() {
                let Some(rings) = rings else { continue };
                let ring = rings.get_mut(lane);
                let budget = match lane {
                    Lane::Control => ring.capacity(),
                    Lane::Data => budget,
                };
                let mut n = 0;
                while n < budget {
                    let Some(msg) = ring.take() else { break };
                    f(from, msg);
                    n += 1;
                }
                ring.release();
                total += n;
            }
        }
        total
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
