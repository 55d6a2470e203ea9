//! Listener binding against the real kernel: exclusivity, addresses, socket options.

use std::net::TcpStream;
use std::os::fd::AsRawFd;

use super::*;

fn listener(port: u16, addr: Option<&str>) -> Listener {
    Listener::new(port, addr.map(str::to_string))
}

#[test]
fn every_shard_gets_a_socket_per_address() {
    let b = bind_listener(0, &listener(0, Some("127.0.0.1")), 3, true).unwrap();
    assert_eq!(b.per_shard.len(), 3);
    assert!(b.per_shard.iter().all(|s| s.len() == 1));
    assert!(b.per_shard.iter().flatten().all(|s| s.addr == b.addr));
    assert_ne!(b.addr.port(), 0);
}

#[test]
fn a_port_held_by_another_broker_is_address_already_in_use() {
    let first = bind_listener(0, &listener(0, Some("127.0.0.1")), 2, true).unwrap();
    let second = listener(first.addr.port(), Some("127.0.0.1"));
    let e = bind_listener(0, &second, 2, true).err().unwrap();
    assert!(e.to_string().starts_with("Address already in use"), "{e}");
    // A plain (non-SO_REUSEPORT) holder too, and on the wildcard address.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = plain.local_addr().unwrap().port();
    let e = bind_listener(0, &listener(port, None), 1, true)
        .err()
        .unwrap();
    assert_eq!(e.kind, io::ErrorKind::AddrInUse, "{e}");
}

#[test]
fn a_listener_without_address_listens_on_ipv4_and_ipv6() {
    let b = bind_listener(0, &listener(0, None), 1, true).unwrap();
    let addrs: Vec<SocketAddr> = b.per_shard[0].iter().map(|s| s.addr).collect();
    assert!(
        addrs[0].is_ipv4() && addrs[0].ip().is_unspecified(),
        "{addrs:?}"
    );
    if addrs.len() == 2 {
        assert!(
            addrs[1].is_ipv6() && addrs[1].port() == addrs[0].port(),
            "{addrs:?}"
        );
    }
    let mut v6 = listener(0, None);
    v6.socket_domain = Some(SocketDomain::Ipv6);
    if let Ok(b) = bind_listener(0, &v6, 1, true) {
        assert!(b.per_shard[0].iter().all(|s| s.addr.is_ipv6()));
    }
    let mut v4 = listener(0, Some("localhost"));
    v4.socket_domain = Some(SocketDomain::Ipv4);
    let b = bind_listener(0, &v4, 1, true).unwrap();
    assert!(b.per_shard[0].iter().all(|s| s.addr.is_ipv4()));
}

#[test]
fn accepted_connections_inherit_tcp_nodelay() {
    for nodelay in [true, false] {
        let b = bind_listener(0, &listener(0, Some("127.0.0.1")), 1, nodelay).unwrap();
        let _client = TcpStream::connect(b.addr).unwrap();
        let bound = &b.per_shard[0][0];
        let (stream, _) = loop {
            match bound.socket.accept() {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let on = socket::get_int(stream.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY).unwrap();
        assert_eq!(on != 0, nodelay);
    }
}

#[test]
fn bind_interface_binds_the_interface_addresses_and_the_device() {
    let mut l = listener(0, None);
    l.bind_interface = Some("lo".into());
    let b = bind_listener(0, &l, 2, true).unwrap();
    for s in b.per_shard.iter().flatten() {
        assert!(s.addr.ip().is_loopback(), "{}", s.addr);
        assert_eq!(socket::bound_device(s.socket.as_raw_fd()).unwrap(), "lo");
    }
    assert!(TcpStream::connect(("127.0.0.1", b.addr.port())).is_ok());
    // An address that is not lo's is refused, as is an interface that does not exist.
    l.bind_address = Some("0.0.0.0".into());
    let e = bind_listener(0, &l, 1, true).err().unwrap().to_string();
    assert!(e.contains("is not an address of interface lo"), "{e}");
    l.bind_address = None;
    l.bind_interface = Some("nosuchif0".into());
    let e = bind_listener(0, &l, 1, true).err().unwrap().to_string();
    assert!(
        e.contains("no network interface") && e.contains("nosuchif0"),
        "{e}"
    );
}

#[test]
fn unix_socket_listeners_are_refused() {
    let e = bind_listener(0, &listener(0, Some("/run/m.sock")), 1, true)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unix socket"), "{e}");
}
