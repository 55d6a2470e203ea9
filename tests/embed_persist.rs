//! The embedding API with persistence: a host process whose `publish_routed` returned is
//! `kill -9`ed at once; restarted on the same persistence directory, its retained message
//! and the copies queued for an offline persistent session are there (rumqttc reads them).
//!
//! The host process is this test binary run again with `SHARDMQ_TEST_HOST` set: the
//! ignored test `embedded_host_process` starts a broker in-process and talks to the
//! parent through stdin/stdout (`HOST-PORT n`, `go`, `HOST-ROUTED n`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::{temp_dir, v4_options, V4};
use shardmq::{Broker, Config, Outgoing, QoS};

/// Messages published to the offline session's filter (on topics spread over the shards).
const QUEUED: usize = 20;

/// The host: `SHARDMQ_TEST_HOST=publish|serve`, `SHARDMQ_TEST_DIR` the persistence dir.
/// `publish` waits for `go` on stdin, publishes the retained message and the queued ones
/// with `publish_routed`, prints how many matched and kills itself with SIGKILL right
/// after the last one returned. `serve` runs until stdin closes.
#[test]
#[ignore = "run by the tests below as a child process"]
fn embedded_host_process() {
    let (Ok(mode), Ok(dir)) = (
        std::env::var("SHARDMQ_TEST_HOST"),
        std::env::var("SHARDMQ_TEST_DIR"),
    ) else {
        return;
    };
    let text = format!(
        "listener 0 127.0.0.1\nallow_anonymous true\nthreads 2\npersistence true\npersistence_location {dir}/\n"
    );
    let config = Config::parse_str(&text, Path::new("host.conf")).unwrap();
    let broker = Broker::builder(config).start().unwrap();
    println!("HOST-PORT {}", broker.port());
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    if mode == "publish" && line.trim() == "go" {
        let wait = Duration::from_secs(20);
        let retained = Outgoing::new("state/boiler", "71.5")
            .qos(QoS::AtLeastOnce)
            .retain(true);
        broker.publish_routed(retained, wait).unwrap();
        let mut matched = 0;
        for i in 0..QUEUED {
            let m = Outgoing::new(format!("cmd/dev-1/{i}"), format!("reboot {i}"))
                .qos(QoS::AtLeastOnce);
            matched += usize::from(broker.publish_routed(m, wait).unwrap());
        }
        println!("HOST-ROUTED {matched}");
        // SAFETY: raise only sends a signal to this process.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    broker.stop();
}

struct Host {
    child: Child,
    out: BufReader<ChildStdout>,
    port: u16,
}

impl Host {
    fn start(mode: &str, dir: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "embedded_host_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("SHARDMQ_TEST_HOST", mode)
            .env("SHARDMQ_TEST_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let port = read_value(&mut out, "HOST-PORT ").parse().unwrap();
        Self { child, out, port }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's stdout until a line starting with `prefix`; the rest of it.
fn read_value(out: &mut impl BufRead, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the host process ended before printing {prefix}"
        );
        if let Some(v) = line.trim_end().strip_prefix(prefix) {
            return v.to_owned();
        }
    }
}

fn persistent(id: &str, port: u16) -> V4 {
    let mut o = v4_options(id, port);
    o.set_clean_session(false);
    V4::connect_with(o)
}

#[test]
fn publish_routed_survives_kill_9_of_the_host_right_after_it_returned() {
    let dir = temp_dir("embed-persist");
    let mut host = Host::start("publish", &dir);
    // An offline persistent session subscribed to cmd/#.
    let dev = persistent("dev-1", host.port);
    dev.subscribe("cmd/#", rumqttc::QoS::AtLeastOnce);
    dev.disconnect();

    host.send("go");
    let matched: usize = read_value(&mut host.out, "HOST-ROUTED ").parse().unwrap();
    assert_eq!(matched, QUEUED, "every message matched the offline session");
    let status = host.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    drop(host);

    let host = Host::start("serve", &dir);
    let dev = persistent("dev-1", host.port);
    let got: BTreeSet<(String, String)> = (0..QUEUED)
        .map(|_| {
            let p = dev
                .next_publish()
                .expect("a queued message after the restart");
            let body = String::from_utf8(p.payload.to_vec()).unwrap();
            (p.topic, body)
        })
        .collect();
    let want: BTreeSet<(String, String)> = (0..QUEUED)
        .map(|i| (format!("cmd/dev-1/{i}"), format!("reboot {i}")))
        .collect();
    assert_eq!(got, want);

    let reader = V4::connect("reader", host.port);
    reader.subscribe("state/#", rumqttc::QoS::AtLeastOnce);
    let p = reader
        .next_publish()
        .expect("the retained message after the restart");
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("state/boiler", &b"71.5"[..])
    );
    assert!(p.retain);
    let _ = std::fs::remove_dir_all(&dir);
}
