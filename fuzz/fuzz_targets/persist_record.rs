//! Persistence records (the append log and snapshot format): decoding arbitrary bytes never
//! panics, a decoded frame never claims more bytes than it was given, and what decodes
//! re-encodes to a frame that decodes to the same record.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardmq::internals::persist::record::{decode_frame, encode};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((record, used))) = decode_frame(rest) {
        assert!(used > 0 && used <= rest.len());
        let mut again = BytesMut::new();
        encode(&record, &mut again).expect("a decoded record re-encodes");
        let (round, n) = decode_frame(&again).expect("re-encoded frame decodes").expect("complete");
        assert_eq!(n, again.len());
        assert_eq!(format!("{round:?}"), format!("{record:?}"));
        rest = &rest[used..];
    }
});
