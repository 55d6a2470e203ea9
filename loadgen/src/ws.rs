//! MQTT over WebSockets for the load generator (`--ws`): the upgrade request, masked
//! client frames around what the MQTT code queued, and the broker's frames stripped in
//! place from the read buffer, so the rest of the worker sees plain MQTT bytes.
//!
//! Each flush sends what was queued since the last one as one binary frame (a write
//! batch, as a browser client's socket would not do better). The mask key is zero: a
//! valid key (RFC 6455 only asks clients to mask), which costs the load generator nothing
//! and the broker the same unmasking pass as any key. It never interprets MQTT bytes.

/// The upgrade request (subprotocol `mqtt`).
pub fn request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: c2hhcmRtcS1sb2FkZ2VuIQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .into_bytes()
}

/// The WebSocket state of one client connection.
#[derive(Debug)]
pub struct WsClient {
    /// The broker answered 101.
    open: bool,
    /// The response head, while it is incomplete.
    head: Vec<u8>,
    /// Bytes of the write buffer before this index are already in wire format.
    framed: usize,
    /// Payload bytes of the current server frame still to come.
    left: u64,
    /// The current frame is a control frame: its payload is dropped.
    skip: bool,
    /// A server frame header split across reads.
    hdr: Vec<u8>,
}

impl WsClient {
    /// The write buffer starts with the request (`request_len` bytes).
    pub fn new(request_len: usize) -> Self {
        Self {
            open: false,
            head: Vec::new(),
            framed: request_len,
            left: 0,
            skip: false,
            hdr: Vec::new(),
        }
    }

    /// Frames what was queued after the last frame (once the upgrade is done); returns
    /// how much of `wbuf` may be written (until then: the request only).
    pub fn prepare(&mut self, wbuf: &mut Vec<u8>) -> usize {
        if !self.open {
            return self.framed.min(wbuf.len());
        }
        let len = wbuf.len() - self.framed;
        if len > 0 {
            let mut header = vec![0x82];
            if len < 126 {
                header.push(0x80 | len as u8);
            } else if let Ok(short) = u16::try_from(len) {
                header.push(0x80 | 126);
                header.extend_from_slice(&short.to_be_bytes());
            } else {
                header.push(0x80 | 127);
                header.extend_from_slice(&(len as u64).to_be_bytes());
            }
            header.extend_from_slice(&[0, 0, 0, 0]); // mask key
            wbuf.splice(self.framed..self.framed, header);
            self.framed = wbuf.len();
        }
        wbuf.len()
    }

    /// The write buffer was written out and cleared.
    pub fn cleared(&mut self) {
        self.framed = 0;
    }

    /// `rbuf[start..end]` was just read: completes the handshake, then strips frame
    /// headers (and control frames) in place. Returns the new end of the MQTT bytes.
    pub fn on_read(&mut self, rbuf: &mut [u8], start: usize, end: usize) -> Result<usize, String> {
        let mut from = start;
        if !self.open {
            self.head.extend_from_slice(&rbuf[start..end]);
            let Some(at) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.head.len() > 16 * 1024 {
                    return Err("no end to the WebSocket handshake response".into());
                }
                return Ok(start);
            };
            if !self.head.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&self.head[..at]);
                return Err(format!(
                    "WebSocket upgrade refused: {}",
                    line.lines().next().unwrap_or("")
                ));
            }
            // What followed the head are frames: move them to `start`.
            let rest = self.head.len() - (at + 4);
            from = end - rest;
            self.head.clear();
            self.open = true;
        }
        let mut out = start;
        let mut i = from;
        while i < end {
            if self.left > 0 {
                let k = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(end - i);
                if !self.skip {
                    rbuf.copy_within(i..i + k, out);
                    out += k;
                }
                i += k;
                self.left -= k as u64;
                continue;
            }
            self.hdr.push(rbuf[i]);
            i += 1;
            if let Some((opcode, len)) = header(&self.hdr)? {
                self.hdr.clear();
                if opcode == 0x8 {
                    return Err("the broker sent a WebSocket close frame".into());
                }
                self.left = len;
                self.skip = !matches!(opcode, 0x0 | 0x2);
            }
        }
        Ok(out)
    }
}

/// A complete server frame header: (opcode, payload length).
fn header(h: &[u8]) -> Result<Option<(u8, u64)>, String> {
    let [b0, b1, ..] = *h else { return Ok(None) };
    if b1 & 0x80 != 0 {
        return Err("the broker sent a masked frame".into());
    }
    let len = match b1 & 0x7F {
        126 if h.len() < 4 => return Ok(None),
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 if h.len() < 10 => return Ok(None),
        127 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&h[2..10]);
            u64::from_be_bytes(be)
        }
        n => u64::from(n),
    };
    Ok(Some((b0 & 0x0F, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_then_frames_are_stripped_in_place() {
        let mut ws = WsClient::new(10);
        let mut wire = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        wire.extend_from_slice(&[0x82, 3, b'a', b'b', b'c', 0x89, 1, b'p', 0x82, 126, 0, 2]);
        wire.extend_from_slice(b"de");
        // Fed in pieces: the head, then frames split anywhere.
        for split in 1..wire.len() {
            let mut ws = WsClient::new(10);
            let mut buf = wire.clone();
            let first = ws.on_read(&mut buf, 0, split).unwrap();
            let mut got = buf[..first].to_vec();
            let mut rest = wire[split..].to_vec();
            let n = ws.on_read(&mut rest, 0, wire.len() - split).unwrap();
            got.extend_from_slice(&rest[..n]);
            assert_eq!(got, b"abcde", "split {split}");
        }
        let mut buf = wire.clone();
        let n = ws.on_read(&mut buf, 0, wire.len()).unwrap();
        assert_eq!(&buf[..n], b"abcde");
        let mut wbuf = b"GET / ...\n".to_vec();
        wbuf.extend_from_slice(&[0x10, 0]);
        assert_eq!(ws.prepare(&mut wbuf), wbuf.len());
        assert_eq!(&wbuf[10..], [0x82, 0x82, 0, 0, 0, 0, 0x10, 0]);
        let mut refused = WsClient::new(0);
        let mut r = b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec();
        let len = r.len();
        assert!(refused.on_read(&mut r, 0, len).is_err());
    }
}
