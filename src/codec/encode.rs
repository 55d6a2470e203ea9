//! Encoder. Writes exactly `encoded_len` bytes.

use bytes::BytesMut;

use super::{EncodeError, Packet, ProtocolVersion, Publish};

/// Appends the encoding of `packet` for `version` to `out`.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let _ = (packet, version, out);
    todo!("codec: encode")
}

/// Number of bytes `encode` writes for `packet`.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let _ = (packet, version);
    todo!("codec: encoded_len")
}

/// Appends everything of a PUBLISH except its payload (fixed header with the remaining
/// length that includes the payload, topic, packet id, properties), so that a fan-out can
/// send the header from a small buffer and share the payload `Bytes` zero-copy.
pub fn encode_publish_header(
    publish: &Publish,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let _ = (publish, version, out);
    todo!("codec: encode_publish_header")
}
