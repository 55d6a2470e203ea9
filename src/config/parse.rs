//! The mosquitto.conf reader: lines, `listener` blocks, `include_dir`.
//!
//! Mosquitto has no block terminators: a `listener` line makes the following
//! per-listener options apply to that listener, a `connection` line makes the following
//! bridge options apply to that bridge (see `bridge.rs`), until the next such line.
//! Per-listener options before any `listener` (and the legacy `port` / `bind_address`)
//! configure the default listener. Every option is first looked up in
//! [`super::options::OPTIONS`], which decides whether it is parsed here, refused, or
//! warned about; an option that is not there is an error. A wrong line does not stop
//! the reading: every wrong line is reported. This module turns text into a [`Config`];
//! it reads files only for [`Config::from_file`] and `include_dir`, and never touches
//! sockets.

use std::path::{Path, PathBuf};

use super::error::{Error, Location};
use super::options::{self, Support};
use super::values::{parse_int, Line};
use super::{Config, Listener, ListenerProtocol, LogDest, LogTypes, SocketDomain, TlsConfig};

/// How deep `include_dir` may nest (a directory including itself stops here).
const MAX_INCLUDE_DEPTH: usize = 8;

impl Config {
    /// Reads and validates a mosquitto.conf-style file (and its `include_dir`s).
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_str(&String::from_utf8_lossy(&bytes), path)
    }

    /// Parses and validates config text; `file_name` is used in messages and as the
    /// first entry of `source_files`. `include_dir` lines still read the file system.
    pub fn parse_str(text: &str, file_name: &Path) -> Result<Self, Error> {
        Parser::read(text, file_name)
    }
}

pub(super) struct Parser {
    pub(super) cfg: Config,
    /// Built from `port`, `bind_address` and per-listener options before any `listener`.
    default_listener: Option<Listener>,
    listeners: Vec<Listener>,
    /// Index in `cfg.bridges` of the current `connection` block.
    pub(super) bridge: Option<usize>,
    log_types_set: bool,
    log_dests_set: bool,
    allow_anonymous_set: bool,
    /// Where the global `psk_file` was set.
    psk_file_at: Option<Location>,
    /// Every wrong line, in order.
    errors: Vec<Error>,
}

impl Parser {
    /// Parses and validates `text` (bridge blocks included; see `bridge.rs`).
    pub(super) fn read(text: &str, file_name: &Path) -> Result<Config, Error> {
        let mut parser = Self::new();
        parser.cfg.source_files.push(file_name.to_path_buf());
        parser.parse_text(text, file_name, 0);
        parser.finish()
    }

    pub(super) fn new() -> Self {
        let mut cfg = Config::default();
        cfg.listeners.clear();
        Self {
            cfg,
            default_listener: None,
            listeners: Vec::new(),
            bridge: None,
            log_types_set: false,
            log_dests_set: false,
            allow_anonymous_set: false,
            psk_file_at: None,
            errors: Vec::new(),
        }
    }

    fn parse_text(&mut self, text: &str, file: &Path, depth: usize) {
        for (i, raw) in text.lines().enumerate() {
            if let Some(line) = Line::split(raw, Location::new(file, i + 1)) {
                if let Err(e) = self.option(&line, depth) {
                    self.errors.push(e);
                }
            }
        }
    }

    fn finish(mut self) -> Result<Config, Error> {
        match self.errors.len() {
            0 => {}
            1 => return Err(self.errors.remove(0)),
            _ => return Err(Error::Many(self.errors)),
        }
        let mut listeners: Vec<Listener> = self.default_listener.take().into_iter().collect();
        listeners.append(&mut self.listeners);
        let mut cfg = self.cfg;
        for l in &mut listeners {
            resolve_psk_file(
                l,
                cfg.psk_file.as_ref(),
                self.psk_file_at.as_ref(),
                &mut cfg.warnings,
            );
            if l.tls.as_ref().is_some_and(TlsConfig::is_empty) {
                l.tls = None;
            }
            if let (Some((_, at)), ListenerProtocol::Mqtt | ListenerProtocol::Http) =
                (&l.http_dir, l.protocol)
            {
                cfg.warnings.push(format!(
                    "Warning: http_dir in {at} has no effect: listener {} is not a websockets \
                     listener.",
                    l.port
                ));
            }
        }
        if listeners.is_empty() {
            // Mosquitto 2: no listener configured = local only, anonymous allowed.
            listeners.push(Listener::new(1883, Some("127.0.0.1".into())));
            cfg.local_only = true;
            if !self.allow_anonymous_set {
                cfg.allow_anonymous = true;
            }
        } else {
            cfg.local_only = false;
            if !self.allow_anonymous_set {
                cfg.allow_anonymous = false;
            }
        }
        cfg.listeners = listeners;
        cfg.validate()?;
        Ok(cfg)
    }

    pub(super) fn warn(&mut self, line: &Line<'_>, what: &str) {
        self.cfg
            .warnings
            .push(format!("Warning: {} in {}: {what}.", line.option, line.at));
    }

    /// The listener per-listener options apply to: the last `listener` block, or the
    /// default listener (created on first use).
    pub(super) fn listener(&mut self, line: &Line<'_>) -> &mut Listener {
        if let Some(l) = self.listeners.last_mut() {
            return l;
        }
        self.default_listener.get_or_insert_with(|| Listener {
            defined_at: Some(line.at.clone()),
            ..Listener::new(1883, None)
        })
    }

    /// The TLS settings of the current listener, recording that `line` set one.
    pub(super) fn tls(&mut self, line: &Line<'_>) -> &mut TlsConfig {
        let tls = self
            .listener(line)
            .tls
            .get_or_insert_with(TlsConfig::default);
        tls.origins.push((line.option.to_string(), line.at.clone()));
        tls
    }

    /// Whether a security option on this line applies to the current listener only.
    fn per_listener(&self) -> bool {
        self.cfg.per_listener_settings && !self.listeners.is_empty()
    }

    /// One line: what the option table says about it, then its value.
    pub(super) fn option(&mut self, line: &Line<'_>, depth: usize) -> Result<(), Error> {
        let Some(info) = options::lookup(line.option) else {
            return Err(Error::Unknown {
                at: line.at.clone(),
                option: line.option.to_string(),
            });
        };
        match info.support {
            Support::Yes | Support::Shardmq => self.supported(line, depth),
            Support::Bridge => self.bridge_option(line),
            Support::NotYet => Err(Error::NotYet {
                at: line.at.clone(),
                option: line.option.to_string(),
                reason: info.note.to_string(),
            }),
            Support::OnlyValue(accepted) => {
                let value = line.value()?;
                if value == accepted {
                    Ok(())
                } else {
                    Err(Error::NotYet {
                        at: line.at.clone(),
                        option: format!("{} {value}", line.option),
                        reason: format!("only '{} {accepted}' is", line.option),
                    })
                }
            }
            Support::Ignored => {
                line.value()?;
                self.warn(line, &format!("not supported, ignored ({})", info.note));
                Ok(())
            }
            Support::Deprecated(message) => {
                if line.option == "allow_duplicate_messages" {
                    line.bool()?;
                }
                self.warn(line, message.trim_end_matches('.'));
                Ok(())
            }
        }
    }

    /// An option shardmq implements.
    fn supported(&mut self, line: &Line<'_>, depth: usize) -> Result<(), Error> {
        match line.option {
            // Listeners.
            "listener" => self.new_listener(line)?,
            "http_listener" => {
                self.new_listener(line)?;
                if let Some(l) = self.listeners.last_mut() {
                    l.protocol = ListenerProtocol::Http;
                }
            }
            "http_acl" => {
                let tokens = line.tokens()?;
                match tokens.as_slice() {
                    ["write", user] => self.cfg.http_writers.push((*user).to_string()),
                    _ => return Err(line.invalid_value(line.rest, "expected `write USERNAME`")),
                }
            }
            "port" => {
                let port = port_of(line, line.value()?)?;
                self.default_listener(line).port = port;
            }
            "bind_address" => {
                let addr = line.string()?;
                self.default_listener(line).bind_address = Some(addr);
            }
            "max_connections" => {
                let n = line.int(-1, i64::from(i32::MAX))?;
                let n = usize::try_from(n).ok();
                match self.listeners.last_mut() {
                    Some(l) => l.max_connections = n,
                    None => self.cfg.max_connections = n,
                }
            }
            "bind_interface" => {
                let name = line.string()?;
                // IFNAMSIZ - 1; a longer name can never exist.
                if name.len() > 15
                    || name.contains(['/', '\0'])
                    || name.contains(char::is_whitespace)
                {
                    return Err(line.invalid_value(&name, "not a network interface name"));
                }
                self.listener(line).bind_interface = Some(name);
            }
            "socket_domain" => {
                let domain = match line.value()? {
                    "ipv4" => SocketDomain::Ipv4,
                    "ipv6" => SocketDomain::Ipv6,
                    other => return Err(line.invalid_value(other, "expected ipv4 or ipv6")),
                };
                self.listener(line).socket_domain = Some(domain);
            }
            "protocol" => {
                if self
                    .listeners
                    .last()
                    .is_some_and(|l| l.protocol == ListenerProtocol::Http)
                {
                    return Err(line.invalid_value(
                        line.rest,
                        "an http_listener block serves HTTP only; start a `listener` block for MQTT",
                    ));
                }
                self.listener(line).protocol = match line.value()? {
                    "mqtt" => ListenerProtocol::Mqtt,
                    "websockets" => ListenerProtocol::Websockets,
                    other => return Err(line.invalid_value(other, "expected mqtt or websockets")),
                };
            }
            "http_dir" => {
                let dir = line.path()?;
                self.listener(line).http_dir = Some((dir, line.at.clone()));
            }
            "websockets_headers_size" => {
                let n = line.int(0, 65535)?.unsigned_abs();
                self.cfg.websockets_headers_size = match usize::try_from(n) {
                    Ok(0) | Err(_) => 1024,
                    Ok(n) => n,
                };
            }
            "websockets_log_level" => {
                self.cfg.websockets_log_level = u32_of(line.int(0, i64::from(i32::MAX))?);
            }
            "cafile" => self.tls(line).cafile = Some(line.path()?),
            "capath" => self.tls(line).capath = Some(line.path()?),
            "certfile" => self.tls(line).certfile = Some(line.path()?),
            "keyfile" => self.tls(line).keyfile = Some(line.path()?),
            "require_certificate" => self.tls(line).require_certificate = line.bool()?,
            "use_identity_as_username" => {
                self.tls(line).use_identity_as_username = line.bool()?;
            }
            "tls_version" => {
                let v = line.value()?;
                if !matches!(v, "tlsv1.1" | "tlsv1.2" | "tlsv1.3") {
                    return Err(line.invalid_value(v, "expected tlsv1.1, tlsv1.2 or tlsv1.3"));
                }
                self.tls(line).tls_version = Some(v.to_string());
            }
            "crlfile" => self.tls(line).crlfile = Some(line.path()?),
            "ciphers" => self.tls(line).ciphers = Some(line.string()?),
            "ciphers_tls1.3" => self.tls(line).ciphers_tls13 = Some(line.string()?),
            "psk_hint" => {
                psk_supported(line)?;
                let hint = line.string()?;
                // OpenSSL's limit for an identity hint (PSK_MAX_IDENTITY_LEN).
                if hint.len() > 128 || hint.contains('\0') {
                    return Err(line.invalid_value(&hint, "at most 128 bytes, no NUL"));
                }
                self.tls(line).psk_hint = Some(hint);
            }
            "psk_file" => {
                psk_supported(line)?;
                let p = line.path()?;
                if self.per_listener() {
                    self.tls(line).psk_file = Some(p);
                } else {
                    self.cfg.psk_file = Some(p);
                    self.psk_file_at = Some(line.at.clone());
                }
            }

            // Security.
            "per_listener_settings" => self.cfg.per_listener_settings = line.bool()?,
            "allow_anonymous" => {
                let v = line.bool()?;
                if self.per_listener() {
                    self.listener(line).allow_anonymous = Some(v);
                } else {
                    self.cfg.allow_anonymous = v;
                    self.allow_anonymous_set = true;
                }
            }
            "password_file" => {
                let p = line.path()?;
                if self.per_listener() {
                    self.listener(line).password_file = Some(p);
                } else {
                    self.cfg.password_file = Some(p);
                }
            }
            "acl_file" => {
                let p = line.path()?;
                if self.per_listener() {
                    self.listener(line).acl_file = Some(p);
                } else {
                    self.cfg.acl_file = Some(p);
                }
            }
            "allow_zero_length_clientid" => self.cfg.allow_zero_length_clientid = line.bool()?,
            "auto_id_prefix" => self.cfg.auto_id_prefix = line.string()?,
            "clientid_prefixes" => self.cfg.clientid_prefixes = Some(line.string()?),

            // Limits and queues.
            "max_inflight_messages" => {
                let n = line.int(0, 65535)?;
                self.cfg.max_inflight_messages = u16::try_from(n)
                    .ok()
                    .filter(|&n| n != 0)
                    .unwrap_or(u16::MAX);
            }
            "max_inflight_bytes" => {
                self.cfg.max_inflight_bytes = line.int(0, i64::MAX)?.unsigned_abs()
            }
            "max_queued_messages" => {
                let n = line.int(0, i64::MAX)?;
                self.cfg.max_queued_messages = usize::try_from(n)
                    .ok()
                    .filter(|&n| n != 0)
                    .unwrap_or(usize::MAX);
            }
            "max_queued_bytes" => self.cfg.max_queued_bytes = line.int(0, i64::MAX)?.unsigned_abs(),
            "queue_qos0_messages" => self.cfg.queue_qos0_messages = line.bool()?,
            "message_size_limit" => {
                self.cfg.message_size_limit = u32_of(line.int(0, 268_435_455)?);
            }
            "max_packet_size" => {
                let n = line.int(0, 268_435_460)?;
                if (1..20).contains(&n) {
                    return Err(
                        line.invalid_value(line.rest, "must be 0 (no limit) or at least 20")
                    );
                }
                self.cfg.max_packet_size = u32_of(n);
            }
            "max_keepalive" => {
                self.cfg.max_keepalive = u16::try_from(line.int(0, 65535)?).unwrap_or(u16::MAX)
            }
            "max_topic_alias" => {
                self.cfg.max_topic_alias = u16::try_from(line.int(0, 65535)?).unwrap_or(u16::MAX)
            }
            "max_connection_rate" => {
                self.cfg.max_connection_rate = u32::try_from(line.int(0, 1_000_000)?).unwrap_or(0)
            }
            "slow_subscriber_timeout" => self.cfg.slow_subscriber_timeout = line.seconds()?,
            "connect_timeout" => {
                let secs = line.int(1, 3600)?;
                self.cfg.connect_timeout = std::time::Duration::from_secs(secs.unsigned_abs());
            }
            "max_connect_packet_size" => {
                self.cfg.max_connect_packet_size = u32_of(line.int(20, 268_435_460)?);
            }
            "retain_available" => self.cfg.retain_available = line.bool()?,
            "shared_subscription_strategy" => {
                let v = line.value()?;
                self.cfg.shared_subscription_strategy =
                    super::ShareStrategy::parse(v).ok_or_else(|| {
                        line.invalid_value(
                            v,
                            "expected round_robin, random, hash_client, hash_topic or sticky",
                        )
                    })?;
            }
            "threads" => {
                self.cfg.threads = if line.value()? == "auto" {
                    None
                } else {
                    usize::try_from(line.int(0, 1024)?).ok().filter(|&n| n != 0)
                };
            }

            // Persistence.
            "persistence" | "retained_persistence" => self.cfg.persistence = line.bool()?,
            "persistence_location" => self.cfg.persistence_location = Some(line.path()?),
            "persistence_file" => self.cfg.persistence_file = line.string()?,
            "autosave_interval" => self.cfg.autosave_interval = line.seconds()?,
            "autosave_on_changes" => self.cfg.autosave_on_changes = line.bool()?,
            "persistence_fsync" => {
                self.cfg.persistence_fsync = match line.value()? {
                    "always" => super::PersistenceFsync::Always,
                    "interval" => super::PersistenceFsync::Interval,
                    "never" => super::PersistenceFsync::Never,
                    other => {
                        return Err(line.invalid_value(other, "expected always, interval or never"))
                    }
                };
            }
            "persistent_client_expiration" => {
                self.cfg.persistent_client_expiration = Some(line.expiration()?);
            }

            // Logging and the rest.
            "log_dest" => self.log_dest(line)?,
            "log_type" => self.log_type(line)?,
            "connection_messages" => self.cfg.log.connection_messages = line.bool()?,
            "log_timestamp" => self.cfg.log.timestamp = line.bool()?,
            "log_timestamp_format" => self.cfg.log.timestamp_format = Some(line.string()?),
            "sys_interval" => self.cfg.sys_interval = line.seconds()?,
            "pid_file" => self.cfg.pid_file = Some(line.path()?),
            "user" => {
                let user = line.string()?;
                if user.contains(char::is_whitespace) || user.contains(['\0', ':', '/']) {
                    return Err(line.invalid_value(&user, "not a user name"));
                }
                self.cfg.user = Some(user);
            }
            "set_tcp_nodelay" => self.cfg.set_tcp_nodelay = line.bool()?,
            "include_dir" => self.include_dir(line, depth)?,

            // In the table as supported but not handled above: a bug, caught by a test.
            other => {
                if !self.delivery_option(line)? {
                    return Err(
                        line.invalid(format!("option {other} is not handled by the parser"))
                    );
                }
            }
        }
        Ok(())
    }

    /// The default listener (legacy `port` / `bind_address`), created on first use.
    fn default_listener(&mut self, line: &Line<'_>) -> &mut Listener {
        self.default_listener.get_or_insert_with(|| Listener {
            defined_at: Some(line.at.clone()),
            ..Listener::new(1883, None)
        })
    }

    /// `listener PORT [BIND_ADDRESS]`.
    fn new_listener(&mut self, line: &Line<'_>) -> Result<(), Error> {
        let tokens = line.tokens()?;
        let (port, bind) = match tokens.as_slice() {
            [port] => (*port, None),
            [port, bind] => (*port, Some((*bind).to_string())),
            _ => return Err(line.invalid_value(line.rest, "expected PORT [BIND_ADDRESS]")),
        };
        let port = port_of(line, port)?;
        self.listeners.push(Listener {
            defined_at: Some(line.at.clone()),
            ..Listener::new(port, bind)
        });
        Ok(())
    }

    /// `log_dest stderr|stdout|syslog|topic|none|file PATH`; the first one replaces the
    /// default (stderr), later ones add.
    fn log_dest(&mut self, line: &Line<'_>) -> Result<(), Error> {
        let value = line.value()?;
        let (kind, arg) = match value.find(char::is_whitespace) {
            Some(i) => (&value[..i], value[i..].trim()),
            None => (value, ""),
        };
        let dest = match (kind, arg) {
            ("stderr", "") => LogDest::Stderr,
            ("stdout", "") => LogDest::Stdout,
            ("syslog", "") => LogDest::Syslog,
            ("topic", "") => LogDest::Topic,
            ("none", "") => LogDest::None,
            ("file", "") => return Err(line.invalid_value(value, "log_dest file needs a path")),
            ("file", path) => LogDest::File(PathBuf::from(path)),
            _ => {
                return Err(line.invalid_value(
                    value,
                    "expected stderr, stdout, syslog, topic, none or file PATH",
                ))
            }
        };
        let dests = &mut self.cfg.log.dests;
        if !self.log_dests_set {
            dests.clear();
            self.log_dests_set = true;
        }
        if dest == LogDest::None {
            dests.clear();
        } else if !dests.contains(&dest) {
            dests.push(dest);
        }
        Ok(())
    }

    /// `log_type NAME`; the first one replaces the defaults, later ones add.
    fn log_type(&mut self, line: &Line<'_>) -> Result<(), Error> {
        let value = line.value()?;
        let types = &mut self.cfg.log.types;
        if !self.log_types_set {
            *types = LogTypes::default();
            self.log_types_set = true;
        }
        match value {
            "error" => types.error = true,
            "warning" => types.warning = true,
            "notice" => types.notice = true,
            "information" => types.information = true,
            "subscribe" => types.subscribe = true,
            "unsubscribe" => types.unsubscribe = true,
            "debug" => types.debug = true,
            "websockets" => types.websockets = true,
            "all" => *types = LogTypes::ALL,
            "none" => *types = LogTypes::default(),
            other => {
                return Err(line.invalid_value(
                    other,
                    "expected error, warning, notice, information, subscribe, unsubscribe, \
                     debug, websockets, all or none",
                ))
            }
        }
        Ok(())
    }

    /// `include_dir DIR`: every `*.conf` in DIR, in ASCII order of the file names.
    fn include_dir(&mut self, line: &Line<'_>, depth: usize) -> Result<(), Error> {
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(Error::IncludeTooDeep {
                at: line.at.clone(),
                max: MAX_INCLUDE_DEPTH,
            });
        }
        let dir = line.path()?;
        let unreadable = |path: &Path, source| Error::UnreadableInclude {
            at: line.at.clone(),
            option: line.option.to_string(),
            path: path.to_path_buf(),
            source,
        };
        let entries = std::fs::read_dir(&dir).map_err(|e| unreadable(&dir, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| unreadable(&dir, e))?.path();
            let is_conf = path.extension().is_some_and(|e| e == "conf");
            // metadata() follows symlinks, as Mosquitto does.
            if is_conf && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                files.push(path);
            }
        }
        // Byte order of the names = ASCII order (Mosquitto sorts case-sensitively).
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        for file in files {
            let bytes = std::fs::read(&file).map_err(|e| unreadable(&file, e))?;
            self.cfg.source_files.push(file.clone());
            self.parse_text(&String::from_utf8_lossy(&bytes), &file, depth + 1);
        }
        Ok(())
    }
}

/// TLS-PSK needs the `psk` cargo feature (OpenSSL); without it a PSK option stops the
/// start instead of leaving a plain-TCP listener.
fn psk_supported(line: &Line<'_>) -> Result<(), Error> {
    if cfg!(feature = "psk") {
        Ok(())
    } else {
        Err(line.invalid(
            "TLS-PSK support is not built in (build shardmq with the cargo feature `psk`)",
        ))
    }
}

/// Gives a PSK listener the `psk_file` that applies to it (its own, else the global one);
/// a listener-level `psk_file` on a listener without `psk_hint` is unused and says so.
fn resolve_psk_file(
    l: &mut Listener,
    global: Option<&PathBuf>,
    global_at: Option<&Location>,
    warnings: &mut Vec<String>,
) {
    let Some(tls) = l.tls.as_mut() else { return };
    if tls.is_psk() {
        if tls.psk_file.is_none() {
            if let (Some(path), Some(at)) = (global, global_at) {
                tls.psk_file = Some(path.clone());
                tls.origins.push(("psk_file".into(), at.clone()));
            }
        }
    } else if tls.psk_file.take().is_some() {
        let at = tls.origin("psk_file").cloned().unwrap_or_default();
        warnings.push(format!(
            "Warning: psk_file in {at} has no effect: listener {} has no psk_hint.",
            l.port
        ));
    }
}

fn port_of(line: &Line<'_>, v: &str) -> Result<u16, Error> {
    parse_int(v, 0, 65535)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| line.invalid_value(v, "expected a port from 0 to 65535"))
}

/// Values were range-checked by the caller, so this never saturates in practice.
fn u32_of(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
