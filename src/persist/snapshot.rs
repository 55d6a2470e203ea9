//! The snapshot file: a 16-byte header (magic, generation), the records that rebuild the
//! whole [`State`], and a final [`Record::End`]. Written to `<file>.tmp`, fsynced, renamed
//! over the old snapshot and the directory fsynced, so a crash leaves either the old or
//! the new snapshot, never a mix.
//!
//! It never accepts a damaged snapshot: any bad record, or a missing end marker, is an
//! error with the offset (a snapshot is never appended to, so it has no torn tail).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use bytes::BytesMut;

use super::record::{self, Record};
use super::state::State;
use super::Error;

pub const MAGIC: &[u8; 8] = b"SMQSNAP\x01";
const HEADER_LEN: usize = 16;
/// Encoded records are written in chunks of about this size.
const CHUNK: usize = 64 << 10;

pub(super) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes `state` as the snapshot of `generation` at `path`; returns its size in bytes.
pub fn write(path: &Path, generation: u64, state: &State) -> Result<u64, Error> {
    write_with(path, generation, state, &mut || {})
}

/// [`write`], calling `between_chunks` after each chunk of about [`CHUNK`] bytes (the
/// background compactor yields the CPU there). Write-out of the file is
/// started per chunk and waited for one [`WRITEBACK`] behind, so a large snapshot never
/// holds much dirty page cache (which would stall every other writer of the machine,
/// the broker's own log appends included, once the kernel throttles dirty pages).
pub fn write_with(
    path: &Path,
    generation: u64,
    state: &State,
    between_chunks: &mut dyn FnMut(),
) -> Result<u64, Error> {
    let tmp = tmp_path(path);
    let io = |e| Error::io(&tmp, e);
    let file = File::create(&tmp).map_err(io)?;
    let mut out = ChunkWriter {
        file,
        written: 0,
        started: 0,
        waited: 0,
    };
    let mut buf = BytesMut::with_capacity(CHUNK + 4096);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&generation.to_le_bytes());
    let mut failed: Option<Error> = None;
    state.to_records(|r| {
        if failed.is_some() {
            return;
        }
        if let Err(e) = record::encode(&r, &mut buf) {
            failed = Some(e.into());
            return;
        }
        if buf.len() >= CHUNK {
            if let Err(e) = out.write(&buf) {
                failed = Some(Error::io(&tmp, e));
            }
            buf.clear();
            between_chunks();
        }
    });
    if let Some(e) = failed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    record::encode(&Record::End, &mut buf)?;
    out.write(&buf).map_err(io)?;
    out.file.sync_all().map_err(io)?;
    let size = out.written;
    drop(out);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    super::sync_dir(path).map_err(|e| Error::io(path, e))?;
    Ok(size)
}

/// Bytes of a snapshot whose write-out is started at once; the range before it is
/// waited for, so at most about twice this is dirty at any time.
const WRITEBACK: u64 = 8 << 20;

/// The snapshot file being written, its write-out kept close behind.
struct ChunkWriter {
    file: File,
    written: u64,
    /// Write-out was started for everything before this offset...
    started: u64,
    /// ...and has finished for everything before this one.
    waited: u64,
}

impl ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        if self.written - self.started >= WRITEBACK {
            // Advisory, errors ignored: the fsync at the end is what makes it durable.
            let fd = self.file.as_raw_fd();
            let range = |from: u64, to: u64| {
                (
                    i64::try_from(from).unwrap_or(0),
                    i64::try_from(to - from).unwrap_or(0),
                )
            };
            let (wait_at, wait_len) = range(self.waited, self.started);
            let (start_at, start_len) = range(self.started, self.written);
            // SAFETY: sync_file_range(2) on the file descriptor this struct owns.
            unsafe {
                if wait_len > 0 {
                    libc::sync_file_range(
                        fd,
                        wait_at,
                        wait_len,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    );
                }
                libc::sync_file_range(fd, start_at, start_len, libc::SYNC_FILE_RANGE_WRITE);
            }
            self.waited = self.started;
            self.started = self.written;
        }
        Ok(())
    }
}

/// Reads the snapshot at `path`: `Ok(None)` if there is none, else its generation and
/// state.
pub fn read(path: &Path) -> Result<Option<(u64, State)>, Error> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    parse(path, &data).map(Some)
}

/// Parses snapshot bytes (split out from [`read`] for tests).
pub fn parse(path: &Path, data: &[u8]) -> Result<(u64, State), Error> {
    let corrupt = |offset: usize, reason: String| Error::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let Some(header) = data.get(..HEADER_LEN) else {
        return Err(Error::BadHeader {
            path: path.to_path_buf(),
        });
    };
    if &header[..8] != MAGIC {
        return Err(Error::BadHeader {
            path: path.to_path_buf(),
        });
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&header[8..]);
    let generation = u64::from_le_bytes(g);
    let mut state = State::default();
    let mut at = HEADER_LEN;
    loop {
        match record::decode_frame(&data[at..]) {
            Ok(Some((Record::End, used))) => {
                if at + used != data.len() {
                    return Err(corrupt(at + used, "bytes after the end marker".into()));
                }
                return Ok((generation, state));
            }
            Ok(Some((r, used))) => {
                state.apply(r);
                at += used;
            }
            Ok(None) => {
                return Err(corrupt(at, "snapshot ends before its end marker".into()));
            }
            Err(e) => return Err(corrupt(at, e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec::{ByteStr, Publish};

    fn state() -> State {
        let mut s = State::default();
        for i in 0..50 {
            s.apply(Record::Retain {
                publish: Publish {
                    retain: true,
                    topic: ByteStr::from(format!("t/{i}")),
                    payload: Bytes::from(vec![b'x'; 100]),
                    ..Publish::default()
                },
            });
        }
        s
    }

    #[test]
    fn write_then_read_gives_the_same_state() {
        let dir = std::env::temp_dir().join(format!("smq-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db");
        let s = state();
        let size = write(&path, 7, &s).unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        assert!(!tmp_path(&path).exists());
        let (generation, back) = read(&path).unwrap().unwrap();
        assert_eq!(generation, 7);
        assert_eq!(back, s);
        assert!(read(&dir.join("missing")).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_or_damaged_snapshots_are_refused() {
        let dir = std::env::temp_dir().join(format!("smq-snap2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db");
        write(&path, 1, &state()).unwrap();
        let data = std::fs::read(&path).unwrap();
        let p = Path::new("x");
        assert!(matches!(
            parse(p, &data[..data.len() - 3]),
            Err(Error::Corrupt { .. })
        ));
        let mut bad = data;
        bad[HEADER_LEN + 20] ^= 1;
        match parse(p, &bad) {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, HEADER_LEN as u64),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(p, b"SMQ"), Err(Error::BadHeader { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
