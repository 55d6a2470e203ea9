//! `$SYS` completeness against Mosquitto 2 itself: both brokers run with `sys_interval 1`,
//! `mosquitto_sub -t '$SYS/#'` collects the topics each publishes over a few intervals,
//! and every topic Mosquitto publishes must be among shardmq's (shardmq adds its
//! per-shard figures). Needs mosquitto and mosquitto_sub; otherwise SKIPPED, unless
//! SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

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
    let ours = sys_topics(&sub, broker.port);
    let missing: Vec<&String> = reference.difference(&ours).collect();
    assert!(missing.is_empty(), "shardmq lacks Mosquitto's {missing:?}");
}
