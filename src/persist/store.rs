//! The persistence store the runtime drives: opens the snapshot and log on start (torn
//! tail truncated and logged, corruption refused), appends each event-loop iteration's
//! records in one write, fsyncs per `persistence_fsync`, and compacts the log into a new
//! snapshot after `autosave_interval` (seconds, or changes with `autosave_on_changes`),
//! when the log grows past [`COMPACT_LOG_BYTES`], and at clean shutdown.
//!
//! It never reads the clock (`now` is a parameter) and never touches the broker: records
//! come in, the [`State`] they describe is kept up to date for the next snapshot.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::log::{self, LogWriter};
use super::record::{self, Record};
use super::snapshot;
use super::state::State;
use super::Error;
use crate::config::{Config, PersistenceFsync};

/// fsync period of `persistence_fsync interval`.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// A log larger than this (and than twice the last snapshot) is compacted.
pub const COMPACT_LOG_BYTES: u64 = 64 << 20;

/// The open persistence files plus the state they hold.
#[derive(Debug)]
pub struct Store {
    snapshot_path: PathBuf,
    log_path: PathBuf,
    log: LogWriter,
    generation: u64,
    state: State,
    fsync: PersistenceFsync,
    buf: BytesMut,
    /// Appended but not yet fsynced.
    unsynced: bool,
    last_sync: Instant,
    last_compact: Instant,
    changes_since_compact: u64,
    snapshot_len: u64,
    autosave_interval: Duration,
    autosave_on_changes: bool,
}

/// The snapshot and log paths for a config: `<location>/<persistence_file>` and the same
/// with `.log` appended.
pub fn paths(config: &Config) -> (PathBuf, PathBuf) {
    let dir = config
        .persistence_location
        .clone()
        .unwrap_or_else(|| PathBuf::from("."));
    let snapshot = dir.join(&config.persistence_file);
    let mut log = snapshot.clone().into_os_string();
    log.push(".log");
    (snapshot, PathBuf::from(log))
}

impl Store {
    /// Opens (or creates) the files and rebuilds the state: snapshot, then the log if it
    /// belongs to that snapshot's generation. A torn log tail is cut off and logged.
    pub fn open(config: &Config, now: Instant) -> Result<Self, Error> {
        let (snapshot_path, log_path) = paths(config);
        if let Some(dir) = snapshot_path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
        }
        let (generation, mut state, snapshot_len) = match snapshot::read(&snapshot_path)? {
            Some((g, s)) => {
                let len = std::fs::metadata(&snapshot_path).map_or(0, |m| m.len());
                (g, s, len)
            }
            None => (0, State::default(), 0),
        };
        let log = match log::read(&log_path)? {
            Some(contents) if contents.generation == generation && contents.valid_len > 0 => {
                if let Some(t) = &contents.torn {
                    crate::log_warning!(
                        "Warning: persistence log {}: torn tail at offset {} ({} bytes: {}), \
                         truncated; {} good records kept.",
                        log_path.display(),
                        t.offset,
                        t.dropped,
                        t.reason,
                        contents.records.len()
                    );
                }
                let n = contents.records.len();
                for r in contents.records {
                    state.apply(r);
                }
                if n > 0 {
                    crate::log_notice!(
                        "Replayed {n} records from persistence log {}.",
                        log_path.display()
                    );
                }
                LogWriter::open(&log_path, contents.valid_len)?
            }
            Some(contents) if contents.generation > generation => {
                return Err(Error::Generation {
                    path: log_path,
                    log: contents.generation,
                    snapshot: generation,
                });
            }
            // No log, a header-less one, or one the snapshot already contains.
            _ => LogWriter::create(&log_path, generation)?,
        };
        if !state.is_empty() {
            crate::log_notice!(
                "Restored {} retained messages and {} persistent sessions from {}.",
                state.retained.len(),
                state.sessions.len(),
                snapshot_path.display()
            );
        }
        Ok(Self {
            snapshot_path,
            log_path,
            log,
            generation,
            state,
            fsync: config.persistence_fsync,
            buf: BytesMut::with_capacity(64 * 1024),
            unsynced: false,
            last_sync: now,
            last_compact: now,
            changes_since_compact: 0,
            snapshot_len,
            autosave_interval: config.autosave_interval,
            autosave_on_changes: config.autosave_on_changes,
        })
    }

    /// The durable state (what the broker restores on start).
    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn snapshot_path(&self) -> &Path {
        &self.snapshot_path
    }

    /// Appends `records` (one event-loop iteration's) in one write and applies them to
    /// the state; with `persistence_fsync always` also fsyncs, so the caller may then
    /// release acknowledgements. `records` is left empty.
    pub fn append(&mut self, records: &mut Vec<Record>, now: Instant) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for r in records.iter() {
            if let Err(e) = record::encode(r, &mut self.buf) {
                crate::log_warning!("Warning: persistence record not stored: {e}");
            }
        }
        self.changes_since_compact += records.len() as u64;
        for r in records.drain(..) {
            self.state.apply(r);
        }
        self.log.append(&self.buf)?;
        self.unsynced = true;
        if self.fsync == PersistenceFsync::Always {
            self.sync(now)?;
        }
        Ok(())
    }

    /// fsyncs the log if anything was appended since the last sync.
    pub fn sync(&mut self, now: Instant) -> Result<(), Error> {
        if self.unsynced {
            self.log.sync()?;
            self.unsynced = false;
        }
        self.last_sync = now;
        Ok(())
    }

    /// When [`Store::tick`] next has work (an interval fsync or a timed compaction).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sync = (self.unsynced && self.fsync == PersistenceFsync::Interval)
            .then(|| self.last_sync + SYNC_INTERVAL);
        let compact = (!self.autosave_on_changes
            && !self.autosave_interval.is_zero()
            && !self.log.is_empty())
        .then(|| self.last_compact + self.autosave_interval);
        match (sync, compact) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Periodic work: the interval fsync and compaction when due.
    pub fn tick(&mut self, now: Instant) -> Result<(), Error> {
        if self.unsynced
            && self.fsync == PersistenceFsync::Interval
            && now >= self.last_sync + SYNC_INTERVAL
        {
            self.sync(now)?;
        }
        if self.compaction_due(now) {
            self.compact(now)?;
        }
        Ok(())
    }

    fn compaction_due(&self, now: Instant) -> bool {
        if self.log.is_empty() {
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

    /// Writes the state as a new snapshot (next generation) and starts an empty log. A
    /// crash in between leaves the old log, whose older generation marks it as contained
    /// in the new snapshot.
    pub fn compact(&mut self, now: Instant) -> Result<(), Error> {
        let generation = self.generation + 1;
        self.snapshot_len = snapshot::write(&self.snapshot_path, generation, &self.state)?;
        self.generation = generation;
        self.log = LogWriter::create(&self.log_path, generation)?;
        self.unsynced = false;
        self.last_sync = now;
        self.last_compact = now;
        self.changes_since_compact = 0;
        crate::log_info!(
            "Saved persistence snapshot {} ({} bytes, {} retained, {} sessions).",
            self.snapshot_path.display(),
            self.snapshot_len,
            self.state.retained.len(),
            self.state.sessions.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec::{ByteStr, Publish};

    fn config(tag: &str) -> Config {
        let dir = std::env::temp_dir().join(format!("smq-store-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Config {
            persistence: true,
            persistence_location: Some(dir),
            persistence_file: "test.db".into(),
            ..Config::default()
        }
    }

    fn retain(topic: &str, payload: &'static [u8]) -> Record {
        Record::Retain {
            publish: Publish {
                retain: true,
                topic: ByteStr::from(topic),
                payload: Bytes::from_static(payload),
                ..Publish::default()
            },
        }
    }

    #[test]
    fn appended_records_survive_reopen_and_compaction() {
        let c = config("reopen");
        let now = Instant::now();
        let mut s = Store::open(&c, now).unwrap();
        s.append(&mut vec![retain("a", b"1"), retain("b", b"2")], now)
            .unwrap();
        drop(s);
        let mut s = Store::open(&c, now).unwrap();
        assert_eq!(s.state().retained.len(), 2);
        s.compact(now).unwrap();
        s.append(&mut vec![retain("a", b"")], now).unwrap();
        drop(s);
        let s = Store::open(&c, now).unwrap();
        assert_eq!(s.state().retained.len(), 1);
        assert_eq!(s.generation, 1);
        let _ = std::fs::remove_dir_all(c.persistence_location.unwrap());
    }

    #[test]
    fn an_old_generation_log_is_ignored_after_compaction() {
        let c = config("gen");
        let now = Instant::now();
        let (snap, log_path) = paths(&c);
        let mut s = Store::open(&c, now).unwrap();
        s.append(&mut vec![retain("a", b"1")], now).unwrap();
        let old_log = std::fs::read(&log_path).unwrap();
        s.compact(now).unwrap();
        drop(s);
        // Crash between the snapshot rename and the new log: the old log is still there.
        std::fs::write(&log_path, old_log).unwrap();
        let s = Store::open(&c, now).unwrap();
        assert_eq!(s.state().retained.len(), 1);
        drop(s);
        std::fs::remove_file(&snap).unwrap();
        // The log is now newer than the (missing) snapshot: refuse.
        let mut l = LogWriter::create(&log_path, 5).unwrap();
        l.append(b"").unwrap();
        assert!(matches!(
            Store::open(&c, now),
            Err(Error::Generation { .. })
        ));
        let _ = std::fs::remove_dir_all(c.persistence_location.unwrap());
    }

    #[test]
    fn interval_sync_is_scheduled_only_when_needed() {
        let c = config("tick");
        let now = Instant::now();
        let mut s = Store::open(&c, now).unwrap();
        assert_eq!(s.poll_timeout(), None);
        s.append(&mut vec![retain("a", b"1")], now).unwrap();
        let at = s.poll_timeout().unwrap();
        assert!(at <= now + SYNC_INTERVAL);
        s.tick(at).unwrap();
        assert!(!s.unsynced);
        let _ = std::fs::remove_dir_all(c.persistence_location.unwrap());
    }
}
