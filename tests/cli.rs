//! The `shardmq` command line and config file handling, as a Mosquitto user meets them.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{BrokerProc, V4};

fn shardmq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardmq"))
}

#[test]
fn help_documents_the_mosquitto_options() {
    let out = shardmq().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for opt in ["--config-file", "-c", "--port", "-p", "--verbose", "-v"] {
        assert!(text.contains(opt), "--help mentions {opt}: {text}");
    }
}

#[test]
fn bad_config_value_names_file_line_and_option() {
    let dir = common::temp_dir("badconf");
    let path = dir.join("bad.conf");
    std::fs::write(
        &path,
        "# comment\nlistener 0 127.0.0.1\nmax_inflight_messages lots\n",
    )
    .unwrap();
    let out = shardmq().arg("-c").arg(&path).output().unwrap();
    assert!(
        !out.status.success(),
        "a bad config must not start the broker"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.conf"), "names the file: {err}");
    assert!(err.contains('3'), "names the line: {err}");
    assert!(
        err.contains("max_inflight_messages"),
        "names the option: {err}"
    );
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = shardmq()
        .args(["-c", "/nonexistent/shardmq.conf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/shardmq.conf"));
}

#[test]
fn unsupported_option_is_a_warning_not_a_crash() {
    let broker = BrokerProc::start("log_facility 5");
    assert!(
        broker.wait_log("log_facility"),
        "warned about the unsupported option"
    );
    let c = V4::connect("works", broker.port);
    c.disconnect();
}

#[test]
fn sigterm_shuts_down_cleanly_and_removes_the_pid_file() {
    let dir = common::temp_dir("pid");
    let pid_file = dir.join("shardmq.pid");
    let mut broker = BrokerProc::start(&format!("pid_file {}", pid_file.display()));
    assert!(common::wait_until(common::TIMEOUT, || pid_file.exists()));
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, broker.pid());
    let _c = V4::connect("connected", broker.port);
    broker.signal(libc::SIGTERM);
    let status = broker.wait_exit().expect("exits after SIGTERM");
    assert!(status.success(), "clean exit: {status:?}");
    assert!(!pid_file.exists(), "pid file removed");
}

#[test]
fn sigint_shuts_down_cleanly() {
    let mut broker = BrokerProc::start("");
    broker.signal(libc::SIGINT);
    assert!(broker.wait_exit().expect("exits after SIGINT").success());
}

#[test]
fn include_dir_and_multiple_listeners() {
    let dir = common::temp_dir("incl");
    let inc = dir.join("conf.d");
    std::fs::create_dir_all(&inc).unwrap();
    std::fs::write(inc.join("10-second.conf"), "listener 0 127.0.0.1\n").unwrap();
    let broker = BrokerProc::start(&format!("include_dir {}", inc.display()));
    // Two listeners were opened; the first one serves clients.
    assert!(common::wait_until(common::TIMEOUT, || {
        broker
            .log_lines()
            .iter()
            .filter(|l| l.contains("listen socket on port"))
            .count()
            >= 2
    }));
    V4::connect("on-first", broker.port).disconnect();
}

#[test]
fn connection_messages_are_logged() {
    let broker = BrokerProc::start("connection_messages true");
    let c = V4::connect("logged-client", broker.port);
    assert!(broker.wait_log("New client connected"));
    assert!(broker.wait_log("logged-client"));
    c.disconnect();
    assert!(broker.wait_log("Client logged-client disconnected"));
}
