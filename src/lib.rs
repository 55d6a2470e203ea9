//! shardmq: a thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker, drop-in for Mosquitto.
//!
//! The crate root is the embedding API: [`Broker::builder`] starts a broker in this
//! process and returns a [`BrokerHandle`]; [`BrokerHandle::subscribe`] and
//! [`BrokerHandle::publish`] exchange [`Message`]s and [`Publish`]es with it; [`Config`]
//! (with [`config`] for its parts and [`Config::from_file`] / [`Config::parse_str`] to read
//! a `mosquitto.conf`) says what it serves; [`log`] sets up its logging. Everything else is
//! internal; how it is built is in `ARCHITECTURE.md`.
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
//! use shardmq::{Broker, ByteStr, Config, Publish, QoS};
//!
//! let config = Config::with_listener("127.0.0.1:0".parse().unwrap());
//! let broker = Broker::builder(config).start().expect("broker starts");
//! println!("listening on port {}", broker.port());
//!
//! // Every message matching the filter, from any client on any shard. Returns once every
//! // shard has installed it; dropping the subscription unsubscribes.
//! let sensors = broker.subscribe("sensors/#", QoS::AtLeastOnce).expect("valid filter");
//!
//! // Never blocks: beyond the publish capacity the message comes back in an error.
//! broker
//!     .publish(Publish {
//!         topic: ByteStr::from("sensors/boiler"),
//!         qos: QoS::AtLeastOnce,
//!         payload: Bytes::from_static(b"71.5"),
//!         ..Publish::default()
//!     })
//!     .expect("room in the publish channel");
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
//! [`DEFAULT_SUBSCRIPTION_CAPACITY`]); [`BrokerBuilder::publish_capacity`] how many of
//! the host's publishes the broker holds before [`BrokerHandle::publish`] refuses more
//! (default [`DEFAULT_PUBLISH_CAPACITY`]; [`BrokerHandle::publish_timeout`] waits).

// Without the `internals` feature, items that only the benches, fuzz targets and tests
// use are unused here. Dead code is still checked: builds with the feature (`cargo test`,
// `cargo clippy --all-targets`, which enable it through the dev-dependency) report it.
#![cfg_attr(not(feature = "internals"), allow(dead_code, unused_imports))]

// The layers (see ARCHITECTURE.md). Internal: reachable from outside only through
// `internals` (cargo feature `internals`, for the benches and fuzz targets).
pub(crate) mod auth;
pub(crate) mod bridge;
pub(crate) mod broker;
pub(crate) mod cli;
pub(crate) mod codec;
pub mod config;
pub(crate) mod console;
pub(crate) mod hash;
pub(crate) mod http;
pub mod log;
pub(crate) mod mailbox;
pub(crate) mod metrics;
pub(crate) mod persist;
pub(crate) mod retained;
pub(crate) mod runtime;
pub(crate) mod session;
pub(crate) mod topic;
pub(crate) mod ws;

pub use auth::{AclError, AuthError, PasswordError};
pub use broker::embed::{
    Message, PublishError, SubscribeError, Subscription, DEFAULT_PUBLISH_CAPACITY,
    DEFAULT_SUBSCRIPTION_CAPACITY,
};
pub use codec::{ByteStr, Properties, Publish, QoS};
pub use config::Config;
pub use persist::Error as PersistError;
pub use runtime::{BrokerHandle, Reloader, StartError, Stopper, TlsError};
pub use topic::{TopicError, TopicFilter};

/// What the `shardmq` executable (`src/main.rs`) needs beyond the embedding API: its
/// command line, the `passwd` and `import-mosquitto-db` tools, the two-step start with
/// privileges dropped and `-d` in between, and signal handling. Not a stable API.
#[doc(hidden)]
pub mod executable {
    pub use crate::auth::passwd::{run as passwd, PasswdError};
    pub use crate::cli::{
        check_supported, import_mosquitto_db, load_config, test_config, Args, Command,
    };
    pub use crate::runtime::{notify, prepare_config, process, signals, Prepared};
}

/// The broker's internal layers, for the benchmarks in `benches/` and the fuzz targets in
/// `fuzz/` (cargo feature `internals`, off by default). Not a stable API: anything here
/// may change in any release.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub mod auth {
        pub use crate::auth::*;
    }
    pub mod broker {
        pub use crate::broker::*;
    }
    pub mod codec {
        pub use crate::codec::*;
    }
    pub mod hash {
        pub use crate::hash::*;
    }
    pub mod http {
        pub use crate::http::*;
    }
    pub mod mailbox {
        pub use crate::mailbox::*;
    }
    pub mod persist {
        pub use crate::persist::*;
    }
    pub mod retained {
        pub use crate::retained::*;
    }
    pub mod session {
        pub use crate::session::*;
    }
    pub mod topic {
        pub use crate::topic::*;
    }
    pub mod ws {
        pub use crate::ws::*;
    }
}

/// Entry point of the embedding API.
pub struct Broker;

impl Broker {
    /// Starts configuring a broker; see [`BrokerBuilder::start`].
    pub fn builder(config: Config) -> BrokerBuilder {
        BrokerBuilder {
            config,
            publish_capacity: DEFAULT_PUBLISH_CAPACITY,
        }
    }
}

/// Configures and starts a broker in this process.
pub struct BrokerBuilder {
    config: Config,
    publish_capacity: usize,
}

impl BrokerBuilder {
    /// How many messages published through [`BrokerHandle::publish`] the broker holds
    /// before it has routed them (at least 1; default [`DEFAULT_PUBLISH_CAPACITY`]).
    /// Beyond it `publish` returns [`PublishError::Full`] with the message.
    ///
    /// ```no_run
    /// # use shardmq::{Broker, Config};
    /// let broker = Broker::builder(Config::default()).publish_capacity(64).start();
    /// ```
    #[must_use]
    pub fn publish_capacity(mut self, capacity: usize) -> Self {
        self.publish_capacity = capacity.max(1);
        self
    }

    /// Binds every listener and starts the shard threads. When this returns, clients can
    /// connect to [`BrokerHandle::local_addrs`].
    pub fn start(self) -> Result<BrokerHandle, StartError> {
        runtime::start(self.config, self.publish_capacity)
    }
}
