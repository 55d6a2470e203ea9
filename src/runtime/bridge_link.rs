//! The shard loop's bridge connections (`connection` blocks): for each bridge this shard
//! runs, the remote socket (a non-blocking mio `TcpStream`, registered in the shard's
//! connection slab so that its key is also the broker `ConnId` of the bridge's local
//! connection), the name resolution of its address (on a helper thread: never a
//! blocking lookup on the loop), the retry timer, and the byte moves between the socket,
//! the sans-IO [`Link`] and the broker.
//!
//! The local side is an ordinary broker connection that reads and writes in memory: its
//! CONNECT comes from the link once the remote accepted the bridge, with the listener
//! index [`BRIDGE_LISTENER`] (trusted, no password or ACL check); what the broker queues
//! for it is handed to the link in `bridge_flush` instead of a socket. When the remote
//! goes, the local connection closes (its session, persistent by default, keeps queueing
//! `out` messages) and the bridge retries after its backoff. A failing bridge is logged
//! with its name and never affects other connections.

use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::{Interest, Token};

use self::probe::Probe;
use super::super::bridge_tls::{client_tls, BridgeTls, ClientTls};
use super::super::socket::connect_from;
use super::{Conn, Shard};
use crate::auth::BRIDGE_LISTENER;
use crate::bridge::{Backoff, Link, Settings};
use crate::broker::ConnId;
use crate::codec::ByteStr;
use crate::config::{BridgeConfig, Config};

/// Bytes read from a bridge socket per event before other connections get their turn.
const READ_BUDGET: usize = 256 * 1024;
/// Bytes for the remote the link may hold beyond what the socket took; the rest waits
/// in the broker's output queue for the local connection (see `bridge_flush`).
const REMOTE_OUT_MAX: usize = 1024 * 1024;

/// `round_robin false`: probing the primary address from a secondary one.
#[path = "bridge_probe.rs"]
mod probe;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the retry time.
    Idle(Instant),
    /// A helper thread resolves the address (attempt number).
    Resolving(u64),
    /// TCP connect under way or done; the socket is `key`.
    Open,
    /// The local session is being created before the first attempt (`bridge_admin.rs`).
    Priming,
    /// `start_type once` after its connection ended: no new attempt.
    Stopped,
    /// `start_type lazy`: down until `threshold` messages wait (`bridge_admin.rs`).
    Waiting,
}

/// One bridge run by this shard.
pub(super) struct BridgeSlot {
    /// The local session exists (or needs no priming: clean, or no `out` line).
    pub(super) primed: bool,
    /// Counted at start in [`super::admission::Admission::hold_for_bridges`]: clients are
    /// accepted once every such bridge is primed.
    pub(super) gated: bool,
    /// Its definition (a reload compares it).
    pub(super) config: BridgeConfig,
    /// The local session's client id (to ask the broker what it holds).
    pub(super) local_id: ByteStr,
    pub(super) link: Link,
    pub(super) phase: Phase,
    /// Slab key of the remote socket (and broker id of the local connection).
    pub(super) key: Option<ConnId>,
    /// The broker knows the local connection (accepted, not yet closed).
    pub(super) local_open: bool,
    /// TCP connect finished.
    pub(super) connected: bool,
    pub(super) address: usize,
    pub(super) attempt: u64,
    pub(super) backoff: Backoff,
    pub(super) rbuf: BytesMut,
    /// Output of the local broker waiting to be decoded by the link.
    pub(super) lbuf: BytesMut,
    pub(super) peer: Option<SocketAddr>,
    /// The address of the current attempt (`host:port`, the TLS server name's source).
    pub(super) address_text: String,
    /// TLS to the remote (`bridge_cafile` ...): the configuration, and the session of
    /// the current connection.
    pub(super) tls_config: Option<ClientTls>,
    pub(super) tls: Option<BridgeTls>,
    /// `round_robin false` on a secondary address: the probe of the primary.
    pub(super) probe: Option<Probe>,
}

impl BridgeSlot {
    /// After a connection ended: the next address on every failure; after a working
    /// connection only with round_robin (otherwise back to the first).
    pub(super) fn next_address(&mut self, was_up: bool) {
        let settings = self.link.settings();
        if was_up && !settings.round_robin {
            self.address = 0;
        } else {
            self.address = (self.address + 1) % settings.addresses.len().max(1);
        }
    }
}

/// How often a shard pins its bridges' figures for `GET /metrics`.
const FIGURES_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A finished name lookup: bridge index, attempt, result.
type Resolved = (usize, u64, io::Result<SocketAddr>);

/// This shard's bridges and the channel of finished name lookups.
pub(super) struct Bridges {
    /// By index (`Conn::bridge`); `None` where a bridge was removed by a reload.
    pub(super) slots: Vec<Option<BridgeSlot>>,
    /// Attempts so far (all bridges): tells a stale lookup result from the current one.
    attempts: u64,
    shard: usize,
    shards: usize,
    /// `sys_interval` (zero: no `$SYS` figures) and when they are published next.
    sys_interval: std::time::Duration,
    next_sys: Instant,
    /// When the figures for `GET /metrics` are pinned next ([`FIGURES_INTERVAL`]).
    next_figures: Instant,
    resolved: (Sender<Resolved>, Receiver<Resolved>),
}

impl Bridges {
    /// At start: marks the bridges that must create their local session before clients
    /// are accepted, and says how many.
    pub(super) fn gate_unprimed(&mut self) -> usize {
        let mut n = 0;
        for slot in self.slots.iter_mut().flatten() {
            if !slot.primed {
                slot.gated = true;
                n += 1;
            }
        }
        n
    }

    /// The bridges of `config` this shard runs (see [`Bridges::owns`]).
    pub(super) fn new(config: &Config, shard: usize, shards: usize, now: Instant) -> Self {
        let mut this = Self {
            slots: Vec::new(),
            attempts: 0,
            shard,
            shards: shards.max(1),
            sys_interval: config.sys_interval,
            next_sys: now + config.sys_interval,
            next_figures: now,
            resolved: crossbeam_channel::unbounded(),
        };
        for b in &config.bridges {
            if this.owns(&b.name) {
                this.add(b, now);
            }
        }
        this
    }

    /// Whether this shard runs the bridge `name` (by a hash of the name, so that a
    /// reload that adds or removes other bridges leaves it where it is).
    pub(super) fn owns(&self, name: &str) -> bool {
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        h % self.shards as u64 == self.shard as u64
    }

    /// Starts running bridge `b` (it connects on the next tick).
    pub(super) fn add(&mut self, b: &BridgeConfig, now: Instant) {
        let settings = Settings::new(b);
        // Checked when the broker prepared (`handle.rs`): a failure here is a file that
        // changed since; the bridge then stays down, logged.
        let tls_config = match client_tls(b) {
            Ok(c) => c,
            Err(e) => {
                crate::log_error!("Error: bridge {}: {e}", b.name);
                return;
            }
        };
        let primed = settings.local_clean || !settings.topics.iter().any(|t| t.direction != "in");
        let slot = BridgeSlot {
            primed,
            gated: false,
            config: b.clone(),
            local_id: ByteStr::from(settings.local_clientid.clone()),
            backoff: Backoff::new(settings.restart_timeout, now_seed(self.slots.len())),
            link: Link::new(settings, now),
            phase: Phase::Idle(now),
            key: None,
            local_open: false,
            connected: false,
            address: 0,
            attempt: 0,
            rbuf: BytesMut::new(),
            lbuf: BytesMut::new(),
            peer: None,
            address_text: String::new(),
            tls_config,
            tls: None,
            probe: None,
        };
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(free) => *free = Some(slot),
            None => self.slots.push(Some(slot)),
        }
    }

    pub(super) fn slot(&mut self, idx: usize) -> Option<&mut BridgeSlot> {
        self.slots.get_mut(idx).and_then(Option::as_mut)
    }

    /// A number for a new lookup (attempt or probe).
    pub(super) fn next_attempt(&mut self) -> u64 {
        self.attempts += 1;
        self.attempts
    }

    /// Where a helper thread sends a finished lookup.
    pub(super) fn resolved_sender(&self) -> Sender<Resolved> {
        self.resolved.0.clone()
    }

    /// The next retry or link timer.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let any = self.slots.iter().any(Option::is_some);
        let sys = (any && !self.sys_interval.is_zero()).then_some(self.next_sys);
        let figures = any.then_some(self.next_figures);
        self.slots
            .iter()
            .flatten()
            .filter_map(|s| match s.phase {
                Phase::Idle(at) => Some(at),
                Phase::Resolving(_) | Phase::Priming | Phase::Stopped | Phase::Waiting => None,
                Phase::Open => s
                    .link
                    .poll_timeout()
                    .into_iter()
                    .chain(s.probe.as_ref().and_then(Probe::due))
                    .min(),
            })
            .chain(sys)
            .chain(figures)
            .min()
    }
}

/// `host:port` looked up (on a helper thread: this blocks).
pub(super) fn resolve(address: &str) -> io::Result<SocketAddr> {
    address.to_socket_addrs().and_then(|mut a| {
        a.next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
    })
}

/// A seed for the backoff's jitter (differs per bridge and process).
fn now_seed(i: usize) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ ((i as u64 + 1) << 32) ^ u64::from(std::process::id())
}

impl Shard {
    /// The bridge whose remote socket is `key`.
    pub(super) fn bridge_of(&self, key: ConnId) -> Option<usize> {
        self.conns
            .get(key)
            .and_then(|c| c.bridge)
            .map(|b| b as usize)
    }

    /// Retries that came due, finished lookups, link timers.
    pub(super) fn bridge_tick(&mut self, now: Instant) {
        while let Ok((idx, attempt, result)) = self.bridges.resolved.1.try_recv() {
            let current = self
                .bridges
                .slot(idx)
                .is_some_and(|s| s.phase == Phase::Resolving(attempt));
            let probe = self
                .bridges
                .slot(idx)
                .is_some_and(|s| matches!(s.probe, Some(Probe::Resolving(a)) if a == attempt));
            if current {
                match result {
                    Ok(addr) => self.bridge_connect(idx, addr, now),
                    Err(e) => self.bridge_failed(idx, &format!("cannot resolve: {e}"), now),
                }
            } else if probe {
                self.bridge_probe_connect(idx, result, now);
            }
        }
        if !self.bridges.sys_interval.is_zero() && self.bridges.next_sys <= now {
            self.bridges.next_sys = now + self.bridges.sys_interval;
            self.bridge_sys(now);
        }
        if self.bridges.next_figures <= now {
            self.bridges.next_figures = now + FIGURES_INTERVAL;
            self.bridge_pin_figures();
        }
        for idx in 0..self.bridges.slots.len() {
            let Some(slot) = self.bridges.slot(idx) else {
                continue;
            };
            match slot.phase {
                Phase::Idle(at) if at <= now && !slot.primed => self.bridge_prime(idx, now),
                Phase::Idle(at) if at <= now => self.bridge_start_if_due(idx, now),
                Phase::Waiting => self.bridge_start_if_due(idx, now),
                Phase::Open if slot.link.idle_deadline().is_some_and(|t| t <= now) => {
                    self.bridge_idle(idx, now);
                }
                Phase::Open if slot.link.poll_timeout().is_some_and(|t| t <= now) => {
                    if let Err(e) = slot.link.on_timeout(now) {
                        self.bridge_failed(idx, &e, now);
                    } else {
                        self.bridge_pump(idx, now);
                    }
                }
                Phase::Open
                    if slot
                        .probe
                        .as_ref()
                        .and_then(Probe::due)
                        .is_some_and(|t| t <= now) =>
                {
                    self.bridge_probe_tick(idx, now);
                }
                _ => {}
            }
        }
    }

    /// Starts a connection attempt to the bridge's current address.
    pub(super) fn bridge_attempt(&mut self, idx: usize, now: Instant) {
        let waker = self.waker();
        let tx = self.bridges.resolved_sender();
        let attempt = self.bridges.next_attempt();
        let Some(slot) = self.bridges.slot(idx) else {
            return;
        };
        let addresses = &slot.link.settings().addresses;
        let Some(address) = addresses
            .get(slot.address % addresses.len().max(1))
            .cloned()
        else {
            return;
        };
        slot.attempt = attempt;
        slot.address_text.clone_from(&address);
        crate::log_notice!("Connecting bridge {} ({address})", slot.link.name());
        if let Ok(addr) = address.parse::<SocketAddr>() {
            return self.bridge_connect(idx, addr, now);
        }
        // A host name: looked up on a helper thread, never on the loop.
        slot.phase = Phase::Resolving(attempt);
        let spawned = std::thread::Builder::new()
            .name("shardmq-resolve".into())
            .spawn(move || {
                let result = resolve(&address);
                let _ = tx.send((idx, attempt, result));
                let _ = waker.wake();
            });
        if let Err(e) = spawned {
            self.bridge_failed(idx, &format!("cannot start a resolver thread: {e}"), now);
        }
    }

    fn bridge_connect(&mut self, idx: usize, addr: SocketAddr, now: Instant) {
        let bind = self.bridges.slot(idx).and_then(|s| s.config.bind_address);
        let connected = match bind {
            // `bridge_bind_address`: bound first, then the non-blocking connect.
            Some(local) => connect_from(local, addr).map(TcpStream::from_std),
            None => TcpStream::connect(addr),
        };
        let mut stream = match connected {
            Ok(s) => s,
            Err(e) => return self.bridge_failed(idx, &format!("connect to {addr}: {e}"), now),
        };
        let _ = stream.set_nodelay(true);
        let tls = match self.bridges.slot(idx) {
            Some(slot) => match &slot.tls_config {
                Some(config) => match BridgeTls::new(config, &slot.address_text) {
                    Ok(t) => Some(t),
                    Err(e) => return self.bridge_failed(idx, &e, now),
                },
                None => None,
            },
            None => return,
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            return self.bridge_failed(idx, &format!("cannot register socket: {e}"), now);
        }
        let mut conn = Conn::new(stream, BRIDGE_LISTENER);
        conn.bridge = Some(idx as u32);
        conn.writable = true;
        entry.insert(conn);
        if let Some(slot) = self.bridges.slot(idx) {
            slot.phase = Phase::Open;
            slot.key = Some(key);
            slot.connected = false;
            slot.peer = Some(addr);
            slot.tls = tls;
            slot.link.start(now);
        }
    }

    /// Readiness of a bridge socket.
    pub(super) fn bridge_event(&mut self, key: ConnId, idx: usize, closed: bool, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Some(slot) = self.bridges.slot(idx) else {
            return;
        };
        if !slot.connected {
            if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                return self.bridge_failed(idx, &format!("connect: {e}"), now);
            }
            match c.stream.peer_addr() {
                Ok(_) => slot.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected && !closed => return,
                Err(e) => return self.bridge_failed(idx, &format!("connect: {e}"), now),
            }
        }
        if slot.local_open && !self.broker.wants_read(key, now) {
            // Flow control holds the bridge's publishes (its local subscribers are
            // backlogged): the remote waits, as a client would.
            if !self.bridge_pending.contains(&(key, idx)) {
                self.bridge_pending.push((key, idx));
            }
            return self.bridge_pump(idx, now);
        }
        let mut total = 0;
        let mut eof = false;
        if let Some(tls) = slot.tls.as_mut() {
            match tls.read(&mut c.stream, &mut slot.rbuf) {
                Ok(closed) => eof = closed,
                Err(e) => return self.bridge_failed(idx, &format!("read: {e}"), now),
            }
        }
        while total < READ_BUDGET && slot.tls.is_none() {
            slot.rbuf.reserve(16 * 1024);
            let len = slot.rbuf.len();
            slot.rbuf.resize(len + 16 * 1024, 0);
            match c.stream.read(&mut slot.rbuf[len..]) {
                Ok(0) => {
                    slot.rbuf.truncate(len);
                    eof = true;
                    break;
                }
                Ok(n) => {
                    slot.rbuf.truncate(len + n);
                    total += n;
                }
                Err(e) => {
                    slot.rbuf.truncate(len);
                    if e.kind() == io::ErrorKind::WouldBlock {
                        break;
                    }
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return self.bridge_failed(idx, &format!("read: {e}"), now);
                }
            }
        }
        if total >= READ_BUDGET && !self.bridge_pending.contains(&(key, idx)) {
            // Edge-triggered: come back next iteration for the rest.
            self.bridge_pending.push((key, idx));
        }
        if let Err(e) = slot.link.on_remote(&mut slot.rbuf, now) {
            return self.bridge_failed(idx, &e, now);
        }
        self.bridge_pump(idx, now);
        if eof {
            return self.bridge_failed(idx, "the remote closed the connection", now);
        }
        // The socket took output: take more of what the broker holds for the remote.
        let waiting = self.broker.output(key).is_some_and(|o| !o.is_empty());
        if waiting && self.bridge_has_room(idx) {
            self.bridge_flush(key, idx, now);
        }
    }

    /// The link's output to the remote is under [`REMOTE_OUT_MAX`].
    fn bridge_has_room(&self, idx: usize) -> bool {
        self.bridges
            .slots
            .get(idx)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.link.remote_out.len() < REMOTE_OUT_MAX)
    }

    /// Whether a bridge socket left in `bridge_pending` can be read now.
    pub(super) fn bridge_readable(&mut self, now: Instant) -> bool {
        let Self {
            bridge_pending,
            broker,
            ..
        } = self;
        bridge_pending
            .iter()
            .any(|(k, _)| broker.wants_read(*k, now))
    }

    /// Re-reads bridge sockets whose read budget ran out.
    pub(super) fn bridge_retry_reads(&mut self, now: Instant) {
        for (key, idx) in std::mem::take(&mut self.bridge_pending) {
            if self.bridge_of(key) == Some(idx) {
                self.bridge_event(key, idx, false, now);
            }
        }
    }

    /// Moves bytes: the local connection's CONNECT and packets into the broker, and the
    /// link's remote output to the socket.
    fn bridge_pump(&mut self, idx: usize, now: Instant) {
        let Some(slot) = self.bridges.slot(idx) else {
            return;
        };
        let Some(key) = slot.key else {
            return;
        };
        if slot.link.take_open_local() {
            let peer = slot
                .peer
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            self.broker.on_accept(key, peer, BRIDGE_LISTENER, now);
            slot.local_open = true;
            slot.backoff.reset();
            slot.probe = Probe::arm(slot.link.settings(), slot.address, now);
            crate::log_notice!("Bridge {} connected.", slot.link.name());
        }
        if slot.local_open && !slot.link.local_out.is_empty() {
            self.broker.on_read(key, &mut slot.link.local_out, now);
        }
        self.bridge_write(idx, now);
    }

    /// Writes the link's remote output (what the socket does not take waits for
    /// WRITABLE).
    fn bridge_write(&mut self, idx: usize, now: Instant) {
        let Some(slot) = self.bridges.slot(idx) else {
            return;
        };
        let Some(c) = slot.key.and_then(|k| self.conns.get_mut(k)) else {
            return;
        };
        if !slot.connected {
            return; // WRITABLE tells when the connect finished
        }
        if let Some(tls) = slot.tls.as_mut() {
            let done = match tls.write(&mut c.stream, &mut slot.link.remote_out) {
                Ok(done) => done,
                Err(e) => return self.bridge_failed(idx, &format!("write: {e}"), now),
            };
            return self.bridge_interest(idx, !done);
        }
        while !slot.link.remote_out.is_empty() {
            match c.stream.write(&slot.link.remote_out) {
                Ok(0) => break,
                Ok(n) => {
                    let _ = slot.link.remote_out.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.bridge_failed(idx, &format!("write: {e}"), now),
            }
        }
        let want_write = !slot.link.remote_out.is_empty();
        self.bridge_interest(idx, want_write);
    }

    /// Registers WRITABLE interest for bridge `idx`'s socket while it has output waiting.
    fn bridge_interest(&mut self, idx: usize, want_write: bool) {
        let Some(slot) = self.bridges.slot(idx) else {
            return;
        };
        let Some(c) = slot.key.and_then(|k| self.conns.get_mut(k)) else {
            return;
        };
        if want_write != c.writable {
            c.writable = want_write;
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Some(key) = slot.key {
                let _ = self
                    .poll
                    .registry()
                    .reregister(&mut c.stream, Token(key), interest);
            }
        }
    }

    /// The broker queued output for the bridge's local connection: hand it to the link.
    pub(super) fn bridge_flush(&mut self, key: ConnId, idx: usize, now: Instant) {
        let Some(slot) = self.bridges.slot(idx) else {
            return;
        };
        let Some(out) = self.broker.output(key) else {
            return;
        };
        // Only while the remote takes it: what stays in the broker's output queue is the
        // back-pressure that its flow control acts on (publishers paused, QoS 0 kept
        // bounded), exactly as for a client that reads slowly.
        while !out.is_empty() && slot.link.remote_out.len() < REMOTE_OUT_MAX {
            let mut iov = [IoSlice::new(&[]); 64];
            let n = out.io_slices(&mut iov);
            let mut taken = 0;
            for s in &iov[..n] {
                slot.lbuf.extend_from_slice(s);
                taken += s.len();
            }
            out.consume(taken);
            if taken == 0 {
                break;
            }
        }
        self.broker.on_writable(key, now);
        let result = slot.link.on_local(&mut slot.lbuf, now);
        if let Err(e) = result {
            return self.bridge_failed(idx, &e, now);
        }
        if slot.link.primed() {
            return self.bridge_primed(idx, now);
        }
        self.bridge_pump(idx, now);
    }

    /// The broker closed the bridge's local connection (e.g. a client took its id).
    pub(super) fn bridge_closed_by_broker(&mut self, idx: usize, now: Instant) {
        if let Some(slot) = self.bridges.slot(idx) {
            slot.local_open = false;
        }
        self.bridge_failed(idx, "the local broker closed the bridge's connection", now);
    }

    /// Ends the current connection (logged with the bridge's name) and schedules the
    /// next attempt after the backoff.
    pub(super) fn bridge_failed(&mut self, idx: usize, why: &str, now: Instant) {
        let Some(slot) = self.bridges.slot(idx) else {
            return;
        };
        let was_up = slot.link.is_up();
        // The retained "0" notification, then the local session goes offline.
        let Some(slot) = self.bridge_end(idx, now) else {
            return;
        };
        slot.next_address(was_up);
        if slot.link.settings().start_once {
            slot.phase = Phase::Stopped;
            return crate::log_warning!(
                "Warning: bridge {}: {why}; not restarted (start_type once).",
                slot.link.name()
            );
        }
        let delay = slot.backoff.next_delay();
        slot.phase = Phase::Idle(now + delay);
        crate::log_warning!(
            "Warning: bridge {}: {why}; retrying in {:.1} s.",
            slot.link.name(),
            delay.as_secs_f64()
        );
    }
}
