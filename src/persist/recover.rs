//! Opening the persistence files on start: the snapshot, then every log that is not
//! older than it, in the order of the generations in their headers (never of their
//! names: a crash may leave a compaction's name exchange undone), rebuilding the
//! [`State`] the broker restores and the [`Store`] that appends from then on.
//!
//! Accepted layouts, for a snapshot of generation S (none: S = 0):
//! - logs of generation < S: contained in the snapshot, ignored;
//! - a log of generation S, under either name: replayed, and appended to from then on
//!   (the usual case; also every layout files of earlier versions have);
//! - a log of generation S + 1 after one of generation S: a compaction was under way
//!   (the frozen log, then the new live one); both are replayed, then the compaction is
//!   finished here before the listeners open; likewise a longer chain S, S + 1, S + 2...
//!   left by compactions that failed and were retried (the later logs under numbered
//!   names, `<file>.log.<generation>`);
//! - empty logs of any later generation: spares, ignored.
//!
//! Anything else (a log with records newer than the snapshot allows) is refused, as is a
//! damaged record anywhere but at the end of a log (see [`super::log`]). A torn tail is
//! cut off with a log line.

use std::path::PathBuf;
use std::time::Instant;

use super::log::{self, LogContents, LogWriter, HEADER_LEN};
use super::state::State;
use super::store::{with_suffix, Paths, Store};
use super::{compact, snapshot, Error};
use crate::config::Config;

/// Opens (or creates) the files of `config` and rebuilds the durable state.
pub fn open(config: &Config, now: Instant) -> Result<(Store, State), Error> {
    let paths = Paths::of(config);
    if let Some(dir) = paths.snapshot.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    // Left by a crash while writing them: never read, rewritten from scratch.
    for stale in [
        snapshot::tmp_path(&paths.snapshot),
        with_suffix(&paths.log, ".tmp"),
        with_suffix(&paths.swap, ".tmp"),
    ]
    .into_iter()
    .chain(paths.numbered_tmp_files())
    {
        let _ = std::fs::remove_file(stale);
    }
    let (generation, mut state, snapshot_len) = match snapshot::read(&paths.snapshot)? {
        Some((g, s)) => {
            let len = std::fs::metadata(&paths.snapshot).map_or(0, |m| m.len());
            (g, s, len)
        }
        None => (0, State::default(), 0),
    };
    let mut logs: Vec<(PathBuf, LogContents)> = Vec::new();
    // The usual two, and the numbered logs of compactions retried after a failure.
    let numbered = paths.numbered_logs();
    for path in [&paths.log, &paths.swap].into_iter().chain(&numbered) {
        if let Some(contents) = log::read(path)? {
            if contents.generation >= generation {
                logs.push((path.clone(), contents));
            }
        }
    }
    logs.sort_by_key(|(_, c)| c.generation);
    check_generations(&logs, generation)?;

    // The usual case: at most one log has records, of the snapshot's generation (under
    // either name: after a compaction on a file system without RENAME_EXCHANGE the
    // names stay swapped).
    let data: Vec<usize> = (0..logs.len()).filter(|&i| has_data(&logs[i].1)).collect();
    let usual = data.len() <= 1 && data.iter().all(|&i| logs[i].1.generation == generation);
    let live_path = data
        .first()
        .map_or_else(|| paths.log.clone(), |&i| logs[i].0.clone());
    let live_len = data.first().map_or(0, |&i| logs[i].1.valid_len);
    for (path, contents) in &mut logs {
        if let Some(t) = &contents.torn {
            crate::log_warning!(
                "Warning: persistence log {}: torn tail at offset {} ({} bytes: {}), \
                 truncated; {} good records kept.",
                path.display(),
                t.offset,
                t.dropped,
                t.reason,
                contents.records.len()
            );
        }
        let n = contents.records.len();
        for r in contents.records.drain(..) {
            state.apply(r);
        }
        if n > 0 {
            crate::log_notice!(
                "Replayed {n} records from persistence log {}.",
                path.display()
            );
        }
    }
    if !state.is_empty() {
        crate::log_notice!(
            "Restored {} retained messages and {} persistent sessions from {}.",
            state.retained.len(),
            state.sessions.len(),
            paths.snapshot.display()
        );
    }

    if usual {
        let mut live_path = live_path;
        if live_len > 0 && live_path != paths.log && live_path != paths.swap {
            // Killed after a retried compaction's snapshot, before its live log got the
            // usual name back: every other log is older than the snapshot, or an empty
            // spare.
            std::fs::rename(&live_path, &paths.log).map_err(|e| Error::io(&paths.log, e))?;
            super::sync_dir(&paths.log).map_err(|e| Error::io(&paths.log, e))?;
            live_path = paths.log.clone();
        }
        paths.remove_numbered_logs(&live_path);
        let log = if live_len > 0 {
            LogWriter::open(&live_path, live_len)?
        } else {
            LogWriter::create(&live_path, generation)?
        };
        let spare_path = if live_path == paths.log {
            &paths.swap
        } else {
            &paths.log
        };
        let spare_ready = logs.iter().any(|(p, c)| {
            p == spare_path && c.generation == generation + 1 && c.valid_len == HEADER_LEN
        });
        let spare = if spare_ready {
            LogWriter::open(spare_path, HEADER_LEN)?
        } else {
            compact::prepare_spare(spare_path, generation + 1)?
        };
        let store = Store::new(config, log, spare, generation, snapshot_len, now);
        return Ok((store, state));
    }
    // A compaction was under way: finish it now, before anything appends.
    let newest = logs.iter().map(|(_, c)| c.generation).max().unwrap_or(0);
    let finished = newest.max(generation) + 1;
    crate::log_notice!(
        "Finishing a persistence compaction interrupted by a crash (snapshot generation \
         {finished})."
    );
    let full = compact::full(&paths, finished, &state)?;
    paths.remove_numbered_logs(&paths.log);
    let snapshot_len = full.snapshot_len;
    let store = Store::new(config, full.live, full.spare, finished, snapshot_len, now);
    Ok((store, state))
}

/// Whether a log holds anything (records, or a torn tail to cut).
fn has_data(c: &LogContents) -> bool {
    !c.records.is_empty() || c.torn.is_some()
}

/// Refuses logs that cannot follow a snapshot of `generation` (see the module doc).
fn check_generations(logs: &[(PathBuf, LogContents)], generation: u64) -> Result<(), Error> {
    let present = |g: u64| logs.iter().any(|(_, c)| c.generation == g);
    for (i, (path, c)) in logs.iter().enumerate() {
        if !has_data(c) {
            continue;
        }
        // The snapshot's own log, or one of a chain of later generations (a compaction
        // under way, possibly retried after failed ones).
        let follows =
            c.generation == generation || (c.generation > generation && present(c.generation - 1));
        let twin = logs
            .iter()
            .skip(i + 1)
            .any(|(_, o)| o.generation == c.generation && has_data(o));
        if !follows || twin {
            return Err(Error::Generation {
                path: path.clone(),
                log: c.generation,
                snapshot: generation,
            });
        }
    }
    Ok(())
}
