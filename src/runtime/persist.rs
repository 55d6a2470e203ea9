//! The runtime's persistence driver: opens the store before the listeners accept,
//! restores the broker from it, and once per loop iteration writes the broker's records
//! in one append (fsynced first with `persistence_fsync always`, before any output is
//! written, so acknowledgements wait for the disk); interval fsyncs and compaction run
//! from the loop's timeout.
//!
//! With several shards there is one store (one log, one snapshot) behind a mutex: each
//! shard appends its iteration's batch under the lock, so the log holds every shard's
//! records in an order consistent with the messages between shards (a shard flushes
//! before it sends its mail). The last shard to stop writes the final snapshot.
//!
//! It never blocks the loop on anything but its own file writes (and the short lock), and
//! never lets a write error crash the broker: it is logged, loudly, once per failure
//! streak.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::broker::Broker;
use crate::config::Config;
use crate::persist::{Error, Record, Store};

/// The store shared by every shard, and how many shards still run.
pub(super) struct Shared {
    store: Mutex<Store>,
    live: Mutex<usize>,
    /// This process run (Unix ms at start), to key messages between shards.
    boot: u64,
}

pub(super) struct Persister {
    shared: Arc<Shared>,
    batch: Vec<Record>,
    failing: bool,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Persister {
    /// Opens the files named by `config` (refusing corrupt data, see [`Store::open`]).
    pub(super) fn open_store(config: &Config) -> Result<Arc<Shared>, Error> {
        Ok(Arc::new(Shared {
            store: Mutex::new(Store::open(config, Instant::now())?),
            live: Mutex::new(0),
            boot: unix_ms(),
        }))
    }

    /// After every shard restored and flushed ([`Persister::flush`]): syncs, then
    /// forgets the messages between shards of earlier runs (they were re-delivered).
    pub(super) fn finish_restore(shared: &Shared) -> Result<(), Error> {
        let mut store = lock(&shared.store);
        if store.state().routed.keys().all(|k| k.0 == shared.boot) {
            return Ok(());
        }
        let now = Instant::now();
        store.sync(now)?;
        store.append(
            &mut vec![Record::RoutedClear {
                keep_boot: shared.boot,
            }],
            now,
        )?;
        store.sync(now)
    }

    /// One shard's handle on the shared store.
    pub(super) fn new(shared: &Arc<Shared>) -> Self {
        *lock(&shared.live) += 1;
        Self {
            shared: Arc::clone(shared),
            batch: Vec::new(),
            failing: false,
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.shared.store)
    }

    /// Turns on the broker's persistence events and loads the saved state into it.
    /// `owns` selects the sessions that live on this broker's shard.
    pub(super) fn restore(&self, broker: &mut Broker, owns: &dyn Fn(&str) -> bool) {
        let now = Instant::now();
        broker.enable_persistence(now, unix_ms(), self.shared.boot);
        let store = self.store();
        let state = store.state();
        if state.is_empty() {
            return;
        }
        broker.restore_retained(state);
        let n = broker.restore_sessions(state, owns, now);
        if n > 0 {
            crate::log_notice!("Restored {n} persistent sessions.");
        }
    }

    /// Writes what the broker recorded since the last call (one write; fsynced with
    /// `persistence_fsync always`). Call before writing any output.
    pub(super) fn flush(&mut self, broker: &mut Broker, now: Instant) {
        if !broker.has_persist_events() {
            return;
        }
        broker.drain_persist(&mut self.batch);
        let mut batch = std::mem::take(&mut self.batch);
        let result = self.store().append(&mut batch, now);
        batch.clear();
        self.batch = batch;
        self.report(result);
    }

    #[must_use]
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.store().poll_timeout()
    }

    /// Interval fsync and compaction, when due.
    pub(super) fn tick(&mut self, now: Instant) {
        let result = {
            let mut store = self.store();
            if store.poll_timeout().is_some_and(|t| t <= now) {
                store.tick(now)
            } else {
                Ok(())
            }
        };
        self.report(result);
    }

    /// Clean shutdown: the last records; the last shard to stop writes a snapshot.
    pub(super) fn shutdown(&mut self, broker: &mut Broker) {
        let now = Instant::now();
        self.flush(broker, now);
        let last = {
            let mut live = lock(&self.shared.live);
            *live = live.saturating_sub(1);
            *live == 0
        };
        if last {
            let result = self.store().compact(now);
            self.report(result);
        }
    }

    fn report(&mut self, result: Result<(), Error>) {
        match result {
            Ok(()) => {
                if self.failing {
                    crate::log_notice!("Persistence writes succeed again.");
                    self.failing = false;
                }
            }
            Err(e) => {
                if !self.failing {
                    crate::log_error!(
                        "Error: persistence write failed, changes are NOT saved: {e}"
                    );
                    self.failing = true;
                }
            }
        }
    }
}

/// Locks, going on with the data if another shard panicked while holding the lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
