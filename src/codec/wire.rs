//! Bounds-checked primitives of the MQTT wire format (variable byte integer, two-byte
//! lengths, UTF-8 strings, binary data, string pairs) and the topic name / topic filter
//! syntax checks. Every read in the decoder goes through [`Reader`], which never indexes
//! past its end and never panics; every write assumes the caller has already checked the
//! field lengths (the encoder does so while it computes `encoded_len`).
//!
//! Decoding is zero-copy: a [`Reader`] walks a frozen frame and hands out [`Bytes`]
//! slices of it. This module must never allocate per byte or do I/O.

use bytes::{BufMut, Bytes, BytesMut};

use super::bytestr::ByteStr;
use super::error::{DecodeError, EncodeError};

/// The largest value a variable byte integer can hold (4 bytes) [MQTT-1.5.5-1].
pub const VARINT_MAX: u32 = 268_435_455;

/// The largest string / binary field (two-byte length prefix).
pub const FIELD_MAX: usize = u16::MAX as usize;

type Result<T> = std::result::Result<T, DecodeError>;

/// Outcome of parsing a variable byte integer from a possibly incomplete buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarInt {
    /// The value and the number of bytes it used.
    Complete(u32, usize),
    /// The buffer ends before the last byte of the integer.
    Incomplete,
}

/// Parses a variable byte integer at the front of `buf`. More than 4 bytes is malformed
/// [MQTT-1.5.5-1]. A non-minimal encoding (e.g. `0x80 0x00`) is accepted, as Mosquitto does.
pub fn parse_varint(buf: &[u8]) -> Result<VarInt> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(VarInt::Incomplete);
        };
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(VarInt::Complete(value, i + 1));
        }
    }
    Err(DecodeError::MalformedRemainingLength)
}

/// Number of bytes the variable byte integer encoding of `v` takes (`v <= VARINT_MAX`).
#[inline]
pub const fn varint_len(v: usize) -> usize {
    if v < 128 {
        1
    } else if v < 16_384 {
        2
    } else if v < 2_097_152 {
        3
    } else {
        4
    }
}

/// Appends `v` (`<= VARINT_MAX`, checked by the caller) as a variable byte integer.
#[inline]
pub fn put_varint(out: &mut BytesMut, v: usize) {
    let mut v = v;
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if v == 0 {
            break;
        }
    }
}

/// Appends a two-byte length prefix and `data` (`data.len() <= FIELD_MAX`, checked by
/// the caller).
#[inline]
pub fn put_field(out: &mut BytesMut, data: &[u8]) {
    out.put_u16(data.len() as u16);
    out.put_slice(data);
}

/// Encoded size of a length-prefixed string or binary field, or `FieldTooLong`.
#[inline]
pub const fn field_len(len: usize) -> std::result::Result<usize, EncodeError> {
    if len > FIELD_MAX {
        Err(EncodeError::FieldTooLong(len))
    } else {
        Ok(2 + len)
    }
}

/// Checks `b` as an MQTT UTF-8 string: well-formed UTF-8 (Rust rejects surrogates and
/// overlong forms) [MQTT-1.5.4-1], no U+0000 [MQTT-1.5.4-2].
#[inline]
pub fn is_mqtt_utf8(b: &[u8]) -> bool {
    !b.contains(&0) && std::str::from_utf8(b).is_ok()
}

/// Most levels a topic name or filter may have. Every level of a filter is a node of the
/// subscription trie on every shard, so without a bound one SUBSCRIBE of `"/"` x 65535
/// costs tens of MiB. Mosquitto refuses more than 200 `/` (`TOPIC_HIERARCHY_LIMIT`), that
/// is more than 201 levels, on PUBLISH, SUBSCRIBE, UNSUBSCRIBE and wills alike; so do we.
pub const MAX_TOPIC_LEVELS: usize = 201;

/// Whether `b` has more than [`MAX_TOPIC_LEVELS`] levels.
#[inline]
pub fn is_too_deep(b: &[u8]) -> bool {
    b.iter().filter(|&&c| c == b'/').count() >= MAX_TOPIC_LEVELS
}

/// A topic name: at least one character [MQTT-4.7.3-1], no wildcard characters
/// [MQTT-3.3.2-2], at most [`MAX_TOPIC_LEVELS`] levels. UTF-8 validity is checked
/// separately. One pass without early exit (it vectorises; this is on the publish path).
#[inline]
pub fn is_valid_topic_name(b: &[u8]) -> bool {
    let (wild, slashes) = b.iter().fold((false, 0usize), |(wild, slashes), &c| {
        (
            wild | (c == b'+') | (c == b'#'),
            slashes + usize::from(c == b'/'),
        )
    });
    !b.is_empty() && !wild && slashes < MAX_TOPIC_LEVELS
}

/// A topic filter: at least one character [MQTT-4.7.3-1]; `#` only as the last level and
/// alone in it [MQTT-4.7.1-1]; `+` alone in its level [MQTT-4.7.1-2]; at most
/// [`MAX_TOPIC_LEVELS`] levels.
pub fn is_valid_topic_filter(b: &[u8]) -> bool {
    if b.is_empty() {
        return false;
    }
    let mut levels = b.split(|&c| c == b'/').peekable();
    let mut depth = 0usize;
    while let Some(level) = levels.next() {
        depth += 1;
        if depth > MAX_TOPIC_LEVELS {
            return false;
        }
        let has_hash = level.contains(&b'#');
        let has_plus = level.contains(&b'+');
        if has_hash && (level.len() != 1 || levels.peek().is_some()) {
            return false;
        }
        if has_plus && level.len() != 1 {
            return false;
        }
    }
    true
}

/// A cursor over one frozen frame. Reads are bounds-checked against `end` and yield
/// `DecodeError::Malformed` when the data runs out.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf[start..]`.
    pub fn new(buf: &'a Bytes, start: usize) -> Self {
        Self {
            buf,
            pos: start.min(buf.len()),
            end: buf.len(),
        }
    }

    /// Bytes left before the end of this reader.
    #[inline]
    pub const fn remaining(&self) -> usize {
        self.end - self.pos
    }

    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// Fails unless every byte has been read: trailing bytes inside a frame are malformed.
    #[inline]
    pub fn finish(&self, what: &'static str) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(what))
        }
    }

    #[inline]
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(DecodeError::Malformed(what));
        }
        let start = self.pos;
        self.pos += n;
        self.buf
            .get(start..start + n)
            .ok_or(DecodeError::Malformed(what))
    }

    #[inline]
    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        let s = self.take(1, what)?;
        s.first().copied().ok_or(DecodeError::Malformed(what))
    }

    #[inline]
    pub fn u16(&mut self, what: &'static str) -> Result<u16> {
        match *self.take(2, what)? {
            [a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(DecodeError::Malformed(what)),
        }
    }

    #[inline]
    pub fn u32(&mut self, what: &'static str) -> Result<u32> {
        match *self.take(4, what)? {
            [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(DecodeError::Malformed(what)),
        }
    }

    /// A variable byte integer inside a packet (property lengths, subscription ids).
    pub fn varint(&mut self, what: &'static str) -> Result<u32> {
        let rest = self.buf.get(self.pos..self.end).unwrap_or_default();
        match parse_varint(rest) {
            Ok(VarInt::Complete(v, n)) => {
                self.pos += n;
                Ok(v)
            }
            _ => Err(DecodeError::Malformed(what)),
        }
    }

    /// `n` raw bytes as a zero-copy slice.
    #[inline]
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes> {
        if n > self.remaining() {
            return Err(DecodeError::Malformed(what));
        }
        let start = self.pos;
        self.pos += n;
        Ok(self.buf.slice(start..start + n))
    }

    /// Length-prefixed binary data.
    #[inline]
    pub fn binary(&mut self, what: &'static str) -> Result<Bytes> {
        let n = self.u16(what)?;
        self.bytes(usize::from(n), what)
    }

    /// Length-prefixed raw bytes without copying (for checks such as the protocol name).
    #[inline]
    pub fn binary_slice(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    /// Length-prefixed UTF-8 string, validated [MQTT-1.5.4-1] [MQTT-1.5.4-2].
    #[inline]
    pub fn string(&mut self, what: &'static str) -> Result<ByteStr> {
        let b = self.binary(what)?;
        if is_mqtt_utf8(&b) {
            // SAFETY: `is_mqtt_utf8` just checked that `b` is valid UTF-8.
            Ok(unsafe { ByteStr::from_validated(b) })
        } else {
            Err(DecodeError::Malformed("invalid UTF-8 string"))
        }
    }

    /// A UTF-8 string pair (user property).
    pub fn string_pair(&mut self, what: &'static str) -> Result<(ByteStr, ByteStr)> {
        let k = self.string(what)?;
        let v = self.string(what)?;
        Ok((k, v))
    }

    /// Everything up to the end of this reader (the PUBLISH payload).
    #[inline]
    pub fn rest(&mut self) -> Bytes {
        let start = self.pos;
        self.pos = self.end;
        self.buf.slice(start..self.end)
    }

    /// Splits off the next `n` bytes as a sub-reader (a property block) and skips them here.
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Self> {
        if n > self.remaining() {
            return Err(DecodeError::Malformed(what));
        }
        let sub = Self {
            buf: self.buf,
            pos: self.pos,
            end: self.pos + n,
        };
        self.pos += n;
        Ok(sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        for v in [
            0usize,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut out = BytesMut::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(
                parse_varint(&out).unwrap(),
                VarInt::Complete(v as u32, out.len())
            );
        }
    }

    #[test]
    fn mqtt_1_5_5_1_varint_longer_than_4_bytes_is_malformed() {
        assert_eq!(
            parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(DecodeError::MalformedRemainingLength)
        );
        assert_eq!(parse_varint(&[0xFF, 0xFF]), Ok(VarInt::Incomplete));
    }

    #[test]
    fn mqtt_1_5_4_1_ill_formed_utf8_is_rejected() {
        assert!(!is_mqtt_utf8(&[0xC0, 0x80])); // overlong NUL
        assert!(!is_mqtt_utf8(&[0xED, 0xA0, 0x80])); // surrogate U+D800
        assert!(!is_mqtt_utf8(&[0xFF]));
        assert!(is_mqtt_utf8("a/é/😀".as_bytes()));
    }

    #[test]
    fn mqtt_1_5_4_2_nul_is_rejected() {
        assert!(!is_mqtt_utf8(b"a\0b"));
    }

    #[test]
    fn mqtt_4_7_1_filters() {
        for ok in [
            "#", "+", "a/#", "a/+/b", "+/+", "/", "a//b", "$SYS/#", "+/#",
        ] {
            assert!(is_valid_topic_filter(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "#/a", "a+", "a/b+/c", "##", "++"] {
            assert!(!is_valid_topic_filter(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn topic_depth_is_bounded_as_mosquitto_does() {
        let at_limit = "a/".repeat(MAX_TOPIC_LEVELS - 1) + "a"; // 200 '/', 201 levels
        let over = "a/".repeat(MAX_TOPIC_LEVELS) + "a";
        assert!(is_valid_topic_name(at_limit.as_bytes()));
        assert!(is_valid_topic_filter(at_limit.as_bytes()));
        assert!(!is_too_deep(at_limit.as_bytes()));
        let slashes = "/".repeat(65_535);
        for deep in [over.as_str(), slashes.as_str()] {
            assert!(!is_valid_topic_name(deep.as_bytes()));
            assert!(!is_valid_topic_filter(deep.as_bytes()));
            assert!(is_too_deep(deep.as_bytes()));
        }
        let deep_hash = "+/".repeat(MAX_TOPIC_LEVELS) + "#";
        assert!(!is_valid_topic_filter(deep_hash.as_bytes()));
    }

    #[test]
    fn reader_never_reads_past_end() {
        let b = Bytes::from_static(&[0x00, 0x05, b'a']);
        let mut r = Reader::new(&b, 0);
        assert!(r.string("s").is_err());
        let mut r = Reader::new(&b, 0);
        let mut sub = r.sub(2, "sub").unwrap();
        assert_eq!(sub.u16("x").unwrap(), 5);
        assert!(sub.u8("x").is_err());
        assert_eq!(r.u8("x").unwrap(), b'a');
        assert!(r.u32("x").is_err());
        assert!(r.varint("x").is_err());
    }
}
