//! The persistence thread: it owns the durable [`State`] (every batch the shards append
//! is applied here, in log order, off the shard threads), fsyncs the live log once a
//! second with `persistence_fsync interval`, has the snapshot of each rotation the shards
//! start written ([`crate::persist::compact`]) and, at shutdown, writes the final one.
//!
//! A snapshot is written by a short-lived low-priority thread that yields the CPU every
//! 64 KiB, reading the state in place while this thread waits (doing the interval
//! fsyncs); batches that arrive meanwhile wait in the channel and are applied after it.
//! The store lock is taken only to hand the store its new spare log, so the shards keep
//! appending, and fsyncing with `always`, during a snapshot.
//!
//! A failed compaction (a full disk, an I/O error) is retried: after [`RETRY_FIRST`],
//! doubling up to [`RETRY_MAX`], this thread prepares a spare log under a numbered name
//! and hands it to the store, and the next shard to append starts the compaction again;
//! its snapshot covers the logs the failed attempts left (see [`compact::run`]).

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::config::PersistenceFsync;
use crate::persist::store::SYNC_INTERVAL;
use crate::persist::{compact, Error, Paths, Record, Rotation, State};

use super::{lock, report, Shared};

/// Makes the calling thread (a snapshot writer) give way to the shards: SCHED_BATCH (its
/// wakeups never preempt a running shard) at nice 10 (a tenth of a shard's share of a
/// contended core, so it still progresses). It also yields between chunks of snapshot,
/// so a shard that wakes up while it runs waits for at most one chunk.
fn background_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler(2) and setpriority(2) on the calling thread (pid 0,
    // its own tid), with a parameter struct that outlives the call.
    let rc = unsafe {
        let batch = libc::sched_setscheduler(0, libc::SCHED_BATCH, &raw const param);
        let tid = libc::id_t::try_from(libc::gettid()).unwrap_or(0);
        batch | libc::setpriority(libc::PRIO_PROCESS, tid, 10)
    };
    if rc != 0 {
        crate::log_warning!(
            "Warning: cannot lower the priority of the snapshot thread: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Wait before the first retry of a failed compaction.
pub(super) const RETRY_FIRST: Duration = Duration::from_secs(10);
/// The longest wait between retries.
pub(super) const RETRY_MAX: Duration = Duration::from_secs(300);

/// Work for the persistence thread, in log order.
pub(super) enum Job {
    /// A batch appended to the live log.
    Records(Vec<Record>),
    /// A rotation: write the snapshot of everything before it.
    Compact(Rotation),
    /// Every shard stopped: write the final snapshot and end.
    Stop,
}

pub(super) struct Compactor {
    /// Weak: the thread ends (without a final snapshot) if the broker goes away without
    /// stopping its shards.
    shared: Weak<Shared>,
    state: State,
    paths: Paths,
    sync: LiveSync,
    /// After a failed compaction: when to prepare the spare of the next attempt, and
    /// the wait after that one if it fails too.
    retry: Option<Instant>,
    /// The wait before the next retry if the running compaction fails.
    backoff: Duration,
}

/// The interval fsyncs of the live log (`persistence_fsync interval`).
struct LiveSync {
    fsync: PersistenceFsync,
    live: File,
    path: PathBuf,
    unsynced: bool,
    last: Instant,
    failing: bool,
}

impl LiveSync {
    /// When [`LiveSync::if_due`] has work.
    fn deadline(&self) -> Option<Instant> {
        (self.unsynced && self.fsync == PersistenceFsync::Interval)
            .then(|| self.last + SYNC_INTERVAL)
    }

    /// fsyncs the live log once a second while something is unsynced. A failed fsync
    /// is logged (once per streak), counted in the metrics and retried a second later:
    /// with `interval` the acknowledgements never waited for it, so there is nothing to
    /// hold; after such a failure (fsyncgate) the records appended since the last good
    /// fsync may not survive power loss even if a retry succeeds, which the error line
    /// says.
    fn if_due(&mut self) {
        // No clock read unless an interval fsync is pending at all.
        let Some(at) = self.deadline() else {
            return;
        };
        let now = Instant::now();
        if now >= at {
            let result = self.live.sync_data().map_err(|e| Error::io(&self.path, e));
            if result.is_ok() {
                let us = u64::try_from(now.elapsed().as_micros()).unwrap_or(u64::MAX);
                crate::metrics::persist::fsync_done(us, super::unix_ms());
            } else {
                crate::metrics::persist::write_failed();
            }
            self.unsynced = result.is_err();
            report(
                &mut self.failing,
                result,
                "interval fsync of the persistence log (records since the last good \
                 fsync may not survive power loss)",
            );
            self.last = now;
        }
    }
}

impl Compactor {
    pub(super) fn new(
        shared: &Arc<Shared>,
        state: State,
        fsync: PersistenceFsync,
    ) -> Result<Self, Error> {
        let store = lock(&shared.store);
        Ok(Self {
            shared: Arc::downgrade(shared),
            paths: store.paths().clone(),
            sync: LiveSync {
                fsync,
                live: store.live_handle()?,
                path: store.paths().log.clone(),
                unsynced: false,
                last: Instant::now(),
                failing: false,
            },
            state,
            retry: None,
            backoff: RETRY_FIRST,
        })
    }

    /// When the loop must wake up on its own: an interval fsync or a compaction retry.
    fn deadline(&self) -> Option<Instant> {
        match (self.sync.deadline(), self.retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Prepares the spare log of a retried compaction, if one is due, and hands it to
    /// the store: the next append (or timed tick) of a shard starts the compaction.
    fn retry_if_due(&mut self, now: Instant) {
        let Some(at) = self.retry else {
            return;
        };
        if now < at {
            return;
        }
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        // Nothing rotates meanwhile: the store has no spare until `retry_with`.
        let generation = lock(&shared.store).generation() + 1;
        let path = self.paths.numbered(generation);
        match compact::prepare_spare(&path, generation) {
            Ok(spare) => {
                self.retry = None;
                lock(&shared.store).retry_with(spare);
                crate::log_notice!(
                    "Retrying the failed persistence compaction (snapshot generation                      {generation})."
                );
            }
            Err(e) => {
                let wait = self.backoff;
                self.backoff = (wait * 2).min(RETRY_MAX);
                self.retry = Some(now + wait);
                crate::log_error!(
                    "Error: cannot prepare the retry of the persistence compaction, next \
                     try in {} s: {e}",
                    wait.as_secs()
                );
            }
        }
    }

    pub(super) fn run(mut self, jobs: &Receiver<Job>) {
        loop {
            let job = if let Some(deadline) = self.deadline() {
                match jobs.recv_deadline(deadline) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match jobs.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return,
                }
            };
            match job {
                Some(Job::Records(records)) => {
                    for r in records {
                        self.state.apply(r);
                    }
                    self.sync.unsynced = true;
                    if !jobs.is_empty() {
                        // Catching up (after a snapshot): let a waking shard run first.
                        std::thread::yield_now();
                    }
                }
                Some(Job::Compact(rotation)) => self.compact(rotation),
                Some(Job::Stop) => {
                    self.stop();
                    return;
                }
                None => {}
            }
            self.sync.if_due();
            if self.retry.is_some() {
                // Only after a failed compaction: no clock read per batch otherwise.
                self.retry_if_due(Instant::now());
            }
        }
    }

    fn compact(&mut self, rotation: Rotation) {
        let Rotation {
            generation,
            mut frozen,
            live,
            live_path,
        } = rotation;
        crate::log_info!(
            "Compacting persistence log into snapshot generation {generation} (in the \
             background)."
        );
        // From here on the interval fsyncs are for the new log; the frozen one is
        // fsynced first, here, so records never become durable out of order.
        let frozen_synced = frozen.sync();
        self.sync.live = live;
        self.sync.unsynced = true;
        let started = Instant::now();
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
        let (state, paths) = (&self.state, &self.paths);
        let result = frozen_synced.and_then(|()| {
            std::thread::scope(|scope| {
                let writer = std::thread::Builder::new()
                    .name("shardmq-snapshot".into())
                    .spawn_scoped(scope, move || {
                        background_priority();
                        let mut yield_cpu = || std::thread::yield_now();
                        let r = compact::run(
                            generation,
                            frozen,
                            live_path,
                            state,
                            paths,
                            &mut yield_cpu,
                        );
                        let _ = done_tx.send(());
                        r
                    });
                let writer = match writer {
                    Ok(w) => w,
                    Err(e) => return Err(Error::io(&paths.snapshot, e)),
                };
                // Meanwhile this thread keeps the interval fsyncs of the live log going (the
                // shards append to it all along; their batches wait in the channel).
                loop {
                    let deadline = self
                        .sync
                        .deadline()
                        .unwrap_or(started + SYNC_INTERVAL * 3600);
                    match done_rx.recv_deadline(deadline) {
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync.if_due();
                            self.sync.unsynced = true;
                        }
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                writer.join().unwrap_or_else(|_| {
                    Err(Error::io(
                        &paths.snapshot,
                        std::io::Error::other("snapshot thread panicked"),
                    ))
                })
            })
        });
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        match result {
            Ok(done) => {
                let len = done.snapshot_len;
                lock(&shared.store).finish_compaction(Ok(done));
                self.backoff = RETRY_FIRST;
                crate::log_info!(
                    "Saved persistence snapshot {} ({len} bytes, {} retained, {} sessions) in \
                     {} ms.",
                    self.paths.snapshot.display(),
                    self.state.retained.len(),
                    self.state.sessions.len(),
                    started.elapsed().as_millis()
                );
            }
            Err(e) => {
                lock(&shared.store).finish_compaction(Err(()));
                let wait = self.backoff;
                self.backoff = (wait * 2).min(RETRY_MAX);
                self.retry = Some(Instant::now() + wait);
                crate::metrics::persist::compaction_failed();
                crate::log_error!(
                    "Error: persistence compaction failed (the log keeps growing; retrying \
                     in {} s): {e}",
                    wait.as_secs()
                );
            }
        }
    }

    /// The final snapshot, with every shard stopped.
    fn stop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut store = lock(&shared.store);
        let generation = store.generation() + 1;
        match compact::full(&self.paths, generation, &self.state) {
            Ok(full) => {
                let len = full.snapshot_len;
                store.reset(full, generation);
                crate::log_info!(
                    "Saved persistence snapshot {} ({len} bytes, {} retained, {} sessions).",
                    self.paths.snapshot.display(),
                    self.state.retained.len(),
                    self.state.sessions.len()
                );
            }
            Err(e) => {
                crate::log_error!("Error: final persistence snapshot failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::time::Duration;

    use super::*;

    /// A file whose fsync fails: the write end of a pipe (fsync(2) gives EINVAL).
    fn unsyncable() -> File {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills two descriptors we then own.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors are open and owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(read);
        File::from(write)
    }

    #[test]
    fn a_failed_interval_fsync_is_counted_and_retried_until_one_succeeds() {
        let start = Instant::now() - Duration::from_secs(10);
        let mut sync = LiveSync {
            fsync: PersistenceFsync::Interval,
            live: unsyncable(),
            path: PathBuf::from("test.db.log"),
            unsynced: true,
            last: start,
            failing: false,
        };
        let before = crate::metrics::persist::figures_unchecked().write_failures;
        sync.if_due();
        assert!(sync.failing, "the failure starts a streak");
        assert!(sync.unsynced, "still unsynced: retried");
        assert!(sync.deadline().is_some(), "a retry is scheduled");
        assert!(crate::metrics::persist::figures_unchecked().write_failures > before);
        // The next attempt, a second later, on a file that takes the fsync.
        let dir = std::env::temp_dir().join(format!("smq-livesync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        sync.live = File::create(dir.join("log")).unwrap();
        sync.last = start;
        sync.if_due();
        assert!(!sync.failing, "the streak ends");
        assert!(!sync.unsynced);
        assert_eq!(sync.deadline(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
