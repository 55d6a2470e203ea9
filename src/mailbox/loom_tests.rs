//! Loom model checks of the ring and the wakeup protocol: every interleaving (and every
//! memory-ordering outcome loom models) of a producer and a consumer thread. Run with
//! `RUSTFLAGS="--cfg loom" cargo test --lib mailbox` (see the module docs).
#![allow(clippy::unwrap_used)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::{mesh, ring, Lane};

/// Drains what is left once both threads are done.
fn rest(c: &super::Consumer<u32>) -> Vec<u32> {
    std::iter::from_fn(|| c.pop()).collect()
}

/// A two-slot ring whose indices are about to wrap: the producer pushes two elements and
/// reuses a slot the consumer released for a third, while the consumer pops twice. No
/// spinning (each side makes a fixed number of attempts), so loom explores every
/// interleaving quickly; a slot reused before its release, or read before its publish,
/// is a data race loom reports.
#[test]
fn ring_spsc_order_and_wraparound() {
    loom::model(|| {
        let (p, c) = ring::<u32>(2);
        // Move both indices to 1 so that the next two writes wrap around the array.
        p.push(100).unwrap();
        assert_eq!(c.pop(), Some(100));
        let producer = thread::spawn(move || {
            p.push(0).unwrap();
            p.push(1).unwrap();
            // Room again only if the consumer released a slot meanwhile.
            let third = p.push(2).is_ok();
            (p, third)
        });
        let mut got: Vec<u32> = (0..2).filter_map(|_| c.pop()).collect();
        let (p, third) = producer.join().unwrap();
        got.extend(rest(&c));
        let expected: &[u32] = if third { &[0, 1, 2] } else { &[0, 1] };
        assert_eq!(got, expected);
        drop(p);
    });
}

/// Batched writes published at once, batched takes released at once, a slot reused
/// across the wrap after the batch release.
#[test]
fn ring_batched_publish_and_release() {
    loom::model(|| {
        let (p, c) = ring::<u32>(2);
        let producer = thread::spawn(move || {
            p.write(0).unwrap();
            p.write(1).unwrap();
            p.publish(); // both visible at once
            let third = p.free() > 0 && p.write(2).is_ok();
            p.publish();
            (p, third)
        });
        let mut got = Vec::new();
        while let Some(v) = c.take() {
            got.push(v);
        }
        c.release();
        // Either nothing or the whole first batch: never half of one publish.
        assert!(got.is_empty() || got.len() >= 2, "{got:?}");
        let (p, third) = producer.join().unwrap();
        got.extend(rest(&c));
        let expected: &[u32] = if third { &[0, 1, 2] } else { &[0, 1] };
        assert_eq!(got, expected);
        drop(p);
    });
}

/// An element that counts its drops.
#[derive(Debug)]
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Each side drops its half on its own thread, the consumer holding a taken element it
/// never released and the producer an element written but not published: every element
/// is dropped exactly once, whichever half goes last.
#[test]
fn ring_drop_with_taken_unreleased_and_unpublished_items() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let third = Arc::new(AtomicBool::new(false));
        let (p, c) = ring::<Counted>(2);
        p.push(Counted(Arc::clone(&drops))).unwrap();
        p.push(Counted(Arc::clone(&drops))).unwrap();
        let (d, t) = (Arc::clone(&drops), Arc::clone(&third));
        let producer = thread::spawn(move || {
            // If the consumer's release came first there is room: leave a third element
            // written but never published.
            if p.free() > 0 {
                p.write(Counted(d)).unwrap();
                t.store(true, Ordering::Relaxed);
            }
            drop(p);
        });
        let consumer = thread::spawn(move || {
            let first = c.take(); // taken, never released
            assert!(first.is_some());
            drop(first);
            drop(c);
        });
        producer.join().unwrap();
        consumer.join().unwrap();
        let created = 2 + usize::from(third.load(Ordering::Relaxed));
        assert_eq!(
            drops.load(Ordering::Relaxed),
            created,
            "dropped twice or never"
        );
        assert_eq!(Arc::strong_count(&drops), 1, "an element was leaked");
    });
}

/// The sleeping-edge protocol between two shards: shard 1 announces sleep and re-checks
/// its inbox; shard 0 sends, publishes and wakes only if it finds the flag. Whatever the
/// interleaving, a shard that goes to sleep is woken (no lost wakeup), and at most once.
#[test]
fn parker_never_loses_a_wakeup() {
    loom::model(|| {
        let mut shards = mesh::<u32>(2, 2, 2);
        let (_out1, mut in1) = shards.pop().unwrap();
        let (mut out0, _in0) = shards.pop().unwrap();
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&wakes);
        let sender = thread::spawn(move || {
            out0.send(1, Lane::Data, 7).unwrap();
            out0.flush(|to| {
                assert_eq!(to, 1);
                w.fetch_add(1, Ordering::Relaxed);
            });
        });
        // The receiver's loop iteration: prepare to sleep, re-check, sleep or not.
        in1.parker().prepare_sleep();
        let slept = if in1.has_mail() {
            in1.parker().awake();
            false
        } else {
            true
        };
        sender.join().unwrap();
        let woken = wakes.load(Ordering::Relaxed);
        assert!(woken <= 1, "woken {woken} times");
        if slept {
            assert_eq!(woken, 1, "slept with mail waiting and nobody woke it");
        }
        // Awake (either way), it finds the message.
        in1.parker().awake();
        let mut got = Vec::new();
        in1.drain(8, |from, m| got.push((from, m)));
        assert_eq!(got, [(0, 7)]);
    });
}

/// A producer that publishes while the consumer is awake (busy) does not wake it: no
/// syscall per message while shards are busy.
#[test]
fn parker_does_not_wake_a_busy_shard() {
    loom::model(|| {
        let mut shards = mesh::<u32>(2, 2, 2);
        let (_out1, mut in1) = shards.pop().unwrap();
        let (mut out0, _in0) = shards.pop().unwrap();
        let woke = Arc::new(AtomicBool::new(false));
        let w = Arc::clone(&woke);
        let sender = thread::spawn(move || {
            out0.send(1, Lane::Data, 1).unwrap();
            out0.flush(|_| w.store(true, Ordering::Relaxed));
        });
        let mut got = 0;
        while got == 0 {
            in1.drain(8, |_, _| got += 1);
            thread::yield_now();
        }
        sender.join().unwrap();
        assert!(!woke.load(Ordering::Relaxed));
    });
}
