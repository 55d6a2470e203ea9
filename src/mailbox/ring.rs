//! A bounded single-producer single-consumer ring: the queue behind one mailbox
//! (shard i -> shard j). The producer and the consumer each cache the other side's index
//! so that a push or pop touches the shared cache lines only when the cached view says
//! the ring is full or empty.
//!
//! It never blocks, never allocates after construction and never drops an element: a
//! push into a full ring hands the element back.

use std::cell::Cell;
use std::mem::MaybeUninit;

use super::sync::{Arc, AtomicUsize, Ordering, UnsafeCell};

/// Keeps the producer's and the consumer's index on separate cache lines.
#[repr(align(128))]
struct Padded<T>(T);

struct Shared<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    /// Next slot the consumer reads (written by the consumer only).
    head: Padded<AtomicUsize>,
    /// Next slot the producer writes (written by the producer only).
    tail: Padded<AtomicUsize>,
}

// SAFETY: the ring hands each `T` from exactly one producer thread to exactly one consumer
// thread; slot access is ordered by the release/acquire pairs on `head` and `tail`.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above; `Producer` and `Consumer` are not `Clone`, so there is one of each.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both halves are gone (this is the last `Arc`), so these loads see their final
        // stores.
        let head = self.head.0.load(Ordering::Acquire);
        let tail = self.tail.0.load(Ordering::Acquire);
        let mut i = head;
        while i != tail {
            // SAFETY: slots in [head, tail) hold initialised elements nobody popped.
            self.slots[i & self.mask].with_mut(|slot| unsafe { (*slot).assume_init_drop() });
            i = i.wrapping_add(1);
        }
    }
}

/// The sending half: owned by the producing shard.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    tail: Cell<usize>,
    cached_head: Cell<usize>,
}

/// The receiving half: owned by the consuming shard.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    head: Cell<usize>,
    cached_tail: Cell<usize>,
}

// SAFETY: each half is used by one thread at a time (they are `Send`, not `Sync`).
unsafe impl<T: Send> Send for Producer<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Consumer<T> {}

/// A ring holding at least `capacity` elements (rounded up to a power of two, minimum 2).
pub fn ring<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let cap = capacity.max(2).next_power_of_two();
    let slots = (0..cap)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        slots,
        mask: cap - 1,
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
    });
    (
        Producer {
            shared: Arc::clone(&shared),
            tail: Cell::new(0),
            cached_head: Cell::new(0),
        },
        Consumer {
            shared,
            head: Cell::new(0),
            cached_tail: Cell::new(0),
        },
    )
}

impl<T> Producer<T> {
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Free slots as the producer last saw them (refreshes the view when it looks full).
    pub fn free(&self) -> usize {
        let used = self.tail.get().wrapping_sub(self.cached_head.get());
        if used < self.capacity() {
            return self.capacity() - used;
        }
        self.cached_head
            .set(self.shared.head.0.load(Ordering::Acquire));
        self.capacity() - self.tail.get().wrapping_sub(self.cached_head.get())
    }

    /// Writes `value` without publishing it; [`Producer::publish`] makes every written
    /// element visible at once. Returns the value when the ring is full.
    pub fn write(&self, value: T) -> Result<(), T> {
        if self.free() == 0 {
            return Err(value);
        }
        let tail = self.tail.get();
        // SAFETY: slot `tail` is free (tail - head < capacity) and only the producer
        // writes free slots; the consumer reads it only after `publish`.
        self.shared.slots[tail & self.shared.mask].with_mut(|slot| unsafe {
            (*slot).write(value);
        });
        self.tail.set(tail.wrapping_add(1));
        Ok(())
    }

    /// Publishes every element written since the last call (one release store).
    pub fn publish(&self) {
        self.shared.tail.0.store(self.tail.get(), Ordering::Release);
    }

    /// `write` then `publish`.
    pub fn push(&self, value: T) -> Result<(), T> {
        self.write(value)?;
        self.publish();
        Ok(())
    }
}

impl<T> Consumer<T> {
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Whether a published element is waiting (may read the producer's index).
    pub fn is_empty(&self) -> bool {
        if self.head.get() != self.cached_tail.get() {
            return false;
        }
        self.cached_tail
            .set(self.shared.tail.0.load(Ordering::Acquire));
        self.head.get() == self.cached_tail.get()
    }

    /// Takes the next element without releasing its slot; [`Consumer::release`] frees
    /// every slot taken so far at once.
    pub fn take(&self) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        let head = self.head.get();
        // SAFETY: head < published tail, so the slot holds an initialised element that
        // the producer will not touch until `head` moves past it.
        let value = self.shared.slots[head & self.shared.mask]
            .with(|slot| unsafe { (*slot).assume_init_read() });
        self.head.set(head.wrapping_add(1));
        Some(value)
    }

    /// Hands the slots of every taken element back to the producer.
    pub fn release(&self) {
        self.shared.head.0.store(self.head.get(), Ordering::Release);
    }

    /// `take` then `release`.
    pub fn pop(&self) -> Option<T> {
        let v = self.take();
        self.release();
        v
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Slots taken but not released were moved out: mark them consumed so that
        // `Shared::drop` does not drop them twice.
        self.release();
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Written but unpublished elements become visible so `Shared::drop` frees them.
        self.publish();
    }
}
