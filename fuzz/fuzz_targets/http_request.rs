//! A connection on a websockets listener from its first byte (src/http and src/ws/conn.rs):
//! the HTTP request parser, the upgrade decision and then the frames, on arbitrary bytes
//! in arbitrary pieces, never panic, never keep more than the header limit before the
//! upgrade, and answer every refusal with a complete HTTP response or a close frame.
//! Seeds: fuzz/corpus/http_request (copies of src/ws/testdata, see make_seeds.py).
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardmq::internals::http::parse_request;
use shardmq::internals::ws::{Settings, WsConn};

fuzz_target!(|input: &[u8]| {
    let Some((&knobs, data)) = input.split_first() else {
        return;
    };
    let limit = 64 + usize::from(knobs) * 8;
    if let Ok(Some((req, n))) = parse_request(data, limit) {
        assert!(n <= data.len().min(limit));
        let _ = shardmq::internals::ws::handshake::negotiate(&req);
        let _ = req.path();
    }
    let settings = Arc::new(Settings {
        port: 1,
        headers_size: limit,
        http_dir: None,
        log_level: 0,
        handler: None,
    });
    let mut ws = WsConn::new(settings, "127.0.0.1:1".parse().expect("address"));
    let mut mqtt = BytesMut::new();
    let now = Instant::now();
    for piece in data.chunks(usize::from(knobs % 32) + 1) {
        let room = ws.read_room(16 * 1024);
        let piece = &piece[..piece.len().min(room)];
        ws.input.extend_from_slice(piece);
        ws.on_input(&mut mqtt, 4096, now);
        if !ws.is_open() && ws.closing().is_none() {
            assert!(ws.input.len() <= limit, "request bytes kept past the limit");
        }
    }
    assert!(mqtt.len() <= data.len());
});
