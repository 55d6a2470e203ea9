//! Persistence over restarts of the real binary: a clean restart keeps retained messages
//! and persistent sessions (subscriptions, queued QoS 1 messages); `kill -9` during a
//! QoS 1 load with `persistence_fsync always` loses no acknowledged message, also when it
//! lands in a compaction; clients are served while a snapshot is written; a torn log
//! tail is truncated with a log line; a corrupt record refuses the start with its offset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::persist::{
    crash, drain_publishes, log_path, persist_config, publish_acked, stop_clean,
};
use common::{publish, temp_dir, BrokerProc, Raw, TIMEOUT};

/// Runs the binary with `extra` config and expects it to exit on its own: (status ok?,
/// stderr).
fn run_expect_exit(extra: &str) -> (bool, String) {
    let dir = temp_dir("refuse");
    let config = dir.join("shardmq.conf");
    std::fs::write(&config, format!("listener 0 127.0.0.1\n{extra}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("broker did not exit over a corrupt persistence file");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), err)
}

#[test]
fn clean_restart_keeps_retained_messages_sessions_and_queued_qos1() {
    let dir = temp_dir("persist-clean");
    let broker = BrokerProc::start(&persist_config(&dir, "interval"));
    let (mut sub, present, _) = Raw::mqtt_connect(broker.port, "keeper", false);
    assert!(!present);
    assert_eq!(sub.subscribe(1, &[("q/#", 1), ("other/+", 0)]), vec![1, 0]);
    sub.disconnect();

    let (mut publisher, _, _) = Raw::mqtt_connect(broker.port, "pub", true);
    publish_acked(&mut publisher, "ret/a", 1, true, b"kept");
    for i in 0..5u16 {
        publish_acked(
            &mut publisher,
            "q/1",
            10 + i,
            false,
            format!("m{i}").as_bytes(),
        );
    }
    publisher.disconnect();
    stop_clean(broker);
    assert!(
        dir.join("mosquitto.db").exists(),
        "no snapshot after a clean stop"
    );

    let broker = BrokerProc::start(&persist_config(&dir, "interval"));
    assert!(broker.wait_log("Restored 1 persistent sessions"));
    let (mut sub, present, _) = Raw::mqtt_connect(broker.port, "keeper", false);
    assert!(present, "session not restored");
    let got = drain_publishes(&mut sub, Duration::from_millis(500));
    let payloads: Vec<_> = got.iter().map(|g| g.1.clone()).collect();
    let want: Vec<Vec<u8>> = (0..5).map(|i| format!("m{i}").into_bytes()).collect();
    assert_eq!(payloads, want, "queued QoS 1 messages, in order");
    assert!(got.iter().all(|g| g.0 == "q/1" && g.2 == 1));

    // The subscriptions came back too: a new message reaches the restored session.
    let (mut publisher, _, _) = Raw::mqtt_connect(broker.port, "pub", true);
    publish_acked(&mut publisher, "q/2", 1, false, b"after");
    let got = drain_publishes(&mut sub, Duration::from_millis(500));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, b"after");

    // And the retained message.
    let (mut fresh, _, _) = Raw::mqtt_connect(broker.port, "fresh", true);
    fresh.subscribe(1, &[("ret/#", 1)]);
    let got = drain_publishes(&mut fresh, Duration::from_millis(500));
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_slice()),
        ("ret/a", &b"kept"[..])
    );
    stop_clean(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One QoS 1 publisher with up to 64 unacknowledged PUBLISHes, payload = [index, id];
/// returns (acknowledged ids, highest id sent) once the broker is gone.
fn spawn_loader(port: u16, index: u8) -> (Arc<Mutex<BTreeSet<u16>>>, std::thread::JoinHandle<u64>) {
    let (publisher, _, _) = Raw::mqtt_connect(port, &format!("loader-{index}"), true);
    let mut writer = publisher.stream.try_clone().unwrap();
    let mut reader = Raw {
        stream: publisher.stream,
    };
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let dead = Arc::new(AtomicBool::new(false));
    let reader_thread = {
        let (acked, dead) = (Arc::clone(&acked), Arc::clone(&dead));
        std::thread::spawn(move || {
            while let Some(p) = reader.recv() {
                if p.kind() == 4 {
                    acked.lock().unwrap().insert(p.packet_id());
                }
            }
            dead.store(true, Ordering::SeqCst);
        })
    };
    let handle = {
        let acked = Arc::clone(&acked);
        std::thread::spawn(move || {
            let sent = AtomicU64::new(0);
            for id in 1..=60_000u16 {
                while id as usize - 1 > acked.lock().unwrap().len() + 64 {
                    if dead.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                let mut payload = vec![index];
                payload.extend_from_slice(&id.to_be_bytes());
                let bytes = publish("load/x", 1, false, false, id, &payload);
                if dead.load(Ordering::SeqCst) || writer.write_all(&bytes).is_err() {
                    break;
                }
                sent.store(u64::from(id), Ordering::SeqCst);
            }
            reader_thread.join().unwrap();
            sent.load(Ordering::SeqCst)
        })
    };
    (acked, handle)
}

/// Runs three QoS 1 loaders against `config` (an offline persistent subscriber "victim"
/// on `load/#`), lets `until_crash` decide when to `kill -9` the broker, restarts it and
/// checks that every acknowledged message reaches the subscriber. Returns the restarted
/// broker.
fn kill_9_under_qos1_load(config: &str, until_crash: impl FnOnce(&BrokerProc)) -> BrokerProc {
    let broker = BrokerProc::start(config);
    let (mut sub, _, _) = Raw::mqtt_connect(broker.port, "victim", false);
    sub.subscribe(1, &[("load/#", 1)]);
    sub.disconnect();

    let loaders: Vec<_> = (0..3u8).map(|i| spawn_loader(broker.port, i)).collect();
    // Let the load run, then crash the broker in the middle of it.
    let total = || -> usize { loaders.iter().map(|l| l.0.lock().unwrap().len()).sum() };
    assert!(common::wait_until(TIMEOUT, || total() >= 3000));
    until_crash(&broker);
    crash(broker);
    let mut acked = BTreeSet::new();
    let mut sent = Vec::new();
    for (i, (ids, handle)) in loaders.into_iter().enumerate() {
        sent.push(handle.join().unwrap());
        for id in ids.lock().unwrap().iter() {
            acked.insert((i as u8, *id));
        }
    }
    eprintln!("sent {sent:?}, acknowledged {} before kill -9", acked.len());

    let broker = BrokerProc::start(config);
    let (mut sub, present, _) = Raw::mqtt_connect(broker.port, "victim", false);
    assert!(present, "persistent session lost by kill -9");
    let got = drain_publishes(&mut sub, Duration::from_millis(1500));
    let received: BTreeSet<(u8, u16)> = got
        .iter()
        .map(|g| (g.1[0], u16::from_be_bytes([g.1[1], g.1[2]])))
        .collect();
    let lost: Vec<_> = acked.difference(&received).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost after kill -9 (first: {:?}); received {}",
        lost.len(),
        &lost[..lost.len().min(10)],
        received.len()
    );
    // Nothing that was never sent; duplicates are allowed by QoS 1 but counted.
    assert!(received
        .iter()
        .all(|&(i, id)| u64::from(id) <= sent[usize::from(i)]));
    eprintln!(
        "after restart: {} delivered ({} distinct)",
        got.len(),
        received.len()
    );
    broker
}

#[test]
fn kill_9_under_qos1_load_loses_no_acknowledged_message() {
    let dir = temp_dir("persist-kill9");
    // Two shards: publishers and the subscriber's session are spread over both, so
    // messages also cross shards through the mailboxes.
    let config = format!("{}threads 2\n", persist_config(&dir, "always"));
    let broker = kill_9_under_qos1_load(&config, |_| {});
    stop_clean(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `n` retained QoS 0 messages `fill/<i>` with `size`-byte payloads, pipelined, then one
/// QoS 1 publish whose PUBACK says the broker has handled them all.
fn fill_retained(port: u16, n: usize, size: usize) {
    let (mut publisher, _, _) = Raw::mqtt_connect(port, "filler", true);
    let payload = vec![b'x'; size];
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(&publish(&format!("fill/{i}"), 0, true, false, 0, &payload));
        if batch.len() > 1 << 16 {
            publisher.send(&batch);
            batch.clear();
        }
    }
    publisher.send(&batch);
    publish_acked(&mut publisher, "fill/done", 1, false, b"");
    publisher.disconnect();
}

#[test]
fn clients_are_served_while_a_snapshot_is_written() {
    let dir = temp_dir("persist-compact-live");
    let n = 200_000;
    // One shard: the probe below is served by the shard that ran into the compaction.
    let config = format!(
        "{}threads 1\nautosave_on_changes true\nautosave_interval {n}\n",
        persist_config(&dir, "interval")
    );
    let broker = BrokerProc::start(&config);
    let (mut probe, _, _) = Raw::mqtt_connect(broker.port, "probe", true);
    probe.subscribe(1, &[("probe", 0)]);
    let (mut pinger, _, _) = Raw::mqtt_connect(broker.port, "pinger", true);
    fill_retained(broker.port, n, 64); // n changes: a compaction is due
    let tmp = dir.join("mosquitto.db.tmp");
    assert!(
        common::wait_until(TIMEOUT, || tmp.exists()),
        "no snapshot started"
    );
    // While the snapshot is being written, the shard answers.
    let started = Instant::now();
    pinger.send(&publish("probe", 0, false, false, 0, b"ping"));
    let p = probe.recv().expect("probe message");
    assert_eq!(p.publish_parts().2, b"ping");
    assert!(
        tmp.exists(),
        "the probe waited {:?}, until the snapshot was written",
        started.elapsed()
    );
    assert!(broker.wait_log("Saved persistence snapshot"));
    stop_clean(broker);
    let broker = BrokerProc::start(&config);
    assert!(broker.wait_log(&format!("Restored {n} retained messages")));
    stop_clean(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_9_during_background_compaction_loses_no_acknowledged_message() {
    let dir = temp_dir("persist-kill9-compact");
    // A compaction every 3000 changes, each writing the 20 MB of retained messages too,
    // so the kill below lands in one (with two shards, one compacting under the load).
    let config = format!(
        "{}threads 2\nautosave_on_changes true\nautosave_interval 3000\n",
        persist_config(&dir, "always")
    );
    let tmp = dir.join("mosquitto.db.tmp");
    let broker = kill_9_under_qos1_load(&config, |broker| {
        fill_retained(broker.port, 20_000, 1000);
        let saved = || {
            broker
                .log_lines()
                .iter()
                .filter(|l| l.contains("Saved persistence snapshot"))
                .count()
        };
        assert!(
            common::wait_until(TIMEOUT, || saved() >= 2),
            "no compaction"
        );
        assert!(common::wait_until(TIMEOUT, || tmp.exists()), "no snapshot");
    });
    assert!(broker.wait_log("Restored 20000 retained messages"));
    stop_clean(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three retained messages, acknowledged, then `kill -9`: they are only in the log.
fn crash_with_three_retained(dir: &Path) {
    let broker = BrokerProc::start(&persist_config(dir, "always"));
    let (mut publisher, _, _) = Raw::mqtt_connect(broker.port, "pub", true);
    for i in 1..=3u16 {
        publish_acked(&mut publisher, &format!("r/{i}"), i, true, b"payload");
    }
    crash(broker);
}

#[test]
fn torn_log_tail_is_truncated_with_a_log_line_and_good_records_kept() {
    let dir = temp_dir("persist-torn");
    crash_with_three_retained(&dir);
    let log = log_path(&dir);
    let len = std::fs::metadata(&log).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(len - 3).unwrap(); // the last record loses its last bytes
    drop(f);

    let broker = BrokerProc::start(&persist_config(&dir, "always"));
    assert!(broker.wait_log("torn tail"), "{:?}", broker.log_lines());
    let (mut sub, _, _) = Raw::mqtt_connect(broker.port, "reader", true);
    sub.subscribe(1, &[("r/#", 0)]);
    let mut topics: Vec<String> = drain_publishes(&mut sub, Duration::from_millis(500))
        .into_iter()
        .map(|g| g.0)
        .collect();
    topics.sort();
    assert_eq!(topics, ["r/1", "r/2"]);
    stop_clean(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_log_record_refuses_to_start_and_names_the_offset() {
    let dir = temp_dir("persist-corrupt");
    crash_with_three_retained(&dir);
    let log = log_path(&dir);
    let mut data = std::fs::read(&log).unwrap();
    data[16 + 12] ^= 0x55; // inside the first record's body
    std::fs::write(&log, &data).unwrap();

    let (ok, stderr) = run_expect_exit(&persist_config(&dir, "always"));
    assert!(!ok, "started over a corrupt file: {stderr}");
    assert!(
        stderr.contains("corrupt record at offset 16"),
        "no offset in: {stderr}"
    );
    assert!(stderr.contains("mv "), "no advice in: {stderr}");
    // The data is left alone for the user to decide.
    assert_eq!(std::fs::read(&log).unwrap(), data);
    let _ = std::fs::remove_dir_all(&dir);
}
