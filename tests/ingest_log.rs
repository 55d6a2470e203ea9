//! The log callback (`shardmq::log::set_callback`): an embedding host receives the
//! broker's log lines (here: a client connecting) instead of stderr. Its own test binary:
//! the callback is process-wide.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{TIMEOUT, V4};
use shardmq::log::Level;
use shardmq::{Broker, Config};

#[test]
fn log_lines_go_to_the_host_callback() {
    let lines = Arc::new(Mutex::new(Vec::<(Level, String)>::new()));
    let sink = Arc::clone(&lines);
    shardmq::log::set_callback(move |level, line| {
        sink.lock().unwrap().push((level, line.to_owned()));
    });
    let broker = Broker::builder(Config::with_listener("127.0.0.1:0".parse().unwrap()))
        .start()
        .unwrap();
    let client = V4::connect("logged-client", broker.port());
    let seen = |needle: &str| {
        let lines = lines.lock().unwrap();
        lines.iter().any(|(_, l)| l.contains(needle))
    };
    assert!(common::wait_until(TIMEOUT, || seen("as logged-client")));
    let lines_now = lines.lock().unwrap().clone();
    let (level, line) = lines_now
        .iter()
        .find(|(_, l)| l.contains("as logged-client"))
        .unwrap();
    assert_eq!(*level, Level::Information);
    assert!(
        line.starts_with("New client connected from 127.0.0.1:"),
        "{line}"
    );
    drop(client);
    shardmq::log::clear_callback();
}
