// Shared body of the decode_* targets: decode every frame of the input with one protocol
// version; whatever decodes must re-encode, and the re-encoding must decode to the same
// packet. No input may panic.

use bytes::BytesMut;
use shardmq::internals::codec::{self, ProtocolVersion};

pub fn run(data: &[u8], version: ProtocolVersion) {
    let mut buf = BytesMut::from(data);
    // Bounded: every successful decode consumes at least two bytes.
    for _ in 0..64 {
        match codec::decode(&mut buf, version, 1 << 20) {
            Ok(Some(packet)) => {
                let mut out = BytesMut::new();
                if codec::encode(&packet, version, &mut out).is_ok() {
                    let again = codec::decode(&mut out, version, u32::MAX)
                        .expect("our own encoding decodes")
                        .expect("our own encoding is a whole frame");
                    assert_eq!(again, packet, "decode(encode(p)) != p");
                }
            }
            Ok(None) | Err(_) => return,
        }
    }
}
