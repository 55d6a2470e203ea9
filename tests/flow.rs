//! Flow control over loopback (issue 9), against a real `shardmq` with two shards:
//! - a QoS 1 subscriber that reads its socket but never acknowledges (and pings) holds
//!   back only the publishers feeding it, and only until `slow_subscriber_timeout` cuts
//!   it; unrelated QoS 0 traffic keeps flowing on both shards, the publishers it held
//!   back are not timed out for keep alive and resume, and its persistent session keeps
//!   the messages;
//! - a client that publishes QoS 1 as fast as it can and never reads its
//!   acknowledgements is no longer read once its output is over the bound, costs the
//!   broker no more memory, and is cut after `slow_subscriber_timeout`, while others
//!   are served.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{connect_v311, BrokerProc, Raw, TIMEOUT, V4};

/// `slow_subscriber_timeout` of the stuck-subscriber scenario, seconds.
const STALL_SECS: u64 = 8;
/// Keep alive of the hot publishers: the broker would cut them after 3 s unread.
const HOT_KEEPALIVE: u16 = 2;
const MAX_QUEUED: u64 = 100;
const COLD_PUBS: usize = 8;
const COLD_SUBS: usize = 4;
const HOT_PUBS: usize = 4;
/// Length of each measurement window of cold traffic.
const WINDOW: Duration = Duration::from_secs(3);

const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// A raw MQTT 3.1.1 client driven by two threads: a writer that appends what `next`
/// gives whenever the previous bytes are out (never abandoning a partial frame), and a
/// reader that counts what arrives and notices when the broker closes the connection.
struct RawClient {
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    /// The broker closed the connection while the client was running.
    closed: Arc<AtomicBool>,
    publishes: Arc<AtomicU64>,
    pubacks: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl RawClient {
    /// Starts the threads on a connection that already has its CONNACK (and SUBACK).
    fn spawn(
        raw: Raw,
        reads: bool,
        mut next: impl FnMut() -> Option<Vec<u8>> + Send + 'static,
    ) -> Self {
        let stream = raw.stream;
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        let publishes = Arc::new(AtomicU64::new(0));
        let pubacks = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        if reads {
            stream.set_read_timeout(None).unwrap();
            let mut reader = Raw {
                stream: stream.try_clone().unwrap(),
            };
            let (stop, closed) = (Arc::clone(&stop), Arc::clone(&closed));
            let (publishes, pubacks) = (Arc::clone(&publishes), Arc::clone(&pubacks));
            threads.push(std::thread::spawn(move || loop {
                let Some(p) = reader.recv() else {
                    if !stop.load(Ordering::Relaxed) {
                        closed.store(true, Ordering::Relaxed);
                    }
                    return;
                };
                match p.kind() {
                    3 => publishes.fetch_add(1, Ordering::Relaxed),
                    4 => pubacks.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }));
        }
        let mut writer = stream.try_clone().unwrap();
        writer
            .set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop2 = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            let (mut buf, mut at) = (Vec::new(), 0);
            while !stop2.load(Ordering::Relaxed) {
                if at == buf.len() {
                    match next() {
                        Some(b) => (buf, at) = (b, 0),
                        None => {
                            std::thread::sleep(Duration::from_millis(1)); // pacing
                            continue;
                        }
                    }
                }
                if common::write_resuming(&mut writer, &buf, &mut at).is_err() {
                    return; // closed by the broker
                }
            }
        }));
        Self {
            stream,
            stop,
            closed,
            publishes,
            pubacks,
            threads,
        }
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stream.shutdown(Shutdown::Both);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Something to send every `period` (None in between): `make(n)` for the n-th time.
fn every(
    period: Duration,
    mut make: impl FnMut(u64) -> Option<Vec<u8>>,
) -> impl FnMut() -> Option<Vec<u8>> {
    let mut due = Instant::now();
    let mut n = 0;
    move || {
        let now = Instant::now();
        if now < due {
            return None;
        }
        due = now + period;
        n += 1;
        make(n)
    }
}

/// A rumqttc client whose events a thread consumes: `counts[p]` counts the QoS 0
/// messages "p:n" received from cold publisher p; `failed` is set on a connection error.
struct Counted {
    client: V4,
    counts: Arc<Vec<AtomicU64>>,
    failed: Arc<AtomicBool>,
}

impl Counted {
    fn new(client: V4) -> Self {
        let counts: Arc<Vec<AtomicU64>> =
            Arc::new((0..COLD_PUBS).map(|_| AtomicU64::new(0)).collect());
        let failed = Arc::new(AtomicBool::new(false));
        let events = client.events.clone();
        let (counts2, failed2) = (Arc::clone(&counts), Arc::clone(&failed));
        std::thread::spawn(move || {
            while let Ok(ev) = events.recv() {
                match ev {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let s = String::from_utf8_lossy(&p.payload).into_owned();
                        if let Some(c) = s
                            .split_once(':')
                            .and_then(|(a, _)| a.parse::<usize>().ok())
                            .and_then(|i| counts2.get(i))
                        {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        failed2.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        });
        Self {
            client,
            counts,
            failed,
        }
    }

    fn snapshot(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

/// Deliveries per (cold subscriber, cold publisher).
fn per_pair(subs: &[Counted]) -> Vec<Vec<u64>> {
    subs.iter().map(Counted::snapshot).collect()
}

fn diff(a: &[Vec<u64>], b: &[Vec<u64>]) -> Vec<Vec<u64>> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(x, y)| x - y).collect())
        .collect()
}

/// The lines of the broker's log that report a disconnect made by the broker.
fn cut_lines(b: &BrokerProc) -> Vec<String> {
    b.log_lines()
        .into_iter()
        .filter(|l| l.contains("disconnecting") || l.contains("protocol error"))
        .collect()
}

/// The broker disconnected nobody but `client_id`.
fn assert_only_cut(b: &BrokerProc, client_id: &str) {
    let others: Vec<String> = cut_lines(b)
        .into_iter()
        .filter(|l| !l.contains(&format!("Client {client_id} ")))
        .collect();
    assert!(others.is_empty(), "others were disconnected: {others:?}");
}

/// Issue 9's scenario: S on `hot/#` reads but never sends PUBACK (and pings), four QoS 1
/// publishers feed it, eight QoS 0 publishers on `cold/N` feed four `cold/#`
/// subscribers, connections spread over both shards.
#[test]
fn stuck_subscriber_holds_back_only_its_publishers_until_cut() {
    let b = BrokerProc::start(&format!(
        "threads 2\nsys_interval 1\nslow_subscriber_timeout {STALL_SECS}\n\
         max_queued_messages {MAX_QUEUED}\nmax_inflight_messages 10\n"
    ));
    // S: a persistent session that reads everything and acknowledges nothing.
    let mut s = Raw::connect(b.port);
    s.send(&connect_v311("stuck", false, 10, None));
    assert_eq!(s.recv().unwrap().first, 0x20);
    assert_eq!(s.subscribe(1, &[("hot/#", 1)]), vec![1]);
    let mut stuck = RawClient::spawn(
        s,
        true,
        every(Duration::from_secs(2), |_| Some(PINGREQ.to_vec())),
    );

    let cold_subs: Vec<Counted> = (0..COLD_SUBS)
        .map(|i| {
            let c = V4::connect(&format!("cold-sub{i}"), b.port);
            c.subscribe("cold/#", rumqttc::QoS::AtMostOnce);
            Counted::new(c)
        })
        .collect();
    let cold_pubs: Vec<Counted> = (0..COLD_PUBS)
        .map(|i| Counted::new(V4::connect(&format!("cold-pub{i}"), b.port)))
        .collect();
    // Hot publishers: raw, keep alive 2 s, a PINGREQ every second; QoS 1 once `go`.
    let go = Arc::new(AtomicBool::new(false));
    let mut hot: Vec<RawClient> = (0..HOT_PUBS)
        .map(|i| {
            let mut raw = Raw::connect(b.port);
            raw.send(&connect_v311(&format!("hot{i}"), true, HOT_KEEPALIVE, None));
            assert_eq!(raw.recv().unwrap().first, 0x20);
            let go = Arc::clone(&go);
            let mut last_ping = Instant::now();
            let mut id = 0u16;
            let next = every(Duration::from_millis(10), move |_| {
                let mut out = Vec::new();
                if last_ping.elapsed() >= Duration::from_secs(1) {
                    last_ping = Instant::now();
                    out.extend_from_slice(&PINGREQ);
                }
                if go.load(Ordering::Relaxed) {
                    id = id % 60_000 + 1;
                    out.extend(common::publish("hot/x", 1, false, false, id, b"hot"));
                }
                (!out.is_empty()).then_some(out)
            });
            RawClient::spawn(raw, true, next)
        })
        .collect();
    common::assert_both_shards_used(b.port);

    // Cold traffic at a steady pace, one thread per publisher.
    let cold_stop = Arc::new(AtomicBool::new(false));
    let cold_threads: Vec<JoinHandle<()>> = cold_pubs
        .iter()
        .enumerate()
        .map(|(p, publ)| {
            let client = publ.client.client.clone();
            let stop = Arc::clone(&cold_stop);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let payload = format!("{p}:{n}");
                    let _ = client.try_publish(
                        format!("cold/{p}"),
                        rumqttc::QoS::AtMostOnce,
                        false,
                        payload,
                    );
                    n += 1;
                    std::thread::sleep(Duration::from_millis(10)); // pacing, 100 msg/s
                }
            })
        })
        .collect();
    assert!(
        common::wait_until(TIMEOUT, || cold_subs
            .iter()
            .all(|s| s.snapshot().iter().all(|&c| c > 0))),
        "cold traffic never reached every cold subscriber"
    );

    // Window 1: before S is stuck.
    let a = per_pair(&cold_subs);
    std::thread::sleep(WINDOW); // measurement window
    let before = diff(&per_pair(&cold_subs), &a);

    // S gets stuck: its window (10) fills, then its queue.
    go.store(true, Ordering::Relaxed);
    let hot_start = Instant::now();
    assert!(
        common::wait_until(TIMEOUT, || stuck.publishes.load(Ordering::Relaxed) >= 10),
        "S never received its window of hot messages"
    );
    assert!(
        common::wait_until(TIMEOUT, || b
            .log_lines()
            .iter()
            .any(|l| l.contains("New client connected") && l.contains("hot3"))),
        "hot publishers not connected"
    );
    std::thread::sleep(Duration::from_millis(500)); // S's queue fills (100 messages at 400/s)

    // Window 2: while S is stuck.
    let c = per_pair(&cold_subs);
    std::thread::sleep(WINDOW); // measurement window
    let during = diff(&per_pair(&cold_subs), &c);
    let window_end = hot_start.elapsed();
    assert!(
        !stuck.closed(),
        "S was cut {window_end:?} after it got stuck, before the measurement window ended"
    );
    eprintln!("cold deliveries per subscriber and publisher: before {before:?}, while S was stuck {during:?}");
    // Today's bug stops whole shards: the pairs whose messages cross to S's shard get
    // nothing. A pair may slow down on a loaded box, but not to a quarter.
    for (i, (d, b4)) in during.iter().zip(&before).enumerate() {
        for (p, (d, b4)) in d.iter().zip(b4).enumerate() {
            assert!(
                d * 4 >= *b4,
                "cold publisher {p} -> cold subscriber {i} held back while S was stuck: \
                 {d} deliveries vs {b4} before (all: {during:?} vs {before:?})"
            );
        }
    }

    // S is cut after slow_subscriber_timeout without an acknowledgement, not before.
    assert!(
        b.wait_log("Client stuck has not acknowledged"),
        "S was never cut; log: {:?}",
        cut_lines(&b)
    );
    let cut_after = hot_start.elapsed();
    eprintln!("S cut {cut_after:?} after the hot publishers started");
    assert!(
        cut_after >= Duration::from_secs(STALL_SECS),
        "S cut {cut_after:?} after it got stuck"
    );
    assert!(
        common::wait_until(TIMEOUT, || stuck.closed()),
        "S's socket still open"
    );

    // The hot publishers resume: new PUBACKs on every one of them.
    let acked: Vec<u64> = hot
        .iter()
        .map(|h| h.pubacks.load(Ordering::Relaxed))
        .collect();
    for (i, (h, n)) in hot.iter().zip(&acked).enumerate() {
        assert!(
            common::wait_until(TIMEOUT, || h.pubacks.load(Ordering::Relaxed) > *n),
            "hot publisher {i} did not resume after S was cut"
        );
    }

    // Nobody but S was disconnected.
    for (i, h) in hot.iter().enumerate() {
        assert!(!h.closed(), "hot publisher {i} was disconnected");
    }
    for (i, c) in cold_subs.iter().chain(&cold_pubs).enumerate() {
        assert!(
            !c.failed.load(Ordering::Relaxed),
            "cold client {i} lost its connection"
        );
    }
    assert_only_cut(&b, "stuck");

    cold_stop.store(true, Ordering::Relaxed);
    for t in cold_threads {
        t.join().unwrap();
    }
    for h in &mut hot {
        h.stop();
    }
    stuck.stop();

    // The persistent session kept what S had not acknowledged: reconnect and receive it.
    let (mut s, present, rc) = Raw::mqtt_connect(b.port, "stuck", false);
    assert_eq!((present, rc), (true, 0));
    let mut got = 0;
    while let Some(p) = s.recv_within(Duration::from_secs(5)) {
        if p.kind() != 3 {
            continue;
        }
        let (topic, id, _) = p.publish_parts();
        assert_eq!(topic, "hot/x");
        s.send(&common::ack(0x40, id));
        got += 1;
        if got >= MAX_QUEUED {
            break;
        }
    }
    assert!(got >= MAX_QUEUED, "the session kept only {got} messages");
}

fn small_receive_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt(2) on a socket we own, with a pointer to a live c_int and its
    // size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt SO_RCVBUF: {}",
        std::io::Error::last_os_error()
    );
}

/// A client that publishes QoS 1 flat out and never reads its PUBACKs: the broker stops
/// reading it once its output is over the bound, its memory stays flat, it is cut after
/// `slow_subscriber_timeout`, and a pair of other clients is served throughout.
#[test]
fn client_that_never_reads_its_acks_is_gated_and_cut() {
    const TIMEOUT_SECS: u64 = 3;
    let b = BrokerProc::start(&format!(
        "threads 2\nslow_subscriber_timeout {TIMEOUT_SECS}\n"
    ));
    let sub = V4::connect("ok-sub", b.port);
    sub.subscribe("ok/#", rumqttc::QoS::AtLeastOnce);
    let publ = V4::connect("ok-pub", b.port);
    publ.publish("ok/0", rumqttc::QoS::AtLeastOnce, false, "0");
    assert!(sub.next_publish().is_some(), "the pair does not work");
    let before = b.rss_kib();

    let (raw, _, rc) = Raw::mqtt_connect(b.port, "deaf", true);
    assert_eq!(rc, 0);
    // A small receive buffer: the kernel would otherwise take megabytes of PUBACKs
    // (tcp_rmem autotuning) before the broker's own queue sees any.
    small_receive_buffer(&raw.stream);
    let frame = common::publish("deaf/t", 1, false, false, 1, b"payload!");
    let batch = frame.repeat(256);
    let started = Instant::now();
    let mut deaf = RawClient::spawn(raw, false, move || Some(batch.clone()));

    // The pair keeps working while the flood goes on; RSS is sampled meanwhile.
    let mut peak = before;
    let mut served = 0;
    let cut = common::wait_until(2 * TIMEOUT, || {
        peak = peak.max(b.rss_kib());
        assert!(
            peak < before + 64 * 1024,
            "RSS grew from {before} KiB to {peak} KiB after {:?}",
            started.elapsed()
        );
        served += 1;
        publ.publish("ok/1", rumqttc::QoS::AtLeastOnce, false, served.to_string());
        assert!(
            sub.next_publish_within(Duration::from_secs(5)).is_some(),
            "the pair stopped being served during the flood"
        );
        b.log_lines()
            .iter()
            .any(|l| l.contains("Client deaf has not read"))
    });
    let elapsed = started.elapsed();
    deaf.stop();
    eprintln!("cut after {elapsed:?}; RSS {before} KiB before, peak {peak} KiB; pair served {served} times");
    assert!(cut, "the client was never cut; log: {:?}", cut_lines(&b));
    assert!(
        elapsed >= Duration::from_secs(TIMEOUT_SECS),
        "cut after {elapsed:?}, before slow_subscriber_timeout"
    );
    assert!(
        peak < before + 16 * 1024,
        "RSS grew from {before} KiB to {peak} KiB"
    );
    publ.publish("ok/2", rumqttc::QoS::AtLeastOnce, false, "after");
    assert!(
        sub.next_publish().is_some(),
        "the pair is not served after the cut"
    );
    assert_only_cut(&b, "deaf");
}
