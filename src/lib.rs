//! shardmq: a thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker, drop-in for Mosquitto.
//!
//! Layering, lowest first: [`codec`] <- [`topic`] <- [`session`] <- [`broker`] /
//! [`retained`] <- [`runtime`] <- this crate's embedding API. A lower layer never imports a
//! higher one, and nothing below `runtime` touches sockets, threads or the clock.
//!
//! # Embedding
//!
//! ```no_run
//! use shardmq::{Broker, Config};
//!
//! let config = Config::with_listener("127.0.0.1:0".parse().unwrap());
//! let broker = Broker::builder(config).start().expect("broker starts");
//! println!("listening on port {}", broker.port());
//! broker.stop();
//! ```

pub mod auth;
pub mod broker;
pub mod cli;
pub mod codec;
pub mod config;
pub mod log;
pub mod mailbox;
pub mod metrics;
pub mod persist;
pub mod retained;
pub mod runtime;
pub mod session;
pub mod topic;

pub use config::Config;
pub use runtime::{BrokerHandle, StartError, Stopper};

/// Entry point of the embedding API.
pub struct Broker;

impl Broker {
    /// Starts configuring a broker; see [`BrokerBuilder::start`].
    pub fn builder(config: Config) -> BrokerBuilder {
        BrokerBuilder { config }
    }
}

/// Configures and starts a broker in this process.
pub struct BrokerBuilder {
    config: Config,
}

impl BrokerBuilder {
    /// Binds every listener and starts the shard threads. When this returns, clients can
    /// connect to [`BrokerHandle::local_addrs`].
    pub fn start(self) -> Result<BrokerHandle, StartError> {
        runtime::start(self.config)
    }
}
