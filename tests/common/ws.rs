//! A raw WebSocket client for byte-exact tests of the websockets listener: the HTTP
//! upgrade written by hand, masked client frames, the server's frames read one by one,
//! and the MQTT packets carried in them. The interop tests use real clients (paho-mqtt,
//! MQTT.js); this one exists to send what real clients never send.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::{RawPacket, TIMEOUT};

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A client frame (masked unless `mask` is None).
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked final binary frame.
pub fn binary(payload: &[u8]) -> Vec<u8> {
    client_frame(OP_BINARY, true, payload, Some([0xA1, 0xB2, 0xC3, 0xD4]))
}

/// The upgrade request (with `protocols` as Sec-WebSocket-Protocol, if given).
pub fn upgrade_request(protocols: Option<&str>, extra: &str) -> Vec<u8> {
    let protocol = protocols
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {protocol}{extra}\r\n"
    )
    .into_bytes()
}

/// One server frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

pub struct WsRaw {
    pub stream: TcpStream,
    /// Bytes read but not consumed.
    buf: Vec<u8>,
    /// MQTT bytes from binary frames, not yet cut into packets.
    mqtt: Vec<u8>,
    /// Binary frames received so far.
    pub binary_frames: usize,
}

impl WsRaw {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
            mqtt: Vec::new(),
            binary_frames: 0,
        }
    }

    /// Connects and upgrades (offering `protocols`); returns the client and the 101
    /// response head.
    pub fn upgrade(port: u16, protocols: Option<&str>) -> (Self, String) {
        let mut ws = Self::connect(port);
        ws.send(&upgrade_request(protocols, ""));
        let head = ws.http_response().expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        (ws, head)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends, ignoring errors (the broker may have closed already).
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Reads more bytes; false on EOF, error or timeout.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// An HTTP response: the head, then the body per Content-Length (appended after the
    /// blank line).
    pub fn http_response(&mut self) -> Option<String> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if head.starts_with("HTTP/1.1 101 ") {
            return Some(head);
        }
        while self.buf.len() < len {
            if !self.fill() {
                break;
            }
        }
        let body = String::from_utf8_lossy(&self.buf[..len.min(self.buf.len())]).into_owned();
        Some(head + &body)
    }

    /// The next server frame, or None on EOF / timeout.
    pub fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, n)) = parse_server_frame(&self.buf) {
                self.buf.drain(..n);
                return Some(frame);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The next MQTT packet carried in binary frames (control frames are skipped).
    pub fn recv(&mut self) -> Option<RawPacket> {
        loop {
            if let Some((packet, n)) = parse_mqtt(&self.mqtt) {
                self.mqtt.drain(..n);
                return Some(packet);
            }
            let f = self.frame()?;
            if f.opcode == OP_BINARY || f.opcode == OP_CONT {
                self.binary_frames += 1;
                self.mqtt.extend_from_slice(&f.payload);
            }
        }
    }

    /// The broker's close frame (its code), skipping data frames; then checks that the
    /// connection ends. None if no close frame came or the socket stayed open.
    pub fn close_code(&mut self) -> Option<u16> {
        let code = loop {
            let f = self.frame()?;
            if f.opcode == OP_CLOSE {
                break f
                    .payload
                    .get(..2)
                    .map_or(1005, |b| u16::from_be_bytes([b[0], b[1]]));
            }
        };
        self.closed().then_some(code)
    }

    /// True when the broker closes the socket within the timeout.
    pub fn closed(&mut self) -> bool {
        self.buf.clear();
        super::closed_within(&mut self.stream)
    }

    pub fn set_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }
}

/// A complete server frame at the front of `buf` (and its length). Server frames must be
/// unmasked: a masked one fails the test.
pub fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let [b0, b1, ..] = *buf else { return None };
    assert_eq!(b1 & 0x80, 0, "the server masked a frame");
    let (len, mut at) = match b1 & 0x7F {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let b = buf.get(2..10)?;
            (u64::from_be_bytes(b.try_into().unwrap()) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    Some((
        Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0F,
            payload,
        },
        at,
    ))
}

/// A complete MQTT packet at the front of `buf` (and its length).
fn parse_mqtt(buf: &[u8]) -> Option<(RawPacket, usize)> {
    let first = *buf.first()?;
    let mut len = 0usize;
    let mut mult = 1usize;
    let mut at = 1;
    loop {
        let b = *buf.get(at)?;
        at += 1;
        len += (b & 0x7F) as usize * mult;
        mult *= 128;
        if b & 0x80 == 0 {
            break;
        }
    }
    let body = buf.get(at..at + len)?.to_vec();
    Some((RawPacket { first, body }, at + len))
}
