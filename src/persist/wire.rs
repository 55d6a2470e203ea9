//! Bounds-checked field encoding for persistence records: length-prefixed byte strings,
//! optional strings, and application messages stored as encoded MQTT 5 PUBLISH packets
//! (so every property round-trips through the network codec).
//!
//! Reading never panics and never trusts a length: every field is checked against the
//! bytes left in the record before it is used.

use bytes::{BufMut, Bytes, BytesMut};

use super::record::RecordError;
use crate::codec::{self, ByteStr, Packet, ProtocolVersion, Publish, QoS};

pub(super) fn put_bytes(out: &mut BytesMut, b: &[u8]) -> Result<(), RecordError> {
    let len = u32::try_from(b.len()).map_err(|_| RecordError::TooLarge(b.len() as u64))?;
    out.put_u32_le(len);
    out.put_slice(b);
    Ok(())
}

/// Encodes a PUBLISH as an MQTT 5 packet (length-prefixed), straight into `out` (no
/// copy of the message): DUP clear, a packet id exactly when QoS > 0, no topic alias or
/// subscription identifiers (a normalised copy is made only for a message that has them).
pub(super) fn put_publish(out: &mut BytesMut, p: &Publish) -> Result<(), RecordError> {
    let id_ok = p.packet_id.is_some() == (p.qos != QoS::AtMostOnce);
    if p.dup
        || !id_ok
        || p.properties.topic_alias.is_some()
        || !p.properties.subscription_identifiers.is_empty()
    {
        let mut p = p.clone();
        p.dup = false;
        p.packet_id = (p.qos != QoS::AtMostOnce).then_some(p.packet_id.unwrap_or(1));
        p.properties.clear_connection_scoped();
        return put_publish(out, &p);
    }
    let at = out.len();
    out.put_u32_le(0);
    if let Err(e) = codec::encode_publish_header(p, ProtocolVersion::V5, out) {
        out.truncate(at);
        return Err(RecordError::Encode(e.to_string()));
    }
    out.extend_from_slice(&p.payload);
    let len = out.len() - at - 4;
    let Ok(len) = u32::try_from(len) else {
        out.truncate(at);
        return Err(RecordError::TooLarge(len as u64));
    };
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// An optional string: a 0 byte, or a 1 byte and the string.
pub(super) fn put_opt_str(out: &mut BytesMut, s: Option<&ByteStr>) -> Result<(), RecordError> {
    match s {
        None => {
            out.put_u8(0);
            Ok(())
        }
        Some(s) => {
            out.put_u8(1);
            put_bytes(out, s.as_bytes())
        }
    }
}

/// Bounds-checked reads over a record body.
pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Malformed("field runs past the record"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, RecordError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(super) fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub(super) fn str(&mut self) -> Result<ByteStr, RecordError> {
        let b = self.bytes()?;
        ByteStr::try_from_bytes(Bytes::copy_from_slice(b))
            .map_err(|_| RecordError::Malformed("string is not UTF-8"))
    }

    pub(super) fn bool(&mut self) -> Result<bool, RecordError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RecordError::Malformed("flag is not 0 or 1")),
        }
    }

    pub(super) fn qos(&mut self) -> Result<QoS, RecordError> {
        QoS::from_u8(self.u8()?).ok_or(RecordError::Malformed("QoS above 2"))
    }

    pub(super) fn publish(&mut self) -> Result<Publish, RecordError> {
        let b = self.bytes()?;
        let mut buf = BytesMut::from(b);
        match codec::decode(&mut buf, ProtocolVersion::V5, u32::MAX) {
            Ok(Some(Packet::Publish(p))) if buf.is_empty() => Ok(p),
            Ok(_) => Err(RecordError::Malformed("stored message is not one PUBLISH")),
            Err(_) => Err(RecordError::Malformed("stored PUBLISH does not decode")),
        }
    }

    pub(super) fn count(&mut self, item_size: usize) -> Result<usize, RecordError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item_size) > self.buf.len() {
            return Err(RecordError::Malformed("count runs past the record"));
        }
        Ok(n)
    }

    pub(super) fn opt_str(&mut self) -> Result<Option<ByteStr>, RecordError> {
        if self.bool()? {
            self.str().map(Some)
        } else {
            Ok(None)
        }
    }
}
