//! Session and broker packet sequences: drives the sans-IO `Broker` (with an ACL and a
//! password file in force) through its driver contract with fuzzed bytes from up to four
//! connections, a virtual clock, stalled and draining sockets, and abrupt closes. No
//! input may panic.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardmq::internals::auth::{Acl, Domain, Security};
use shardmq::internals::broker::Broker;
use shardmq::Config;

const ACL: &str = "topic read $SYS/#\ntopic readwrite a/#\nuser u\ntopic deny a/secret/#\n\
                   topic readwrite #\npattern readwrite c/%c/#\n";

fuzz_target!(|data: &[u8]| {
    let config = Arc::new(Config {
        max_queued_bytes: 4096,
        max_packet_size: 8192,
        message_size_limit: 1024,
        max_inflight_messages: 4,
        max_queued_messages: 8,
        slow_subscriber_timeout: Duration::from_secs(5),
        ..Config::default()
    });
    let mut now = Instant::now();
    let mut broker = Broker::new(Arc::clone(&config), now);
    if data.first().is_some_and(|b| b & 1 == 1) {
        let acl = Acl::parse(ACL, std::path::Path::new("acl")).expect("static ACL parses");
        broker.set_security(Arc::new(Security::with_domain(Domain {
            allow_anonymous: true,
            passwords: None,
            acl: Some(acl),
        })));
    }
    let peer: SocketAddr = "127.0.0.1:1".parse().expect("static address");
    let mut open = [false; 4];
    let mut bufs: [BytesMut; 4] = Default::default();
    let mut input = data.get(1..).unwrap_or_default();
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        let conn = usize::from(op >> 4) & 3;
        match op & 7 {
            0..=3 => {
                let len = usize::from(input.first().copied().unwrap_or(0));
                let take = len.min(input.len().saturating_sub(1));
                let chunk = input.get(1..1 + take).unwrap_or_default();
                input = input.get(1 + take..).unwrap_or_default();
                if !open[conn] {
                    broker.on_accept(conn, peer, 0, now);
                    open[conn] = true;
                    bufs[conn].clear();
                }
                bufs[conn].extend_from_slice(chunk);
                broker.on_read(conn, &mut bufs[conn], now);
            }
            4 | 5 => {
                now += Duration::from_millis(u64::from(op >> 3) * 250);
                broker.on_timeout(now);
            }
            6 => {
                if open[conn] {
                    broker.on_closed(conn, now);
                    open[conn] = false;
                }
            }
            _ => {}
        }
        // Sockets of even connections drain; odd ones stall unless op bit 3 is set.
        let drain_all = op & 8 != 0;
        while let Some(c) = broker.poll_transmit() {
            if c % 2 == 0 || drain_all {
                if let Some(out) = broker.output(c) {
                    let n = out.len();
                    out.consume(n);
                }
                broker.on_writable(c, now);
            }
            let _ = broker.wants_read(c, 0);
        }
        while let Some(c) = broker.poll_close() {
            if let Some(out) = broker.output(c) {
                out.clear();
            }
            if let Some(o) = open.get_mut(c) {
                *o = false;
            }
        }
        let _ = broker.poll_timeout();
    }
});
