//! SUBSCRIBE and UNSUBSCRIBE: the session's subscription set, the shard's index, the
//! SUBACK / UNSUBACK reason codes and the retained messages sent after a SUBACK.
//!
//! It never sends a retained message before the SUBACK and never accepts a filter the
//! topic layer rejects. With several shards a SUBACK (and its retained messages) may wait
//! for the other shards to apply the new interest (`interest.rs`); live messages matching
//! the filter are not held back meanwhile [MQTT-3.8.4].

use std::sync::Arc;
use std::time::Instant;

use smallvec::SmallVec;

use crate::codec::{Packet, Publish, QoS, ReasonCode, SubAck, Subscribe, Unsubscribe};
use crate::session::{Delivery, Message, Outgoing, Subscription};

use super::interest::RetainedAfter;
use super::Broker;
use crate::retained::RetainedCursor;
use crate::topic::TopicFilter;

/// Retained messages handed to one subscription per batch.
pub(super) const RETAINED_BATCH: usize = 256;

/// A retained lookup in progress for one subscription.
#[derive(Debug)]
pub(super) struct RetainedJob {
    key: usize,
    uid: u64,
    filter: TopicFilter,
    granted: QoS,
    sub_id: Option<u32>,
    cursor: RetainedCursor,
}

impl Broker {
    pub(super) fn on_subscribe(&mut self, key: usize, sub: Subscribe, now: Instant) {
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        let v5 = slot.session.version().is_v5();
        let sub_id = sub.properties.subscription_identifiers.first().copied();
        let mut reasons: SmallVec<[ReasonCode; 1]> = SmallVec::new();
        let mut retained_for = RetainedAfter {
            filters: SmallVec::new(),
            sub_id,
        };
        let mut added: SmallVec<[crate::codec::ByteStr; 1]> = SmallVec::new();
        let mut granted: SmallVec<[crate::codec::ByteStr; 1]> = SmallVec::new();
        for (filter, options) in sub.filters {
            let failure = if v5 {
                None
            } else {
                Some(ReasonCode::V3_SUBACK_FAILURE)
            };
            if filter.starts_with("$share/") {
                reasons.push(failure.unwrap_or(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED));
                continue;
            }
            let Ok(parsed) = TopicFilter::try_from(filter.clone()) else {
                reasons.push(failure.unwrap_or(ReasonCode::TOPIC_FILTER_INVALID));
                continue;
            };
            if !slot
                .security
                .as_ref()
                .map_or(true, |s| s.may_subscribe(filter.as_str()))
            {
                crate::log_limited!(
                    crate::log::Level::Notice,
                    now,
                    "Denied SUBSCRIBE from {} to {filter} (ACL).",
                    slot.session.client_id()
                );
                reasons.push(failure.unwrap_or(ReasonCode::NOT_AUTHORIZED));
                continue;
            }
            let subscription = Subscription {
                options,
                id: sub_id,
            };
            // [MQTT-3.8.4-3]: an identical filter replaces the subscription.
            let previous = slot.session.subscribe(&filter, subscription);
            if self.index.insert(&parsed, key, subscription).is_none() {
                added.push(filter.clone());
            }
            self.persist
                .subscribe(&slot.session, &filter, Some(subscription));
            crate::log_subscribe!(
                "{} {} {}",
                slot.session.client_id(),
                options.qos as u8,
                filter
            );
            reasons.push(ReasonCode(options.qos as u8));
            if self.shards > 1 {
                granted.push(filter.clone());
            }
            let send_retained = !v5
                || match options.retain_handling {
                    0 => true,
                    1 => previous.is_none(),
                    _ => false,
                };
            if send_retained {
                retained_for.filters.push((parsed, options.qos));
            }
        }
        self.stats.subscriptions = self.local_subscriptions();
        for filter in &added {
            self.filter_added(filter);
        }
        let suback = SubAck {
            packet_id: sub.packet_id,
            reasons,
            properties: Default::default(),
        };
        // Held while another shard has not applied the interest in these filters.
        let retained_now = self.send_suback(key, &granted, suback, retained_for);
        self.flush_session(key, now);
        for (filter, granted) in retained_now.map(|r| r.filters).unwrap_or_default() {
            self.send_retained(key, &filter, granted, sub_id, now);
        }
    }

    /// Retained messages matching `filter`, with RETAIN set [MQTT-3.3.1-8], after SUBACK.
    /// At most [`RETAINED_BATCH`] now; the rest continue in [`Broker::run_deferred`] so a
    /// wildcard over a large store cannot stall the shard.
    pub(super) fn send_retained(
        &mut self,
        key: usize,
        filter: &TopicFilter,
        granted: QoS,
        sub_id: Option<u32>,
        now: Instant,
    ) {
        let Some(uid) = self.sessions.get(key).map(|s| s.session.uid()) else {
            return;
        };
        let job = RetainedJob {
            key,
            uid,
            filter: filter.clone(),
            granted,
            sub_id,
            cursor: RetainedCursor::default(),
        };
        if let Some(job) = self.retained_batch(job, now) {
            self.retained_jobs.push_back(job);
        }
    }

    /// Hands one batch of a retained lookup to its session; returns the job if more
    /// remain.
    fn retained_batch(&mut self, mut job: RetainedJob, now: Instant) -> Option<RetainedJob> {
        let slot = self.sessions.get(job.key)?;
        if slot.session.uid() != job.uid {
            return None; // the session ended
        }
        if self.is_congested(job.key, job.uid) {
            return Some(job); // let its output drain first
        }
        let mut found = Vec::new();
        let done = self.retained.matches_budgeted(
            &job.filter,
            &mut job.cursor,
            RETAINED_BATCH,
            &mut found,
        );
        let slot = self.sessions.get_mut(job.key)?;
        for m in found {
            if !slot
                .security
                .as_mut()
                .map_or(true, |s| s.may_read(&m.topic))
            {
                continue; // ACL: retained messages are read too
            }
            let publish = Publish {
                dup: false,
                qos: m.qos,
                retain: true,
                topic: m.topic.clone(),
                packet_id: (m.qos != QoS::AtMostOnce).then_some(1),
                properties: m.properties.clone(),
                payload: m.payload.clone(),
            };
            let out = Outgoing {
                msg: Arc::new(Message::new(publish, now, None)),
                qos: m.qos.min(job.granted),
                retain: true,
                sub_ids: job.sub_id.into_iter().collect(),
            };
            if slot.session.deliver(out) == Delivery::Dropped {
                self.stats.publish_dropped += 1;
            }
        }
        self.flush_session(job.key, now);
        (!done).then_some(job)
    }

    /// Whether [`Broker::run_deferred`] has work (the runtime then must not sleep).
    pub fn has_deferred_work(&self) -> bool {
        !self.retained_jobs.is_empty()
    }

    /// Continues deferred work (retained lookups of earlier SUBSCRIBEs), one batch each.
    /// Returns whether anything progressed (false: every job waits for its subscriber's
    /// output to drain).
    pub fn run_deferred(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        for _ in 0..self.retained_jobs.len() {
            let Some(job) = self.retained_jobs.pop_front() else {
                break;
            };
            let congested = self.is_congested(job.key, job.uid);
            progressed |= !congested;
            if let Some(job) = self.retained_batch(job, now) {
                self.retained_jobs.push_back(job);
            }
        }
        progressed
    }

    pub(super) fn on_unsubscribe(&mut self, key: usize, unsub: Unsubscribe, now: Instant) {
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        let mut reasons: SmallVec<[ReasonCode; 1]> = SmallVec::new();
        let mut removed: SmallVec<[crate::codec::ByteStr; 1]> = SmallVec::new();
        for filter in unsub.filters {
            let existed = slot.session.unsubscribe(&filter).is_some();
            if self.index.remove(filter.as_str(), &key).is_some() {
                removed.push(filter.clone());
            }
            if existed {
                self.persist.subscribe(&slot.session, &filter, None);
            }
            crate::log_unsubscribe!("{} {}", slot.session.client_id(), filter);
            reasons.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        slot.session.send(Packet::UnsubAck(SubAck {
            packet_id: unsub.packet_id,
            reasons,
            properties: Default::default(),
        }));
        self.stats.subscriptions = self.local_subscriptions();
        for filter in &removed {
            self.filter_removed(filter);
        }
        self.flush_session(key, now);
    }
}
