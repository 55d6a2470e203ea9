//! RFC 6455 frames: the streaming decoder for what clients send and the encoding of what
//! the broker sends.
//!
//! The decoder never buffers a data frame: it checks a header as soon as it is complete
//! (and returns `Ok(None)`, consuming nothing, while it is not), then unmasks payload into
//! the MQTT buffer as it arrives, so MQTT packets split across frames or packed several to
//! a frame come out as one byte stream [MQTT-6.0.0-2]. Only control frames (at most 125
//! bytes) are collected whole. A violation is an error carrying the close code to send.

use bytes::{Buf, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close codes (RFC 6455 section 7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Largest control frame payload.
pub const MAX_CONTROL: usize = 125;

/// What is wrong with a client's frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unmasked client frame")]
    Unmasked,
    #[error("reserved bits set (no extension was negotiated)")]
    Reserved,
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
    /// [MQTT-6.0.0-1] MQTT travels in binary frames only.
    #[error("text frame (MQTT uses binary frames only)")]
    Text,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame of {0} bytes (at most 125)")]
    ControlTooLong(u64),
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    #[error("frame payload length with the most significant bit set")]
    Length,
    #[error("frame of {len} bytes, more than the {limit} allowed")]
    TooBig { len: u64, limit: u64 },
    #[error("close frame with a 1-byte payload")]
    CloseLength,
    #[error("close code {0} may not be sent")]
    CloseCode(u16),
    #[error("close reason is not UTF-8")]
    CloseReason,
}

impl FrameError {
    /// The close code the broker answers with.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::Text => CLOSE_UNSUPPORTED_DATA,
            Self::TooBig { .. } => CLOSE_TOO_BIG,
            Self::CloseReason => CLOSE_INVALID_PAYLOAD,
            _ => CLOSE_PROTOCOL_ERROR,
        }
    }
}

/// A complete control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Answer with a pong carrying the same payload.
    Ping(Vec<u8>),
    Pong,
    /// The client closes (its code, if it sent one).
    Close(Option<u16>),
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    Data {
        left: u64,
        mask: [u8; 4],
        offset: usize,
    },
    Control {
        opcode: u8,
        len: usize,
        mask: [u8; 4],
    },
}

/// Decodes the frames of one client connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    /// A data message started with FIN = 0 and is not finished.
    in_message: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            state: State::Header,
            in_message: false,
        }
    }

    /// Decodes frames from the front of `input` (bytes as read), appending the unmasked
    /// payload of data frames to `mqtt`. Returns `Ok(Some(control))` after each complete
    /// control frame (what follows it stays in `input` for the next call) and `Ok(None)`
    /// once `input` is used up (a partial header stays in it). A data frame longer than
    /// `limit` bytes is refused from its header.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        mqtt: &mut BytesMut,
        limit: u64,
    ) -> Result<Option<Control>, FrameError> {
        loop {
            match self.state {
                State::Header => {
                    let Some((state, header_len)) = self.header(input, limit)? else {
                        return Ok(None);
                    };
                    input.advance(header_len);
                    self.state = state;
                }
                State::Data { left, mask, offset } => {
                    if left == 0 {
                        self.state = State::Header;
                        continue;
                    }
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    let start = mqtt.len();
                    mqtt.extend_from_slice(&input[..n]);
                    unmask(&mut mqtt[start..], mask, offset);
                    input.advance(n);
                    self.state = State::Data {
                        left: left - n as u64,
                        mask,
                        offset: (offset + n) % 4,
                    };
                }
                State::Control { opcode, len, mask } => {
                    if input.len() < len {
                        return Ok(None);
                    }
                    let mut payload = input.split_to(len).to_vec();
                    unmask(&mut payload, mask, 0);
                    self.state = State::Header;
                    return control(opcode, payload).map(Some);
                }
            }
        }
    }

    /// Checks a complete header at the front of `input`: the next state and the header's
    /// length, or None while it is incomplete.
    fn header(&mut self, input: &[u8], limit: u64) -> Result<Option<(State, usize)>, FrameError> {
        let [b0, b1, ..] = *input else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(FrameError::Reserved);
        }
        let opcode = b0 & 0x0F;
        let masked = b1 & 0x80 != 0;
        let (len, ext) = match b1 & 0x7F {
            126 => match input.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
                None => return Ok(None),
            },
            127 => match input.get(2..10) {
                Some(b) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    (u64::from_be_bytes(be), 8)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 0),
        };
        match opcode {
            OP_TEXT => return Err(FrameError::Text),
            OP_CONTINUATION | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
            other => return Err(FrameError::Opcode(other)),
        }
        // RFC 6455 5.1: a server MUST close the connection on an unmasked client frame.
        if !masked {
            return Err(FrameError::Unmasked);
        }
        if len >> 63 != 0 {
            return Err(FrameError::Length);
        }
        let header_len = 2 + ext + 4;
        let Some(m) = input.get(2 + ext..header_len) else {
            return Ok(None);
        };
        let mask = [m[0], m[1], m[2], m[3]];
        if opcode >= OP_CLOSE {
            if !fin {
                return Err(FrameError::FragmentedControl);
            }
            if len > MAX_CONTROL as u64 {
                return Err(FrameError::ControlTooLong(len));
            }
            let len = usize::try_from(len).unwrap_or(MAX_CONTROL);
            return Ok(Some((State::Control { opcode, len, mask }, header_len)));
        }
        match (opcode, self.in_message) {
            (OP_CONTINUATION, false) => return Err(FrameError::UnexpectedContinuation),
            (OP_BINARY, true) => return Err(FrameError::ExpectedContinuation),
            _ => {}
        }
        if len > limit {
            return Err(FrameError::TooBig { len, limit });
        }
        self.in_message = !fin;
        let state = State::Data {
            left: len,
            mask,
            offset: 0,
        };
        Ok(Some((state, header_len)))
    }
}

fn control(opcode: u8, payload: Vec<u8>) -> Result<Control, FrameError> {
    match opcode {
        OP_PING => Ok(Control::Ping(payload)),
        OP_PONG => Ok(Control::Pong),
        _ => match payload.as_slice() {
            [] => Ok(Control::Close(None)),
            [_] => Err(FrameError::CloseLength),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                // RFC 6455 7.4: 1004-1006 and 1015 are never sent; below 1000 is unused.
                let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
                if !allowed {
                    return Err(FrameError::CloseCode(code));
                }
                if std::str::from_utf8(reason).is_err() {
                    return Err(FrameError::CloseReason);
                }
                Ok(Control::Close(Some(code)))
            }
        },
    }
}

/// XORs `data` with `mask`, the first byte of `data` being byte `offset` of the payload.
pub fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = [0u8; 8];
    for (i, b) in m.iter_mut().enumerate() {
        *b = mask[(offset + i) % 4];
    }
    let word = u64::from_ne_bytes(m);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut v = [0u8; 8];
        v.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(v) ^ word).to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(m) {
        *b ^= k;
    }
}

/// The header of an unmasked, final server frame of `len` payload bytes into `out`;
/// returns its length (2, 4 or 10).
pub fn encode_header(opcode: u8, len: u64, out: &mut [u8; 10]) -> usize {
    out[0] = 0x80 | opcode;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&len.to_be_bytes());
        10
    }
}

/// A whole control frame (payload at most 125 bytes: longer is cut).
pub fn control_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_CONTROL)];
    let mut header = [0u8; 10];
    let n = encode_header(opcode, payload.len() as u64, &mut header);
    let mut frame = Vec::with_capacity(n + payload.len());
    frame.extend_from_slice(&header[..n]);
    frame.extend_from_slice(payload);
    frame
}

/// A close frame with `code` (None: an empty close frame).
pub fn close_frame(code: Option<u16>) -> Vec<u8> {
    match code {
        Some(c) => control_frame(OP_CLOSE, &c.to_be_bytes()),
        None => control_frame(OP_CLOSE, &[]),
    }
}
