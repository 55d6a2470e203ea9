//! The JSON API under `/api/v1/` that the console page uses and scripts can call:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET overview` | version, uptime, totals, per-shard figures, who you are |
//! | `GET connections?search=S` | connected clients (client id, address, protocol, keep alive, inflight, queued, bytes out, shard) |
//! | `DELETE connections/CLIENT_ID` | disconnect it (v5: reason 0x98), 202; `http_acl write` users only |
//! | `GET subscriptions?search=S` | (client, filter, QoS, online) |
//! | `GET retained?search=S` | retained messages (topic, QoS, size, preview) |
//! | `DELETE retained/TOPIC` | delete it, 202; `http_acl write` users only |
//! | `GET listeners` | the configured listeners |
//!
//! Lists come from the rows the shards publish once a second (at most
//! [`super::board::MAX_ROWS`] per shard); `search` keeps rows whose client id, user,
//! filter or topic contains it. Path segments and queries are percent-decoded. It
//! never blocks: an action is handed to the dispatcher and answered 202 Accepted.

use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};

use super::{Action, Console};
use crate::http::{Request, Response, Status};

fn ok(value: &Value) -> Response {
    Response::new(Status::Ok).body("application/json", Bytes::from(value.to_string()))
}

fn error(status: Status, message: &str) -> Response {
    Response::new(status).body(
        "application/json",
        Bytes::from(json!({ "error": message }).to_string()),
    )
}

/// Percent-decoding (`+` as a space in queries only); `None` if not UTF-8 or malformed.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The value of query parameter `name`, decoded.
fn query(request: &Request, name: &str) -> Option<String> {
    let (_, q) = request.target.split_once('?')?;
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v, true)).flatten()
    })
}

fn matches(search: Option<&str>, fields: &[&str]) -> bool {
    search.map_or(true, |s| fields.iter().any(|f| f.contains(s)))
}

/// Routes `rest` (the path after `/api/v1/`).
pub fn route(
    console: &Console,
    request: &Request,
    rest: &str,
    user: &str,
    writer: bool,
    now: Instant,
) -> Response {
    let method = request.method.as_str();
    let read = matches!(method, "GET" | "HEAD");
    let search = query(request, "search").filter(|s| !s.is_empty());
    let search = search.as_deref();
    let (resource, arg) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(arg) = percent_decode(arg, false) else {
        return error(Status::BadRequest, "malformed percent-encoding in the path");
    };
    match (resource, arg.is_empty(), read, method) {
        ("overview", true, true, _) => ok(&overview(console, user, writer, now)),
        ("connections", true, true, _) => {
            let rows: Vec<Value> = console
                .board
                .read(|_, v| {
                    v.conns
                        .iter()
                        .filter(|c| {
                            matches(search, &[&c.client_id, c.username.as_deref().unwrap_or("")])
                        })
                        .map(|c| {
                            json!({
                                "client_id": c.client_id,
                                "username": c.username,
                                "address": c.peer.to_string(),
                                "protocol": c.protocol,
                                "keep_alive": c.keep_alive,
                                "inflight": c.inflight,
                                "queued": c.queued,
                                "bytes_out": c.bytes_out,
                                "listener": c.listener,
                                "shard": c.shard,
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .into_iter()
                .flatten()
                .collect();
            ok(&json!({ "connections": rows }))
        }
        ("subscriptions", true, true, _) => {
            let rows: Vec<Value> = console
                .board
                .read(|_, v| {
                    v.subs
                        .iter()
                        .filter(|s| matches(search, &[&s.client_id, &s.filter]))
                        .map(|s| {
                            let group = s
                                .filter
                                .strip_prefix("$share/")
                                .and_then(|r| r.split_once('/'))
                                .map(|(g, _)| g.to_string());
                            json!({
                                "client_id": s.client_id,
                                "filter": s.filter,
                                "qos": s.qos,
                                "shared_group": group,
                                "online": s.online,
                                "shard": s.shard,
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .into_iter()
                .flatten()
                .collect();
            ok(&json!({ "subscriptions": rows }))
        }
        ("retained", true, true, _) => {
            let rows: Vec<Value> = console
                .board
                .read(|_, v| {
                    v.retained
                        .iter()
                        .filter(|r| matches(search, &[&r.topic]))
                        .map(|r| {
                            json!({
                                "topic": r.topic,
                                "qos": r.qos,
                                "bytes": r.bytes,
                                "preview": r.preview,
                            })
                        })
                        .collect::<Vec<_>>()
                })
                .into_iter()
                .flatten()
                .collect();
            ok(&json!({ "retained": rows }))
        }
        ("listeners", true, true, _) => {
            let rows: Vec<Value> = console
                .info()
                .listeners
                .iter()
                .map(|(index, protocol, port)| {
                    json!({ "listener": index, "protocol": protocol, "port": port })
                })
                .collect();
            ok(&json!({ "listeners": rows }))
        }
        ("connections" | "retained", false, false, "DELETE") => {
            if !writer {
                return error(
                    Status::Forbidden,
                    "read-only user: an `http_acl write USER` line grants actions",
                );
            }
            if resource == "retained" && crate::topic::TopicName::parse(&arg).is_err() {
                return error(Status::BadRequest, "not a topic name (no wildcards)");
            }
            if resource == "connections" {
                let connected = console
                    .board
                    .read(|_, v| v.conns.iter().any(|c| c.client_id == arg))
                    .into_iter()
                    .any(|x| x);
                if !connected {
                    return error(Status::NotFound, "no such client is connected");
                }
            }
            let action = if resource == "connections" {
                Action::Disconnect(arg.clone())
            } else {
                Action::DeleteRetained(arg.clone())
            };
            if !console.act(action) {
                return error(Status::InternalServerError, "the broker is not running");
            }
            crate::log_notice!(
                "HTTP console: user {user} asked to {} {arg}.",
                if resource == "connections" {
                    "disconnect"
                } else {
                    "delete the retained message of"
                }
            );
            Response::new(Status::Accepted).body(
                "application/json",
                Bytes::from(json!({ "accepted": arg }).to_string()),
            )
        }
        ("overview" | "connections" | "subscriptions" | "retained" | "listeners", _, _, _) => {
            error(
                Status::MethodNotAllowed,
                "method not allowed on this resource",
            )
            .header(
                "Allow",
                if arg.is_empty() {
                    "GET, HEAD"
                } else {
                    "DELETE"
                },
            )
        }
        _ => error(Status::NotFound, "no such API resource"),
    }
}

fn overview(console: &Console, user: &str, writer: bool, now: Instant) -> Value {
    let info = console.info();
    let shards: Vec<Value> = console.board.read(|shard, v| {
        let s = v.stats.as_ref();
        let get = |f: fn(&crate::metrics::Stats) -> u64| s.map_or(0, f);
        json!({
            "shard": shard,
            "connections": get(|s| s.clients_connected),
            "sessions": get(|s| s.clients_total),
            "subscriptions": get(|s| s.subscriptions),
            "publish_received": get(|s| s.publish_received),
            "publish_sent": get(|s| s.publish_sent),
            "publish_dropped": get(|s| s.publish_dropped),
            "bytes_received": get(|s| s.bytes_received),
            "bytes_sent": get(|s| s.bytes_sent),
            "inflight": v.inflight,
            "queued": v.queued,
            "mailbox_backlog": v.mailbox_backlog,
            "loop_lag_iterations": v.loop_lag.count,
            "loop_lag_sum_us": v.loop_lag.sum_us,
            "retained": get(|s| s.retained),
        })
    });
    let sum = |key: &str| -> u64 { shards.iter().filter_map(|s| s[key].as_u64()).sum() };
    let retained = shards
        .first()
        .and_then(|s| s["retained"].as_u64())
        .unwrap_or(0);
    json!({
        "version": info.version,
        "uptime_seconds": now.saturating_duration_since(info.started).as_secs(),
        "user": user,
        "may_write": writer,
        "totals": {
            "connections": sum("connections"),
            "sessions": sum("sessions"),
            "subscriptions": sum("subscriptions"),
            "retained": retained,
            "publish_received": sum("publish_received"),
            "publish_sent": sum("publish_sent"),
            "publish_dropped": sum("publish_dropped"),
            "bytes_received": sum("bytes_received"),
            "bytes_sent": sum("bytes_sent"),
        },
        "shards": shards,
    })
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c", false).as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_decode("%ff", false), None); // not UTF-8
    }
}
