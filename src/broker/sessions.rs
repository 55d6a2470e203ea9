//! The sessions part of a shard's broker: the slab of [`Slot`]s (a session plus what the
//! broker keeps about it: its connection, ACL, and handoff state while it moves between
//! shards), the client-id map, and the session-local decisions of its life: what happens
//! when it goes offline (will now or later, expiry), when its expiry or will delay comes
//! due, and taking a session out of its slot to move it to another shard.
//!
//! It never routes, sends or schedules anything itself: those decisions come back to the
//! coordinator as values ([`Offline`], a will to publish, a [`MovedSession`]), which also
//! keeps the index, flow control and the other shards in step. It never touches a
//! connection or a socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::auth::ClientSecurity;
use crate::codec::{ByteStr, Will};
use crate::mailbox::ShardId;
use crate::session::{Limits, Session, SessionExpiry};

use super::cross::{Handoff, MovedSession};
use super::ConnId;

mod client_ids;

use client_ids::ClientIds;

/// A session plus the broker's bookkeeping about it.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) session: Session,
    pub(super) conn: Option<ConnId>,
    /// Set while a session moves between shards: on the old shard the slot is a stub
    /// that forwards to the new one; on the new shard it filters duplicates. See
    /// `cross/handoff.rs`.
    pub(super) forward: Option<Box<Handoff>>,
    /// Its ACL (set on every CONNECT); `None` while no ACL is configured, which allows
    /// everything and costs an idle connection no allocation.
    pub(super) security: Option<Box<ClientSecurity>>,
    /// The user name it connected with and the listener it connected on, to derive its
    /// ACL when a reload adds one, also while it is offline.
    /// Boxed: most connections have none (8 bytes in every slot, not 32).
    pub(super) username: Option<Box<ByteStr>>,
    pub(super) listener: usize,
    /// The claim (uid of the claiming connection; 0 for a session restored from disk)
    /// that made this shard the session's owner. Its home shard forgets the session
    /// only while this is still the latest claim it recorded.
    pub(super) claim: u64,
}

impl Slot {
    /// A session without connection, ACL or handoff state.
    pub(super) fn new(session: Session) -> Self {
        Self {
            session,
            conn: None,
            forward: None,
            security: None,
            username: None,
            listener: 0,
            claim: 0,
        }
    }

    /// The shard this stub forwards to (`None`: a real session).
    pub(super) fn stub_to(&self) -> Option<ShardId> {
        self.forward.as_deref().and_then(Handoff::stub_to)
    }

    pub(super) fn is_stub(&self) -> bool {
        self.stub_to().is_some()
    }
}

/// What to do now that a session lost its connection (from [`Sessions::offline`]), in
/// this order: publish `will_now`, arm the timers, end the session if `end`.
#[derive(Debug)]
pub(super) struct Offline {
    pub(super) uid: u64,
    pub(super) will_now: Option<Will>,
    /// The will waits for its v5 Will Delay Interval until then.
    pub(super) will_at: Option<Instant>,
    /// The session expires then.
    pub(super) expires_at: Option<Instant>,
    /// Session expiry zero: it ends now.
    pub(super) end: bool,
}

/// The sessions of one shard.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    slab: Slab<Slot>,
    /// 8 bytes a bucket: a client id is read from its slot (`client_ids.rs`).
    client_ids: ClientIds,
}

/// The client id of slab key `key`'s session (for [`ClientIds`]).
fn id_of<'a>(slab: &'a Slab<Slot>) -> impl Fn(usize) -> Option<&'a ByteStr> {
    |key| slab.get(key).map(|s| s.session.client_id())
}

impl Sessions {
    pub(super) fn get(&self, key: usize) -> Option<&Slot> {
        self.slab.get(key)
    }

    pub(super) fn get_mut(&mut self, key: usize) -> Option<&mut Slot> {
        self.slab.get_mut(key)
    }

    /// Stores `slot` and maps its client id to it; returns its key.
    pub(super) fn add(&mut self, slot: Slot) -> usize {
        let key = self.slab.insert(slot);
        let id = self.slab[key].session.client_id();
        self.client_ids.insert(id, key, id_of(&self.slab));
        key
    }

    /// Takes slot `key` out. The flag says whether the client id pointed at it (and was
    /// freed).
    pub(super) fn remove(&mut self, key: usize) -> Option<(Slot, bool)> {
        let slot = self.slab.try_remove(key)?;
        let owned = self.client_ids.remove(slot.session.client_id(), key);
        Some((slot, owned))
    }

    /// The slot of `client_id` (a session or a stub).
    pub(super) fn key_of(&self, client_id: &ByteStr) -> Option<usize> {
        self.client_ids.get(client_id, id_of(&self.slab))
    }

    /// The slot of `client_id` if it holds a real session (not a stub).
    pub(super) fn live_key_of(&self, client_id: &ByteStr) -> Option<usize> {
        self.key_of(client_id)
            .filter(|&k| self.slab.get(k).is_some_and(|s| !s.is_stub()))
    }

    /// The connection of `client_id`'s session (not a stub's), to take over.
    pub(super) fn live_conn_of(&self, client_id: &ByteStr) -> Option<ConnId> {
        self.live_key_of(client_id)
            .and_then(|k| self.slab.get(k))
            .and_then(|s| s.conn)
    }

    /// The uid of the session in slot `key`.
    pub(super) fn uid_of(&self, key: usize) -> Option<u64> {
        self.slab.get(key).map(|s| s.session.uid())
    }

    /// The key the next [`Sessions::add`] will use.
    pub(super) fn vacant_key(&self) -> usize {
        self.slab.vacant_key()
    }

    /// Slots, stubs included.
    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    #[cfg(test)]
    pub(super) fn has_client_ids(&self) -> bool {
        !self.client_ids.is_empty()
    }

    /// Every slot (tests, and the HTTP console's rows once a second).
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.slab.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Slot)> {
        self.slab.iter_mut()
    }

    /// Shared (`$share/`) subscriptions of the sessions that live here, for `$SYS`.
    pub(super) fn shared_subscriptions(&self) -> u64 {
        self.slab
            .iter()
            .filter(|(_, s)| !s.is_stub())
            .flat_map(|(_, s)| s.session.subscriptions())
            .filter(|(filter, _)| filter.starts_with("$share/"))
            .count() as u64
    }

    /// Sessions that live here (stubs excluded), for `$SYS`.
    pub(super) fn clients_total(&self) -> u64 {
        self.slab.iter().filter(|(_, s)| !s.is_stub()).count() as u64
    }

    /// Messages held by every session (inflight + queued), for `$SYS`.
    pub(super) fn stored(&self) -> u64 {
        self.slab
            .iter()
            .map(|(_, s)| s.session.stored() as u64)
            .sum()
    }

    /// Memory every session's queue and inflight window keep alive (message footprints),
    /// for `$SYS`.
    pub(super) fn held_bytes(&self) -> u64 {
        self.slab
            .iter()
            .map(|(_, s)| s.session.held_bytes() as u64)
            .sum()
    }

    /// Session `key` just lost its connection, leaving `will` to publish: decides when
    /// the will goes and when the session ends (recording both in the session).
    pub(super) fn offline(
        &mut self,
        key: usize,
        will: Option<Will>,
        now: Instant,
    ) -> Option<Offline> {
        let slot = self.slab.get_mut(key)?;
        let expiry = slot.session.expiry();
        let mut off = Offline {
            uid: slot.session.uid(),
            will_now: None,
            will_at: None,
            expires_at: None,
            end: false,
        };
        if let Some(will) = will {
            let delay = if slot.session.version().is_v5() {
                will.properties.will_delay_interval.unwrap_or(0)
            } else {
                0
            };
            if delay == 0 || expiry.ends_at_disconnect() {
                off.will_now = Some(will);
            } else {
                let at = now + Duration::from_secs(u64::from(delay));
                slot.session.pending_will = Some(Box::new((at, will)));
                off.will_at = Some(at);
            }
        }
        match expiry {
            SessionExpiry::After(d) if d.is_zero() => off.end = true,
            SessionExpiry::After(d) => {
                let at = now + d;
                slot.session.expires_at = Some(at);
                off.expires_at = Some(at);
            }
            SessionExpiry::Never => {}
        }
        Some(off)
    }

    /// The expiry timer of session `key` (uid `uid`) fired. `Some` when it expires now,
    /// with its pending will (sent at session end if that comes first [MQTT-3.1.3-9]).
    pub(super) fn on_expiry_timer(
        &mut self,
        key: usize,
        uid: u64,
        now: Instant,
    ) -> Option<Option<Will>> {
        let slot = self.slab.get_mut(key)?;
        if slot.session.uid() != uid || slot.conn.is_some() {
            return None;
        }
        if !slot.session.expires_at.is_some_and(|t| t <= now) {
            return None;
        }
        crate::log_notice!("Expiring client {}.", slot.session.client_id());
        Some(slot.session.pending_will.take().map(|pending| pending.1))
    }

    /// Whether the delayed will of offline session `key` (uid `uid`) is due at `now`.
    pub(super) fn will_due(&self, key: usize, uid: u64, now: Instant) -> bool {
        self.slab.get(key).is_some_and(|slot| {
            slot.session.uid() == uid
                && slot.conn.is_none()
                && slot
                    .session
                    .pending_will
                    .as_deref()
                    .is_some_and(|(t, _)| *t <= now)
        })
    }

    /// Takes the due will of session `key` (see [`Sessions::will_due`]).
    pub(super) fn take_will(&mut self, key: usize) -> Option<Will> {
        let slot = self.slab.get_mut(key)?;
        slot.session.pending_will.take().map(|pending| pending.1)
    }

    /// Takes the session out of slot `key` to move it to shard `to`, leaving a stub with
    /// the same subscriptions (so this shard's index and interest stay as they are until
    /// the move completes). `floor`: this shard's watermarks.
    pub(super) fn move_out(
        &mut self,
        key: usize,
        to: ShardId,
        limits: &Arc<Limits>,
        floor: Vec<u64>,
    ) -> Option<MovedSession> {
        let slot = self.slab.get_mut(key)?;
        let mut stub = Session::new(
            slot.session.client_id().clone(),
            slot.session.uid(),
            Arc::clone(limits),
        );
        for (f, s) in slot.session.subscriptions() {
            stub.subscribe(f, *s);
        }
        let session = std::mem::replace(&mut slot.session, stub);
        slot.forward = Some(Box::new(Handoff::Stub {
            to,
            held: Vec::new(),
            acked: 0,
        }));
        // Who the session belongs to goes with it: the new shard checks its ACL from the
        // first message (the stub forwards unchecked; the receiver checks).
        Some(MovedSession {
            session: Box::new(session),
            floor,
            security: slot.security.take(),
            username: slot.username.as_deref().cloned(),
            listener: slot.listener,
        })
    }
}

#[cfg(test)]
mod sizes {
    use std::mem::size_of;

    use super::super::connections::Conn;
    use super::super::timers::Timer;
    use super::Slot;
    use crate::session::Session;

    /// Every connected client costs one slot, one connection entry and one timer entry,
    /// whether or not it ever sends a message, and 19,000 idle connections measured
    /// 1,112 bytes of broker RSS each before these were packed, 744 after a first round
    /// (issue 14; the goal is 600, perf/results/2026-12-03-conn-memory-round3.md). What
    /// an idle client does not use lives behind boxes created on first use: its
    /// subscriptions, outbound window and queue, inbound QoS 2 ids (`Session`'s
    /// traffic), will, auth method and topic aliases (`Link`'s extras), a delayed will,
    /// a user name, and its connection's output queue (from a per-shard pool, only
    /// while output is pending). A new field that makes a type bigger must be worth it
    /// for every idle connection: update the figure here with a comment, or box the
    /// field.
    #[test]
    fn per_connection_types_stay_small() {
        assert!(
            size_of::<Session>() <= 184,
            "Session {}",
            size_of::<Session>()
        );
        assert!(size_of::<Slot>() <= 240, "Slot {}", size_of::<Slot>());
        // slab::Slab<Slot> stores an enum of a slot or a vacancy: no bigger than a slot.
        assert!(size_of::<slab::Slab<Slot>>() <= 40);
        // The connection table holds `Option<Conn>`: 184 bytes while the output queue
        // was inline, 104 with it boxed only while output is pending.
        assert!(
            size_of::<Option<Conn>>() <= 104,
            "Conn {}",
            size_of::<Option<Conn>>()
        );
        // A timer entry is packed to 24 bytes in `Timers`; the enum itself stays small.
        assert!(size_of::<Timer>() <= 24, "Timer {}", size_of::<Timer>());
    }
}
