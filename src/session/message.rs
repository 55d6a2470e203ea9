//! Application messages as the session layer stores them: one [`Message`] per PUBLISH
//! received, shared by `Arc` between every session that queued it, and the per-session
//! [`Outgoing`] view of it (granted QoS, retain flag, subscription identifiers).
//!
//! This module never encodes bytes: the broker turns a [`Transmit`] into frames, using the
//! per-version header templates cached here so a message is encoded once, not once per
//! subscriber.
//!
//! A message decoded from a client holds slices of that connection's read buffer (no copy
//! on the hot path: a QoS 0 message delivered within the loop iteration is never copied).
//! Whatever keeps a message past the iteration (a session queue, the inflight window, an
//! offline session) keeps [`Message::detached`] instead: one compacted copy per message,
//! made by the first holder and shared by the others, so a queued 10-byte message never
//! pins a 64 KiB read buffer. [`Message::footprint`] is what such a copy keeps alive.
//! A small QoS 1/2 message, which a subscriber almost always keeps, is built compacted
//! from the start ([`Message::compacted`]): one record and one copy instead of a record
//! pointing into the read buffer plus a second, detached, record.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::codec::{Ack, AckKind, ByteStr, Packet, PacketId, Properties, Publish, QoS, ReasonCode};

/// One application message, immutable once routed.
#[derive(Debug)]
pub struct Message {
    /// The PUBLISH as received (topic alias resolved, `dup` cleared). Its `qos` and
    /// `retain` are the publisher's.
    pub publish: Publish,
    /// When the broker received it (message expiry counts from here).
    pub received: Instant,
    /// The publishing session's unique id (for No Local), `None` for wills, $SYS and
    /// injected messages.
    pub origin: Option<u64>,
    /// The connection that published it, for the broker's back-pressure (`None` as
    /// for `origin`). The session layer never reads it.
    pub publisher: Option<PublishedBy>,
    /// Encoded PUBLISH headers (QoS 1 flags, placeholder packet id, no subscription
    /// identifiers) for 3.1/3.1.1 (`[0]`) and 5.0 (`[1]`), filled on first use.
    pub headers: [OnceLock<Bytes>; 2],
    /// Whether a QoS 1/2 header was encoded for 3.1/3.1.1 (`[0]`) and 5.0 (`[1]`): the
    /// first delivery encodes straight into the encoder's buffer, the second caches
    /// [`Message::headers`] (a template costs an allocation; one subscriber never reuses it).
    header_used: [AtomicBool; 2],
    /// [`Message::footprint`] once computed (0: not yet; a footprint is never 0). A
    /// queued message is counted in and out, and the properties are walked each time.
    footprint: AtomicUsize,
    /// Its topic, payload and properties are their own exact allocations (compacted, or
    /// built by the broker): [`Message::detached`] returns it as it is.
    standalone: bool,
    /// The compacted copy that queues keep instead of this message, made once.
    detached: OnceLock<Arc<Self>>,
}

/// What the message record costs beyond its bytes: the struct, the `Arc` counters, the
/// queue entry that refers to it.
const MESSAGE_RECORD: usize =
    std::mem::size_of::<Message>() + 2 * std::mem::size_of::<usize>() + 48;

impl Message {
    /// A message whose bytes may be slices of a read buffer (anything decoded).
    pub fn new(publish: Publish, received: Instant, origin: Option<u64>) -> Self {
        Self::with_bytes(publish, received, origin, false)
    }

    /// A message whose topic, payload and properties are known to be exact allocations of
    /// their own (e.g. built from the retained store): queues keep it without a copy.
    pub fn standalone(publish: Publish, received: Instant, origin: Option<u64>) -> Self {
        Self::with_bytes(publish, received, origin, true)
    }

    /// A message whose topic, payload and properties are copied now into exact
    /// allocations (what [`Message::detached`] would copy later), for a message that will
    /// almost surely be kept: queues keep it without a second record.
    pub fn compacted(publish: &Publish, received: Instant, origin: Option<u64>) -> Self {
        Self::with_bytes(compact(publish), received, origin, true)
    }

    fn with_bytes(publish: Publish, received: Instant, origin: Option<u64>, own: bool) -> Self {
        Self {
            publish,
            received,
            origin,
            publisher: None,
            headers: [OnceLock::new(), OnceLock::new()],
            header_used: [AtomicBool::new(false), AtomicBool::new(false)],
            footprint: AtomicUsize::new(0),
            standalone: own,
            detached: OnceLock::new(),
        }
    }

    /// Records a use of the QoS 1/2 header of a version class (`v5`); returns whether it
    /// was used before (then it is worth caching in [`Message::headers`]).
    pub fn header_reused(&self, v5: bool) -> bool {
        self.header_used[usize::from(v5)].swap(true, Ordering::Relaxed)
    }

    /// The message as something that outlives the loop iteration keeps it: `this` if its
    /// bytes are its own, else its compacted copy (topic, payload and properties copied
    /// into exact allocations), made by the first caller and shared by every later one,
    /// on any shard. Never blocks: two shards racing may each copy, one copy wins.
    pub fn detached(this: &Arc<Self>) -> Arc<Self> {
        if this.standalone {
            return Arc::clone(this);
        }
        if let Some(copy) = this.detached.get() {
            return Arc::clone(copy);
        }
        // Built in place (the record is 600 bytes: no intermediate moves).
        let copy = Arc::new(Self {
            publish: compact(&this.publish),
            received: this.received,
            origin: this.origin,
            publisher: this.publisher,
            // The cached headers are encoded into their own buffers: shared, not copied.
            headers: this.headers.clone(),
            header_used: [
                AtomicBool::new(this.header_used[0].load(Ordering::Relaxed)),
                AtomicBool::new(this.header_used[1].load(Ordering::Relaxed)),
            ],
            footprint: AtomicUsize::new(0),
            standalone: true,
            detached: OnceLock::new(),
        });
        match this.detached.set(Arc::clone(&copy)) {
            Ok(()) => copy,
            Err(_) => this.detached.get().map_or(copy, Arc::clone),
        }
    }

    /// Whether [`Message::detached`] returns the message itself.
    pub fn is_standalone(&self) -> bool {
        self.standalone
    }

    /// The heap memory a detached message keeps alive, what `max_queued_bytes` counts: the record (struct, `Arc` counters, queue entry), the
    /// topic, payload and properties, and one encoded header (topic and properties again).
    /// A message shared by several queues counts in full in each. Depends only on the
    /// message, so adding and later subtracting it always balances.
    pub fn footprint(&self) -> usize {
        let known = self.footprint.load(Ordering::Relaxed);
        if known != 0 {
            return known;
        }
        let p = &self.publish;
        let props = p.properties.heap_bytes();
        let n = MESSAGE_RECORD + 2 * (p.topic.len() + props) + p.payload.len();
        self.footprint.store(n, Ordering::Relaxed);
        n
    }

    /// Seconds of message expiry left at `now`: `None` if the message has no expiry,
    /// `Some(0)` if it has expired [MQTT-3.3.2-5].
    pub fn expiry_left(&self, now: Instant) -> Option<u32> {
        let interval = self.publish.properties.message_expiry_interval?;
        let waited = now.saturating_duration_since(self.received);
        let left = Duration::from_secs(u64::from(interval)).saturating_sub(waited);
        if left.is_zero() {
            return Some(0);
        }
        // Round up so a message with time left is never forwarded with interval 0.
        Some(u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0)).unwrap_or(u32::MAX))
    }
}

/// Topic and payload of a small message, stored inline in the one allocation that
/// `Bytes::from_owner` makes for its owner and reference count.
struct Inline<const N: usize> {
    len: usize,
    bytes: [u8; N],
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// `topic` then `payload` in one `Bytes`. Up to 256 bytes they live inline in the owner's
/// allocation (size classes of 32 to 256 bytes): one allocation, and slicing the result
/// only counts a reference. Larger ones take a buffer and a shared header (two).
fn joined(topic: &[u8], payload: &[u8]) -> Bytes {
    fn inline<const N: usize>(topic: &[u8], payload: &[u8]) -> Bytes {
        let len = topic.len() + payload.len();
        let mut owner = Inline { len, bytes: [0; N] };
        owner.bytes[..topic.len()].copy_from_slice(topic);
        owner.bytes[topic.len()..len].copy_from_slice(payload);
        Bytes::from_owner(owner)
    }
    match topic.len() + payload.len() {
        0..=32 => inline::<32>(topic, payload),
        33..=64 => inline::<64>(topic, payload),
        65..=128 => inline::<128>(topic, payload),
        129..=256 => inline::<256>(topic, payload),
        len => {
            let mut data = BytesMut::with_capacity(len);
            data.extend_from_slice(topic);
            data.extend_from_slice(payload);
            data.freeze()
        }
    }
}

/// `p` with its topic and payload copied into one exact allocation and its properties
/// compacted: nothing of it refers to a read buffer.
fn compact(p: &Publish) -> Publish {
    let mut payload = joined(p.topic.as_bytes(), &p.payload);
    let topic = payload.split_to(p.topic.len());
    Publish {
        dup: p.dup,
        qos: p.qos,
        retain: p.retain,
        // SAFETY: the bytes of a `ByteStr`, copied: valid UTF-8.
        topic: unsafe { ByteStr::from_validated(topic) },
        packet_id: p.packet_id,
        properties: if p.properties.is_empty() {
            Properties::default()
        } else {
            p.properties.compact()
        },
        payload,
    }
}

/// Where a message was published: the shard that received it and the connection there
/// (its slot, and its uid, which is never reused). Travels inside the message so that a
/// shard delivering it knows whom to pause, wherever it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedBy {
    pub shard: u16,
    pub conn: u32,
    pub conn_uid: NonZeroU64,
}

/// A message as one session delivers it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub msg: Arc<Message>,
    /// min(publish QoS, granted QoS) [MQTT-3.8.4-6].
    pub qos: QoS,
    pub retain: bool,
    /// Identifiers of every matching subscription that carried one (MQTT 5).
    pub sub_ids: SmallVec<[u32; 1]>,
}

/// What a session wants written to its client. The broker encodes it.
#[derive(Debug)]
pub enum Transmit {
    /// PUBACK, PUBREC, PUBREL or PUBCOMP without properties (the common case, unboxed).
    Ack(AckKind, PacketId, ReasonCode),
    PingResp,
    /// Anything else (CONNACK, SUBACK, UNSUBACK, DISCONNECT).
    Packet(Box<Packet>),
    Publish {
        out: Outgoing,
        packet_id: Option<PacketId>,
        dup: bool,
    },
}

impl Transmit {
    /// The packet to encode (publishes are encoded by the broker's fan-out code).
    pub fn into_packet(self) -> Option<Packet> {
        match self {
            Self::Ack(kind, packet_id, reason) => Some(Packet::Ack(Ack {
                kind,
                packet_id,
                reason,
                properties: Properties::default(),
            })),
            Self::PingResp => Some(Packet::PingResp),
            Self::Packet(p) => Some(*p),
            Self::Publish { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacted_topic_and_payload_are_equal_copies_in_every_size_class() {
        for len in [0, 1, 31, 32, 33, 64, 65, 128, 129, 255, 256, 257, 590] {
            let topic_len = 1 + len % 10;
            let buf = Bytes::from(
                (0..topic_len + len)
                    .map(|i| b'a' + (i % 26) as u8)
                    .collect::<Vec<_>>(),
            );
            let p = Publish {
                qos: QoS::AtLeastOnce,
                packet_id: Some(9),
                // SAFETY: ASCII letters.
                topic: unsafe { ByteStr::from_validated(buf.slice(..topic_len)) },
                payload: buf.slice(topic_len..),
                ..Publish::default()
            };
            let c = compact(&p);
            assert_eq!(
                (c.topic.as_bytes(), &c.payload[..]),
                (p.topic.as_bytes(), &p.payload[..])
            );
            assert_eq!((c.qos, c.packet_id), (QoS::AtLeastOnce, Some(9)));
            // Copies, not slices of the buffer the publish was decoded from.
            assert!(!std::ptr::eq(c.payload.as_ptr(), p.payload.as_ptr()) || len == 0);
            let copy = c.payload.clone();
            drop(c);
            assert_eq!(&copy[..], &p.payload[..], "a clone outlives the message");
        }
    }
}
