//! Persistence (issue #6): retained messages, persistent sessions (subscriptions,
//! inflight and queued QoS 1/2 messages, delayed wills) survive restarts and crashes.
//!
//! Layout: [`record`] is the sans-IO record format (length + CRC32 per record, fuzzable,
//! never panics); [`state`] rebuilds the durable state from records; [`log`] and
//! [`snapshot`] own the files (append-only logs, and a snapshot written by
//! write-then-rename with fsync of file and directory); [`recover`] opens them on start;
//! [`store`] is the log side the shards share (one write per event-loop iteration, fsync
//! per `persistence_fsync`, an O(1) log rotation when a compaction is due); [`compact`]
//! writes the snapshot from the compactor's own [`State`], off the shard threads.
//!
//! Generations make compaction crash-safe: the snapshot and each log carry one; a log
//! older than the snapshot is already contained in it and is ignored, and logs are
//! replayed in generation order whatever their names.
//!
//! [`mosquitto_db`] reads Mosquitto's own persistence file (sans-IO) and [`import`]
//! turns it into records written through the [`Store`] (`shardmq import-mosquitto-db`).
//!
//! This module never touches sockets, threads or the broker's state and never reads the
//! clock (`now` comes from the runtime); on start, a torn tail is truncated with a log
//! line and a corrupt record anywhere else stops the broker with its offset.

pub mod compact;
pub mod error;
pub mod import;
pub mod log;
pub mod mosquitto_db;
pub mod record;
pub mod recover;
pub mod snapshot;
pub mod state;
pub mod store;
mod wire;

#[cfg(test)]
mod append_fail_tests;
#[cfg(test)]
mod files_tests;

pub use error::Error;
pub use record::{InflightEntry, Record, RecordError, EXPIRY_NEVER};
pub use recover::open;
pub use state::{RoutedMessage, State, StoredMessage, StoredSession, StoredUser};
pub use store::{Paths, Rotation, Store};

/// fsync of the parent directory, so a rename or a new file survives power loss.
pub(crate) fn sync_dir(path: &std::path::Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}
