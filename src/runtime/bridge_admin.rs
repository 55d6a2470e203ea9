//! Running bridges as a whole (part of the shard loop, see `bridge_link.rs`): their
//! `$SYS` figures every `sys_interval`, stopping one for good (shutdown, reload), and the
//! SIGHUP reload of the `connection` blocks. Never blocks; touches only the bridges'
//! own sockets.

use std::os::fd::FromRawFd;
use std::time::Instant;

use super::bridge_link::{BridgeSlot, Phase};
use super::{Conn, Shard};
use crate::auth::BRIDGE_LISTENER;
use crate::bridge::figures::{self, Figures};
use crate::broker::Broker;
use crate::config::BridgeConfig;

/// A bridge's figures: its link's counters and what its local session holds.
fn figures_of(broker: &Broker, slot: &BridgeSlot) -> Figures {
    let st = slot.link.stats;
    Figures {
        connected: st.connected,
        sent: st.sent,
        received: st.received,
        queued: broker.session_stored(&slot.local_id).unwrap_or(0) as u64,
        dropped: st.dropped,
        reconnects: st.reconnects,
    }
}

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
        if std::mem::take(&mut slot.gated) {
            self.admission.bridge_primed();
        }
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
            let f = figures_of(&self.broker, slot);
            let name = slot.link.name();
            let figures = [
                ("connected", u64::from(f.connected)),
                ("sent", f.sent),
                ("received", f.received),
                ("queued", f.queued),
                ("dropped", f.dropped),
                ("reconnects", f.reconnects),
            ];
            for (what, value) in figures {
                let topic = format!("$SYS/broker/bridge/{name}/{what}");
                self.broker
                    .publish_bridge_sys(topic, value.to_string(), now);
            }
        }
    }

    /// A bridge whose retry time came: connects, unless it is `start_type lazy` and
    /// fewer than `threshold` messages wait in its local session (then it waits for
    /// them; checked at every loop iteration, after the broker queued what it read).
    pub(super) fn bridge_start_if_due(&mut self, idx: usize, now: Instant) {
        let Some(slot) = self.bridges.slots.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if let Some(lazy) = slot.link.settings().lazy {
            let waiting = self.broker.session_stored(&slot.local_id).unwrap_or(0);
            if waiting < lazy.threshold {
                slot.phase = Phase::Waiting;
                return;
            }
            crate::log_notice!(
                "Bridge {}: {waiting} messages wait (threshold {}): starting (start_type lazy).",
                slot.link.name(),
                lazy.threshold
            );
        }
        self.bridge_attempt(idx, now);
    }

    /// `start_type lazy`: the connection was idle for `idle_timeout`. It closes as
    /// Mosquitto closes it (no DISCONNECT: the remote publishes the bridge's `0` will)
    /// and the bridge waits for `threshold` messages again.
    pub(super) fn bridge_idle(&mut self, idx: usize, now: Instant) {
        let Some(slot) = self.bridge_end(idx, now) else {
            return;
        };
        slot.next_address(true);
        slot.phase = Phase::Waiting;
        crate::log_notice!(
            "Bridge {} has exceeded its idle timeout, disconnecting (start_type lazy).",
            slot.link.name()
        );
    }

    /// About once a second: the same figures pinned for `GET /metrics`
    /// (`crate::bridge::figures`; a pin skipped under a reader is retried next time).
    pub(super) fn bridge_pin_figures(&mut self) {
        for slot in self.bridges.slots.iter().flatten() {
            figures::pin(slot.link.name(), figures_of(&self.broker, slot));
        }
    }

    /// Ends bridge `idx`'s connection ([`Shard::bridge_stop`]) and forgets its
    /// protocol state; the caller says what comes next (phase, address).
    pub(super) fn bridge_end(&mut self, idx: usize, now: Instant) -> Option<&mut BridgeSlot> {
        self.bridge_stop(idx, now);
        let slot = self.bridges.slot(idx)?;
        slot.link.reset();
        slot.rbuf.clear();
        slot.lbuf.clear();
        Some(slot)
    }

    /// The shard stops: every bridge ends (see [`Shard::bridge_stop`]).
    pub(super) fn bridge_shutdown(&mut self, now: Instant) {
        for idx in 0..self.bridges.slots.len() {
            self.bridge_stop(idx, now);
            if let Some(slot) = self.bridges.slot(idx) {
                figures::remove(slot.link.name());
            }
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
        slot.probe = None;
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
                figures::remove(&old.name);
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
