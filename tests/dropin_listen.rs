//! Listening as a Mosquitto operator expects: a port someone else holds (another
//! shardmq, Mosquitto) stops the start with "Address already in use"; `bind_interface`,
//! `socket_domain` and address-less listeners (IPv4 and IPv6) bind what Mosquitto binds;
//! each accepted connection is logged as Mosquitto logs it.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::tls::refused_start;
use common::{BrokerProc, V4};

/// Waits until the broker logged that it runs (every listener bound).
fn running(b: &BrokerProc) {
    assert!(b.wait_log(concat!(
        "shardmq version ",
        env!("CARGO_PKG_VERSION"),
        " running"
    )));
}

fn reachable(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port))
}

/// Whether this host can listen on ::1 (CI containers may have no IPv6).
fn have_ipv6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// The local IPv4 addresses that are not loopback (from the kernel's interface list).
fn other_local_ipv4() -> Vec<IpAddr> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let cidr = l.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
            cidr.split('/').next()?.parse::<IpAddr>().ok()
        })
        .filter(|ip| !ip.is_loopback())
        .collect()
}

#[test]
fn a_second_shardmq_on_the_same_port_refuses_to_start() {
    let first = BrokerProc::start("");
    let err = refused_start(&format!(
        "listener {} 127.0.0.1\nallow_anonymous true\n",
        first.port
    ));
    let line = err
        .lines()
        .find(|l| l.contains("Error"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("Error: Address already in use (listener"),
        "Mosquitto's message: {err}"
    );
    // The first broker still gets every connection.
    V4::connect("still-served", first.port).disconnect();
}

#[test]
fn a_port_mosquitto_holds_stops_the_start() {
    let Some(mosquitto) = common::mosquitto_broker() else {
        return;
    };
    let dir = common::temp_dir("mosq-port");
    let m = common::MosquittoProc::start(&mosquitto, &dir, "");
    let port = m.port;
    let err = refused_start(&format!("listener {port} 127.0.0.1\n"));
    drop(m);
    assert!(
        err.contains("Error: Address already in use (listener"),
        "{err}"
    );
}

#[test]
fn a_listener_without_address_serves_ipv4_and_ipv6() {
    let b = BrokerProc::start("listener 0");
    running(&b);
    let port = common::tls::listener_port(&b, 1);
    assert!(reachable(v4(port)));
    if have_ipv6() {
        assert!(reachable(v6(port)), "as Mosquitto, [::]:{port} too");
    }
}

#[test]
fn socket_domain_keeps_one_family() {
    if !have_ipv6() {
        eprintln!("SKIPPED: no IPv6 on this host");
        return;
    }
    let b = BrokerProc::start("listener 0\nsocket_domain ipv6");
    running(&b);
    let port = common::tls::listener_port(&b, 1);
    assert!(reachable(v6(port)));
    assert!(!reachable(v4(port)), "socket_domain ipv6: no IPv4 socket");
    let b = BrokerProc::start("listener 0 localhost\nsocket_domain ipv4");
    running(&b);
    let port = common::tls::listener_port(&b, 1);
    assert!(reachable(v4(port)));
    assert!(!reachable(v6(port)), "socket_domain ipv4: no IPv6 socket");
}

#[test]
fn bind_interface_listens_only_on_that_interface() {
    let b = BrokerProc::start("listener 0\nbind_interface lo");
    running(&b);
    let port = common::tls::listener_port(&b, 1);
    assert!(reachable(v4(port)), "reachable on lo's 127.0.0.1");
    let others = other_local_ipv4();
    if others.is_empty() {
        eprintln!("SKIPPED (part): no non-loopback address to check against");
    }
    for ip in others {
        assert!(
            !reachable(SocketAddr::new(ip, port)),
            "bind_interface lo must not listen on {ip}"
        );
    }
    // The device is bound too: the kernel shows the socket as bound to lo.
    if let Ok(out) = Command::new("ss").args(["-H", "-ltn"]).output() {
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let ours: Vec<&str> = table
            .lines()
            .filter(|l| l.contains(&format!(":{port} ")))
            .collect();
        assert!(!ours.is_empty(), "{table}");
        assert!(ours.iter().all(|l| l.contains("%lo:")), "{ours:?}");
    }
}

#[test]
fn an_unknown_interface_stops_the_start() {
    let err = refused_start("listener 0\nbind_interface nosuchif7\n");
    assert!(
        err.contains("bind_interface nosuchif7: there is no network interface"),
        "{err}"
    );
    assert!(err.contains("c.conf line 1"), "names the listener: {err}");
}

#[test]
fn each_connection_is_logged_before_the_client() {
    let b = BrokerProc::start("connection_messages true");
    let c = V4::connect("logged", b.port);
    assert!(b.wait_log("New client connected"));
    c.disconnect();
    let lines = b.log_lines();
    let new_conn = lines.iter().position(|l| {
        l.contains("New connection from 127.0.0.1:") && l.ends_with(&format!("on port {}.", b.port))
    });
    let client = lines.iter().position(|l| l.contains("as logged"));
    assert!(
        matches!((new_conn, client), (Some(a), Some(b)) if a < b),
        "{lines:#?}"
    );
}
