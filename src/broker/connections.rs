//! The connections part of a shard's broker: the connection table (slot = [`ConnId`] =
//! the runtime's mio Token), each connection's protocol state and [`OutQueue`], the
//! queues of connections with new output (`poll_transmit`) or to close (`poll_close`),
//! and the allocation of uids (connection, session and auto client-id numbers, unique
//! across shards).
//!
//! An output queue left non-empty when `poll_transmit` moves on (the runtime wrote what
//! the socket took) outlives the loop iteration, so it is compacted then
//! ([`OutQueue::compact`]): nothing it keeps pins a read buffer or the encoder's scratch.
//!
//! It owns only per-connection IO state: it never decodes, never looks at a session, and
//! never decides about reading or closing on its own: the coordinator says when a
//! connection closes, and flow control (`flow.rs`) says when it may be read. It never
//! touches a socket: the runtime writes `output(conn)` and closes what `poll_close` yields.

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::codec::ProtocolVersion;
use crate::mailbox::ShardId;

use super::out_queue::Body;
use super::{ConnId, OutQueue};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnState {
    /// Accepted, waiting for CONNECT.
    AwaitConnect,
    /// CONNECT accepted by the files, waiting for the host's deferred login answer
    /// (`login.rs`).
    AwaitLogin,
    /// CONNECT accepted, waiting for the client id's home shard (N > 1).
    AwaitHome,
    /// CONNECT accepted; the session's slab key.
    Active(usize),
    /// The broker decided to close; waiting for `poll_close`.
    Closing,
}

/// One connection. Its identity and state are read by the coordinator; its output queue
/// changes only through [`Connections`].
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) uid: u64,
    pub(super) peer: SocketAddr,
    pub(super) listener: usize,
    pub(super) state: ConnState,
    pub(super) version: ProtocolVersion,
    /// Verified TLS client-certificate identity (for `use_identity_as_username`).
    pub(super) identity: Option<Box<str>>,
    /// CONNECT had Mosquitto's bridge bit (`bridge_member.rs`).
    pub(super) bridge: bool,
    /// Its output queue, only while output is pending (from the pool of
    /// [`Connections`], returned when it empties): an idle connection does not pay for
    /// one (issue 14).
    out: Option<Box<OutQueue>>,
    /// Progress of the socket, kept across queues: without a queue, the bytes ever
    /// written; with one, what to add (wrapping) to the queue's own counter, whose start
    /// depends on its earlier owners.
    written: u64,
    /// In `transmit_ready` already.
    transmit_flag: bool,
    /// Its connect timer (armed at accept) is still pending and will arm its keep alive
    /// timer: a connection has one timer entry at a time, not two (`timers.rs`).
    pub(super) keep_alive_waits: bool,
}

impl Conn {
    /// Memory held by the output queue (its bytes and per-chunk costs, see
    /// [`OutQueue::held`]): what the output limit counts.
    pub(super) fn queued_bytes(&self) -> usize {
        self.out.as_ref().map_or(0, |q| q.held())
    }

    /// Chunks of output queued (each a queue slot and a frame of its own).
    pub(super) fn queued_chunks(&self) -> usize {
        self.out.as_ref().map_or(0, |q| q.chunks())
    }

    /// Bytes of output ever written to the socket (progress).
    pub(super) fn written(&self) -> u64 {
        match &self.out {
            Some(q) => self.written.wrapping_add(q.written()),
            None => self.written,
        }
    }

    /// Its output queue, taken from `pool` (or made) if it has none.
    fn queue(&mut self, pool: &mut Pool) -> &mut OutQueue {
        let written = self.written;
        self.out.get_or_insert_with(|| {
            let q = pool.pop().unwrap_or_default();
            // From now on `written` is the offset to the queue's counter.
            self.written = written.wrapping_sub(q.written());
            q
        })
    }

    /// Gives an empty output queue back to `pool` (keeping its progress).
    fn release_queue(&mut self, pool: &mut Pool) {
        if self.out.as_ref().is_some_and(|q| q.is_empty()) {
            if let Some(q) = self.out.take() {
                self.written = self.written.wrapping_add(q.written());
                if pool.len() < POOL_MAX {
                    pool.push(q);
                }
            }
        }
    }
}

/// Empty output queues for reuse. Boxed on purpose: a box moves between the pool and a
/// connection's `out` without copying or allocating.
#[allow(clippy::vec_box)]
type Pool = Vec<Box<OutQueue>>;

/// Empty output queues kept for reuse per shard, at most: enough for every connection
/// that has output in one loop iteration of a big fan-out, without keeping the peak of
/// a burst forever.
const POOL_MAX: usize = 4096;

/// The connection table of one shard.
#[derive(Debug)]
pub(super) struct Connections {
    table: Vec<Option<Conn>>,
    transmit_ready: VecDeque<ConnId>,
    close_ready: VecDeque<ConnId>,
    /// Returned by the last `poll_close`; freed on the next call.
    last_closed: Option<(ConnId, u64)>,
    /// Returned by the last `poll_transmit`: its output is compacted on the next call.
    last_transmit: Option<ConnId>,
    /// Empty output queues for the connections that get output next.
    pool: Pool,
    /// The last uid handed out; uids step by the shard count so they stay unique across
    /// shards.
    last_uid: u64,
    uid_stride: u64,
}

impl Connections {
    pub(super) fn new(shard: ShardId, shards: usize) -> Self {
        Self {
            table: Vec::new(),
            transmit_ready: VecDeque::new(),
            close_ready: VecDeque::new(),
            last_closed: None,
            last_transmit: None,
            pool: Vec::new(),
            last_uid: shard as u64 + 1,
            uid_stride: shards as u64,
        }
    }

    /// The connections of the table.
    pub(super) fn ids(&self) -> Vec<ConnId> {
        (0..self.table.len())
            .filter(|&i| self.table[i].is_some())
            .collect()
    }

    /// Memory held by every connection's output queue (see [`OutQueue::held`]).
    pub(super) fn held_bytes(&self) -> u64 {
        self.table
            .iter()
            .flatten()
            .map(|c| c.queued_bytes() as u64)
            .sum()
    }

    /// A fresh uid (for a connection, a session or an assigned client id).
    pub(super) fn next_uid(&mut self) -> u64 {
        self.last_uid += self.uid_stride;
        self.last_uid
    }

    /// Records a new connection in slot `conn`; returns its uid.
    pub(super) fn accept(&mut self, conn: ConnId, peer: SocketAddr, listener: usize) -> u64 {
        if self.table.len() <= conn {
            self.table.resize_with(conn + 1, || None);
        }
        let uid = self.next_uid();
        if self.last_closed.is_some_and(|(c, _)| c == conn) {
            self.last_closed = None;
        }
        self.table[conn] = Some(Conn {
            uid,
            peer,
            listener,
            state: ConnState::AwaitConnect,
            version: ProtocolVersion::V311,
            identity: None,
            bridge: false,
            out: None,
            written: 0,
            transmit_flag: false,
            keep_alive_waits: true,
        });
        uid
    }

    pub(super) fn get(&self, conn: ConnId) -> Option<&Conn> {
        self.table.get(conn).and_then(Option::as_ref)
    }

    pub(super) fn get_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.table.get_mut(conn).and_then(Option::as_mut)
    }

    /// Frees slot `conn` (the socket is gone).
    pub(super) fn remove(&mut self, conn: ConnId) {
        if let Some(slot) = self.table.get_mut(conn) {
            *slot = None;
        }
    }

    /// Appends encoded bytes to a connection's output and flags it for `poll_transmit`.
    /// Returns the number of bytes queued (`None`: no such connection).
    /// `head` is an encoded frame (a slice of the encoder's buffer), `body` a payload.
    pub(super) fn push(&mut self, conn: ConnId, head: Bytes, body: Option<Body>) -> Option<usize> {
        let c = self.table.get_mut(conn).and_then(Option::as_mut)?;
        let n = head.len() + body.as_ref().map_or(0, Body::len);
        let out = c.queue(&mut self.pool);
        out.push_slice(head);
        if let Some(b) = body {
            out.push_body(b);
        }
        if !c.transmit_flag {
            c.transmit_flag = true;
            self.transmit_ready.push_back(conn);
        }
        Some(n)
    }

    /// Yields `conn` from `poll_transmit` once more, if it is still connection `uid` (its
    /// output may be empty: the runtime then re-checks whether to read it).
    pub(super) fn wake(&mut self, conn: ConnId, uid: u64) {
        let Some(c) = self.table.get_mut(conn).and_then(Option::as_mut) else {
            return;
        };
        if c.uid == uid && !c.transmit_flag {
            c.transmit_flag = true;
            self.transmit_ready.push_back(conn);
        }
    }

    /// Each connection with new output (or whose reads may resume), once. The output of
    /// the previous one has been written as far as its socket allowed: what is left is
    /// compacted, an empty queue goes back to the pool.
    pub(super) fn poll_transmit(&mut self) -> Option<ConnId> {
        if let Some(prev) = self.last_transmit.take() {
            if let Some(c) = self.table.get_mut(prev).and_then(Option::as_mut) {
                match c.out.as_deref_mut() {
                    Some(q) if q.is_empty() => c.release_queue(&mut self.pool),
                    Some(q) => q.compact(),
                    None => {}
                }
            }
        }
        while let Some(conn) = self.transmit_ready.pop_front() {
            if let Some(c) = self.get_mut(conn) {
                if c.transmit_flag {
                    c.transmit_flag = false;
                    self.last_transmit = Some(conn);
                    return Some(conn);
                }
            }
        }
        None
    }

    /// The output queue of `conn` (`None`: no such connection), for the runtime to
    /// write. A connection without output gets an empty queue from the pool, which goes
    /// back when `poll_transmit` moves on from it, or when its keep alive timer finds it
    /// empty ([`Connections::release_output`]: one written out on a WRITABLE event).
    pub(super) fn output(&mut self, conn: ConnId) -> Option<&mut OutQueue> {
        let c = self.table.get_mut(conn).and_then(Option::as_mut)?;
        Some(c.queue(&mut self.pool))
    }

    /// Gives the output queue of `conn` back to the pool if it is empty (written out).
    pub(super) fn release_output(&mut self, conn: ConnId) {
        if let Some(c) = self.table.get_mut(conn).and_then(Option::as_mut) {
            c.release_queue(&mut self.pool);
        }
    }

    /// Drops what is queued for `conn` (the memory goes now, not when the socket drains).
    pub(super) fn clear_output(&mut self, conn: ConnId) {
        if let Some(c) = self.get_mut(conn) {
            // Not pooled: a cleared queue may keep a big allocation (a written-out one
            // keeps none).
            c.written = c.written();
            c.out = None;
        }
    }

    /// Marks a connection for `poll_close`. Returns false if it was closing already (or
    /// is gone).
    pub(super) fn close(&mut self, conn: ConnId) -> bool {
        let Some(c) = self.get_mut(conn) else {
            return false;
        };
        if c.state == ConnState::Closing {
            return false;
        }
        c.state = ConnState::Closing;
        self.close_ready.push_back(conn);
        true
    }

    /// The next connection to close: the runtime flushes, then closes it. The slot of the
    /// previous one is freed now (the runtime is done with its output).
    pub(super) fn poll_close(&mut self) -> Option<ConnId> {
        if let Some((conn, uid)) = self.last_closed.take() {
            if let Some(slot) = self.table.get_mut(conn) {
                if slot.as_ref().is_some_and(|c| c.uid == uid) {
                    *slot = None;
                }
            }
        }
        while let Some(conn) = self.close_ready.pop_front() {
            if let Some(c) = self.get(conn) {
                if c.state == ConnState::Closing {
                    self.last_closed = Some((conn, c.uid));
                    return Some(conn);
                }
            }
        }
        None
    }
}
