//! systemd's service notification protocol, written by hand (no libsystemd): `READY=1`
//! once the broker serves, `RELOADING=1` / `READY=1` around a SIGHUP reload,
//! `STOPPING=1` on shutdown, and `WATCHDOG=1` every half `WatchdogSec` while every shard
//! loop answers a ping ([`Watchdog`]), so that `systemctl status` tells the truth and a
//! stuck shard gets the service restarted. Datagrams go to `$NOTIFY_SOCKET` (a path, or
//! `@name` in the abstract namespace); without it nothing is sent.
//!
//! It never blocks a shard: a ping is a command the shard answers between iterations,
//! and only the watchdog thread waits for the answers.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::command::Command;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `$NOTIFY_SOCKET`. Ok(false)
/// when the variable is not set (not started by systemd with `Type=notify`).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, if it is set for this
/// process (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Checks that every shard's event loop runs (see [`super::BrokerHandle::watchdog`]).
pub struct Watchdog {
    pub(super) shards: Vec<(Sender<Command>, Arc<mio::Waker>)>,
}

impl Watchdog {
    /// Whether every shard answered a ping within `timeout`.
    pub fn shards_respond(&self, timeout: Duration) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(self.shards.len());
        for (commands, waker) in &self.shards {
            if commands.send(Command::Ping(tx.clone())).is_err() {
                return false;
            }
            let _ = waker.wake();
        }
        let deadline = std::time::Instant::now() + timeout;
        (0..self.shards.len()).all(|_| rx.recv_deadline(deadline).is_ok())
    }

    /// Runs on the calling thread until `stop` says so: every `interval`, `WATCHDOG=1`
    /// if the shards respond within it, else nothing (systemd then restarts the service).
    pub fn run(&self, interval: Duration, stop: &dyn Fn() -> bool) {
        while !stop() {
            let started = std::time::Instant::now();
            if self.shards_respond(interval) {
                let _ = notify("WATCHDOG=1");
            } else {
                crate::log_error!(
                    "Error: a shard did not answer the watchdog ping within {interval:?}."
                );
            }
            std::thread::sleep(interval.saturating_sub(started.elapsed()));
        }
    }
}
