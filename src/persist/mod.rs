//! Persistence (issue #6): retained messages, persistent sessions (subscriptions,
//! inflight and queued QoS 1/2 messages, delayed wills) survive restarts and crashes.
//!
//! Layout: [`record`] is the sans-IO record format (length + CRC32 per record, fuzzable,
//! never panics); [`state`] rebuilds the durable state from records; [`log`] and
//! [`snapshot`] own the two files (an append-only log, and a snapshot written by
//! write-then-rename with fsync of file and directory); [`store`] ties them together for
//! the runtime: one write per event-loop iteration, fsync per `persistence_fsync`, and
//! compaction of the log into a new snapshot.
//!
//! Generations make compaction crash-safe: the snapshot and the log each carry one; a
//! log older than the snapshot is already contained in it and is ignored.
//!
//! This module never touches sockets or the broker's state and never reads the clock
//! (`now` comes from the runtime); on start, a torn tail is truncated with a log line and
//! a corrupt record anywhere else stops the broker with its offset.

pub mod error;
pub mod log;
pub mod record;
pub mod snapshot;
pub mod state;
pub mod store;
mod wire;

pub use error::Error;
pub use record::{InflightEntry, Record, RecordError, EXPIRY_NEVER};
pub use state::{RoutedMessage, State, StoredMessage, StoredSession, StoredUser};
pub use store::Store;

/// fsync of the parent directory, so a rename or a new file survives power loss.
pub(crate) fn sync_dir(path: &std::path::Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}
