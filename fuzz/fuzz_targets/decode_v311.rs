//! The packet decoder with protocol version V311.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "decode_common.rs"]
mod decode_common;

fuzz_target!(|data: &[u8]| decode_common::run(data, shardmq::internals::codec::ProtocolVersion::V311));
