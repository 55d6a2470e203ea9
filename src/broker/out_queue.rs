//! The per-connection output queue: shared `Bytes` chunks written with writev, and what
//! they keep alive.
//!
//! On the hot path a chunk is never copied: a frame is a slice of the encoder's scratch
//! buffer, a payload a slice of the publisher's read buffer, shared by every subscriber
//! that gets the same bytes, and most queues are written out within the loop iteration.
//! What the socket does not take outlives the iteration, and a 20-byte frame left there
//! would pin a 64 KiB scratch block, a payload a whole read buffer: so when the queue is
//! kept ([`OutQueue::compact`], once per iteration, by the coordinator) every chunk queued
//! since the last compaction that shares a bigger buffer is replaced, once: runs of
//! frames are copied into one exact allocation, and a payload by the payload of its
//! message's detached copy (one copy per message, shared by every queue that keeps it).
//! [`OutQueue::held`] is the memory that then stays alive, what the output limit counts.
//!
//! It never touches a socket and never decides anything: it holds bytes in order.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

use crate::session::Message;

/// What one chunk costs beyond its bytes: its `Bytes` handle in the queue and the
/// allocator's header of the allocation it refers to.
pub const CHUNK_OVERHEAD: usize = std::mem::size_of::<Bytes>() + 16;

/// Chunks a drained queue makes room for at its first push.
const FIRST_CAPACITY: usize = 16;

/// A message payload on its way into an output queue: the bytes, and the message they
/// belong to when they may pin a read buffer (so that a queue that keeps them can switch
/// to the message's detached copy instead of copying them itself).
#[derive(Debug, Clone)]
pub struct Body {
    bytes: Bytes,
    /// `None`: the bytes are an exact allocation of their own (a detached message).
    msg: Option<Arc<Message>>,
}

impl Body {
    /// The payload of `msg`.
    pub fn of(msg: &Arc<Message>) -> Self {
        Self {
            bytes: msg.publish.payload.clone(),
            msg: (!msg.is_standalone()).then(|| Arc::clone(msg)),
        }
    }

    /// Bytes that are their own allocation (or shared on purpose).
    pub fn owned(bytes: Bytes) -> Self {
        Self { bytes, msg: None }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Bytes waiting to be written to one connection: a queue of shared chunks so that a
/// fan-out frame is written from one `Bytes` to many sockets without copying.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Bytes>,
    /// Chunks ever queued (so that a chunk has a number: `pushed - chunks.len()` is the
    /// front's).
    pushed: u64,
    /// How many chunks at the back were queued since the last compaction. They are
    /// slices of shared buffers (encoded frames), except those listed in `bodies`.
    fresh: usize,
    /// The fresh chunks that are not frames, by number: `None` an allocation of its own
    /// (kept as it is), `Some` the payload of a message that may pin a read buffer.
    bodies: VecDeque<(u64, Option<Arc<Message>>)>,
    len: usize,
    /// Bytes ever consumed (written to the socket): progress for stall detection.
    written: u64,
}

impl OutQueue {
    /// Queues a chunk; returns its number.
    fn push_chunk(&mut self, chunk: Bytes) -> u64 {
        if self.chunks.capacity() == 0 {
            // The queue gave its buffer back when it drained: take one from the thread's
            // pool (a connection that gets a message per loop iteration otherwise costs
            // a malloc and a free per iteration), or make room for a typical iteration's
            // chunks at once rather than growing (and copying) from 4 to 8 to 16 (the
            // growth was 7 % of a QoS 0 fan-out's instructions).
            self.chunks = pool::take();
        }
        self.len += chunk.len();
        self.chunks.push_back(chunk);
        self.fresh += 1;
        self.pushed += 1;
        self.pushed - 1
    }

    /// Queues bytes that are an allocation of their own.
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            let n = self.push_chunk(chunk);
            self.bodies.push_back((n, None));
        }
    }

    /// Queues a slice of a shared buffer (an encoded frame): copied if it is kept past
    /// the iteration.
    pub fn push_slice(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.push_chunk(chunk);
        }
    }

    /// Queues a message payload.
    pub fn push_body(&mut self, body: Body) {
        if !body.bytes.is_empty() {
            let n = self.push_chunk(body.bytes);
            self.bodies.push_back((n, body.msg));
        }
    }

    /// Total bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The memory the queue keeps alive once compacted: its bytes plus
    /// [`CHUNK_OVERHEAD`] per chunk (a payload shared with other queues counts in full in
    /// each). What the output limit (`max_queued_bytes`, 4 MiB by default) is checked
    /// against.
    pub fn held(&self) -> usize {
        self.len + self.chunks.len() * CHUNK_OVERHEAD
    }

    /// Number of chunks queued (how many `IoSlice`s a `writev` of everything needs).
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `iov` with the first chunks; returns how many were filled.
    pub fn io_slices<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in iov.iter_mut().zip(self.chunks.iter()) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// Bytes written so far (never decreases).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Drops the first `n` bytes (after a successful write of `n` bytes).
    pub fn consume(&mut self, mut n: usize) {
        self.len = self.len.saturating_sub(n);
        self.written += n as u64;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
        self.fresh = self.fresh.min(self.chunks.len());
        if self.chunks.is_empty() {
            if !self.bodies.is_empty() {
                self.bodies.clear();
            }
            if self.chunks.capacity() > 0 {
                // An idle connection keeps no queue allocation: the buffer goes back to
                // the thread's pool (bounded; see `pool`).
                pool::give(std::mem::take(&mut self.chunks));
                self.bodies = VecDeque::new();
            }
        }
    }

    /// The queue outlives the loop iteration (what is left after the write): every chunk
    /// queued since the last call that shares a bigger buffer is replaced, once (see the
    /// module documentation). Cheap when nothing is left or nothing new was queued.
    #[inline]
    pub fn compact(&mut self) {
        // The common case: everything was written (or nothing queued since).
        if self.fresh != 0 || !self.bodies.is_empty() {
            self.compact_fresh();
        }
    }

    fn compact_fresh(&mut self) {
        let fresh = std::mem::take(&mut self.fresh).min(self.chunks.len());
        let start = self.chunks.len() - fresh;
        // The number of the first fresh chunk; bodies before it are gone or compacted.
        let first = self.pushed - fresh as u64;
        while self.bodies.front().is_some_and(|(n, _)| *n < first) {
            self.bodies.pop_front();
        }
        if fresh == 0 || (self.bodies.len() == fresh && self.bodies.iter().all(|b| b.1.is_none())) {
            self.bodies.clear();
            return;
        }
        let tail: Vec<Bytes> = self.chunks.drain(start..).collect();
        let mut bodies = std::mem::take(&mut self.bodies);
        let mut run: Vec<Bytes> = Vec::new();
        for (n, chunk) in (first..).zip(tail) {
            let body = match bodies.front() {
                Some((b, _)) if *b == n => bodies.pop_front().map(|(_, m)| m),
                _ => None,
            };
            let Some(msg) = body else {
                // A frame: part of a run copied into one allocation.
                run.push(chunk);
                continue;
            };
            self.push_run(&mut run);
            let Some(msg) = msg else {
                self.chunks.push_back(chunk); // its own allocation
                continue;
            };
            let copy = Message::detached(&msg);
            let payload = &copy.publish.payload;
            // The chunk is the payload's tail (its front may have been written).
            match payload.len().checked_sub(chunk.len()) {
                Some(skip) if payload[skip..] == chunk[..] => {
                    self.chunks.push_back(payload.slice(skip..));
                }
                _ => self.chunks.push_back(Bytes::copy_from_slice(&chunk)),
            }
        }
        self.push_run(&mut run);
        self.bodies = bodies; // emptied, capacity kept
    }

    /// Copies a run of slices into one exact allocation at the back.
    fn push_run(&mut self, run: &mut Vec<Bytes>) {
        if run.is_empty() {
            return;
        }
        let total = run.iter().map(Bytes::len).sum();
        let mut copy = BytesMut::with_capacity(total);
        for chunk in run.drain(..) {
            copy.extend_from_slice(&chunk);
        }
        self.chunks.push_back(copy.freeze());
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        if !self.bodies.is_empty() {
            self.bodies.clear();
        }
        self.fresh = 0;
        self.len = 0;
    }
}

/// Drained queues' chunk buffers, per thread (a shard's loop thread), for the next queue
/// that gets output: at most [`pool::KEPT`] buffers of [`FIRST_CAPACITY`] chunks (512
/// KiB per thread at most), so idle connections hold no queue memory and a fan-out to a
/// thousand subscribers per loop iteration does not cost a malloc and a free per
/// subscriber per iteration (a pool of 64 saved nothing there: every queue drains in the
/// same iteration and the next one needs them all again).
mod pool {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use bytes::Bytes;

    use super::FIRST_CAPACITY;

    pub(super) const KEPT: usize = 1024;

    thread_local! {
        static FREE: RefCell<Vec<VecDeque<Bytes>>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer with room for at least [`FIRST_CAPACITY`] chunks.
    pub(super) fn take() -> VecDeque<Bytes> {
        FREE.try_with(|f| f.try_borrow_mut().ok().and_then(|mut free| free.pop()))
            .ok()
            .flatten()
            .unwrap_or_else(|| VecDeque::with_capacity(FIRST_CAPACITY))
    }

    /// Keeps an empty buffer for [`take`] (or frees it: the pool is full, or the buffer
    /// grew beyond [`FIRST_CAPACITY`] chunks).
    pub(super) fn give(buf: VecDeque<Bytes>) {
        if !buf.is_empty() || buf.capacity() > FIRST_CAPACITY {
            return;
        }
        let _ = FREE.try_with(|f| {
            if let Ok(mut free) = f.try_borrow_mut() {
                if free.len() < KEPT {
                    free.push(buf);
                }
            }
        });
    }

    /// Buffers kept (tests).
    #[cfg(test)]
    pub(super) fn kept() -> usize {
        FREE.with(|f| f.borrow().len())
    }
}

#[cfg(test)]
#[path = "out_queue_tests.rs"]
mod tests;
