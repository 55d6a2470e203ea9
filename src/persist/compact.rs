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
//! 3. the live log gets its usual name back (`renameat2(RENAME_EXCHANGE)` with the
//!    frozen one, atomic; where the file system cannot, the names stay swapped);
//! 4. the spare log of the next generation is written aside, fsynced and renamed over
//!    the frozen log, directory fsynced.
//!
//! Until 2 completes the frozen log stays, so a crash loses nothing. It never writes to
//! the live log (the shards append to it meanwhile) and never reads the clock.
//!
//! A retry after a failed compaction is the same run with the live log under a numbered
//! name (`<file>.log.<generation>`, [`Paths::numbered`]) while the usual names still hold
//! the logs of the failed attempts: its snapshot is newer than all of them, then the live
//! log takes `<file>.log` and the spare `<file>.log.swap` again.

use std::path::{Path, PathBuf};

use super::log::LogWriter;
use super::snapshot;
use super::state::State;
#[cfg(doc)]
use super::store::Rotation;
use super::store::{with_suffix, Compacted, Paths};
use super::Error;

/// Writes the snapshot of a [`Rotation`]'s `generation` from `state` (which holds
/// exactly the records of the `frozen` log and before) and prepares the next spare log.
/// `live_path`: where the new live log is. `between_chunks` runs every ~64 KiB of
/// snapshot (a background caller yields the CPU there).
pub fn run(
    generation: u64,
    mut frozen: LogWriter,
    live_path: PathBuf,
    state: &State,
    paths: &Paths,
    between_chunks: &mut dyn FnMut(),
) -> Result<Compacted, Error> {
    frozen.sync()?;
    let snapshot_len = snapshot::write_with(&paths.snapshot, generation, state, between_chunks)?;
    let frozen_path = frozen.path().to_path_buf();
    drop(frozen);
    if live_path != paths.log && live_path != paths.swap {
        // A retry after failed compactions: the live log is a numbered one, and the usual
        // names hold logs this snapshot now contains. The live log takes `<file>.log`, the
        // next spare `<file>.log.swap`, and the numbered leftovers go. A crash between
        // these steps leaves the snapshot newer than every log but the live one, which
        // recovery finds under any of the names.
        let io = |e| Error::io(&paths.log, e);
        std::fs::rename(&live_path, &paths.log).map_err(io)?;
        super::sync_dir(&paths.log).map_err(io)?;
        let spare = prepare_spare(&paths.swap, generation + 1)?;
        paths.remove_numbered_logs(&paths.log);
        return Ok(Compacted {
            spare,
            snapshot_len,
            live_path: paths.log.clone(),
        });
    }
    let (live_path, spare_path) = if live_path == paths.log {
        (live_path, frozen_path)
    } else {
        match exchange(&live_path, &frozen_path) {
            Ok(()) => (frozen_path, live_path),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                (live_path, frozen_path) // names stay swapped until the next compaction
            }
            Err(e) => return Err(Error::io(&live_path, e)),
        }
    };
    let spare = prepare_spare(&spare_path, generation + 1)?;
    Ok(Compacted {
        spare,
        snapshot_len,
        live_path,
    })
}

/// An empty log of `generation` at `path` (written aside, then renamed there).
pub fn prepare_spare(path: &Path, generation: u64) -> Result<LogWriter, Error> {
    let tmp = with_suffix(path, ".tmp");
    let mut spare = LogWriter::create(&tmp, generation)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    super::sync_dir(path).map_err(|e| Error::io(path, e))?;
    spare.moved_to(path);
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
    let spare = prepare_spare(&paths.swap, generation + 1)?;
    Ok(Full {
        live,
        spare,
        snapshot_len,
    })
}

/// Swaps the names `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`, Linux 3.15+).
pub(super) fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
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
