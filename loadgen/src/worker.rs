//! One event-loop thread driving many MQTT clients on mio: paced connects, CONNECT /
//! SUBSCRIBE handshakes, batched publishing (closed or open loop, see `publisher`),
//! in-place parsing of PUBLISH with loss/order/latency accounting, keepalive, and a
//! DISCONNECT at the end. It owns its clients and statistics; the only shared state it
//! touches is `Shared` (atomics, two off-path mutexes). It never blocks except in poll.

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::net;
use crate::opts::{Kind, SubMode};
use crate::pacing::{coalesce_pause, read_again};
use crate::publisher::Publisher;
use crate::shared::{new_histogram, phase, Shared};
use crate::stamp::{self, now_ns};
use crate::timer::Timer;
use crate::tracker::{Arrival, Counts, StreamMap};
use crate::wire::{self, ptype, ConnectOpts, Packet};

pub const WAKER: Token = Token(usize::MAX);
const TIMER: Token = Token(usize::MAX - 1);
/// Handshakes in progress per thread when no connect rate is given.
const MAX_PENDING: usize = 256;
const HOUSEKEEPING_NS: u64 = 100_000_000;
/// Stop encoding for a client whose unsent bytes exceed this.
pub const WBUF_HIGH: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Sub,
    Pub,
    Idle,
    Churn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Connecting,
    WaitConnAck,
    WaitSubAck,
    Ready,
}

pub struct Client {
    pub sock: TcpStream,
    pub role: Role,
    /// Index within its role (publisher index = stream id).
    pub idx: usize,
    pub state: State,
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    started_ns: u64,
    pub last_write_ns: u64,
    /// This socket sent data since its last TCP_QUICKACK: sending can put Linux in
    /// delayed-ACK ("pingpong") mode, which the next read undoes (see `read`).
    pub wrote: bool,
    pub publ: Option<Box<Publisher>>,
    /// MQTT over WebSockets (`--ws`).
    pub ws: Option<crate::ws::WsClient>,
}

impl Client {
    /// Writes pending bytes until done or WouldBlock. Err = the connection is gone.
    pub fn flush(&mut self, now: u64) -> io::Result<()> {
        let upto = match self.ws.as_mut() {
            Some(ws) => ws.prepare(&mut self.wbuf),
            None => self.wbuf.len(),
        };
        while self.wpos < upto {
            match self.sock.write(&self.wbuf[self.wpos..upto]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.wpos += n;
                    self.last_write_ns = now;
                    self.wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wpos < self.wbuf.len() {
            return Ok(()); // the WebSocket upgrade is not answered yet
        }
        self.wbuf.clear();
        self.wpos = 0;
        if let Some(ws) = self.ws.as_mut() {
            ws.cleared();
        }
        Ok(())
    }

    pub fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos
    }
}

/// What one worker measured (messages stamped at or after the measure start only).
pub struct WorkerResult {
    pub counts: Counts,
    pub sent: u64,
    pub expected: u64,
    pub bytes: u64,
    pub latency: Histogram<u64>,
    pub connect_latency: Histogram<u64>,
    pub connects_ok: u64,
    pub connect_failed: u64,
    pub churn_cycles: u64,
    pub stalls: u64,
    pub foreign: u64,
    /// PUBACKs / PUBCOMPs without a failure reason that arrived at or after the measure
    /// start (a message is acknowledged once; late acks of warmup messages included).
    pub acked: u64,
    /// Every acknowledgement of the run, warmup and drain included.
    pub acked_all: u64,
    /// Every message sent, warmup included (what an ingest handler should have counted).
    pub sent_all: u64,
    /// v5 PUBACK/PUBREC with a failure reason code (the broker refused the message).
    pub rejected: u64,
    pub first_conn_error: Option<String>,
}

impl WorkerResult {
    /// Nothing measured yet.
    pub fn empty() -> Self {
        Self {
            counts: Counts::default(),
            sent: 0,
            expected: 0,
            bytes: 0,
            latency: new_histogram(),
            connect_latency: new_histogram(),
            connects_ok: 0,
            connect_failed: 0,
            churn_cycles: 0,
            stalls: 0,
            foreign: 0,
            acked: 0,
            acked_all: 0,
            sent_all: 0,
            rejected: 0,
            first_conn_error: None,
        }
    }

    /// Adds another worker's measurements (the first connection error wins).
    pub fn merge(&mut self, r: Self) {
        self.counts.merge(&r.counts);
        let _ = self.latency.add(&r.latency);
        let _ = self.connect_latency.add(&r.connect_latency);
        self.sent += r.sent;
        self.expected += r.expected;
        self.bytes += r.bytes;
        self.connects_ok += r.connects_ok;
        self.connect_failed += r.connect_failed;
        self.churn_cycles += r.churn_cycles;
        self.stalls += r.stalls;
        self.foreign += r.foreign;
        self.acked += r.acked;
        self.acked_all += r.acked_all;
        self.sent_all += r.sent_all;
        self.rejected += r.rejected;
        if self.first_conn_error.is_none() {
            self.first_conn_error = r.first_conn_error;
        }
    }
}

pub struct Worker {
    pub id: usize,
    pub sh: Arc<Shared>,
    pub(crate) poll: Poll,
    pub clients: Slab<Client>,
    /// (role, idx) still to connect, popped from the back.
    pub(crate) todo_subs: Vec<(Role, usize)>,
    pub(crate) todo_pubs: Vec<usize>,
    pub(crate) connecting: usize,
    pub pub_keys: Vec<usize>,
    pub heap: BinaryHeap<std::cmp::Reverse<(u64, usize)>>,
    pub(crate) trackers: StreamMap,
    pub measure_start: u64,
    /// Open loop: messages due within this many ns of a wakeup go out with it.
    pub slack: u64,
    pub(crate) running: bool,
    pub(crate) stop_seen: bool,
    /// Precise wakeups for open-loop sends (None: fall back to poll timeouts).
    pub(crate) timer: Option<Timer>,
    pub(crate) coalesce: u64,
    pub(crate) last_moved: u64,
    pub(crate) last_events: u64,
    pub(crate) bind_rr: usize,
    pub(crate) tokens: f64,
    pub(crate) last_refill: u64,
    pub(crate) last_ping_scan: u64,
    pub interval: Histogram<u64>,
    // totals (all messages) for progress and drain
    pub sent_total: u64,
    pub expected_total: u64,
    pub(crate) recv_total: u64,
    pub(crate) unique_total: u64,
    pub conns: u64,
    pub res: WorkerResult,
    /// Publisher gate step: subscribers publish progress every `step` messages.
    pub step: u64,
    pub(crate) to_close: Vec<usize>,
}

impl Worker {
    pub fn new(
        id: usize,
        sh: Arc<Shared>,
        poll: Poll,
        subs: Vec<(Role, usize)>,
        pubs: Vec<usize>,
    ) -> Self {
        let step = (sh.plan.inflight as u64 / 4).max(1);
        let timer = if sh.plan.is_open_loop() {
            Timer::new(poll.registry(), TIMER).ok()
        } else {
            None
        };
        let mut todo_subs = subs;
        todo_subs.reverse();
        let mut todo_pubs = pubs;
        todo_pubs.reverse();
        Self {
            id,
            poll,
            clients: Slab::new(),
            todo_subs,
            todo_pubs,
            connecting: 0,
            pub_keys: Vec::new(),
            heap: BinaryHeap::new(),
            trackers: StreamMap::default(),
            measure_start: u64::MAX,
            slack: (sh.plan.timer_slack_us * 1e3) as u64,
            running: false,
            stop_seen: false,
            timer,
            coalesce: (sh.plan.coalesce_us * 1e3) as u64,
            last_moved: 0,
            last_events: 0,
            bind_rr: id,
            tokens: 1.0,
            last_refill: now_ns(),
            last_ping_scan: now_ns(),
            interval: new_histogram(),
            sent_total: 0,
            expected_total: 0,
            recv_total: 0,
            unique_total: 0,
            conns: 0,
            res: WorkerResult::empty(),
            step,
            to_close: Vec::new(),
            sh,
        }
    }

    /// Runs until the coordinator says DONE (or ABORT); returns what was measured.
    pub fn run(mut self) -> WorkerResult {
        let mut events = Events::with_capacity(1024);
        let mut last_house = now_ns();
        loop {
            let ph = self.sh.phase();
            if ph == phase::ABORT {
                break;
            }
            if ph == phase::DONE {
                self.shutdown();
                break;
            }
            let now = now_ns();
            self.start_connects(ph, now);
            if ph == phase::RUN && !self.running {
                self.begin_run(now);
            }
            if ph == phase::RUN {
                self.pump(now);
            }
            if ph == phase::STOP {
                // Every iteration during drain: the coordinator compares these totals.
                self.publish_counters();
                if !self.stop_seen {
                    self.stop_seen = true;
                    self.sh.stopped.fetch_add(1, Ordering::AcqRel);
                }
            }
            // Coalescing: after a turn that moved few messages, let more accumulate
            // instead of waking for every few packets (like NIC interrupt moderation).
            let moved = self.sent_total + self.recv_total;
            if ph >= phase::RUN {
                let pause =
                    coalesce_pause(self.coalesce, moved - self.last_moved, self.last_events);
                if pause > 0 {
                    std::thread::sleep(Duration::from_nanos(pause));
                }
            }
            self.last_moved = moved;
            if ph == phase::RUN {
                if let (Some(t), Some(std::cmp::Reverse((due, _)))) =
                    (self.timer.as_mut(), self.heap.peek())
                {
                    t.arm(*due);
                }
            }
            let timeout = self.timeout(ph, now);
            // One epoll_wait returns every ready socket: room for all of this thread's.
            let want = self.clients.len() + 2;
            if events.capacity() < want {
                events = Events::with_capacity(want.next_power_of_two());
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.sh.fail(format!("poll failed: {e}"));
                    break;
                }
            }
            let now = now_ns();
            self.last_events = events.iter().count() as u64;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                if ev.token() == TIMER {
                    if let Some(t) = self.timer.as_mut() {
                        t.fired();
                    }
                    continue;
                }
                self.on_event(ev.token().0, ev.is_read_closed(), now);
            }
            self.close_pending();
            if now.saturating_sub(last_house) >= HOUSEKEEPING_NS {
                last_house = now;
                self.housekeeping(ph, now);
            }
        }
        self.publish_counters();
        self.res.sent_all = self.sent_total;
        self.res
    }

    fn timeout(&self, ph: u8, now: u64) -> Duration {
        let mut t = HOUSEKEEPING_NS;
        if ph == phase::RUN && self.timer.is_none() {
            if let Some(std::cmp::Reverse((due, _))) = self.heap.peek() {
                t = t.min(due.saturating_sub(now));
            }
        }
        // Publishers only at QoS 0 in closed loop: no read (no ack, no delivery) wakes the
        // loop, so poll without waiting while a publisher has room in its socket (a full
        // one is woken by its writable event).
        let plan = &self.sh.plan;
        if ph == phase::RUN
            && plan.publishers_only()
            && plan.qos == 0
            && !plan.is_open_loop()
            && self.pub_keys.iter().any(|&k| {
                self.clients
                    .get(k)
                    .is_some_and(|c| c.state == State::Ready && c.pending() <= WBUF_HIGH)
            })
        {
            t = 0;
        }
        let waiting_to_connect =
            !self.todo_subs.is_empty() || (!self.todo_pubs.is_empty() && ph >= phase::CONNECT_PUBS);
        if waiting_to_connect && self.connecting < MAX_PENDING {
            t = t.min(2_000_000);
        }
        Duration::from_nanos(t)
    }

    fn start_connects(&mut self, ph: u8, now: u64) {
        if ph >= phase::STOP {
            return;
        }
        let rate = self.sh.plan.connect_rate / self.sh.plan.threads as f64;
        if rate > 0.0 {
            let dt = now.saturating_sub(self.last_refill) as f64 / 1e9;
            self.tokens = (self.tokens + dt * rate).min((rate / 50.0).max(1.0));
        }
        self.last_refill = now;
        loop {
            if self.connecting >= MAX_PENDING || (rate > 0.0 && self.tokens < 1.0) {
                return;
            }
            let next = if let Some(s) = self.todo_subs.pop() {
                s
            } else if ph >= phase::CONNECT_PUBS {
                match self.todo_pubs.pop() {
                    Some(i) => (Role::Pub, i),
                    None => return,
                }
            } else {
                return;
            };
            if rate > 0.0 {
                self.tokens -= 1.0;
            }
            self.open(next.0, next.1, now);
        }
    }

    fn client_id(&self, role: Role, idx: usize) -> String {
        let r = match role {
            Role::Sub => 's',
            Role::Pub => 'p',
            Role::Idle => 'c',
            Role::Churn => 'k',
        };
        format!("{}-{r}{idx}", self.sh.plan.client_prefix)
    }

    fn open(&mut self, role: Role, idx: usize, now: u64) {
        let plan = &self.sh.plan;
        let bind = if plan.bind.is_empty() {
            None
        } else {
            self.bind_rr += 1;
            Some(plan.bind[self.bind_rr % plan.bind.len()])
        };
        let sock = match net::connect(plan.addr, bind) {
            Ok(s) => s,
            Err(e) => return self.connect_failed(role, idx, &e.to_string()),
        };
        let id = self.client_id(role, idx);
        // Big buffers only when clients are few: 50K subscribers x 64 KiB would be 3 GiB.
        // Buffers grow on demand either way.
        let many = plan.publishers + plan.subscribers > 2000;
        let big = if many { 4096 } else { 64 * 1024 };
        let mut wbuf = Vec::with_capacity(if role == Role::Pub { big } else { 128 });
        let opts = ConnectOpts {
            client_id: &id,
            keep_alive: plan.keepalive,
            clean: plan.clean,
            session_expiry: if plan.clean { 0 } else { 300 },
            receive_max: 0,
            username: plan.username.as_deref(),
            password: plan.password.as_deref(),
        };
        let ws = plan.ws.as_ref().map(|path| {
            let request = crate::ws::request(&plan.addr.to_string(), path);
            wbuf.extend_from_slice(&request);
            crate::ws::WsClient::new(request.len())
        });
        wire::encode_connect(&mut wbuf, plan.version, &opts);
        let publ = (role == Role::Pub).then(|| Box::new(Publisher::new(plan, idx)));
        let rsize = match role {
            Role::Sub => big,
            Role::Pub => 4096,
            Role::Idle | Role::Churn => 64,
        };
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        let mut c = Client {
            sock,
            role,
            idx,
            state: State::Connecting,
            rbuf: vec![0; rsize],
            rpos: 0,
            rlen: 0,
            wbuf,
            wpos: 0,
            started_ns: now,
            last_write_ns: now,
            wrote: true,
            publ,
            ws,
        };
        if let Err(e) = self.poll.registry().register(
            &mut c.sock,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.connect_failed(role, idx, &format!("register: {e}"));
        }
        entry.insert(c);
        self.connecting += 1;
    }

    fn connect_failed(&mut self, role: Role, idx: usize, err: &str) {
        let plan = &self.sh.plan;
        let msg = format!("broker not reachable at {}: {err}", plan.addr);
        match plan.kind {
            Kind::PubSub => self.sh.fail(msg),
            Kind::Conn | Kind::Churn => {
                self.res.connect_failed += 1;
                self.sh.conn_failed.fetch_add(1, Ordering::Relaxed);
                if self.res.first_conn_error.is_none() {
                    self.res.first_conn_error = Some(msg.clone());
                }
                if self.res.connects_ok == 0 && self.sh.subs_ready.load(Ordering::Relaxed) == 0 {
                    self.sh.fail(msg);
                } else if role == Role::Churn {
                    self.todo_subs.insert(0, (role, idx));
                }
            }
        }
    }

    fn on_event(&mut self, key: usize, read_closed: bool, now: u64) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.state == State::Connecting {
            match c.sock.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.drop_client(key, &e.to_string(), true),
            }
            match c.sock.peer_addr() {
                Ok(_) => c.state = State::WaitConnAck,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.drop_client(key, &e.to_string(), true),
            }
        }
        if let Err(e) = self.read(key, read_closed) {
            return self.drop_client(key, &e, false);
        }
        if let Some(c) = self.clients.get_mut(key) {
            if let Err(e) = c.flush(now) {
                self.drop_client(key, &e.to_string(), false);
            }
        }
    }

    /// A connection failed or was closed by the broker.
    pub(crate) fn drop_client(&mut self, key: usize, err: &str, connecting: bool) {
        let Some(c) = self.clients.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut { c.sock });
        if c.state == State::Connecting || c.state == State::WaitConnAck {
            self.connecting = self.connecting.saturating_sub(1);
        } else {
            self.conns = self.conns.saturating_sub(1);
        }
        let ph = self.sh.phase();
        if connecting || c.state == State::Connecting {
            return self.connect_failed(c.role, c.idx, err);
        }
        if ph >= phase::DONE {
            return;
        }
        let who = format!("client {}", self.client_id(c.role, c.idx));
        self.sh
            .fail(format!("broker closed the connection of {who} ({err})"));
    }

    /// Reads what the socket holds and parses it: one read per event unless it filled the
    /// buffer or the peer's FIN came with the event (see `pacing::read_again`). The receive
    /// time of the messages is read from the clock once per read, right after it returns.
    fn read(&mut self, key: usize, read_closed: bool) -> Result<(), String> {
        let quickack = self.coalesce > 0;
        loop {
            let Some(c) = self.clients.get_mut(key) else {
                return Ok(());
            };
            if c.rlen == c.rbuf.len() {
                if c.rpos > 0 {
                    c.rbuf.copy_within(c.rpos..c.rlen, 0);
                    c.rlen -= c.rpos;
                    c.rpos = 0;
                } else {
                    let n = (c.rbuf.len() * 2).max(4096);
                    c.rbuf.resize(n, 0);
                }
            }
            let offered = c.rbuf.len() - c.rlen;
            let n = match c.sock.read(&mut c.rbuf[c.rlen..]) {
                Ok(0) => return Err("end of stream".into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            };
            let now = now_ns();
            c.rlen += n;
            if let Some(ws) = c.ws.as_mut() {
                c.rlen = ws.on_read(&mut c.rbuf, c.rlen - n, c.rlen)?;
            }
            // Linux ACKs a drained small-segment read by itself unless the socket is in
            // delayed-ACK ("pingpong") mode, which only sending data enters: re-arm quick
            // ACKs only after a write (PINGREQ, PUBACK), not with a syscall per read. A
            // broker with Nagle on (Mosquitto's default) waits for these ACKs.
            if quickack && c.wrote {
                c.wrote = false;
                net::quickack(&c.sock);
            }
            self.parse(key, now)?;
            if !read_again(n, offered, read_closed) {
                return Ok(());
            }
        }
    }

    /// Handles every complete packet in the client's read buffer.
    fn parse(&mut self, key: usize, now: u64) -> Result<(), String> {
        let Self {
            sh,
            clients,
            trackers,
            res,
            interval,
            measure_start,
            recv_total,
            unique_total,
            step,
            id: my_id,
            ..
        } = self;
        let Some(c) = clients.get_mut(key) else {
            return Ok(());
        };
        let plan = &sh.plan;
        let v = plan.version;
        let shared_mode = plan.sub_mode == SubMode::Shared;
        let threads = plan.threads;
        let mut event = None;
        while c.rpos < c.rlen {
            let parsed = wire::parse(&c.rbuf[c.rpos..c.rlen], v)
                .map_err(|e| format!("malformed packet from broker: {e}"))?;
            let Some((pkt, used)) = parsed else {
                break;
            };
            match pkt {
                Packet::Publish {
                    qos,
                    packet_id,
                    payload,
                    ..
                } => {
                    if qos == 1 {
                        wire::encode_ack(&mut c.wbuf, ptype::PUBACK, packet_id);
                    } else if qos == 2 {
                        wire::encode_ack(&mut c.wbuf, ptype::PUBREC, packet_id);
                    }
                    let st = match stamp::read(payload) {
                        Some(st)
                            if st.sent_ns >= sh.created_ns
                                && st.sent_ns <= now + 1_000_000_000
                                && (st.stream as usize) < plan.publishers =>
                        {
                            st
                        }
                        // Not ours (another client's payload), or queued for a persistent
                        // session by an earlier run.
                        _ => {
                            res.foreign += 1;
                            c.rpos += used;
                            continue;
                        }
                    };
                    let tkey = if shared_mode {
                        u64::from(st.stream)
                    } else {
                        ((c.idx as u64) << 32) | u64::from(st.stream)
                    };
                    let a = trackers.entry(tkey).or_default().observe(st.seq);
                    *recv_total += 1;
                    if a != Arrival::Duplicate {
                        *unique_total += 1;
                    }
                    // A shared group gives no order across its members. [MQTT-4.8.2]
                    let a = if shared_mode && matches!(a, Arrival::Late | Arrival::TooOld) {
                        Arrival::InOrder
                    } else {
                        a
                    };
                    if st.sent_ns >= *measure_start {
                        res.counts.add(a);
                        res.bytes += payload.len() as u64;
                        let lat = now.saturating_sub(st.sent_ns).max(1);
                        res.latency.saturating_record(lat);
                        interval.saturating_record(lat);
                    }
                    if (u64::from(st.seq) + 1) % *step == 0 {
                        if let Some(g) = sh.gates.get(st.stream as usize) {
                            g.delivered.fetch_add(*step, Ordering::AcqRel);
                            if g.blocked.load(Ordering::Acquire)
                                && g.blocked.swap(false, Ordering::AcqRel)
                            {
                                let owner = st.stream as usize % threads;
                                if owner != *my_id {
                                    let _ = sh.wakers[owner].wake();
                                }
                            }
                        }
                    }
                }
                Packet::Ack {
                    kind,
                    packet_id,
                    reason,
                } => match kind {
                    ptype::PUBREL => wire::encode_ack(&mut c.wbuf, ptype::PUBCOMP, packet_id),
                    _ => {
                        if let Some(p) = c.publ.as_mut() {
                            if reason >= 0x80 {
                                res.rejected += 1;
                            }
                            if kind == ptype::PUBREC && reason < 0x80 {
                                wire::encode_ack(&mut c.wbuf, ptype::PUBREL, packet_id);
                            } else if p.release(packet_id) && reason < 0x80 {
                                res.acked_all += 1;
                                if now >= *measure_start {
                                    res.acked += 1;
                                }
                            }
                        }
                    }
                },
                Packet::ConnAck {
                    code, receive_max, ..
                } => {
                    if c.state != State::WaitConnAck {
                        return Err("unexpected CONNACK".into());
                    }
                    if code != 0 {
                        let r = wire::connack_reason(v, code);
                        let msg = format!("CONNACK refused: {r} (code 0x{code:02x})");
                        sh.fail(msg.clone());
                        return Err(msg);
                    }
                    event = Some(("connack", receive_max));
                }
                Packet::SubAck { codes, .. } => {
                    if let Some(bad) = codes.iter().find(|&&x| x >= 0x80) {
                        let msg = format!(
                            "subscription {:?} not granted: {} (code 0x{bad:02x})",
                            plan.filters(c.idx),
                            wire::suback_reason(*bad)
                        );
                        sh.fail(msg.clone());
                        return Err(msg);
                    }
                    event = Some(("suback", 0));
                }
                Packet::Disconnect { reason } => {
                    return Err(format!(
                        "broker sent DISCONNECT, reason code 0x{reason:02x}"
                    ));
                }
                Packet::PingResp | Packet::Other(_) => {}
            }
            c.rpos += used;
        }
        if c.rpos == c.rlen {
            c.rpos = 0;
            c.rlen = 0;
        }
        match event {
            Some(("connack", rm)) => self.on_connack(key, now, rm),
            Some(("suback", _)) => {
                if let Some(c) = self.clients.get_mut(key) {
                    if c.state == State::WaitSubAck {
                        c.state = State::Ready;
                        self.sh.subs_ready.fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_connack(&mut self, key: usize, now: u64, receive_max: u16) {
        self.connecting = self.connecting.saturating_sub(1);
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        self.res.connects_ok += 1;
        self.res
            .connect_latency
            .saturating_record(now.saturating_sub(c.started_ns).max(1));
        self.conns += 1;
        let plan = &self.sh.plan;
        match c.role {
            Role::Sub => {
                let filters = plan.filters(c.idx);
                let f: Vec<(&str, u8)> = filters.iter().map(|s| (s.as_str(), plan.qos)).collect();
                wire::encode_subscribe(&mut c.wbuf, plan.version, 1, &f);
                c.state = State::WaitSubAck;
            }
            Role::Pub => {
                if let Some(p) = c.publ.as_mut() {
                    p.limit_inflight(usize::from(receive_max));
                }
                c.state = State::Ready;
                self.sh.pubs_ready.fetch_add(1, Ordering::AcqRel);
                if self.running {
                    self.pub_keys.push(key);
                    self.schedule(key, now);
                }
            }
            Role::Idle => {
                c.state = State::Ready;
                self.sh.subs_ready.fetch_add(1, Ordering::AcqRel);
            }
            Role::Churn => {
                wire::encode_disconnect(&mut c.wbuf);
                let _ = c.flush(now);
                self.res.churn_cycles += 1;
                self.to_close.push(key);
            }
        }
    }

    pub(crate) fn close_pending(&mut self) {
        while let Some(key) = self.to_close.pop() {
            if let Some(c) = self.clients.try_remove(key) {
                let _ = self.poll.registry().deregister(&mut { c.sock });
                self.conns = self.conns.saturating_sub(1);
                if c.role == Role::Churn && self.sh.phase() < phase::STOP {
                    self.todo_subs.insert(0, (Role::Churn, c.idx));
                }
            }
        }
    }

    fn begin_run(&mut self, now: u64) {
        self.running = true;
        self.measure_start = self.sh.measure_start_ns.load(Ordering::Acquire);
        let keys: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.role == Role::Pub && c.state == State::Ready)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.pub_keys.push(key);
            self.schedule(key, now);
        }
    }
}
