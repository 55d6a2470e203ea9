//! Codec tests: byte-exact vectors, one test per enforced spec statement, partial frames,
//! and proptest round trips / random input. Tests may unwrap.

#![allow(clippy::unwrap_used)]

mod properties;
mod roundtrip;
mod rules;
mod vectors;

use bytes::BytesMut;

use super::{decode, encode, encoded_len, DecodeError, Packet, ProtocolVersion};

pub(super) const V31: ProtocolVersion = ProtocolVersion::V31;
pub(super) const V311: ProtocolVersion = ProtocolVersion::V311;
pub(super) const V5: ProtocolVersion = ProtocolVersion::V5;
pub(super) const ALL: [ProtocolVersion; 3] = [V31, V311, V5];

/// Encodes `p`, checking that exactly `encoded_len` bytes were written.
pub(super) fn enc(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(p, v, &mut out).unwrap();
    assert_eq!(
        out.len(),
        encoded_len(p, v).unwrap(),
        "encoded_len of {p:?}"
    );
    out.to_vec()
}

/// Decodes one complete frame that must fill `bytes` exactly.
pub(super) fn dec(bytes: &[u8], v: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, v, 0) {
        Ok(Some(p)) => {
            assert!(buf.is_empty(), "decode left {} bytes", buf.len());
            Ok(p)
        }
        Ok(None) => panic!("complete frame decoded as partial: {bytes:02x?}"),
        Err(e) => Err(e),
    }
}

/// Every strict prefix of `frame` decodes to `Ok(None)` and consumes nothing.
pub(super) fn assert_prefixes_partial(frame: &[u8], v: ProtocolVersion) {
    for n in 0..frame.len() {
        let mut buf = BytesMut::from(&frame[..n]);
        assert_eq!(
            decode(&mut buf, v, 0),
            Ok(None),
            "prefix {n} of {frame:02x?}"
        );
        assert_eq!(buf.len(), n);
        assert_eq!(super::frame_len(&frame[..n], 0), Ok(None));
    }
}
