//! The example configuration shipped in `packaging/shardmq.conf`: a working service
//! setup (MQTT on 1883, the HTTP console on localhost, a password file, persistence
//! under the systemd state directory) followed by every option shardmq knows, commented
//! out, with what shardmq does with it, generated from the option table
//! ([`super::options::OPTIONS`]) so that none is left out (a test checks;
//! `SHARDMQ_BLESS=1` rewrites the file). Data only: it never reads or writes files
//! outside its test.

use super::options::{Support, OPTIONS};

/// The active part of the example.
const ACTIVE: &str = "\
# shardmq example configuration (mosquitto.conf syntax). The lines below run a broker
# as packaging/shardmq.service expects; every other option follows, commented out.

# MQTT for every interface; clients log in with the password file.
listener 1883
allow_anonymous false
password_file /etc/shardmq/passwd
# acl_file /etc/shardmq/acl

# The HTTP console, /metrics (Prometheus) and the JSON API, on localhost only. Its users
# are the password file's; `http_acl write USER` lets USER disconnect clients and delete
# retained messages (everyone else is read-only). Add certfile/keyfile for HTTPS.
http_listener 8080 127.0.0.1
http_acl write admin

# Sessions and retained messages survive restarts.
persistence true
persistence_location /var/lib/shardmq/

# systemd's journal gets stderr; `log_dest topic` also publishes on $SYS/broker/log/#.
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
log_timestamp false
";

/// The whole example file.
pub fn example_config() -> String {
    let mut out = String::from(ACTIVE);
    out.push_str(
        "\n# ---------------------------------------------------------------------------\n\
         # Every option shardmq knows (generated from src/config/options.rs).\n\
         # ---------------------------------------------------------------------------\n",
    );
    for o in OPTIONS {
        let status = match o.support {
            Support::Yes => "supported",
            Support::Shardmq => "shardmq only",
            Support::OnlyValue(_) => "only one value",
            Support::NotYet => "not supported yet: stops the start",
            Support::Bridge => "bridge option",
            Support::Ignored => "ignored with a warning",
            Support::Deprecated(_) => "deprecated",
        };
        let note = match o.support {
            Support::Deprecated(msg) if o.note.is_empty() => msg,
            Support::OnlyValue(v) if o.note.is_empty() => v,
            _ => o.note,
        };
        out.push_str(&format!("\n# {} ({status})", o.name));
        let mut line = String::from("#  ");
        for word in note.split_whitespace() {
            if line.len() + word.len() > 88 {
                out.push('\n');
                out.push_str(&line);
                line = String::from("#  ");
            }
            line.push(' ');
            line.push_str(word);
        }
        if line.len() > 3 {
            out.push('\n');
            out.push_str(&line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    /// Every option of the table is documented in packaging/shardmq.conf (its notes may
    /// lag behind the table; `SHARDMQ_BLESS=1` regenerates the file).
    #[test]
    fn packaging_example_documents_every_option() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/shardmq.conf");
        if std::env::var_os("SHARDMQ_BLESS").is_some() {
            std::fs::write(&path, example_config()).unwrap();
        }
        let found = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            found.starts_with(ACTIVE),
            "packaging/shardmq.conf: rerun with SHARDMQ_BLESS=1"
        );
        for o in OPTIONS {
            assert!(
                found.contains(&format!("\n# {} (", o.name)),
                "{} is not documented in packaging/shardmq.conf: rerun with SHARDMQ_BLESS=1",
                o.name
            );
        }
    }

    #[test]
    fn the_example_parses() {
        let c = Config::parse_str(&example_config(), Path::new("shardmq.conf")).unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.http_writers, vec!["admin".to_string()]);
    }
}
