//! Mosquitto's persistence file (`shardmq import-mosquitto-db`): parsing arbitrary bytes
//! never panics, and whatever parses converts to shardmq records (or a clear refusal)
//! without panicking, each record encoding to a frame that decodes to itself.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use shardmq::internals::persist::import::to_records;
use shardmq::internals::persist::mosquitto_db::parse;
use shardmq::internals::persist::record::{decode_frame, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(db) = parse(&Bytes::copy_from_slice(data)) else {
        return;
    };
    let Ok((records, _summary)) = to_records(&db, 1_800_000_000_000, &|port| Some(u32::from(port % 3))) else {
        return;
    };
    for record in records {
        let mut frame = BytesMut::new();
        if encode(&record, &mut frame).is_ok() {
            let (round, n) = decode_frame(&frame).expect("decodes").expect("complete");
            assert_eq!(n, frame.len());
            assert_eq!(format!("{round:?}"), format!("{record:?}"));
        }
    }
});
