//! The coordinator's side of the cross-shard protocols: what this shard does with each
//! [`ShardMsg`] another shard sends (deliver a publish, apply interest, take a retained
//! set, answer a claim, hand a session over or install one, forward for a moved session,
//! keep a report, pause or resume a publisher for flow control), and the local steps of a
//! session move (take it out of its slot, install one that arrived). The protocols' own state and decisions are the cross-shard
//! part's (`cross/`); this applies them to sessions, routing, connections and flow
//! control.
//!
//! It never blocks and never touches a mailbox itself: the runtime drains
//! [`Broker::poll_shard_message`] into the rings and feeds what arrives into
//! [`Broker::on_shard_message`].

use std::time::Instant;

use crate::codec::{ByteStr, ReasonCode};
use crate::mailbox::ShardId;
use crate::session::Subscription;

use super::connections::ConnState;
use super::cross::{Control, Handoff, MovedSession, ShardMsg, ShareTarget, SharedPublish};
use super::publish::Sent;
use super::sessions::Slot;
use super::{Broker, ConnId};

impl Broker {
    /// Next message for another shard (or for this one: loop it back through
    /// `on_shard_message`). Drain after every call into the broker.
    #[must_use]
    pub fn poll_shard_message(&mut self) -> Option<(ShardId, ShardMsg)> {
        self.cross.poll_message()
    }

    /// Hands one message from shard `from` to this shard.
    pub fn on_shard_message(&mut self, from: ShardId, msg: ShardMsg, now: Instant) {
        match msg {
            ShardMsg::Publish { msg, dests, seq } => {
                self.on_remote_publish(from, msg, (dests, seq), &[], false, now);
            }
            ShardMsg::Shared(p) => {
                let SharedPublish {
                    msg,
                    dests,
                    seq,
                    groups,
                    groups_only,
                } = *p;
                self.on_remote_publish(from, msg, (dests, seq), &groups, groups_only, now);
            }
            ShardMsg::Control(c) => self.on_control(from, *c, now),
        }
    }

    /// A publish from shard `from` (sent to `dests` with sequence number `seq`): its
    /// local subscribers (unless `groups_only`), and a member of each group in `groups`.
    fn on_remote_publish(
        &mut self,
        from: ShardId,
        msg: std::sync::Arc<crate::session::Message>,
        (dests, seq): (u64, u64),
        groups: &[ShareTarget],
        groups_only: bool,
        now: Instant,
    ) {
        self.cross.on_publish_taken(from, seq);
        let sent = Sent {
            dests,
            source: (from, seq),
        };
        self.fanout_local(&msg, sent, groups, groups_only, now);
        self.persist.received_remote(from, &msg);
        self.cross.release(from, msg);
    }

    fn on_control(&mut self, from: ShardId, control: Control, now: Instant) {
        match control {
            Control::ShareInterest {
                share,
                members,
                group,
                seq,
            } => {
                if self.cross.accepts_interest_from(from) {
                    self.routing
                        .groups_mut()
                        .set_remote(from, &share, members, group);
                    self.cross.interest_applied(from, seq);
                }
            }
            Control::Interest { seq, snapshot, .. } => {
                if self.cross.accepts_interest_from(from) {
                    if let Some(snapshot) = &snapshot {
                        self.routing.set_remote_interest(snapshot);
                    }
                    self.cross.interest_applied(from, seq);
                }
            }
            Control::InterestAck { seq } => self.on_interest_ack(from, seq, now),
            Control::RetainClock(clock) => self.cross.on_retain_clock(from, clock),
            Control::Retain(m, version) => {
                if self.cross.accept_retained(&m, version) {
                    self.routing.set_retained(*m);
                    self.stats.retained = self.routing.retained_len() as u64;
                }
            }
            Control::Claim {
                client_id,
                conn,
                conn_uid,
                clean_start,
            } => self
                .cross
                .on_claim(from, client_id, conn, conn_uid, clean_start),
            Control::Takeover {
                client_id,
                to,
                conn,
                conn_uid,
                clean_start,
                prev,
            } => {
                if self.cross.is_pending(prev) || self.arriving(&client_id) {
                    // The claim this one supersedes has not completed here yet (the
                    // session may still be on its way to this shard), or its session is
                    // still arriving (see `cross/handoff.rs`): take over after that.
                    let takeover = Control::Takeover {
                        client_id,
                        to,
                        conn,
                        conn_uid,
                        clean_start,
                        prev,
                    };
                    self.cross.defer_takeover(prev, takeover);
                } else {
                    self.on_takeover(client_id, to, conn, conn_uid, clean_start, now);
                }
            }
            Control::Moved {
                client_id,
                conn,
                conn_uid,
                session,
            } => self.on_moved(from, &client_id, conn, conn_uid, session, now),
            Control::Installed {
                client_id,
                uid,
                upto,
                claim,
            } => self.on_installed(&client_id, uid, upto, claim, now),
            Control::Drain {
                client_id,
                uid,
                reply_to,
            } => self
                .cross
                .send(reply_to, Control::DrainAck { client_id, uid }),
            Control::DrainAck { client_id, uid } => {
                let Some(key) = self.sessions.key_of(&client_id) else {
                    return;
                };
                let done = self
                    .sessions
                    .get_mut(key)
                    .filter(|s| s.session.uid() == uid)
                    .and_then(|s| s.forward.as_deref_mut())
                    .and_then(|h| h.drain_ack(Some(from)));
                if let Some((to, claim)) = done {
                    self.finish_stub(key, to, claim, now);
                }
            }
            Control::HandoffDone {
                client_id,
                uid,
                claim,
            } => self.on_handoff_done(&client_id, uid, claim, now),
            Control::Forget { client_id, claim } => self.cross.on_forget(from, &client_id, claim),
            Control::Forward {
                client_id,
                uid,
                out,
            } => {
                let Some(key) = self.sessions.key_of(&client_id) else {
                    return;
                };
                let ok = self
                    .sessions
                    .get(key)
                    .is_some_and(|s| s.session.uid() == uid && !s.is_stub());
                if ok {
                    self.deliver_outgoing(key, out, now);
                }
            }
            Control::Pause {
                conn,
                conn_uid,
                session,
            } => self.flow.on_remote_pause(from, conn, conn_uid, session),
            Control::Resume {
                conn,
                conn_uid,
                session,
            } => {
                if self.flow.on_remote_resume(from, conn, conn_uid, session) {
                    self.conns.wake(conn, conn_uid);
                }
            }
            Control::Release(batch) => self.cross.on_release(batch),
            Control::Report(r) => self.cross.on_report(*r),
        }
    }

    /// We hold (or held) the session of `client_id`; the home shard says `to` takes it.
    fn on_takeover(
        &mut self,
        client_id: ByteStr,
        to: ShardId,
        conn: ConnId,
        conn_uid: u64,
        clean_start: bool,
        now: Instant,
    ) {
        let mut session = None;
        if to != self.cross.me() && self.sessions.key_of(&client_id).is_some() {
            if let Some(old) = self.sessions.live_conn_of(&client_id) {
                crate::log_notice!("Client {client_id} already connected, closing old connection.");
                self.disconnect_with(old, ReasonCode::SESSION_TAKEN_OVER);
                self.end_connection(old, now, true);
            }
            // end_connection may have ended a non-persistent session.
            if let Some(key) = self.sessions.live_key_of(&client_id) {
                if clean_start {
                    self.end_session(key, now); // [MQTT-3.1.2-6]
                } else {
                    session = self.move_out(key, to);
                }
            }
        }
        self.cross.send(
            to,
            Control::Moved {
                client_id,
                conn,
                conn_uid,
                session,
            },
        );
    }

    /// Takes the session out of slot `key`, leaving a forwarding stub with the same
    /// subscriptions in its place.
    fn move_out(&mut self, key: usize, to: ShardId) -> Option<MovedSession> {
        let floor = self.cross.watermarks();
        let moved = self.sessions.move_out(key, to, &self.limits, floor)?;
        let client_id = moved.session.client_id();
        self.persist.moved_out(client_id); // the new shard records it now
        crate::log_notice!(
            "Client {client_id} session moved from shard {} to shard {to}.",
            self.cross.me()
        );
        self.release_paused(key);
        Some(moved)
    }

    /// The answer to our claim: the previous session (resumed) or none.
    fn on_moved(
        &mut self,
        from: ShardId,
        client_id: &ByteStr,
        conn: ConnId,
        conn_uid: u64,
        session: Option<MovedSession>,
        now: Instant,
    ) {
        let moved_uid = session.as_ref().map(|s| s.session.uid());
        let pending = self.cross.take_pending(conn, conn_uid);
        let live = pending.is_some()
            && self
                .conns
                .get(conn)
                .is_some_and(|c| c.uid == conn_uid && c.state == ConnState::AwaitHome);
        match (pending, live) {
            (Some(p), true) => {
                let p = *p;
                self.finish_connect(conn, p.connect, &p.accepted, session, now);
                for packet in p.queued {
                    self.handle_packet(conn, packet, now);
                }
            }
            (p, _) => {
                let clean_start = p.is_some_and(|p| p.connect.clean_start);
                self.abandoned_claim(client_id, conn_uid, clean_start, session, now);
            }
        }
        let me = self.cross.me();
        match moved_uid {
            Some(uid) if from != me => {
                self.cross.send(
                    from,
                    Control::Installed {
                        client_id: client_id.clone(),
                        uid,
                        upto: self.cross.watermarks(),
                        claim: conn_uid,
                    },
                );
                // Behind the interest the install broadcast: every third shard answers
                // the old one once it sends us the session's messages directly.
                for j in (0..self.cross.shards()).filter(|&j| j != me && j != from) {
                    let drain = Control::Drain {
                        client_id: client_id.clone(),
                        uid,
                        reply_to: from,
                    };
                    self.cross.send(j, drain);
                }
                // A takeover of this claim waits for `HandoffDone`.
            }
            _ => {
                // The takeover of this claim, if it arrived while the claim was pending.
                if let Some(takeover) = self.cross.take_deferred(conn_uid) {
                    self.on_control(me, takeover, now);
                }
            }
        }
    }

    /// Whether the session of `client_id` here is still arriving from another shard.
    fn arriving(&self, client_id: &ByteStr) -> bool {
        self.sessions
            .live_key_of(client_id)
            .and_then(|k| self.sessions.get(k))
            .and_then(|s| s.forward.as_deref())
            .is_some_and(Handoff::is_arriving)
    }

    /// A claim whose client left before it completed. It is still the latest claim the
    /// home shard recorded, so it takes effect as if the client had connected and left at
    /// once: an older connection of the client id here is taken over, and the session
    /// stays here offline under this claim (or ends, for a clean start). So the directory
    /// and the session's place agree whatever the order of events.
    fn abandoned_claim(
        &mut self,
        client_id: &ByteStr,
        claim: u64,
        clean_start: bool,
        session: Option<MovedSession>,
        now: Instant,
    ) {
        if let Some(session) = session {
            let key = self.install(session, claim, now);
            self.session_offline(key, None, now);
        } else if let Some(old) = self.sessions.live_conn_of(client_id) {
            crate::log_notice!("Client {client_id} already connected, closing old connection.");
            self.disconnect_with(old, ReasonCode::SESSION_TAKEN_OVER);
            self.end_connection(old, now, true);
        }
        match self.sessions.live_key_of(client_id) {
            Some(key) => {
                if let Some(slot) = self.sessions.get_mut(key) {
                    slot.claim = claim;
                }
                if clean_start {
                    self.end_session(key, now); // [MQTT-3.1.2-6]
                }
            }
            None => self.cross.forget(client_id.clone(), claim),
        }
    }

    /// Puts a session that arrived from another shard into the slab and the index.
    pub(super) fn install(&mut self, moved: MovedSession, claim: u64, now: Instant) -> usize {
        let MovedSession {
            session,
            floor,
            security,
            username,
            listener,
        } = moved;
        let session = *session;
        if let Some(old) = self.sessions.key_of(session.client_id()) {
            // A stub (or stale entry) of the same client: the moved session wins.
            self.end_session(old, now);
        }
        let filters: Vec<(ByteStr, Subscription)> = session
            .subscriptions()
            .map(|(f, s)| (f.clone(), *s))
            .collect();
        let mut slot = Slot::new(session);
        slot.claim = claim;
        // Checked as its user while offline; `finish_connect` sets all three again when
        // its client connects.
        slot.security = security;
        slot.username = username.map(Box::new);
        slot.listener = listener;
        slot.forward = Some(Box::new(Handoff::arrived(floor)));
        let key = self.sessions.add(slot);
        for (filter, sub) in filters {
            self.index_subscription(key, &filter, sub);
        }
        self.stats.clients_total = self.sessions.len() as u64;
        key
    }

    /// On the old shard: the moved session `uid` of `client_id` is installed on the new
    /// shard with watermarks `upto`; forward what the stub held that the new shard could
    /// not deliver, then drain (see `cross/handoff.rs`).
    fn on_installed(
        &mut self,
        client_id: &ByteStr,
        uid: u64,
        upto: Vec<u64>,
        claim: u64,
        now: Instant,
    ) {
        let Some(key) = self.sessions.key_of(client_id) else {
            return;
        };
        let Some(slot) = self.sessions.get_mut(key) else {
            return;
        };
        if slot.session.uid() != uid {
            return;
        }
        let me = self.cross.me();
        let Some(handoff) = slot.forward.as_deref_mut() else {
            return;
        };
        let Some(to) = handoff.stub_to() else {
            return;
        };
        // Every shard but this one and the new one: they may still have messages for
        // the session on their way here.
        let waiting = (0..self.cross.shards())
            .filter(|&j| j != me && j != to)
            .fold(0u64, |m, j| m | (1 << j));
        let Some((to, forward)) = handoff.installed(upto, waiting, claim) else {
            return;
        };
        let done = handoff.drain_ack(None);
        for out in forward {
            self.cross.send(
                to,
                Control::Forward {
                    client_id: client_id.clone(),
                    uid,
                    out,
                },
            );
        }
        if let Some((to, claim)) = done {
            self.finish_stub(key, to, claim, now);
        }
    }

    /// The stub in slot `key` forwarded everything: tell the new shard (behind the
    /// forwards) and drop the stub.
    fn finish_stub(&mut self, key: usize, to: ShardId, claim: u64, now: Instant) {
        let Some(slot) = self.sessions.get(key) else {
            return;
        };
        let done = Control::HandoffDone {
            client_id: slot.session.client_id().clone(),
            uid: slot.session.uid(),
            claim,
        };
        self.cross.send(to, done);
        self.end_session(key, now);
    }

    /// On the new shard: the move of session `uid` (installed under `claim`) is complete;
    /// deliver what arrived meanwhile, then run a takeover that waited for it.
    fn on_handoff_done(&mut self, client_id: &ByteStr, uid: u64, claim: u64, now: Instant) {
        let key = self
            .sessions
            .live_key_of(client_id)
            .filter(|&k| self.sessions.uid_of(k) == Some(uid));
        if let Some(key) = key {
            let held = self
                .sessions
                .get_mut(key)
                .and_then(|s| s.forward.as_deref_mut())
                .map(Handoff::take_held)
                .unwrap_or_default();
            for out in held {
                self.deliver_outgoing(key, out, now);
            }
        }
        if let Some(takeover) = self.cross.take_deferred(claim) {
            self.on_control(self.cross.me(), takeover, now);
        }
    }
}
