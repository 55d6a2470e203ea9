//! The kernel's list of listening TCP sockets through netlink `sock_diag`
//! (`NETLINK_SOCK_DIAG`, `SOCK_DIAG_BY_FAMILY` with only TCP_LISTEN asked for): the kernel
//! walks its listening sockets only, so the answer costs the same on a host with a
//! million connections as on an idle one (`/proc/net/tcp` lists every socket).
//!
//! [`request`] and [`parse`] are sans-IO (bytes out, bytes in) and never panic on any
//! reply; [`listening`] does the one request / reply exchange.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::port_claim::ListeningSocket;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;
const NLMSG_HDRLEN: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, `inet_diag_sockid`.
const REQ_LEN: usize = 4 + 4 + 48;
/// `struct inet_diag_msg`: family, state, timer, retrans, sockid, expires, rqueue,
/// wqueue, uid, inode.
const MSG_LEN: usize = 4 + 48 + 20;

/// The dump request for the listening TCP sockets of `family` (AF_INET or AF_INET6).
pub fn request(family: u8, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + REQ_LEN;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    b.push(family);
    b.push(u8::try_from(libc::IPPROTO_TCP).unwrap_or(6));
    b.push(0); // no extensions
    b.push(0);
    b.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    b.resize(len, 0); // inet_diag_sockid: no filter
    b
}

/// What one reply datagram holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Part {
    /// More sockets; more datagrams follow.
    Sockets(Vec<ListeningSocket>),
    /// The last datagram (NLMSG_DONE), with the sockets before it.
    Done(Vec<ListeningSocket>),
}

/// Parses one reply datagram of the dump.
pub fn parse(buf: &[u8]) -> io::Result<Part> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"));
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(bad("message length"));
        }
        let body = &rest[NLMSG_HDRLEN..len];
        match kind {
            NLMSG_DONE => return Ok(Part::Done(out)),
            NLMSG_ERROR => {
                let code = body
                    .get(..4)
                    .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                return Err(io::Error::from_raw_os_error(code.saturating_neg()));
            }
            _ => out.push(socket(body).ok_or_else(|| bad("short inet_diag_msg"))?),
        }
        // Messages are aligned to 4 bytes.
        let next = (len + 3) & !3;
        rest = rest.get(next..).unwrap_or_default();
    }
    Ok(Part::Sockets(out))
}

fn socket(body: &[u8]) -> Option<ListeningSocket> {
    let m = body.get(..MSG_LEN)?;
    let port = u16::from_be_bytes([m[4], m[5]]);
    let ip = match i32::from(m[0]) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(m[8], m[9], m[10], m[11])),
        libc::AF_INET6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&m[8..24]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    let inode = u32::from_ne_bytes([m[68], m[69], m[70], m[71]]);
    Some(ListeningSocket {
        addr: SocketAddr::new(ip, port),
        inode: u64::from(inode),
    })
}

fn check(ret: isize) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// The listening TCP sockets of this network namespace of the family of `v6`.
pub fn listening(v6: bool) -> io::Result<Vec<ListeningSocket>> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let req = request(u8::try_from(family).unwrap_or(0), 1);
    // SAFETY: `req` is valid for reads of its length; the kernel is the destination
    // (a zeroed sockaddr_nl would be the same; NULL uses the connected default).
    check(unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) })?;
    let mut buf = vec![0u8; 32 * 1024];
    let mut all = Vec::new();
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n =
            check(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })?;
        match parse(buf.get(..n).unwrap_or_default())? {
            Part::Sockets(s) => all.extend(s),
            Part::Done(s) => {
                all.extend(s);
                return Ok(all);
            }
        }
        if n == 0 {
            return Ok(all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_listening_socket_with_its_inode() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let inode = super::super::socket::inode(l.as_raw_fd()).unwrap();
        let all = match listening(false) {
            Ok(all) => all,
            Err(e) => {
                // No sock_diag here (a sandbox): port_claim falls back to /proc.
                eprintln!("SKIPPED: sock_diag unavailable: {e}");
                return;
            }
        };
        assert!(all.contains(&ListeningSocket { addr, inode }), "{all:?}");
    }

    #[test]
    fn replies_never_panic() {
        let mut msg = vec![0u8; NLMSG_HDRLEN + MSG_LEN];
        let len = u32::try_from(msg.len()).unwrap();
        msg[..4].copy_from_slice(&len.to_ne_bytes());
        msg[NLMSG_HDRLEN] = u8::try_from(libc::AF_INET).unwrap();
        for cut in 0..msg.len() {
            let _ = parse(&msg[..cut]);
        }
        for len in [0u32, 3, 15, 16, 17, 1000] {
            let mut m = msg.clone();
            m[..4].copy_from_slice(&len.to_ne_bytes());
            let _ = parse(&m);
        }
        assert!(matches!(parse(&msg), Ok(Part::Sockets(s)) if s.len() == 1));
        assert_eq!(request(2, 7).len(), NLMSG_HDRLEN + REQ_LEN);
    }
}
