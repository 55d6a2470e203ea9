//! A CLOCK_MONOTONIC timerfd registered with the worker's poll, armed at absolute
//! nanosecond times: open-loop sends fire on time to the microsecond (a mio poll timeout
//! is rounded up to whole milliseconds, which would add up to 1 ms of sender-side delay
//! to every latency). Owns the fd; it never reads the network.

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct Timer {
    fd: OwnedFd,
    /// Absolute expiry currently armed (0 = none).
    armed: u64,
}

impl Timer {
    pub fn new(registry: &Registry, token: Token) -> io::Result<Self> {
        // SAFETY: plain timerfd_create(2); the result is checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we exclusively own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Self { fd, armed: 0 })
    }

    /// Arms the timer to fire at `at_ns` (CLOCK_MONOTONIC); a time in the past fires now.
    pub fn arm(&mut self, at_ns: u64) {
        if at_ns == self.armed || at_ns == 0 {
            return;
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid fd and itimerspec; the old value is not requested.
        let r = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if r == 0 {
            self.armed = at_ns;
        }
    }

    /// Consumes an expiry (must be called on its event: edge-triggered poll).
    pub fn fired(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into our buffer; errors (EAGAIN) are ignored.
        unsafe {
            libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
        }
        self.armed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::now_ns;
    use mio::{Events, Poll};
    use std::time::Duration;

    #[test]
    fn fires_with_sub_millisecond_precision() {
        let mut poll = Poll::new().unwrap();
        let mut t = Timer::new(poll.registry(), Token(7)).unwrap();
        let mut events = Events::with_capacity(4);
        let start = now_ns();
        t.arm(start + 300_000);
        poll.poll(&mut events, Some(Duration::from_secs(2)))
            .unwrap();
        let took = now_ns() - start;
        assert!(events.iter().any(|e| e.token() == Token(7)));
        t.fired();
        assert!(took >= 300_000, "fired early: {took} ns");
        assert!(took < 50_000_000, "fired late: {took} ns");
    }
}
