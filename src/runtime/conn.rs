//! One client connection as the runtime sees it: the socket, its read buffer and its
//! registered interest. MQTT state lives in the broker, keyed by the same slab index.
//! It moves bytes only: it never interprets them and never decides whether to read
//! (the broker's `wants_read` does). A partial frame left in the read buffer once the
//! socket is drained is compacted ([`Conn::compact_partial_frame`]): a connection waiting
//! for the rest of a frame holds its bytes, not a 16 KiB+ buffer.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use mio::net::TcpStream;

use super::tls::TlsConn;
use crate::broker::OutQueue;
use crate::ws::output::Framer;
use crate::ws::{Closing, WsConn};

/// Bytes read per `read` call; the buffer grows to hold a bigger frame when needed.
pub const READ_CHUNK: usize = 16 * 1024;
/// Bytes read from one connection per loop iteration before the next connection gets its
/// turn (fairness); the rest is read on the next iteration.
pub const READ_BUDGET: usize = 256 * 1024;
/// Chunks handed to one `writev` (Linux IOV_MAX): a subscriber fed by many publishers gets
/// one syscall per loop iteration, not one per 64 messages (fan-in: 0.39 -> 0.30 us broker
/// CPU per message, perf/results/2026-11-26-profile-experiments.md).
const MAX_IOV: usize = 1024;
/// The iovec array used when few chunks are queued.
const SMALL_IOV: usize = 32;
/// A partial frame up to this size is copied out of its read buffer when the socket is
/// drained; a bigger one is a frame under way that fills most of its buffer anyway.
const COMPACT_PARTIAL: usize = READ_CHUNK / 4;

/// Moves a small partial frame out of its read buffer (at least [`READ_CHUNK`], the
/// frames before it already handed to the broker) into an exact allocation, so that a
/// connection that stops mid-frame keeps only the frame's bytes (a connection with
/// nothing buffered keeps nothing: its buffer goes back to the shard's pool). Returns
/// whether it copied.
fn compact_partial(rbuf: &mut BytesMut) -> bool {
    let len = rbuf.len();
    if len == 0 || len > COMPACT_PARTIAL {
        return false;
    }
    *rbuf = BytesMut::from(&rbuf[..]);
    true
}

/// Bytes waiting to be written, as `writev` (or TLS) takes them: the broker's
/// [`OutQueue`], or that queue framed as WebSocket frames ([`WsOut`]).
pub trait Outgoing {
    /// Fills `iov` with the next slices to write; returns how many were filled.
    fn io_slices<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize;
    /// The first `n` bytes of those slices were written.
    fn consume(&mut self, n: usize);
    fn is_empty(&self) -> bool;
    /// How many slices everything would take (to size the iovec array).
    fn chunks(&self) -> usize;
}

impl Outgoing for OutQueue {
    fn io_slices<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        Self::io_slices(self, iov)
    }
    fn consume(&mut self, n: usize) {
        Self::consume(self, n);
    }
    fn is_empty(&self) -> bool {
        Self::is_empty(self)
    }
    fn chunks(&self) -> usize {
        Self::chunks(self)
    }
}

/// The broker's output queue of a WebSocket connection, written as binary frames: one
/// frame over the chunks one `writev` takes (a write batch, not a packet), its header
/// from the [`Framer`], its payload straight from the queue's chunks (no copy). The
/// framer's own bytes (HTTP response, pongs, close) go between frames. While the
/// connection is not open (handshake, closing) the broker's bytes are not sent.
pub struct WsOut<'a> {
    framer: &'a mut Framer,
    out: &'a mut OutQueue,
    open: bool,
}

impl<'a> WsOut<'a> {
    pub fn new(framer: &'a mut Framer, out: &'a mut OutQueue, open: bool) -> Self {
        let mut this = Self { framer, out, open };
        this.begin_frame();
        this
    }

    /// Between frames with nothing of the framer's own queued: the next frame covers the
    /// chunks one writev takes, so frame boundaries fall on chunk boundaries.
    fn begin_frame(&mut self) {
        if !self.open || !self.framer.is_idle() || self.out.is_empty() {
            return;
        }
        let len = if self.out.chunks() < SMALL_IOV {
            self.out.len()
        } else {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n = self.out.io_slices(&mut iov[..MAX_IOV - 1]);
            iov[..n].iter().map(|s| s.len()).sum()
        };
        self.framer.begin(len);
    }
}

impl Outgoing for WsOut<'_> {
    fn io_slices<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let prefix = self.framer.prefix();
        if !prefix.is_empty() {
            let Some(slot) = iov.first_mut() else {
                return 0;
            };
            *slot = IoSlice::new(prefix);
            n = 1;
        }
        if !self.framer.in_frame() {
            return n;
        }
        // The frame ends on a chunk boundary: whole chunks until its length is reached.
        let mut left = self.framer.payload_left();
        let filled = self.out.io_slices(&mut iov[n..]);
        let mut taken = 0;
        for slice in &iov[n..n + filled] {
            if left == 0 {
                break;
            }
            left = left.saturating_sub(slice.len());
            taken += 1;
        }
        n + taken
    }

    fn consume(&mut self, n: usize) {
        let payload = self.framer.advance(n);
        self.out.consume(payload);
        if !self.framer.in_frame() {
            self.begin_frame();
        }
    }

    fn is_empty(&self) -> bool {
        let payload = if self.framer.in_frame() {
            self.framer.payload_left().min(self.out.len())
        } else if self.open {
            self.out.len()
        } else {
            0
        };
        self.framer.prefix().is_empty() && payload == 0
    }

    fn chunks(&self) -> usize {
        self.out.chunks() + 1
    }
}

/// One `sendmsg` of up to `N` slices of `out`.
///
/// `sendmsg`, not `writev`: the socket call skips the VFS layer (`vfs_writev`,
/// `fdget_pos`). Slices that lie end to end in memory (consecutive frames of the
/// encoder's buffer: a subscriber's messages of one loop iteration, a fan-in's whole
/// batch) go to the kernel as one iovec, so it copies one run instead of walking a
/// 20-byte segment per message (perf/results/2026-12-03-qos0-round4.md).
fn write_some<const N: usize>(stream: &TcpStream, out: &impl Outgoing) -> io::Result<usize> {
    let mut iov = [IoSlice::new(&[]); N];
    let n = out.io_slices(&mut iov);
    let iov = &mut iov[..n];
    // IoSlice is ABI-compatible with `struct iovec` on Unix (std guarantees it); from
    // here on the array is only used as iovecs handed to the kernel, never as slices.
    let vecs = iov.as_mut_ptr().cast::<libc::iovec>();
    let m = coalesce(
        // SAFETY: `vecs` points to `n` initialised iovecs (the IoSlices above), borrowed
        // mutably for this call only.
        unsafe { std::slice::from_raw_parts_mut(vecs, n) },
    );
    // SAFETY: the first `m` iovecs describe bytes of chunks `out` keeps alive (merged
    // runs are exactly the bytes of the adjacent slices they cover); the fd is the open
    // socket `stream` owns; sendmsg only reads them.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = vecs;
        msg.msg_iovlen = m as _;
        libc::sendmsg(
            stream.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::cast_sign_loss)] // sent >= 0 checked above
    Ok(sent as usize)
}

/// Merges iovecs that lie end to end in memory into one, in place; returns how many
/// are left. The bytes described, in order, do not change.
fn coalesce(vecs: &mut [libc::iovec]) -> usize {
    let mut m = 0;
    for i in 0..vecs.len() {
        let v = vecs[i];
        if v.iov_len == 0 {
            continue;
        }
        if m > 0 {
            let last = &mut vecs[m - 1];
            if (last.iov_base as usize).wrapping_add(last.iov_len) == v.iov_base as usize {
                last.iov_len += v.iov_len;
                continue;
            }
        }
        vecs[m] = v;
        m += 1;
    }
    m
}

/// Writes as much of `out` as the socket takes (through TLS when given). Ok(true) when
/// `out` is empty.
fn write_out(
    stream: &mut TcpStream,
    tls: Option<&mut TlsConn>,
    out: &mut impl Outgoing,
) -> io::Result<bool> {
    if let Some(tls) = tls {
        return tls.flush(stream, out);
    }
    while !out.is_empty() {
        // The common case (a few chunks) does not initialise a 16 KiB iovec array.
        let res = if out.chunks() <= SMALL_IOV {
            write_some::<SMALL_IOV>(stream, out)
        } else {
            write_some::<MAX_IOV>(stream, out)
        };
        match res {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => out.consume(written),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

pub struct Conn {
    pub stream: TcpStream,
    /// Empty (no allocation) while the connection is idle.
    pub rbuf: BytesMut,
    /// WRITABLE interest is registered (only while output is pending).
    pub writable: bool,
    /// Data may still be readable (budget ran out or the broker paused reading).
    pub read_pending: bool,
    /// Index of the listener that accepted it (for per-listener limits); 32 bits, like
    /// `bridge`, so that an idle connection's entry stays small (issue 14).
    pub listener: u32,
    /// TLS state on a TLS listener.
    pub tls: Option<Box<TlsConn>>,
    /// The last plain read filled less than the space offered: the socket was empty at
    /// that moment, and with edge-triggered readiness new data brings a new event, so the
    /// read that would only return EAGAIN can be skipped (one syscall per readable
    /// connection per iteration).
    pub last_read_short: bool,
    /// The peer shut down its side (EPOLLRDHUP/error seen): keep reading until EOF.
    pub peer_closed: bool,
    /// `rbuf` holds a compacted partial frame and nothing was read since.
    partial_compacted: bool,
    /// This is the remote socket of bridge N (`bridge_link.rs`), not a client.
    pub bridge: Option<u32>,
    /// WebSocket state on a websockets listener (between the socket, or TLS, and the
    /// MQTT bytes in `rbuf`).
    pub ws: Option<Box<WsConn>>,
}

pub enum ReadOutcome {
    /// Read everything the socket had (WouldBlock).
    Drained,
    /// Budget spent; more may be waiting.
    Budget,
    /// EOF or a socket error: the connection is gone.
    Closed,
}

impl Conn {
    pub fn new(stream: TcpStream, listener: usize) -> Self {
        Self {
            stream,
            rbuf: BytesMut::new(),
            writable: false,
            read_pending: false,
            // A shard has a handful of listeners (config lines).
            listener: listener as u32,
            tls: None,
            last_read_short: false,
            peer_closed: false,
            partial_compacted: false,
            bridge: None,
            ws: None,
        }
    }

    /// Reads once: into the spare capacity of `rbuf`, or on a WebSocket connection into
    /// its undecoded input (see [`Self::decode_ws`]). Returns bytes read (0 = EOF).
    pub fn read_once(&mut self) -> io::Result<usize> {
        let (buf, room) = match self.ws.as_deref_mut() {
            Some(ws) => {
                let room = ws.read_room(READ_CHUNK);
                (&mut ws.input, room)
            }
            None => (&mut self.rbuf, READ_CHUNK),
        };
        if room == 0 {
            // A closing WebSocket connection reads nothing more.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if let Some(tls) = self.tls.as_mut() {
            let len = buf.len();
            buf.resize(len + room, 0);
            let res = tls.read(&mut self.stream, &mut buf[len..]);
            buf.truncate(len + *res.as_ref().unwrap_or(&0));
            return res;
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let spare = buf.chunk_mut();
        let cap = spare.len().min(room);
        let ptr = spare.as_mut_ptr();
        // SAFETY: `ptr` points to at least `cap` writable bytes of spare capacity owned by
        // `buf`; read(2) writes at most `cap` bytes there, and we only expose the `n` it
        // wrote.
        let n = unsafe { libc::read(self.stream.as_raw_fd(), ptr.cast(), cap) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(clippy::cast_sign_loss)] // n >= 0 checked above
        let n = n as usize;
        // SAFETY: read(2) initialised exactly `n <= cap` bytes of the spare capacity.
        unsafe { buf.advance_mut(n) };
        self.last_read_short = n < cap;
        self.partial_compacted &= n == 0;
        Ok(n)
    }

    /// On a WebSocket connection: handles what was read (the HTTP request, then frames),
    /// appending MQTT bytes to `rbuf`, at most `limit` per frame.
    pub fn decode_ws(&mut self, limit: u32, now: Instant) {
        if let Some(ws) = self.ws.as_deref_mut() {
            ws.on_input(&mut self.rbuf, u64::from(limit), now);
        }
    }

    /// Whether and when a WebSocket connection is to be closed.
    pub fn ws_closing(&self) -> Option<Closing> {
        self.ws.as_ref().and_then(|ws| ws.closing())
    }

    /// Whether bytes of the WebSocket layer (handshake response, pong, close) wait.
    pub fn ws_pending(&self) -> bool {
        self.ws.as_ref().is_some_and(|ws| !ws.framer.is_idle())
    }

    /// The socket is drained and a partial frame waits for more bytes: keep just its
    /// bytes (see [`compact_partial`]). One small copy per drained read that ends
    /// mid-frame; the next read allocates a buffer again.
    pub fn compact_partial_frame(&mut self) {
        if self.tls.is_none() && !self.partial_compacted {
            self.partial_compacted = compact_partial(&mut self.rbuf);
        }
    }

    /// Writes as much of `out` as the socket takes. Returns Ok(true) when `out` is empty.
    pub fn flush(&mut self, out: &mut OutQueue) -> io::Result<bool> {
        match self.ws.as_deref_mut() {
            Some(ws) => {
                let open = ws.is_open();
                let mut framed = WsOut::new(&mut ws.framer, out, open);
                write_out(&mut self.stream, self.tls.as_deref_mut(), &mut framed)
            }
            None => write_out(&mut self.stream, self.tls.as_deref_mut(), out),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::{coalesce, compact_partial, COMPACT_PARTIAL};

    fn iov(s: &[u8]) -> libc::iovec {
        libc::iovec {
            iov_base: s.as_ptr().cast_mut().cast(),
            iov_len: s.len(),
        }
    }

    fn runs(vecs: &[libc::iovec]) -> Vec<(usize, usize)> {
        vecs.iter()
            .map(|v| (v.iov_base as usize, v.iov_len))
            .collect()
    }

    /// Frames cut one after another from one buffer (the encoder's) go out as one
    /// iovec; a slice of another buffer starts a new one; empty slices vanish.
    #[test]
    fn adjacent_slices_are_sent_as_one_iovec() {
        let buf = [7u8; 100];
        let other = [9u8; 10];
        let (a, rest) = buf.split_at(20);
        let (b, rest) = rest.split_at(30);
        let (_gap, c) = rest.split_at(5);
        let mut vecs = [iov(a), iov(b), iov(&[]), iov(&other), iov(c), iov(c)];
        let n = coalesce(&mut vecs);
        assert_eq!(
            runs(&vecs[..n]),
            vec![
                (a.as_ptr() as usize, 50),
                (other.as_ptr() as usize, 10),
                (c.as_ptr() as usize, 45),
                (c.as_ptr() as usize, 45),
            ]
        );
        let total: usize = vecs[..n].iter().map(|v| v.iov_len).sum();
        assert_eq!(total, 20 + 30 + 10 + 45 + 45);
        let mut none: [libc::iovec; 0] = [];
        assert_eq!(coalesce(&mut none), 0);
    }

    /// 64 KiB read at once: complete frames (handed to the broker, which keeps nothing of
    /// them) and the first 10 bytes of the next frame.
    fn read_ending_mid_frame(partial: usize) -> BytesMut {
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        rbuf.resize(64 * 1024 - partial, b'f');
        rbuf.resize(64 * 1024, b'p');
        drop(rbuf.split_to(64 * 1024 - partial)); // the complete frames, decoded
        rbuf
    }

    #[test]
    fn a_small_partial_frame_keeps_only_its_bytes() {
        // Without compaction the 10 bytes keep the whole 64 KiB allocation (it has room
        // for 60 KiB more without allocating).
        let mut kept = read_ending_mid_frame(10);
        assert!(kept.try_reclaim(60 * 1024));

        let mut rbuf = read_ending_mid_frame(10);
        assert!(compact_partial(&mut rbuf));
        assert_eq!(&rbuf[..], &[b'p'; 10]);
        assert!(
            rbuf.capacity() < 64,
            "kept {} bytes for a 10-byte partial frame",
            rbuf.capacity()
        );
        assert!(!rbuf.try_reclaim(1024));
    }

    /// One per connection, idle or not (issue 14): the read buffer is empty while idle,
    /// TLS and WebSocket state are boxed, listener and bridge indexes are 32 bits.
    #[test]
    fn a_connection_entry_stays_small() {
        let size = std::mem::size_of::<super::Conn>();
        // mio's TcpStream carries a selector id in debug builds only (16 bytes, not 4).
        let limit = if cfg!(debug_assertions) { 88 } else { 72 };
        assert!(size <= limit, "runtime Conn is {size} bytes");
    }

    #[test]
    fn a_frame_under_way_is_left_in_place() {
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        rbuf.resize(COMPACT_PARTIAL + 1, b'p');
        assert!(!compact_partial(&mut rbuf));
        assert_eq!(rbuf.capacity(), 64 * 1024);
        let mut empty = BytesMut::with_capacity(1024);
        assert!(!compact_partial(&mut empty));
    }
}
