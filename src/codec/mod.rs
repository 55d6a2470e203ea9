//! Sans-IO MQTT codec: bytes <-> [`Packet`], one set of types for MQTT 3.1 (MQIsdp),
//! 3.1.1 and 5.0.
//!
//! The protocol version is a *parameter* of [`decode`] and [`encode`]; data that only
//! exists in MQTT 5 lives in [`Properties`], which is empty for 3.1 / 3.1.1. Decoding is
//! zero-copy: topics, strings and payloads are [`bytes::Bytes`] slices of the read
//! buffer. A partial frame decodes to `Ok(None)`, never to an error.
//!
//! This module must never do I/O, read the clock, allocate per byte, or panic on any
//! input: every bound is checked in [`wire`] before it is used.

mod bytestr;
mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod property_codec;
pub mod wire;

#[cfg(test)]
mod tests;

pub use bytestr::ByteStr;
pub use decode::{decode, decode_connect_version, frame_len};
pub use encode::{encode, encode_plain_ack, encode_publish_header, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::{Properties, PropertyId, PropertyValues};
