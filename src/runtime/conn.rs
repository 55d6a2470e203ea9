//! One client connection as the runtime sees it: the socket, its read buffer and its
//! registered interest. MQTT state lives in the broker, keyed by the same slab index.
//! It moves bytes only: it never interprets them and never decides whether to read
//! (the broker's `wants_read` does).

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
        Ok(n)
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
