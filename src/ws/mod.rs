//! MQTT over WebSockets (RFC 6455, MQTT 5.0 section 6), sans-IO like the codec: the
//! opening handshake (`handshake.rs`, on top of the HTTP request parser in
//! [`crate::http`]), the frame decoder and encoder (`frame.rs`), the framing of the
//! broker's output (`output.rs`) and one connection's state machine tying them together
//! (`conn.rs`).
//!
//! It sits between the socket (and TLS, for `wss://`) and the broker, which only ever
//! sees MQTT bytes: `runtime/conn.rs` reads into a [`WsConn`], passes the MQTT bytes it
//! decodes to `Broker::on_read`, and writes the broker's output queue through the
//! [`output::Framer`] as one binary frame per write batch. This module never touches a
//! socket, a thread or the clock (time comes in as `now`, for rate-limited log lines),
//! never interprets MQTT bytes, and never panics on what a client sends.

pub mod conn;
pub mod frame;
pub mod handshake;
pub mod output;

#[cfg(test)]
mod tests;

pub use conn::{Closing, Settings, WsConn};
