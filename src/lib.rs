//! shardmq: a thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker, drop-in for Mosquitto.
//!
//! Layering, lowest first: [`hash`] <- [`codec`] <- [`topic`] <- [`session`] <- [`broker`] /
//! [`retained`] <- [`runtime`] <- this crate's embedding API. A lower layer never imports a
//! higher one, and nothing below `runtime` touches sockets, threads or the clock.
//!
//! # Embedding
//!
//! Start a broker in-process, receive what clients publish through an in-process
//! subscription, and inject messages as if a client had published them:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use shardmq::codec::{ByteStr, Publish, QoS};
//! use shardmq::{Broker, Config};
//!
//! let config = Config::with_listener("127.0.0.1:0".parse().unwrap());
//! let broker = Broker::builder(config).start().expect("broker starts");
//! println!("listening on port {}", broker.port());
//!
//! // Every message matching the filter, from any client on any shard. Returns once every
//! // shard has installed it; dropping the subscription unsubscribes.
//! let sensors = broker.subscribe("sensors/#", QoS::AtLeastOnce).expect("valid filter");
//!
//! broker.publish(Publish {
//!     topic: ByteStr::from("sensors/boiler"),
//!     qos: QoS::AtLeastOnce,
//!     payload: Bytes::from_static(b"71.5"),
//!     ..Publish::default()
//! });
//! let m = sensors.recv_timeout(Duration::from_secs(1)).expect("delivered");
//! assert_eq!(m.topic.as_str(), "sensors/boiler");
//! // Never blocks the broker: beyond the channel's capacity messages are dropped.
//! println!("dropped so far: {}", sensors.dropped());
//!
//! drop(sensors);
//! broker.stop();
//! ```
//!
//! [`BrokerHandle::subscribe_with_capacity`] sets the channel bound (default
//! [`broker::embed::DEFAULT_SUBSCRIPTION_CAPACITY`]).

pub mod auth;
pub mod broker;
pub mod cli;
pub mod codec;
pub mod config;
pub mod hash;
pub mod log;
pub mod mailbox;
pub mod metrics;
pub mod persist;
pub mod retained;
pub mod runtime;
pub mod session;
pub mod topic;

pub use broker::embed::{Message, SubscribeError, Subscription};
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
