//! Every option shardmq knows: each Mosquitto 2 `mosquitto.conf` option (as its man page
//! documents them, plus the aliases Mosquitto 2.0 accepts) and shardmq's own, with what
//! shardmq does with it. This one table drives the parser (an option that is not in it is
//! an error; what happens to the others is [`Support`]) and the option table in README.md
//! ([`markdown_table`], checked by a test so the two cannot drift).
//!
//! Fail closed: an option that concerns security, listening addresses or where messages
//! go is either honoured exactly ([`Support::Yes`]), accepted only with the value that
//! equals what shardmq does ([`Support::OnlyValue`]), or stops the start
//! ([`Support::NotYet`]). Only harmless tuning is a warning
//! ([`Support::Ignored`]). This module is data only: it never reads files.

/// What shardmq does with an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Support {
    /// Parsed and honoured (the note says where shardmq differs from Mosquitto).
    Yes,
    /// shardmq's own option; Mosquitto does not have it.
    Shardmq,
    /// Accepted only with this value, which is what shardmq does; any other value stops
    /// the start ("not supported yet").
    OnlyValue(&'static str),
    /// Not implemented yet; it concerns security, listening or routing, so it stops the
    /// start with file, line and option.
    NotYet,
    /// A bridge option: honoured inside a `connection` block (an error outside one).
    Bridge,
    /// Harmless tuning shardmq does not implement: a warning, then ignored.
    Ignored,
    /// Mosquitto 2 itself no longer uses it: accepted with this note (Mosquitto's).
    Deprecated(&'static str),
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct OptionInfo {
    /// The option name; a name ending in `*` is a prefix (`auth_opt_*`).
    pub name: &'static str,
    /// Whether and how shardmq supports it.
    pub support: Support,
    /// What shardmq does, for the README and for error and warning messages.
    pub note: &'static str,
}

const fn row(name: &'static str, support: Support, note: &'static str) -> OptionInfo {
    OptionInfo {
        name,
        support,
        note,
    }
}

use Support::{Bridge, Deprecated, Ignored, NotYet, OnlyValue, Shardmq, Yes};

/// Every option, sorted by name (checked by a test; looked up by binary search).
pub const OPTIONS: &[OptionInfo] = &[
    row("acl_file", Yes, "`user`, `topic`, `pattern` with `%u` / `%c`; an unknown keyword or access type stops the start"),
    row("address", Bridge, "`host[:port]` (several: see `addresses`); host names are resolved off the shard thread at each attempt"),
    row("addresses", Bridge, "tried in order: the next on failure; see `round_robin`"),
    row("allow_anonymous", Yes, ""),
    row("allow_duplicate_messages", Deprecated("The 'allow_duplicate_messages' option is now deprecated and will be removed in a future version."), "accepted: shardmq sends one copy per client for overlapping subscriptions, which satisfies both values"),
    row("allow_zero_length_clientid", Yes, ""),
    row("auth_opt_*", Ignored, "options of an auth plugin; `auth_plugin` itself stops the start"),
    row("auth_plugin", NotYet, "plugins cannot be loaded"),
    row("auth_plugin_deny_special_chars", Ignored, "only applies to auth plugins, which cannot be loaded"),
    row("auto_id_prefix", Yes, ""),
    row("autosave_interval", Yes, "seconds (or changes) between compactions of the append log into the snapshot"),
    row("autosave_on_changes", Yes, ""),
    row("bind_address", Yes, "the default listener (legacy, as `port`)"),
    row("bind_interface", Yes, "binds the interface's addresses (as Mosquitto) and sets SO_BINDTODEVICE; an unknown interface stops the start"),
    row("bridge_alpn", Bridge, "the ALPN protocol offered to a TLS remote"),
    row("bridge_attempt_unsubscribe", Bridge, "default `true`"),
    row("bridge_bind_address", Bridge, "an IP address (not a host name): the bridge's socket is bound to it before it connects"),
    row("bridge_cafile", Bridge, "turns TLS to the remote on (rustls); the remote's certificate must chain to it and name the address's host"),
    row("bridge_capath", Bridge, "as `bridge_cafile`, every certificate file of the directory"),
    row("bridge_certfile", Bridge, "client certificate for the remote (with `bridge_keyfile`)"),
    row("bridge_identity", Bridge, "TLS-PSK to the remote (OpenSSL, cargo feature `psk`), with `bridge_psk`; not with `bridge_cafile` / `bridge_capath`"),
    row("bridge_insecure", Bridge, "the remote's host name is not checked (its chain still is)"),
    row("bridge_keyfile", Bridge, "key of `bridge_certfile`"),
    row("bridge_max_packet_size", Bridge, "bigger messages are not forwarded (counted as dropped)"),
    row("bridge_outgoing_retain", Bridge, "default `true`"),
    row("bridge_protocol_version", Bridge, "`mqttv31`, `mqttv311` (default), `mqttv50` (`in` subscriptions with No Local)"),
    row("bridge_psk", Bridge, "the hexadecimal key of `bridge_identity`"),
    row("bridge_require_ocsp", NotYet, "rustls does not verify a stapled OCSP response itself, so the bridge would connect without the revocation check this asks for"),
    row("bridge_tls_version", Bridge, "the minimum (`tlsv1.2` default; rustls has no TLS 1.1, so `tlsv1.1` means 1.2)"),
    row("cafile", Yes, "see TLS"),
    row("capath", Yes, "see TLS"),
    row("certfile", Yes, "see TLS"),
    row("check_retain_source", Yes, "`true`: a retained message goes to a new subscriber only if its publisher (client id, user, listener, kept with it and persisted) may still write its topic under the ACL in force, as Mosquitto 2 (which does not ask whether that client still exists)"),
    row("ciphers", Yes, "see TLS"),
    row("ciphers_tls1.3", Yes, "see TLS"),
    row("cleansession", Bridge, "default `false` (the remote keeps the bridge's session and its QoS 1/2 messages)"),
    row("clientid", Bridge, "alias of `remote_clientid`"),
    row("clientid_prefixes", Yes, ""),
    row("connect_timeout", Shardmq, "close a connection that has not sent CONNECT S seconds after it was accepted (default 10, 1-3600)"),
    row("connection", Bridge, "see Bridges: the bridge is an MQTT client on a shard's event loop"),
    row("connection_messages", Yes, "also logs `New connection from ADDR:PORT on port N.`"),
    row("crlfile", Yes, "see TLS"),
    row("dhparamfile", Ignored, "rustls offers no DHE suites (ECDHE only), so there is nothing to configure"),
    row("http_acl", Shardmq, "`http_acl write USERNAME`: this password-file user may act through the HTTP console and JSON API (disconnect clients, delete retained messages); everyone else who logs in is read-only (the default); repeatable"),
    row("http_dir", Yes, "websockets listeners: files for plain HTTP requests (GET and HEAD; `/` is `index.html`; nothing outside the directory, see WebSockets); a missing directory stops the start; on an `mqtt` listener: a warning, no effect"),
    row("http_listener", Shardmq, "`http_listener PORT [ADDRESS]`: starts a listener block serving the HTTP console, `/metrics` (Prometheus) and the JSON API `/api/v1/` from the shard loops (off by default); HTTP basic authentication against the listener's `password_file` (a missing password file stops the start); TLS with the listener TLS options that follow (`certfile`, `keyfile`, ...; PSK refused)"),
    row("idle_timeout", Bridge, "default 60 s: a `start_type lazy` bridge closes its connection after this long without a packet to or from the remote other than keep alive pings"),
    row("include_dir", Yes, ""),
    row("keepalive_interval", Bridge, "default 60"),
    row("keyfile", Yes, "see TLS"),
    row("listener", Yes, "a port already in use (by anyone, even with SO_REUSEPORT) stops the start; `listener PORT` listens on IPv4 and IPv6 as Mosquitto; unix sockets are not supported"),
    row("local_cleansession", Bridge, "default: `cleansession`; `false` keeps `out` messages queued (bounded by `max_queued_messages` / `max_queued_bytes`, persisted with `persistence true`) while the remote is down"),
    row("local_clientid", Bridge, "default `local.REMOTE_CLIENTID`"),
    row("local_password", Bridge, "accepted: the bridge is a trusted local member (no password or ACL check), as in Mosquitto 2"),
    row("local_username", Bridge, "accepted: the bridge is a trusted local member (no password or ACL check), as in Mosquitto 2"),
    row("log_dest", Yes, "`topic` publishes lines on `$SYS/broker/log/E|W|N|I|M/subscribe|M/unsubscribe` (QoS 2, as Mosquitto; not debug lines; at most 1000 a second); `syslog` writes to the daemon facility"),
    row("log_facility", Ignored, "syslog lines use LOG_DAEMON"),
    row("log_timestamp", Yes, ""),
    row("log_timestamp_format", Yes, ""),
    row("log_type", Yes, "`debug` and `all` (and `-v`) write Mosquitto's packet trace (\"Received PUBLISH from ...\", \"Sending CONNACK to ...\"), line for line"),
    row("max_connect_packet_size", Shardmq, "largest CONNECT accepted (will and credentials included), so the most a connection buffers before CONNECT (default 65536)"),
    row("max_connection_rate", Shardmq, "new connections per second per listener (0 = off), against reconnect storms"),
    row("max_connections", Yes, "global or per listener (-1 = none)"),
    row("max_inflight_bytes", Yes, ""),
    row("max_inflight_messages", Yes, "default 20"),
    row("max_keepalive", Yes, ""),
    row("max_packet_size", Yes, ""),
    row("max_qos", Yes, "per listener: v5 CONNACK Maximum QoS; a PUBLISH above it disconnects (v5 DISCONNECT 0x9B), a will above it is refused (v5 CONNACK 0x9B), SUBSCRIBE is granted at most it"),
    row("max_queued_bytes", Yes, ""),
    row("max_queued_messages", Yes, "default 1000"),
    row("max_topic_alias", Yes, ""),
    row("maximum_qos", Yes, "Mosquitto's alias of `max_qos`"),
    row("memory_limit", Yes, "bytes; each of the N shards holds limit / N and refuses new PUBLISH packets while what its session queues, inflight windows and output queues keep alive is over its share (a gauge refreshed every 10 ms): v5 PUBACK / PUBREC 0x97 (quota exceeded), 3.1.1 QoS 1/2 disconnected unacknowledged (the client resends), QoS 0 dropped; counted in `$SYS/broker/publish/messages/refused/memory` and logged (rate-limited)"),
    row("message_size_limit", Yes, ""),
    row("mount_point", Yes, "per listener: prefixed to the topics and filters of its clients (wills included, inside `$share/GROUP/`), stripped from what they receive; ACLs see the mounted topic; `%u` / `%c` are literal there, as in Mosquitto (a warning says so)"),
    row("notification_topic", Bridge, "default `$SYS/broker/connection/REMOTE_CLIENTID/state`"),
    row("notifications", Bridge, "retained `1` / `0` on the notification topic, locally and (as the bridge's will) remotely"),
    row("notifications_local_only", Bridge, ""),
    row("password", Bridge, "alias of `remote_password`"),
    row("password_file", Yes, "`$6$` and `$7$` entries; make one with `shardmq passwd`"),
    row("per_listener_settings", Yes, "`allow_anonymous`, `password_file`, `acl_file`, `psk_file` per listener"),
    row("persistence", Yes, "see Persistence"),
    row("persistence_file", Yes, "default `mosquitto.db`; a file in Mosquitto's format there stops the start with the `shardmq import-mosquitto-db` command to run"),
    row("persistence_fsync", Shardmq, "`always`, `interval` or `never`: see Persistence"),
    row("persistence_location", Yes, ""),
    row("persistent_client_expiration", Yes, ""),
    row("pid_file", Yes, "written after privileges are dropped (as Mosquitto 2), removed at exit"),
    row("plugin", NotYet, "plugins cannot be loaded"),
    row("plugin_opt_*", Ignored, "options of a plugin; `plugin` itself stops the start"),
    row("port", Yes, "the default listener (legacy, as `bind_address`)"),
    row("protocol", Yes, "`mqtt` or `websockets` (MQTT over WebSockets, `wss://` with the TLS options; see WebSockets)"),
    row("psk_file", Yes, "see TLS"),
    row("psk_hint", Yes, "see TLS"),
    row("queue_qos0_messages", Yes, ""),
    row("remote_clientid", Bridge, "default `HOSTNAME.NAME`, as Mosquitto"),
    row("remote_password", Bridge, ""),
    row("remote_username", Bridge, ""),
    row("require_certificate", Yes, "see TLS"),
    row("restart_timeout", Bridge, "`BASE` (constant) or `BASE CAP` (jittered backoff); default `5 30`"),
    row("retain_available", Yes, ""),
    row("retained_persistence", Yes, "Mosquitto's alias of `persistence`"),
    row("retry_interval", Deprecated("The retry_interval option is no longer available."), "accepted and ignored, as by Mosquitto 2"),
    row("round_robin", Bridge, "default `false`: after a connection ends, start again from the first address, and while on a later one try the first every 5 s (TCP, as Mosquitto) and move back once it answers; `true`: go on to the next address"),
    row("set_tcp_nodelay", Yes, "default `true` in shardmq (writes are already coalesced once per loop iteration); `false` leaves Nagle's algorithm on"),
    row("shared_subscription_strategy", Shardmq, "which member of a `$share/GROUP/...` group gets each message: `round_robin` (default: spreads the stream evenly over the members, as Mosquitto and EMQX do, with no per-message hashing), `random`, `hash_client` (one publisher's messages always go to the same member while the group is unchanged), `hash_topic` (the same for one topic), or `sticky` (the same member until it is full or leaves); a full or unresponsive member is skipped in every case"),
    row("slow_subscriber_timeout", Shardmq, "disconnect a client stuck for S seconds without progress: its QoS 1/2 queue full and no acknowledgement, or its output full and none of it read (default 60, 0 = never); see Security"),
    row("socket_domain", Yes, "`ipv4` or `ipv6` only, per listener"),
    row("start_type", Bridge, "`automatic` (default), `once` (no new attempt after the first connection or attempt ends) or `lazy` (connects when `threshold` messages wait in its local session, closes after `idle_timeout`; needs a persistent local session)"),
    row("sys_interval", Yes, ""),
    row("threads", Shardmq, "number of shard threads (default: the cores the process may use)"),
    row("threshold", Bridge, "default 10: a `start_type lazy` bridge connects when this many messages (queued or in flight) wait for the remote"),
    row("tls_engine", NotYet, "keys in an OpenSSL engine cannot be used"),
    row("tls_engine_kpass_sha1", NotYet, "keys in an OpenSSL engine cannot be used"),
    row("tls_keyform", OnlyValue("pem"), "keys in an OpenSSL engine cannot be used"),
    row("tls_version", Yes, "the minimum version; see TLS"),
    row("topic", Bridge, "`PATTERN [in|out|both] [QOS] [LOCAL_PREFIX] [REMOTE_PREFIX]`, prefixes remapped as Mosquitto does"),
    row("try_private", Bridge, "default `true`: CONNECT protocol level with Mosquitto's bridge bit (0x80), retried without it when the remote refuses the version"),
    row("upgrade_outgoing_qos", Yes, "`true` delivers at the subscription's QoS, retained messages included (as Mosquitto; not MQTT-conformant)"),
    row("use_identity_as_username", Yes, "see TLS"),
    row("use_subject_as_username", Yes, "the verified client certificate's subject DN, in Mosquitto's (OpenSSL RFC 2253) form, is the username; needs `require_certificate true`; see TLS"),
    row("use_username_as_clientid", Yes, "per listener; a client without a username is refused (not authorised), as Mosquitto"),
    row("user", Yes, "when started as root: drop to this user after binding the listeners and loading TLS, password and ACL files; an unknown user stops the start. Unlike Mosquitto there is no default user: as root without `user`, shardmq warns and stays root"),
    row("username", Bridge, "alias of `remote_username`"),
    row("websockets_headers_size", Yes, "largest HTTP request head a websockets listener reads (0 or unset: 1024 bytes, at most 65535); a larger one gets 431"),
    row("websockets_log_level", Yes, "with `log_type websockets`, which lines shardmq writes (libwebsockets' bits): 1 refusals and protocol errors, 4 upgrades and closes, 8 files served, 16 pings, 64 request headers (default 0)"),
];

/// The row of `option` (prefix rows such as `auth_opt_*` included).
pub fn lookup(option: &str) -> Option<&'static OptionInfo> {
    if let Ok(i) = OPTIONS.binary_search_by(|r| r.name.cmp(option)) {
        return OPTIONS.get(i);
    }
    OPTIONS.iter().find(|r| {
        r.name
            .strip_suffix('*')
            .is_some_and(|prefix| option.starts_with(prefix) && option.len() > prefix.len())
    })
}

impl Support {
    /// The status column of the README table.
    fn status(self) -> String {
        match self {
            Self::Yes => "supported".into(),
            Self::Shardmq => "shardmq only".into(),
            Self::OnlyValue(v) => format!("only `{v}`; other values stop the start"),
            Self::NotYet => "not yet: stops the start".into(),
            Self::Bridge => "supported (bridge)".into(),
            Self::Ignored => "not yet: warning, ignored".into(),
            Self::Deprecated(_) => "deprecated: warning, ignored".into(),
        }
    }
}

/// The README's option table (markdown), one row per option.
pub fn markdown_table() -> String {
    let mut out = String::from("| option | status | what shardmq does |\n| --- | --- | --- |\n");
    for r in OPTIONS {
        let note = match r.support {
            Support::Deprecated(msg) if r.note.is_empty() => msg,
            _ => r.note,
        };
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            r.name,
            r.support.status(),
            note
        ));
    }
    out
}

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;
