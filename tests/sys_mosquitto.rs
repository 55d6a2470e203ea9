//! `$SYS` completeness against Mosquitto 2 itself: both brokers run with `sys_interval 1`,
//! `mosquitto_sub -t '$SYS/#'` collects the topics each publishes over a few intervals,
//! and every topic Mosquitto publishes must be among shardmq's (shardmq adds its
//! per-shard figures). Needs mosquitto and mosquitto_sub; otherwise SKIPPED, unless
//! SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{BrokerProc, MosquittoProc};

/// The `$SYS` topics published on `port` within a few `sys_interval`s.
fn sys_topics(sub: &std::path::Path, port: u16) -> BTreeSet<String> {
    let out = Command::new(sub)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "$SYS/#", "-F", "%t", "-W", "5"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The `$SYS` topics published on `port`, collected until every topic of `wanted` was
/// seen or a generous deadline passed (a loaded host may take more than a few intervals).
fn sys_topics_covering(
    sub: &std::path::Path,
    port: u16,
    wanted: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut child = Command::new(sub)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "$SYS/#", "-F", "%t"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + common::TIMEOUT;
    let mut seen = BTreeSet::new();
    while !wanted.is_subset(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(topic) => {
                seen.insert(topic);
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    seen
}

#[test]
fn shardmq_publishes_every_sys_topic_mosquitto_2_does() {
    let Some(bin) = common::mosquitto_broker() else {
        return;
    };
    let Some(sub) = common::mosquitto_tool("mosquitto_sub") else {
        return;
    };
    let dir = common::temp_dir("sys-mosquitto");
    let mosquitto = MosquittoProc::start(&bin, &dir, "allow_anonymous true\nsys_interval 1\n");
    let reference = sys_topics(&sub, mosquitto.port);
    drop(mosquitto);
    assert!(
        reference.len() > 40,
        "Mosquitto published only {} $SYS topics: {reference:?}",
        reference.len()
    );
    let broker = BrokerProc::start("sys_interval 1");
    let ours = sys_topics_covering(&sub, broker.port, &reference);
    let missing: Vec<&String> = reference.difference(&ours).collect();
    assert!(missing.is_empty(), "shardmq lacks Mosquitto's {missing:?}");
}
