//! Binding the configured listeners: for each of a listener's addresses, one listening
//! socket *per shard*, all with SO_REUSEPORT so the kernel spreads incoming connections
//! across the shards, and the port claimed exclusively for this broker
//! ([`super::port_claim`]: anyone else on it stops the start with "Address already in
//! use"). With port 0 the first shard's socket picks the port and the others bind it.
//!
//! A listener's addresses follow Mosquitto: `listener PORT` listens on IPv4 and IPv6
//! (`socket_domain` keeps one), a host name on every address it resolves to, and
//! `bind_interface IFACE` on the interface's first address of each family, with
//! SO_BINDTODEVICE on top so that only packets that arrived on that interface reach the
//! socket. Accepted connections inherit TCP_NODELAY (`set_tcp_nodelay`) from the
//! listening socket. This module owns socket setup (and CPU pinning of shard threads) and
//! logs the "Opening ... listen socket" and "New connection from" lines; it never accepts,
//! reads or writes a connection (the shards do), and a failed bind is an error, never a
//! quiet retry on another address (only a port-0 listener may get another port).

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;

use super::port_claim;
use super::socket::{self, SocketOptions};
use crate::config::{Listener, ListenerProtocol, SocketDomain};

/// A bound, non-blocking listening socket and the index of its `listener` block.
pub struct Bound {
    pub index: usize,
    pub socket: mio::net::TcpListener,
    pub addr: SocketAddr,
    /// TLS configuration of a TLS listener (shared by the shards, reloadable).
    pub tls: Option<std::sync::Arc<super::tls::TlsSlot>>,
    /// A websockets listener's settings (shared by the shards).
    pub ws: Option<std::sync::Arc<crate::ws::Settings>>,
}

impl Bound {
    /// Called for each connection accepted (and admitted) on this socket: Mosquitto's
    /// "New connection from ADDR:PORT on port N." (with `connection_messages`).
    pub fn accepted(&self, peer: SocketAddr) {
        if crate::log::connection_messages() {
            crate::log_notice!(
                "New connection from {}:{} on port {}.",
                peer.ip(),
                peer.port(),
                self.addr.port()
            );
        }
    }
}

/// The sockets of one listener.
pub struct BoundListener {
    /// The first address bound (its port is the listener's, port 0 resolved).
    pub addr: SocketAddr,
    /// For each shard, one socket per address.
    pub per_shard: Vec<Vec<Bound>>,
}

/// Why a listener cannot listen: Mosquitto's reason first, then which listener.
#[derive(Debug, thiserror::Error)]
#[error("{reason} ({listener})")]
pub struct BindError {
    pub listener: String,
    pub reason: String,
    pub kind: io::ErrorKind,
}

/// Attempts for a port-0 listener whose second address (IPv6) found the port the kernel
/// picked for the first one taken.
const PORT_ZERO_ATTEMPTS: usize = 5;

/// Binds listener `index` for `shards` shards.
pub fn bind_listener(
    index: usize,
    l: &Listener,
    shards: usize,
    nodelay: bool,
) -> Result<BoundListener, BindError> {
    let mut attempt = 0;
    loop {
        match bind_once(index, l, shards, nodelay) {
            Err(e) if l.port == 0 && e.kind == io::ErrorKind::AddrInUse => {
                attempt += 1;
                if attempt >= PORT_ZERO_ATTEMPTS {
                    return Err(e);
                }
            }
            other => return other,
        }
    }
}

fn bind_once(
    index: usize,
    l: &Listener,
    shards: usize,
    nodelay: bool,
) -> Result<BoundListener, BindError> {
    let err = |reason: String, kind| BindError {
        listener: describe(l),
        reason,
        kind,
    };
    let io_err = |e: &io::Error| err(socket::describe(e), e.kind());
    let targets = targets(l).map_err(|e| io_err(&e))?;
    let explicit =
        l.bind_address.is_some() || l.bind_interface.is_some() || l.socket_domain.is_some();
    let opts = SocketOptions {
        reuse_port: true,
        device: l.bind_interface.clone(),
        nodelay,
    };
    let mut per_shard: Vec<Vec<Bound>> = (0..shards.max(1)).map(|_| Vec::new()).collect();
    let mut port = l.port;
    let mut first: Option<SocketAddr> = None;
    for target in targets {
        let mut addr = target;
        addr.set_port(port);
        if let Err(e) = port_claim::probe(addr, l.bind_interface.as_deref()) {
            if addr.is_ipv6() && !explicit && e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
                // As Mosquitto: no IPv6 on this host, the IPv4 socket serves alone.
                crate::log_warning!("Warning: no IPv6 on this host: {}", socket::describe(&e));
                continue;
            }
            return Err(io_err(&e));
        }
        let mut inodes = Vec::with_capacity(per_shard.len());
        for (shard, sockets) in per_shard.iter_mut().enumerate() {
            let fd = match socket::bound(addr, &opts) {
                Ok(fd) => fd,
                Err(e)
                    if shard == 0
                        && addr.is_ipv6()
                        && !explicit
                        && e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
                {
                    crate::log_warning!("Warning: no IPv6 on this host: {}", socket::describe(&e));
                    break;
                }
                Err(e) => return Err(io_err(&e)),
            };
            let std_listener = socket::listen(fd).map_err(|e| io_err(&e))?;
            std_listener.set_nonblocking(true).map_err(|e| io_err(&e))?;
            inodes.push(socket::inode(std_listener.as_raw_fd()).map_err(|e| io_err(&e))?);
            let bound_addr = std_listener.local_addr().map_err(|e| io_err(&e))?;
            if shard == 0 {
                addr = bound_addr;
                port = bound_addr.port();
            }
            sockets.push(Bound {
                index,
                socket: mio::net::TcpListener::from_std(std_listener),
                addr: bound_addr,
                tls: None,
                ws: None,
            });
        }
        if inodes.is_empty() {
            continue;
        }
        port_claim::verify(addr, &inodes).map_err(|e| io_err(&e))?;
        // Logged once every shard's socket listens and the port is ours.
        let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
        if l.protocol == ListenerProtocol::Websockets {
            // Mosquitto's words ("Opening websockets listen socket on port N.").
            crate::log_notice!("Opening {family} websockets listen socket on port {port}.");
        } else if l.protocol == ListenerProtocol::Http {
            crate::log_notice!("Opening {family} http (console) listen socket on port {port}.");
        } else {
            crate::log_notice!("Opening {family} listen socket on port {port}.");
        }
        first.get_or_insert(addr);
    }
    let addr = first.ok_or_else(|| {
        err(
            "no address to listen on".into(),
            io::ErrorKind::AddrNotAvailable,
        )
    })?;
    Ok(BoundListener { addr, per_shard })
}

/// "listener 1883 on 0.0.0.0, /etc/x.conf line 3" for messages.
pub fn describe(l: &Listener) -> String {
    let on = match (&l.bind_interface, &l.bind_address) {
        (Some(iface), _) => format!(" on interface {iface}"),
        (None, Some(a)) => format!(" on {a}"),
        (None, None) => String::new(),
    };
    match &l.defined_at {
        Some(at) => format!("listener {}{on}, {at}", l.port),
        None => format!("listener {}{on}", l.port),
    }
}

fn wanted(domain: Option<SocketDomain>, ip: &IpAddr) -> bool {
    match domain {
        None => true,
        Some(SocketDomain::Ipv4) => ip.is_ipv4(),
        Some(SocketDomain::Ipv6) => ip.is_ipv6(),
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The addresses listener `l` listens on (port as configured), as Mosquitto chooses
/// them.
pub fn targets(l: &Listener) -> io::Result<Vec<SocketAddr>> {
    let domain = l.socket_domain;
    let port = l.port;
    let resolved = match &l.bind_address {
        Some(host) if host.starts_with('/') => {
            return Err(invalid(format!(
                "unix socket listeners ({host}) are not supported"
            )))
        }
        Some(host) => {
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for a in (host.as_str(), port).to_socket_addrs()? {
                if wanted(domain, &a.ip()) && !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
            if addrs.is_empty() {
                return Err(invalid(format!(
                    "{host} has no {} address",
                    domain_name(domain)
                )));
            }
            Some(addrs)
        }
        None => None,
    };
    let Some(iface) = &l.bind_interface else {
        return Ok(resolved.unwrap_or_else(|| {
            let any4 = SocketAddr::from(([0, 0, 0, 0], port));
            let any6 = SocketAddr::from(([0u16; 8], port));
            [any4, any6]
                .into_iter()
                .filter(|a| wanted(domain, &a.ip()))
                .collect()
        }));
    };
    let Some(index) = socket::interface_index(iface) else {
        return Err(invalid(format!(
            "bind_interface {iface}: there is no network interface of that name"
        )));
    };
    let ips: Vec<IpAddr> = socket::interface_addresses(iface)?
        .into_iter()
        .filter(|ip| wanted(domain, ip))
        .collect();
    let chosen: Vec<IpAddr> = match resolved {
        Some(addrs) => {
            for a in &addrs {
                if !ips.contains(&a.ip()) {
                    return Err(invalid(format!(
                        "{} is not an address of interface {iface} (bind_interface)",
                        a.ip()
                    )));
                }
            }
            addrs.iter().map(SocketAddr::ip).collect()
        }
        // As Mosquitto: the interface's first address of each family.
        None => [
            ips.iter().find(|ip| ip.is_ipv4()),
            ips.iter().find(|ip| ip.is_ipv6()),
        ]
        .into_iter()
        .flatten()
        .copied()
        .collect(),
    };
    if chosen.is_empty() {
        return Err(invalid(format!(
            "interface {iface} has no {} address (bind_interface)",
            domain_name(domain)
        )));
    }
    Ok(chosen
        .into_iter()
        .map(|ip| socket::socket_addr(ip, port, index))
        .collect())
}

fn domain_name(domain: Option<SocketDomain>) -> &'static str {
    match domain {
        None => "IP",
        Some(SocketDomain::Ipv4) => "IPv4",
        Some(SocketDomain::Ipv6) => "IPv6",
    }
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
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

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
