//! The runtime's persistence driver: opens the files before the listeners accept,
//! restores the broker from them, and once per loop iteration writes the broker's records
//! in one append (fsynced first with `persistence_fsync always`, before any output is
//! written, so acknowledgements wait for the disk).
//!
//! With several shards there is one log behind a mutex: each shard appends its
//! iteration's batch under the lock, so the log holds every shard's records in an order
//! consistent with the messages between shards (a shard flushes before it sends its
//! mail). Under the same lock, and only once the append succeeded, the batch goes to the
//! compactor thread ([`compactor`]), which keeps the durable state, does the interval
//! fsyncs and writes snapshots: a shard that finds a compaction due only rotates the log
//! (a swap of two file handles) and goes on. The last shard to stop has the compactor
//! write the final snapshot.
//!
//! Failing closed: when an append (or its fsync with `always`) fails, the store cuts the
//! log back to its length before it and the shard keeps the batch and *holds*: it sends
//! no output and no mail ([`Persister::holds`]), reads no socket (the broker's
//! `wants_read` says no, so publishers get TCP back-pressure), keeps adding what the
//! broker records to the held batch, and retries the whole of it from the loop's timer
//! with a backoff ([`streak`]) until it is written; then everything held goes out. One
//! error line starts the streak, a notice ends it, `/metrics` and `$SYS` show it.
//!
//! Ordering with retries: while shard A holds its batch, shard B may append its own.
//! That is safe because nothing that depends on A's held records exists outside A: A's
//! mail waits with its output, so B only ever learns of A's work (a message, a session
//! hand-off, a retained set) after A's records are in the log, and B's records that
//! follow from it come after them. What B appends meanwhile does not depend on A's held
//! records; only causally unrelated records (say two retained sets of one topic on two
//! shards at once) can be ordered differently from real time, as they could before.
//!
//! It never blocks a loop on anything but its own log write (and fsync with `always`)
//! and the short lock, never sleeps to retry, and never lets a write error crash the
//! broker.

mod compactor;
mod streak;

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use crate::broker::{Broker, ConnId};
use crate::config::Config;
use crate::persist::{Error, Record, State, Store};

use compactor::Job;
use streak::Streak;

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
    /// Records drained from the broker and not yet in the log: empty between
    /// iterations, except during a failure streak (then the held batch, in order).
    batch: Vec<Record>,
    /// The failure streak while the batch is held (`Some`: output, mail and reads wait).
    held: Option<Streak>,
    /// Connections whose WRITABLE readiness came while output was held (edge-triggered:
    /// it will not come again), flushed when the streak ends.
    deferred_writes: Vec<ConnId>,
    /// Rotations failing (logged once per streak).
    rotate_failing: bool,
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
            held: None,
            deferred_writes: Vec::new(),
            rotate_failing: false,
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
    /// when one is due. Call before writing any output, then write output and mail only
    /// if [`Persister::holds`] is false.
    ///
    /// If the write fails, the records are kept (with everything the broker records
    /// after them) and retried by later calls once the backoff allows; meanwhile the
    /// broker reads nothing ([`Broker::set_persist_held`]). Host publishes waiting in
    /// `publish_routed` are answered once what they recorded is written.
    pub(super) fn flush(&mut self, broker: &mut Broker, now: Instant) {
        if broker.has_persist_events() {
            broker.drain_persist(&mut self.batch);
        }
        if !self.batch.is_empty() && self.held.as_ref().map_or(true, |s| s.due(now)) {
            self.write(broker, now);
        }
        if self.held.is_none() {
            // Everything drained is written: `publish_routed` callers may return.
            broker.persist_written();
        }
    }

    /// [`Persister::flush`]'s write of the batch, starting or ending a failure streak.
    fn write(&mut self, broker: &mut Broker, now: Instant) {
        match self.write_batch(now) {
            Ok(written) => {
                if let Some(streak) = self.held.take() {
                    self.streak_ended(&streak, written, broker, now);
                }
            }
            Err((e, records)) => match &mut self.held {
                Some(streak) => {
                    streak.failed_again(now);
                    crate::metrics::persist::write_failed();
                }
                None => {
                    crate::log_error!(
                        "Error: persistence write failed: {e}. Holding this shard's \
                         acknowledgements, deliveries and messages to other shards, and \
                         not reading its clients, until {records} records are written \
                         (retrying)."
                    );
                    self.held = Some(Streak::start(now));
                    broker.set_persist_held(true, now);
                    crate::metrics::persist::write_failed();
                    crate::metrics::persist::holding(true);
                }
            },
        }
    }

    /// The append under the lock; on success the batch goes to the compactor (in log
    /// order) and a due compaction starts. On failure the batch stays for the retry.
    fn write_batch(&mut self, now: Instant) -> Result<usize, (Error, usize)> {
        let mut store = lock(&self.shared.store);
        let started = Instant::now();
        if let Err(e) = store.append(&self.batch) {
            return Err((e, self.batch.len()));
        }
        if store.fsync() == crate::config::PersistenceFsync::Always {
            // The append's write and fsync, the fsync dominating.
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            crate::metrics::persist::fsync_done(us, unix_ms());
        }
        crate::metrics::persist::log_bytes(store.log_len());
        // In log order: the compactor's state must match the log at a rotation.
        let batch = std::mem::take(&mut self.batch);
        let written = batch.len();
        let _ = self.shared.jobs.send(Job::Records(batch));
        let rotated = self.rotate_if_due(&mut store, now);
        drop(store);
        report(
            &mut self.rotate_failing,
            rotated,
            "rotation of the persistence log",
        );
        Ok(written)
    }

    fn streak_ended(&self, streak: &Streak, records: usize, broker: &mut Broker, now: Instant) {
        broker.set_persist_held(false, now);
        crate::metrics::persist::holding(false);
        crate::log_notice!(
            "Persistence writes succeed again after {} ms and {} failed attempts; {records} \
             held records written, the held acknowledgements and messages go out now.",
            now.saturating_duration_since(streak.since).as_millis(),
            streak.failures
        );
    }

    /// Whether this shard holds its output, mail and reads (a failure streak).
    #[must_use]
    pub(super) fn holds(&self) -> bool {
        self.held.is_some()
    }

    /// A WRITABLE event for `conn` came while output is held: flush it after the streak.
    pub(super) fn defer_write(&mut self, conn: ConnId) {
        if !self.deferred_writes.contains(&conn) {
            self.deferred_writes.push(conn);
        }
    }

    /// The connections to flush now that output is no longer held.
    pub(super) fn take_deferred_writes(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.deferred_writes)
    }

    /// Retries a held batch at once, whatever the backoff (shutdown).
    pub(super) fn flush_now(&mut self, broker: &mut Broker) {
        let now = Instant::now();
        if let Some(s) = &mut self.held {
            s.try_now(now);
        }
        self.flush(broker, now);
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

    /// When the held batch is retried, or a timed compaction is due.
    #[must_use]
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        if let Some(s) = &self.held {
            return Some(s.next_try());
        }
        lock(&self.shared.store).poll_timeout()
    }

    /// A timed compaction, when due (not while this shard holds a batch).
    pub(super) fn tick(&mut self, now: Instant) {
        if self.held.is_some() {
            return;
        }
        let result = {
            let mut store = lock(&self.shared.store);
            if store.poll_timeout().is_some_and(|t| t <= now) {
                self.rotate_if_due(&mut store, now)
            } else {
                Ok(())
            }
        };
        report(
            &mut self.rotate_failing,
            result,
            "rotation of the persistence log",
        );
    }

    /// Clean shutdown: the last records (a held batch is tried once more: if it still
    /// fails, its records are lost, but nothing that depends on them ever left the
    /// shard, so no acknowledgement is broken; it is logged and the process exits
    /// non-zero); the last shard to stop has the compactor write the final snapshot
    /// and waits for it.
    pub(super) fn shutdown(&mut self, broker: &mut Broker) {
        self.flush_now(broker);
        if self.held.is_some() && !self.batch.is_empty() {
            crate::log_error!(
                "Error: persistence still failing at shutdown: {} records of this shard \
                 are not saved (nothing that depends on them was acknowledged or sent).",
                self.batch.len()
            );
            crate::metrics::persist::lost_at_shutdown(self.batch.len() as u64);
        }
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
}

/// Logs the first error of a failure streak of `what` and the recovery after it.
fn report(failing: &mut bool, result: Result<(), Error>, what: &str) {
    match result {
        Ok(()) => {
            if *failing {
                crate::log_notice!("The {what} succeeds again.");
                *failing = false;
            }
        }
        Err(e) => {
            if !*failing {
                crate::log_error!("Error: the {what} failed (retrying): {e}");
                *failing = true;
            }
        }
    }
}

/// Locks, going on with the data if another thread panicked while holding the lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
