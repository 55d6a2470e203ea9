//! Starting, controlling and stopping a running broker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::listener;
use super::shard::Shard;
use crate::auth::Security;
use crate::codec::Publish;
use crate::config::Config;

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the event loop: {0}")]
    Io(#[from] std::io::Error),
    #[error("the configuration has no listener")]
    NoListener,
    #[error(transparent)]
    Security(#[from] crate::auth::AuthError),
    #[error("TLS on listener {port}: {source}")]
    Tls {
        port: u16,
        source: super::tls::TlsError,
    },
}

/// Instructions from the embedding process to a shard.
#[derive(Debug)]
pub enum Command {
    /// Publish a message as if a client had sent it.
    Publish(Box<Publish>),
    /// Stop: close every connection and end the thread.
    Shutdown,
    /// Install reloaded password / ACL rules (SIGHUP); connections stay up.
    SetSecurity(Arc<Security>),
}

struct ShardControl {
    commands: Sender<Command>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
}

/// A running broker. Dropping it stops the broker and waits for its threads.
pub struct BrokerHandle {
    addrs: Vec<SocketAddr>,
    shards: Vec<ShardControl>,
    config: Arc<Config>,
}

pub(super) fn start(config: &Arc<Config>) -> Result<BrokerHandle, StartError> {
    if config.listeners.is_empty() {
        return Err(StartError::NoListener);
    }
    let mut bound = Vec::with_capacity(config.listeners.len());
    for (i, l) in config.listeners.iter().enumerate() {
        let b = listener::bind(i, l).map_err(|source| StartError::Bind {
            addr: format!(
                "{}:{}",
                l.bind_address.as_deref().unwrap_or("0.0.0.0"),
                l.port
            ),
            source,
        })?;
        let mut b = b;
        if let Some(tls) = &l.tls {
            let cfg = super::tls::server_config(tls).map_err(|source| StartError::Tls {
                port: l.port,
                source,
            })?;
            b.tls = Some(cfg);
        }
        bound.push(b);
    }
    let addrs = bound.iter().map(|b| b.addr).collect();
    // Password and ACL files: a bad file stops the start, naming file and line.
    let security = Arc::new(Security::load(config)?);
    let (tx, rx): (Sender<Command>, Receiver<Command>) = crossbeam_channel::unbounded();
    let mut shard = Shard::new(0, config, bound, rx)?;
    shard.set_security(security);
    let waker = shard.waker();
    let thread = std::thread::Builder::new()
        .name("shardmq-shard-0".into())
        .spawn(move || shard.run())?;
    Ok(BrokerHandle {
        addrs,
        shards: vec![ShardControl {
            commands: tx,
            waker,
            thread: Some(thread),
        }],
        config: Arc::clone(config),
    })
}

impl BrokerHandle {
    /// The bound address of each listener, in config order (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The port of the first listener.
    pub fn port(&self) -> u16 {
        self.addrs.first().map_or(0, SocketAddr::port)
    }

    /// Publishes `publish` into the broker as if a client had sent it (QoS is honoured
    /// towards subscribers; there is no acknowledgement back to the caller).
    pub fn publish(&self, publish: Publish) {
        if let Some(s) = self.shards.first() {
            if s.commands.send(Command::Publish(Box::new(publish))).is_ok() {
                let _ = s.waker.wake();
            }
        }
    }

    /// Re-reads the password and ACL files and installs them in every shard without
    /// dropping connections. On error the old rules stay in force.
    pub fn reload_security(&self) -> Result<(), crate::auth::AuthError> {
        self.reloader().reload_security()
    }

    /// A cloneable, `Send` handle for [`BrokerHandle::reload_security`] from another
    /// thread (the SIGHUP handler).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            config: Arc::clone(&self.config),
            shards: self.stopper().shards,
        }
    }

    /// Asks every shard to stop without waiting.
    pub fn request_stop(&self) {
        self.stopper().stop();
    }

    /// A cloneable, `Send` handle that can stop the broker from another thread (e.g. a
    /// signal-handling thread) while this handle waits in [`BrokerHandle::join`].
    pub fn stopper(&self) -> Stopper {
        Stopper {
            shards: self
                .shards
                .iter()
                .map(|s| (s.commands.clone(), Arc::clone(&s.waker)))
                .collect(),
        }
    }

    /// Stops the broker and waits for its threads to end.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    /// Waits until the broker stops (after `request_stop`, e.g. from a signal).
    pub fn join(mut self) {
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn stop_and_join(&mut self) {
        self.request_stop();
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Stops a running broker from any thread.
#[derive(Clone)]
pub struct Stopper {
    shards: Vec<(Sender<Command>, Arc<mio::Waker>)>,
}

impl Stopper {
    pub fn stop(&self) {
        for (commands, waker) in &self.shards {
            let _ = commands.send(Command::Shutdown);
            let _ = waker.wake();
        }
    }
}

/// Reloads the security files of a running broker from any thread.
#[derive(Clone)]
pub struct Reloader {
    config: Arc<Config>,
    shards: Vec<(Sender<Command>, Arc<mio::Waker>)>,
}

impl Reloader {
    /// See [`BrokerHandle::reload_security`].
    pub fn reload_security(&self) -> Result<(), crate::auth::AuthError> {
        let security = Arc::new(Security::load(&self.config)?);
        for (commands, waker) in &self.shards {
            if commands
                .send(Command::SetSecurity(Arc::clone(&security)))
                .is_ok()
            {
                let _ = waker.wake();
            }
        }
        Ok(())
    }
}
