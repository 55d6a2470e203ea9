//! Listening is exclusive: a port that anyone else holds stops the start with Mosquitto's
//! "Address already in use", even when the other holder is a second shardmq whose
//! shard sockets, like ours, use SO_REUSEPORT (the kernel would otherwise split new
//! connections between the two brokers, whatever their configurations).
//!
//! SO_REUSEPORT only lets a socket join a port whose every socket has SO_REUSEPORT and
//! the same owner, so the check is done by the kernel in two steps:
//! 1. [`probe`] binds the address with a socket *without* SO_REUSEPORT and closes it.
//!    Any socket on the port (Mosquitto, another shardmq, anything) makes that bind fail
//!    with EADDRINUSE. Port 0 skips the probe: the kernel never hands out a port that a
//!    socket already holds.
//! 2. The shard sockets are bound with SO_REUSEPORT and listen. Between the probe and
//!    those binds another shardmq could have joined, so [`verify`] then asks the kernel
//!    for its listening sockets (netlink `sock_diag`, see [`super::sock_diag`]; the
//!    `/proc/net/tcp` tables where that is not available; both show this network
//!    namespace) and refuses when a listening socket on the port with an overlapping
//!    address is not one of ours (by inode). Of two brokers started at the same instant,
//!    both see the other and both refuse; never do both run.
//!
//! [`parse_listeners`] is sans-IO (the text of a table in, sockets out) and never
//! panics on any input.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::socket::{self, SocketOptions};

/// A listening socket as the kernel's table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListeningSocket {
    pub addr: SocketAddr,
    pub inode: u64,
}

/// TCP_LISTEN in the `st` column.
const LISTEN: &str = "0A";

/// Binds `addr` once without SO_REUSEPORT: fails with EADDRINUSE if any socket holds it.
pub fn probe(addr: SocketAddr, device: Option<&str>) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let opts = SocketOptions {
        reuse_port: false,
        device: device.map(str::to_string),
        nodelay: false,
    };
    socket::bound(addr, &opts).map(drop)
}

/// After our sockets listen on `addr`: `Err(AddrInUse)` if a listening socket that is
/// not one of `ours` (inodes) shares the port and an address with it.
pub fn verify(addr: SocketAddr, ours: &[u64]) -> io::Result<()> {
    let listening = match super::sock_diag::listening(addr.is_ipv6()) {
        Ok(l) => l,
        Err(_) => {
            let table = if addr.is_ipv4() {
                "/proc/net/tcp"
            } else {
                "/proc/net/tcp6"
            };
            match std::fs::read_to_string(table) {
                Ok(text) => parse_listeners(&text, addr.is_ipv6()),
                // Neither (a minimal sandbox): the probe stays the only check.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    };
    let stranger = listening
        .into_iter()
        .find(|s| overlaps(s.addr, addr) && !ours.contains(&s.inode));
    match stranger {
        Some(s) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "Address already in use (another process listens on {} too)",
                s.addr
            ),
        )),
        None => Ok(()),
    }
}

/// Same port, and the same address or a wildcard on either side.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The listening sockets of a `/proc/net/tcp` (or `tcp6` when `v6`) table.
pub fn parse_listeners(text: &str, v6: bool) -> Vec<ListeningSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
            if cols.get(3) != Some(&LISTEN) {
                return None;
            }
            let (ip, port) = cols.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = if v6 { parse_v6(ip)? } else { parse_v4(ip)? };
            let inode = cols.get(9)?.parse().ok()?;
            Some(ListeningSocket {
                addr: SocketAddr::new(ip, port),
                inode,
            })
        })
        .collect()
}

/// The kernel prints the address as the 32-bit word in memory, in host byte order.
fn parse_v4(hex: &str) -> Option<IpAddr> {
    if hex.len() != 8 {
        return None;
    }
    let word = u32::from_str_radix(hex, 16).ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes())))
}

fn parse_v6(hex: &str) -> Option<IpAddr> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut octets = [0u8; 16];
    for (i, chunk) in octets.chunks_exact_mut(4).enumerate() {
        let word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    Some(IpAddr::V6(Ipv6Addr::from(octets)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:075B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0
   2: 0100007F:075B 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:075B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn parses_listening_sockets_only() {
        let l = parse_listeners(TCP, false);
        assert_eq!(l.len(), 2);
        if cfg!(target_endian = "little") {
            assert_eq!(l[0].addr, "127.0.0.1:1883".parse().unwrap());
            assert_eq!(l[1].addr, "0.0.0.0:8888".parse().unwrap());
            let l6 = parse_listeners(TCP6, true);
            assert_eq!(l6[0].addr, "[::1]:1883".parse().unwrap());
            assert_eq!(l6[0].inode, 5151);
        }
        assert_eq!(l[0].inode, 4242);
    }

    #[test]
    fn garbage_never_panics() {
        for t in [
            "",
            "\n",
            "h\n0: x",
            "h\n0: 0100007F:zz 0 0A 0 0 0 0 0 x",
            "h\n0: é:1 0 0A",
        ] {
            let _ = parse_listeners(t, false);
            let _ = parse_listeners(t, true);
        }
        assert!(parse_v6("é0000000000000000000000000000000").is_none());
    }

    #[test]
    fn overlap_is_same_port_and_same_or_wildcard_address() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("0.0.0.0:1"), a("127.0.0.1:1")));
        assert!(overlaps(a("127.0.0.1:1"), a("127.0.0.1:1")));
        assert!(!overlaps(a("127.0.0.2:1"), a("127.0.0.1:1")));
        assert!(!overlaps(a("127.0.0.1:2"), a("127.0.0.1:1")));
    }

    /// A SO_REUSEPORT socket of another "broker" on our port is found by `verify`
    /// (SO_REUSEPORT let it join) and refused by `probe`.
    #[test]
    fn a_second_reuseport_listener_is_detected() {
        let opts = SocketOptions {
            reuse_port: true,
            ..SocketOptions::default()
        };
        let first =
            socket::listen(socket::bound("127.0.0.1:0".parse().unwrap(), &opts).unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let mine = socket::inode(std::os::fd::AsRawFd::as_raw_fd(&first)).unwrap();
        verify(addr, &[mine]).unwrap();
        // The kernel lets a second SO_REUSEPORT socket of the same user join...
        let second = socket::listen(socket::bound(addr, &opts).unwrap()).unwrap();
        // ... so the probe (no SO_REUSEPORT) and the check after binding both refuse.
        let e = probe(addr, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        let e = verify(addr, &[mine]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        drop(second);
        verify(addr, &[mine]).unwrap();
    }
}
