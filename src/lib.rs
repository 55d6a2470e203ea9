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
// The facade is documented; with `internals` every layer is reachable, so the check
// applies to the plain build (the public API).
#![cfg_attr(not(feature = "internals"), warn(missing_docs))]
#![cfg_attr(not(feature = "internals"), allow(dead_code, unused_imports))]

// The layers (see ARCHITECTURE.md). Internal: reachable from outside only through
// `internals` (cargo feature `internals`, for the benches and fuzz targets).
//
// `missing_docs` is allowed, for now, in the modules whose public items the facade
// re-exports but that other work owns (the error enums of auth, config and persist; the
// codec types `Publish`, `Properties`, `ByteStr`; the topic types; `config`'s fields; the
// executable's helpers): documenting them is a follow-up of issue 15. Everything else
// public is documented (`#![warn(missing_docs)]`).
#[allow(missing_docs)]
pub(crate) mod auth;
pub(crate) mod bridge;
pub(crate) mod broker;
#[allow(missing_docs)]
pub(crate) mod cli;
#[allow(missing_docs)]
pub(crate) mod codec;
#[allow(missing_docs)]
pub mod config;
pub(crate) mod console;
pub(crate) mod hash;
pub(crate) mod http;
pub mod log;
pub(crate) mod mailbox;
pub(crate) mod metrics;
#[allow(missing_docs)]
pub(crate) mod persist;
pub(crate) mod retained;
pub(crate) mod runtime;
pub(crate) mod session;
#[allow(missing_docs)]
pub(crate) mod topic;
pub(crate) mod ws;

pub use auth::{AclError, AuthError, PasswordError};
pub use broker::access::{AccessHook, ConnectInfo, Decision};
pub use broker::embed::{
    Message, PublishError, Source, SubscribeError, Subscription, DEFAULT_PUBLISH_CAPACITY,
    DEFAULT_SUBSCRIPTION_CAPACITY,
};
pub use broker::ingest::{
    IngestHandler, Ingested, Origin, Provenance, Qos0Policy, Verdict, MAX_INGEST_HANDLERS,
};
pub use broker::ingest_ack::AckToken;
pub use broker::ingest_channel::{Delivery, IngestMessage, IngestSender};
pub use codec::{ByteStr, Properties, PropertyValues, Publish, QoS};
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
    pub use crate::metrics::persist::lost_records as persistence_lost_records;
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
            ingest: Vec::new(),
            access: None,
            invalid: None,
        }
    }
}

/// Configures and starts a broker in this process.
pub struct BrokerBuilder {
    config: Config,
    publish_capacity: usize,
    ingest: Vec<runtime::IngestSpec>,
    access: Option<runtime::MakeAccess>,
    /// The first invalid ingest filter, reported by `start`.
    invalid: Option<StartError>,
}

impl std::fmt::Debug for BrokerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerBuilder")
            .field("publish_capacity", &self.publish_capacity)
            .field("ingest_handlers", &self.ingest.len())
            .field("access_hook", &self.access.is_some())
            .finish_non_exhaustive()
    }
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

    /// Adds an ingest handler: every message a client publishes on a topic matching
    /// `filter` is offered to it, on the publishing client's shard thread, before the
    /// broker acknowledges it (QoS 1/2) and routes it to its subscribers. `make` is
    /// called once per shard at start, with the shard's number, to make that shard's
    /// instance. A busy handler at QoS 0 does not get the message ([`Qos0Policy::Drop`];
    /// see [`BrokerBuilder::ingest_with`]).
    ///
    /// Handlers see what clients publish (not wills, not [`BrokerHandle::publish`]);
    /// several matching handlers are offered a message in the order they were added.
    /// An invalid or shared filter, or more than [`MAX_INGEST_HANDLERS`] handlers, makes
    /// [`BrokerBuilder::start`] fail with [`StartError::Ingest`].
    ///
    /// ```no_run
    /// use shardmq::{Broker, Config, Ingested, Verdict};
    ///
    /// let config = Config::with_listener("127.0.0.1:1883".parse().unwrap());
    /// let broker = Broker::builder(config)
    ///     .ingest("telemetry/#", |_shard| {
    ///         |msg: &Ingested<'_>| {
    ///             println!("{} from {}: {} bytes", msg.topic(),
    ///                 msg.provenance().client_id(), msg.payload().len());
    ///             Verdict::Accept
    ///         }
    ///     })
    ///     .start()
    ///     .expect("broker starts");
    /// # drop(broker);
    /// ```
    #[must_use]
    pub fn ingest<H, F>(self, filter: &str, make: F) -> Self
    where
        H: IngestHandler + 'static,
        F: FnMut(usize) -> H + Send + 'static,
    {
        self.ingest_with(filter, Qos0Policy::Drop, make)
    }

    /// [`BrokerBuilder::ingest`] with the handler's policy for QoS 0 messages it is busy
    /// with ([`Qos0Policy::BackPressure`] holds them like QoS 1 ones).
    #[must_use]
    pub fn ingest_with<H, F>(mut self, filter: &str, qos0: Qos0Policy, mut make: F) -> Self
    where
        H: IngestHandler + 'static,
        F: FnMut(usize) -> H + Send + 'static,
    {
        let refuse = |reason: String| StartError::Ingest {
            filter: filter.to_owned(),
            reason,
        };
        if self.invalid.is_some() {
            return self;
        }
        if self.ingest.len() >= MAX_INGEST_HANDLERS {
            self.invalid = Some(refuse(format!("more than {MAX_INGEST_HANDLERS} handlers")));
            return self;
        }
        match broker::ingest::parse_filter(filter) {
            Ok(filter) => self.ingest.push(runtime::IngestSpec {
                filter,
                qos0,
                make: Box::new(move |shard| Box::new(make(shard)) as Box<dyn IngestHandler>),
            }),
            Err(reason) => self.invalid = Some(refuse(reason)),
        }
        self
    }

    /// Adds an ingest handler in channel form, for hosts that take messages on other
    /// threads or async tasks: `make(shard)` returns that shard's sender of a bounded
    /// channel (one channel per shard); every matching message goes into it as a
    /// [`Delivery`] (an owned copy with its [`Origin`] and an [`AckToken`]). A full
    /// channel holds the device back like [`Verdict::Busy`]; the device's PUBACK/PUBREC
    /// waits until the token is acked, while the device is read on. `qos0` as in
    /// [`BrokerBuilder::ingest_with`].
    ///
    /// ```no_run
    /// use shardmq::{Broker, Config, Delivery, Qos0Policy};
    ///
    /// let (tx, rx) = crossbeam_channel::bounded::<Delivery>(1024);
    /// let broker = Broker::builder(Config::default())
    ///     .ingest_channel("telemetry/#", Qos0Policy::Drop, move |_shard| tx.clone())
    ///     .start()
    ///     .expect("broker starts");
    /// for d in rx.iter() {
    ///     println!("{} from {}", d.message.topic(), d.message.origin().client_id());
    ///     d.token.ack(); // now the device gets its PUBACK
    /// }
    /// # drop(broker);
    /// ```
    #[must_use]
    pub fn ingest_channel<S, F>(self, filter: &str, qos0: Qos0Policy, mut make: F) -> Self
    where
        S: IngestSender + 'static,
        F: FnMut(usize) -> S + Send + 'static,
    {
        self.ingest_with(filter, qos0, move |shard| {
            broker::ingest_channel::ChannelHandler(make(shard))
        })
    }

    /// Sets the host's access hook: `make(shard)` makes each shard's instance (once per
    /// shard, at start), called on that shard's thread for every CONNECT, PUBLISH and
    /// SUBSCRIBE filter that `password_file`, `acl_file` and `allow_anonymous` allow.
    /// The hook can refuse more, never allow more; it must not block. A second call
    /// replaces the first. See [`AccessHook`] for the reason codes clients get.
    ///
    /// ```no_run
    /// use shardmq::{AccessHook, Broker, Config, ConnectInfo, Decision, Provenance};
    ///
    /// struct Devices;
    /// impl AccessHook for Devices {
    ///     fn authenticate(&mut self, c: &ConnectInfo<'_>) -> Decision {
    ///         if c.password() == Some(b"let-me-in") { Decision::Allow } else { Decision::BadCredentials }
    ///     }
    ///     fn authorize_subscribe(&mut self, _: &Provenance<'_>, filter: &str) -> bool {
    ///         !filter.starts_with('#')
    ///     }
    /// }
    ///
    /// let mut config = Config::with_listener("127.0.0.1:1883".parse().unwrap());
    /// config.allow_anonymous = true; // the files let everyone in; the hook decides
    /// let broker = Broker::builder(config)
    ///     .access(|_shard| Devices)
    ///     .start()
    ///     .expect("broker starts");
    /// # drop(broker);
    /// ```
    #[must_use]
    pub fn access<H, F>(mut self, mut make: F) -> Self
    where
        H: AccessHook + 'static,
        F: FnMut(usize) -> H + Send + 'static,
    {
        self.access = Some(Box::new(move |shard| {
            Box::new(make(shard)) as Box<dyn AccessHook>
        }));
        self
    }

    /// Binds every listener and starts the shard threads. When this returns, clients can
    /// connect to [`BrokerHandle::local_addrs`].
    pub fn start(self) -> Result<BrokerHandle, StartError> {
        if let Some(e) = self.invalid {
            return Err(e);
        }
        let embedding = runtime::Embedding {
            publish_capacity: self.publish_capacity,
            ingest: self.ingest,
            access: self.access,
        };
        runtime::start(self.config, embedding)
    }
}
