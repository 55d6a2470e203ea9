//! MQTT over WebSockets against a real broker process: the handshake and framing with a
//! raw client (packets split across and packed into frames, ping/pong, the close
//! handshake, one outbound frame per write batch), http_dir (files, no traversal), a
//! missing http_dir stopping the start, and Eclipse Paho's Python client with
//! `transport="websockets"` over ws:// and wss://. Bad input is in malformed_ws.rs, the
//! browser in websockets_browser.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::tls::{listener_port, openssl, Pki};
use common::ws::{binary, client_frame, WsRaw, OP_CLOSE, OP_PING, OP_PONG};
use common::{connect_v311, paho_available, publish, subscribe, BrokerProc, Raw};

/// A broker with its plain listener and a websockets listener (`extra` lines after it).
fn ws_broker(extra: &str) -> (BrokerProc, u16) {
    let broker = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\nprotocol websockets\n{extra}"
    ));
    let port = listener_port(&broker, 1);
    assert!(broker.wait_log("websockets listen socket on port"));
    (broker, port)
}

/// [MQTT-6.0.0-2]: a CONNECT split across two frames, SUBSCRIBE and PUBLISH packed into
/// one; the answers come back in binary frames; ping is answered with pong; the client's
/// close is echoed and the connection ends.
#[test]
fn mqtt_6_0_0_2_packets_split_and_packed_ping_and_close() {
    let (_broker, port) = ws_broker("");
    let (mut ws, head) = WsRaw::upgrade(port, Some("mqtt"));
    assert!(head.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    let connect = connect_v311("ws-split", true, 60, None);
    let (a, b) = connect.split_at(5);
    ws.send(&binary(a));
    ws.send(&binary(b));
    let connack = ws.recv().expect("CONNACK");
    assert_eq!((connack.first, connack.body[1]), (0x20, 0));
    let packed = [
        subscribe(1, &[("ws/#", 0)]),
        publish("ws/one", 0, false, false, 0, b"1"),
        publish("ws/two", 0, false, false, 0, b"2"),
    ]
    .concat();
    ws.send(&binary(&packed));
    // The SUBACK may come after the PUBLISHes (it waits for every shard to know the
    // subscription); the PUBLISHes keep their order.
    let packets: Vec<_> = (0..3).map(|_| ws.recv().expect("packet")).collect();
    assert_eq!(
        packets.iter().filter(|p| p.kind() == 9).count(),
        1,
        "{packets:?}"
    );
    let got: Vec<_> = packets
        .iter()
        .filter(|p| p.kind() == 3)
        .map(common::RawPacket::publish_parts)
        .collect();
    assert_eq!(got[0], ("ws/one".into(), 0, b"1".to_vec()));
    assert_eq!(got[1], ("ws/two".into(), 0, b"2".to_vec()));
    ws.send(&client_frame(
        OP_PING,
        true,
        b"are you there",
        Some([1, 2, 3, 4]),
    ));
    let pong = ws.frame().expect("pong");
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (OP_PONG, &b"are you there"[..])
    );
    ws.send(&client_frame(
        OP_CLOSE,
        true,
        &1000u16.to_be_bytes(),
        Some([9; 4]),
    ));
    assert_eq!(ws.close_code(), Some(1000));
}

/// A client that offers no subprotocol is answered without one (as Mosquitto does) and
/// speaks MQTT all the same; `mqttv3.1` is chosen for a client that offers it first.
#[test]
fn subprotocol_is_chosen_as_mosquitto_does() {
    let (_broker, port) = ws_broker("");
    let (mut ws, head) = WsRaw::upgrade(port, None);
    assert!(!head.contains("Sec-WebSocket-Protocol"), "{head}");
    ws.send(&binary(&connect_v311("ws-none", true, 60, None)));
    assert_eq!(ws.recv().expect("CONNACK").first, 0x20);
    let (_ws, head) = WsRaw::upgrade(port, Some("mqttv3.1, mqtt"));
    assert!(
        head.contains("Sec-WebSocket-Protocol: mqttv3.1\r\n"),
        "{head}"
    );
}

/// Outbound: one binary frame per write batch, not one per packet. A TCP publisher sends
/// 200 messages in one write; the WebSocket subscriber gets them in a few frames.
#[test]
fn outbound_is_one_frame_per_write_batch() {
    let (broker, port) = ws_broker("");
    let (mut ws, _) = WsRaw::upgrade(port, Some("mqtt"));
    ws.send(&binary(&connect_v311("ws-batch", true, 60, None)));
    assert_eq!(ws.recv().expect("CONNACK").first, 0x20);
    ws.send(&binary(&subscribe(1, &[("batch/#", 0)])));
    assert_eq!(ws.recv().expect("SUBACK").kind(), 9);
    let frames_before = ws.binary_frames;
    let (mut publisher, _, _) = Raw::mqtt_connect(broker.port, "tcp-batch", true);
    let burst: Vec<u8> = (0..200)
        .flat_map(|i| publish("batch/x", 0, false, false, 0, format!("{i:04}").as_bytes()))
        .collect();
    publisher.send(&burst);
    for i in 0..200 {
        let (_, _, payload) = ws.recv().expect("PUBLISH").publish_parts();
        assert_eq!(payload, format!("{i:04}").into_bytes());
    }
    let frames = ws.binary_frames - frames_before;
    assert!(frames <= 20, "200 messages took {frames} frames");
}

/// http_dir: files for plain requests (GET and HEAD, index.html for /), 404 for what is
/// not there, 403 for anything outside the directory however it is spelled.
#[test]
fn http_dir_serves_files_and_nothing_outside() {
    let dir = common::temp_dir("www");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<h1>shardmq</h1>").unwrap();
    std::fs::write(dir.join("secret.txt"), "top secret").unwrap();
    std::os::unix::fs::symlink(dir.join("secret.txt"), www.join("escape.txt")).unwrap();
    let (_broker, port) = ws_broker(&format!("http_dir {}\n", www.display()));
    let get = |request: &str| {
        let mut c = WsRaw::connect(port);
        c.send(request.as_bytes());
        let r = c.http_response().expect("a response");
        assert!(c.closed(), "closed after the response");
        r
    };
    let r = get("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.ends_with("<h1>shardmq</h1>"), "{r}");
    let r = get("HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    assert!(get("GET /nope.js HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    for target in ["/../secret.txt", "/%2e%2e/secret.txt", "/escape.txt"] {
        let r = get(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(r.starts_with("HTTP/1.1 403 "), "{target}: {r}");
        assert!(!r.contains("top secret"), "{target}: {r}");
    }
    assert!(get("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").starts_with("HTTP/1.1 405 "));
    // The same listener still upgrades.
    let (_ws, _) = WsRaw::upgrade(port, Some("mqtt"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A websockets listener whose http_dir does not exist stops the start, naming it, the
/// file and the line (and --test-config reports it).
#[test]
fn missing_http_dir_stops_the_start() {
    let dir = common::temp_dir("nohttpdir");
    let conf = dir.join("shardmq.conf");
    std::fs::write(
        &conf,
        "listener 0 127.0.0.1\nprotocol websockets\nhttp_dir /nonexistent/shardmq-www\n",
    )
    .unwrap();
    for args in [vec!["-c"], vec!["--test-config", "-c"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_shardmq"))
            .args(&args)
            .arg(&conf)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("Unable to open http dir \"/nonexistent/shardmq-www\"")
                && err.contains("shardmq.conf line 3"),
            "{args:?}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn paho(port: u16, ca: Option<&str>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho/websockets.py");
    for protocol in ["311", "5"] {
        let mut cmd = Command::new("python3");
        cmd.args([script, &port.to_string(), protocol]);
        if let Some(ca) = ca {
            cmd.arg(ca);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "paho websockets {protocol} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let scheme = if ca.is_some() { "wss" } else { "ws" };
        assert!(
            stdout.contains(&format!("ok qos 0/1/2 {scheme} {protocol}")),
            "{stdout}"
        );
    }
}

#[test]
fn paho_python_over_ws() {
    if !paho_available() {
        return;
    }
    let (_broker, port) = ws_broker("");
    paho(port, None);
}

#[test]
fn paho_python_over_wss() {
    if !paho_available() {
        return;
    }
    let Some(openssl) = openssl() else { return };
    let pki = Pki::generate(&openssl);
    let (_broker, port) = ws_broker(&format!(
        "certfile {}\nkeyfile {}\n",
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    paho(port, Some(&pki.path("ca.crt")));
}
