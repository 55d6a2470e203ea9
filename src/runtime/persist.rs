//! The runtime's persistence driver: opens the store before the listeners accept,
//! restores the broker from it, and once per loop iteration writes the broker's records
//! in one append (fsynced first with `persistence_fsync always`, before any output is
//! written, so acknowledgements wait for the disk); interval fsyncs and compaction run
//! from the loop's timeout.
//!
//! It never blocks the loop on anything but its own file writes, and never lets a write
//! error crash the broker: it is logged, loudly, once per failure streak.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::broker::Broker;
use crate::config::Config;
use crate::persist::{Error, Record, Store};

pub(super) struct Persister {
    store: Store,
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
    pub(super) fn open(config: &Config) -> Result<Self, Error> {
        Ok(Self {
            store: Store::open(config, Instant::now())?,
            batch: Vec::new(),
            failing: false,
        })
    }

    /// Turns on the broker's persistence events and loads the saved state into it.
    /// `owns` selects the sessions that live on this broker's shard.
    pub(super) fn restore(&self, broker: &mut Broker, owns: &dyn Fn(&str) -> bool) {
        let now = Instant::now();
        broker.enable_persistence(now, unix_ms());
        let state = self.store.state();
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
        let result = self.store.append(&mut self.batch, now);
        self.batch.clear();
        self.report(result);
    }

    #[must_use]
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.store.poll_timeout()
    }

    /// Interval fsync and compaction, when due.
    pub(super) fn tick(&mut self, now: Instant) {
        if self.store.poll_timeout().is_some_and(|t| t <= now) {
            let result = self.store.tick(now);
            self.report(result);
        }
    }

    /// Clean shutdown: the last records, then a snapshot.
    pub(super) fn shutdown(&mut self, broker: &mut Broker) {
        let now = Instant::now();
        self.flush(broker, now);
        let result = self.store.compact(now);
        self.report(result);
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
