//! Binding the configured listeners.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use crate::config::Listener;

/// A bound, non-blocking listening socket and the index of its `listener` block.
pub struct Bound {
    pub index: usize,
    pub socket: mio::net::TcpListener,
    pub addr: SocketAddr,
    /// rustls configuration of a TLS listener.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// Binds `listener` (port 0 lets the OS pick; the bound address says which).
pub fn bind(index: usize, listener: &Listener) -> io::Result<Bound> {
    let host = listener.bind_address.as_deref().unwrap_or("0.0.0.0");
    let addr = (host, listener.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot resolve bind address {host}"),
            )
        })?;
    // std sets SO_REUSEADDR on Unix, so a restart does not wait for TIME_WAIT.
    let std_listener = TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
    crate::log_notice!("Opening {family} listen socket on port {}.", addr.port());
    Ok(Bound {
        index,
        socket: mio::net::TcpListener::from_std(std_listener),
        addr,
        tls: None,
    })
}
