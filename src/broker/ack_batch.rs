//! The acknowledgements of one read: while the broker handles what it read from a
//! connection (`Broker::on_read`), the PUBACK / PUBREC frames it owes that connection are
//! appended to one buffer and queued as one output chunk when the read is handled (one
//! `iovec`, one reference count, one queue entry per read instead of per message).
//!
//! It never reorders a connection's output: anything else written to the connection
//! being read first queues the acknowledgements gathered so far (`Broker::push_frame`).
//! It never holds bytes past the read: `Broker::on_read` queues them before it returns.

use bytes::{Bytes, BytesMut};

use crate::codec::{self, AckKind, PacketId, ProtocolVersion, ReasonCode};

use super::ConnId;

/// The buffer is reserved in steps of this many bytes (a few hundred acks).
const RESERVE: usize = 1024;

/// Acknowledgements gathered for the connection being read.
#[derive(Debug, Default)]
pub(super) struct AckBatch {
    /// The connection being read (`None`: not in a read, acks are written one by one).
    conn: Option<ConnId>,
    frames: BytesMut,
    /// Frames in `frames` (for the sent-messages counter).
    count: u64,
}

impl AckBatch {
    /// A read of `conn` starts: its acknowledgements are gathered.
    pub(super) fn begin(&mut self, conn: ConnId) {
        debug_assert!(self.frames.is_empty());
        self.conn = Some(conn);
    }

    /// Whether acknowledgements of `conn` are being gathered.
    #[inline]
    pub(super) fn gathers(&self, conn: ConnId) -> bool {
        self.conn == Some(conn)
    }

    /// Whether acknowledgements of `conn` are waiting to be queued (then anything else
    /// for `conn` must queue them first).
    #[inline]
    pub(super) fn holds(&self, conn: ConnId) -> bool {
        self.count > 0 && self.conn == Some(conn)
    }

    /// Appends a PUBACK / PUBREC / PUBREL / PUBCOMP without properties; `false` (nothing
    /// appended) if the frame is larger than `max_out`, the client's maximum packet size.
    pub(super) fn push(
        &mut self,
        (kind, packet_id, reason): (AckKind, PacketId, ReasonCode),
        version: ProtocolVersion,
        max_out: usize,
    ) -> bool {
        if self.frames.capacity() - self.frames.len() < 8 {
            self.frames.reserve(RESERVE);
        }
        let at = self.frames.len();
        codec::encode_plain_ack(kind, packet_id, reason, version, &mut self.frames);
        if self.frames.len() - at > max_out {
            self.frames.truncate(at);
            return false;
        }
        self.count += 1;
        true
    }

    /// The gathered frames as one chunk and how many they are (`None` if there are none).
    pub(super) fn take(&mut self) -> Option<(ConnId, Bytes, u64)> {
        let conn = self.conn?;
        if self.count == 0 {
            return None;
        }
        let count = std::mem::take(&mut self.count);
        Some((conn, self.frames.split().freeze(), count))
    }

    /// The read is handled: what is gathered must have been taken.
    pub(super) fn end(&mut self) {
        debug_assert_eq!(self.count, 0);
        self.conn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V311: ProtocolVersion = ProtocolVersion::V311;
    const PUBACK: AckKind = AckKind::PubAck;

    #[test]
    fn gathers_acks_of_the_read_connection_into_one_chunk() {
        let mut b = AckBatch::default();
        assert!(!b.gathers(3));
        b.begin(3);
        assert!(b.gathers(3) && !b.gathers(4) && !b.holds(3));
        assert!(b.push((PUBACK, 1, ReasonCode::SUCCESS), V311, 100));
        assert!(b.push((PUBACK, 258, ReasonCode::SUCCESS), V311, 100));
        assert!(b.holds(3) && !b.holds(4));
        let (conn, frame, n) = b.take().expect("two acks");
        assert_eq!((conn, n), (3, 2));
        assert_eq!(&frame[..], &[0x40, 2, 0, 1, 0x40, 2, 1, 2]);
        assert!(b.take().is_none() && !b.holds(3));
        b.end();
        assert!(!b.gathers(3));
    }

    #[test]
    fn an_ack_too_large_for_the_client_is_left_out() {
        let mut b = AckBatch::default();
        b.begin(1);
        let refused = (PUBACK, 7, ReasonCode::NO_MATCHING_SUBSCRIBERS);
        assert!(!b.push(refused, ProtocolVersion::V5, 4));
        assert!(b.push(refused, ProtocolVersion::V5, 5));
        let (_, frame, n) = b.take().expect("one ack");
        assert_eq!((&frame[..], n), (&[0x40, 3, 0, 7, 0x10][..], 1));
        b.end();
    }
}
