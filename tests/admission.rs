//! Admission at accept time, black-box with a real broker process on two shards:
//! `max_connections` (global and per listener) and `max_connection_rate` are exact across
//! shards whatever the kernel's SO_REUSEPORT spread, and running out of file descriptors
//! pauses accepting without spinning and without stranding queued connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{connect_v311, wait_until, BrokerProc, Raw, TIMEOUT};

/// Opens a connection, sends CONNECT and returns it with whether a CONNACK 0 came back
/// (a refused connection is closed by the broker without one).
fn try_connect(port: u16, id: &str) -> (Raw, bool) {
    let mut raw = Raw::connect(port);
    let sent = raw.try_send(&connect_v311(id, true, 60, None));
    let ok = sent
        && raw
            .recv()
            .is_some_and(|p| p.first == 0x20 && p.body.get(1) == Some(&0));
    (raw, ok)
}

/// Opens `n` connections one after the other; returns them and how many got CONNACK.
fn connect_many(port: u16, prefix: &str, n: usize) -> (Vec<(Raw, bool)>, usize) {
    let conns: Vec<(Raw, bool)> = (0..n)
        .map(|i| try_connect(port, &format!("{prefix}{i}")))
        .collect();
    let ok = conns.iter().filter(|(_, ok)| *ok).count();
    (conns, ok)
}

fn global_config(extra: &str) -> String {
    format!(
        "{extra}\nlistener 0 127.0.0.1\nallow_anonymous true\n{}",
        common::LOG_TYPES
    )
}

#[test]
fn global_max_connections_is_exact_across_two_shards() {
    let broker = BrokerProc::start_config(&global_config("threads 2\nmax_connections 5"));
    let (mut conns, ok) = connect_many(broker.port, "g", 20);
    assert_eq!(
        ok, 5,
        "connections admitted with max_connections 5 on 2 shards"
    );
    assert!(broker.wait_log("max_connections reached"));
    // Two admitted clients leave: exactly two newcomers get in, wherever they land.
    let mut closed = 0;
    conns.retain(|(_, ok)| {
        let keep = !*ok || closed >= 2;
        if !keep {
            closed += 1;
        }
        keep
    });
    let mut again = 0;
    let deadline = Instant::now() + TIMEOUT;
    let mut newcomers = Vec::new();
    // The broker sees the closes asynchronously: retry until both slots are taken.
    while again < 2 && Instant::now() < deadline {
        let (raw, ok) = try_connect(broker.port, &format!("n{again}"));
        if ok {
            again += 1;
            newcomers.push(raw);
        }
    }
    assert_eq!(again, 2);
    let (_extra, ok) = connect_many(broker.port, "x", 6);
    assert_eq!(ok, 0, "admitted past the limit after the releases");
}

#[test]
fn listener_max_connections_is_exact_across_two_shards() {
    // After `listener`, max_connections is that listener's limit.
    let broker = BrokerProc::start("threads 2\nmax_connections 3");
    let (_conns, ok) = connect_many(broker.port, "l", 12);
    assert_eq!(ok, 3);
}

#[test]
fn max_connection_rate_is_shared_by_the_shards() {
    // One connection a second: per-shard buckets let one in on each shard at once.
    let broker = BrokerProc::start_config(&global_config("threads 2\nmax_connection_rate 1"));
    let start = Instant::now();
    let (_conns, ok) = connect_many(broker.port, "r", 10);
    let took = start.elapsed();
    // The burst of 1, plus one per full second the attempts took (refills).
    #[allow(clippy::cast_possible_truncation)]
    let refills = took.as_secs() as usize;
    assert!(ok >= 1 && ok <= 1 + refills, "{ok} admitted in {took:?}");
    assert!(broker.wait_log("max_connection_rate exceeded"));
}

// ---------------------------------------------------------------------------------------
// EMFILE

/// Open file descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// CPU time (user + system) of process `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100)
}

/// Lowers the open-files limit of a running process.
fn limit_open_files(pid: u32, n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: `lim` is a valid rlimit and the old-limit pointer may be null.
    let rc = unsafe {
        libc::prlimit(
            i32::try_from(pid).unwrap(),
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Out of descriptors: the broker pauses accepting and retries, so connections queued in
/// the backlog while it was full are accepted once others close (no new connection has to
/// arrive to trigger it), and it does not spin on accept(2) meanwhile.
#[test]
fn out_of_descriptors_pauses_accepting_then_takes_the_backlog() {
    const LIMIT: usize = 64;
    let broker = BrokerProc::start("threads 2");
    let pid = broker.pid();
    let (warm, ok) = try_connect(broker.port, "warm");
    assert!(ok);
    limit_open_files(pid, LIMIT as u64);
    let free = LIMIT - fd_count(pid);
    // Fill every descriptor, then queue 10 more in the backlog.
    let (mut conns, ok) = connect_many(broker.port, "f", free);
    assert_eq!(ok, free, "connections before the limit");
    let mut queued: Vec<Raw> = (0..10)
        .map(|i| {
            let mut raw = Raw::connect(broker.port);
            raw.send(&connect_v311(&format!("q{i}"), true, 60, None));
            raw
        })
        .collect();
    assert!(wait_until(TIMEOUT, || fd_count(pid) >= LIMIT));
    assert!(broker.wait_log("accept failed on listener"));
    // Saturated for 2 s: retrying every 100 ms costs next to nothing.
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2)); // measuring an interval, not waiting
    let used = cpu_ticks(pid) - t0;
    assert!(
        used * 4 < 2 * clock_ticks_per_second(),
        "broker used {used} ticks of CPU in 2 s while saturated"
    );
    // Ten clients leave; the ten queued ones get in without any new connection arriving.
    conns.truncate(conns.len() - 10);
    for (i, raw) in queued.iter_mut().enumerate() {
        let ack = raw
            .recv()
            .unwrap_or_else(|| panic!("queued client {i} never got CONNACK"));
        assert_eq!((ack.first, ack.body[1]), (0x20, 0));
    }
    drop(warm);
}
