#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::frame::*;
use super::handshake::{accept_key, negotiate, Refusal};
use super::output::Framer;
use super::{Closing, Settings, WsConn};
use crate::http::{parse_request, Status};

/// A client frame: FIN as given, masked with `mask`.
fn frame(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn binary(payload: &[u8]) -> Vec<u8> {
    frame(OP_BINARY, true, payload, [0x12, 0x34, 0x56, 0x78])
}

/// Decodes `input` fed in pieces of `step` bytes: the MQTT bytes, the controls, and
/// the first error.
fn decode_all(
    input: &[u8],
    step: usize,
    limit: u64,
) -> (Vec<u8>, Vec<Control>, Option<FrameError>) {
    let mut d = Decoder::new();
    let mut buf = BytesMut::new();
    let mut mqtt = BytesMut::new();
    let mut controls = Vec::new();
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(&mut buf, &mut mqtt, limit) {
                Ok(None) => break,
                Ok(Some(c)) => controls.push(c),
                Err(e) => return (mqtt.to_vec(), controls, Some(e)),
            }
        }
    }
    (mqtt.to_vec(), controls, None)
}

#[test]
fn rfc_6455_accept_key_example() {
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

fn upgrade_request(extra: &str) -> Vec<u8> {
    format!(
        "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn negotiated(extra: &str) -> Result<Option<&'static str>, Refusal> {
    let (req, _) = parse_request(&upgrade_request(extra), 4096)
        .unwrap()
        .unwrap();
    negotiate(&req).map(|u| u.protocol)
}

/// [MQTT-6.0.0-3], [MQTT-6.0.0-4]: the client's first MQTT subprotocol, as Mosquitto
/// chooses; none offered, none answered.
#[test]
fn mqtt_6_0_0_4_subprotocol_is_the_clients_first_mqtt_one() {
    assert_eq!(
        negotiated("Sec-WebSocket-Protocol: mqtt\r\n"),
        Ok(Some("mqtt"))
    );
    assert_eq!(
        negotiated("Sec-WebSocket-Protocol: mqttv3.1\r\n"),
        Ok(Some("mqttv3.1"))
    );
    assert_eq!(
        negotiated("Sec-WebSocket-Protocol: chat, mqttv3.1, mqtt\r\n"),
        Ok(Some("mqttv3.1"))
    );
    assert_eq!(
        negotiated("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: mqtt\r\n"),
        Ok(Some("mqtt"))
    );
    assert_eq!(negotiated(""), Ok(None));
    assert!(matches!(
        negotiated("Sec-WebSocket-Protocol: chat, MQTT\r\n"),
        Err(Refusal::Bad(Status::BadRequest, _))
    ));
}

#[test]
fn bad_upgrades_are_refused_with_their_status() {
    let refused = |text: &str| {
        let (req, _) = parse_request(text.as_bytes(), 4096).unwrap().unwrap();
        negotiate(&req).unwrap_err()
    };
    let base = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert_eq!(
        refused("GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        Refusal::NotUpgrade
    );
    let bad = |t: &str| match refused(t) {
        Refusal::Bad(status, _) => status.code(),
        Refusal::NotUpgrade => 0,
    };
    assert_eq!(
        bad(&format!(
            "POST / HTTP/1.1\r\n{base}{key}Sec-WebSocket-Version: 13\r\n\r\n"
        )),
        405
    );
    assert_eq!(
        bad(&format!(
            "GET / HTTP/1.0\r\n{base}{key}Sec-WebSocket-Version: 13\r\n\r\n"
        )),
        400
    );
    assert_eq!(
        bad(&format!(
            "GET / HTTP/1.1\r\n{base}{key}Sec-WebSocket-Version: 8\r\n\r\n"
        )),
        426
    );
    assert_eq!(
        bad(&format!(
            "GET / HTTP/1.1\r\n{base}Sec-WebSocket-Version: 13\r\n\r\n"
        )),
        400
    );
    assert_eq!(
        bad(&format!(
            "GET / HTTP/1.1\r\n{base}Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )),
        400
    );
    assert_eq!(
        bad(&format!(
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: close\r\n{key}\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )),
        400
    );
}

/// [MQTT-6.0.0-2]: packets split across frames, packed several to a frame, and frames
/// split across reads all come out as the same byte stream.
#[test]
fn mqtt_6_0_0_2_packets_are_not_aligned_on_frames() {
    let packets: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let mut wire = Vec::new();
    for part in packets.chunks(700) {
        wire.extend(binary(part));
    }
    for step in [1, 2, 3, 7, 13, 64, 1000, 10_000] {
        let (mqtt, controls, err) = decode_all(&wire, step, 1 << 20);
        assert_eq!(err, None);
        assert!(controls.is_empty());
        assert_eq!(mqtt, packets, "step {step}");
    }
}

#[test]
fn fragmented_messages_with_pings_in_between() {
    let mask = [1, 2, 3, 4];
    let mut wire = frame(OP_BINARY, false, b"he", mask);
    wire.extend(frame(OP_PING, true, b"p!", mask));
    wire.extend(frame(OP_CONTINUATION, false, b"ll", mask));
    wire.extend(frame(OP_CONTINUATION, true, b"o", mask));
    wire.extend(frame(OP_PONG, true, b"", mask));
    wire.extend(binary(b"!"));
    wire.extend(frame(OP_CLOSE, true, &1000u16.to_be_bytes(), mask));
    for step in [1, 5, 100] {
        let (mqtt, controls, err) = decode_all(&wire, step, 100);
        assert_eq!(err, None);
        assert_eq!(mqtt, b"hello!");
        assert_eq!(
            controls,
            [
                Control::Ping(b"p!".to_vec()),
                Control::Pong,
                Control::Close(Some(1000))
            ]
        );
    }
}

#[test]
fn violations_close_with_their_codes() {
    let m = [9, 9, 9, 9];
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("text frame", frame(OP_TEXT, true, b"x", m), 1003),
        ("unmasked", vec![0x82, 0x01, b'x'], 1002),
        ("opcode 3", frame(0x3, true, b"", m), 1002),
        ("opcode 0xB", frame(0xB, true, b"", m), 1002),
        (
            "rsv1",
            {
                let mut f = binary(b"x");
                f[0] |= 0x40;
                f
            },
            1002,
        ),
        (
            "continuation first",
            frame(OP_CONTINUATION, true, b"x", m),
            1002,
        ),
        (
            "binary inside a message",
            [frame(OP_BINARY, false, b"x", m), binary(b"y")].concat(),
            1002,
        ),
        ("fragmented ping", frame(OP_PING, false, b"", m), 1002),
        ("long ping", frame(OP_PING, true, &[0; 126], m), 1002),
        ("close with 1 byte", frame(OP_CLOSE, true, &[3], m), 1002),
        (
            "close 1005",
            frame(OP_CLOSE, true, &1005u16.to_be_bytes(), m),
            1002,
        ),
        (
            "close 999",
            frame(OP_CLOSE, true, &999u16.to_be_bytes(), m),
            1002,
        ),
        (
            "close reason not UTF-8",
            frame(OP_CLOSE, true, &[3, 232, 0xFF], m),
            1007,
        ),
        ("over the limit", binary(&[0; 101]), 1009),
        (
            "64-bit length with its top bit",
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
            1002,
        ),
    ];
    for (name, wire, code) in cases {
        for step in [1, 100] {
            let (_, _, err) = decode_all(&wire, step, 100);
            let err = err.unwrap_or_else(|| panic!("{name}: no error"));
            assert_eq!(err.close_code(), code, "{name}: {err}");
        }
    }
    // Data before the violation still comes out.
    let (mqtt, _, err) = decode_all(
        &[binary(b"ok"), frame(OP_TEXT, true, b"x", m)].concat(),
        3,
        100,
    );
    assert_eq!((mqtt.as_slice(), err), (&b"ok"[..], Some(FrameError::Text)));
}

#[test]
fn a_partial_header_consumes_nothing() {
    let wire = frame(OP_BINARY, true, &[7; 300], [1, 2, 3, 4]);
    for cut in 0..8 {
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut mqtt = BytesMut::new();
        assert_eq!(d.decode(&mut buf, &mut mqtt, 1000), Ok(None));
        assert_eq!(buf.len(), cut);
        assert!(mqtt.is_empty());
    }
}

#[test]
fn server_frames_and_the_framer() {
    let mut h = [0u8; 10];
    assert_eq!(encode_header(OP_BINARY, 5, &mut h), 2);
    assert_eq!(&h[..2], [0x82, 5]);
    assert_eq!(encode_header(OP_BINARY, 300, &mut h), 4);
    assert_eq!(&h[..4], [0x82, 126, 1, 44]);
    assert_eq!(encode_header(OP_BINARY, 70_000, &mut h), 10);
    assert_eq!(&h[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    assert_eq!(close_frame(Some(1002)), [0x88, 2, 0x03, 0xEA]);

    let mut f = Framer::default();
    f.push(Bytes::from_static(b"HTTP"));
    assert_eq!(f.prefix(), b"HTTP");
    assert_eq!(f.advance(2), 0);
    assert_eq!(f.prefix(), b"TP");
    assert_eq!(f.advance(2), 0);
    assert!(f.is_idle());
    f.begin(300);
    assert_eq!(f.prefix(), [0x82, 126, 1, 44]);
    // A pong queued mid-frame waits for the frame's end.
    f.push(Bytes::from(control_frame(OP_PONG, b"")));
    assert_eq!(f.advance(3), 0);
    assert_eq!(f.prefix(), [44]);
    assert_eq!(f.advance(1 + 100), 100);
    assert!(f.prefix().is_empty());
    assert_eq!(f.payload_left(), 200);
    assert_eq!(f.advance(200), 200);
    assert!(!f.in_frame());
    assert_eq!(f.prefix(), [0x8A, 0]);
}

fn settings(headers_size: usize) -> Arc<Settings> {
    Arc::new(Settings {
        port: 9001,
        headers_size,
        http_dir: None,
        log_level: 0,
        handler: None,
    })
}

fn peer() -> SocketAddr {
    "127.0.0.1:5555".parse().unwrap()
}

/// Everything the framer holds, as bytes.
fn drain(ws: &mut WsConn) -> Vec<u8> {
    let mut out = Vec::new();
    while !ws.framer.prefix().is_empty() {
        let p = ws.framer.prefix().to_vec();
        ws.framer.advance(p.len());
        out.extend(p);
    }
    out
}

#[test]
fn a_connection_upgrades_then_carries_mqtt_pings_and_closes() {
    let mut ws = WsConn::new(settings(1024), peer());
    let mut mqtt = BytesMut::new();
    let now = Instant::now();
    let mut input = upgrade_request("Sec-WebSocket-Protocol: mqtt\r\n");
    input.extend(binary(b"\x10\x00")); // sent right behind the request
    ws.input.extend_from_slice(&input);
    ws.on_input(&mut mqtt, 100, now);
    assert!(ws.is_open());
    let response = String::from_utf8(drain(&mut ws)).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{response}"
    );
    assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(response.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
    assert_eq!(mqtt.as_ref(), b"\x10\x00");
    ws.input
        .extend_from_slice(&frame(OP_PING, true, b"hi", [5; 4]));
    ws.on_input(&mut mqtt, 100, now);
    assert_eq!(drain(&mut ws), [0x8A, 2, b'h', b'i']);
    assert_eq!(ws.closing(), None);
    ws.input
        .extend_from_slice(&frame(OP_CLOSE, true, &1001u16.to_be_bytes(), [5; 4]));
    ws.input.extend_from_slice(&binary(b"ignored"));
    ws.on_input(&mut mqtt, 100, now);
    assert_eq!(ws.closing(), Some(Closing::Now));
    assert_eq!(drain(&mut ws), [0x88, 2, 0x03, 0xE9]);
    assert_eq!(mqtt.as_ref(), b"\x10\x00");
    assert_eq!(ws.read_room(16384), 0);
}

#[test]
fn requests_that_are_refused_get_a_response_then_a_close() {
    let now = Instant::now();
    let run = |size: usize, input: &[u8]| {
        let mut ws = WsConn::new(settings(size), peer());
        ws.input.extend_from_slice(input);
        ws.on_input(&mut BytesMut::new(), 100, now);
        let closing = ws.closing();
        (
            String::from_utf8_lossy(&drain(&mut ws)).into_owned(),
            closing,
        )
    };
    let (r, c) = run(64, &upgrade_request(""));
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    assert_eq!(c, Some(Closing::WhenFlushed));
    let (r, c) = run(1024, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    assert_eq!(c, Some(Closing::WhenFlushed));
    let (r, _) = run(1024, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00");
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    let (r, _) = run(1024, &upgrade_request("Sec-WebSocket-Protocol: chat\r\n"));
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    // Before the upgrade, a read may add no more than the head may take.
    let ws = WsConn::new(settings(64), peer());
    assert_eq!(ws.read_room(16384), 65);
}

proptest! {
    /// Whatever the frame sizes, fragmentation, masks and read sizes: the MQTT bytes come
    /// out in order and complete.
    #[test]
    fn frames_of_any_shape_carry_the_same_bytes(
        payload in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(1usize..300, 1..20),
        fragment in any::<bool>(),
        mask in any::<[u8; 4]>(),
        step in 1usize..500,
    ) {
        let mut wire = Vec::new();
        let mut rest = payload.as_slice();
        let mut first = true;
        let mut i = 0;
        while !rest.is_empty() || first {
            let n = cuts[i % cuts.len()].min(rest.len());
            let (part, tail) = rest.split_at(n);
            let last = tail.is_empty();
            let opcode = if fragment && !first { OP_CONTINUATION } else { OP_BINARY };
            wire.extend(frame(opcode, !fragment || last, part, mask));
            if i % 3 == 1 {
                wire.extend(frame(OP_PING, true, b"", mask));
            }
            rest = tail;
            first = false;
            i += 1;
        }
        let (mqtt, _, err) = decode_all(&wire, step, 1 << 20);
        prop_assert_eq!(err, None);
        prop_assert_eq!(mqtt, payload);
    }

    /// The decoder never panics on arbitrary bytes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_all(&bytes, 7, 1000);
    }
}

/// The fuzz seeds of testdata/ (see make_seeds.py) are what they say: a whole session
/// through `WsConn`, whose MQTT bytes are exactly the packets the frames carry.
#[test]
fn testdata_seeds_decode_to_their_mqtt_packets() {
    let whole = include_bytes!("testdata/upgrade-then-frames.bin");
    let frames = include_bytes!("testdata/frames-only.bin");
    let packets = include_bytes!("testdata/mqtt-payload.bin");
    let now = Instant::now();
    for step in [1, 9, whole.len()] {
        let mut ws = WsConn::new(settings(1024), peer());
        let mut mqtt = BytesMut::new();
        for piece in whole.chunks(step) {
            ws.input.extend_from_slice(piece);
            ws.on_input(&mut mqtt, 1000, now);
        }
        assert_eq!(mqtt.as_ref(), packets, "step {step}");
        assert_eq!(ws.closing(), Some(Closing::Now));
        let out = drain(&mut ws);
        assert!(out.starts_with(b"HTTP/1.1 101 "));
        // Two pongs, then the close echoing 1000.
        assert!(out.ends_with(&[0x8A, 4, b'p', b'i', b'n', b'g', 0x8A, 0, 0x88, 2, 0x03, 0xE8]));
    }
    let (mqtt, controls, err) = decode_all(frames, 5, 1000);
    assert_eq!((mqtt.as_slice(), err), (&packets[..], None));
    assert_eq!(controls.len(), 3);
    let request = include_bytes!("testdata/request-get-file.txt");
    let (req, n) = parse_request(request, 1024).unwrap().unwrap();
    assert_eq!((req.path(), n), ("/index.html", request.len()));
}
