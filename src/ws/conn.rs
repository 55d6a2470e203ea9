//! One connection on a WebSockets listener, sans-IO: the HTTP request it starts with
//! (an upgrade, or a plain request answered from `http_dir` or with 400), then frames in,
//! MQTT bytes out to the broker, pongs and the close handshake. The runtime reads the
//! socket into [`WsConn::input`], calls [`WsConn::on_input`], hands the MQTT bytes to the
//! broker, writes what [`WsConn::framer`] holds (and frames the broker's output, see
//! `output.rs`), and closes the connection when [`WsConn::closing`] says so.
//!
//! Memory is bounded: before the handshake at most `websockets_headers_size` bytes of
//! request are kept (431 past it), after it only a partial frame header; payload is never
//! buffered here. Every refusal gets its status or close code and a rate-limited log
//! line; it never panics on input and never affects another connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::frame::{close_frame, control_frame, Control, Decoder, CLOSE_NORMAL, OP_PONG};
use super::handshake::{self, Refusal};
use super::output::Framer;
use crate::http::files::HttpDir;
use crate::http::{self, Response, Status};
use crate::log::Level;

/// `websockets_log_level` bits (libwebsockets' `lws_log_levels`, which Mosquitto passes
/// the option to) that shardmq's own WebSocket lines follow, with `log_type websockets`.
pub mod log_bits {
    /// Refused requests and protocol errors (these are also logged as notices).
    pub const ERR: u32 = 1;
    /// Upgrades accepted and close handshakes.
    pub const NOTICE: u32 = 4;
    /// Files served from `http_dir`.
    pub const INFO: u32 = 8;
    /// Pings.
    pub const DEBUG: u32 = 16;
    /// Every request header.
    pub const HEADER: u32 = 64;
}

/// Mosquitto's default `websockets_headers_size` (also what 0 means).
pub const DEFAULT_HEADERS_SIZE: usize = 1024;

/// What a WebSockets listener needs to serve its connections (shared by the shards).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The port, for log lines.
    pub port: u16,
    /// Largest request head (`websockets_headers_size`).
    pub headers_size: usize,
    pub http_dir: Option<HttpDir>,
    /// `websockets_log_level`.
    pub log_level: u32,
    /// An `http_listener`: every request goes to this handler (the console), and a
    /// WebSocket upgrade is refused there (the listener speaks no MQTT).
    pub handler: Option<Arc<dyn http::Handler>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the HTTP request.
    Request,
    /// Upgraded: frames.
    Open,
    /// A close was decided: nothing more is read.
    Closing,
}

/// When the runtime closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Once everything queued (an HTTP response) is written.
    WhenFlushed,
    /// Now, after writing what the socket takes (a close frame after an error, or the
    /// answer to the client's close).
    Now,
}

/// The WebSocket state of one connection.
#[derive(Debug)]
pub struct WsConn {
    settings: Arc<Settings>,
    peer: SocketAddr,
    phase: Phase,
    /// Bytes read from the socket, not yet decoded.
    pub input: BytesMut,
    decoder: Decoder,
    /// What to write besides the broker's MQTT bytes, and the framing of those.
    pub framer: Framer,
    closing: Option<Closing>,
}

impl WsConn {
    pub fn new(settings: Arc<Settings>, peer: SocketAddr) -> Self {
        Self {
            settings,
            peer,
            phase: Phase::Request,
            input: BytesMut::new(),
            decoder: Decoder::new(),
            framer: Framer::default(),
            closing: None,
        }
    }

    /// Upgraded and not closing: MQTT bytes flow (and the broker's are framed).
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Whether and when the runtime closes the connection.
    pub fn closing(&self) -> Option<Closing> {
        self.closing
    }

    /// At most how many bytes the next read may add to `input`, given the runtime's read
    /// size: before the upgrade, one more than the request head may take (so an oversized
    /// head is seen and refused); after it, `chunk`; while closing, nothing.
    pub fn read_room(&self, chunk: usize) -> usize {
        match self.phase {
            Phase::Request => (self.settings.headers_size + 1).saturating_sub(self.input.len()),
            Phase::Open => chunk,
            Phase::Closing => 0,
        }
    }

    /// Handles what was read: the request, then frames; the MQTT bytes of data frames go
    /// to `mqtt`, at most `limit` bytes per frame (the largest MQTT packet the broker
    /// accepts from this connection now).
    pub fn on_input(&mut self, mqtt: &mut BytesMut, limit: u64, now: Instant) {
        if self.phase == Phase::Request {
            self.request(now);
        }
        while self.phase == Phase::Open {
            match self.decoder.decode(&mut self.input, mqtt, limit) {
                Ok(None) => break,
                Ok(Some(Control::Ping(payload))) => {
                    self.detail(
                        log_bits::DEBUG,
                        format_args!("ping ({} bytes)", payload.len()),
                    );
                    self.framer
                        .push(Bytes::from(control_frame(OP_PONG, &payload)));
                }
                Ok(Some(Control::Pong)) => {}
                Ok(Some(Control::Close(code))) => {
                    self.detail(log_bits::NOTICE, format_args!("client closed ({code:?})"));
                    // RFC 6455 5.5.1: answer with a close frame, echoing the code.
                    self.close(code, Closing::Now);
                }
                Err(e) => {
                    let code = e.close_code();
                    crate::log_limited!(
                        Level::Notice,
                        now,
                        "WebSocket connection from {} closed with {}: {}.",
                        self.peer,
                        code,
                        e
                    );
                    self.close(Some(code), Closing::Now);
                }
            }
        }
        if self.phase == Phase::Closing {
            self.input.clear();
        }
    }

    /// The broker closes the connection: a normal close frame after its last bytes.
    pub fn close_normal(&mut self) {
        if self.phase == Phase::Open {
            self.close(Some(CLOSE_NORMAL), Closing::Now);
        }
    }

    fn close(&mut self, code: Option<u16>, when: Closing) {
        self.framer.push(Bytes::from(close_frame(code)));
        self.phase = Phase::Closing;
        self.closing = Some(when);
    }

    /// The HTTP request: an upgrade, a file, or a refusal.
    fn request(&mut self, now: Instant) {
        let (request, len) = match http::parse_request(&self.input, self.settings.headers_size) {
            Ok(None) => return,
            Ok(Some(parsed)) => parsed,
            Err(e) => {
                let status = e.status();
                return self.refuse(Response::error(status, &e.to_string()), &e.to_string(), now);
            }
        };
        let _ = self.input.split_to(len);
        if self.detail_enabled(log_bits::HEADER) {
            self.detail(
                log_bits::HEADER,
                format_args!("{} {}", request.method, request.target),
            );
            for h in &request.headers {
                let value = String::from_utf8_lossy(&h.value);
                self.detail(log_bits::HEADER, format_args!("{}: {value}", h.name));
            }
        }
        if let Some(handler) = &self.settings.handler {
            let response = handler.handle(&request, self.peer, now);
            return self.respond(response);
        }
        match handshake::negotiate(&request) {
            Ok(upgrade) => {
                let (head, _) = upgrade.response().into_parts();
                self.framer.push(head);
                self.phase = Phase::Open;
                self.detail(
                    log_bits::NOTICE,
                    format_args!(
                        "upgraded, subprotocol {}",
                        upgrade.protocol.unwrap_or("(none offered)")
                    ),
                );
            }
            Err(Refusal::NotUpgrade) => match &self.settings.http_dir {
                Some(dir) => {
                    let served = dir.serve(&request);
                    let status = served.response.status;
                    if status == Status::Ok {
                        self.detail(log_bits::INFO, format_args!("serving {}", served.path));
                        self.respond(served.response);
                    } else {
                        let why = format!("{} {}", request.method, served.path);
                        self.refuse(served.response, &why, now);
                    }
                }
                None => self.refuse(
                    Response::error(
                        Status::BadRequest,
                        "this is an MQTT over WebSockets listener (no http_dir)",
                    ),
                    "not a WebSocket upgrade and no http_dir",
                    now,
                ),
            },
            Err(Refusal::Bad(status, why)) => {
                let mut response = Response::error(status, why);
                if status == Status::UpgradeRequired {
                    response = response.header("Sec-WebSocket-Version", "13");
                }
                self.refuse(response, why, now);
            }
        }
    }

    fn refuse(&mut self, response: Response, why: &str, now: Instant) {
        crate::log_limited!(
            Level::Notice,
            now,
            "WebSocket connection from {} refused: {} ({}).",
            self.peer,
            response.status,
            why
        );
        self.respond(response);
    }

    /// Sends an HTTP response, then closes.
    fn respond(&mut self, response: Response) {
        let (head, body) = response.into_parts();
        self.framer.push(head);
        self.framer.push(body);
        self.phase = Phase::Closing;
        self.closing = Some(Closing::WhenFlushed);
    }

    fn detail_enabled(&self, bit: u32) -> bool {
        self.settings.log_level & bit != 0 && crate::log::enabled(Level::Websockets)
    }

    /// A `log_type websockets` line, if `websockets_log_level` has `bit`.
    fn detail(&self, bit: u32, what: std::fmt::Arguments<'_>) {
        if self.detail_enabled(bit) {
            crate::log::write(
                Level::Websockets,
                format_args!(
                    "WebSocket {} (port {}): {what}",
                    self.peer, self.settings.port
                ),
            );
        }
    }
}
