//! Bridge blocks: a `connection NAME` line and the bridge options after it, until the
//! next `connection` or `listener` line, into a [`BridgeConfig`] with Mosquitto 2's
//! defaults (`crate::bridge` runs them).
//!
//! Fail closed: a bridge option shardmq cannot honour (OCSP, through the option table),
//! and TLS
//! options without a CA (which would leave the bridge in clear, `validate.rs`), stop the
//! start naming file, line and option: a bridge's messages must never silently stay
//! local or leave in clear. This module never reads files.

use super::error::Error;
use super::parse::Parser;
use super::values::{parse_bridge_address, parse_int, Line};
use super::{BridgeConfig, BridgeTopic};

impl Parser {
    /// The bridge block the current line belongs to.
    fn bridge(&mut self, line: &Line<'_>) -> Result<&mut BridgeConfig, Error> {
        match self.bridge.and_then(|i| self.cfg.bridges.get_mut(i)) {
            Some(b) => Ok(b),
            None => Err(line.invalid("bridge option outside a 'connection' block")),
        }
    }

    /// One line of a bridge block (`option` is a bridge option of the option table).
    pub(super) fn bridge_option(&mut self, line: &Line<'_>) -> Result<(), Error> {
        match line.option {
            "connection" => {
                let name = line.value()?;
                if name.contains(char::is_whitespace) {
                    return Err(line.invalid_value(name, "a bridge name is one word"));
                }
                self.cfg.bridges.push(BridgeConfig {
                    defined_at: Some(line.at.clone()),
                    ..BridgeConfig::new(name)
                });
                self.bridge = Some(self.cfg.bridges.len() - 1);
            }
            "address" | "addresses" => {
                let mut parsed = Vec::new();
                for a in line.tokens()? {
                    parsed.push(
                        parse_bridge_address(a)
                            .ok_or_else(|| line.invalid_value(a, "expected host[:port]"))?,
                    );
                }
                self.bridge(line)?.addresses.extend(parsed);
            }
            "topic" => {
                let topic = bridge_topic(line)?;
                self.bridge(line)?.topics.push(topic);
            }
            "remote_clientid" | "clientid" => {
                self.bridge(line)?.remote_clientid = Some(line.string()?);
            }
            "local_clientid" => self.bridge(line)?.local_clientid = Some(line.string()?),
            "remote_username" | "username" => {
                self.bridge(line)?.remote_username = Some(line.string()?);
            }
            "remote_password" | "password" => {
                self.bridge(line)?.remote_password = Some(line.string()?);
            }
            "local_username" => self.bridge(line)?.local_username = Some(line.string()?),
            "local_password" => self.bridge(line)?.local_password = Some(line.string()?),
            "cleansession" => self.bridge(line)?.cleansession = line.bool()?,
            "local_cleansession" => self.bridge(line)?.local_cleansession = Some(line.bool()?),
            "round_robin" => self.bridge(line)?.round_robin = line.bool()?,
            "keepalive_interval" => {
                let n = u16::try_from(line.int(0, 65535)?).unwrap_or(u16::MAX);
                self.bridge(line)?.keepalive_interval = n;
            }
            "bridge_protocol_version" => {
                let v = line.value()?;
                if !matches!(v, "mqttv31" | "mqttv311" | "mqttv50") {
                    return Err(line.invalid_value(v, "expected mqttv31, mqttv311 or mqttv50"));
                }
                self.bridge(line)?.protocol_version = Some(v.to_string());
            }
            "try_private" => self.bridge(line)?.try_private = line.bool()?,
            "restart_timeout" => {
                let words = line.tokens()?;
                let secs = |w: &str| {
                    parse_int(w, 1, 86_400)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| line.invalid_value(w, "expected seconds from 1 to 86400"))
                };
                let value = match words.as_slice() {
                    [base] => (secs(base)?, None),
                    [base, cap] => (secs(base)?, Some(secs(cap)?)),
                    _ => return Err(line.invalid_value(line.rest, "expected BASE [CAP]")),
                };
                self.bridge(line)?.restart_timeout = value;
            }
            "notifications" => self.bridge(line)?.notifications = line.bool()?,
            "notification_topic" => {
                self.bridge(line)?.notification_topic = Some(line.string()?);
            }
            "notifications_local_only" => {
                self.bridge(line)?.notifications_local_only = line.bool()?;
            }
            "bridge_outgoing_retain" => self.bridge(line)?.outgoing_retain = line.bool()?,
            "bridge_attempt_unsubscribe" => {
                self.bridge(line)?.attempt_unsubscribe = line.bool()?;
            }
            "bridge_max_packet_size" => {
                let n = u32::try_from(line.int(0, i64::from(u32::MAX))?).unwrap_or(u32::MAX);
                self.bridge(line)?.max_packet_size = n;
            }
            "idle_timeout" => {
                let n = u32::try_from(line.int(1, i64::from(u32::MAX))?).unwrap_or(u32::MAX);
                self.bridge(line)?.idle_timeout = n;
            }
            "threshold" => {
                let n = u32::try_from(line.int(1, i64::from(u32::MAX))?).unwrap_or(u32::MAX);
                self.bridge(line)?.threshold = n;
            }
            "start_type" => {
                let v = line.value()?;
                let (once, lazy) = match v {
                    "automatic" => (false, false),
                    "once" => (true, false),
                    "lazy" => (false, true),
                    _ => return Err(line.invalid_value(v, "expected automatic, lazy or once")),
                };
                let b = self.bridge(line)?;
                b.start_once = once;
                b.start_lazy = lazy;
            }
            "bridge_cafile" | "bridge_capath" | "bridge_certfile" | "bridge_keyfile" => {
                let path = line.path()?;
                let b = self.bridge(line)?;
                let option = line.option.trim_start_matches("bridge_");
                match option {
                    "cafile" => b.tls.cafile = Some(path),
                    "capath" => b.tls.capath = Some(path),
                    "certfile" => b.tls.certfile = Some(path),
                    _ => b.tls.keyfile = Some(path),
                }
                b.tls.origins.push((option.to_string(), line.at.clone()));
            }
            "bridge_tls_version" => {
                let v = line.value()?;
                if !matches!(v, "tlsv1.3" | "tlsv1.2" | "tlsv1.1") {
                    return Err(line.invalid_value(v, "expected tlsv1.3, tlsv1.2 or tlsv1.1"));
                }
                let b = self.bridge(line)?;
                b.tls.tls_version = Some(v.to_string());
                b.tls.origins.push(("tls_version".into(), line.at.clone()));
            }
            "bridge_insecure" => self.bridge(line)?.insecure = line.bool()?,
            "bridge_alpn" => self.bridge(line)?.alpn = Some(line.string()?),
            "bridge_identity" => self.bridge(line)?.psk_identity = Some(line.string()?),
            "bridge_psk" => {
                let v = line.value()?;
                if v.is_empty() || !v.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(line.invalid_value(v, "expected a hexadecimal key"));
                }
                self.bridge(line)?.psk = Some(v.to_string());
            }
            "bridge_bind_address" => {
                let v = line.value()?;
                let ip = v
                    .parse()
                    .map_err(|_| line.invalid_value(v, "expected an IP address of this host"))?;
                self.bridge(line)?.bind_address = Some(ip);
            }
            // Every bridge option of the table is handled above.
            other => return Err(line.invalid(format!("unknown bridge option '{other}'"))),
        }
        Ok(())
    }
}

/// `topic PATTERN [[[in|out|both] QOS] LOCAL_PREFIX REMOTE_PREFIX]`; `""` is an empty
/// word (an empty pattern or prefix).
fn bridge_topic(line: &Line<'_>) -> Result<BridgeTopic, Error> {
    let words: Vec<&str> = line
        .tokens()?
        .into_iter()
        .map(|w| if w == "\"\"" { "" } else { w })
        .collect();
    let bad = |reason: &str| line.invalid_value(line.rest, reason);
    let (pattern, direction, qos, prefixes) = match words.as_slice() {
        [p] => (*p, "out", "0", None),
        [p, d] => (*p, *d, "0", None),
        [p, d, q] => (*p, *d, *q, None),
        [p, d, q, l, r] => (*p, *d, *q, Some((*l, *r))),
        _ => {
            return Err(bad(
                "expected PATTERN [[[in|out|both] QOS] LOCAL_PREFIX REMOTE_PREFIX]",
            ))
        }
    };
    if !matches!(direction, "in" | "out" | "both") {
        return Err(bad("direction must be in, out or both"));
    }
    let qos = parse_int(qos, 0, 2).ok_or_else(|| bad("QoS must be 0, 1 or 2"))?;
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let (local_prefix, remote_prefix) = match prefixes {
        Some((l, r)) => (non_empty(l), non_empty(r)),
        None => (None, None),
    };
    if pattern.is_empty() && local_prefix.is_none() && remote_prefix.is_none() {
        return Err(bad("an empty pattern needs a prefix"));
    }
    if !valid_filter(pattern) {
        return Err(bad("invalid topic filter"));
    }
    Ok(BridgeTopic {
        pattern: pattern.to_string(),
        direction: direction.to_string(),
        qos: u8::try_from(qos).unwrap_or(0),
        local_prefix,
        remote_prefix,
    })
}

/// Wildcards fill a whole level and `#` is the last one. [MQTT-4.7.1-1], [MQTT-4.7.1-2]
fn valid_filter(pattern: &str) -> bool {
    let levels: Vec<&str> = pattern.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| {
        if level.contains('#') {
            *level == "#" && i == last
        } else {
            !level.contains('+') || *level == "+"
        }
    }) && !pattern.contains('\0')
}
