//! Client sockets: non-blocking IPv4 TCP connect, optionally bound to one of several local
//! addresses (with IP_BIND_ADDRESS_NO_PORT so the port is picked per 4-tuple at connect and
//! one host can open more than 64k connections to one broker port). Owns only socket
//! creation; it never reads or writes MQTT.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::FromRawFd;

/// Linux IP_BIND_ADDRESS_NO_PORT (not in every libc version).
const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn set_int(
    fd: libc::c_int,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: fd is a socket we own; the option value is a valid c_int of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Re-enters TCP quick-ACK mode (Linux leaves it on its own): a reader that pauses
/// between reads would otherwise delay its ACKs up to 40 ms, and a broker with Nagle on
/// (Mosquitto's default) waits for them before sending more.
pub fn quickack(sock: &impl std::os::fd::AsRawFd) {
    let _ = set_int(sock.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1);
}

/// Starts a non-blocking connect to `to`, bound to `from` when given. The connect
/// completes (or fails) later: the caller learns which from the first writable event.
pub fn connect(to: SocketAddrV4, from: Option<Ipv4Addr>) -> io::Result<mio::net::TcpStream> {
    // SAFETY: plain socket(2) call; the fd is checked and owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns; TcpStream closes it on drop
    // (including on every error path below).
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    if let Some(ip) = from {
        // Best effort: older kernels lack it, and then bind picks a port itself.
        let _ = set_int(fd, libc::IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1);
        let sa = sockaddr(SocketAddrV4::new(ip, 0));
        // SAFETY: sa is a valid sockaddr_in and its size is passed.
        let r = unsafe {
            libc::bind(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let sa = sockaddr(to);
    // SAFETY: sa is a valid sockaddr_in and its size is passed.
    let r = unsafe {
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(mio::net::TcpStream::from_std(std_stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_to_listener_and_bound_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let _a = connect(to, None).unwrap();
        let _b = connect(to, Some(Ipv4Addr::new(127, 0, 0, 2))).unwrap();
        let (_s1, p1) = l.accept().unwrap();
        let (_s2, p2) = l.accept().unwrap();
        let mut ips = [p1.ip().to_string(), p2.ip().to_string()];
        ips.sort();
        assert_eq!(ips, ["127.0.0.1", "127.0.0.2"]);
    }
}
