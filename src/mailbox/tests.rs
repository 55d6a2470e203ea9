//! Sans-IO tests of the rings, the overflow and the wakeup protocol.
#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn ring_is_fifo_and_bounded() {
    let (p, c) = ring::<u32>(4);
    assert_eq!(p.capacity(), 4);
    for i in 0..4 {
        p.push(i).unwrap();
    }
    assert_eq!(p.push(9), Err(9));
    assert_eq!(c.pop(), Some(0));
    p.push(4).unwrap();
    let got: Vec<u32> = std::iter::from_fn(|| c.pop()).collect();
    assert_eq!(got, vec![1, 2, 3, 4]);
    assert!(c.is_empty());
}

#[test]
fn unpublished_writes_are_invisible() {
    let (p, c) = ring::<u32>(8);
    p.write(1).unwrap();
    assert!(c.is_empty());
    p.publish();
    assert_eq!(c.pop(), Some(1));
}

#[test]
fn dropping_a_ring_drops_its_elements() {
    let item = std::sync::Arc::new(());
    let (p, c) = ring(4);
    p.push(std::sync::Arc::clone(&item)).unwrap();
    p.push(std::sync::Arc::clone(&item)).unwrap();
    drop(c.pop());
    drop(p);
    drop(c);
    assert_eq!(std::sync::Arc::strong_count(&item), 1);
}

/// Taken but never released, written but never published, never taken: each element is
/// dropped exactly once when both halves go (Miri checks for double drops and leaks).
#[test]
fn dropping_with_taken_unreleased_and_unpublished_items() {
    let item = std::sync::Arc::new(());
    let (p, c) = ring(2);
    // Indices wrap: one element through first.
    p.push(std::sync::Arc::clone(&item)).unwrap();
    drop(c.pop());
    p.push(std::sync::Arc::clone(&item)).unwrap();
    p.push(std::sync::Arc::clone(&item)).unwrap();
    let taken = c.take().unwrap(); // never released
    drop(c);
    p.write(std::sync::Arc::clone(&item)).unwrap(); // the slot `c` freed on drop
    drop(p);
    assert_eq!(std::sync::Arc::strong_count(&item), 2);
    drop(taken);
    assert_eq!(std::sync::Arc::strong_count(&item), 1);
}

#[test]
fn ring_across_threads_keeps_order() {
    // Under Miri (interpreted, ~1000x slower) fewer elements through a smaller ring
    // still wrap its indices many times.
    let (p, c) = ring::<u64>(if cfg!(miri) { 8 } else { 64 });
    let n = if cfg!(miri) { 500 } else { 200_000u64 };
    let t = std::thread::spawn(move || {
        for i in 0..n {
            let mut v = i;
            loop {
                match p.push(v) {
                    Ok(()) => break,
                    Err(back) => {
                        v = back;
                        std::hint::spin_loop();
                    }
                }
            }
        }
    });
    let mut expect = 0;
    while expect < n {
        if let Some(v) = c.pop() {
            assert_eq!(v, expect);
            expect += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    t.join().unwrap();
}

#[test]
fn overflow_keeps_order_and_counts_backlog() {
    let mut shards = mesh::<u32>(2, 2);
    let (mut in1_out, mut in1) = (None, None);
    let (mut out0, _in0) = shards.remove(0);
    if let Some((o, i)) = shards.pop() {
        in1_out = Some(o);
        in1 = Some(i);
    }
    let mut in1 = in1.unwrap();
    for i in 0..5 {
        out0.send(1, i).unwrap();
    }
    assert_eq!(out0.send(0, 7), Err(7), "no ring to oneself");
    out0.flush(|_| {});
    assert_eq!(out0.backlog(), 3);
    let mut got = Vec::new();
    in1.drain(usize::MAX, |from, m| {
        assert_eq!(from, 0);
        got.push(m);
    });
    out0.flush(|_| {});
    assert_eq!(out0.backlog(), 1);
    in1.drain(usize::MAX, |_, m| got.push(m));
    out0.flush(|_| {});
    in1.drain(usize::MAX, |_, m| got.push(m));
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert_eq!(out0.backlog(), 0);
    drop(in1_out);
}

#[test]
fn wake_only_on_the_sleeping_edge() {
    let mut shards = mesh::<u32>(2, 16);
    let (_out1, in1) = shards.pop().unwrap();
    let (mut out0, _in0) = shards.pop().unwrap();
    let mut wakes = 0;
    // Busy consumer: no wake.
    out0.send(1, 1).unwrap();
    out0.flush(|_| wakes += 1);
    assert_eq!(wakes, 0);
    // Consumer goes to sleep: one wake for the next batch, none for the one after.
    in1.parker().prepare_sleep();
    out0.send(1, 2).unwrap();
    out0.flush(|j| {
        assert_eq!(j, 1);
        wakes += 1;
    });
    out0.send(1, 3).unwrap();
    out0.flush(|_| wakes += 1);
    assert_eq!(wakes, 1);
    in1.parker().awake();
    assert!(in1.has_mail());
}

#[test]
fn drain_respects_budget() {
    let mut shards = mesh::<u32>(2, 16);
    let (_out1, mut in1) = shards.pop().unwrap();
    let (mut out0, _in0) = shards.pop().unwrap();
    for i in 0..10 {
        out0.send(1, i).unwrap();
    }
    out0.flush(|_| {});
    assert_eq!(in1.drain(4, |_, _| {}), 4);
    assert_eq!(in1.drain(100, |_, _| {}), 6);
    assert!(!in1.has_mail());
}
