//! Persistence write failures fail closed, against the real binary: the broker runs with
//! `RLIMIT_FSIZE` lowered (SIGXFSZ ignored, so a write past the limit returns EFBIG),
//! so the log really stops taking appends. No acknowledgement escapes while its record
//! is not on disk (on one shard or two), nothing else leaves the shard either (a PINGREQ
//! waits too), the error is logged; once the limit is raised at run time (prlimit(2))
//! the held acknowledgements go out, and after `kill -9` every acknowledged message
//! reaches the persistent subscriber, from a log that is not corrupt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::persist::{crash, drain_publishes, persist_config};
use common::{temp_dir, BrokerProc, Raw, TIMEOUT, V4};
use rumqttc::{Event, Packet, QoS};

/// The broker's files may grow to this many bytes.
const FSIZE_LIMIT: u64 = 64 << 10;
/// How long a held acknowledgement must stay away (generous: nothing else can release
/// it, so waiting longer proves nothing more).
const HELD_FOR: Duration = Duration::from_secs(3);
const ERROR_LINE: &str = "persistence write failed";

/// Runs the child with its file size limit at `limit` and SIGXFSZ ignored (an ignored
/// signal stays ignored across exec).
fn limit_file_size(command: &mut Command, limit: u64) {
    // SAFETY: between fork and exec only async-signal-safe calls: signal(2) and
    // setrlimit(2), with a struct on the stack.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Lifts the file size limit of the running broker (prlimit(2)).
fn lift_file_size_limit(broker: &BrokerProc) {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    let pid = libc::pid_t::try_from(broker.pid()).unwrap();
    // SAFETY: prlimit(2) on our own child with a valid new limit and no old-limit out.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// User + system CPU time of the broker process so far (/proc/PID/stat).
fn cpu_seconds(broker: &BrokerProc) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", broker.pid())).unwrap();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &stat[stat.rfind(") ").unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf(3) reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / hz as f64
}

fn logged(broker: &BrokerProc, needle: &str) -> bool {
    broker.log_lines().iter().any(|l| l.contains(needle))
}

/// A persistent subscriber ("victim") on `load/#` with QoS 1, offline: every message
/// is recorded in its queue.
fn offline_victim(port: u16) {
    let (mut sub, _, _) = Raw::mqtt_connect(port, "victim", false);
    assert_eq!(sub.subscribe(1, &[("load/#", 1)]), vec![1]);
    sub.disconnect();
}

/// Restarts the broker on the same files (no limit), checks that the log had no torn
/// record and that every `acked` payload reaches the victim, stops it cleanly and
/// returns the payloads delivered.
fn restart_expect_delivered(config: &str, acked: &[String]) -> BTreeSet<String> {
    let broker = BrokerProc::start(config);
    let (mut sub, present, _) = Raw::mqtt_connect(broker.port, "victim", false);
    assert!(present, "persistent session lost");
    let got = drain_publishes(&mut sub, Duration::from_millis(1500));
    let delivered: BTreeSet<String> = got
        .into_iter()
        .map(|g| String::from_utf8(g.1).unwrap())
        .collect();
    assert!(!logged(&broker, "torn tail"), "{:?}", broker.log_lines());
    let lost: Vec<_> = acked.iter().filter(|p| !delivered.contains(*p)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    common::persist::stop_clean(broker);
    delivered
}

fn payload(publisher: usize, n: u32) -> String {
    format!("{publisher}:{n}:{}", "x".repeat(100))
}

/// A rumqttc publisher that publishes QoS 1 messages one at a time (the next only after
/// the PUBACK of the last) once `go` is set, keeping the payloads acknowledged, until
/// told to stop.
struct Loader {
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Loader {
    fn start(port: u16, index: usize, go: &Arc<AtomicBool>) -> Self {
        let client = V4::connect(&format!("loader-{index}"), port);
        let go = Arc::clone(go);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                common::wait_until(TIMEOUT, || go.load(Ordering::SeqCst));
                let mut n = 0;
                'publish: while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let p = payload(index, n);
                    client.publish("load/x", QoS::AtLeastOnce, false, p.clone());
                    loop {
                        let ack = client.wait_for_within(Duration::from_millis(100), |ev| {
                            matches!(ev, Event::Incoming(Packet::PubAck(_))).then_some(())
                        });
                        if ack.is_some() {
                            acked.lock().unwrap().push(p);
                            break;
                        }
                        if stop.load(Ordering::SeqCst) {
                            break 'publish;
                        }
                    }
                }
                client.drop_connection();
            })
        };
        Self {
            acked,
            stop,
            thread,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

/// A QoS 0 client with a keep alive of 1 s that sends PINGREQ every 300 ms from one
/// thread and counts the PINGRESPs another reads, until the broker closes it.
struct Pinger {
    pongs: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Pinger {
    fn start(port: u16) -> Self {
        let mut raw = Raw::connect(port);
        raw.send(&common::connect_v311("pinger", true, 1, None));
        assert_eq!(raw.recv().expect("CONNACK").first, 0x20);
        let mut writer = raw.stream.try_clone().unwrap();
        let (pongs, closed, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        {
            let (pongs, closed) = (Arc::clone(&pongs), Arc::clone(&closed));
            raw.stream.set_read_timeout(None).unwrap();
            std::thread::spawn(move || {
                while let Some(p) = raw.recv() {
                    if p.kind() == 13 {
                        pongs.fetch_add(1, Ordering::SeqCst);
                    }
                }
                closed.store(true, Ordering::SeqCst);
            });
        }
        {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // The client's own keep alive clock, not a synchronisation.
                while !stop.load(Ordering::SeqCst) && writer.write_all(&[0xC0, 0x00]).is_ok() {
                    std::thread::sleep(Duration::from_millis(300));
                }
                let _ = writer.write_all(&[0xE0, 0x00]);
            });
        }
        Self {
            pongs,
            closed,
            stop,
        }
    }

    fn pongs(&self) -> usize {
        self.pongs.load(Ordering::SeqCst)
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Waits until the error line is logged and no loader's count moved for a while (every
/// append fails now), and returns the counts then.
fn wait_until_held(broker: &BrokerProc, loaders: &[Loader]) -> Vec<usize> {
    assert!(
        broker.wait_log(ERROR_LINE),
        "no persistence error logged; log: {:?}",
        broker.log_lines()
    );
    let counts = || loaders.iter().map(Loader::acked).collect::<Vec<_>>();
    let mut last = counts();
    let mut still_since = Instant::now();
    let settled = common::wait_until(TIMEOUT, || {
        let now = counts();
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        still_since.elapsed() >= Duration::from_millis(500)
    });
    assert!(settled, "acknowledgements kept coming: {last:?}");
    last
}

#[test]
fn held_acks_wait_for_the_disk_and_go_out_when_it_takes_writes_again() {
    let dir = temp_dir("persist-fail-one");
    let config = format!(
        "{}threads 1\nsys_interval 1\n",
        persist_config(&dir, "always")
    );
    let broker = BrokerProc::start_with(&config, |c| limit_file_size(c, FSIZE_LIMIT));
    offline_victim(broker.port);
    // A QoS 0 client on the same (only) shard: while the shard holds its output it gets
    // no answer either (decided: all of a holding shard's output waits, the simplest
    // rule that cannot let an acknowledgement through). It is not read meanwhile, and
    // its keep alive (1.5 s) must not run out for that.
    let pinger = Pinger::start(broker.port);
    assert!(
        common::wait_until(TIMEOUT, || pinger.pongs() > 0),
        "no PINGRESP"
    );

    let loader = Loader::start(broker.port, 0, &Arc::new(AtomicBool::new(true)));
    let held = wait_until_held(&broker, std::slice::from_ref(&loader));
    assert!(held[0] > 10, "the log filled up before any load: {held:?}");
    assert!(
        logged(&broker, "mosquitto.db.log") && logged(&broker, "File too large"),
        "the error line names neither the file nor the OS error: {:?}",
        broker.log_lines()
    );
    let (pongs, cpu) = (pinger.pongs(), cpu_seconds(&broker));
    assert!(
        !common::wait_until(HELD_FOR, || pinger.pongs() > pongs
            || loader.acked() > held[0]),
        "a holding shard answered: PINGRESPs {pongs} -> {}, PUBACKs {} -> {}",
        pinger.pongs(),
        held[0],
        loader.acked()
    );
    // Retrying from the loop's timer, not spinning (at most a third of a core).
    let spent = cpu_seconds(&broker) - cpu;
    eprintln!("CPU while held: {spent:.3} s in {HELD_FOR:?}");
    assert!(
        spent < HELD_FOR.as_secs_f64() / 3.0,
        "{spent} s of CPU while held"
    );

    lift_file_size_limit(&broker);
    assert!(
        common::wait_until(TIMEOUT, || loader.acked() >= held[0] + 20),
        "the held PUBACK did not arrive after the limit was lifted"
    );
    assert!(
        common::wait_until(TIMEOUT, || pinger.pongs() > pongs + 3),
        "no PINGRESP after the limit was lifted"
    );
    assert!(
        !pinger.closed(),
        "the pinger was disconnected while not read"
    );
    assert!(broker.wait_log("Persistence writes succeed again after"));
    let sys = common::watch_sys(broker.port, "$SYS/broker/persistence/#", |s| {
        common::num(s, "$SYS/broker/persistence/write_failures") > 0
            && s.get("$SYS/broker/persistence/failing").map(String::as_str) == Some("0")
    });
    assert!(
        common::num(&sys, "$SYS/broker/persistence/write_failures") > 0,
        "{sys:?}"
    );
    let acked = loader.finish();
    crash(broker);

    restart_expect_delivered(&config, &acked);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_9_while_two_shards_hold_loses_no_acknowledged_message() {
    let dir = temp_dir("persist-fail-two");
    let config = format!(
        "{}threads 2\nsys_interval 1\n",
        persist_config(&dir, "always")
    );
    let broker = BrokerProc::start_with(&config, |c| limit_file_size(c, FSIZE_LIMIT));
    offline_victim(broker.port);
    // Eight publishers over both shards (messages also cross to the victim's shard).
    let go = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..8).map(|i| Loader::start(broker.port, i, &go)).collect();
    // SO_REUSEPORT hashes each connection to a shard: the eight loaders and the monitor
    // all landed on one shard about once in 256 runs; with four idle connections more,
    // once in ~4,000.
    let _idle: Vec<V4> = (0..4)
        .map(|i| V4::connect(&format!("idle-{i}"), broker.port))
        .collect();
    common::assert_both_shards_used(broker.port);
    go.store(true, Ordering::SeqCst);
    let held = wait_until_held(&broker, &loaders);
    let counts = || loaders.iter().map(Loader::acked).collect::<Vec<_>>();
    assert!(
        !common::wait_until(HELD_FOR, || counts() != held),
        "a PUBACK escaped while the log could not be written: {held:?} -> {:?}",
        counts()
    );
    // Still failing: the broker dies with the records held, not written.
    crash(broker);
    let acked: Vec<String> = loaders.into_iter().flat_map(Loader::finish).collect();
    assert!(acked.len() > 10, "the log filled up before any load");

    restart_expect_delivered(&config, &acked);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_snapshot_that_cannot_be_written_keeps_the_old_one_and_is_retried() {
    let dir = temp_dir("persist-fail-snapshot");
    // A compaction every 100 changes and 1000-byte retained messages: the snapshot (all
    // of them) passes the limit long before a log (the changes since a rotation) does.
    // 1 MiB: with 256 KiB a loaded host once let the log take ~250 changes while one
    // compaction ran, and the log's write failed first (acks held, no PUBACK).
    let config = format!(
        "{}threads 1\nautosave_on_changes true\nautosave_interval 100\n",
        persist_config(&dir, "always")
    );
    let broker = BrokerProc::start_with(&config, |c| limit_file_size(c, 16 * FSIZE_LIMIT));
    let (mut publisher, _, _) = Raw::mqtt_connect(broker.port, "filler", true);
    let body = vec![b'r'; 1000];
    let publish = |raw: &mut Raw, id: u16| {
        common::persist::publish_acked(raw, &format!("fill/{id}"), id, true, &body);
    };
    let saved = |broker: &BrokerProc| {
        broker
            .log_lines()
            .iter()
            .filter(|l| l.contains("Saved persistence snapshot"))
            .count()
    };
    let mut id = 0u16;
    while !logged(&broker, "persistence compaction failed") {
        assert!(
            id < 3000,
            "no compaction failed; log: {:?}",
            broker.log_lines()
        );
        id += 1;
        publish(&mut publisher, id);
    }
    let saved_before = saved(&broker);
    assert!(saved_before > 0, "no snapshot before");
    for _ in 0..50 {
        id += 1;
        publish(&mut publisher, id); // appends go on into the live log
    }
    assert!(!logged(&broker, ERROR_LINE), "{:?}", broker.log_lines());

    // The disk takes writes again: the compaction is retried (10 s after the failure)
    // and its snapshot covers the logs the failed one left.
    lift_file_size_limit(&broker);
    let deadline = Instant::now() + Duration::from_secs(90);
    while saved(&broker) == saved_before {
        assert!(
            Instant::now() < deadline,
            "no retried compaction; log: {:?}",
            broker.log_lines()
        );
        id += 1;
        publish(&mut publisher, id); // a shard starts the retry from its next append
        std::thread::sleep(Duration::from_millis(20)); // pacing the load, not waiting on it
    }
    assert!(
        logged(&broker, "Retrying the failed persistence compaction"),
        "{:?}",
        broker.log_lines()
    );
    let numbered: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.rsplit('.')
                .next()
                .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    assert!(numbered.is_empty(), "numbered logs left: {numbered:?}");
    id += 1;
    publish(&mut publisher, id);
    crash(broker);

    let broker = BrokerProc::start(&config);
    assert!(
        broker.wait_log(&format!("Restored {id} retained messages")),
        "{:?}",
        broker.log_lines()
    );
    common::persist::stop_clean(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stopping_while_held_says_what_is_not_saved_and_exits_non_zero() {
    let dir = temp_dir("persist-fail-stop");
    let config = format!("{}threads 1\n", persist_config(&dir, "always"));
    let mut broker = BrokerProc::start_with(&config, |c| limit_file_size(c, FSIZE_LIMIT));
    offline_victim(broker.port);
    let loader = Loader::start(broker.port, 0, &Arc::new(AtomicBool::new(true)));
    wait_until_held(&broker, std::slice::from_ref(&loader));
    let acked = loader.finish();
    broker.signal(libc::SIGTERM);
    let status = broker.wait_exit().expect("the broker did not stop");
    assert!(
        !status.success(),
        "exit status {status:?} after losing records"
    );
    assert!(
        logged(&broker, "persistence still failing at shutdown"),
        "{:?}",
        broker.log_lines()
    );
    drop(broker);

    // What was acknowledged before is all there; the held records are not.
    let delivered = restart_expect_delivered(&config, &acked);
    assert_eq!(
        delivered.len(),
        acked.len(),
        "held messages were saved after all"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
