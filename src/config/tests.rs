//! Parser tests: every global option, defaults, error paths, warnings, comments.

use std::path::Path;
use std::time::Duration;

use super::*;

pub(super) fn parse(text: &str) -> Config {
    Config::parse_str(text, Path::new("/etc/x.conf")).unwrap()
}

pub(super) fn parse_err(text: &str) -> String {
    Config::parse_str(text, Path::new("/etc/x.conf"))
        .unwrap_err()
        .to_string()
}

#[test]
fn empty_file_is_mosquitto2_local_only() {
    let c = parse("");
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].port, 1883);
    assert_eq!(c.listeners[0].bind_address.as_deref(), Some("127.0.0.1"));
    assert!(c.local_only);
    assert!(c.allow_anonymous);
    assert!(c.warnings.is_empty());
    assert_eq!(c.source_files, vec![Path::new("/etc/x.conf").to_path_buf()]);
}

#[test]
fn defaults_match_embedded_default_except_sources() {
    let mut c = parse("# only a comment\n\n   \n");
    c.source_files.clear();
    assert_eq!(c, Config::default());
}

#[test]
fn embedded_default_is_mosquitto2() {
    let d = Config::default();
    assert!(d.allow_anonymous && d.local_only);
    assert_eq!(d.max_inflight_messages, 20);
    assert_eq!(d.max_queued_messages, 1000);
    assert_eq!(d.log.types, LogTypes::DEFAULT);
    assert_eq!(d.log.dests, vec![LogDest::Stderr]);
    assert_eq!(d.sys_interval, Duration::from_secs(10));
    assert_eq!(d.autosave_interval, Duration::from_secs(1800));
}

#[test]
fn listener_makes_anonymous_default_false() {
    let c = parse("listener 1883\n");
    assert!(!c.allow_anonymous);
    assert!(!c.local_only);
    assert_eq!(c.listeners[0].bind_address, None);
    let c = parse("listener 1883\nallow_anonymous true\n");
    assert!(c.allow_anonymous);
}

#[test]
fn every_global_option() {
    let text = "\
allow_anonymous true
allow_zero_length_clientid false
auto_id_prefix gen-
password_file /etc/pw
acl_file /etc/acl
clientid_prefixes sensor-
max_connections 100
max_inflight_messages 5
max_inflight_bytes 1000
max_queued_messages 50
max_queued_bytes 2000
queue_qos0_messages true
persistent_client_expiration 2d
persistence true
persistence_location /var/lib/shardmq/
persistence_file db.bin
autosave_interval 60
autosave_on_changes true
connection_messages false
log_timestamp false
log_timestamp_format %Y-%m-%dT%H:%M:%S
sys_interval 0
pid_file /run/shardmq.pid
message_size_limit 1024
max_packet_size 2048
max_keepalive 300
retain_available false
per_listener_settings false
threads 4
";
    let c = parse(text);
    assert!(c.allow_anonymous);
    assert!(!c.allow_zero_length_clientid);
    assert_eq!(c.auto_id_prefix, "gen-");
    assert_eq!(c.password_file.as_deref(), Some(Path::new("/etc/pw")));
    assert_eq!(c.acl_file.as_deref(), Some(Path::new("/etc/acl")));
    assert_eq!(c.clientid_prefixes.as_deref(), Some("sensor-"));
    assert_eq!(c.max_connections, Some(100));
    assert_eq!(c.max_inflight_messages, 5);
    assert_eq!(c.max_inflight_bytes, 1000);
    assert_eq!(c.max_queued_messages, 50);
    assert_eq!(c.max_queued_bytes, 2000);
    assert!(c.queue_qos0_messages);
    assert_eq!(
        c.persistent_client_expiration,
        Some(Duration::from_secs(2 * 86_400))
    );
    assert!(c.persistence);
    assert_eq!(
        c.persistence_location.as_deref(),
        Some(Path::new("/var/lib/shardmq/"))
    );
    assert_eq!(c.persistence_file, "db.bin");
    assert_eq!(c.autosave_interval, Duration::from_secs(60));
    assert!(c.autosave_on_changes);
    assert!(!c.log.connection_messages);
    assert!(!c.log.timestamp);
    assert_eq!(c.log.timestamp_format.as_deref(), Some("%Y-%m-%dT%H:%M:%S"));
    assert_eq!(c.sys_interval, Duration::ZERO);
    assert_eq!(c.pid_file.as_deref(), Some(Path::new("/run/shardmq.pid")));
    assert_eq!(c.message_size_limit, 1024);
    assert_eq!(c.max_packet_size, 2048);
    assert_eq!(c.max_keepalive, 300);
    assert!(!c.retain_available);
    assert!(!c.per_listener_settings);
    assert_eq!(c.threads, Some(4));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // No listener line: still local only, but allow_anonymous was set explicitly.
    assert!(c.local_only);
}

#[test]
fn zero_means_unlimited_as_in_mosquitto() {
    let c = parse("max_inflight_messages 0\nmax_queued_messages 0\nmax_connections -1\n");
    assert_eq!(c.max_inflight_messages, u16::MAX);
    assert_eq!(c.max_queued_messages, usize::MAX);
    assert_eq!(c.max_connections, None);
    assert_eq!(parse("threads 0\n").threads, None);
    assert_eq!(parse("threads auto\n").threads, None);
}

#[test]
fn log_dest_first_replaces_default_then_adds() {
    let c = parse("log_dest stdout\nlog_dest file /var/log/my log.txt\nlog_dest syslog\nlog_dest topic\nlog_dest stdout\n");
    assert_eq!(
        c.log.dests,
        vec![
            LogDest::Stdout,
            LogDest::File("/var/log/my log.txt".into()),
            LogDest::Syslog,
            LogDest::Topic
        ]
    );
    assert!(parse("log_dest none\n").log.dests.is_empty());
    assert_eq!(
        parse("log_dest none\nlog_dest stderr\n").log.dests,
        vec![LogDest::Stderr]
    );
}

#[test]
fn log_type_first_replaces_defaults_then_adds() {
    let c = parse("log_type error\nlog_type subscribe\n");
    let want = LogTypes {
        error: true,
        subscribe: true,
        ..LogTypes::default()
    };
    assert_eq!(c.log.types, want);
    assert_eq!(parse("log_type all\n").log.types, LogTypes::ALL);
    assert_eq!(parse("log_type none\n").log.types, LogTypes::default());
    let c = parse("log_type warning\nlog_type subscribe\nlog_type notice\nlog_type information\nlog_type unsubscribe\nlog_type debug\nlog_type websockets\n");
    assert_eq!(
        c.log.types,
        LogTypes {
            error: false,
            ..LogTypes::ALL
        }
    );
}

#[test]
fn comments_and_whitespace() {
    let c = parse("  # comment\n\t\nmax_queued_messages 7   \r\n   sys_interval\t 3\n#port 99\n");
    assert_eq!(c.max_queued_messages, 7);
    assert_eq!(c.sys_interval, Duration::from_secs(3));
    assert!(c.local_only);
}

#[test]
fn invalid_value_names_file_line_and_option() {
    let e = parse_err("\n\n\n\n\n\n\n\n\n\n\nmax_inflight_messages abc\n");
    assert!(
        e.starts_with("Error: Invalid max_inflight_messages value 'abc' in /etc/x.conf line 12"),
        "{e}"
    );
}

#[test]
fn each_bad_value_is_an_error_with_location() {
    let cases = [
        ("allow_anonymous yes", "allow_anonymous"),
        ("max_inflight_messages 70000", "max_inflight_messages"),
        ("max_queued_messages -1", "max_queued_messages"),
        ("max_inflight_bytes x", "max_inflight_bytes"),
        ("max_queued_bytes -5", "max_queued_bytes"),
        ("max_connections 10 20", "max_connections"),
        (
            "persistent_client_expiration 2x",
            "persistent_client_expiration",
        ),
        (
            "persistent_client_expiration 10",
            "persistent_client_expiration",
        ),
        ("autosave_interval -1", "autosave_interval"),
        ("sys_interval soon", "sys_interval"),
        ("log_dest printer", "log_dest"),
        ("log_dest file", "log_dest"),
        ("log_type verbose", "log_type"),
        ("message_size_limit 268435456", "message_size_limit"),
        ("max_packet_size 10", "max_packet_size"),
        ("max_keepalive 65536", "max_keepalive"),
        ("threads 2000", "threads"),
        ("port 65536", "port"),
        ("listener abc", "listener"),
        ("listener 1 2 3", "listener"),
        ("tls_version sslv3", "tls_version"),
        ("retain_available 1", "retain_available"),
        ("connect_timeout 0", "connect_timeout"),
        ("connect_timeout 3601", "connect_timeout"),
        ("max_connect_packet_size 19", "max_connect_packet_size"),
        (
            "max_connect_packet_size 268435461",
            "max_connect_packet_size",
        ),
    ];
    for (line, option) in cases {
        let e = parse_err(&format!("# first\n{line}\n"));
        assert!(e.contains("/etc/x.conf line 2"), "{line}: {e}");
        assert!(e.contains(option), "{line}: {e}");
        assert!(e.starts_with("Error: Invalid"), "{line}: {e}");
    }
}

#[test]
fn missing_value_is_an_error_with_location() {
    for option in [
        "max_inflight_messages",
        "persistence_location",
        "listener",
        "log_dest",
        "include_dir",
        "connection",
        "allow_anonymous   ",
    ] {
        let e = parse_err(&format!("{option}\n"));
        assert!(e.contains("/etc/x.conf line 1"), "{e}");
        assert!(e.contains(option.trim()), "{e}");
        assert!(e.starts_with("Error: Empty"), "{e}");
    }
}

#[test]
fn harmless_unsupported_options_are_warnings() {
    let c = parse("log_facility 3\ndhparamfile x\nauth_opt_host h\n");
    assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("Warning: log_facility in /etc/x.conf line 1"));
    assert!(c.warnings[0].contains("not supported, ignored"));
}

/// A typo must not drop the ACL: the unknown option stops the start.
#[test]
fn unknown_options_are_errors_every_one_reported() {
    let e = parse_err("listener 1883\nacl_fille /etc/acl\nfrobnicate 1\nmax_keepalive x\n");
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert!(
        lines[0].contains("\"acl_fille\" in /etc/x.conf line 2"),
        "{e}"
    );
    assert!(
        lines[1].contains("\"frobnicate\" in /etc/x.conf line 3"),
        "{e}"
    );
    assert!(
        lines[2].contains("max_keepalive") && lines[2].contains("line 4"),
        "{e}"
    );
}

#[test]
fn plugins_stop_the_start() {
    for text in ["plugin /usr/lib/p.so\n", "auth_plugin a\n"] {
        assert!(parse_err(text).contains("is not supported yet"), "{text}");
    }
}

#[test]
fn user_nodelay_and_log_dest_topic() {
    let c = parse("user mosquitto\nset_tcp_nodelay false\nlog_dest topic\n");
    assert_eq!(c.user.as_deref(), Some("mosquitto"));
    assert!(!c.set_tcp_nodelay);
    assert!(parse("").set_tcp_nodelay, "shardmq's default");
    assert!(
        c.warnings.is_empty(),
        "log_dest topic is supported: {:?}",
        c.warnings
    );
    assert!(parse_err("user a:b\n").contains("user"));
    assert!(parse_err("listener 1883\nsocket_domain ipv5\n").contains("socket_domain"));
    assert!(parse_err("listener 1883\nbind_interface a/b\n").contains("bind_interface"));
    assert_eq!(
        parse("").persistence_file,
        "mosquitto.db",
        "Mosquitto's default name"
    );
}

#[test]
fn unreadable_file_names_path() {
    let e = Config::from_file(Path::new("/nonexistent/shardmq.conf")).unwrap_err();
    assert!(matches!(e, Error::Unreadable { .. }));
    assert!(e.to_string().contains("/nonexistent/shardmq.conf"), "{e}");
}

#[test]
fn from_file_reads_a_file() {
    let dir = std::env::temp_dir().join(format!("shardmq-cfg-ff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("m.conf");
    std::fs::write(&file, "listener 0 127.0.0.1\nallow_anonymous true\n").unwrap();
    let c = Config::from_file(&file).unwrap();
    assert_eq!(c.listeners[0].port, 0);
    assert!(c.allow_anonymous);
    assert_eq!(c.source_files, vec![file]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garbage_input_never_panics() {
    let inputs = [
        "\u{0}\u{1}\u{2}",
        "listener",
        "topic",
        "connection a\naddress\n",
        "log_dest file    ",
        "persistent_client_expiration h",
        "persistent_client_expiration é",
        "address [",
        "listener 1883 ::1 x",
    ];
    for i in inputs {
        let _ = Config::parse_str(i, Path::new("g"));
    }
}

#[test]
fn persistence_fsync_values() {
    assert_eq!(parse("").persistence_fsync, PersistenceFsync::Interval);
    assert_eq!(
        parse("persistence_fsync always\n").persistence_fsync,
        PersistenceFsync::Always
    );
    assert_eq!(
        parse("persistence_fsync never\n").persistence_fsync,
        PersistenceFsync::Never
    );
    assert!(parse_err("persistence_fsync sometimes\n").contains("persistence_fsync"));
}

#[test]
fn connect_limits() {
    let d = Config::default();
    assert_eq!(d.connect_timeout, Duration::from_secs(10));
    assert_eq!(d.max_connect_packet_size, 65_536);
    let c = parse("connect_timeout 3\nmax_connect_packet_size 1048576\n");
    assert_eq!(c.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.max_connect_packet_size, 1_048_576);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}
