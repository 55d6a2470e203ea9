//! One client connection as the runtime sees it: the socket, its read buffer and its
//! registered interest. MQTT state lives in the broker, keyed by the same slab index.
//! It moves bytes only: it never interprets them and never decides whether to read
//! (the broker's `wants_read` does). A partial frame left in the read buffer once the
//! socket is drained is compacted ([`Conn::compact_partial_frame`]): a connection waiting
//! for the rest of a frame holds its bytes, not a 16 KiB+ buffer.

use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;

use bytes::{BufMut, BytesMut};
use mio::net::TcpStream;

use super::tls::TlsConn;
use crate::broker::OutQueue;

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

/// One `writev` of up to `N` chunks of `out`.
fn write_some<const N: usize>(stream: &mut TcpStream, out: &OutQueue) -> io::Result<usize> {
    let mut iov = [IoSlice::new(&[]); N];
    let n = out.io_slices(&mut iov);
    stream.write_vectored(&iov[..n])
}

pub struct Conn {
    pub stream: TcpStream,
    /// Empty (no allocation) while the connection is idle.
    pub rbuf: BytesMut,
    /// WRITABLE interest is registered (only while output is pending).
    pub writable: bool,
    /// Data may still be readable (budget ran out or the broker paused reading).
    pub read_pending: bool,
    /// Index of the listener that accepted it (for per-listener limits).
    pub listener: usize,
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
    pub bridge: Option<usize>,
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
            listener,
            tls: None,
            last_read_short: false,
            peer_closed: false,
            partial_compacted: false,
            bridge: None,
        }
    }

    /// Reads once into the spare capacity of `rbuf`. Returns bytes read (0 = EOF).
    pub fn read_once(&mut self) -> io::Result<usize> {
        if let Some(tls) = self.tls.as_mut() {
            let len = self.rbuf.len();
            self.rbuf.resize(len + READ_CHUNK, 0);
            let res = tls.read(&mut self.stream, &mut self.rbuf[len..]);
            self.rbuf.truncate(len + *res.as_ref().unwrap_or(&0));
            return res;
        }
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let spare = self.rbuf.chunk_mut();
        let cap = spare.len();
        let ptr = spare.as_mut_ptr();
        // SAFETY: `ptr` points to `cap` writable bytes of spare capacity owned by `rbuf`;
        // read(2) writes at most `cap` bytes there, and we only expose the `n` it wrote.
        let n = unsafe { libc::read(self.stream.as_raw_fd(), ptr.cast(), cap) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(clippy::cast_sign_loss)] // n >= 0 checked above
        let n = n as usize;
        // SAFETY: read(2) initialised exactly `n <= cap` bytes of the spare capacity.
        unsafe { self.rbuf.advance_mut(n) };
        self.last_read_short = n < cap;
        self.partial_compacted &= n == 0;
        Ok(n)
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
        if let Some(tls) = self.tls.as_mut() {
            return tls.flush(&mut self.stream, out);
        }
        while !out.is_empty() {
            // The common case (a few chunks) does not initialise a 16 KiB iovec array.
            let res = if out.chunks() <= SMALL_IOV {
                write_some::<SMALL_IOV>(&mut self.stream, out)
            } else {
                write_some::<MAX_IOV>(&mut self.stream, out)
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
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::{compact_partial, COMPACT_PARTIAL};

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
