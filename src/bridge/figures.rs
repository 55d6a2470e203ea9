//! Each running bridge's latest figures (the ones its shard publishes under
//! `$SYS/broker/bridge/NAME/...`), pinned here for `GET /metrics` to read. The shard that
//! runs a bridge pins them about once a second and only ever *tries* the lock, so a
//! scrape can never make a shard wait (it skips that pin and pins the next); a reader
//! holds the lock only while it copies the table. Process-wide, as the persistence
//! figures are: two brokers embedded in one process with a bridge of the same name
//! would share its row. This module never touches a socket or reads the clock.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError, TryLockError};

/// One bridge's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// The remote accepted the bridge and the connection is up.
    pub connected: bool,
    pub sent: u64,
    pub received: u64,
    /// Messages its local session holds for the remote (queued and in flight).
    pub queued: u64,
    pub dropped: u64,
    pub reconnects: u64,
}

static TABLE: Mutex<BTreeMap<String, Figures>> = Mutex::new(BTreeMap::new());

/// Pins bridge `name`'s figures; false when a reader held the table (try again later).
pub fn pin(name: &str, figures: Figures) -> bool {
    let mut table = match TABLE.try_lock() {
        Ok(t) => t,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return false,
    };
    match table.get_mut(name) {
        Some(row) => *row = figures,
        None => {
            table.insert(name.to_string(), figures);
        }
    }
    true
}

/// Bridge `name` stopped for good (reload, shutdown): its row goes. Rare, so it waits
/// for a reader's copy (microseconds) rather than leave a stale row.
pub fn remove(name: &str) {
    TABLE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(name);
}

/// Every bridge's figures, by name.
pub fn all() -> Vec<(String, Figures)> {
    TABLE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_rows_are_read_back_and_removed() {
        let f = Figures {
            connected: true,
            sent: 3,
            ..Figures::default()
        };
        assert!(pin("figures-test-a", f));
        assert!(pin("figures-test-a", Figures { sent: 4, ..f }));
        let row = all().into_iter().find(|(n, _)| n == "figures-test-a");
        assert_eq!(row.map(|(_, f)| f.sent), Some(4));
        remove("figures-test-a");
        assert!(all().iter().all(|(n, _)| n != "figures-test-a"));
    }
}
