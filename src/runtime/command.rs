//! [`Command`]: what the embedding process (through [`super::BrokerHandle`], `Stopper`,
//! `Reloader` and in-process subscriptions) or the HTTP console asks of a running shard. Its own module so
//! that `handle` (which sends commands) and `shard` (which executes them) do not import
//! each other.
//!
//! It only describes requests; it never executes one, blocks or touches a socket.

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::auth::Security;
use crate::broker::embed::{Injected, InternalSub};
use crate::broker::ingest_ack::TokenOutcome;
use crate::config::BridgeConfig;

/// Instructions from the embedding process to a shard.
#[derive(Debug)]
pub enum Command {
    /// Publish a message as if a client had sent it (holding its slot of the host's
    /// publish channel until routed).
    Publish(Box<Injected>),
    /// Stop: close every connection and end the thread.
    Shutdown,
    /// Install reloaded password / ACL rules (SIGHUP); connections stay up.
    SetSecurity(Arc<Security>),
    /// Install an in-process subscription (first offering it the matching retained
    /// messages when `retained`), then acknowledge on `ack`.
    Subscribe {
        sub: Box<InternalSub>,
        retained: bool,
        ack: Sender<()>,
    },
    /// Remove an in-process subscription by id.
    Unsubscribe(u64),
    /// An ingest ack token was acked or dropped.
    IngestToken(TokenOutcome),
    /// A deferred login's ticket was answered or dropped.
    LoginAnswer(crate::broker::access::LoginAnswer),
    /// The bridges of a reloaded configuration (SIGHUP): each shard starts, stops or
    /// restarts the ones it runs.
    SetBridges(Arc<[BridgeConfig]>),
    /// Disconnect this client if it is connected on this shard (the HTTP console).
    Disconnect(String),
    /// Answer with the shard id (the systemd watchdog's liveness check).
    Ping(Sender<usize>),
}
