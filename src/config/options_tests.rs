//! The option table against the parser, Mosquitto's documentation and the README.

use std::path::Path;

use super::super::error::{Error, Location};
use super::super::parse::Parser;
use super::super::values::Line;
use super::super::Config;
use super::*;

/// Options documented by Mosquitto 2.0.11's mosquitto.conf(5).
const MOSQUITTO2_DOCUMENTED: &str = include_str!("mosquitto2_options.txt");

/// A value each supported option accepts (an option missing here fails the test that
/// checks the parser handles it).
const SAMPLES: &[(&str, &str)] = &[
    ("acl_file", "/etc/acl"),
    ("allow_anonymous", "true"),
    ("allow_zero_length_clientid", "false"),
    ("auto_id_prefix", "x-"),
    ("autosave_interval", "60"),
    ("autosave_on_changes", "true"),
    ("bind_address", "127.0.0.1"),
    ("bind_interface", "lo"),
    ("cafile", "/ca.pem"),
    ("capath", "/ca"),
    ("certfile", "/c.pem"),
    ("check_retain_source", "true"),
    ("ciphers", "ECDHE-RSA-AES128-GCM-SHA256"),
    ("ciphers_tls1.3", "TLS_AES_128_GCM_SHA256"),
    ("clientid_prefixes", "a-"),
    ("connect_timeout", "5"),
    ("connection_messages", "true"),
    ("crlfile", "/crl.pem"),
    ("http_dir", "/var/www"),
    ("include_dir", "/nonexistent-dir-of-samples"),
    ("keyfile", "/k.pem"),
    ("listener", "1883"),
    ("http_acl", "write admin"),
    ("http_listener", "8080"),
    ("log_dest", "stderr"),
    ("log_timestamp", "true"),
    ("log_timestamp_format", "%H"),
    ("log_type", "all"),
    ("max_connect_packet_size", "1024"),
    ("max_connection_rate", "10"),
    ("max_connections", "10"),
    ("max_inflight_bytes", "10"),
    ("max_inflight_messages", "10"),
    ("max_keepalive", "10"),
    ("max_packet_size", "100"),
    ("max_qos", "1"),
    ("maximum_qos", "1"),
    ("max_queued_bytes", "10"),
    ("max_queued_messages", "10"),
    ("memory_limit", "1000000"),
    ("max_topic_alias", "20"),
    ("message_size_limit", "10"),
    ("mount_point", "site1/"),
    ("password_file", "/pw"),
    ("per_listener_settings", "true"),
    ("persistence", "true"),
    ("persistence_file", "x.db"),
    ("persistence_fsync", "always"),
    ("persistence_location", "/var/lib/x/"),
    ("persistent_client_expiration", "1d"),
    ("pid_file", "/run/x.pid"),
    ("port", "1883"),
    ("protocol", "mqtt"),
    ("psk_file", "/psk"),
    ("psk_hint", "hint"),
    ("queue_qos0_messages", "true"),
    ("require_certificate", "true"),
    ("retain_available", "true"),
    ("retained_persistence", "true"),
    ("set_tcp_nodelay", "false"),
    ("shared_subscription_strategy", "sticky"),
    ("slow_subscriber_timeout", "5"),
    ("socket_domain", "ipv6"),
    ("sys_interval", "5"),
    ("threads", "2"),
    ("tls_version", "tlsv1.2"),
    ("upgrade_outgoing_qos", "true"),
    ("use_identity_as_username", "true"),
    ("use_subject_as_username", "true"),
    ("use_username_as_clientid", "true"),
    ("user", "nobody"),
    ("websockets_headers_size", "4096"),
    ("websockets_log_level", "255"),
];

#[test]
fn table_is_sorted_for_binary_search() {
    for w in OPTIONS.windows(2) {
        assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
    }
}

#[test]
fn every_option_mosquitto2_documents_has_a_row() {
    let missing: Vec<&str> = MOSQUITTO2_DOCUMENTED
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|name| !OPTIONS.iter().any(|r| r.name == *name))
        .collect();
    assert!(missing.is_empty(), "no row for {missing:?}");
}

/// The man page installed with Debian's mosquitto, when there is one, documents no
/// option the fixture above lacks.
#[test]
fn fixture_matches_the_installed_man_page() {
    let Ok(out) = std::process::Command::new("sh")
        .args(["-c", "zcat /usr/share/man/man5/mosquitto.conf.5.gz"])
        .output()
    else {
        return;
    };
    let page = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || page.is_empty() {
        return; // not installed here
    }
    let mut lines = page.lines();
    while let Some(l) = lines.next() {
        if l != ".PP" {
            continue;
        }
        let Some(next) = lines.next() else { break };
        let Some(entry) = next.strip_prefix("\\fB") else {
            continue;
        };
        let name: String = entry
            .replace("\\&", "")
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '*'))
            .collect();
        if name.contains('_') || OPTIONS.iter().any(|r| r.name == name) {
            assert!(
                MOSQUITTO2_DOCUMENTED.lines().any(|l| l == name),
                "{name} is documented by the installed mosquitto.conf(5) but not listed"
            );
        }
    }
}

fn run(option: &str, value: &str) -> (Result<(), Error>, Vec<String>) {
    let mut p = Parser::new();
    let raw = format!("{option} {value}");
    let line = Line::split(&raw, Location::new("/etc/x.conf", 3)).unwrap();
    let result = p.option(&line, 0);
    (result, p.cfg.warnings)
}

#[test]
fn the_parser_handles_every_supported_option() {
    for r in OPTIONS {
        if !matches!(r.support, Support::Yes | Support::Shardmq) {
            continue;
        }
        let Some((_, value)) = SAMPLES.iter().find(|(n, _)| *n == r.name) else {
            panic!("no sample value for supported option {}", r.name);
        };
        let (result, warnings) = run(r.name, value);
        if r.name == "include_dir" {
            // Handled: it tried to read the directory.
            assert!(
                matches!(result, Err(Error::UnreadableInclude { .. })),
                "{result:?}"
            );
            continue;
        }
        assert!(result.is_ok(), "{} {value}: {result:?}", r.name);
        assert!(warnings.is_empty(), "{} {value}: {warnings:?}", r.name);
    }
}

#[test]
fn unknown_option_is_an_error_with_file_and_line() {
    let (result, _) = run("acl_fille", "/etc/acl");
    let e = result.unwrap_err().to_string();
    assert_eq!(
        e,
        "Error: Unknown configuration variable \"acl_fille\" in /etc/x.conf line 3."
    );
}

#[test]
fn not_yet_options_stop_the_start() {
    for (option, value) in [
        ("auth_plugin", "/usr/lib/p.so"),
        ("plugin", "/usr/lib/p.so"),
        ("tls_engine", "pkcs11"),
    ] {
        let e = run(option, value).0.unwrap_err().to_string();
        assert!(e.contains(option) && e.contains("not supported yet"), "{e}");
        assert!(e.contains("/etc/x.conf line 3"), "{e}");
    }
}

#[test]
fn only_the_value_shardmq_honours_is_accepted() {
    let (option, accepted, refused) = ("tls_keyform", "pem", "engine");
    let (ok, warnings) = run(option, accepted);
    assert!(
        ok.is_ok() && warnings.is_empty(),
        "{option} {accepted}: {ok:?}"
    );
    let e = run(option, refused).0.unwrap_err().to_string();
    assert!(
        e.contains(&format!("{option} {refused} is not supported yet")),
        "{e}"
    );
    assert!(e.contains(&format!("only '{option} {accepted}'")), "{e}");
}

#[test]
fn harmless_tuning_is_a_warning() {
    for option in ["dhparamfile", "log_facility", "auth_opt_db"] {
        let (result, warnings) = run(option, "x");
        assert!(result.is_ok(), "{option}");
        assert_eq!(warnings.len(), 1, "{option}");
        assert!(
            warnings[0].starts_with(&format!("Warning: {option} in /etc/x.conf line 3")),
            "{warnings:?}"
        );
    }
}

#[test]
fn retry_interval_gets_mosquittos_note() {
    let (result, warnings) = run("retry_interval", "20");
    assert!(result.is_ok());
    assert_eq!(
        warnings,
        [
            "Warning: retry_interval in /etc/x.conf line 3: The retry_interval option is no \
          longer available."
        ]
    );
    assert!(run("allow_duplicate_messages", "maybe").0.is_err());
    assert_eq!(run("allow_duplicate_messages", "false").1.len(), 1);
}

#[test]
fn bridge_blocks_start_and_what_they_cannot_honour_stops_the_start() {
    let tls = Config::parse_str(
        "listener 1883\nconnection up\naddress h:8883\ntopic # both 0\nbridge_cafile /ca\n\
         bridge_insecure true\nbridge_tls_version tlsv1.3\nbridge_alpn mqtt\n",
        Path::new("/etc/x.conf"),
    )
    .unwrap();
    let b = &tls.bridges[0];
    assert!(b.uses_tls() && b.insecure && b.alpn.as_deref() == Some("mqtt"));
    assert_eq!(b.tls.tls_version.as_deref(), Some("tlsv1.3"));
    assert!(Config::parse_str(
        "listener 1883\nconnection up\naddress h\ntopic a\nbridge_insecure true\n",
        Path::new("/etc/x.conf"),
    )
    .unwrap_err()
    .to_string()
    .contains("would connect in clear"));
    let c = Config::parse_str(
        "listener 1883\nconnection up\naddress h:1883\ntopic # both 0\n",
        Path::new("/etc/x.conf"),
    )
    .unwrap();
    assert_eq!(c.bridges.len(), 1);
    let e = Config::parse_str(
        "listener 1883\nconnection up\naddress h:1883\ntopic # both 0\nbridge_require_ocsp true\n",
        Path::new("/etc/x.conf"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("bridge_require_ocsp is not supported yet")
            && e.contains("rustls does not verify")
            && e.contains("/etc/x.conf line 5"),
        "{e}"
    );
    // TLS-PSK: both options, and no certificate option with them (the error names the
    // bridge's `connection` line).
    for (lines, needle) in [
        (
            "bridge_psk 0a0b",
            "bridge_identity and bridge_psk go together",
        ),
        (
            "bridge_identity e\nbridge_psk 0a0b\nbridge_cafile /ca",
            "bridge_psk goes with bridge_tls_version only",
        ),
    ] {
        let e = Config::parse_str(
            &format!("listener 1883\nconnection up\naddress h:1883\ntopic # both 0\n{lines}\n"),
            Path::new("/etc/x.conf"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(needle) && e.contains("/etc/x.conf line 2"),
            "{e}"
        );
    }
    let psk = Config::parse_str(
        "listener 1883\nconnection up\naddress h:1883\ntopic # both 0\nbridge_identity e\n\
         bridge_psk 0a0b\nbridge_tls_version tlsv1.3\n",
        Path::new("/etc/x.conf"),
    );
    if cfg!(feature = "psk") {
        let b = &psk.unwrap().bridges[0];
        assert!(b.uses_psk() && !b.uses_tls());
        assert_eq!(b.psk_identity.as_deref(), Some("e"));
    } else {
        assert!(psk.unwrap_err().to_string().contains("psk"));
    }
    // Bridge options outside a block are still an error of their own.
    let (result, _) = run("restart_timeout", "5");
    assert!(result
        .unwrap_err()
        .to_string()
        .contains("outside a 'connection' block"));
}

#[test]
fn readme_option_table_is_generated_from_this_table() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let begin = "<!-- options-table: begin (generated from src/config/options.rs) -->\n";
    let end = "<!-- options-table: end -->";
    let table = markdown_table();
    let found = readme
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(t, _)| t);
    if found != Some(table.as_str()) {
        if std::env::var_os("SHARDMQ_BLESS").is_some() {
            let (head, rest) = readme.split_once(begin).expect("begin marker in README");
            let (_, tail) = rest.split_once(end).expect("end marker in README");
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
            std::fs::write(path, format!("{head}{begin}{table}{end}{tail}")).unwrap();
            return;
        }
        panic!(
            "README.md's option table differs from config::options::markdown_table(); \
             rerun with SHARDMQ_BLESS=1 to rewrite it. Expected:\n{table}"
        );
    }
}
