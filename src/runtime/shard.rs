//! One shard: a thread, a mio `Poll`, the connections it owns, its mailboxes to and from
//! the other shards, and the sans-IO broker it drives. Follows the driver contract in
//! [`crate::broker`]: feed readiness, mail and time in, drain transmits, shard messages
//! and closes out, sleep until the next readiness, mail or timeout.
//!
//! Each iteration: poll; drain the inboxes (every control lane first, then the data
//! lanes under a budget: always, whatever state any session is in); handle readiness;
//! retry paused reads; timers; move the broker's shard messages into the rings on their
//! lane and publish them once (waking only sleeping shards); report which peers' data
//! rings are full; flush connections with writev. Whether to read a connection is the
//! broker's decision (`wants_read`, its flow control), asked before every read call;
//! the runtime only reports the full rings, so memory stays bounded.

use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::admission::{Admission, PRIMING_LIMIT};
use super::command::Command;
use super::conn::{Conn, ReadOutcome, READ_BUDGET};
use super::listener::Bound;
use super::persist::Persister;
use super::tls::TlsConn;
use crate::broker::{Broker, ConnId, InterestTable, ShardMsg};
use crate::config::Config;
use crate::mailbox::{Inbox, Outbox};
use crate::ws::{Closing, WsConn};

#[path = "bridge_admin.rs"]
mod bridge_admin;
#[path = "bridge_link.rs"]
mod bridge_link;

/// Tokens above this are not connections.
const WAKER: Token = Token(usize::MAX - 1);
const LISTENER_BASE: usize = usize::MAX / 2;
/// Events handled per `poll` call.
const EVENTS_CAPACITY: usize = 1024;
/// Messages taken from each inbox ring per iteration.
const DRAIN_BUDGET: usize = 4096;
/// How long to sleep while a peer's ring is full (it does not wake us when it drains).
const BACKLOG_RETRY: Duration = Duration::from_micros(500);
/// How often a shard looks whether clients may be accepted, just after the start (see
/// `Shard::open_accepting`).
const START_GATE_POLL: Duration = Duration::from_millis(5);
/// Read buffers kept for reuse per shard.
const RBUF_POOL: usize = 256;
/// Connections preallocated per shard when `max_connections` is unlimited.
const DEFAULT_CONNS_PER_SHARD: usize = 4096;
/// How long a listener stops accepting after accept(2) failed for lack of descriptors or
/// memory (it is then retried; closing connections frees what it needs).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

pub struct Shard {
    id: usize,
    outbox: Outbox<ShardMsg>,
    inbox: Inbox<ShardMsg>,
    /// Every shard's waker, by shard id.
    peers: Arc<[Arc<Waker>]>,
    poll: Poll,
    waker: Arc<Waker>,
    listeners: Vec<Bound>,
    conns: Slab<Conn>,
    broker: Broker,
    commands: Receiver<Command>,
    /// Connections that may have unread input (read budget spent, or reading was paused
    /// by the broker): edge-triggered readiness will not report them again.
    read_pending: Vec<ConnId>,
    stopping: bool,
    /// The last `run_deferred` progressed: run it again without sleeping.
    deferred_progress: bool,
    /// Emptied read buffers (see `read`).
    rbuf_pool: Vec<bytes::BytesMut>,
    /// `max_connections` (global and per listener) and `max_connection_rate`, shared by
    /// every shard.
    admission: Arc<Admission>,
    /// Per listener: accepting is paused until then (descriptors or memory ran out).
    accept_paused: Vec<Option<Instant>>,
    /// Clients are accepted: the bridges' local sessions exist (or waited long enough;
    /// see [`Admission::accepting`]). False only just after the start.
    accepting: bool,
    /// Persistence (None when off): flushed before any output or mail leaves; while it
    /// holds (the log cannot be written), no output or mail leaves at all.
    persist: Option<Persister>,
    /// The bridges this shard runs (`bridge_link.rs`).
    bridges: bridge_link::Bridges,
    /// Bridge sockets whose read budget ran out.
    bridge_pending: Vec<(ConnId, usize)>,
    /// --- HTTP console hook: publishes this shard's figures (None without a console).
    console: Option<super::console::Publisher>,
}

impl Shard {
    // One argument per part the runtime's start hands each shard (the interest table
    // is the eighth); a struct for them would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        shards: usize,
        config: &Arc<Config>,
        listeners: Vec<Bound>,
        commands: Receiver<Command>,
        (outbox, inbox): (Outbox<ShardMsg>, Inbox<ShardMsg>),
        admission: Arc<Admission>,
        interest: &Arc<InterestTable>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listeners = listeners;
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry().register(
                &mut l.socket,
                Token(LISTENER_BASE + i),
                Interest::READABLE,
            )?;
        }
        let max_conns = config.max_connections.map(|m| m.div_ceil(shards.max(1)));
        let capacity = max_conns.unwrap_or(DEFAULT_CONNS_PER_SHARD).min(65_536);
        let broker = Broker::new_shard(Arc::clone(config), id, shards, interest, Instant::now());
        let accept_paused = vec![None; listeners.len()];
        let mut bridges = bridge_link::Bridges::new(config, id, shards, Instant::now());
        admission.hold_for_bridges(bridges.gate_unprimed());
        Ok(Self {
            id,
            outbox,
            inbox,
            peers: Arc::from(Vec::new()),
            poll,
            waker,
            listeners,
            conns: Slab::with_capacity(capacity),
            broker,
            commands,
            read_pending: Vec::new(),
            stopping: false,
            deferred_progress: false,
            rbuf_pool: Vec::new(),
            admission,
            accept_paused,
            accepting: false,
            persist: None,
            bridges,
            bridge_pending: Vec::new(),
            console: None,
        })
    }

    /// Installs the loaded password / ACL rules (before `run`).
    pub fn set_security(&mut self, security: Arc<crate::auth::Security>) {
        self.broker.set_security(security);
    }

    /// Installs this shard's instance of the host's access hook (before `run`).
    pub fn set_access(
        &mut self,
        hook: Box<dyn crate::broker::access::AccessHook>,
        sink: crate::broker::access::LoginSink,
    ) {
        self.broker.set_access(hook, Some(sink));
    }

    /// Installs this shard's ingest handlers (before `run`).
    pub fn set_ingest(
        &mut self,
        handlers: Vec<crate::broker::ingest::IngestEntry>,
        sink: crate::broker::ingest_ack::AckSink,
    ) {
        self.broker.set_ingest(handlers, Some(sink));
    }

    /// Turns persistence on and restores this shard's part of the saved state (before
    /// the thread starts): each session on its home shard, retained on every shard.
    pub fn set_persister(&mut self, p: Persister) {
        let (id, shards) = (self.id, self.broker.shard_count());
        p.restore(&mut self.broker, &|client_id| {
            crate::broker::home_shard(client_id, shards) == id
        });
        self.persist = Some(p);
    }

    /// Before the threads start, after restoring: hands the messages restoring produced
    /// for other shards (the interest of restored subscriptions, wills that came due)
    /// straight to them, until none is left, so that from the first connection on every
    /// shard routes to the restored sessions of every other shard.
    pub fn exchange_restored_mail(shards: &mut [Self]) {
        let now = Instant::now();
        loop {
            let mut moved = false;
            for from in 0..shards.len() {
                let mail: Vec<_> =
                    std::iter::from_fn(|| shards[from].broker.poll_shard_message()).collect();
                for (to, msg) in mail {
                    moved = true;
                    if let Some(dest) = shards.get_mut(to) {
                        dest.broker.on_shard_message(from, msg, now);
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Writes what restoring recorded (before the thread starts).
    pub fn flush_persist(&mut self) {
        if let Some(p) = &mut self.persist {
            p.flush(&mut self.broker, Instant::now());
        }
    }

    /// Publishes this shard's figures for the HTTP console (before `run`).
    pub fn set_console(&mut self, publisher: super::console::Publisher) {
        self.console = Some(publisher);
    }

    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    pub fn id(&self) -> usize {
        self.id
    }

    /// Every shard's waker (set before the thread starts).
    pub fn set_peers(&mut self, peers: Arc<[Arc<Waker>]>) {
        self.peers = peers;
    }

    /// Runs the event loop until a `Shutdown` command.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        while !self.stopping {
            let timeout = self.sleep_timeout();
            let poll = self.poll.poll(&mut events, timeout);
            self.inbox.parker().awake();
            if let Err(e) = poll {
                if e.kind() != io::ErrorKind::Interrupted {
                    crate::log_error!("Error: shard {} poll failed: {e}", self.id);
                    break;
                }
            }
            let now = Instant::now();
            // Mail first: a flow-control pause from another shard applies before this
            // iteration reads any socket.
            let broker = &mut self.broker;
            self.inbox.drain(DRAIN_BUDGET, |from, msg| {
                broker.on_shard_message(from, msg, now)
            });
            for event in &events {
                match event.token() {
                    WAKER => self.drain_commands(now),
                    Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE, now),
                    Token(conn) if self.bridge_of(conn).is_some() => {
                        // --- bridge hook: a bridge's remote socket.
                        let closed = event.is_read_closed() || event.is_error();
                        if let Some(idx) = self.bridge_of(conn) {
                            self.bridge_event(conn, idx, closed, now);
                        }
                    }
                    Token(conn) => {
                        if event.is_read_closed() || event.is_error() {
                            if let Some(c) = self.conns.get_mut(conn) {
                                c.peer_closed = true;
                            }
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(conn, now);
                        }
                        if event.is_writable() {
                            self.writable(conn, now);
                        }
                    }
                }
            }
            self.retry_pending_reads(now);
            self.open_accepting(now);
            self.retry_paused_accepts(now);
            crate::log::flush_suppressed(now);
            if self.broker.poll_timeout().is_some_and(|t| t <= now) {
                self.broker.on_timeout(now);
            }
            self.bridge_retry_reads(now);
            self.bridge_tick(now);
            self.deferred_progress =
                self.broker.has_deferred_work() && self.broker.run_deferred(now);
            if let Some(p) = &mut self.persist {
                p.flush(&mut self.broker, now);
                p.tick(now);
            }
            // --- persistence hook: while this iteration's records cannot be written,
            // nothing that may depend on them leaves (the persister retries on its timer).
            if !self.persist.as_ref().is_some_and(Persister::holds) {
                let deferred = self.persist.as_mut().map(Persister::take_deferred_writes);
                for conn in deferred.unwrap_or_default() {
                    self.flush(conn, now);
                }
                self.send_mail(now);
                self.transmit(now);
                // A subscriber that drained while being written to lets its publishers on
                // other shards go now (`Control::Resume`), not after the next wakeup.
                self.send_mail(now);
            }
            // Loop lag: how long readiness seen at `now` may have waited for this
            // iteration to finish.
            let lag = u64::try_from(now.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.broker.set_loop_lag(lag);
            if let Some(c) = &mut self.console {
                let mailbox = (self.outbox.depth(), self.outbox.backlog());
                c.on_iteration(&mut self.broker, mailbox, lag, now);
            }
        }
        self.shutdown();
    }

    /// How long `poll` may block: not at all while work is waiting, briefly while a peer
    /// ring is full, else until the broker's next timer (announcing the sleep to the
    /// other shards so that their next message wakes us).
    fn sleep_timeout(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let timer = [
            self.broker.poll_timeout(),
            self.persist.as_ref().and_then(Persister::poll_timeout),
            self.accept_paused.iter().flatten().min().copied(),
            crate::log::next_summary(),
            self.bridges.poll_timeout(),
            // Just after the start, until the bridges' sessions exist (another shard's
            // bridge may open the gate: look again soon).
            (!self.accepting).then(|| now + START_GATE_POLL),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now));
        let bridge_readable = self.bridge_readable(now);
        let broker = &mut self.broker;
        let readable = |c: &ConnId| broker.wants_read(*c, now);
        if self.deferred_progress || bridge_readable || self.read_pending.iter().any(readable) {
            return Some(Duration::ZERO);
        }
        self.inbox.parker().prepare_sleep();
        if self.inbox.has_mail() {
            self.inbox.parker().awake();
            return Some(Duration::ZERO);
        }
        // (A full ring waits, without polling, while persistence holds the mail.)
        if self.outbox.backlog() > 0 && !self.persist.as_ref().is_some_and(Persister::holds) {
            return Some(timer.map_or(BACKLOG_RETRY, |t| t.min(BACKLOG_RETRY)));
        }
        timer
    }

    /// Moves the broker's messages for other shards into the rings (looping back those
    /// for this shard) and publishes them, waking sleeping shards.
    fn send_mail(&mut self, now: Instant) {
        while let Some((to, msg)) = self.broker.poll_shard_message() {
            if to == self.id {
                self.broker.on_shard_message(to, msg, now);
            } else if let Err(msg) = if msg.wakes() {
                self.outbox.send(to, msg.lane(), msg)
            } else {
                self.outbox.send_quiet(to, msg.lane(), msg)
            } {
                drop(msg);
                crate::log_error!("Error: shard {} has no mailbox to shard {to}.", self.id);
            }
        }
        let peers = &self.peers;
        self.outbox.flush(|j| {
            if let Some(w) = peers.get(j) {
                let _ = w.wake();
            }
        });
        self.broker.on_peer_backlog(self.outbox.backlogged());
    }

    fn drain_commands(&mut self, now: Instant) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Publish(p) => self.broker.inject(*p, now),
                Command::Shutdown => self.stopping = true,
                Command::IngestToken(t) => self.broker.on_ingest_token(t, now),
                Command::LoginAnswer(a) => self.broker.on_login_answer(a, now),
                Command::SetSecurity(s) => {
                    if let Some(c) = self.console.as_ref().filter(|_| self.id == 0) {
                        c.console().set_security(Arc::clone(&s));
                    }
                    self.broker.set_security(s);
                }
                Command::Disconnect(client_id) => {
                    self.broker.admin_disconnect(&client_id, now);
                }
                Command::Ping(reply) => {
                    let _ = reply.send(self.id);
                }
                Command::Subscribe { sub, retained, ack } => {
                    self.broker.add_internal(*sub, retained);
                    let _ = ack.send(());
                }
                Command::Unsubscribe(id) => {
                    self.broker.remove_internal(id);
                }
                Command::SetBridges(bridges) => self.bridge_reload(&bridges, now),
            }
        }
    }

    /// Accepts every waiting connection of listener `index` (the position in
    /// `self.listeners`) until the backlog is empty. Readiness is edge-triggered, so it
    /// must end on WouldBlock; when it cannot (out of descriptors or memory) the listener
    /// is paused for [`ACCEPT_PAUSE`] and `retry_paused_accepts` calls this again, which
    /// neither spins on the error nor leaves queued connections waiting for an event that
    /// will not come.
    fn accept(&mut self, index: usize, now: Instant) {
        if !self.accepting || self.accept_paused.get(index).is_some_and(Option::is_some) {
            return; // the retry (or `open_accepting`) takes the backlog
        }
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            let (stream, peer) = match listener.socket.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The peer gave up while queued: take the next one.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM or anything unexpected.
                    crate::log_limited!(
                        crate::log::Level::Error,
                        now,
                        "Error: accept failed on listener {index}: {e}; retrying in {} ms.",
                        ACCEPT_PAUSE.as_millis()
                    );
                    if let Some(p) = self.accept_paused.get_mut(index) {
                        *p = Some(now + ACCEPT_PAUSE);
                    }
                    return;
                }
            };
            let listener_idx = listener.index;
            // --- limits hook: max_connections (global, per listener), connection rate.
            if self.admission.admit(listener_idx, now).is_err() {
                drop(stream);
                continue;
            }
            // TCP_NODELAY (`set_tcp_nodelay`) is inherited from the listening socket.
            listener.accepted(peer);
            let entry = self.conns.vacant_entry();
            let conn = entry.key();
            let mut c = Conn::new(stream, listener_idx);
            if let Some(slot) = &listener.tls {
                // --- TLS hook: the handshake runs inside read/flush.
                match TlsConn::new(slot, peer) {
                    Ok(t) => c.tls = Some(Box::new(t)),
                    Err(e) => {
                        crate::log_error!("Error: TLS setup for {peer} failed: {e}");
                        self.admission.release(listener_idx);
                        continue;
                    }
                }
            }
            if let Some(settings) = &listener.ws {
                // --- WebSockets hook: the HTTP upgrade and the framing run inside
                // read/flush (after TLS, before the broker).
                c.ws = Some(Box::new(WsConn::new(Arc::clone(settings), peer)));
            }
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut c.stream, Token(conn), Interest::READABLE)
            {
                crate::log_error!("Error: cannot register connection from {peer}: {e}");
                self.admission.release(listener_idx);
                continue;
            }
            entry.insert(c);
            self.broker.on_accept(conn, peer, listener_idx, now);
            // Data may already be waiting; edge-triggered readiness covers it, but reading
            // now saves a loop iteration for the CONNECT that usually follows at once.
            self.read(conn, now);
        }
    }

    fn read(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        // The broker's flow control decides.
        if !self.broker.wants_read(conn, now) {
            if !c.read_pending {
                c.read_pending = true;
                self.read_pending.push(conn);
            }
            return;
        }
        if c.rbuf.capacity() == 0 {
            if let Some(buf) = self.rbuf_pool.pop() {
                c.rbuf = buf;
            }
        }
        if let Some(ws) = c.ws.as_deref_mut().filter(|w| w.input.capacity() == 0) {
            if let Some(buf) = self.rbuf_pool.pop() {
                ws.input = buf;
            }
        }
        let mut total = 0;
        let outcome = loop {
            match c.read_once() {
                Ok(0) => break ReadOutcome::Closed,
                Ok(n) => {
                    total += n;
                    if let Some(identity) = c.tls.as_mut().and_then(|t| t.take_identity()) {
                        self.broker.set_identity(conn, identity);
                    }
                    if c.ws.is_some() {
                        // --- WebSockets hook: frames in, MQTT bytes into rbuf.
                        c.decode_ws(self.broker.max_packet_in(conn), now);
                    }
                    self.broker.on_read(conn, &mut c.rbuf, now);
                    if total >= READ_BUDGET || !self.broker.wants_read(conn, now) {
                        break ReadOutcome::Budget;
                    }
                    if c.last_read_short && !c.peer_closed && c.tls.is_none() {
                        break ReadOutcome::Drained;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break ReadOutcome::Closed,
            }
        };
        if c.rbuf.is_empty() && c.rbuf.capacity() > 0 {
            // Idle connections hold no read buffer: it goes back to the shard's pool, and
            // `reserve` reuses its allocation in place once no frame references it.
            let buf = std::mem::take(&mut c.rbuf);
            if self.rbuf_pool.len() < RBUF_POOL {
                self.rbuf_pool.push(buf);
            }
        }
        if let Some(ws) = c.ws.as_deref_mut().filter(|w| w.input.is_empty()) {
            if ws.input.capacity() > 0 && self.rbuf_pool.len() < RBUF_POOL {
                self.rbuf_pool.push(std::mem::take(&mut ws.input));
            }
        }
        // TLS records, or the WebSocket layer's own bytes (handshake response, pong,
        // close frame), wait; a closing WebSocket connection is closed by `flush`.
        let tls_pending = c.tls.as_ref().is_some_and(|t| t.wants_write())
            || c.ws_pending()
            || c.ws_closing().is_some();
        match outcome {
            ReadOutcome::Drained if tls_pending => self.flush(conn, now),
            ReadOutcome::Budget if c.ws_closing().is_some() => self.flush(conn, now),
            ReadOutcome::Drained => c.compact_partial_frame(),
            ReadOutcome::Budget => {
                if !c.read_pending {
                    c.read_pending = true;
                    self.read_pending.push(conn);
                }
            }
            ReadOutcome::Closed => self.closed_by_peer(conn, now),
        }
    }

    /// Just after the start: once the bridges' local sessions exist (their `out`
    /// subscriptions are then known to every shard), takes the clients that waited in
    /// the listeners' backlogs. After [`PRIMING_LIMIT`] it accepts anyway and says which
    /// bridges were not ready.
    fn open_accepting(&mut self, now: Instant) {
        if self.accepting || !self.admission.accepting(now) {
            return;
        }
        self.accepting = true;
        let waiting = self.admission.bridges_priming();
        if waiting > 0 && self.id == 0 {
            crate::log_warning!(
                "Warning: {waiting} bridge(s) could not create their local session within {} s; \
                 accepting clients anyway (messages for their out topics published before \
                 that are not forwarded).",
                PRIMING_LIMIT.as_secs()
            );
        }
        for index in 0..self.listeners.len() {
            self.accept(index, now);
        }
    }

    /// Accepts again on listeners whose pause has passed.
    fn retry_paused_accepts(&mut self, now: Instant) {
        for index in 0..self.accept_paused.len() {
            let due = self
                .accept_paused
                .get(index)
                .copied()
                .flatten()
                .is_some_and(|t| t <= now);
            if due {
                self.accept_paused[index] = None;
                self.accept(index, now);
            }
        }
    }

    fn retry_pending_reads(&mut self, now: Instant) {
        if self.read_pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.read_pending);
        for conn in pending {
            let Some(c) = self.conns.get_mut(conn) else {
                continue;
            };
            c.read_pending = false;
            self.read(conn, now);
        }
    }

    fn writable(&mut self, conn: ConnId, now: Instant) {
        if let Some(p) = &mut self.persist {
            // Output may hold acknowledgements of this iteration's records.
            p.flush(&mut self.broker, now);
            if p.holds() {
                return p.defer_write(conn);
            }
        }
        self.flush(conn, now);
    }

    /// Writes pending output of every connection the broker queued output for.
    fn transmit(&mut self, now: Instant) {
        while let Some(conn) = self.broker.poll_transmit() {
            self.flush(conn, now);
        }
        while let Some(conn) = self.broker.poll_close() {
            self.close(conn);
        }
    }

    fn flush(&mut self, conn: ConnId, now: Instant) {
        if let Some(idx) = self.bridge_of(conn) {
            return self.bridge_flush(conn, idx, now); // --- bridge hook
        }
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let Some(out) = self.broker.output(conn) else {
            return;
        };
        let written = c.flush(out);
        // --- WebSockets hook: after a close frame (or an HTTP response, once written)
        // the connection ends as if the peer had closed it.
        match c.ws_closing() {
            Some(Closing::Now) => return self.closed_by_peer(conn, now),
            Some(Closing::WhenFlushed) if matches!(written, Ok(true) | Err(_)) => {
                return self.closed_by_peer(conn, now)
            }
            _ => {}
        }
        match written {
            Ok(true) => {
                if c.writable {
                    c.writable = false;
                    let _ = self.poll.registry().reregister(
                        &mut c.stream,
                        Token(conn),
                        Interest::READABLE,
                    );
                }
                self.broker.on_writable(conn, now);
            }
            Ok(false) => {
                if !c.writable {
                    c.writable = true;
                    let _ = self.poll.registry().reregister(
                        &mut c.stream,
                        Token(conn),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                }
            }
            Err(_) => self.closed_by_peer(conn, now),
        }
    }

    /// The peer went away (EOF or socket error).
    fn closed_by_peer(&mut self, conn: ConnId, now: Instant) {
        if let Some(mut c) = self.conns.try_remove(conn) {
            self.admission.release(c.listener as usize);
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.broker.on_closed(conn, now);
        }
    }

    /// The broker decided to close `conn`: flush what the socket takes, then close.
    fn close(&mut self, conn: ConnId) {
        if let Some(idx) = self.bridge_of(conn) {
            return self.bridge_closed_by_broker(idx, Instant::now()); // --- bridge hook
        }
        let Some(mut c) = self.conns.try_remove(conn) else {
            return;
        };
        self.admission.release(c.listener as usize);
        if let Some(out) = self.broker.output(conn) {
            let _ = c.flush(out);
            if let Some(ws) = c.ws.as_deref_mut() {
                // A WebSocket connection ends with a close frame after the data.
                ws.close_normal();
                let _ = c.flush(out);
            }
            out.clear();
        }
        if let Some(tls) = c.tls.as_mut() {
            tls.close(&mut c.stream);
        }
        let _ = c.stream.shutdown(Shutdown::Both);
        let _ = self.poll.registry().deregister(&mut c.stream);
    }

    fn shutdown(&mut self) {
        let now = Instant::now();
        self.bridge_shutdown(now);
        // v5 DISCONNECT 0x8B, flushed below.
        self.broker.on_shutdown();
        // Output may hold acknowledgements of records that could not be written yet: one
        // last attempt, and without it nothing more is written to the clients.
        let held = self.persist.as_mut().is_some_and(|p| {
            p.flush_now(&mut self.broker);
            p.holds()
        });
        let keys: Vec<ConnId> = self.conns.iter().map(|(k, _)| k).collect();
        for conn in keys {
            if let Some(out) = self.broker.output(conn).filter(|_| !held) {
                if let Some(c) = self.conns.get_mut(conn) {
                    let _ = c.flush(out);
                }
            }
            if let Some(mut c) = self.conns.try_remove(conn) {
                let _ = c.stream.shutdown(Shutdown::Both);
                let _ = self.poll.registry().deregister(&mut c.stream);
            }
            self.broker.on_closed(conn, now);
        }
        if let Some(p) = &mut self.persist {
            p.shutdown(&mut self.broker);
        }
        crate::log_notice!("shardmq shard {} stopped.", self.id);
    }
}
