//! The per-connection output queue: shared `Bytes` chunks written with writev. It never
//! copies a chunk and never touches a socket.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Bytes waiting to be written to one connection: a queue of shared chunks so that a
/// fan-out frame is written from one `Bytes` to many sockets without copying.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Bytes>,
    len: usize,
    /// Bytes ever consumed (written to the socket): progress for stall detection.
    written: u64,
}

impl OutQueue {
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Total bytes queued.
    pub fn len(&self) -> usize {
        self.len
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
        if self.chunks.is_empty() && self.chunks.capacity() > 0 {
            // An idle connection keeps no queue allocation (one free per drained queue,
            // not per message).
            self.chunks = VecDeque::new();
        }
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }
}
