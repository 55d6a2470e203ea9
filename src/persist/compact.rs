//! Compaction, the part that runs off the shard threads: given a [`Rotation`] (the log
//! frozen by [`super::Store::rotate`]) and the [`State`] holding exactly the records
//! appended before it, writes the snapshot of the rotation's generation and prepares
//! the next spare log. Also the full compaction of shutdown and of a start after a crash
//! in the middle of one.
//!
//! Crash safety, step by step (each leaves files [`super::recover`] reads correctly):
//! 1. the frozen log is fsynced (its tail may still be in the page cache with
//!    `persistence_fsync interval`; it must be durable before any later record is);
//! 2. the snapshot goes to `<file>.tmp`, is fsynced and renamed over `<file>`, and the
//!    directory is fsynced: from then on the frozen log is older than the snapshot;
//! 3. the spare log of the next generation is written to `<file>.log.swap.tmp`,
//!    fsynced and renamed over the frozen log, directory fsynced.
//!
//! Until 2 completes the frozen log stays, so a crash loses nothing. It never touches
//! the live log (the shards append to it meanwhile) and never reads the clock.

use super::log::LogWriter;
use super::snapshot;
use super::state::State;
#[cfg(doc)]
use super::store::Rotation;
use super::store::{with_suffix, Paths};
use super::Error;

/// Writes the snapshot of generation `generation` (from a [`Rotation`]) from `state`,
/// which holds exactly the records of the `frozen` log and before, and prepares the
/// next spare log; returns the spare and the snapshot's size. `between_chunks` runs
/// every ~256 KiB of snapshot (a background caller yields the CPU there).
pub fn run(
    generation: u64,
    mut frozen: LogWriter,
    state: &State,
    paths: &Paths,
    between_chunks: &mut dyn FnMut(),
) -> Result<(LogWriter, u64), Error> {
    frozen.sync()?;
    let len = snapshot::write_with(&paths.snapshot, generation, state, between_chunks)?;
    drop(frozen);
    let spare = prepare_spare(paths, generation + 1)?;
    Ok((spare, len))
}

/// An empty log of `generation` at the swap path (written aside, then renamed there).
pub fn prepare_spare(paths: &Paths, generation: u64) -> Result<LogWriter, Error> {
    let tmp = with_suffix(&paths.swap, ".tmp");
    let mut spare = LogWriter::create(&tmp, generation)?;
    std::fs::rename(&tmp, &paths.swap).map_err(|e| Error::io(&paths.swap, e))?;
    super::sync_dir(&paths.swap).map_err(|e| Error::io(&paths.swap, e))?;
    spare.moved_to(&paths.swap);
    Ok(spare)
}

/// What a full compaction leaves: the live log, the spare and the snapshot's size.
#[derive(Debug)]
pub struct Full {
    pub live: LogWriter,
    pub spare: LogWriter,
    pub snapshot_len: u64,
}

/// Writes all of `state` as the snapshot of `generation` (newer than every log on
/// disk), then starts an empty live log and a spare. Only while nothing appends: at
/// shutdown, and on start after a crash in the middle of a compaction.
pub fn full(paths: &Paths, generation: u64, state: &State) -> Result<Full, Error> {
    let snapshot_len = snapshot::write(&paths.snapshot, generation, state)?;
    let live = LogWriter::create(&paths.log, generation)?;
    let spare = prepare_spare(paths, generation + 1)?;
    Ok(Full {
        live,
        spare,
        snapshot_len,
    })
}
