//! Decoder: check, then parse. `Ok(None)` means "need more bytes".

use bytes::BytesMut;

use super::{DecodeError, Packet, ProtocolVersion};

/// Length of the complete frame (fixed header + remaining length) at the front of `buf`,
/// `Ok(None)` if the frame is not complete yet. Fails fast on a malformed remaining length
/// or a frame larger than `max_packet_size`, before the body has arrived.
pub fn frame_len(buf: &[u8], max_packet_size: u32) -> Result<Option<usize>, DecodeError> {
    let _ = (buf, max_packet_size);
    todo!("codec: frame_len")
}

/// Decodes one packet from the front of `buf` and advances `buf` past it.
///
/// `version` is the version negotiated by CONNECT; CONNECT itself is self-describing and
/// decodes whatever `version` says. Returns `Ok(None)` (consuming nothing) for a partial frame.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    todo!("codec: decode")
}

/// Peeks the protocol level of a CONNECT frame at the front of `buf` without consuming it.
pub fn decode_connect_version(buf: &[u8]) -> Option<u8> {
    let _ = buf;
    todo!("codec: decode_connect_version")
}
