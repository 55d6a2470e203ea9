//! The log side of persistence, shared by the shards: appends each event-loop
//! iteration's records in one write (fsynced first with `persistence_fsync always`),
//! decides when the log is compacted (after `autosave_interval` seconds, or changes with
//! `autosave_on_changes`, when it grows past [`COMPACT_LOG_BYTES`]) and starts a
//! compaction by rotating the log in O(1): the live log and the prepared spare log of
//! the next generation swap names in one `renameat2(RENAME_EXCHANGE)`, so appends go on
//! at once into the new log while [`super::compact`] writes the snapshot elsewhere.
//!
//! Files: `<file>` (snapshot), `<file>.log` (live log) and `<file>.log.swap` (the other
//! log of the pair: the empty spare of the next generation, or, during a compaction,
//! the frozen log being compacted). Which name a log has never matters for recovery
//! ([`super::recover`] orders logs by the generation in their header), so the exchange
//! need not be durable before appends continue.
//!
//! It never holds the durable state (records go to the compactor's [`super::State`]),
//! never reads the clock (`now` is a parameter) and never does more than one write and
//! at most one fsync per call on the caller's thread.

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
    /// The log that was live until the rotation (now at the swap path).
    pub frozen: LogWriter,
    /// A handle on the new live log, for interval fsyncs.
    pub live: std::fs::File,
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
    /// A compaction failed: no more until a restart (logged), the log just grows.
    failed: bool,
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
    /// order (under the same lock).
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
        self.changes_since_compact += records.len() as u64;
        self.log.append(&self.buf)?;
        if self.fsync == PersistenceFsync::Always {
            self.log.sync()?;
        }
        Ok(())
    }

    /// fsyncs the live log.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.log.sync()
    }

    /// When a timed compaction (`autosave_interval`) is next due, if one is.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
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
        if self.log.is_empty() || !self.can_compact() {
            return false;
        }
        let big = self.log.len() > COMPACT_LOG_BYTES && self.log.len() > 2 * self.snapshot_len;
        let autosave = if self.autosave_on_changes {
            self.autosave_interval.as_secs() > 0
                && self.changes_since_compact >= self.autosave_interval.as_secs()
        } else {
            !self.autosave_interval.is_zero() && now >= self.last_compact + self.autosave_interval
        };
        big || autosave
    }

    /// Starts a compaction: the spare becomes the live log of the next generation and
    /// the live log is frozen at the swap path, in one atomic exchange of names (no
    /// fsync here). Everything appended before this call belongs to the snapshot of
    /// `Rotation::generation`, everything after to the new log.
    pub fn rotate(&mut self, now: Instant) -> Result<Rotation, Error> {
        let Some(mut spare) = self.spare.take().filter(|_| !self.compacting) else {
            return Err(Error::io(
                &self.paths.swap,
                std::io::Error::other("no spare log prepared"),
            ));
        };
        if let Err(e) = exchange(&self.paths.log, &self.paths.swap) {
            if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
                self.spare = Some(spare);
                return Err(Error::io(&self.paths.log, e));
            }
            // The filesystem cannot exchange names: move the live log aside (replacing
            // the empty spare) and create the new one here, synced (slower).
            crate::log_notice!(
                "Notice: {} does not support RENAME_EXCHANGE; log rotation syncs inline.",
                self.paths.log.display()
            );
            std::fs::rename(&self.paths.log, &self.paths.swap)
                .map_err(|e| Error::io(&self.paths.swap, e))?;
            spare = LogWriter::create(&self.paths.log, self.generation + 1)?;
        }
        spare.moved_to(&self.paths.log);
        let mut frozen = std::mem::replace(&mut self.log, spare);
        frozen.moved_to(&self.paths.swap);
        self.generation += 1;
        self.compacting = true;
        self.last_compact = now;
        self.changes_since_compact = 0;
        Ok(Rotation {
            generation: self.generation,
            frozen,
            live: self.log.sync_handle()?,
        })
    }

    /// The compaction of the last [`Rotation`] ended: the snapshot is durable and
    /// `spare` prepared (`Ok`), or it failed (`Err`: the frozen log stays, no more
    /// compactions until a restart recovers from the files).
    pub fn finish_compaction(&mut self, result: Result<(LogWriter, u64), ()>) {
        self.compacting = false;
        match result {
            Ok((spare, snapshot_len)) => {
                self.spare = Some(spare);
                self.snapshot_len = snapshot_len;
            }
            Err(()) => self.failed = true,
        }
    }

    /// After a full compaction to `generation` (shutdown): its new live log and spare.
    pub fn reset(&mut self, full: super::compact::Full, generation: u64) {
        self.log = full.live;
        self.spare = Some(full.spare);
        self.generation = generation;
        self.snapshot_len = full.snapshot_len;
        self.compacting = false;
        self.failed = false;
        self.changes_since_compact = 0;
    }
}

/// Swaps the names `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`, Linux 3.15+).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: renameat2(2) through syscall(2) (the libc wrapper is glibc-only) with two
    // NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
