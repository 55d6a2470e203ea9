//! The runtime's persistence driver: opens the files before the listeners accept,
//! restores the broker from them, and once per loop iteration writes the broker's records
//! in one append (fsynced first with `persistence_fsync always`, before any output is
//! written, so acknowledgements wait for the disk).
//!
//! With several shards there is one log behind a mutex: each shard appends its
//! iteration's batch under the lock, so the log holds every shard's records in an order
//! consistent with the messages between shards (a shard flushes before it sends its
//! mail). Under the same lock the batch goes to the compactor thread ([`compactor`]),
//! which keeps the durable state, does the interval fsyncs and writes snapshots: a shard
//! that finds a compaction due only rotates the log (a swap of two file handles) and goes
//! on. The last shard to stop has the compactor write the final snapshot.
//!
//! It never blocks a loop on anything but its own log write (and fsync with `always`)
//! and the short lock, and never lets a write error crash the broker: it is logged,
//! loudly, once per failure streak.

mod compactor;

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use crate::broker::Broker;
use crate::config::Config;
use crate::persist::{Error, Record, State, Store};

use compactor::Job;

/// The log shared by every shard, the way to the compactor, and how many shards run.
pub(super) struct Shared {
    store: Mutex<Store>,
    jobs: Sender<Job>,
    /// The restored state and the compactor's end of `jobs`, until it starts.
    pending: Mutex<Option<(State, Receiver<Job>)>>,
    compactor: Mutex<Option<JoinHandle<()>>>,
    live: Mutex<usize>,
    /// This process run (Unix ms at start), to key messages between shards.
    boot: u64,
}

pub(super) struct Persister {
    shared: Arc<Shared>,
    batch: Vec<Record>,
    failing: bool,
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Persister {
    /// Opens the files named by `config` (refusing corrupt data, see
    /// [`crate::persist::recover`]).
    pub(super) fn open_store(config: &Config) -> Result<Arc<Shared>, Error> {
        let (store, state) = crate::persist::open(config, Instant::now())?;
        crate::metrics::persist::enable();
        crate::metrics::persist::log_bytes(store.log_len());
        let (jobs, rx) = crossbeam_channel::unbounded();
        Ok(Arc::new(Shared {
            store: Mutex::new(store),
            jobs,
            pending: Mutex::new(Some((state, rx))),
            compactor: Mutex::new(None),
            live: Mutex::new(0),
            boot: unix_ms(),
        }))
    }

    /// After every shard restored and flushed ([`Persister::flush`]): forgets the
    /// messages between shards of earlier runs (they were re-delivered), then starts the
    /// compactor thread with the restored state (the records appended since are waiting
    /// for it in its channel).
    pub(super) fn finish_restore(shared: &Arc<Shared>) -> Result<(), Error> {
        let Some((state, rx)) = lock(&shared.pending).take() else {
            return Ok(());
        };
        if state.routed.keys().any(|k| k.0 != shared.boot) {
            let mut store = lock(&shared.store);
            store.sync()?;
            let clear = vec![Record::RoutedClear {
                keep_boot: shared.boot,
            }];
            store.append(&clear)?;
            store.sync()?;
            let _ = shared.jobs.send(Job::Records(clear));
        }
        let fsync = lock(&shared.store).fsync();
        let worker = compactor::Compactor::new(shared, state, fsync)?;
        let handle = std::thread::Builder::new()
            .name("shardmq-persist".into())
            .spawn(move || worker.run(&rx))
            .map_err(|e| Error::io(std::path::Path::new("."), e))?;
        *lock(&shared.compactor) = Some(handle);
        Ok(())
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

    /// Turns on the broker's persistence events and loads the saved state into it.
    /// `owns` selects the sessions that live on this broker's shard.
    pub(super) fn restore(&self, broker: &mut Broker, owns: &dyn Fn(&str) -> bool) {
        let now = Instant::now();
        broker.enable_persistence(now, unix_ms(), self.shared.boot);
        let pending = lock(&self.shared.pending);
        let Some((state, _)) = pending.as_ref() else {
            return;
        };
        if state.is_empty() {
            return;
        }
        broker.restore_retained(state, now);
        let n = broker.restore_sessions(state, owns, now);
        if n > 0 {
            crate::log_notice!("Restored {n} persistent sessions.");
        }
    }

    /// Writes what the broker recorded since the last call (one write; fsynced with
    /// `persistence_fsync always`) and hands it to the compactor; starts a compaction
    /// when one is due. Call before writing any output.
    pub(super) fn flush(&mut self, broker: &mut Broker, now: Instant) {
        if !broker.has_persist_events() {
            return;
        }
        broker.drain_persist(&mut self.batch);
        let batch = std::mem::take(&mut self.batch);
        let result = {
            let mut store = lock(&self.shared.store);
            let started = Instant::now();
            let result = store.append(&batch);
            if store.fsync() == crate::config::PersistenceFsync::Always && result.is_ok() {
                // The append's write and fsync, the fsync dominating.
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                crate::metrics::persist::fsync_done(us, unix_ms());
            }
            crate::metrics::persist::log_bytes(store.log_len());
            // In log order: the compactor's state must match the log at a rotation.
            let _ = self.shared.jobs.send(Job::Records(batch));
            result.and_then(|()| self.rotate_if_due(&mut store, now))
        };
        self.report(result);
    }

    /// With the store locked: rotates the log and hands the compaction to the
    /// compactor, if one is due.
    fn rotate_if_due(&self, store: &mut Store, now: Instant) -> Result<(), Error> {
        if store.compaction_due(now) {
            let rotation = store.rotate(now)?;
            let _ = self.shared.jobs.send(Job::Compact(rotation));
        }
        Ok(())
    }

    /// When a timed compaction is due.
    #[must_use]
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        lock(&self.shared.store).poll_timeout()
    }

    /// A timed compaction, when due.
    pub(super) fn tick(&mut self, now: Instant) {
        let result = {
            let mut store = lock(&self.shared.store);
            if store.poll_timeout().is_some_and(|t| t <= now) {
                self.rotate_if_due(&mut store, now)
            } else {
                Ok(())
            }
        };
        self.report(result);
    }

    /// Clean shutdown: the last records; the last shard to stop has the compactor write
    /// the final snapshot and waits for it.
    pub(super) fn shutdown(&mut self, broker: &mut Broker) {
        let now = Instant::now();
        self.flush(broker, now);
        let last = {
            let mut live = lock(&self.shared.live);
            *live = live.saturating_sub(1);
            *live == 0
        };
        if !last {
            return;
        }
        let _ = self.shared.jobs.send(Job::Stop);
        let handle = lock(&self.shared.compactor).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                crate::log_error!("Error: the persistence thread panicked; no final snapshot.");
            }
        }
    }

    fn report(&mut self, result: Result<(), Error>) {
        report(&mut self.failing, result);
    }
}

/// Logs the first error of a failure streak and the recovery after it.
fn report(failing: &mut bool, result: Result<(), Error>) {
    match result {
        Ok(()) => {
            if *failing {
                crate::log_notice!("Persistence writes succeed again.");
                *failing = false;
            }
        }
        Err(e) => {
            if !*failing {
                crate::log_error!("Error: persistence write failed, changes are NOT saved: {e}");
                *failing = true;
            }
        }
    }
}

/// Locks, going on with the data if another thread panicked while holding the lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
