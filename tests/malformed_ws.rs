//! Malformed input on a websockets listener, table-driven, against one real broker (the
//! WebSocket counterpart of malformed.rs): each case sends hand-made bytes on a fresh
//! connection (before the upgrade, after it, or after CONNECT) and asserts the answer —
//! an HTTP status (400, 426, 431, ...) then the close, or a close frame with its code
//! (1002 protocol error, 1003 text frame, 1009 too big) then the close. Between cases a
//! healthy publisher keeps feeding a healthy WebSocket subscriber; at the end it must
//! have every message, in order, and the broker must still accept new clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::tls::listener_port;
use common::ws::{
    binary, client_frame, upgrade_request, WsRaw, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT,
};
use common::{connect_v311, publish, BrokerProc, Raw};

/// `websockets_headers_size` of the broker under test.
const HEADERS: usize = 1024;
/// `max_connect_packet_size` of the broker under test (frames before CONNECT).
const MAX_CONNECT: usize = 1024;

#[derive(Clone, Copy, Debug)]
enum Start {
    /// Nothing sent: the case bytes are the HTTP request.
    Fresh,
    /// Upgraded, no CONNECT yet.
    Upgraded,
    /// Upgraded and connected.
    Connected,
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// An HTTP response with this status, then the close.
    Status(u16),
    /// A close frame with this code, then the close.
    Close(u16),
}

struct Case {
    name: &'static str,
    start: Start,
    bytes: Vec<u8>,
    expect: Expect,
}

const M: Option<[u8; 4]> = Some([0x37, 0xFA, 0x21, 0x3D]);

fn cases() -> Vec<Case> {
    use Expect::{Close, Status};
    use Start::{Connected, Fresh, Upgraded};
    let case = |name, start, bytes, expect| Case {
        name,
        start,
        bytes,
        expect,
    };
    let mut huge_header = upgrade_request(Some("mqtt"), "");
    huge_header.truncate(huge_header.len() - 2);
    huge_header.extend_from_slice(format!("Cookie: {}\r\n\r\n", "c".repeat(HEADERS)).as_bytes());
    let many_headers: String = (0..80).map(|i| format!("X-{i}: v\r\n")).collect();
    vec![
        case(
            "plain_get_without_http_dir",
            Fresh,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Status(400),
        ),
        case(
            "mqtt_connect_on_the_websockets_port",
            Fresh,
            connect_v311("raw", true, 60, None),
            Status(400),
        ),
        case(
            "http_garbage",
            Fresh,
            b"\x00\x01\x02\x03 nonsense\r\n\r\n".to_vec(),
            Status(400),
        ),
        case(
            "header_larger_than_websockets_headers_size",
            Fresh,
            huge_header,
            Status(431),
        ),
        case(
            "header_never_ending",
            Fresh,
            [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 2 * HEADERS]].concat(),
            Status(431),
        ),
        case(
            "too_many_headers",
            Fresh,
            format!("GET / HTTP/1.1\r\n{many_headers}\r\n").into_bytes(),
            Status(431),
        ),
        case(
            "websocket_version_8",
            Fresh,
            String::from_utf8_lossy(&upgrade_request(Some("mqtt"), ""))
                .replace("Version: 13", "Version: 8")
                .into_bytes(),
            Status(426),
        ),
        case(
            "no_mqtt_subprotocol",
            Fresh,
            upgrade_request(Some("chat, superchat"), ""),
            Status(400),
        ),
        case(
            "upgrade_by_post",
            Fresh,
            String::from_utf8_lossy(&upgrade_request(Some("mqtt"), ""))
                .replacen("GET", "POST", 1)
                .into_bytes(),
            Status(405),
        ),
        case(
            "upgrade_without_key",
            Fresh,
            String::from_utf8_lossy(&upgrade_request(Some("mqtt"), ""))
                .replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")
                .into_bytes(),
            Status(400),
        ),
        // [MQTT-6.0.0-1] MQTT is carried in binary frames only.
        case(
            "text_frame_before_connect",
            Upgraded,
            client_frame(OP_TEXT, true, b"hello", M),
            Close(1003),
        ),
        case(
            "text_frame_after_connect",
            Connected,
            client_frame(OP_TEXT, true, b"{}", M),
            Close(1003),
        ),
        case(
            "unmasked_frame",
            Upgraded,
            client_frame(OP_BINARY, true, &connect_v311("u", true, 60, None), None),
            Close(1002),
        ),
        case(
            "unmasked_after_connect",
            Connected,
            client_frame(OP_BINARY, true, &[0xC0, 0], None),
            Close(1002),
        ),
        case(
            "opcode_3",
            Connected,
            client_frame(0x3, true, b"", M),
            Close(1002),
        ),
        case(
            "opcode_0xf",
            Connected,
            client_frame(0xF, true, b"", M),
            Close(1002),
        ),
        case(
            "rsv_bits",
            Connected,
            {
                let mut f = binary(&[0xC0, 0]);
                f[0] |= 0x70;
                f
            },
            Close(1002),
        ),
        case(
            "continuation_without_start",
            Connected,
            client_frame(OP_CONT, true, &[0xC0, 0], M),
            Close(1002),
        ),
        case(
            "binary_inside_fragmented_message",
            Connected,
            [client_frame(OP_BINARY, false, &[0xC0], M), binary(&[0])].concat(),
            Close(1002),
        ),
        case(
            "fragmented_ping",
            Connected,
            client_frame(OP_PING, false, b"", M),
            Close(1002),
        ),
        case(
            "ping_longer_than_125",
            Connected,
            client_frame(OP_PING, true, &[0; 126], M),
            Close(1002),
        ),
        case(
            "close_with_one_byte",
            Connected,
            client_frame(OP_CLOSE, true, &[3], M),
            Close(1002),
        ),
        case(
            "close_code_1006",
            Connected,
            client_frame(OP_CLOSE, true, &1006u16.to_be_bytes(), M),
            Close(1002),
        ),
        case(
            "close_reason_not_utf8",
            Connected,
            client_frame(OP_CLOSE, true, &[3, 232, 0xC3, 0x28], M),
            Close(1007),
        ),
        case(
            "frame_over_max_connect_packet_size",
            Upgraded,
            client_frame(OP_BINARY, true, &vec![0; MAX_CONNECT + 1], M),
            Close(1009),
        ),
        case(
            "frame_length_top_bit",
            Upgraded,
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4],
            Close(1002),
        ),
    ]
}

/// Opens a connection in state `start`.
fn open(port: u16, start: Start, id: &str) -> WsRaw {
    match start {
        Start::Fresh => WsRaw::connect(port),
        Start::Upgraded => WsRaw::upgrade(port, Some("mqtt")).0,
        Start::Connected => {
            let (mut ws, _) = WsRaw::upgrade(port, Some("mqtt"));
            ws.send(&binary(&connect_v311(id, true, 60, None)));
            let ack = ws.recv().expect("CONNACK");
            assert_eq!((ack.first, ack.body[1]), (0x20, 0), "{id}");
            ws
        }
    }
}

#[test]
fn malformed_websocket_input_table() {
    let broker = BrokerProc::start(&format!(
        "max_connect_packet_size {MAX_CONNECT}\nwebsockets_headers_size {HEADERS}\n\
         listener 0 127.0.0.1\nprotocol websockets\n"
    ));
    let port = listener_port(&broker, 1);
    // A healthy pair: the subscriber over WebSockets, the publisher over TCP.
    let mut keeper = open(port, Start::Connected, "keeper");
    keeper.send(&binary(&common::subscribe(1, &[("keep", 1)])));
    assert_eq!(keeper.recv().expect("SUBACK").kind(), 9);
    let (mut feeder, _, _) = Raw::mqtt_connect(broker.port, "feeder", true);
    let table = cases();
    let mut failures = Vec::new();
    for (i, c) in table.iter().enumerate() {
        feeder.send(&publish(
            "keep",
            1,
            false,
            false,
            (i + 1) as u16,
            format!("{i}").as_bytes(),
        ));
        assert_eq!(feeder.recv().expect("feeder PUBACK").first, 0x40);
        let mut ws = open(port, c.start, &format!("case-{i}"));
        if !ws.try_send(&c.bytes) {
            failures.push(format!("{}: closed while sending", c.name));
            continue;
        }
        let got = match c.expect {
            Expect::Status(code) => {
                let r = ws.http_response().unwrap_or_default();
                let ok = r.starts_with(&format!("HTTP/1.1 {code} ")) && ws.closed();
                (ok, r.lines().next().unwrap_or("no response").to_string())
            }
            Expect::Close(code) => {
                let got = ws.close_code();
                (got == Some(code), format!("close {got:?}"))
            }
        };
        if !got.0 {
            failures.push(format!(
                "{}: expected {:?}, got {}",
                c.name, c.expect, got.1
            ));
        }
    }
    // Nothing queued for the healthy subscriber was lost, in order.
    for i in 0..table.len() {
        let (topic, id, payload) = keeper.recv().expect("keeper message").publish_parts();
        assert_eq!(
            (topic.as_str(), payload),
            ("keep", format!("{i}").into_bytes())
        );
        keeper.send(&binary(&common::ack(0x40, id)));
    }
    // The broker still accepts clients, and said why it refused (the first line of each
    // kind; the rest are rate-limited into a summary).
    let _ = open(port, Start::Connected, "after");
    for needle in ["refused: 400 Bad Request", "closed with 1003: text frame"] {
        assert!(broker.wait_log(needle), "no log line with {needle:?}");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
