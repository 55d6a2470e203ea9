//! The append-only log file: a 16-byte header (magic, generation) then framed records.
//! [`read`] parses it and tells a torn tail (the last write cut short: truncate it) from a
//! corrupt record followed by good data (refuse to start); [`LogWriter`] appends one
//! buffer per event-loop iteration and syncs when told. An append that fails leaves no
//! bytes behind: the file is cut back to its length before it (now, or before the next
//! append if even the cut fails), so a retry never puts a torn record in the middle of
//! the log.
//!
//! It never decides when to sync or compact (the store does) and never panics on what it
//! reads.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Record};
use super::Error;

pub const MAGIC: &[u8; 8] = b"SMQLOG\x00\x01";
pub const HEADER_LEN: u64 = 16;

/// How far past a bad record the reader looks for good records before calling the bad
/// record a torn tail rather than corruption.
const TORN_SCAN_LIMIT: usize = 1 << 20;

/// A torn tail found by [`read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub offset: u64,
    pub dropped: u64,
    pub reason: String,
}

/// What [`read`] found.
#[derive(Debug)]
pub struct LogContents {
    pub generation: u64,
    pub records: Vec<Record>,
    /// Bytes of header and good records; the writer truncates the file to this.
    pub valid_len: u64,
    pub torn: Option<TornTail>,
}

/// Reads the log at `path`; `Ok(None)` if there is none.
pub fn read(path: &Path) -> Result<Option<LogContents>, Error> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    Ok(Some(parse(path, &data)?))
}

/// Parses log bytes (split out from [`read`] for tests).
pub fn parse(path: &Path, data: &[u8]) -> Result<LogContents, Error> {
    let Some(header) = data.get(..HEADER_LEN as usize) else {
        // Not even a header: the file was being created when we stopped.
        if !MAGIC.starts_with(&data[..data.len().min(MAGIC.len())]) {
            return Err(Error::BadHeader {
                path: path.to_path_buf(),
            });
        }
        return Ok(LogContents {
            generation: 0,
            records: Vec::new(),
            valid_len: 0,
            torn: (!data.is_empty()).then(|| TornTail {
                offset: 0,
                dropped: data.len() as u64,
                reason: "incomplete header".into(),
            }),
        });
    };
    if &header[..8] != MAGIC {
        return Err(Error::BadHeader {
            path: path.to_path_buf(),
        });
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&header[8..16]);
    let generation = u64::from_le_bytes(g);
    let mut records = Vec::new();
    let mut at = HEADER_LEN as usize;
    while at < data.len() {
        let rest = &data[at..];
        match record::decode_frame(rest) {
            Ok(Some((r, used))) => {
                records.push(r);
                at += used;
            }
            Ok(None) => {
                let reason = "record cut short at the end of the file".to_string();
                return finish_torn(path, data, at, reason, generation, records);
            }
            Err(e) => {
                let claimed_end =
                    record::frame_len(rest).map_or(usize::MAX, |n| at.saturating_add(n));
                let zeros = rest.iter().all(|&b| b == 0);
                if claimed_end == data.len() || zeros {
                    return finish_torn(path, data, at, e.to_string(), generation, records);
                }
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    offset: at as u64,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(LogContents {
        generation,
        records,
        valid_len: at as u64,
        torn: None,
    })
}

/// The bad bytes at `at` reach the end of the file. They are a torn tail unless a good
/// record follows them (then the length field itself was damaged: corruption).
fn finish_torn(
    path: &Path,
    data: &[u8],
    at: usize,
    reason: String,
    generation: u64,
    records: Vec<Record>,
) -> Result<LogContents, Error> {
    let rest = &data[at..];
    if rest.len() <= TORN_SCAN_LIMIT && !rest.iter().all(|&b| b == 0) {
        for start in 1..rest.len() {
            if let Ok(Some(_)) = record::decode_frame(&rest[start..]) {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    offset: at as u64,
                    reason: format!("{reason}; good records follow at offset {}", at + start),
                });
            }
        }
    } else if rest.len() > TORN_SCAN_LIMIT {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            offset: at as u64,
            reason: format!("{reason}; {} bytes follow it", rest.len()),
        });
    }
    Ok(LogContents {
        generation,
        records,
        valid_len: at as u64,
        torn: Some(TornTail {
            offset: at as u64,
            dropped: rest.len() as u64,
            reason,
        }),
    })
}

/// Appends to the log.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    path: PathBuf,
    /// Bytes of header and complete, successfully appended records.
    len: u64,
    /// The file may hold bytes past `len` (a failed append, or bytes whose fsync failed):
    /// they are cut off before anything else is written.
    dirty: bool,
    #[cfg(test)]
    pub(super) faults: Faults,
}

/// Failures a test injects into a [`LogWriter`] (the file itself stays real).
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct Faults {
    /// The next append writes this many bytes of its buffer, then fails (EFBIG).
    pub write_after: Option<usize>,
    /// The next syncs fail (EIO), this many of them.
    pub syncs: u32,
    /// The next cuts (truncations) fail, this many of them.
    pub cuts: u32,
}

impl LogWriter {
    /// Creates (or empties) the log with a new header, synced with its directory.
    pub fn create(path: &Path, generation: u64) -> Result<Self, Error> {
        let io = |e| Error::io(path, e);
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(io)?;
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&generation.to_le_bytes());
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        super::sync_dir(path).map_err(io)?;
        Ok(Self::with(file, path, HEADER_LEN))
    }

    /// Opens an existing log for appending after its first `valid_len` bytes (a torn
    /// tail beyond them is cut off and the cut synced).
    pub fn open(path: &Path, valid_len: u64) -> Result<Self, Error> {
        let io = |e| Error::io(path, e);
        let mut file = OpenOptions::new().write(true).open(path).map_err(io)?;
        let on_disk = file.metadata().map_err(io)?.len();
        if on_disk != valid_len {
            file.set_len(valid_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::Start(valid_len)).map_err(io)?;
        Ok(Self::with(file, path, valid_len))
    }

    fn with(file: File, path: &Path, len: u64) -> Self {
        Self {
            file,
            path: path.to_path_buf(),
            len,
            dirty: false,
            #[cfg(test)]
            faults: Faults::default(),
        }
    }

    /// Writes `bytes` (one iteration's records) at the end of the log, all or nothing:
    /// on an error, whatever part of them reached the file is cut off again (see
    /// [`LogWriter::rewind`]) and the log's length is what it was.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.cut()?;
        if let Err(e) = self.write_all(bytes) {
            self.dirty = true;
            // Best effort now; if it fails, the next append cuts first.
            let _ = self.cut();
            return Err(Error::io(&self.path, e));
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.faults.write_after.take() {
            self.file.write_all(&bytes[..n.min(bytes.len())])?;
            return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
        }
        self.file.write_all(bytes)
    }

    /// Forgets everything after the first `len` bytes (appended records whose fsync
    /// failed) and cuts the file back to them; if the cut fails, the next append retries
    /// it before writing.
    pub fn rewind(&mut self, len: u64) -> Result<(), Error> {
        self.len = self.len.min(len.max(HEADER_LEN));
        self.dirty = true;
        self.cut()
    }

    /// Whether bytes past the log's length may still be in the file (a cut failed).
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Truncates the file to `len` and puts the write position there, if dirty.
    fn cut(&mut self) -> Result<(), Error> {
        if !self.dirty {
            return Ok(());
        }
        #[cfg(test)]
        if self.faults.cuts > 0 {
            self.faults.cuts -= 1;
            return Err(Error::io(&self.path, std::io::Error::other("injected")));
        }
        let io = |e| Error::io(&self.path, e);
        self.file.set_len(self.len).map_err(io)?;
        self.file.seek(SeekFrom::Start(self.len)).map_err(io)?;
        self.dirty = false;
        Ok(())
    }

    /// fdatasync: everything appended so far survives power loss.
    pub fn sync(&mut self) -> Result<(), Error> {
        #[cfg(test)]
        if self.faults.syncs > 0 {
            self.faults.syncs -= 1;
            return Err(Error::io(
                &self.path,
                std::io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// A second handle on the file, for a thread that fsyncs it (`persistence_fsync
    /// interval`) while this one appends.
    pub fn sync_handle(&self) -> Result<File, Error> {
        self.file.try_clone().map_err(|e| Error::io(&self.path, e))
    }

    /// The file was renamed to `path` (the handle stays valid).
    pub(super) fn moved_to(&mut self, path: &Path) {
        path.clone_into(&mut self.path);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len <= HEADER_LEN
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::codec::ByteStr;

    fn gone(i: usize) -> Record {
        Record::SessionGone {
            client_id: ByteStr::from(format!("client-{i}")),
        }
    }

    fn log_bytes(n: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&3u64.to_le_bytes());
        let mut starts = Vec::new();
        for i in 0..n {
            starts.push(buf.len());
            record::encode(&gone(i), &mut buf).unwrap();
        }
        (buf.to_vec(), starts)
    }

    #[test]
    fn reads_every_record_and_the_generation() {
        let (data, _) = log_bytes(5);
        let c = parse(Path::new("x"), &data).unwrap();
        assert_eq!(c.generation, 3);
        assert_eq!(c.records.len(), 5);
        assert_eq!(c.valid_len, data.len() as u64);
        assert!(c.torn.is_none());
    }

    #[test]
    fn a_cut_anywhere_in_the_last_record_is_a_torn_tail() {
        let (data, starts) = log_bytes(4);
        let last = starts[3];
        for cut in last + 1..data.len() {
            let c = parse(Path::new("x"), &data[..cut]).unwrap();
            assert_eq!(c.records.len(), 3, "cut {cut}");
            assert_eq!(c.valid_len, last as u64);
            assert_eq!(c.torn.as_ref().unwrap().offset, last as u64);
        }
    }

    #[test]
    fn a_damaged_last_record_is_a_torn_tail() {
        let (mut data, starts) = log_bytes(4);
        let n = data.len();
        data[n - 1] ^= 0xff;
        let c = parse(Path::new("x"), &data).unwrap();
        assert_eq!(c.records.len(), 3);
        assert_eq!(c.torn.unwrap().offset, starts[3] as u64);
    }

    #[test]
    fn zeros_after_good_records_are_a_torn_tail() {
        let (mut data, _) = log_bytes(2);
        let good = data.len() as u64;
        data.extend_from_slice(&[0u8; 100]);
        let c = parse(Path::new("x"), &data).unwrap();
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.valid_len, good);
    }

    #[test]
    fn a_damaged_record_in_the_middle_is_corruption_with_its_offset() {
        let (mut data, starts) = log_bytes(4);
        data[starts[1] + 10] ^= 0x01;
        match parse(Path::new("x"), &data) {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, starts[1] as u64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_damaged_length_in_the_middle_is_corruption() {
        let (mut data, starts) = log_bytes(4);
        data[starts[1] + 2] = 0x7f; // claims a body far past the end of the file
        match parse(Path::new("x"), &data) {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, starts[1] as u64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn foreign_files_are_refused() {
        assert!(matches!(
            parse(Path::new("x"), b"mosquitto db file ......"),
            Err(Error::BadHeader { .. })
        ));
        let c = parse(Path::new("x"), &MAGIC[..5]).unwrap();
        assert_eq!(c.valid_len, 0);
        assert!(c.torn.is_some());
    }
}
