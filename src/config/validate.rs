//! Checks that span several options: TLS completeness (certificates or PSK, never both;
//! no PSK on websockets listeners),
//! duplicate listeners, bridges
//! without addresses or topics. Runs once after parsing (and may be re-run by a caller
//! that changed a `Config`, e.g. after `-p`). Never reads files or opens sockets.

use super::error::{Error, Location};
use super::{Config, ListenerProtocol, TlsConfig};

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
                validate_tls(tls, l.port, at)?;
                if tls.is_psk() && l.protocol != ListenerProtocol::Mqtt {
                    // Mosquitto's websockets listeners (libwebsockets) never use psk_hint, so
                    // they would serve without TLS: refused instead.
                    return Err(invalid(
                        tls.origin("psk_hint").or(at),
                        "psk_hint",
                        format!(
                            "TLS-PSK is not available on {} listener {}: use \
                             certfile and keyfile",
                            if l.protocol == ListenerProtocol::Http {
                                "http"
                            } else {
                                "websockets"
                            },
                            l.port
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
            let t = &b.tls;
            let cert_option =
                t.certfile.is_some() || t.keyfile.is_some() || b.insecure || b.alpn.is_some();
            let tls_option = cert_option || t.tls_version.is_some();
            if b.psk_identity.is_some() != b.uses_psk() {
                return Err(invalid(
                    at,
                    "connection",
                    format!(
                        "bridge '{}': bridge_identity and bridge_psk go together",
                        b.name
                    ),
                ));
            }
            if b.uses_psk() {
                let why = if !cfg!(feature = "psk") {
                    Some("TLS-PSK needs shardmq built with the `psk` feature (OpenSSL)")
                } else if b.uses_tls() || cert_option {
                    Some(
                        "bridge_psk goes with bridge_tls_version only (not with certificate \
                         or host name options)",
                    )
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(invalid(
                        at,
                        "connection",
                        format!("bridge '{}': {why}", b.name),
                    ));
                }
            } else if tls_option && !b.uses_tls() {
                return Err(invalid(
                    at,
                    "connection",
                    format!(
                        "bridge '{}' has TLS options but neither bridge_cafile nor \
                         bridge_capath: it would connect in clear",
                        b.name
                    ),
                ));
            }
            if t.certfile.is_some() != t.keyfile.is_some() {
                return Err(invalid(
                    at,
                    "connection",
                    format!(
                        "bridge '{}': bridge_certfile and bridge_keyfile go together",
                        b.name
                    ),
                ));
            }
            if b.start_lazy && b.local_cleansession.unwrap_or(b.cleansession) {
                // A lazy bridge counts the messages its local session holds while it is
                // down: a clean local session ends with each connection and holds none,
                // so the bridge would never connect again.
                return Err(invalid(
                    at,
                    "connection",
                    format!(
                        "bridge '{}': start_type lazy needs a persistent local session \
                         (cleansession false, or local_cleansession false)",
                        b.name
                    ),
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

/// One listener's TLS options make sense together. Errors point at the option at fault
/// (or the `listener` line).
fn validate_tls(tls: &TlsConfig, port: u16, listener_at: Option<&Location>) -> Result<(), Error> {
    let at = |option: &str| tls.origin(option).or(listener_at);
    if tls.is_psk() {
        // Mosquitto: "Cannot use both certificate and psk encryption in a single listener."
        let certificate_options = [
            ("certfile", tls.certfile.is_some()),
            ("keyfile", tls.keyfile.is_some()),
            ("cafile", tls.cafile.is_some()),
            ("capath", tls.capath.is_some()),
            ("crlfile", tls.crlfile.is_some()),
            ("require_certificate", tls.require_certificate),
            ("use_subject_as_username", tls.use_subject_as_username),
        ];
        if let Some((option, _)) = certificate_options.iter().find(|(_, set)| *set) {
            return Err(invalid(
                at(option),
                option,
                format!(
                    "Cannot use both certificate and psk encryption in a single listener \
                     (listener {port} has psk_hint)"
                ),
            ));
        }
        if tls.psk_file.is_none() {
            return Err(invalid(
                at("psk_hint"),
                "psk_hint",
                format!("psk_hint on listener {port} needs a psk_file with the clients' keys"),
            ));
        }
        return Ok(());
    }
    if tls.certfile.is_none() || tls.keyfile.is_none() {
        return Err(invalid(
            listener_at,
            "listener",
            format!("TLS on listener {port} needs both certfile and keyfile"),
        ));
    }
    if tls.require_certificate && tls.cafile.is_none() && tls.capath.is_none() {
        return Err(invalid(
            listener_at,
            "listener",
            format!("require_certificate on listener {port} needs cafile or capath"),
        ));
    }
    if tls.crlfile.is_some() && tls.cafile.is_none() && tls.capath.is_none() {
        return Err(invalid(
            at("crlfile"),
            "crlfile",
            format!("crlfile on listener {port} needs cafile or capath"),
        ));
    }
    if tls.use_identity_as_username && !tls.require_certificate {
        return Err(invalid(
            listener_at,
            "listener",
            format!("use_identity_as_username on listener {port} needs require_certificate true"),
        ));
    }
    if tls.use_subject_as_username && !tls.require_certificate {
        return Err(invalid(
            at("use_subject_as_username"),
            "use_subject_as_username",
            format!("use_subject_as_username on listener {port} needs require_certificate true"),
        ));
    }
    Ok(())
}
