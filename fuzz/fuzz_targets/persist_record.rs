//! Persistence records (the append log and snapshot format): decoding arbitrary bytes never
//! panics, a decoded frame never claims more bytes than it was given, and what decodes
//! re-encodes to a frame that decodes to the same record. Whole files go through the log
//! and snapshot readers too (torn-tail and corruption detection), and frames after a
//! file header are decoded as records (the seeds are real files).
#![no_main]

use std::path::Path;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardmq::internals::persist::record::{decode_frame, encode};
use shardmq::internals::persist::{log, snapshot};

fuzz_target!(|data: &[u8]| {
    let _ = log::parse(Path::new("fuzz.log"), data);
    let _ = snapshot::parse(Path::new("fuzz.db"), data);
    let mut rest = match data.get(..8) {
        Some(m) if m == log::MAGIC || m == snapshot::MAGIC => &data[16.min(data.len())..],
        _ => data,
    };
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
