//! The coordinator's SUBSCRIBE and UNSUBSCRIBE paths: the session's subscription set,
//! routing's index, the interest other shards must learn, the SUBACK / UNSUBACK reason
//! codes, and the retained messages sent after a SUBACK (in budgeted batches, continued by
//! [`Broker::run_deferred`]).
//!
//! Shared subscriptions (`$share/GROUP/FILTER`) are parsed and checked here (malformed:
//! 0x8F; No Local: Protocol Error; ACL on the filter without the prefix; no retained
//! messages) and enter routing through `shared.rs`.
//!
//! It never sends a retained message before the SUBACK and never accepts a filter the
//! topic layer rejects. With several shards a SUBACK (and its retained messages) may wait
//! for the other shards to apply the new interest (`cross/interest.rs`); live messages
//! matching the filter are not held back meanwhile [MQTT-3.8.4].

use std::sync::Arc;
use std::time::Instant;

use smallvec::SmallVec;

use crate::codec::{ByteStr, Packet, Publish, QoS, ReasonCode, SubAck, Subscribe, Unsubscribe};
use crate::session::{Delivery, Message, Outgoing, ProtocolError, Subscription};
use crate::topic::{SharedFilter, TopicFilter};

use super::cross::{HeldSubAck, RetainedAfter};
use super::routing::RetainedJob;
use super::Broker;

impl Broker {
    pub(super) fn on_subscribe(&mut self, key: usize, sub: Subscribe, now: Instant) {
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        let v5 = slot.session.version().is_v5();
        if sub
            .filters
            .iter()
            .any(|(f, o)| o.no_local && SharedFilter::is_shared(f.as_str()))
        {
            // [MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error.
            if let Some(conn) = slot.conn {
                let err = ProtocolError::Unexpected("No Local on a shared subscription");
                self.protocol_error(conn, &err, now);
            }
            return;
        }
        let sub_id = sub.properties.subscription_identifiers.first().copied();
        let mut reasons: SmallVec<[ReasonCode; 1]> = SmallVec::new();
        let mut retained_for = RetainedAfter {
            filters: SmallVec::new(),
            sub_id,
        };
        let mut granted: SmallVec<[ByteStr; 1]> = SmallVec::new();
        let mount = super::mount::mount_point(&self.config, slot.listener).map(str::to_owned);
        for (filter, options) in sub.filters {
            let Some(slot) = self.sessions.get_mut(key) else {
                return;
            };
            let failure = if v5 {
                None
            } else {
                Some(ReasonCode::V3_SUBACK_FAILURE)
            };
            let Some(filter) = mount.as_deref().map_or(Some(filter.clone()), |m| {
                super::mount::mounted_filter(m, &filter)
            }) else {
                reasons.push(failure.unwrap_or(ReasonCode::TOPIC_FILTER_INVALID));
                continue;
            };
            if super::trace::on() {
                let granted = super::options::granted_qos(&self.config, slot.listener, options.qos);
                crate::log_debug!("\t{filter} (QoS {})", granted as u8);
            }
            // `$share/GROUP/FILTER` (v5 and, as Mosquitto allows, 3.1.1): a malformed one
            // is refused, not taken as a plain filter [MQTT-4.8.2-1] [MQTT-4.8.2-2].
            let (parsed, shared) = match SharedFilter::try_parse(filter.as_str()) {
                Ok(Some(share)) => (share.filter, true),
                Ok(None) => match TopicFilter::try_from(filter.clone()) {
                    Ok(parsed) => (parsed, false),
                    Err(_) => {
                        reasons.push(failure.unwrap_or(ReasonCode::TOPIC_FILTER_INVALID));
                        continue;
                    }
                },
                Err(_) => {
                    reasons.push(failure.unwrap_or(ReasonCode::TOPIC_FILTER_INVALID));
                    continue;
                }
            };
            // ACLs apply to the filter without `$share/GROUP/` (as Mosquitto).
            // The host's hook sees the filter as sent (after the files allowed it).
            let peer = slot.conn.and_then(|c| self.conns.get(c)).map(|c| c.peer);
            if !slot
                .security
                .as_ref()
                .map_or(true, |s| s.may_subscribe(parsed.as_str()))
                || !self.access.may_subscribe(slot, peer, filter.as_str())
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
            let mut options = options;
            options.qos = super::options::granted_qos(&self.config, slot.listener, options.qos);
            let subscription = Subscription {
                options,
                id: sub_id,
            };
            // [MQTT-3.8.4-3]: an identical filter replaces the subscription.
            let previous = slot.session.subscribe(&filter, subscription);
            self.persist
                .subscribe(&slot.session, &filter, Some(subscription));
            crate::log_subscribe!(
                "{} {} {}",
                slot.session.client_id(),
                options.qos as u8,
                filter
            );
            self.index_subscription(key, &filter, subscription);
            reasons.push(ReasonCode(options.qos as u8));
            if self.cross.is_multi() {
                granted.push(filter.clone());
            }
            // No retained messages on a shared subscription [MQTT-3.8.4].
            let send_retained = !shared
                && (!v5
                    || match options.retain_handling {
                        0 => true,
                        1 => previous.is_none(),
                        _ => false,
                    });
            if send_retained {
                retained_for.filters.push((parsed, options.qos));
            }
        }
        self.stats.subscriptions = self.routing.local_subscriptions();
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

    /// Queues the SUBACK for session `key` now and returns `then` for the caller to
    /// start, or has the cross-shard part hold both until the Interest broadcasts of
    /// `filters` (and the SUBACKs this connection already waits for) are acknowledged by
    /// every other shard.
    fn send_suback(
        &mut self,
        key: usize,
        filters: &[ByteStr],
        suback: SubAck,
        then: RetainedAfter,
    ) -> Option<RetainedAfter> {
        let conn = self
            .sessions
            .get(key)
            .and_then(|s| s.conn)
            .and_then(|c| self.conns.get(c).map(|x| (c, x.uid)));
        let (suback, then) = match conn {
            Some((conn, conn_uid)) => {
                let held = HeldSubAck::new(conn, conn_uid, suback, then);
                let h = self.cross.hold_suback(filters, held)?;
                (h.suback, h.then)
            }
            None => (suback, then),
        };
        let slot = self.sessions.get_mut(key)?;
        slot.session.send(Packet::SubAck(suback));
        Some(then)
    }

    /// Shard `from` applied our Interest broadcasts up to `seq`: send the SUBACKs that
    /// waited for it, then their retained messages.
    pub(super) fn on_interest_ack(
        &mut self,
        from: crate::mailbox::ShardId,
        seq: u64,
        now: Instant,
    ) {
        for h in self.cross.on_interest_ack(from, seq) {
            let Some(c) = self.conns.get(h.conn) else {
                continue;
            };
            let super::connections::ConnState::Active(key) = c.state else {
                continue;
            };
            if c.uid != h.conn_uid {
                continue; // another connection now: the subscriber left
            }
            if let Some(slot) = self.sessions.get_mut(key) {
                slot.session.send(Packet::SubAck(h.suback));
                self.flush_session(key, now);
                for (filter, granted) in h.then.filters {
                    self.send_retained(key, &filter, granted, h.then.sub_id, now);
                }
            }
        }
    }

    /// Retained messages matching `filter`, with RETAIN set [MQTT-3.3.1-8], after SUBACK.
    /// At most [`super::routing::RETAINED_BATCH`] now; the rest continue in [`Broker::run_deferred`] so a
    /// wildcard over a large store cannot stall the shard.
    pub(super) fn send_retained(
        &mut self,
        key: usize,
        filter: &TopicFilter,
        granted: QoS,
        sub_id: Option<u32>,
        now: Instant,
    ) {
        let Some(uid) = self.sessions.uid_of(key) else {
            return;
        };
        let job = RetainedJob::new(key, uid, filter.clone(), granted, sub_id);
        if let Some(job) = self.retained_batch(job, now) {
            self.routing.defer_job(job);
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
        let done = self.routing.retained_batch(&mut job, &mut found);
        let slot = self.sessions.get_mut(job.key)?;
        for m in found {
            let expiry_left = m.expiry_left(now);
            if expiry_left == Some(0) {
                // Expired: no longer sent [MQTT-3.3.2-5] (the store keeps it until the
                // topic is set again).
                continue;
            }
            if !slot
                .security
                .as_mut()
                .map_or(true, |s| s.may_read(&m.topic))
            {
                continue; // ACL: retained messages are read too
            }
            if !super::options::retain_source_may_write(&self.config, &self.security, &m) {
                continue; // check_retain_source: its publisher may no longer write there
            }
            let publish = Publish {
                dup: false,
                qos: m.qos,
                retain: true,
                topic: m.topic.clone(),
                packet_id: (m.qos != QoS::AtMostOnce).then_some(1),
                properties: if let Some(left) = expiry_left {
                    // What is left of its expiry [MQTT-3.3.2-6].
                    let mut p = m.properties.clone();
                    p.message_expiry_interval = Some(left);
                    p
                } else {
                    m.properties.clone()
                },
                payload: m.payload.clone(),
            };
            let out = Outgoing {
                // The store's bytes are compacted already: queues keep it as it is.
                msg: Arc::new(Message::standalone(publish, now, None)),
                qos: super::options::outgoing_qos(
                    m.qos,
                    job.granted,
                    self.config.upgrade_outgoing_qos,
                ),
                retain: true,
                sub_ids: job.sub_id.into_iter().collect(),
            };
            let persisted = self.persist.wants(&slot.session).then(|| out.clone());
            let delivery = slot.session.deliver(out);
            self.persist
                .delivered(job.key, &slot.session, delivery, persisted.as_ref());
            if delivery == Delivery::Dropped {
                self.stats.dropped(crate::metrics::DropReason::QueueFull, 1);
            }
        }
        self.flush_session(job.key, now);
        (!done).then_some(job)
    }

    /// Whether [`Broker::run_deferred`] has work (the runtime then must not sleep).
    pub fn has_deferred_work(&self) -> bool {
        self.routing.has_jobs()
    }

    /// Continues deferred work (retained lookups of earlier SUBSCRIBEs), one batch each.
    /// Returns whether anything progressed (false: every job waits for its subscriber's
    /// output to drain).
    pub fn run_deferred(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        for job in self.routing.take_jobs() {
            let congested = self.is_congested(job.key, job.uid);
            progressed |= !congested;
            if let Some(job) = self.retained_batch(job, now) {
                self.routing.defer_job(job);
            }
        }
        progressed
    }

    pub(super) fn on_unsubscribe(&mut self, key: usize, unsub: Unsubscribe, now: Instant) {
        let mut reasons: SmallVec<[ReasonCode; 1]> = SmallVec::new();
        let mount = self
            .sessions
            .get(key)
            .and_then(|s| super::mount::mount_point(&self.config, s.listener))
            .map(str::to_owned);
        for filter in unsub.filters {
            let filter = match mount.as_deref() {
                Some(m) => super::mount::mounted_filter(m, &filter).unwrap_or(filter),
                None => filter,
            };
            if super::trace::on() {
                crate::log_debug!("\t{filter}");
            }
            let Some(slot) = self.sessions.get_mut(key) else {
                return;
            };
            let existed = slot.session.unsubscribe(&filter).is_some();
            if existed {
                self.persist.subscribe(&slot.session, &filter, None);
            }
            crate::log_unsubscribe!("{} {}", slot.session.client_id(), filter);
            reasons.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
            // A member leaving its group hands its unacknowledged messages over.
            self.unindex_subscription(key, &filter, None, now);
        }
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        slot.session.send(Packet::UnsubAck(SubAck {
            packet_id: unsub.packet_id,
            reasons,
            properties: Default::default(),
        }));
        self.stats.subscriptions = self.routing.local_subscriptions();
        self.flush_session(key, now);
    }
}
