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
#[cfg(feature = "psk")]
mod bridge_psk; // TLS-PSK to bridges' remotes
mod bridge_tls; // TLS to bridges' remotes
mod command;
mod conn;
mod console; // HTTP console hook (src/console)
mod handle;
mod listener;
pub mod notify; // systemd Type=notify (READY, WATCHDOG)
mod persist; // persistence driver (src/persist)
mod port_claim;
pub mod preflight;
#[allow(missing_docs)] // the executable's helpers (see lib.rs)
pub mod process;
mod shard;
pub mod signals;
mod sock_diag;
mod socket;
mod tls;
#[cfg(feature = "psk")]
mod tls_psk;
mod tls_rustls;
mod tls_v1;

pub use handle::{BrokerHandle, Prepared, Reloader, StartError, Stopper};
pub(crate) use handle::{Embedding, IngestSpec, MakeAccess};
pub use tls::TlsError;

use std::sync::Arc;

use crate::config::Config;

/// Binds every listener and starts the shard threads. Returns once the sockets are bound,
/// so `BrokerHandle::local_addrs` is final and clients may connect immediately.
/// `embedding`: the bound on the host's publishes in flight (`BrokerHandle::publish`)
/// and the ingest handlers.
pub(crate) fn start(config: Config, embedding: Embedding) -> Result<BrokerHandle, StartError> {
    handle::start(&Arc::new(config), embedding)
}

/// Binds every listener and loads the TLS, password and ACL files without starting
/// anything; [`Prepared::start`] runs the broker. Between the two the process may drop
/// privileges ([`process::drop_privileges`]) or become a daemon ([`process::daemonize`]).
pub fn prepare_config(config: Config) -> Result<Prepared, StartError> {
    handle::prepare(&Arc::new(config))
}
