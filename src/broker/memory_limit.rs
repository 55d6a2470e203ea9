//! `memory_limit`: past it, new messages are refused, never accepted and then lost.
//!
//! The limit is split evenly across the shards (each holds `memory_limit / shards`,
//! rounded up) so that no shard consults another on the publish path. What a shard
//! compares with its share is what issue 9's accounting says it keeps alive for messages
//! in transit: the footprints in its session queues and inflight windows plus its
//! connections' output queues ([`Broker::held_bytes`]). That sum walks every session and
//! connection, so it is a gauge refreshed at most every [`REFRESH`] of the loop's clock
//! (only when the option is set), and in between grown by the topic and payload size of
//! every message accepted (a lower bound of what each keeps alive: a fan-out to many
//! queues can overshoot the share by its copies until the next refresh). A refused PUBLISH is counted (`publish_refused_memory`) and logged, at
//! most a few lines a second: v5 gets PUBACK / PUBREC 0x97 (Quota exceeded, Mosquitto's
//! code for a full incoming quota), a 3.1.1 QoS 1/2 publisher is disconnected without an
//! acknowledgement (it resends after reconnecting: nothing acknowledged is lost), QoS 0
//! is dropped. With the option unset this costs one comparison per PUBLISH.

use std::time::{Duration, Instant};

use crate::codec::QoS;
use crate::config::Config;

use super::{Broker, ConnId};

/// How often the held-bytes gauge is recomputed while the option is set.
pub(super) const REFRESH: Duration = Duration::from_millis(10);

/// One shard's share of `memory_limit` and its gauge.
#[derive(Debug, Default)]
pub(super) struct MemoryLimit {
    /// This shard's share in bytes; 0 = no limit.
    share: u64,
    held: u64,
    next_refresh: Option<Instant>,
}

impl MemoryLimit {
    pub(super) fn new(config: &Config, shards: usize) -> Self {
        let shards = u64::try_from(shards.max(1)).unwrap_or(1);
        Self {
            share: config.memory_limit.div_ceil(shards),
            ..Self::default()
        }
    }

    /// This shard's share in bytes (0 = no limit).
    pub(super) fn share(&self) -> u64 {
        self.share
    }

    /// A message of `bytes` (topic and payload) was accepted: the gauge grows by at least
    /// that much until its next refresh, so a burst inside one refresh period is seen.
    pub(super) fn note_accepted(&mut self, bytes: usize) {
        if self.share != 0 {
            self.held = self.held.saturating_add(bytes as u64);
        }
    }
}

impl Broker {
    /// Whether this shard holds its share of `memory_limit` already (false when unset).
    pub(super) fn over_memory_limit(&mut self, now: Instant) -> bool {
        if self.memory.share() == 0 {
            return false;
        }
        if self.memory.next_refresh.map_or(true, |t| now >= t) {
            let (sessions, outputs) = self.held_bytes();
            self.memory.held = sessions + outputs;
            self.memory.next_refresh = Some(now + REFRESH);
        }
        self.memory.held >= self.memory.share
    }

    /// Before the session records a PUBLISH (its QoS 2 id among them): a 3.1.1 QoS 1/2
    /// publisher over the limit is disconnected unacknowledged, so that its resend is
    /// a new message, not a duplicate. Returns whether it was.
    pub(super) fn refuse_unacknowledged(
        &mut self,
        key: usize,
        conn: ConnId,
        qos: QoS,
        now: Instant,
    ) -> bool {
        if qos == QoS::AtMostOnce || self.memory.share == 0 {
            return false;
        }
        let v5 = self
            .sessions
            .get(key)
            .is_some_and(|s| s.session.version().is_v5());
        !v5 && self.over_memory_limit(now) && !self.refuse_for_memory(key, conn, qos, now)
    }

    /// Counts and logs a PUBLISH refused for `memory_limit`. Returns false when the
    /// publisher was disconnected instead of answered (3.1.1 at QoS 1/2).
    pub(super) fn refuse_for_memory(
        &mut self,
        key: usize,
        conn: ConnId,
        qos: QoS,
        now: Instant,
    ) -> bool {
        self.stats.publish_refused_memory += 1;
        let Some(slot) = self.sessions.get(key) else {
            return false;
        };
        let id = slot.session.client_id().clone();
        crate::log_limited!(
            crate::log::Level::Warning,
            now,
            "memory_limit reached ({} of {} bytes on this shard): refusing PUBLISH from {id}.",
            self.memory.held,
            self.memory.share
        );
        if slot.session.version().is_v5() || qos == QoS::AtMostOnce {
            return true;
        }
        // 3.1.1 has no negative acknowledgement: the client keeps the message and sends
        // it again on its next connection.
        crate::log_notice!("Client {id} disconnected: memory_limit reached.");
        self.end_connection(conn, now, true);
        self.close_conn(conn);
        false
    }
}
