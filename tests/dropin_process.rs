//! The process as a Mosquitto operator runs it: `user` (privileges dropped after the
//! listeners are bound, files written as that user), `-d` (a daemon that writes its pid
//! file), `shardmq passwd` fed on standard input, and `--test-config` reporting every
//! problem of every file.
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::tls::refused_start;
use common::{BrokerProc, V4};

fn shardmq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardmq"))
}

fn running(b: &BrokerProc) {
    assert!(b.wait_log(concat!(
        "shardmq version ",
        env!("CARGO_PKG_VERSION"),
        " running"
    )));
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of `name` (from the password database).
fn account(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).unwrap();
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null, points at a valid passwd.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown(path: &Path, uid: u32, gid: u32) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated path.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), uid, gid) }, 0);
}

/// The `Uid:` or `Gid:` line of a /proc status file as numbers (real, effective, saved,
/// filesystem).
fn ids(status: &str, key: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

#[test]
fn user_drops_privileges_after_binding_and_writes_as_that_user() {
    if !is_root() {
        eprintln!("SKIPPED: not running as root");
        return;
    }
    let (uid, gid) = account("nobody").expect("a nobody account");
    let dir = common::temp_dir("user");
    let run = dir.join("run");
    let data = dir.join("data");
    for d in [&run, &data] {
        std::fs::create_dir_all(d).unwrap();
        chown(d, uid, gid);
    }
    let pid_file = run.join("shardmq.pid");
    // Port 0 is fine here; the point is that binding happens before the switch.
    let b = BrokerProc::start(&format!(
        "user nobody\npid_file {}\npersistence true\npersistence_location {}/",
        pid_file.display(),
        data.display()
    ));
    running(&b);
    assert!(b.wait_log("Dropped privileges to user nobody"));
    // Every thread runs as nobody, without root's groups, and cannot become root again.
    for task in std::fs::read_dir(format!("/proc/{}/task", b.pid())).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert_eq!(ids(&status, "Uid:"), [uid; 4], "{status}");
        assert_eq!(ids(&status, "Gid:"), [gid; 4], "{status}");
        let groups: Vec<&str> = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert!(!groups.contains(&"0"), "no root group: {groups:?}");
    }
    // pid_file written by the broker as nobody (Mosquitto 2 writes it after the switch).
    let meta = std::fs::metadata(&pid_file).unwrap();
    assert_eq!(meta.uid(), uid);
    let written: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(written, b.pid());
    // The persistence files are nobody's: the user must read and write them, as
    // Mosquitto documents.
    let c = V4::connect("as-nobody", b.port);
    c.publish("kept", rumqttc::QoS::AtLeastOnce, true, "r");
    c.disconnect();
    let mut b = b;
    b.signal(libc::SIGTERM);
    assert!(b.wait_exit().expect("exits").success());
    assert!(!pid_file.exists(), "removed at exit");
    let snapshot = data.join("mosquitto.db");
    assert_eq!(std::fs::metadata(&snapshot).unwrap().uid(), uid);
}

#[test]
fn files_the_user_cannot_write_stop_the_start() {
    if !is_root() || account("nobody").is_none() {
        eprintln!("SKIPPED: not running as root, or no nobody account");
        return;
    }
    // Root's directory, mode 0755: nobody may not write there.
    let dir = common::temp_dir("user-denied");
    let err = refused_start(&format!(
        "listener 0 127.0.0.1\nuser nobody\npid_file {}/shardmq.pid\n",
        dir.display()
    ));
    assert!(err.contains("Unable to write pid file"), "{err}");
    let err = refused_start(&format!(
        "listener 0 127.0.0.1\nuser nobody\npersistence true\npersistence_location {}/data/\n",
        dir.display()
    ));
    assert!(
        err.contains("Permission denied") && err.contains("data"),
        "{err}"
    );
}

#[test]
fn an_unknown_user_stops_the_start() {
    let err = refused_start("listener 0 127.0.0.1\nuser nosuchuser9\n");
    if is_root() {
        assert!(
            err.contains("Error: Unable to drop privileges to 'nosuchuser9' because this user does not exist."),
            "{err}"
        );
    }
}

/// Kills a daemon at the end of a test, whatever happened.
struct Daemon(u32);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of the daemon this test started.
        unsafe {
            libc::kill(i32::try_from(self.0).unwrap(), libc::SIGKILL);
        }
    }
}

fn session_id(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // pid (comm) state ppid pgrp session ...
    let after = stat.rsplit_once(')').unwrap().1;
    after.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn daemon_mode_forks_and_the_daemon_writes_its_pid_file() {
    let dir = common::temp_dir("daemon");
    let pid_file = dir.join("shardmq.pid");
    let log = dir.join("shardmq.log");
    let conf = dir.join("d.conf");
    std::fs::write(
        &conf,
        format!(
            "listener 0 127.0.0.1\nallow_anonymous true\nuser root\nlog_dest file {}\npid_file {}\n",
            log.display(),
            pid_file.display()
        ),
    )
    .unwrap();
    let out = shardmq().arg("-d").arg("-c").arg(&conf).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _guard = Daemon(pid);
    // The daemon is a session leader of its own, with its standard streams on /dev/null.
    assert_eq!(session_id(pid), pid);
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(target, PathBuf::from("/dev/null"));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let port: u16 = text
        .lines()
        .find_map(|l| l.split("listen socket on port ").nth(1))
        .unwrap()
        .trim_end_matches('.')
        .parse()
        .unwrap();
    V4::connect("to-the-daemon", port).disconnect();
    // SAFETY: plain kill(2) of the daemon this test started.
    unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGTERM) };
    assert!(common::wait_until(common::TIMEOUT, || !Path::new(
        &format!("/proc/{pid}")
    )
    .exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.contains(") Z"))));
    assert!(
        common::wait_until(common::TIMEOUT, || !pid_file.exists()),
        "pid file removed"
    );
}

#[test]
fn a_daemon_that_cannot_start_says_why_and_fails() {
    let out = shardmq()
        .args(["-d", "-c"])
        .arg({
            let dir = common::temp_dir("daemon-fail");
            let conf = dir.join("d.conf");
            std::fs::write(
                &conf,
                "listener 0 127.0.0.1\nuser root\npid_file /nonexistent-dir/shardmq.pid\n",
            )
            .unwrap();
            conf
        })
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unable to write pid file"), "{err}");
}

fn passwd(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = shardmq()
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn passwd_reads_the_password_from_standard_input() {
    let dir = common::temp_dir("passwd-stdin");
    let file = dir.join("pw");
    let f = file.to_str().unwrap();
    let out = passwd(&["-c", f, "alice"], "secret\nsecret\n");
    assert!(out.status.success(), "{out:?}");
    let out = passwd(&[f, "bob"], "one\ntwo\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Passwords do not match"));
    let out = passwd(&[f, "bob"], "only-once\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Empty password"),
        "{out:?}"
    );
    // The broker accepts alice with the password given on standard input.
    let b = BrokerProc::start(&format!("allow_anonymous false\npassword_file {f}"));
    let mut o = common::v4_options("alice-client", b.port);
    o.set_credentials("alice", "secret");
    // connect_with asserts a successful CONNACK.
    V4::connect_with(o).disconnect();
}

#[test]
fn passwd_help_shows_the_real_usage() {
    let out = shardmq().args(["passwd", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "Usage: shardmq passwd [-H sha512 | -H sha512-pbkdf2 | -H scram-sha-256] [-c | -D] passwordfile username"
        ),
        "{text}"
    );
    assert!(text.contains(" -b : run in batch mode"), "{text}");
}

#[test]
fn test_config_opens_every_file_and_reports_every_problem() {
    let dir = common::temp_dir("test-config");
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic reed sensors/#\n").unwrap();
    let not_a_dir = dir.join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let conf = dir.join("t.conf");
    std::fs::write(
        &conf,
        format!(
            "listener 0 127.0.0.1\npassword_file {d}/missing-pw\nacl_file {acl}\n\
             listener 0 127.0.0.1\ncertfile {d}/missing.crt\nkeyfile {d}/missing.key\n\
             listener 0\nbind_interface nosuchif7\n\
             persistence true\npersistence_location {file}/db/\nuser nosuchuser9\n",
            d = dir.display(),
            acl = acl.display(),
            file = not_a_dir.display()
        ),
    )
    .unwrap();
    let test_config = || {
        shardmq()
            .arg("--test-config")
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap()
    };
    let out = test_config();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "missing-pw",
        "\"reed\"",
        "missing.crt",
        "nosuchif7",
        "not a directory",
        "nosuchuser9",
    ] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
    // A clean config passes.
    std::fs::write(&conf, "listener 0 127.0.0.1\n").unwrap();
    let out = test_config();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Configuration OK"));
}
