//! Which Mosquitto options shardmq knows but does not implement (yet).
//!
//! An option in this list, or one nobody knows, is a warning and not an error, so a
//! real mosquitto.conf keeps loading. This module is data only.

/// Mosquitto options that are accepted and ignored, with a warning.
const UNSUPPORTED: &[&str] = &[
    "accept_protocol_versions",
    "allow_duplicate_messages",
    "auth_plugin",
    "bind_interface",
    "bridge_alpn",
    "bridge_attempt_unsubscribe",
    "bridge_bind_address",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_identity",
    "bridge_insecure",
    "bridge_keyfile",
    "bridge_max_packet_size",
    "bridge_outgoing_retain",
    "bridge_psk",
    "bridge_receive_maximum",
    "bridge_reload_type",
    "bridge_require_ocsp",
    "bridge_session_expiry_interval",
    "bridge_tls_version",
    "check_retain_source",
    "dhparamfile",
    "disable_client_cert_date_checks",
    "enable_control_api",
    "global_max_clients",
    "global_max_connections",
    "global_plugin",
    "http_dir",
    "idle_timeout",
    "local_cleansession",
    "local_clientid",
    "local_password",
    "local_username",
    "max_qos",
    "max_topic_alias",
    "memory_limit",
    "notification_topic",
    "notifications",
    "notifications_local_only",
    "ocsp_stapling",
    "plugin",
    "plugin_load",
    "plugin_use",
    "restart_timeout",
    "retry_interval",
    "round_robin",
    "set_tcp_nodelay",
    "socket_domain",
    "start_type",
    "store_clean_interval",
    "threshold",
    "tls_engine",
    "tls_engine_kpass_sha1",
    "tls_keyform",
    "upgrade_outgoing_qos",
    "use_subject_as_username",
    "use_username_as_clientid",
    "user",
    "websockets_headers_size",
    "websockets_log_level",
    "websockets_origin",
];

/// Whether `option` is a Mosquitto option that shardmq accepts and ignores.
pub(crate) fn is_unsupported(option: &str) -> bool {
    UNSUPPORTED.binary_search(&option).is_ok()
        || option.starts_with("auth_opt_")
        || option.starts_with("plugin_opt_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_for_binary_search() {
        assert!(UNSUPPORTED.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn prefixes() {
        assert!(is_unsupported("auth_opt_db_host"));
        assert!(is_unsupported("plugin_opt_x"));
        assert!(!is_unsupported("psk_hint"));
        assert!(is_unsupported("dhparamfile"));
        assert!(!is_unsupported("port"));
    }
}
