//! mosquitto.conf-compatible configuration: parsed once, validated, then immutable.
//!
//! This module owns the [`Config`] type that every other layer reads, the parser for
//! mosquitto.conf syntax (with `include_dir`), and the embedded default. It must never
//! touch sockets; it reads files only when asked to load one. Errors name the file,
//! the line and the option, and every wrong line is reported, not just the first. It
//! fails closed: an unknown option is an error, and so is a Mosquitto option shardmq
//! cannot honour yet when it concerns security, listening or routing; only harmless
//! tuning it does not implement is a warning in [`Config::warnings`], for the caller to
//! log. [`options::OPTIONS`] is the one table that says which is which (and is the
//! README's option table).
//!
//! Files: `parse.rs` (lines and blocks), `bridge.rs` (bridge blocks), `values.rs` (one
//! value type per function), `options.rs` (every option and what happens to it),
//! `validate.rs` (checks across options).

mod bridge;
mod error;
pub mod example; // packaging/shardmq.conf
pub mod options;
mod parse;
mod parse_delivery;
mod validate;
mod values;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_blocks;
#[cfg(test)]
mod tests_delivery;
#[cfg(test)]
mod tests_tls;

pub use error::{Error, Location};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where log lines go (`log_dest`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogDest {
    /// Standard error (the default).
    Stderr,
    /// Standard output.
    Stdout,
    /// Appended to this file.
    File(PathBuf),
    /// The system log (syslog).
    Syslog,
    /// Published on `$SYS/broker/log/...` topics.
    Topic,
    /// Nowhere.
    None,
}

/// Which log lines are written (`log_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogTypes {
    /// `error` lines.
    pub error: bool,
    /// `warning` lines.
    pub warning: bool,
    /// `notice` lines.
    pub notice: bool,
    /// `information` lines.
    pub information: bool,
    /// `subscribe` lines (each SUBSCRIBE).
    pub subscribe: bool,
    /// `unsubscribe` lines (each UNSUBSCRIBE).
    pub unsubscribe: bool,
    /// `debug` lines (the packet trace).
    pub debug: bool,
    /// `websockets` lines.
    pub websockets: bool,
}

impl LogTypes {
    /// Mosquitto's default: error, warning, notice, information.
    pub const DEFAULT: Self = Self {
        error: true,
        warning: true,
        notice: true,
        information: true,
        subscribe: false,
        unsubscribe: false,
        debug: false,
        websockets: false,
    };
    /// `log_type all`.
    pub const ALL: Self = Self {
        error: true,
        warning: true,
        notice: true,
        information: true,
        subscribe: true,
        unsubscribe: true,
        debug: true,
        websockets: true,
    };
}

/// Logging: where (`log_dest`), what (`log_type`), and how lines look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `log_dest` lines, in order (default: standard error).
    pub dests: Vec<LogDest>,
    /// `log_type` lines.
    pub types: LogTypes,
    /// `connection_messages`: log each client's connection and disconnection.
    pub connection_messages: bool,
    /// `log_timestamp`: prefix each line with the time.
    pub timestamp: bool,
    /// strftime-like format of `log_timestamp_format`, if set.
    pub timestamp_format: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            dests: vec![LogDest::Stderr],
            types: LogTypes::DEFAULT,
            connection_messages: true,
            timestamp: true,
            timestamp_format: None,
        }
    }
}

/// TLS settings of one listener: certificates (rustls) or, with `psk_hint`, pre-shared
/// keys (OpenSSL, cargo feature `psk`). Mosquitto allows only one of the two per listener.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// `cafile`: CA certificates that verify client certificates.
    pub cafile: Option<PathBuf>,
    /// `capath`: a directory of CA certificates.
    pub capath: Option<PathBuf>,
    /// `certfile`: the listener's certificate chain (PEM).
    pub certfile: Option<PathBuf>,
    /// `keyfile`: the listener's private key (PEM).
    pub keyfile: Option<PathBuf>,
    /// `require_certificate`: clients must present a certificate the CA verifies.
    pub require_certificate: bool,
    /// The verified client certificate's CN, or the PSK identity, is the username.
    pub use_identity_as_username: bool,
    /// `use_subject_as_username`: the verified client certificate's subject DN (RFC 2253
    /// form, as Mosquitto prints it) is the username.
    pub use_subject_as_username: bool,
    /// `tls_version`: the minimum version, as Mosquitto 2 means it.
    pub tls_version: Option<String>,
    /// `crlfile`: PEM certificate revocation lists checked against client certificates.
    pub crlfile: Option<PathBuf>,
    /// `ciphers`: suites for TLS 1.2 (an OpenSSL cipher list on PSK listeners, a list of
    /// suite names on certificate listeners).
    pub ciphers: Option<String>,
    /// `ciphers_tls1.3`: TLS 1.3 suites.
    pub ciphers_tls13: Option<String>,
    /// `psk_hint`: makes this a TLS-PSK listener.
    pub psk_hint: Option<String>,
    /// The `psk_file` that applies to this listener (its own with `per_listener_settings`,
    /// else the global one); only set on PSK listeners.
    pub psk_file: Option<PathBuf>,
    /// Where each option above was set (option name, file and line), for error messages.
    pub origins: Vec<(String, Location)>,
}

impl TlsConfig {
    /// No TLS option was given (origins aside).
    pub fn is_empty(&self) -> bool {
        Self {
            origins: Vec::new(),
            ..self.clone()
        } == Self::default()
    }

    /// A TLS-PSK listener (`psk_hint`).
    pub fn is_psk(&self) -> bool {
        self.psk_hint.is_some()
    }

    /// Where `option` was last set, if it came from a file.
    pub fn origin(&self, option: &str) -> Option<&Location> {
        self.origins
            .iter()
            .rev()
            .find(|(o, _)| o == option)
            .map(|(_, at)| at)
    }
}

/// What a listener speaks (`protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ListenerProtocol {
    /// MQTT over TCP (or TLS).
    #[default]
    Mqtt,
    /// MQTT over WebSockets (over TLS with the TLS options: `wss://`).
    Websockets,
    /// The HTTP console, `/metrics` and the JSON API (`http_listener`); no MQTT.
    Http,
}

/// One `listener` block (or the default listener from top-level `port` / `bind_address`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The port; 0 binds a free one (see `BrokerHandle::local_addrs`).
    pub port: u16,
    /// `protocol mqtt|websockets`.
    pub protocol: ListenerProtocol,
    /// `http_dir`: files a websockets listener serves to plain HTTP requests, and where
    /// the option was set.
    pub http_dir: Option<(PathBuf, Location)>,
    /// `None` = all interfaces (Mosquitto's behaviour for `listener PORT` without address).
    pub bind_address: Option<String>,
    /// Per-listener connection limit; `None` = unlimited.
    pub max_connections: Option<usize>,
    /// TLS, when `certfile` / `keyfile` or `psk_hint` are set on the listener.
    pub tls: Option<TlsConfig>,
    /// `bind_interface`: listen only on this network interface (its addresses, and
    /// SO_BINDTODEVICE).
    pub bind_interface: Option<String>,
    /// `socket_domain`: only IPv4 or only IPv6; `None` = both, as Mosquitto.
    pub socket_domain: Option<SocketDomain>,
    /// Per-listener override of the global `allow_anonymous` (`per_listener_settings`).
    pub allow_anonymous: Option<bool>,
    /// `password_file` of this listener (only with `per_listener_settings true`).
    pub password_file: Option<PathBuf>,
    /// `acl_file` of this listener (only with `per_listener_settings true`).
    pub acl_file: Option<PathBuf>,
    /// `max_qos` / `maximum_qos` (0-2, default 2): the highest QoS clients of this
    /// listener may publish, subscribe with or set on their will.
    pub max_qos: u8,
    /// `mount_point`: prefixed to every topic and filter of this listener's clients on
    /// the way in, stripped on the way out.
    pub mount_point: Option<String>,
    /// `use_username_as_clientid`: a client's username replaces its client id (no
    /// username: refused, not authorised).
    pub use_username_as_clientid: bool,
    /// Where the `listener` (or first default-listener option) line was; `None` when the
    /// listener was not read from a file.
    pub defined_at: Option<Location>,
}

impl Listener {
    /// A plain MQTT listener on `port`, on `bind_address` (`None`: every interface).
    pub fn new(port: u16, bind_address: Option<String>) -> Self {
        Self {
            port,
            protocol: ListenerProtocol::Mqtt,
            http_dir: None,
            bind_address,
            max_connections: None,
            tls: None,
            bind_interface: None,
            socket_domain: None,
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            max_qos: 2,
            mount_point: None,
            use_username_as_clientid: false,
            defined_at: None,
        }
    }
}

/// `socket_domain ipv4|ipv6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketDomain {
    /// `ipv4`: IPv4 only.
    Ipv4,
    /// `ipv6`: IPv6 only.
    Ipv6,
}

/// One `connection` (bridge) block. Defaults are Mosquitto 2's (see
/// [`BridgeConfig::new`]); `bridge.rs` parses it, `crate::bridge` runs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BridgeConfig {
    /// The `connection` name.
    pub name: String,
    /// `host:port` (1883 when not given), tried in this order.
    pub addresses: Vec<String>,
    /// `round_robin` (default false: after a connection ends, start again from the first
    /// address; true: go on with the next one).
    pub round_robin: bool,
    /// `topic PATTERN [in|out|both] [QOS] [LOCAL_PREFIX] [REMOTE_PREFIX]` lines.
    pub topics: Vec<BridgeTopic>,
    /// Default `HOSTNAME.NAME`, as Mosquitto.
    pub remote_clientid: Option<String>,
    /// Default `local.REMOTE_CLIENTID`, as Mosquitto.
    pub local_clientid: Option<String>,
    /// `remote_username`.
    pub remote_username: Option<String>,
    /// `remote_password`.
    pub remote_password: Option<String>,
    /// Accepted for Mosquitto files; the bridge is a trusted local member (no password
    /// or ACL check), as Mosquitto 2's bridges are.
    pub local_username: Option<String>,
    /// `local_password` (accepted, unused: see `local_username`).
    pub local_password: Option<String>,
    /// Default false.
    pub cleansession: bool,
    /// Default: `cleansession`.
    pub local_cleansession: Option<bool>,
    /// Default 60.
    pub keepalive_interval: u16,
    /// `bridge_protocol_version`: "mqttv31", "mqttv311" (default) or "mqttv50".
    pub protocol_version: Option<String>,
    /// Default true.
    pub try_private: bool,
    /// `restart_timeout BASE [CAP]` in seconds: constant BASE without CAP, else a
    /// jittered exponential backoff from BASE up to CAP. Default 5 30.
    pub restart_timeout: (u32, Option<u32>),
    /// Default true.
    pub notifications: bool,
    /// Default `$SYS/broker/connection/REMOTE_CLIENTID/state`.
    pub notification_topic: Option<String>,
    /// `notifications_local_only`: notifications are published locally only, not to the remote.
    pub notifications_local_only: bool,
    /// Default true: the retain flag of forwarded messages is kept.
    pub outgoing_retain: bool,
    /// `bridge_max_packet_size` (0 = no limit, the default): bigger outgoing messages
    /// are dropped (counted).
    pub max_packet_size: u32,
    /// Default true: `in` topics are unsubscribed remotely before subscribing.
    pub attempt_unsubscribe: bool,
    /// `start_type once`: no new attempt after the first connection (or attempt) ends.
    pub start_once: bool,
    /// `start_type lazy`: connect when `threshold` messages wait for the remote, close
    /// after `idle_timeout` seconds without traffic (see `crate::bridge::Lazy`).
    pub start_lazy: bool,
    /// `idle_timeout` / `threshold` (only used by `start_type lazy`).
    pub idle_timeout: u32,
    /// Messages waiting for the remote that make a lazy bridge connect.
    pub threshold: u32,
    /// TLS to the remote: `bridge_cafile` / `bridge_capath` (either turns TLS on),
    /// `bridge_certfile` / `bridge_keyfile` (client certificate), `bridge_tls_version`
    /// (minimum), with the origins of the listener options they stand for (`cafile` ...).
    pub tls: TlsConfig,
    /// `bridge_insecure`: the remote's certificate chain is verified, its host name not.
    pub insecure: bool,
    /// `bridge_alpn`: the ALPN protocol offered to the remote.
    pub alpn: Option<String>,
    /// `bridge_bind_address`: the local address the bridge's socket is bound to before
    /// it connects.
    pub bind_address: Option<std::net::IpAddr>,
    /// `bridge_identity` / `bridge_psk` (hexadecimal): TLS-PSK to the remote.
    pub psk_identity: Option<String>,
    /// The pre-shared key, hexadecimal (`bridge_psk`).
    pub psk: Option<String>,
    /// Where the `connection` line was; `None` when not read from a file.
    pub defined_at: Option<Location>,
}

impl BridgeConfig {
    /// Whether the bridge connects with TLS (a CA to verify the remote is set).
    pub fn uses_tls(&self) -> bool {
        self.tls.cafile.is_some() || self.tls.capath.is_some()
    }

    /// Whether the bridge connects with TLS-PSK (`bridge_psk`).
    pub fn uses_psk(&self) -> bool {
        self.psk.is_some()
    }

    /// A bridge named `name` with Mosquitto 2's defaults.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            keepalive_interval: 60,
            try_private: true,
            restart_timeout: (5, Some(30)),
            notifications: true,
            outgoing_retain: true,
            attempt_unsubscribe: true,
            idle_timeout: 60,
            threshold: 10,
            ..Self::default()
        }
    }
}

/// One `topic` line of a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BridgeTopic {
    /// The topic pattern (may have wildcards; empty with prefixes: the prefix alone).
    pub pattern: String,
    /// "in", "out" or "both".
    pub direction: String,
    /// The QoS of the bridge's subscription and forwarded messages (0-2).
    pub qos: u8,
    /// Prefix added locally (removed when forwarded out).
    pub local_prefix: Option<String>,
    /// Prefix added on the remote (removed when forwarded in).
    pub remote_prefix: Option<String>,
}

/// The validated broker configuration. Defaults follow Mosquitto 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The `listener` blocks (and the default listener), in file order.
    pub listeners: Vec<Listener>,
    /// Number of shard threads; `None` = number of cores the process may use.
    pub threads: Option<usize>,
    /// Global connection limit (`max_connections`); `None` = unlimited (-1).
    pub max_connections: Option<usize>,
    /// QoS 1/2 messages in flight per client (`max_inflight_messages`, default 20;
    /// 0 = unlimited is mapped to 65535).
    pub max_inflight_messages: u16,
    /// `max_inflight_bytes` (0 = none): bytes of QoS 1/2 messages in flight per client.
    pub max_inflight_bytes: u64,
    /// Messages queued per client beyond the inflight window (`max_queued_messages`,
    /// default 1000; Mosquitto's 0 = no maximum is mapped to `usize::MAX`).
    pub max_queued_messages: usize,
    /// `max_queued_bytes` (0 = none): the memory an offline session's queue may hold,
    /// counted as what its messages keep alive (`Message::footprint`), and the output
    /// limit per connection (default 4 MiB), counted as the bytes queued plus a fixed
    /// cost per chunk (`OutQueue::held`).
    pub max_queued_bytes: u64,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0_messages: bool,
    /// `persistent_client_expiration`; `None` = never expire.
    pub persistent_client_expiration: Option<Duration>,
    /// `allow_anonymous` (default false with a listener, as Mosquitto 2).
    pub allow_anonymous: bool,
    /// `allow_zero_length_clientid`: v3.1.1 / v5 clients may send an empty client id (one is assigned).
    pub allow_zero_length_clientid: bool,
    /// `auto_id_prefix`: the prefix of assigned client ids.
    pub auto_id_prefix: String,
    /// `password_file`: Mosquitto's password file.
    pub password_file: Option<PathBuf>,
    /// `acl_file`: Mosquitto's ACL file.
    pub acl_file: Option<PathBuf>,
    /// The global `psk_file` (every PSK listener's, unless `per_listener_settings`).
    pub psk_file: Option<PathBuf>,
    /// `clientid_prefixes`: only clients whose id starts with this may connect.
    pub clientid_prefixes: Option<String>,
    /// `persistence`: sessions, retained messages and queued messages survive a restart.
    pub persistence: bool,
    /// `persistence_location`: the directory of the persistence files.
    pub persistence_location: Option<PathBuf>,
    /// `persistence_file`: the snapshot's file name (the log is next to it).
    pub persistence_file: String,
    /// `autosave_interval`: how often the log is compacted into a new snapshot.
    pub autosave_interval: Duration,
    /// `autosave_on_changes`: `autosave_interval` counts changes, not seconds.
    pub autosave_on_changes: bool,
    /// `persistence_fsync always|interval|never` (shardmq only): when the persistence log
    /// is fsynced. See [`PersistenceFsync`].
    pub persistence_fsync: PersistenceFsync,
    /// `log_dest`, `log_type` and the other logging options.
    pub log: LogConfig,
    /// `sys_interval`; zero disables $SYS updates.
    pub sys_interval: Duration,
    /// `pid_file`: where the process id is written at start.
    pub pid_file: Option<PathBuf>,
    /// `user`: when started as root, the user to switch to once the listeners are bound
    /// and the TLS, password and ACL files loaded. `None` = stay as started (Mosquitto
    /// would switch to `mosquitto`; shardmq warns instead).
    pub user: Option<String>,
    /// `set_tcp_nodelay`: TCP_NODELAY on client sockets (shardmq's default is `true`).
    pub set_tcp_nodelay: bool,
    /// `message_size_limit` (payload bytes); 0 = MQTT's maximum.
    pub message_size_limit: u32,
    /// `max_packet_size`; 0 = MQTT's maximum (268435455 + 5).
    pub max_packet_size: u32,
    /// `max_keepalive` (seconds, MQTT 5 server keep alive); 65535 = no limit.
    pub max_keepalive: u16,
    /// `max_topic_alias`: the Topic Alias Maximum announced to MQTT 5 clients (topic
    /// aliases a client may set); 0 = none. Default 10, as in Mosquitto.
    pub max_topic_alias: u16,
    /// `max_connection_rate` (shardmq only): new connections accepted per second on each
    /// listener, a token bucket of that size; connections past it are closed at once and
    /// counted. 0 = unlimited (the default), guards against reconnect storms.
    pub max_connection_rate: u32,
    /// `slow_subscriber_timeout` (shardmq only, seconds): a client whose output queue is
    /// full (`max_queued_bytes`) and that has not read a byte for this long is
    /// disconnected, so one dead subscriber cannot stall its publishers forever.
    /// 0 = never (default 60).
    pub slow_subscriber_timeout: Duration,
    /// `connect_timeout` (shardmq only, seconds): a connection that has not sent a valid
    /// CONNECT this long after it was accepted is closed, however slowly it trickles
    /// bytes in (default 10, at least 1).
    pub connect_timeout: Duration,
    /// `max_connect_packet_size` (shardmq only, bytes): the largest CONNECT accepted, will
    /// and credentials included, and so the most a connection can make the broker buffer
    /// before it has sent CONNECT; a larger one is refused from its fixed header, before
    /// its body arrives. `max_packet_size`, if lower, applies too. Default 65536: MQTT's
    /// fields allow more (a 64 KiB will payload plus properties), a real client sends a
    /// few hundred bytes; raise it for clients with very large wills.
    pub max_connect_packet_size: u32,
    /// `retain_available` (default true): false refuses retained messages.
    pub retain_available: bool,
    /// `upgrade_outgoing_qos`: deliver at the subscription's QoS even when the message
    /// was published at a lower one (Mosquitto's non-conforming option).
    pub upgrade_outgoing_qos: bool,
    /// `check_retain_source`: a retained message is sent to a new subscriber only if its
    /// publisher may still publish to its topic under the ACL in force.
    pub check_retain_source: bool,
    /// `memory_limit` (bytes, 0 = none): past it new PUBLISH packets are refused. Each
    /// shard holds its share (the limit divided by the number of shards) and compares it
    /// with what its session queues, inflight windows and output queues keep alive.
    pub memory_limit: u64,
    /// `shared_subscription_strategy` (shardmq only): which member of a shared
    /// subscription group gets each message (default round robin).
    pub shared_subscription_strategy: ShareStrategy,
    /// `websockets_headers_size`: the largest HTTP request head a websockets listener
    /// reads (Mosquitto's default 1024, also what 0 means).
    pub websockets_headers_size: usize,
    /// `websockets_log_level`: which WebSocket detail lines `log_type websockets` writes
    /// (libwebsockets' bits, see `ws::conn::log_bits`).
    pub websockets_log_level: u32,
    /// `http_acl write USER`: users who may act through the HTTP console (disconnect,
    /// delete retained); everyone else who logs in there is read-only.
    pub http_writers: Vec<String>,
    /// The `connection` (bridge) blocks, in file order.
    pub bridges: Vec<BridgeConfig>,
    /// Files that were read to build this config (for messages and reloads).
    pub source_files: Vec<PathBuf>,
    /// `per_listener_settings`: `allow_anonymous`, `password_file` and `acl_file` inside
    /// a `listener` block apply to that listener only.
    pub per_listener_settings: bool,
    /// Mosquitto 2's "local only" mode: no listener was configured, so the only listener
    /// is the implied one on loopback port 1883 (and anonymous clients are allowed).
    pub local_only: bool,
    /// Problems that did not stop parsing (unknown or unsupported options), each naming
    /// file, line and option. The caller logs them.
    pub warnings: Vec<String>,
}

/// When the persistence log is fsynced (`persistence_fsync`). Every setting writes each
/// event-loop iteration's changes to the log in one write, so a crash of the process
/// (`kill -9`) loses nothing the kernel has; the setting decides what survives power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PersistenceFsync {
    /// fdatasync once per iteration before any output is written: a PUBACK / PUBREC is
    /// sent only once the message it acknowledges is on disk.
    Always,
    /// fdatasync at most once per second (the default): power loss may lose the last
    /// second of acknowledged messages.
    #[default]
    Interval,
    /// Never fsync (the OS writes back when it likes); compaction still syncs snapshots.
    Never,
}

/// How a shared subscription group (`$share/GROUP/FILTER`) picks the member that gets a
/// message (`shared_subscription_strategy`). Whatever the strategy, a member that is full
/// (output or QoS 1/2 queue) or offline is skipped while another one has room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ShareStrategy {
    /// Each member in turn (the default): the stream is split evenly, as Mosquitto and
    /// EMQX do, at the cost of a counter per group.
    #[default]
    RoundRobin,
    /// A member picked at random for each message.
    Random,
    /// By a hash of the publisher's client id: one publisher's messages keep going to
    /// the same member while the group does not change.
    HashClient,
    /// By a hash of the topic: one topic's messages keep going to the same member.
    HashTopic,
    /// The same member until it is full, leaves or goes offline.
    Sticky,
}

impl ShareStrategy {
    /// The option's value names.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "round_robin" => Self::RoundRobin,
            "random" => Self::Random,
            "hash_client" => Self::HashClient,
            "hash_topic" => Self::HashTopic,
            "sticky" => Self::Sticky,
            _ => return None,
        })
    }
}

/// Mosquitto's default `persistence_file`, so an operator's file is found where Mosquitto
/// keeps it (and, if it is Mosquitto's format, refused with the import command to run).
pub const DEFAULT_PERSISTENCE_FILE: &str = "mosquitto.db";

/// The default `persistence_file` of shardmq before it took Mosquitto's name.
pub const OLD_DEFAULT_PERSISTENCE_FILE: &str = "shardmq.db";

impl Default for Config {
    /// The embedded default: like Mosquitto 2 with no config file, one listener on
    /// loopback port 1883 and anonymous clients allowed.
    fn default() -> Self {
        Self {
            listeners: vec![Listener::new(1883, Some("127.0.0.1".into()))],
            threads: None,
            max_connections: None,
            max_inflight_messages: 20,
            max_inflight_bytes: 0,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            persistent_client_expiration: None,
            allow_anonymous: true,
            allow_zero_length_clientid: true,
            auto_id_prefix: "auto-".into(),
            password_file: None,
            acl_file: None,
            psk_file: None,
            clientid_prefixes: None,
            persistence: false,
            persistence_location: None,
            persistence_file: DEFAULT_PERSISTENCE_FILE.into(),
            autosave_interval: Duration::from_secs(1800),
            autosave_on_changes: false,
            persistence_fsync: PersistenceFsync::Interval,
            log: LogConfig::default(),
            sys_interval: Duration::from_secs(10),
            pid_file: None,
            user: None,
            set_tcp_nodelay: true,
            message_size_limit: 0,
            max_packet_size: 0,
            max_keepalive: 65535,
            max_topic_alias: 10,
            max_connection_rate: 0,
            slow_subscriber_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_connect_packet_size: 65_536,
            retain_available: true,
            upgrade_outgoing_qos: false,
            check_retain_source: false,
            memory_limit: 0,
            shared_subscription_strategy: ShareStrategy::RoundRobin,
            websockets_headers_size: 1024,
            websockets_log_level: 0,
            http_writers: Vec::new(),
            bridges: Vec::new(),
            source_files: Vec::new(),
            per_listener_settings: false,
            local_only: true,
            warnings: Vec::new(),
        }
    }
}

impl Config {
    /// A config with one listener on `addr` (port 0 picks a free port) and otherwise the
    /// embedded default. Meant for tests and embedding.
    pub fn with_listener(addr: SocketAddr) -> Self {
        Self {
            listeners: vec![Listener::new(addr.port(), Some(addr.ip().to_string()))],
            local_only: false,
            ..Self::default()
        }
    }

    /// Whether listener `index` takes a client's verified certificate identity as its
    /// user name (`use_identity_as_username`).
    pub fn uses_identity_as_username(&self, index: usize) -> bool {
        self.listeners
            .get(index)
            .and_then(|l| l.tls.as_ref())
            .is_some_and(|t| t.use_identity_as_username || t.use_subject_as_username)
    }

    /// Listener `index`'s `max_qos` (2 for an unknown index).
    pub fn max_qos(&self, index: usize) -> u8 {
        self.listeners.get(index).map_or(2, |l| l.max_qos)
    }

    /// Listener `index`'s `mount_point`, if any.
    pub fn mount_point(&self, index: usize) -> Option<&str> {
        self.listeners
            .get(index)
            .and_then(|l| l.mount_point.as_deref())
    }
}
