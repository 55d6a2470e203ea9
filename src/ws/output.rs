//! What the broker writes on a WebSocket connection, as state without buffers of its own
//! for MQTT bytes: the header of the binary frame being written (the MQTT bytes of that
//! frame stay in the connection's output queue, written from there without a copy) and
//! the bytes that go between frames — the HTTP response, pongs, the close frame.
//!
//! Outbound framing is one binary frame per write batch, not per packet: the runtime
//! begins a frame over the chunks one `writev` would take, writes the header and those
//! chunks, and begins the next frame only once this one is out. Bytes queued here are
//! written only between frames, so a control frame never lands inside a data frame.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};

use super::frame::{encode_header, OP_BINARY};

/// The output state of one WebSocket connection.
#[derive(Debug, Default)]
pub struct Framer {
    /// Whole frames (or HTTP bytes) to write before the next data frame.
    between: VecDeque<Bytes>,
    header: [u8; 10],
    header_len: u8,
    header_pos: u8,
    /// Payload bytes of the current frame still to write.
    payload_left: usize,
}

impl Framer {
    /// Queues bytes that go out whole, after the current frame.
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.between.push_back(bytes);
        }
    }

    /// A data frame is being written.
    pub fn in_frame(&self) -> bool {
        self.header_pos < self.header_len || self.payload_left > 0
    }

    /// Nothing of ours to write: a new frame may begin.
    pub fn is_idle(&self) -> bool {
        !self.in_frame() && self.between.is_empty()
    }

    /// Begins a binary frame of `len` payload bytes (only when idle).
    pub fn begin(&mut self, len: usize) {
        debug_assert!(self.is_idle());
        self.header_len = encode_header(OP_BINARY, len as u64, &mut self.header) as u8;
        self.header_pos = 0;
        self.payload_left = len;
    }

    /// The bytes to write next, before any payload: the rest of the current frame's
    /// header, or between frames the first queued chunk.
    pub fn prefix(&self) -> &[u8] {
        if self.in_frame() {
            &self.header[usize::from(self.header_pos)..usize::from(self.header_len)]
        } else {
            self.between.front().map_or(&[], |b| b.as_ref())
        }
    }

    /// Payload bytes of the current frame still to write.
    pub fn payload_left(&self) -> usize {
        self.payload_left
    }

    /// `n` bytes were written (the prefix first, then payload); returns how many of them
    /// were payload (to consume from the output queue).
    pub fn advance(&mut self, mut n: usize) -> usize {
        if !self.in_frame() {
            while n > 0 {
                let Some(front) = self.between.front_mut() else {
                    break;
                };
                if front.len() <= n {
                    n -= front.len();
                    self.between.pop_front();
                } else {
                    front.advance(n);
                    n = 0;
                }
            }
            return 0;
        }
        let header = n.min(usize::from(self.header_len - self.header_pos));
        self.header_pos += header as u8;
        let payload = (n - header).min(self.payload_left);
        self.payload_left -= payload;
        if !self.in_frame() {
            self.header_len = 0;
            self.header_pos = 0;
        }
        payload
    }
}
