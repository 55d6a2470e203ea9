//! Deferred acknowledgements of ingested messages: an [`AckToken`] a handler takes with
//! [`super::ingest::Ingested::defer_ack`] (and hands to another thread, e.g. through a
//! channel to an async task) holds back the device's PUBACK/PUBREC until it is acked;
//! [`Awaiting`] keeps, per connection, the acknowledgements that wait, so that they go
//! out in the order the messages came in [MQTT-4.6.0-2] while the device is read on.
//! A token dropped without `ack` closes the device's connection: the message was never
//! acknowledged, so the device sends it again.
//!
//! It never blocks: a token's ack is a message to the shard (through the sink the runtime
//! supplies) and never waits for it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::codec::{PacketId, QoS, ReasonCode};

use super::ConnId;

/// Where a token's outcome goes: the runtime turns it into a command to the shard.
#[derive(Clone)]
pub struct AckSink(Arc<dyn Fn(TokenOutcome) + Send + Sync>);

impl AckSink {
    pub fn new(f: impl Fn(TokenOutcome) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for AckSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckSink")
    }
}

/// A token's outcome, for the shard that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenOutcome {
    pub(crate) conn: ConnId,
    pub(crate) uid: u64,
    pub(crate) seq: u64,
    /// Acked (true) or dropped without an ack (false).
    pub(crate) acked: bool,
}

/// The host's promise to acknowledge one ingested message: the device gets its
/// PUBACK/PUBREC once every token of that message is [acked](AckToken::ack) (and those
/// of the messages before it). Dropping a token without acking it closes the device's
/// connection (the device then sends the message again). `Send`: ack it on any thread.
#[must_use = "dropping a token without ack() closes the device's connection"]
pub struct AckToken {
    target: Option<(AckSink, TokenOutcome)>,
}

impl std::fmt::Debug for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckToken")
            .field("pending", &self.target.is_some())
            .finish()
    }
}

impl AckToken {
    pub(super) fn new(sink: AckSink, conn: ConnId, uid: u64, seq: u64) -> Self {
        let outcome = TokenOutcome {
            conn,
            uid,
            seq,
            acked: true,
        };
        Self {
            target: Some((sink, outcome)),
        }
    }

    /// A token that acknowledges nothing (no runtime to tell: sans-IO tests).
    pub(super) fn detached() -> Self {
        Self { target: None }
    }

    /// The message is safe with the host: let the device have its acknowledgement.
    pub fn ack(mut self) {
        if let Some((sink, outcome)) = self.target.take() {
            (sink.0)(outcome);
        }
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if let Some((sink, outcome)) = self.target.take() {
            (sink.0)(TokenOutcome {
                acked: false,
                ..outcome
            });
        }
    }
}

/// An acknowledgement to send once its message's tokens are acked.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingAck {
    pub(super) key: usize,
    pub(super) qos: QoS,
    pub(super) packet_id: Option<PacketId>,
    pub(super) reason: ReasonCode,
}

#[derive(Debug, Default)]
struct Entry {
    /// Tokens not acked yet.
    tokens: u32,
    /// Set once the message is routed (then it only waits for its tokens).
    ack: Option<PendingAck>,
}

#[derive(Debug)]
struct AwaitConn {
    uid: u64,
    /// Sequence number of `entries[0]`.
    front: u64,
    entries: VecDeque<Entry>,
}

/// What a token outcome does.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Nothing (more tokens to come, or a stale token).
    Wait,
    /// These acknowledgements may go out now, in this order.
    Send(Vec<PendingAck>),
    /// A token was dropped: close the connection.
    Close,
}

/// Per connection, the acknowledgements waiting for tokens (and those behind them).
#[derive(Debug, Default)]
pub(super) struct Awaiting {
    conns: HashMap<ConnId, AwaitConn>,
}

impl Awaiting {
    /// Whether connection `conn` has acknowledgements waiting (then a new one queues).
    #[inline]
    pub(super) fn waits(&self, conn: ConnId) -> bool {
        !self.conns.is_empty() && self.conns.contains_key(&conn)
    }

    fn conn(&mut self, conn: ConnId, uid: u64) -> &mut AwaitConn {
        let c = self.conns.entry(conn).or_insert_with(|| AwaitConn {
            uid,
            front: 0,
            entries: VecDeque::new(),
        });
        if c.uid != uid {
            *c = AwaitConn {
                uid,
                front: 0,
                entries: VecDeque::new(),
            };
        }
        c
    }

    /// The sequence number the next reserved message of `conn` gets.
    pub(super) fn next_seq(&self, conn: ConnId, uid: u64) -> u64 {
        self.conns
            .get(&conn)
            .filter(|c| c.uid == uid)
            .map_or(0, |c| c.front + c.entries.len() as u64)
    }

    /// Reserves a place in `conn`'s order for a message with `tokens` tokens (or adds
    /// them to `seq`, reserved already). Returns its sequence number.
    pub(super) fn reserve(&mut self, conn: ConnId, uid: u64, seq: Option<u64>, tokens: u32) -> u64 {
        let c = self.conn(conn, uid);
        if let Some(seq) = seq {
            if let Some(e) = seq
                .checked_sub(c.front)
                .and_then(|i| c.entries.get_mut(i as usize))
            {
                e.tokens += tokens;
                return seq;
            }
        }
        c.entries.push_back(Entry { tokens, ack: None });
        c.front + c.entries.len() as u64 - 1
    }

    /// The message `seq` of `conn` was routed: `ack` waits for its tokens. Returns what
    /// may go out now.
    pub(super) fn routed(
        &mut self,
        conn: ConnId,
        uid: u64,
        seq: u64,
        ack: PendingAck,
    ) -> Vec<PendingAck> {
        let Some(c) = self.conns.get_mut(&conn).filter(|c| c.uid == uid) else {
            return Vec::new();
        };
        if let Some(e) = seq
            .checked_sub(c.front)
            .and_then(|i| c.entries.get_mut(i as usize))
        {
            e.ack = Some(ack);
        }
        self.pop_ready(conn)
    }

    /// A token of `conn`'s message `seq` was acked or dropped.
    pub(super) fn on_token(&mut self, t: TokenOutcome) -> Outcome {
        let Some(c) = self.conns.get_mut(&t.conn).filter(|c| c.uid == t.uid) else {
            return Outcome::Wait;
        };
        if !t.acked {
            self.conns.remove(&t.conn);
            return Outcome::Close;
        }
        if let Some(e) = t
            .seq
            .checked_sub(c.front)
            .and_then(|i| c.entries.get_mut(i as usize))
        {
            e.tokens = e.tokens.saturating_sub(1);
        }
        match self.pop_ready(t.conn) {
            ready if ready.is_empty() => Outcome::Wait,
            ready => Outcome::Send(ready),
        }
    }

    /// Takes the complete entries at the front of `conn`'s order.
    fn pop_ready(&mut self, conn: ConnId) -> Vec<PendingAck> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        let mut ready = Vec::new();
        while let Some(e) = c.entries.front() {
            match e.ack {
                Some(ack) if e.tokens == 0 => ready.push(ack),
                _ => break,
            }
            c.entries.pop_front();
            c.front += 1;
        }
        if c.entries.is_empty() {
            self.conns.remove(&conn);
        }
        ready
    }

    /// The connection ended: its waiting acknowledgements go (the device resends).
    pub(super) fn on_conn_end(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }
}
