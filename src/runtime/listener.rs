//! Binding the configured listeners: one listening socket per listener *per shard*, all
//! with SO_REUSEPORT so the kernel spreads incoming connections across the shards. With
//! port 0 the first shard's socket picks the port and the others bind the same one.
//! It owns socket setup (and CPU pinning of shard threads); it never accepts connections
//! (the shards do), and a failed bind is an error, never a quiet retry elsewhere.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd};

use crate::config::Listener;

/// A bound, non-blocking listening socket and the index of its `listener` block.
pub struct Bound {
    pub index: usize,
    pub socket: mio::net::TcpListener,
    pub addr: SocketAddr,
    /// TLS configuration of a TLS listener (shared by the shards, reloadable).
    pub tls: Option<std::sync::Arc<super::tls::TlsSlot>>,
}

/// The address `listener` asks for (port 0 = any).
pub fn resolve(listener: &Listener) -> io::Result<SocketAddr> {
    let host = listener.bind_address.as_deref().unwrap_or("0.0.0.0");
    (host, listener.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot resolve bind address {host}"),
            )
        })
}

/// Binds `addr` for listener `index` with SO_REUSEADDR and SO_REUSEPORT. `log` says
/// whether to print Mosquitto's "Opening ... listen socket" line (once per listener).
pub fn bind(index: usize, addr: SocketAddr, log: bool) -> io::Result<Bound> {
    let std_listener = reuseport_listener(addr)?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    if log {
        let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
        crate::log_notice!("Opening {family} listen socket on port {}.", addr.port());
    }
    Ok(Bound {
        index,
        socket: mio::net::TcpListener::from_std(std_listener),
        addr,
        tls: None,
    })
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = check(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh, valid descriptor we own; OwnedFd closes it on error paths.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: `one` outlives the call and its size is passed.
        check(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sin` is a valid sockaddr_in and its size is passed.
            check(unsafe {
                libc::bind(
                    fd,
                    std::ptr::addr_of!(sin).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            })?;
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: `sin6` is a valid sockaddr_in6 and its size is passed.
            check(unsafe {
                libc::bind(
                    fd,
                    std::ptr::addr_of!(sin6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            })?;
        }
    }
    // SAFETY: `fd` is a bound stream socket.
    check(unsafe { libc::listen(fd, 1024) })?;
    Ok(TcpListener::from(owned))
}

/// CPUs this process may run on (sched_getaffinity), in order; empty if unknown.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let ret =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ret != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` < CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to `cpu`. Failure (e.g. a restricted container) is logged by
/// the caller and otherwise harmless.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (it came from `allowed_cpus`).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 = this thread.
    check(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })
        .map(|_| ())
}
