//! Bad input on an `http_listener` (the HTTP console), table-driven against one real
//! broker: each case sends hand-made bytes on a fresh connection and asserts the status
//! (400 garbage, 401 bad credentials, 404 traversal, 405 wrong method, 431 huge or too
//! many headers) and that the connection closes. Then a slowloris client (one header
//! byte at a time) is cut by `connect_timeout` while requests on other connections are
//! answered at once, and the broker still serves MQTT and `/metrics` at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::console::{get_as, ConsoleBroker, ADMIN, VIEWER};
use common::ws::WsRaw;
use common::{connect_v311, V4};

fn basic((user, password): (&str, &str)) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {token}\r\n")
}

fn request(method: &str, target: &str, extra: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes()
}

fn cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let v = basic(VIEWER);
    let a = basic(ADMIN);
    let huge = format!("{v}Cookie: {}\r\n", "c".repeat(9 * 1024));
    let many: String = (0..80).map(|i| format!("X-{i}: v\r\n")).collect();
    vec![
        ("garbage", b"\x00\x01\x02 nonsense\r\n\r\n".to_vec(), 400),
        ("mqtt_connect", connect_v311("raw", true, 60, None), 400),
        ("no_credentials", request("GET", "/metrics", ""), 401),
        ("not_basic", request("GET", "/metrics", "Authorization: Bearer abc\r\n"), 401),
        ("bad_base64", request("GET", "/metrics", "Authorization: Basic !!!\r\n"), 401),
        ("no_colon", request("GET", "/metrics", "Authorization: Basic YWRtaW4=\r\n"), 401),
        ("huge_header", request("GET", "/metrics", &huge), 431),
        ("many_headers", request("GET", "/metrics", &format!("{v}{many}")), 431),
        ("traversal", request("GET", "/../../../../etc/passwd", &v), 404),
        ("encoded_traversal", request("GET", "/%2e%2e/%2e%2e/etc/passwd", &v), 404),
        ("traversal_in_api", request("GET", "/api/v1/../../etc/passwd", &v), 404),
        ("absolute_form", request("GET", "http://evil/metrics", &v), 400),
        ("post_metrics", request("POST", "/metrics", &v), 405),
        ("delete_overview", request("DELETE", "/api/v1/overview", &a), 405),
        ("unknown_api", request("GET", "/api/v1/nope", &v), 404),
        ("bad_percent", request("DELETE", "/api/v1/connections/%zz", &a), 400),
        ("viewer_acts", request("DELETE", "/api/v1/retained/a", &v), 403),
        ("websocket_upgrade", request("GET", "/", &format!("{v}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")), 400),
        ("http_1_0", b"GET /metrics HTTP/1.0\r\n".iter().copied().chain(v.bytes()).chain(*b"\r\n").collect(), 200),
    ]
}

#[test]
fn malformed_console_input_table() {
    let Some(c) = ConsoleBroker::start("connect_timeout 2") else {
        return;
    };
    let mut failures = Vec::new();
    for (name, bytes, status) in cases() {
        let mut conn = WsRaw::connect(c.http);
        if !conn.try_send(&bytes) {
            failures.push(format!("{name}: closed while sending"));
            continue;
        }
        let r = conn.http_response().unwrap_or_default();
        let ok = r.starts_with(&format!("HTTP/1.1 {status} ")) && conn.closed();
        if !ok {
            let first = r.lines().next().unwrap_or("no response").to_string();
            failures.push(format!("{name}: expected {status}, got {first}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(c
        .broker
        .wait_log("HTTP console: GET /metrics (no credentials)"));

    // Slowloris: a head trickled one byte at a time never completes; the connection is
    // cut by connect_timeout (2 s) and other requests are answered meanwhile.
    let mut slow = WsRaw::connect(c.http);
    let head = request("GET", "/metrics", &basic(VIEWER));
    let started = Instant::now();
    let mut cut = false;
    for (i, byte) in head.iter().take(head.len() - 1).enumerate() {
        if slow.stream.write_all(&[*byte]).is_err() {
            cut = true;
            break;
        }
        if i % 10 == 0 {
            let t = Instant::now();
            let r = get_as(&c.url("/metrics"), VIEWER);
            assert_eq!(r.status, 200);
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "a request took {:?}",
                t.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    assert!(
        cut || slow.closed(),
        "the slowloris connection was never cut"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    // Still healthy.
    let client = V4::connect("after-malformed", c.broker.port);
    assert_eq!(get_as(&c.url("/metrics"), VIEWER).status, 200);
    client.disconnect();
}
