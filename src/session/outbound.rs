//! Server -> client QoS 1 / 2 state of one session: the inflight window (packet id,
//! stage of the PUBACK or PUBREC/PUBREL/PUBCOMP flow) and the queue of messages waiting
//! for a free slot.
//!
//! It allocates packet ids per session, never drops a message silently (the caller
//! decides what overflow means: back-pressure while connected, a counted drop while
//! offline) and never encodes anything. Every message it keeps (queued, or inflight
//! awaiting its acknowledgement) is [`Message::detached`]: it never pins a read buffer,
//! and the byte counts are the [`Message::footprint`]s of what it holds.

use std::collections::VecDeque;
use std::time::Instant;

use crate::codec::{Ack, AckKind, PacketId, QoS, ReasonCode};

use super::message::{Message, Outgoing, Transmit};

/// Where an outbound QoS 1 / 2 message is in its flow: the acknowledgement awaited.
#[allow(clippy::enum_variant_names)] // named after the packets awaited
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    PubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    PubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    PubComp,
}

#[derive(Debug)]
struct Inflight {
    /// Order of arrival in this session (persistence names messages by it).
    seq: u64,
    packet_id: PacketId,
    stage: Stage,
    out: Outgoing,
}

/// What an acknowledgement from the client did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// A slot in the window was freed.
    Released,
    /// PUBREC accepted; PUBREL queued.
    Progressed,
    /// No such packet id in the expected stage (ignored; a PUBREL is still answered).
    Unknown,
}

/// Up to this many inflight messages a new packet id is checked against the window by a
/// scan (a few cache lines); past it an [`IdSet`] answers in O(1), so a big window
/// (`max_inflight_messages` in the thousands, or a v5 Receive Maximum of 65535) does not
/// make every send walk the whole window.
const SCAN_IDS: usize = 32;

/// The packet ids in use, one bit each (8 KiB, only for sessions with a big window).
#[derive(Debug)]
struct IdSet(Box<[u64; 1024]>);

impl IdSet {
    fn new() -> Self {
        Self(Box::new([0; 1024]))
    }
    fn slot(id: PacketId) -> (usize, u64) {
        (usize::from(id >> 6), 1u64 << (id & 63))
    }
    fn insert(&mut self, id: PacketId) {
        let (i, bit) = Self::slot(id);
        if let Some(w) = self.0.get_mut(i) {
            *w |= bit;
        }
    }
    fn remove(&mut self, id: PacketId) {
        let (i, bit) = Self::slot(id);
        if let Some(w) = self.0.get_mut(i) {
            *w &= !bit;
        }
    }
    fn contains(&self, id: PacketId) -> bool {
        let (i, bit) = Self::slot(id);
        self.0.get(i).is_some_and(|w| w & bit != 0)
    }
}

#[derive(Debug, Default)]
pub struct Outbound {
    inflight: VecDeque<Inflight>,
    /// The ids of `inflight` while it holds more than [`SCAN_IDS`] (dropped when the
    /// window empties).
    ids: Option<IdSet>,
    /// (sequence number, message), oldest first.
    queue: VecDeque<(u64, Outgoing)>,
    next_id: PacketId,
    /// Sequence number of the next message offered.
    next_seq: u64,
    /// Footprints of the queued messages (for `max_queued_bytes`).
    queued_bytes: usize,
    /// Topic + payload bytes of the inflight QoS 1/2 messages (for `max_inflight_bytes`,
    /// a window in data bytes as in Mosquitto; the memory of the window is bounded by
    /// `max_inflight_messages`).
    inflight_bytes: usize,
    /// `max_inflight_bytes` (0 = no byte limit): the window also closes once this many
    /// bytes are in flight (one message always fits, however large).
    max_inflight_bytes: usize,
}

/// What a queued message counts against `max_queued_bytes`: the memory it keeps alive
/// ([`Message::footprint`]), not only its length.
pub fn message_bytes(out: &Outgoing) -> usize {
    out.msg.footprint()
}

/// What an inflight message counts against `max_inflight_bytes`: topic + payload.
fn data_bytes(out: &Outgoing) -> usize {
    out.msg.publish.topic.len() + out.msg.publish.payload.len()
}

/// `out` as a queue keeps it: its message detached from any read buffer.
fn keep(mut out: Outgoing) -> Outgoing {
    out.msg = Message::detached(&out.msg);
    out
}

impl Outbound {
    pub fn with_max_inflight_bytes(max_inflight_bytes: usize) -> Self {
        Self {
            max_inflight_bytes,
            ..Self::default()
        }
    }

    /// The window has no room for another QoS 1/2 message: `window` messages, or
    /// `max_inflight_bytes` bytes, are in flight.
    fn window_full(&self, window: usize) -> bool {
        self.inflight.len() >= window
            || (self.max_inflight_bytes > 0
                && !self.inflight.is_empty()
                && self.inflight_bytes >= self.max_inflight_bytes)
    }

    fn remove_inflight(&mut self, pos: usize) {
        // Acknowledgements mostly come in order: the oldest goes without `remove`'s
        // general shifting.
        let f = if pos == 0 {
            self.inflight.pop_front()
        } else {
            self.inflight.remove(pos)
        };
        if let Some(f) = f {
            self.inflight_bytes = self.inflight_bytes.saturating_sub(data_bytes(&f.out));
            if self.inflight.is_empty() {
                self.ids = None;
            } else if let Some(ids) = &mut self.ids {
                ids.remove(f.packet_id);
            }
        }
    }

    /// Appends to the window, keeping the id set (made when the window outgrows a scan).
    fn push_inflight(&mut self, f: Inflight) {
        match &mut self.ids {
            Some(ids) => ids.insert(f.packet_id),
            None if self.inflight.len() >= SCAN_IDS => {
                let mut ids = IdSet::new();
                for g in &self.inflight {
                    ids.insert(g.packet_id);
                }
                ids.insert(f.packet_id);
                self.ids = Some(ids);
            }
            None => {}
        }
        self.inflight.push_back(f);
    }

    fn id_in_use(&self, id: PacketId) -> bool {
        match &self.ids {
            Some(ids) => ids.contains(id),
            None => self.inflight.iter().any(|f| f.packet_id == id),
        }
    }

    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Memory the queue and the window keep alive: the footprints of every message held.
    pub fn held_bytes(&self) -> usize {
        self.queued_bytes
            + self
                .inflight
                .iter()
                .map(|f| message_bytes(&f.out))
                .sum::<usize>()
    }

    /// Messages held: inflight plus queued.
    pub fn stored(&self) -> usize {
        self.inflight.len() + self.queue.len()
    }

    fn allocate_id(&mut self) -> PacketId {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id == 0 {
                self.next_id = 1;
            }
            let id = self.next_id;
            if !self.id_in_use(id) {
                return id;
            }
        }
    }

    /// Sends `out` now if the window allows (QoS 0 always passes), else queues it.
    /// Returns `true` if it was sent.
    pub fn offer(
        &mut self,
        out: Outgoing,
        window: usize,
        transmits: &mut VecDeque<Transmit>,
    ) -> bool {
        let seq = self.take_seq();
        if self.queue.is_empty() && (out.qos == QoS::AtMostOnce || !self.window_full(window)) {
            self.send(seq, out, transmits);
            true
        } else {
            let out = keep(out);
            self.queued_bytes += message_bytes(&out);
            self.queue.push_back((seq, out));
            false
        }
    }

    /// Queues `out` without trying to send it (offline session).
    pub fn enqueue(&mut self, out: Outgoing) {
        let seq = self.take_seq();
        let out = keep(out);
        self.queued_bytes += message_bytes(&out);
        self.queue.push_back((seq, out));
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn send(&mut self, seq: u64, out: Outgoing, transmits: &mut VecDeque<Transmit>) {
        let stage = match out.qos {
            QoS::AtMostOnce => {
                transmits.push_back(Transmit::Publish {
                    out,
                    packet_id: None,
                    dup: false,
                });
                return;
            }
            QoS::AtLeastOnce => Stage::PubAck,
            QoS::ExactlyOnce => Stage::PubRec,
        };
        let packet_id = self.allocate_id();
        // Kept until acknowledged, and its frame may wait in the output: detached first,
        // so both share the compacted copy.
        let out = keep(out);
        self.inflight_bytes += data_bytes(&out);
        transmits.push_back(Transmit::Publish {
            out: out.clone(),
            packet_id: Some(packet_id),
            dup: false,
        });
        self.push_inflight(Inflight {
            seq,
            packet_id,
            stage,
            out,
        });
    }

    /// Moves queued messages into free window slots; drops expired ones (returned count).
    pub fn pump(
        &mut self,
        window: usize,
        now: Instant,
        transmits: &mut VecDeque<Transmit>,
    ) -> usize {
        let mut expired = 0;
        while let Some((_, front)) = self.queue.front() {
            if front.qos != QoS::AtMostOnce && self.window_full(window) {
                break;
            }
            let Some((seq, out)) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes = self.queued_bytes.saturating_sub(message_bytes(&out));
            if out.msg.expiry_left(now) == Some(0) {
                expired += 1;
                continue;
            }
            self.send(seq, out, transmits);
        }
        expired
    }

    /// Re-sends the window after a reconnect: unacknowledged PUBLISH with DUP=1 and PUBREL
    /// for PUBREC'd ones, in their original order [MQTT-4.4.0-1].
    pub fn resend(&self, transmits: &mut VecDeque<Transmit>) {
        for f in &self.inflight {
            match f.stage {
                Stage::PubAck | Stage::PubRec => transmits.push_back(Transmit::Publish {
                    out: f.out.clone(),
                    packet_id: Some(f.packet_id),
                    dup: true,
                }),
                Stage::PubComp => transmits.push_back(pubrel(f.packet_id)),
            }
        }
    }

    /// Handles PUBACK, PUBREC or PUBCOMP from the client.
    pub fn acknowledge(&mut self, ack: &Ack, transmits: &mut VecDeque<Transmit>) -> AckOutcome {
        let Some(pos) = self
            .inflight
            .iter()
            .position(|f| f.packet_id == ack.packet_id)
        else {
            return AckOutcome::Unknown;
        };
        let stage = self.inflight[pos].stage;
        match (ack.kind, stage) {
            (AckKind::PubAck, Stage::PubAck) | (AckKind::PubComp, Stage::PubComp) => {
                self.remove_inflight(pos);
                AckOutcome::Released
            }
            (AckKind::PubRec, Stage::PubRec) => {
                if ack.reason.is_error() {
                    // v5: a PUBREC with an error ends the flow [MQTT-4.3.3-4].
                    self.remove_inflight(pos);
                    return AckOutcome::Released;
                }
                self.inflight[pos].stage = Stage::PubComp;
                transmits.push_back(pubrel(ack.packet_id));
                AckOutcome::Progressed
            }
            (AckKind::PubRec, Stage::PubComp) => {
                // Duplicate PUBREC: answer it again.
                transmits.push_back(pubrel(ack.packet_id));
                AckOutcome::Progressed
            }
            _ => AckOutcome::Unknown,
        }
    }

    /// Forgets an inflight message as if its flow completed (it could not be sent).
    pub fn forget(&mut self, packet_id: PacketId) -> bool {
        match self.inflight.iter().position(|f| f.packet_id == packet_id) {
            Some(pos) => {
                self.remove_inflight(pos);
                true
            }
            None => false,
        }
    }

    /// Takes the QoS 1/2 messages the client has not acknowledged for which `pick` is
    /// true: queued ones, and inflight ones still awaiting PUBACK or PUBREC (after a
    /// PUBREC the client has the message). Inflight first, then queued: oldest first.
    pub fn take_unacked(&mut self, mut pick: impl FnMut(&Outgoing) -> bool) -> Vec<Outgoing> {
        let mut taken = Vec::new();
        let mut i = 0;
        while i < self.inflight.len() {
            let f = &self.inflight[i];
            if f.stage != Stage::PubComp && pick(&f.out) {
                taken.push(f.out.clone());
                self.remove_inflight(i); // frees its packet id too
            } else {
                i += 1;
            }
        }
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for (seq, out) in self.queue.drain(..) {
            if out.qos != QoS::AtMostOnce && pick(&out) {
                taken.push(out);
            } else {
                kept.push_back((seq, out));
            }
        }
        self.queue = kept;
        self.queued_bytes = self.queue.iter().map(|(_, o)| message_bytes(o)).sum();
        taken
    }

    /// Drops QoS 0 messages from the queue (a session going offline without
    /// `queue_qos0_messages`); returns how many.
    pub fn drop_queued_qos0(&mut self) -> usize {
        let before = self.queue.len();
        self.queue.retain(|(_, o)| o.qos != QoS::AtMostOnce);
        self.queued_bytes = self.queue.iter().map(|(_, o)| message_bytes(o)).sum();
        before - self.queue.len()
    }

    // ---- persistence hooks (src/persist) ----

    /// Sequence number given to the last message offered or queued.
    pub fn last_seq(&self) -> u64 {
        self.next_seq.wrapping_sub(1)
    }

    /// The window as persistence records it: messages below the returned sequence number
    /// are complete unless listed in `inflight` as (seq, packet id, stage 0/1/2 =
    /// awaiting PUBACK / PUBREC / PUBCOMP).
    pub fn persist_window(&self, inflight: &mut Vec<(u64, PacketId, u8)>) -> u64 {
        inflight.clear();
        for f in &self.inflight {
            let stage = match f.stage {
                Stage::PubAck => 0,
                Stage::PubRec => 1,
                Stage::PubComp => 2,
            };
            inflight.push((f.seq, f.packet_id, stage));
        }
        self.queue.front().map_or(self.next_seq, |(seq, _)| *seq)
    }

    /// Puts back a restored message: into the window with its packet id and stage
    /// (0/1/2 as in [`Outbound::persist_window`]), or at the end of the queue. Call in
    /// sequence order; later messages get later sequence numbers.
    pub fn restore(&mut self, seq: u64, out: Outgoing, inflight: Option<(PacketId, u8)>) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        let out = keep(out);
        match inflight {
            Some((packet_id, stage)) if out.qos != QoS::AtMostOnce => {
                let stage = match stage {
                    0 => Stage::PubAck,
                    1 => Stage::PubRec,
                    _ => Stage::PubComp,
                };
                self.next_id = self.next_id.max(packet_id);
                self.inflight_bytes += data_bytes(&out);
                self.push_inflight(Inflight {
                    seq,
                    packet_id,
                    stage,
                    out,
                });
            }
            _ => {
                self.queued_bytes += message_bytes(&out);
                self.queue.push_back((seq, out));
            }
        }
    }
}

const fn pubrel(packet_id: PacketId) -> Transmit {
    Transmit::Ack(AckKind::PubRel, packet_id, ReasonCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::codec::Publish;

    fn qos1() -> Outgoing {
        let publish = Publish {
            qos: QoS::AtLeastOnce,
            topic: "t".into(),
            payload: bytes::Bytes::from_static(b"x"),
            ..Publish::default()
        };
        Outgoing {
            msg: Arc::new(Message::standalone(publish, Instant::now(), None)),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: Default::default(),
        }
    }

    fn sent_ids(transmits: &mut VecDeque<Transmit>) -> Vec<PacketId> {
        transmits
            .drain(..)
            .filter_map(|t| match t {
                Transmit::Publish { packet_id, .. } => packet_id,
                _ => None,
            })
            .collect()
    }

    fn puback(packet_id: PacketId) -> Ack {
        Ack {
            kind: AckKind::PubAck,
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Default::default(),
        }
    }

    /// A window far bigger than the scan limit: ids stay unique while the id set is used
    /// (acks out of order, ids wrapping past 65535 and skipping the ones still in
    /// flight), and the set goes away with the last inflight message.
    #[test]
    fn big_window_ids_are_unique_and_wrap_around_the_ones_in_flight() {
        let mut o = Outbound::default();
        let mut tx = VecDeque::new();
        let window = 4000;
        for _ in 0..window {
            assert!(o.offer(qos1(), window, &mut tx));
        }
        let first = sent_ids(&mut tx);
        assert_eq!(first, (1..=4000).collect::<Vec<_>>());
        assert!(o.ids.is_some(), "a big window keeps an id set");
        // Every odd id acknowledged (out of order), the evens stay in flight.
        for id in first.iter().copied().filter(|id| id % 2 == 1).rev() {
            assert_eq!(o.acknowledge(&puback(id), &mut tx), AckOutcome::Released);
        }
        // As if the session had sent 65,000 messages since: the next ids pass 65,535,
        // wrap to 1 and take only the free (odd) ones below 4,000.
        o.next_id = 65_530;
        for _ in 0..window / 2 {
            assert!(o.offer(qos1(), window, &mut tx));
        }
        let second = sent_ids(&mut tx);
        let expected: Vec<PacketId> = (65_531..=65_535)
            .chain((1..4000).step_by(2))
            .take(2000)
            .collect();
        assert_eq!(second, expected, "wrapped, skipping the ids in flight");
        assert_eq!(o.inflight_len(), window);
        for id in first.iter().chain(&second).copied() {
            o.acknowledge(&puback(id), &mut tx);
        }
        assert_eq!(o.inflight_len(), 0);
        assert!(
            o.ids.is_none(),
            "the id set goes with the last inflight message"
        );
    }

    /// A small window never allocates the id set.
    #[test]
    fn small_window_scans() {
        let mut o = Outbound::default();
        let mut tx = VecDeque::new();
        for _ in 0..20 {
            assert!(o.offer(qos1(), 20, &mut tx));
        }
        assert!(!o.offer(qos1(), 20, &mut tx), "window full: queued");
        assert!(o.ids.is_none());
        let ids = sent_ids(&mut tx);
        assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    }
}
