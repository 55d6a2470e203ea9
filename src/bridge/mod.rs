//! Bridges (`connection` blocks): each is an MQTT client of a remote broker that lives on
//! one shard's event loop, relaying between a remote session and a local one.
//!
//! This module is sans-IO: [`Settings`] (a `BridgeConfig` with its defaults resolved),
//! `TopicMap` (which filters each side subscribes to, how topics are renamed),
//! [`Link`] (the protocol relay and its QoS bookkeeping) and [`Backoff`] (when to try
//! again). The runtime (`runtime/bridge_link.rs`) owns the socket, name resolution (off
//! the shard thread), and the local connection into the broker. It never touches a
//! socket, a thread or the clock.

mod backoff;
pub mod figures;
mod link;
mod topics;

pub use backoff::Backoff;
pub use link::Link;

use std::time::Duration;

use crate::codec::ProtocolVersion;
use crate::config::{BridgeConfig, BridgeTopic};

/// One bridge's settings, defaults resolved as Mosquitto 2 resolves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub name: String,
    pub addresses: Vec<String>,
    pub round_robin: bool,
    pub topics: Vec<BridgeTopic>,
    pub version: ProtocolVersion,
    pub remote_clientid: String,
    pub local_clientid: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub clean: bool,
    pub local_clean: bool,
    pub keepalive: u16,
    pub try_private: bool,
    pub restart_timeout: (u32, Option<u32>),
    pub notifications: bool,
    pub notification_topic: String,
    pub notifications_local_only: bool,
    pub outgoing_retain: bool,
    pub max_packet_size: u32,
    pub attempt_unsubscribe: bool,
    pub start_once: bool,
    /// `start_type lazy`: connect when `threshold` messages wait, close when idle.
    pub lazy: Option<Lazy>,
}

/// How a `start_type lazy` bridge starts and stops (Mosquitto 2's semantics): it
/// connects when its local session holds at least `threshold` messages (queued or in
/// flight) for the remote, and closes the connection after `idle_timeout` without a
/// packet to or from the remote other than keep alive pings; then it waits for
/// `threshold` messages again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lazy {
    pub threshold: usize,
    pub idle_timeout: Duration,
}

/// This host's name (for the default client id), as Mosquitto takes it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Settings {
    pub fn new(b: &BridgeConfig) -> Self {
        let remote_clientid = b
            .remote_clientid
            .clone()
            .unwrap_or_else(|| format!("{}.{}", hostname(), b.name));
        let version = match b.protocol_version.as_deref() {
            Some("mqttv31") => ProtocolVersion::V31,
            Some("mqttv50") => ProtocolVersion::V5,
            _ => ProtocolVersion::V311,
        };
        Self {
            name: b.name.clone(),
            addresses: b.addresses.clone(),
            round_robin: b.round_robin,
            topics: b.topics.clone(),
            version,
            local_clientid: b
                .local_clientid
                .clone()
                .unwrap_or_else(|| format!("local.{remote_clientid}")),
            notification_topic: b
                .notification_topic
                .clone()
                .unwrap_or_else(|| format!("$SYS/broker/connection/{remote_clientid}/state")),
            remote_clientid,
            username: b.remote_username.clone(),
            password: b.remote_password.clone(),
            clean: b.cleansession,
            local_clean: b.local_cleansession.unwrap_or(b.cleansession),
            keepalive: b.keepalive_interval,
            try_private: b.try_private,
            restart_timeout: b.restart_timeout,
            notifications: b.notifications,
            notifications_local_only: b.notifications_local_only,
            outgoing_retain: b.outgoing_retain,
            max_packet_size: b.max_packet_size,
            attempt_unsubscribe: b.attempt_unsubscribe,
            start_once: b.start_once,
            lazy: b.start_lazy.then(|| Lazy {
                threshold: usize::try_from(b.threshold).unwrap_or(usize::MAX),
                idle_timeout: Duration::from_secs(u64::from(b.idle_timeout)),
            }),
        }
    }
}
