//! Running bridges as a whole (part of the shard loop, see `bridge_link.rs`): their
//! `$SYS` figures every `sys_interval`, stopping one for good (shutdown, reload), and the
//! SIGHUP reload of the `connection` blocks. Never blocks; touches only the bridges'
//! own sockets.

use std::os::fd::FromRawFd;
use std::time::Instant;

use super::bridge_link::Phase;
use super::{Conn, Shard};
use crate::auth::BRIDGE_LISTENER;
use crate::config::BridgeConfig;

impl Shard {
    /// Before the first attempt: opens the bridge's local connection on a placeholder
    /// socket (never connected nor registered: it only holds the slab key that is the
    /// connection's broker id) so that the local session and its `out` subscriptions
    /// exist, and messages published before the remote is reached wait for it.
    pub(super) fn bridge_prime(&mut self, idx: usize, now: Instant) {
        // SAFETY: socket(2) has no preconditions; the descriptor is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return self.bridge_failed(idx, &format!("no socket for the local session: {e}"), now);
        }
        // SAFETY: `fd` is a fresh socket descriptor nobody else owns.
        let placeholder = unsafe { std::net::TcpStream::from_raw_fd(fd) };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let mut conn = Conn::new(mio::net::TcpStream::from_std(placeholder), BRIDGE_LISTENER);
        conn.bridge = Some(idx as u32);
        entry.insert(conn);
        let Some(slot) = self.bridges.slot(idx) else {
            return;
        };
        slot.phase = Phase::Priming;
        slot.key = Some(key);
        slot.local_open = true;
        slot.link.prime(now);
        let peer = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        self.broker.on_accept(key, peer, BRIDGE_LISTENER, now);
        self.broker.on_read(key, &mut slot.link.local_out, now);
    }

    /// The local session exists: its priming connection closes and the bridge connects.
    pub(super) fn bridge_primed(&mut self, idx: usize, now: Instant) {
        let Some(slot) = self.bridges.slot(idx) else {
            return;
        };
        slot.primed = true;
        slot.link.reset();
        slot.lbuf.clear();
        slot.phase = Phase::Idle(now);
        if let Some(key) = slot.key.take() {
            slot.local_open = false;
            self.broker.on_closed(key, now);
            let _ = self.conns.try_remove(key);
        }
    }

    /// Every `sys_interval`: `$SYS/broker/bridge/NAME/{connected,sent,received,queued,
    /// dropped,reconnects}` (retained), from the shard that runs the bridge.
    pub(super) fn bridge_sys(&mut self, now: Instant) {
        for slot in self.bridges.slots.iter().flatten() {
            let st = slot.link.stats;
            let name = slot.link.name();
            let queued = self
                .broker
                .session_stored(&slot.link.settings().local_clientid)
                .unwrap_or(0);
            let figures = [
                ("connected", u64::from(st.connected)),
                ("sent", st.sent),
                ("received", st.received),
                ("queued", queued as u64),
                ("dropped", st.dropped),
                ("reconnects", st.reconnects),
            ];
            for (what, value) in figures {
                let topic = format!("$SYS/broker/bridge/{name}/{what}");
                self.broker
                    .publish_bridge_sys(topic, value.to_string(), now);
            }
        }
    }

    /// The shard stops: every bridge ends (see [`Shard::bridge_stop`]).
    pub(super) fn bridge_shutdown(&mut self, now: Instant) {
        for idx in 0..self.bridges.slots.len() {
            self.bridge_stop(idx, now);
        }
    }

    /// Ends bridge `idx`'s connection for good: its local connection ends (its session
    /// keeps what is queued) and its socket closes without DISCONNECT, so the remote
    /// publishes the bridge's will (the `0` notification).
    pub(super) fn bridge_stop(&mut self, idx: usize, now: Instant) {
        let Some(slot) = self.bridges.slot(idx) else {
            return;
        };
        slot.link.down(now);
        slot.tls = None;
        if let Some(key) = slot.key.take() {
            if slot.local_open {
                if !slot.link.local_out.is_empty() {
                    self.broker.on_read(key, &mut slot.link.local_out, now);
                }
                self.broker.on_closed(key, now);
                slot.local_open = false;
            }
            if let Some(mut c) = self.conns.try_remove(key) {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
        }
    }

    /// SIGHUP: the bridges of the reloaded configuration. A bridge whose definition
    /// changed or that is gone stops; a new or changed one starts; the others keep their
    /// connection.
    pub(super) fn bridge_reload(&mut self, bridges: &[BridgeConfig], now: Instant) {
        for idx in 0..self.bridges.slots.len() {
            let Some(old) = self.bridges.slots[idx].as_ref().map(|s| s.config.clone()) else {
                continue;
            };
            let same = |b: &BridgeConfig| {
                b.name == old.name
                    && BridgeConfig {
                        defined_at: None,
                        ..b.clone()
                    } == BridgeConfig {
                        defined_at: None,
                        ..old.clone()
                    }
            };
            if !bridges.iter().any(same) {
                self.bridge_stop(idx, now);
                self.bridges.slots[idx] = None;
                crate::log_notice!("Bridge {} stopped (reload).", old.name);
            }
        }
        for b in bridges {
            let running = self
                .bridges
                .slots
                .iter()
                .flatten()
                .any(|s| s.config.name == b.name);
            if self.bridges.owns(&b.name) && !running {
                self.bridges.add(b, now);
                crate::log_notice!("Bridge {} started (reload).", b.name);
            }
        }
    }
}
