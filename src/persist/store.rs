//! The log side of persistence, shared by the shards: appends each event-loop
//! iteration's records in one write (fsynced first with `persistence_fsync always`),
//! decides when the log is compacted (after `autosave_interval` seconds, or changes with
//! `autosave_on_changes`, when it grows past [`COMPACT_LOG_BYTES`]) and starts a
//! compaction by rotating the log in memory: appends go on at once into the spare log of
//! the next generation (prepared in advance, on disk and synced), and [`super::compact`]
//! writes the snapshot of everything before, off the shard threads.
//!
//! Files: `<file>` (snapshot), `<file>.log` (live log) and `<file>.log.swap` (the other
//! log of the pair: the empty spare of the next generation, or, during a compaction,
//! the new live log while the frozen one is still at `<file>.log`; the compactor swaps
//! the names back afterwards). Which name a log has never matters for recovery
//! ([`super::recover`] orders logs by the generation in their header).
//!
//! It never holds the durable state (records go to the compactor's [`super::State`]),
//! never reads the clock (`now` is a parameter), and does at most one write and one
//! fsync per call on the caller's thread, and no file-system metadata operation at all
//! (a rename can wait for a journal commit).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::log::LogWriter;
use super::record::{self, Record};
use super::Error;
use crate::config::{Config, PersistenceFsync};

/// fsync period of `persistence_fsync interval`.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// A log larger than this (and than twice the last snapshot) is compacted.
pub const COMPACT_LOG_BYTES: u64 = 64 << 20;

/// Where the persistence files of a config live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `<location>/<persistence_file>`.
    pub snapshot: PathBuf,
    /// The same with `.log` appended.
    pub log: PathBuf,
    /// The same with `.log.swap` appended.
    pub swap: PathBuf,
}

impl Paths {
    /// Where the spare log of `generation` goes when a compaction is retried after a
    /// failed one: `<file>.log.<generation>`, beside the two usual logs (which may both
    /// still hold records the retry's snapshot has to cover).
    #[must_use]
    pub fn numbered(&self, generation: u64) -> PathBuf {
        with_suffix(&self.log, &format!(".{generation}"))
    }

    /// The numbered logs (`<file>.log.<n>`) in the directory, left by retried
    /// compactions.
    pub fn numbered_logs(&self) -> Vec<PathBuf> {
        self.numbered_files(false)
    }

    /// Their temporary files (`<file>.log.<n>.tmp`), left by a crash while one was
    /// prepared.
    pub fn numbered_tmp_files(&self) -> Vec<PathBuf> {
        self.numbered_files(true)
    }

    fn numbered_files(&self, tmp: bool) -> Vec<PathBuf> {
        let (Some(dir), Some(name)) = (self.log.parent(), self.log.file_name()) else {
            return Vec::new();
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let mut prefix = name.to_owned();
        prefix.push(".");
        let prefix = prefix.as_encoded_bytes().to_vec();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let matches = |n: &[u8]| {
            let Some(rest) = n.strip_prefix(prefix.as_slice()) else {
                return false;
            };
            let digits = if tmp {
                match rest.strip_suffix(b".tmp") {
                    Some(d) => d,
                    None => return false,
                }
            } else {
                rest
            };
            !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| matches(e.file_name().as_encoded_bytes()))
            .map(|e| self.log.with_file_name(e.file_name()))
            .collect();
        found.sort();
        found
    }

    /// Removes the numbered logs other than `keep` (all of them older than the snapshot
    /// on disk; best effort: a leftover is ignored by recovery and removed next time).
    pub fn remove_numbered_logs(&self, keep: &Path) {
        let mut removed = false;
        for p in self.numbered_logs() {
            if p != keep {
                removed |= std::fs::remove_file(&p).is_ok();
            }
        }
        if removed {
            let _ = super::sync_dir(&self.log);
        }
    }

    pub fn of(config: &Config) -> Self {
        let dir = config
            .persistence_location
            .clone()
            .unwrap_or_else(|| PathBuf::from("."));
        let snapshot = dir.join(&config.persistence_file);
        let log = with_suffix(&snapshot, ".log");
        let swap = with_suffix(&snapshot, ".log.swap");
        Self {
            snapshot,
            log,
            swap,
        }
    }
}

pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A started compaction, for the compactor: the state it has applied up to the moment
/// of the rotation is exactly what the snapshot of `generation` must hold.
#[derive(Debug)]
pub struct Rotation {
    /// Generation of the snapshot to write (and of the new live log).
    pub generation: u64,
    /// The log that was live until the rotation.
    pub frozen: LogWriter,
    /// A handle on the new live log, for interval fsyncs, and where it is.
    pub live: std::fs::File,
    pub live_path: PathBuf,
}

/// A finished compaction, for the store.
#[derive(Debug)]
pub struct Compacted {
    /// The spare log of the next generation.
    pub spare: LogWriter,
    pub snapshot_len: u64,
    /// Where the live log is now (its name may have been swapped back).
    pub live_path: PathBuf,
}

/// The live log and the decisions about it.
#[derive(Debug)]
pub struct Store {
    paths: Paths,
    log: LogWriter,
    /// The empty log of the next generation, waiting at the swap path (`None` while a
    /// compaction runs, or after one failed).
    spare: Option<LogWriter>,
    /// Of the live log, and of the snapshot being or last written.
    generation: u64,
    fsync: PersistenceFsync,
    buf: BytesMut,
    compacting: bool,
    /// A compaction failed: none starts until the compactor hands a new spare
    /// ([`Store::retry_with`]); the log grows meanwhile.
    failed: bool,
    /// A spare came with [`Store::retry_with`]: the next compaction is due at once.
    retry_due: bool,
    last_compact: Instant,
    changes_since_compact: u64,
    snapshot_len: u64,
    autosave_interval: Duration,
    autosave_on_changes: bool,
}

impl Store {
    /// A store appending to `log` (generation `generation`) with `spare` prepared.
    pub(super) fn new(
        config: &Config,
        log: LogWriter,
        spare: LogWriter,
        generation: u64,
        snapshot_len: u64,
        now: Instant,
    ) -> Self {
        Self {
            paths: Paths::of(config),
            log,
            spare: Some(spare),
            generation,
            fsync: config.persistence_fsync,
            buf: BytesMut::with_capacity(64 * 1024),
            compacting: false,
            failed: false,
            retry_due: false,
            last_compact: now,
            changes_since_compact: 0,
            snapshot_len,
            autosave_interval: config.autosave_interval,
            autosave_on_changes: config.autosave_on_changes,
        }
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn fsync(&self) -> PersistenceFsync {
        self.fsync
    }

    /// A handle on the live log for the thread that fsyncs it (`persistence_fsync
    /// interval`).
    pub fn live_handle(&self) -> Result<std::fs::File, Error> {
        self.log.sync_handle()
    }

    /// Appends `records` (one event-loop iteration's) in one write; with
    /// `persistence_fsync always` also fsyncs, so the caller may then release
    /// acknowledgements. The caller hands the same records to the compactor, in the same
    /// order (under the same lock), only when this succeeded.
    ///
    /// All or nothing: on an error the log is as before the call (the bytes that reached
    /// the file are cut off again, or before the next append if even the cut fails), so
    /// the caller keeps the records and retries them later.
    pub fn append(&mut self, records: &[Record]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for r in records {
            if let Err(e) = record::encode(r, &mut self.buf) {
                crate::log_warning!("Warning: persistence record not stored: {e}");
            }
        }
        let before = self.log.len();
        self.log.append(&self.buf)?;
        if self.fsync == PersistenceFsync::Always {
            if let Err(e) = self.log.sync() {
                // fsyncgate: after a failed fsync the kernel may have dropped the dirty
                // pages (or marked them clean) and a second fsync can succeed without
                // writing them. PostgreSQL panics and replays its WAL; we have no WAL
                // beyond this log, so we treat the whole write as not done: cut it off
                // and let the caller write the batch again and fsync that. The records
                // before it were fsynced by earlier appends; rewriting the page they
                // share with this batch makes it dirty again, so it is written again.
                let _ = self.log.rewind(before);
                return Err(e);
            }
        }
        // A retained message's source travels with it: one change, not two.
        let sources = records
            .iter()
            .filter(|r| matches!(r, Record::RetainSource { .. }))
            .count();
        self.changes_since_compact += (records.len() - sources) as u64;
        Ok(())
    }

    /// The live log, for tests that inject failures into it.
    #[cfg(test)]
    pub(super) fn log_mut(&mut self) -> &mut LogWriter {
        &mut self.log
    }

    /// Bytes in the live log.
    pub fn log_len(&self) -> u64 {
        self.log.len()
    }

    /// fsyncs the live log.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.log.sync()
    }

    /// When a timed compaction (`autosave_interval`) is next due, if one is.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.retry_due && self.can_compact() && !self.log.is_empty() {
            return Some(self.last_compact);
        }
        (!self.autosave_on_changes
            && !self.autosave_interval.is_zero()
            && !self.log.is_empty()
            && self.can_compact())
        .then(|| self.last_compact + self.autosave_interval)
    }

    fn can_compact(&self) -> bool {
        !self.compacting && !self.failed && self.spare.is_some()
    }

    /// Whether a compaction should start now.
    pub fn compaction_due(&self, now: Instant) -> bool {
        // Not over bytes of a failed append that could not be cut off yet.
        if self.log.is_empty() || !self.can_compact() || self.log.is_dirty() {
            return false;
        }
        let big = self.log.len() > COMPACT_LOG_BYTES && self.log.len() > 2 * self.snapshot_len;
        let autosave = if self.autosave_on_changes {
            self.autosave_interval.as_secs() > 0
                && self.changes_since_compact >= self.autosave_interval.as_secs()
        } else {
            !self.autosave_interval.is_zero() && now >= self.last_compact + self.autosave_interval
        };
        big || autosave || self.retry_due
    }

    /// Starts a compaction: the spare becomes the live log of the next generation (a
    /// swap of file handles, nothing else). Everything appended before this call
    /// belongs to the snapshot of `Rotation::generation`, everything after to the new
    /// log.
    pub fn rotate(&mut self, now: Instant) -> Result<Rotation, Error> {
        if self.compacting {
            return Err(Error::io(
                &self.paths.swap,
                std::io::Error::other("a compaction is already running"),
            ));
        }
        let Some(spare) = self.spare.take() else {
            return Err(Error::io(
                &self.paths.swap,
                std::io::Error::other("no spare log prepared"),
            ));
        };
        let live = match spare.sync_handle() {
            Ok(live) => live,
            Err(e) => {
                self.spare = Some(spare); // kept for the next attempt
                return Err(e);
            }
        };
        let frozen = std::mem::replace(&mut self.log, spare);
        self.generation += 1;
        self.compacting = true;
        self.retry_due = false;
        self.last_compact = now;
        self.changes_since_compact = 0;
        Ok(Rotation {
            generation: self.generation,
            frozen,
            live,
            live_path: self.log.path().to_path_buf(),
        })
    }

    /// The compaction of the last [`Rotation`] ended: the snapshot is durable and the
    /// next spare prepared (`Ok`), or it failed (`Err`: the frozen log stays, and no
    /// compaction starts until [`Store::retry_with`]).
    pub fn finish_compaction(&mut self, result: Result<Compacted, ()>) {
        self.compacting = false;
        match result {
            Ok(done) => {
                self.log.moved_to(&done.live_path);
                self.spare = Some(done.spare);
                self.snapshot_len = done.snapshot_len;
            }
            Err(()) => self.failed = true,
        }
    }

    /// After a failed compaction: `spare` (of generation [`Store::generation`] + 1, at
    /// [`Paths::numbered`]) lets the next one start, at once. Its snapshot covers every
    /// log left by the failed ones (see [`super::compact::run`]).
    pub fn retry_with(&mut self, spare: LogWriter) {
        debug_assert!(self.failed && !self.compacting);
        self.spare = Some(spare);
        self.failed = false;
        self.retry_due = true;
    }

    /// Whether a compaction failed and no retry has started yet.
    pub fn compaction_failed(&self) -> bool {
        self.failed
    }

    /// After a full compaction to `generation` (shutdown): its new live log and spare.
    pub fn reset(&mut self, full: super::compact::Full, generation: u64) {
        self.log = full.live;
        self.spare = Some(full.spare);
        self.generation = generation;
        self.snapshot_len = full.snapshot_len;
        self.compacting = false;
        self.failed = false;
        self.retry_due = false;
        self.changes_since_compact = 0;
    }
}
