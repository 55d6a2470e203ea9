//! Checks that span several options: TLS completeness, duplicate listeners, bridges
//! without addresses or topics. Runs once after parsing (and may be re-run by a caller
//! that changed a `Config`, e.g. after `-p`). Never reads files or opens sockets.

use super::error::{Error, Location};
use super::Config;

fn origin(at: Option<&Location>) -> Location {
    at.cloned()
        .unwrap_or_else(|| Location::new("<built-in configuration>", 0))
}

fn invalid(at: Option<&Location>, option: &str, message: String) -> Error {
    Error::Invalid {
        at: origin(at),
        option: option.to_string(),
        message,
    }
}

impl Config {
    /// Checks the configuration as a whole. Errors point at the `listener` or
    /// `connection` line of the block at fault.
    pub fn validate(&self) -> Result<(), Error> {
        for (i, l) in self.listeners.iter().enumerate() {
            let at = l.defined_at.as_ref();
            if let Some(tls) = &l.tls {
                let port = l.port;
                if tls.certfile.is_none() || tls.keyfile.is_none() {
                    return Err(invalid(
                        at,
                        "listener",
                        format!("TLS on listener {port} needs both certfile and keyfile"),
                    ));
                }
                if tls.require_certificate && tls.cafile.is_none() && tls.capath.is_none() {
                    return Err(invalid(
                        at,
                        "listener",
                        format!("require_certificate on listener {port} needs cafile or capath"),
                    ));
                }
                if tls.use_identity_as_username && !tls.require_certificate {
                    return Err(invalid(
                        at,
                        "listener",
                        format!(
                            "use_identity_as_username on listener {port} needs \
                             require_certificate true"
                        ),
                    ));
                }
            }
            if l.port == 0 {
                continue; // The OS picks a distinct port for each.
            }
            let duplicate = self.listeners[..i]
                .iter()
                .any(|o| o.port == l.port && o.bind_address == l.bind_address);
            if duplicate {
                let addr = l.bind_address.as_deref().unwrap_or("all interfaces");
                return Err(invalid(
                    at,
                    "listener",
                    format!("duplicate listener on port {} ({addr})", l.port),
                ));
            }
        }
        for (i, b) in self.bridges.iter().enumerate() {
            let at = b.defined_at.as_ref();
            if b.addresses.is_empty() {
                return Err(invalid(
                    at,
                    "connection",
                    format!("bridge '{}' has no address", b.name),
                ));
            }
            if b.topics.is_empty() {
                return Err(invalid(
                    at,
                    "connection",
                    format!("bridge '{}' has no topic", b.name),
                ));
            }
            if self.bridges[..i].iter().any(|o| o.name == b.name) {
                return Err(invalid(
                    at,
                    "connection",
                    format!("duplicate bridge name '{}'", b.name),
                ));
            }
        }
        if self.threads == Some(0) {
            return Err(invalid(
                None,
                "threads",
                "threads must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
