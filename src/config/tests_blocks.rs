//! Parser tests for blocks: listeners, the default listener, TLS, per-listener
//! settings, bridges, and `include_dir`.

use std::path::{Path, PathBuf};

use super::*;

use super::tests::{parse, parse_err};

/// Parses bridge blocks (the parser alone, file name /etc/x.conf).
fn parse_bridges(text: &str) -> Result<Config, String> {
    super::parse::Parser::read(text, Path::new("/etc/x.conf")).map_err(|e| e.to_string())
}

#[test]
fn listener_blocks_take_their_options() {
    let c = parse(
        "listener 1883\nmax_connections 10\nsocket_domain ipv4\nbind_interface lo\nprotocol mqtt\n\
         listener 8883 10.0.0.1\ncafile /ca\ncertfile /c\nkeyfile /k\n\
         require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.2\n\
         capath /cadir\n",
    );
    assert_eq!(c.listeners.len(), 2);
    let (a, b) = (&c.listeners[0], &c.listeners[1]);
    assert_eq!((a.port, a.bind_address.as_deref()), (1883, None));
    assert_eq!(a.max_connections, Some(10));
    assert_eq!(a.socket_domain, Some(SocketDomain::Ipv4));
    assert_eq!(a.bind_interface.as_deref(), Some("lo"));
    assert_eq!((b.socket_domain, b.bind_interface.as_deref()), (None, None));
    assert!(a.tls.is_none());
    assert_eq!(a.defined_at, Some(Location::new("/etc/x.conf", 1)));
    assert_eq!(
        (b.port, b.bind_address.as_deref()),
        (8883, Some("10.0.0.1"))
    );
    assert_eq!(b.max_connections, None);
    let tls = b.tls.as_ref().unwrap();
    assert_eq!(tls.cafile.as_deref(), Some(Path::new("/ca")));
    assert_eq!(tls.capath.as_deref(), Some(Path::new("/cadir")));
    assert_eq!(tls.certfile.as_deref(), Some(Path::new("/c")));
    assert_eq!(tls.keyfile.as_deref(), Some(Path::new("/k")));
    assert!(tls.require_certificate && tls.use_identity_as_username);
    assert_eq!(tls.tls_version.as_deref(), Some("tlsv1.2"));
    assert_eq!(
        c.max_connections, None,
        "listener max_connections is not global"
    );
}

#[test]
fn listener_port_zero_is_allowed_twice() {
    let c = parse("listener 0 127.0.0.1\nlistener 0 127.0.0.1\n");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].port, 0);
}

#[test]
fn legacy_port_and_bind_address_make_the_default_listener_first() {
    let c = parse("listener 9000\nport 1884\nbind_address 0.0.0.0\n");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].port, 1884);
    assert_eq!(c.listeners[0].bind_address.as_deref(), Some("0.0.0.0"));
    assert_eq!(c.listeners[1].port, 9000);
    assert!(!c.allow_anonymous);
    let c = parse("port 1885\n");
    assert_eq!(
        c.listeners[0].bind_address, None,
        "port alone = all interfaces"
    );
    assert!(!c.local_only && !c.allow_anonymous);
}

#[test]
fn per_listener_options_before_any_listener_configure_the_default_listener() {
    let c = parse("socket_domain ipv6\n");
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(
        (c.listeners[0].port, c.listeners[0].bind_address.as_deref()),
        (1883, None)
    );
    assert_eq!(c.listeners[0].socket_domain, Some(SocketDomain::Ipv6));
}

#[test]
fn websockets_listeners_with_http_dir_and_header_size() {
    let c = parse(
        "websockets_headers_size 4096\nwebsockets_log_level 12\nlistener 1883\n\
         listener 9001\nprotocol websockets\nhttp_dir /var/www\nlistener 9002\n\
         protocol websockets\n",
    );
    let protocols: Vec<_> = c.listeners.iter().map(|l| l.protocol).collect();
    assert_eq!(
        protocols,
        [
            ListenerProtocol::Mqtt,
            ListenerProtocol::Websockets,
            ListenerProtocol::Websockets
        ]
    );
    let (dir, at) = c.listeners[1].http_dir.clone().unwrap();
    assert_eq!(dir, PathBuf::from("/var/www"));
    assert_eq!(at.line, 6);
    assert!(c.listeners[2].http_dir.is_none());
    assert_eq!(c.websockets_headers_size, 4096);
    assert_eq!(c.websockets_log_level, 12);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // Mosquitto's default, also for 0.
    assert_eq!(parse("listener 1\n").websockets_headers_size, 1024);
    let c = parse("websockets_headers_size 0\nlistener 1\n");
    assert_eq!(c.websockets_headers_size, 1024);
    let e = parse_err("websockets_headers_size 65536\nlistener 1\n");
    assert!(e.contains("websockets_headers_size"), "{e}");
    let e = parse_err("listener 9001\nprotocol http\n");
    assert!(e.contains("Invalid protocol value 'http'"), "{e}");
}

#[test]
fn http_dir_on_an_mqtt_listener_is_a_warning() {
    let c = parse("listener 1883\nhttp_dir /var/www\n");
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains("http_dir in /etc/x.conf line 2 has no effect"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn psk_on_a_websockets_listener_stops_the_start() {
    if !cfg!(feature = "psk") {
        return;
    }
    let e = parse_err("psk_file /p\nlistener 9001\nprotocol websockets\npsk_hint h\n");
    assert!(
        e.contains("TLS-PSK is not available on websockets listener 9001"),
        "{e}"
    );
    assert!(e.contains("psk_hint in /etc/x.conf line 4"), "{e}");
}

#[test]
fn per_listener_settings_scope_security_options() {
    let c = parse(
        "per_listener_settings true\nallow_anonymous false\nlistener 1883\nallow_anonymous true\n\
         password_file /pw\nacl_file /acl\nlistener 1884\n",
    );
    assert!(c.per_listener_settings);
    assert!(!c.allow_anonymous);
    assert_eq!(c.listeners[0].allow_anonymous, Some(true));
    assert_eq!(
        c.listeners[0].password_file.as_deref(),
        Some(Path::new("/pw"))
    );
    assert_eq!(c.listeners[0].acl_file.as_deref(), Some(Path::new("/acl")));
    assert_eq!(c.listeners[1].allow_anonymous, None);
    assert_eq!(c.password_file, None);
    // Without per_listener_settings they are global even inside a listener block.
    let c = parse("listener 1883\nallow_anonymous true\npassword_file /pw\n");
    assert!(c.allow_anonymous);
    assert_eq!(c.listeners[0].allow_anonymous, None);
    assert_eq!(c.password_file.as_deref(), Some(Path::new("/pw")));
}

#[test]
fn tls_validation_names_the_listener_line() {
    let e = parse_err("listener 1883\nlistener 8883\ncertfile /c\n");
    assert!(
        e.contains("keyfile") && e.contains("/etc/x.conf line 2"),
        "{e}"
    );
    let e = parse_err("listener 8883\ncertfile /c\nkeyfile /k\nrequire_certificate true\n");
    assert!(e.contains("cafile") && e.contains("line 1"), "{e}");
    let e = parse_err("listener 8883\ncertfile /c\nkeyfile /k\nuse_identity_as_username true\n");
    assert!(e.contains("require_certificate"), "{e}");
    // require_certificate false alone does not turn TLS on.
    let c = parse("listener 1883\nrequire_certificate false\n");
    assert!(c.listeners[0].tls.is_none());
}

#[test]
fn duplicate_listener_is_an_error() {
    let e = parse_err("listener 1883\nlistener 1883\n");
    assert!(
        e.contains("duplicate listener") && e.contains("line 2"),
        "{e}"
    );
    let c = parse("listener 1883 127.0.0.1\nlistener 1883 ::1\n");
    assert_eq!(c.listeners.len(), 2);
}

#[test]
fn bridge_blocks() {
    let c = parse_bridges(
        "connection up\naddress broker.example:8883 backup\ntopic sensors/# out 1\n\
         topic cmd/+ in 2 local/ remote/\ntopic \"\" both 0 a/b c/d\ntopic #\n\
         remote_clientid me\nremote_username u\nremote_password p w\ncleansession true\n\
         keepalive_interval 30\nbridge_protocol_version mqttv50\ntry_private false\n\
         connection second\naddresses [::1]:1884\ntopic x both\nclientid c2\nusername u2\n\
         password p2\n",
    )
    .unwrap();
    assert_eq!(c.bridges.len(), 2);
    let b = &c.bridges[0];
    assert_eq!(b.name, "up");
    assert_eq!(b.addresses, vec!["broker.example:8883", "backup:1883"]);
    assert_eq!(b.topics.len(), 4);
    assert_eq!(
        b.topics[0],
        BridgeTopic {
            pattern: "sensors/#".into(),
            direction: "out".into(),
            qos: 1,
            local_prefix: None,
            remote_prefix: None
        }
    );
    assert_eq!(b.topics[1].direction, "in");
    assert_eq!(b.topics[1].qos, 2);
    assert_eq!(b.topics[1].local_prefix.as_deref(), Some("local/"));
    assert_eq!(b.topics[1].remote_prefix.as_deref(), Some("remote/"));
    assert_eq!(b.topics[2].pattern, "");
    assert_eq!(b.topics[3].direction, "out", "default direction");
    assert_eq!(b.remote_clientid.as_deref(), Some("me"));
    assert_eq!(b.remote_username.as_deref(), Some("u"));
    assert_eq!(b.remote_password.as_deref(), Some("p w"));
    assert!(b.cleansession);
    assert_eq!(b.keepalive_interval, 30);
    assert_eq!(b.protocol_version.as_deref(), Some("mqttv50"));
    assert!(!b.try_private);
    assert_eq!(b.defined_at, Some(Location::new("/etc/x.conf", 1)));
    let b = &c.bridges[1];
    assert_eq!(b.addresses, vec!["[::1]:1884"]);
    assert_eq!(b.keepalive_interval, 60, "Mosquitto default");
    assert!(b.try_private, "Mosquitto default");
    assert_eq!(b.remote_clientid.as_deref(), Some("c2"));
    assert_eq!(b.remote_username.as_deref(), Some("u2"));
    assert_eq!(b.remote_password.as_deref(), Some("p2"));
    // Mosquitto 2's defaults.
    assert!(!b.cleansession && b.local_cleansession.is_none() && !b.round_robin);
    assert_eq!(b.restart_timeout, (5, Some(30)));
    assert!(b.notifications && b.outgoing_retain && b.attempt_unsubscribe);
}

#[test]
fn bridge_options_of_mosquitto_2() {
    let c = parse_bridges(
        "connection up\naddress h\ntopic a\nlocal_clientid l\nlocal_cleansession true\n\
         round_robin true\nrestart_timeout 2 60\nnotifications false\n\
         notification_topic n/t\nnotifications_local_only true\nbridge_outgoing_retain false\n\
         bridge_max_packet_size 1000\nbridge_attempt_unsubscribe false\nidle_timeout 5\n\
         threshold 3\nstart_type automatic\nlocal_username lu\nlocal_password lp\n\
         connection two\naddress h\ntopic a\nrestart_timeout 9\n",
    )
    .unwrap();
    let b = &c.bridges[0];
    assert_eq!(b.local_clientid.as_deref(), Some("l"));
    assert_eq!(b.local_cleansession, Some(true));
    assert!(b.round_robin && !b.notifications && b.notifications_local_only);
    assert_eq!(b.restart_timeout, (2, Some(60)));
    assert_eq!(b.notification_topic.as_deref(), Some("n/t"));
    assert!(!b.outgoing_retain && !b.attempt_unsubscribe);
    assert_eq!(
        (b.max_packet_size, b.idle_timeout, b.threshold),
        (1000, 5, 3)
    );
    assert_eq!(c.bridges[1].restart_timeout, (9, None));
    assert!(parse_bridges("connection up\naddress h\ntopic a\nrestart_timeout 0\n").is_err());
    assert!(parse_bridges("connection up\naddress h\ntopic a\nstart_type x\n").is_err());
    assert!(!b.start_lazy && !b.start_once);
}

#[test]
fn start_type_lazy_with_its_threshold_and_idle_timeout() {
    let c = parse_bridges(
        "connection up\naddress h\ntopic a\nstart_type lazy\nthreshold 3\nidle_timeout 2\n",
    )
    .unwrap();
    let b = &c.bridges[0];
    assert!(b.start_lazy && !b.start_once);
    assert_eq!((b.threshold, b.idle_timeout), (3, 2));
    let lazy = crate::bridge::Settings::new(b).lazy.unwrap();
    assert_eq!(lazy.threshold, 3);
    assert_eq!(lazy.idle_timeout, std::time::Duration::from_secs(2));
    // Mosquitto's defaults: 10 messages, 60 s.
    let c = parse_bridges("connection up\naddress h\ntopic a\nstart_type lazy\n").unwrap();
    assert_eq!(
        (c.bridges[0].threshold, c.bridges[0].idle_timeout),
        (10, 60)
    );
    // The last start_type line counts.
    let c = parse_bridges("connection up\naddress h\ntopic a\nstart_type lazy\nstart_type once\n")
        .unwrap();
    assert!(!c.bridges[0].start_lazy && c.bridges[0].start_once);
}

#[test]
fn bridge_bind_address_is_an_ip_address() {
    let c = parse_bridges("connection up\naddress h\ntopic a\nbridge_bind_address 127.0.0.2\n")
        .unwrap();
    assert_eq!(c.bridges[0].bind_address, Some([127, 0, 0, 2].into()));
    let c = parse_bridges("connection up\naddress h\ntopic a\nbridge_bind_address ::1\n").unwrap();
    assert_eq!(
        c.bridges[0].bind_address,
        Some(std::net::Ipv6Addr::LOCALHOST.into())
    );
    assert_eq!(
        parse_bridges("connection up\naddress h\ntopic a\n")
            .unwrap()
            .bridges[0]
            .bind_address,
        None
    );
}

#[test]
fn bridge_errors() {
    let cases = [
        ("address h\n", "outside a 'connection' block"),
        ("topic a\n", "outside a 'connection' block"),
        (
            "connection b\naddress h:x\ntopic a\n",
            "Invalid address value 'h:x'",
        ),
        ("connection b\naddress h\ntopic a sideways\n", "direction"),
        ("connection b\naddress h\ntopic a in 3\n", "QoS"),
        ("connection b\naddress h\ntopic a in 1 x\n", "PATTERN"),
        ("connection b\naddress h\ntopic \"\" in 1\n", "prefix"),
        ("connection b\naddress h\ntopic a/#/b\n", "topic filter"),
        ("connection b\naddress h\ntopic a+\n", "topic filter"),
        (
            "connection b\naddress h\nbridge_protocol_version v9\n",
            "bridge_protocol_version",
        ),
        ("connection b\ntopic a\n", "has no address"),
        ("connection b\naddress h\n", "has no topic"),
        (
            "connection b\naddress h\ntopic a\nbridge_bind_address eth0\n",
            "expected an IP address",
        ),
        (
            "connection b\naddress h\ntopic a\nbridge_identity e\nbridge_psk xyz\n",
            "expected a hexadecimal key",
        ),
        (
            "connection b\naddress h\ntopic a\nstart_type lazy\ncleansession true\n",
            "start_type lazy needs a persistent local session",
        ),
        (
            "connection b\naddress h\ntopic a\nstart_type lazy\nlocal_cleansession true\n",
            "start_type lazy needs a persistent local session",
        ),
        (
            "connection b\naddress h\ntopic a\nconnection b\naddress h\ntopic a\n",
            "duplicate bridge",
        ),
    ];
    for (text, want) in cases {
        let e = parse_bridges(text).unwrap_err();
        assert!(e.contains(want), "{text:?}: {e}");
        assert!(e.contains("/etc/x.conf line"), "{text:?}: {e}");
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("shardmq-cfg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn include_dir_reads_conf_files_in_ascii_order() {
    let d = TempDir::new("order");
    std::fs::write(
        d.0.join("b.conf"),
        "max_queued_messages 2\nlog_type debug\n",
    )
    .unwrap();
    std::fs::write(
        d.0.join("B.conf"),
        "max_queued_messages 1\nlog_type error\n",
    )
    .unwrap();
    std::fs::write(d.0.join("a.conf"), "listener 1999\n").unwrap();
    std::fs::write(d.0.join("c.txt"), "max_queued_messages 99\n").unwrap();
    std::fs::create_dir(d.0.join("sub.conf")).unwrap();
    let main = format!(
        "max_queued_messages 0\ninclude_dir {}\nmax_inflight_messages 3\n",
        d.0.display()
    );
    let c = parse(&main);
    // "B.conf" < "a.conf" < "b.conf": the last one wins.
    assert_eq!(c.max_queued_messages, 2);
    assert!(c.log.types.error && c.log.types.debug && !c.log.types.warning);
    assert_eq!(c.listeners[0].port, 1999);
    assert_eq!(c.max_inflight_messages, 3);
    let names: Vec<_> = c
        .source_files
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["x.conf", "B.conf", "a.conf", "b.conf"]);
}

#[test]
fn include_dir_errors_name_the_included_file_and_line() {
    let d = TempDir::new("err");
    std::fs::write(d.0.join("10-bad.conf"), "# ok\n\nmax_keepalive nope\n").unwrap();
    let e = parse_err(&format!("include_dir {}\n", d.0.display()));
    let want = format!("{} line 3", d.0.join("10-bad.conf").display());
    assert!(e.contains(&want) && e.contains("max_keepalive"), "{e}");
    std::fs::write(d.0.join("10-bad.conf"), "dhparamfile x\n").unwrap();
    let c = parse(&format!("include_dir {}\n", d.0.display()));
    assert!(c.warnings[0].contains(&format!("{} line 1", d.0.join("10-bad.conf").display())));
    std::fs::write(d.0.join("10-bad.conf"), "frob 1\n").unwrap();
    let e = parse_err(&format!("include_dir {}\n", d.0.display()));
    let want = format!("\"frob\" in {} line 1", d.0.join("10-bad.conf").display());
    assert!(e.contains(&want), "{e}");
}

#[test]
fn include_dir_unreadable_names_the_including_line() {
    let e = parse_err("\ninclude_dir /nonexistent/conf.d\n");
    assert!(e.contains("/nonexistent/conf.d"), "{e}");
    assert!(e.contains("include_dir in /etc/x.conf line 2"), "{e}");
}

#[test]
fn include_dir_including_itself_stops() {
    let d = TempDir::new("loop");
    std::fs::write(
        d.0.join("self.conf"),
        format!("include_dir {}\n", d.0.display()),
    )
    .unwrap();
    let e = parse_err(&format!("include_dir {}\n", d.0.display()));
    assert!(e.contains("nested"), "{e}");
}

#[test]
fn http_listener_starts_an_http_block_with_tls_and_writers() {
    let c = parse(
        "listener 1883\nhttp_listener 8080 127.0.0.1\ncertfile /c.pem\nkeyfile /k.pem\n\
         http_acl write admin\nhttp_acl write ops\n",
    );
    assert_eq!(c.listeners.len(), 2);
    let http = &c.listeners[1];
    assert_eq!(http.protocol, ListenerProtocol::Http);
    assert_eq!(
        (http.port, http.bind_address.as_deref()),
        (8080, Some("127.0.0.1"))
    );
    assert!(
        http.tls.is_some(),
        "TLS options after http_listener are its own"
    );
    assert_eq!(c.http_writers, vec!["admin".to_string(), "ops".to_string()]);
    for bad in [
        "http_acl read bob\n",
        "http_acl write\n",
        "http_acl write a b\n",
    ] {
        assert!(parse_err(bad).contains("http_acl"), "{bad}");
    }
    assert!(parse_err("http_listener 8080\nprotocol websockets\n").contains("protocol"));
    assert!(parse_err("http_listener 8080\npsk_hint x\n").contains("psk_hint"));
}
