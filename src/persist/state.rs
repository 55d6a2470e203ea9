//! The durable state as the records describe it: retained messages and persistent
//! sessions, rebuilt by applying records in order. The store keeps one up to date to write
//! snapshots from; on start it is what the broker restores.
//!
//! Sans-IO and total: applying any record to any state never panics (a record about an
//! unknown session is ignored), and applying the same log twice on top of a snapshot that
//! already holds it is prevented by generations, not relied on here.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::codec::{ByteStr, Publish, QoS, Will};

use super::record::{InflightEntry, Record, EXPIRY_NEVER};

/// A message in a persistent session's outbound queue or inflight window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// Unix milliseconds when the broker received it.
    pub received: u64,
    pub publish: Publish,
}

/// Who a persistent session's client authenticated as (see [`Record::SessionUser`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    /// Index of the listener in the config.
    pub listener: u32,
    pub username: Option<ByteStr>,
    /// The verified TLS client-certificate identity.
    pub identity: Option<ByteStr>,
}

/// A persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub version: u8,
    /// Seconds, [`EXPIRY_NEVER`] = never.
    pub expiry: u32,
    /// Unix milliseconds of the disconnect; `None` while connected.
    pub offline_at: Option<u64>,
    /// Filter -> (options byte, subscription identifier or 0).
    pub subscriptions: BTreeMap<ByteStr, (u8, u32)>,
    /// Messages by sequence number (inflight and queued).
    pub messages: BTreeMap<u64, StoredMessage>,
    /// Sequence number -> (packet id, stage) of inflight messages.
    pub inflight: HashMap<u64, (u16, u8)>,
    /// A will waiting for its delay: (Unix milliseconds when due, will).
    pub will: Option<(u64, Will)>,
    /// Inbound QoS 2 packet ids PUBREC'd and not yet released by PUBREL.
    pub inbound_qos2: BTreeSet<u16>,
    /// Who it belongs to; `None`: anonymous (or recorded by a version without it).
    pub user: Option<StoredUser>,
}

impl StoredSession {
    fn new(version: u8, expiry: u32) -> Self {
        Self {
            version,
            expiry,
            offline_at: None,
            subscriptions: BTreeMap::new(),
            messages: BTreeMap::new(),
            inflight: HashMap::new(),
            will: None,
            inbound_qos2: BTreeSet::new(),
            user: None,
        }
    }

    /// Unix milliseconds at which the session expires, `None` for never (or connected).
    pub fn expires_at(&self) -> Option<u64> {
        if self.expiry == EXPIRY_NEVER {
            return None;
        }
        self.offline_at
            .map(|at| at.saturating_add(u64::from(self.expiry) * 1000))
    }
}

/// The publisher of a retained message (see [`Record::RetainSource`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainSource {
    pub client_id: ByteStr,
    pub username: Option<ByteStr>,
    /// Index of the listener in the config.
    pub listener: u32,
}

/// A QoS 1/2 message one shard sent to others, not yet delivered by all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedMessage {
    /// Unix milliseconds when the broker received it.
    pub received: u64,
    pub publish: Publish,
    /// (destination shard, ring sequence number) still to be delivered.
    pub pending: Vec<(u8, u64)>,
}

/// Everything persistence keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Topic -> retained PUBLISH (QoS and properties as published).
    pub retained: BTreeMap<ByteStr, Publish>,
    /// Topic -> who published the retained message there, when a client did
    /// (`check_retain_source`).
    pub retained_sources: BTreeMap<ByteStr, RetainSource>,
    /// A [`Record::RetainSource`] waiting for the [`Record::Retain`] it precedes (written
    /// first, so that a torn tail loses the message with its source, never the source
    /// alone).
    pending_source: Option<(ByteStr, RetainSource)>,
    pub sessions: BTreeMap<ByteStr, StoredSession>,
    /// (run, sending shard, n) -> message in flight between shards.
    pub routed: BTreeMap<(u64, u8, u64), RoutedMessage>,
    /// (run, from, to, ring seq) -> n, to find `routed` entries by delivery watermark.
    ring: BTreeMap<(u64, u8, u8, u64), u64>,
}

impl State {
    pub fn is_empty(&self) -> bool {
        self.retained.is_empty() && self.sessions.is_empty() && self.routed.is_empty()
    }

    /// Applies one record.
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::Retain { publish } => {
                self.retained_sources.remove(&publish.topic);
                let source = self
                    .pending_source
                    .take()
                    .filter(|(topic, _)| *topic == publish.topic);
                if publish.payload.is_empty() {
                    self.retained.remove(&publish.topic);
                } else {
                    if let Some((topic, source)) = source {
                        self.retained_sources.insert(topic, source);
                    }
                    self.retained.insert(publish.topic.clone(), publish);
                }
            }
            Record::RetainSource {
                topic,
                client_id,
                username,
                listener,
            } => {
                let source = RetainSource {
                    client_id,
                    username,
                    listener,
                };
                self.pending_source = Some((topic, source));
            }
            Record::SessionOpen {
                client_id,
                version,
                expiry,
            } => {
                let s = self
                    .sessions
                    .entry(client_id)
                    .or_insert_with(|| StoredSession::new(version, expiry));
                s.version = version;
                s.expiry = expiry;
                s.offline_at = None;
                s.will = None; // [MQTT-3.1.3-9]: reconnecting cancels a delayed will.
                s.user = None; // a new connection: SessionUser follows if it has one
            }
            Record::SessionOffline {
                client_id,
                at,
                expiry,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.offline_at = Some(at);
                    s.expiry = expiry;
                }
            }
            Record::SessionGone { client_id } => {
                self.sessions.remove(&client_id);
            }
            Record::Subscribe {
                client_id,
                filter,
                options,
                id,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.subscriptions.insert(filter, (options, id));
                }
            }
            Record::Unsubscribe { client_id, filter } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.subscriptions.remove(&filter);
                }
            }
            Record::Message {
                client_id,
                seq,
                qos,
                retain,
                sub_ids,
                received,
                publish,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.messages.insert(
                        seq,
                        StoredMessage {
                            qos,
                            retain,
                            sub_ids,
                            received,
                            publish,
                        },
                    );
                }
            }
            Record::Window {
                client_id,
                done_below,
                inflight,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.inflight.clear();
                    for e in inflight {
                        s.inflight.insert(e.seq, (e.packet_id, e.stage));
                    }
                    // Only the messages below `done_below` are visited (amortised by
                    // the messages completed), not the whole queue.
                    let done: Vec<u64> = s
                        .messages
                        .range(..done_below)
                        .map(|(seq, _)| *seq)
                        .filter(|seq| !s.inflight.contains_key(seq))
                        .collect();
                    for seq in done {
                        s.messages.remove(&seq);
                    }
                    s.inflight.retain(|seq, _| s.messages.contains_key(seq));
                }
            }
            Record::Will {
                client_id,
                at,
                will,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.will = Some((at, will));
                }
            }
            Record::WillDone { client_id } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.will = None;
                }
            }
            Record::Routed {
                boot,
                from,
                n,
                seqs,
                received,
                publish,
            } => {
                for &(to, seq) in &seqs {
                    self.ring.insert((boot, from, to, seq), n);
                }
                self.routed.insert(
                    (boot, from, n),
                    RoutedMessage {
                        received,
                        publish,
                        pending: seqs,
                    },
                );
            }
            Record::Delivered {
                boot,
                from,
                to,
                upto,
            } => {
                let done: Vec<((u64, u8, u8, u64), u64)> = self
                    .ring
                    .range((boot, from, to, 0)..=(boot, from, to, upto))
                    .map(|(k, n)| (*k, *n))
                    .collect();
                for (key, n) in done {
                    self.ring.remove(&key);
                    if let Some(m) = self.routed.get_mut(&(boot, from, n)) {
                        m.pending.retain(|&(t, seq)| (t, seq) != (to, key.3));
                        if m.pending.is_empty() {
                            self.routed.remove(&(boot, from, n));
                        }
                    }
                }
            }
            Record::RoutedClear { keep_boot } => {
                self.routed.retain(|k, _| k.0 == keep_boot);
                self.ring.retain(|k, _| k.0 == keep_boot);
            }
            Record::InboundQos2 {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.inbound_qos2.insert(packet_id);
                }
            }
            Record::InboundQos2Released {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.inbound_qos2.remove(&packet_id);
                }
            }
            Record::SessionUser {
                client_id,
                listener,
                username,
                identity,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.user = Some(StoredUser {
                        listener,
                        username,
                        identity,
                    });
                }
            }
            Record::End => {}
        }
    }

    /// The records that rebuild this state from empty (a snapshot's content, without
    /// the final [`Record::End`]).
    pub fn to_records(&self, mut emit: impl FnMut(Record)) {
        for (&(boot, from, n), m) in &self.routed {
            emit(Record::Routed {
                boot,
                from,
                n,
                seqs: m.pending.clone(),
                received: m.received,
                publish: m.publish.clone(),
            });
        }
        for publish in self.retained.values() {
            if let Some(s) = self.retained_sources.get(&publish.topic) {
                emit(Record::RetainSource {
                    topic: publish.topic.clone(),
                    client_id: s.client_id.clone(),
                    username: s.username.clone(),
                    listener: s.listener,
                });
            }
            emit(Record::Retain {
                publish: publish.clone(),
            });
        }
        for (id, s) in &self.sessions {
            emit(Record::SessionOpen {
                client_id: id.clone(),
                version: s.version,
                expiry: s.expiry,
            });
            if let Some(u) = &s.user {
                emit(Record::SessionUser {
                    client_id: id.clone(),
                    listener: u.listener,
                    username: u.username.clone(),
                    identity: u.identity.clone(),
                });
            }
            if let Some(at) = s.offline_at {
                emit(Record::SessionOffline {
                    client_id: id.clone(),
                    at,
                    expiry: s.expiry,
                });
            }
            for (filter, &(options, sub_id)) in &s.subscriptions {
                emit(Record::Subscribe {
                    client_id: id.clone(),
                    filter: filter.clone(),
                    options,
                    id: sub_id,
                });
            }
            for (&seq, m) in &s.messages {
                emit(Record::Message {
                    client_id: id.clone(),
                    seq,
                    qos: m.qos,
                    retain: m.retain,
                    sub_ids: m.sub_ids.clone(),
                    received: m.received,
                    publish: m.publish.clone(),
                });
            }
            if !s.inflight.is_empty() {
                let mut inflight: Vec<InflightEntry> = s
                    .inflight
                    .iter()
                    .map(|(&seq, &(packet_id, stage))| InflightEntry {
                        seq,
                        packet_id,
                        stage,
                    })
                    .collect();
                inflight.sort_unstable_by_key(|e| e.seq);
                // done_below 0: nothing is complete, only the inflight marks are set.
                emit(Record::Window {
                    client_id: id.clone(),
                    done_below: 0,
                    inflight,
                });
            }
            if let Some((at, will)) = &s.will {
                emit(Record::Will {
                    client_id: id.clone(),
                    at: *at,
                    will: will.clone(),
                });
            }
            for &packet_id in &s.inbound_qos2 {
                emit(Record::InboundQos2 {
                    client_id: id.clone(),
                    packet_id,
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
