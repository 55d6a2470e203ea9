//! Running under systemd with `Type=notify` and `WatchdogSec=`: the test plays systemd's
//! part (a datagram socket in `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` set) and checks that
//! the broker says `READY=1` with its MAINPID once it serves, `WATCHDOG=1` regularly
//! while its shards answer, `RELOADING=1` then `READY=1` around SIGHUP and `STOPPING=1`
//! on SIGTERM. Also checks packaging/shardmq.service names what the broker needs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn next(socket: &UnixDatagram, deadline: Instant) -> Option<String> {
    let left = deadline.saturating_duration_since(Instant::now());
    socket
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Waits for a datagram containing `needle`, returning it.
fn wait_for(socket: &UnixDatagram, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(msg) = next(socket, deadline) {
        if msg.contains(needle) {
            return msg;
        }
    }
    panic!("no notification with {needle:?}");
}

#[test]
fn ready_watchdog_reload_and_stopping_are_notified() {
    let dir = common::temp_dir("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let conf = dir.join("shardmq.conf");
    std::fs::write(&conf, "listener 0 127.0.0.1\nallow_anonymous true\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .arg("-c")
        .arg(&conf)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = wait_for(&socket, "READY=1");
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "{ready}"
    );
    for _ in 0..3 {
        wait_for(&socket, "WATCHDOG=1");
    }
    let pid = child.id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for(&socket, "RELOADING=1");
    wait_for(&socket, "READY=1");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_for(&socket, "STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "shardmq did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_systemd_unit_uses_notify_watchdog_and_hardening() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/shardmq.service"
    ))
    .unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "NotifyAccess=main",
        "LimitNOFILE=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecStart=/usr/local/bin/shardmq -c /etc/shardmq/shardmq.conf",
    ] {
        assert!(
            unit.contains(line),
            "packaging/shardmq.service lacks {line:?}"
        );
    }
}
