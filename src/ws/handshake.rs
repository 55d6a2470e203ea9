//! The opening handshake (RFC 6455 section 4.2): whether a request is a WebSocket upgrade,
//! which subprotocol to answer with, and the 101 response with its accept key.
//!
//! Subprotocols as Mosquitto chooses them: the first of the client's
//! `Sec-WebSocket-Protocol` list that is `mqtt` or `mqttv3.1` (MQTT 3.1 clients such as
//! old Paho JavaScript offer `mqttv3.1`) [MQTT-6.0.0-3] [MQTT-6.0.0-4]; a client that
//! offers none gets a response without the header (RFC 6455 forbids choosing one it did
//! not offer), and a client that offers only others is refused with 400. The `Origin`
//! header is not checked.

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::http::{Request, Response, Status};

/// RFC 6455's GUID appended to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The subprotocols the broker speaks, in no order of preference (the client's order
/// decides).
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// An accepted upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub accept: String,
    /// The subprotocol chosen, None if the client offered none.
    pub protocol: Option<&'static str>,
}

impl Upgrade {
    /// The 101 response.
    pub fn response(&self) -> Response {
        let r = Response::new(Status::SwitchingProtocols)
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Accept", self.accept.clone());
        match self.protocol {
            Some(p) => r.header("Sec-WebSocket-Protocol", p),
            None => r,
        }
    }
}

/// Why a request is not accepted as an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not an upgrade request at all: a plain HTTP request (for `http_dir`).
    NotUpgrade,
    /// An upgrade request the broker cannot accept: answer with this status.
    Bad(Status, &'static str),
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Decides on a request: the upgrade to answer with, or why not.
pub fn negotiate(req: &Request) -> Result<Upgrade, Refusal> {
    if !req.has_token("Upgrade", "websocket") {
        return Err(Refusal::NotUpgrade);
    }
    if req.method != "GET" {
        return Err(Refusal::Bad(
            Status::MethodNotAllowed,
            "a WebSocket upgrade must be a GET",
        ));
    }
    if req.minor_version < 1 {
        return Err(Refusal::Bad(
            Status::BadRequest,
            "a WebSocket upgrade needs HTTP/1.1",
        ));
    }
    if !req.has_token("Connection", "upgrade") {
        return Err(Refusal::Bad(
            Status::BadRequest,
            "Connection header without 'Upgrade'",
        ));
    }
    if !req.has_token("Sec-WebSocket-Version", "13") {
        return Err(Refusal::Bad(
            Status::UpgradeRequired,
            "only WebSocket version 13 is supported",
        ));
    }
    let key = req
        .header("Sec-WebSocket-Key")
        .and_then(|k| std::str::from_utf8(k).ok())
        .map(str::trim)
        .filter(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k)
                .is_ok_and(|raw| raw.len() == 16)
        })
        .ok_or(Refusal::Bad(
            Status::BadRequest,
            "missing or invalid Sec-WebSocket-Key",
        ))?;
    let mut offered = req.tokens("Sec-WebSocket-Protocol").peekable();
    let protocol = if offered.peek().is_none() {
        None
    } else {
        let chosen = offered.find_map(|p| SUBPROTOCOLS.iter().copied().find(|s| *s == p));
        Some(chosen.ok_or(Refusal::Bad(
            Status::BadRequest,
            "no MQTT subprotocol offered (mqtt or mqttv3.1)",
        ))?)
    };
    Ok(Upgrade {
        accept: accept_key(key),
        protocol,
    })
}
