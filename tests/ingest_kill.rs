//! The ingestion example (`examples/ingest.rs`: `telemetry/#` appended to a file with an
//! fsync before each acknowledgement) killed with SIGKILL while a device publishes at
//! QoS 1: every message the device got a PUBACK for is in the file.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Raw, TIMEOUT};

/// The example's executable: `cargo test` builds the examples next to the test
/// binaries; `cargo test --test ingest_kill` does not, so then it is built here.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join("examples").join("ingest");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "ingest"])
            .status()
            .unwrap();
        assert!(status.success(), "cargo build --example ingest");
    }
    path
}

struct Service {
    child: Child,
    port: u16,
}

fn spawn(out: &std::path::Path) -> Service {
    let mut child = Command::new(example())
        .arg(out)
        .arg("0")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the ingest example runs (cargo test builds it)");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    Service { child, port }
}

#[test]
fn kill_9_after_puback_loses_nothing_acknowledged() {
    let dir = common::temp_dir("ingest-kill");
    let out = dir.join("telemetry.log");
    let mut service = spawn(&out);
    let (raw, _, rc) = Raw::mqtt_connect(service.port, "device-1", true);
    assert_eq!(rc, 0);
    let reader = raw.stream.try_clone().unwrap();
    let mut writer = raw.stream;
    // The device pipelines its messages; a reader thread records each PUBACK.
    let acked = Arc::new(Mutex::new(Vec::<u16>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let (acked2, count2) = (Arc::clone(&acked), Arc::clone(&count));
    let reader_thread = std::thread::spawn(move || {
        let mut r = Raw {
            stream: reader.try_clone().unwrap(),
        };
        reader.set_read_timeout(Some(TIMEOUT)).unwrap();
        while let Some(p) = r.recv() {
            if p.first == 0x40 {
                acked2.lock().unwrap().push(p.packet_id());
                count2.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let writer_thread = std::thread::spawn(move || {
        for id in 1..=2000u16 {
            let payload = format!("reading-{id}");
            let frame =
                common::publish("telemetry/boiler", 1, false, false, id, payload.as_bytes());
            if std::io::Write::write_all(&mut writer, &frame).is_err() {
                return; // the service is gone
            }
        }
    });
    // Kill in the middle of the stream, once some messages were acknowledged.
    assert!(
        common::wait_until(TIMEOUT, || count.load(Ordering::SeqCst) >= 100),
        "no PUBACKs from the ingest example"
    );
    service.child.kill().unwrap(); // SIGKILL
    service.child.wait().unwrap();
    reader_thread.join().unwrap();
    writer_thread.join().unwrap();

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100);
    let stored: HashSet<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter_map(|l| l.rsplit('\t').next().map(str::to_owned))
        .collect();
    let lost: Vec<u16> = acked
        .iter()
        .copied()
        .filter(|id| !stored.contains(&format!("reading-{id}")))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    // Acknowledged in order, each once.
    assert!(acked.windows(2).all(|w| w[0] < w[1]), "{acked:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
