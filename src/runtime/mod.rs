//! The only code that touches mio, sockets, threads, signals and the clock.
//!
//! Thread per core: `threads` shards (default: the CPUs in the process's affinity mask),
//! each a thread pinned to one CPU running one mio event loop with its own SO_REUSEPORT
//! listening socket per listener (the kernel spreads connections), its own connection
//! slab (the slab key is the mio Token and the [`crate::broker::ConnId`]) and one sans-IO
//! [`crate::broker::Broker`] driven through its driver contract. Shards talk only through
//! [`crate::mailbox`] rings (one per ordered pair), woken on the sleeping edge. The runtime never
//! interprets MQTT bytes: it reads into per-connection buffers, hands them to the broker,
//! and writes what the broker queued with `writev`.

mod admission;
mod command;
mod conn;
mod handle;
mod listener;
mod persist; // persistence driver (src/persist)
mod shard;
pub mod signals;
mod tls;
#[cfg(feature = "psk")]
mod tls_psk;
mod tls_rustls;

pub use handle::{BrokerHandle, Reloader, StartError, Stopper};
pub use tls::TlsError;

use std::sync::Arc;

use crate::config::Config;

/// Binds every listener and starts the shard threads. Returns once the sockets are bound,
/// so `BrokerHandle::local_addrs` is final and clients may connect immediately.
/// `publish_capacity` bounds the host's publishes in flight (`BrokerHandle::publish`).
pub fn start(config: Config, publish_capacity: usize) -> Result<BrokerHandle, StartError> {
    handle::start(&Arc::new(config), publish_capacity)
}
