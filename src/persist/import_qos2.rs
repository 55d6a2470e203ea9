//! The incoming QoS 2 messages of a Mosquitto file: a client sent PUBLISH, Mosquitto
//! answered PUBREC and keeps the message until the client's PUBREL, when it delivers it.
//! shardmq delivers a QoS 2 message when it receives it and remembers only the packet id
//! until PUBREL (`Record::InboundQos2`). So each such message is delivered by the import
//! (queued for every imported session whose subscriptions match it, as the broker's
//! fan-out would: one copy per session at its highest granted QoS, No Local, Retain As
//! Published, subscription identifiers; retained if it was published retained), and its
//! packet id goes into its publisher's session: the client's PUBREL then completes it with
//! PUBCOMP, and a DUP resend of the PUBLISH is not delivered again [MQTT-4.3.3-10].
//!
//! Sessions are all offline at import, so, as for an offline session in Mosquitto (with
//! the default `queue_qos0_messages false`), a subscription granted QoS 0 gets no copy;
//! shared subscriptions (`$share/...`) get none either (not carried over by shardmq yet).
//! Sans-IO: records in, records out.

use std::collections::BTreeMap;

use super::{session_of, Session, Summary};
use crate::codec::{ByteStr, Publish, QoS};
use crate::persist::record::Record;

/// One subscription of the file, kept for matching.
pub(super) struct Sub {
    pub(super) client: ByteStr,
    pub(super) filter: ByteStr,
    pub(super) qos: u8,
    /// No Local (bit 2) and Retain As Published (bit 3).
    pub(super) options: u8,
    pub(super) id: Option<u32>,
}

/// An incoming QoS 2 message awaiting its client's PUBREL.
pub(super) struct Held<'a> {
    pub(super) publisher: ByteStr,
    pub(super) packet_id: u16,
    /// `None` when the stored message has expired.
    pub(super) publish: Option<&'a Publish>,
}

/// What [`release`] writes into.
pub(super) struct Out<'a> {
    pub(super) sessions: &'a mut BTreeMap<ByteStr, Session>,
    pub(super) expired: &'a [ByteStr],
    /// The file's records so far (retained messages): a retained held message goes last.
    pub(super) records: &'a mut Vec<Record>,
    pub(super) summary: &'a mut Summary,
}

/// Delivers each held message to the matching sessions and leaves its packet id with its
/// publisher (see the module documentation). `now_ms` is the messages' receive time.
pub(super) fn release(held: Vec<Held<'_>>, subs: &[Sub], now_ms: u64, out: &mut Out<'_>) {
    for h in held {
        let Some(publisher) = session_of(out.sessions, out.expired, h.publisher.clone()) else {
            // Its session expired: Mosquitto dropped the message with it.
            out.summary.incoming_qos2_lost += 1;
            continue;
        };
        publisher.records.push(Record::InboundQos2 {
            client_id: h.publisher.clone(),
            packet_id: h.packet_id,
        });
        out.summary.incoming_qos2 += 1;
        let Some(publish) = h.publish else {
            continue; // expired: nothing to deliver (counted with the expired messages)
        };
        if publish.retain {
            out.records.push(Record::Retain {
                publish: publish.clone(),
            });
        }
        for (client, target) in targets(subs, publish, &h.publisher) {
            let Some(session) = session_of(out.sessions, out.expired, client.clone()) else {
                continue;
            };
            session.seq += 1;
            session.records.push(Record::Message {
                client_id: client,
                seq: session.seq,
                qos: target.qos,
                retain: target.retain,
                sub_ids: target.sub_ids,
                received: now_ms,
                publish: publish.clone(),
            });
            out.summary.queued += 1;
        }
    }
}

struct Target {
    qos: QoS,
    retain: bool,
    sub_ids: Vec<u32>,
}

/// One delivery per subscribed session, merging its matching subscriptions as the
/// broker's fan-out does [MQTT-3.3.5-1] [MQTT-3.8.3-3] [MQTT-3.3.1-12].
fn targets(subs: &[Sub], publish: &Publish, publisher: &ByteStr) -> BTreeMap<ByteStr, Target> {
    let mut out: BTreeMap<ByteStr, Target> = BTreeMap::new();
    for s in subs {
        let no_local = s.options & 0b0100 != 0;
        if s.filter.starts_with("$share/")
            || (no_local && s.client == *publisher)
            || !crate::topic::matches(&s.filter, &publish.topic)
        {
            continue;
        }
        let granted = QoS::from_u8(s.qos).unwrap_or(QoS::AtMostOnce);
        let t = out.entry(s.client.clone()).or_insert(Target {
            qos: QoS::AtMostOnce,
            retain: false,
            sub_ids: Vec::new(),
        });
        t.qos = t.qos.max(granted.min(publish.qos));
        t.retain |= s.options & 0b1000 != 0 && publish.retain;
        t.sub_ids.extend(s.id);
    }
    out.retain(|_, t| t.qos != QoS::AtMostOnce); // offline: QoS 0 is not queued
    out
}
