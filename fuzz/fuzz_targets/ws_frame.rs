//! The WebSocket frame decoder (src/ws/frame.rs): arbitrary bytes, fed in arbitrary
//! pieces, never panic; the MQTT bytes it yields are never more than it was given, and
//! feeding the same bytes whole or piece by piece yields the same bytes and outcome.
//! Seeds: fuzz/corpus/ws_frame (copies of src/ws/testdata, see make_seeds.py).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardmq::internals::ws::frame::{Control, Decoder, FrameError};

fn run(data: &[u8], step: usize, limit: u64) -> (Vec<u8>, Vec<Control>, Option<FrameError>) {
    let mut d = Decoder::new();
    let mut input = BytesMut::new();
    let mut mqtt = BytesMut::new();
    let mut controls = Vec::new();
    for piece in data.chunks(step.max(1)) {
        input.extend_from_slice(piece);
        loop {
            match d.decode(&mut input, &mut mqtt, limit) {
                Ok(None) => break,
                Ok(Some(c)) => controls.push(c),
                Err(e) => return (mqtt.to_vec(), controls, Some(e)),
            }
        }
    }
    (mqtt.to_vec(), controls, None)
}

fuzz_target!(|input: &[u8]| {
    let Some((&knobs, data)) = input.split_first() else {
        return;
    };
    let step = usize::from(knobs & 0x0F) + 1;
    let limit = 1u64 << (knobs >> 4);
    let whole = run(data, data.len(), limit);
    let pieces = run(data, step, limit);
    assert!(whole.0.len() <= data.len());
    assert_eq!(whole, pieces);
});
