//! shardmq: a thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker, drop-in for Mosquitto.
//!
//! Layering, lowest first: [`codec`] <- [`topic`] <- [`session`] <- [`broker`] /
//! [`retained`] <- [`runtime`] <- this crate's embedding API. A lower layer never imports a
//! higher one, and nothing below `runtime` touches sockets, threads or the clock.

pub mod broker;
pub mod codec;
pub mod config;
pub mod log;
pub mod metrics;
pub mod retained;
pub mod runtime;
pub mod session;
pub mod topic;

pub use config::Config;
