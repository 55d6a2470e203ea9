//! Restoring a shard from the persisted [`State`] before its listeners accept: retained
//! messages, and the persistent sessions whose home is this shard with everything they
//! held (subscriptions, inflight and queued messages with their packet ids, inbound QoS 2
//! ids awaiting PUBREL, expiry, delayed will) and the user they belong to, so that their
//! ACL applies while they are offline.
//!
//! It never records what it restores (the state is already on disk) except what changed
//! while the broker was down: sessions that expired, wills that came due, sessions that
//! were connected when it stopped (offline from now).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::{ByteStr, ProtocolVersion, Will};
use crate::persist::{Record, State, StoredUser, EXPIRY_NEVER};
use crate::retained::{RetainSource, RetainedMessage};
use crate::session::{Message, Outgoing, Session, SessionExpiry, Subscription};
use crate::topic::{SharedFilter, TopicFilter};

use super::super::sessions::Slot;
use super::super::timers::Timer;
use super::super::Broker;
use super::options_from_byte;

impl Broker {
    /// Loads the retained messages of `state` into this shard's retained store. A
    /// message's expiry counts again from `now` (records keep the interval, not when the
    /// message came).
    pub fn restore_retained(&mut self, state: &State, now: Instant) {
        for p in state.retained.values() {
            let source = state.retained_sources.get(&p.topic).map(|s| {
                Arc::new(RetainSource {
                    client_id: s.client_id.clone(),
                    username: s.username.clone(),
                    listener: usize::try_from(s.listener).unwrap_or(usize::MAX),
                })
            });
            self.routing.set_retained(RetainedMessage {
                topic: p.topic.clone(),
                payload: p.payload.clone(),
                qos: p.qos,
                properties: p.properties.clone(),
                source,
                expires_at: RetainedMessage::expiry_from(&p.properties, now),
            });
        }
        self.stats.retained = self.routing.retained_len() as u64;
    }

    /// Rebuilds the persistent sessions of `state` for which `owns(client_id)` holds
    /// (with several shards: the sessions whose home is this shard), offline, with their
    /// subscriptions, inflight and queued messages, expiry and delayed will. Sessions
    /// that expired while the broker was down are dropped (their will is published).
    /// Returns how many sessions were restored.
    pub fn restore_sessions(
        &mut self,
        state: &State,
        owns: &dyn Fn(&str) -> bool,
        now: Instant,
    ) -> usize {
        let now_ms = self.persist.unix_ms(now);
        let instant_of = |ms: u64| -> Instant {
            if ms >= now_ms {
                now + Duration::from_millis(ms - now_ms)
            } else {
                now.checked_sub(Duration::from_millis(now_ms - ms))
                    .unwrap_or(now)
            }
        };
        let mut due_wills: Vec<Will> = Vec::new();
        let mut restored = 0;
        for (id, s) in &state.sessions {
            if !owns(id.as_str()) {
                continue;
            }
            let offline_at = s.offline_at.unwrap_or(now_ms);
            let expires_at = (s.expiry != EXPIRY_NEVER)
                .then(|| offline_at.saturating_add(u64::from(s.expiry) * 1000));
            if expires_at.is_some_and(|at| at <= now_ms) {
                crate::log_notice!("Expiring client {id} (expired while the broker was down).");
                if let Some((_, will)) = &s.will {
                    due_wills.push(will.clone());
                }
                self.persist.events.push(Record::SessionGone {
                    client_id: id.clone(),
                });
                continue;
            }
            let version = match s.version {
                3 => ProtocolVersion::V31,
                5 => ProtocolVersion::V5,
                _ => ProtocolVersion::V311,
            };
            let expiry = if s.expiry == EXPIRY_NEVER {
                SessionExpiry::Never
            } else {
                SessionExpiry::After(Duration::from_secs(u64::from(s.expiry)))
            };
            let uid = self.uid();
            let mut session = Session::new(id.clone(), uid, Arc::clone(&self.limits));
            session.restore_meta(version, expiry);
            for (filter, &(options, sub_id)) in &s.subscriptions {
                let valid = match SharedFilter::try_parse(filter.as_str()) {
                    Ok(Some(_)) => true,
                    Ok(None) => TopicFilter::try_from(filter.clone()).is_ok(),
                    Err(_) => false,
                };
                if !valid {
                    continue;
                }
                let sub = Subscription {
                    options: options_from_byte(options),
                    id: (sub_id != 0).then_some(sub_id),
                };
                session.subscribe(filter, sub);
                // Plain filters and shared subscription groups alike.
                self.index_subscription(self.sessions.vacant_key(), filter, sub);
            }
            for (&seq, m) in &s.messages {
                let out = Outgoing {
                    msg: Arc::new(Message::new(
                        m.publish.clone(),
                        instant_of(m.received),
                        None,
                    )),
                    qos: m.qos,
                    retain: m.retain,
                    sub_ids: m.sub_ids.iter().copied().collect(),
                };
                session.restore_message(seq, out, s.inflight.get(&seq).copied());
            }
            for &packet_id in &s.inbound_qos2 {
                session.restore_inbound_qos2(packet_id);
            }
            if let Some(at) = expires_at {
                session.expires_at = Some(instant_of(at));
            }
            if let Some((at, will)) = &s.will {
                if *at <= now_ms {
                    due_wills.push(will.clone());
                    self.persist.events.push(Record::WillDone {
                        client_id: id.clone(),
                    });
                } else {
                    session.pending_will = Some(Box::new((instant_of(*at), will.clone())));
                }
            }
            // Authorised as the user it connected as: messages routed to it while offline
            // are checked against its own ACL, not the anonymous one.
            let (listener, username) = self.restored_user(s.user.as_ref());
            let security = self.security.has_acl().then(|| {
                Box::new(crate::auth::ClientSecurity::new(
                    &self.security,
                    listener,
                    username.as_ref().map(ByteStr::as_str),
                    session.client_id().as_str(),
                ))
            });
            let mut slot = Slot::new(session);
            slot.security = security;
            slot.username = username.map(Box::new);
            slot.listener = listener;
            let key = self.sessions.add(slot);
            let Some(slot) = self.sessions.get(key) else {
                continue;
            };
            if let Some(at) = slot.session.expires_at {
                self.timers.push(at, Timer::SessionExpiry { key, uid });
            }
            if let Some((at, _)) = slot.session.pending_will.as_deref() {
                self.timers.push(*at, Timer::WillDelay { key, uid });
            }
            self.cross.restored(id);
            self.persist.persisted.insert(id.clone());
            if s.offline_at.is_none() {
                // Connected when the broker stopped: offline from now.
                self.persist.events.push(Record::SessionOffline {
                    client_id: id.clone(),
                    at: now_ms,
                    expiry: s.expiry,
                });
            }
            restored += 1;
        }
        self.stats.clients_total = self.sessions.len() as u64;
        self.stats.subscriptions = self.routing.local_subscriptions();
        // Messages between shards that a crash caught in a mailbox: every shard offers
        // them to its own (restored) sessions, so each session gets one copy.
        for m in state.routed.values() {
            let msg = Arc::new(Message::new(
                m.publish.clone(),
                instant_of(m.received),
                None,
            ));
            let sent = super::super::publish::Sent {
                dests: 0,
                source: (self.cross.me(), 0),
            };
            self.fanout_local(&msg, sent, &[], false, now);
        }
        for will in due_wills {
            self.publish_will(will, now);
        }
        restored
    }

    /// The listener and ACL user name of a restored session, derived as on CONNECT: the
    /// certificate identity where the listener uses it as the user name
    /// (`use_identity_as_username`), else the user name. None recorded (a file of an
    /// earlier version): anonymous on the first listener.
    fn restored_user(&self, user: Option<&StoredUser>) -> (usize, Option<ByteStr>) {
        let Some(u) = user else {
            return (0, None);
        };
        let listener = usize::try_from(u.listener).unwrap_or(usize::MAX);
        let name = if self.config.uses_identity_as_username(listener) {
            u.identity.clone()
        } else {
            u.username.clone()
        };
        (listener, name)
    }
}
