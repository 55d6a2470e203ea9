//! The persistence layer's error type. Every variant names the file; a corrupt record
//! also names its offset and says how to start anyway, because the broker never starts
//! empty over data it could not read.

use std::path::PathBuf;

use super::record::RecordError;

/// Why the persistence files cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file cannot be opened, read, written or synced.
    #[error("persistence file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A record cannot be decoded: the broker refuses to start over it.
    #[error(
        "persistence file {p}: corrupt record at offset {offset}: {reason}. Refusing to start \
         over data that cannot be read; to start without it, move the file aside \
         (mv {p} {p}.corrupt) and restart",
        p = path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the record starts, in bytes.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is not shardmq's (e.g. a Mosquitto database).
    #[error(
        "persistence file {p}: not a shardmq persistence file (bad header; a Mosquitto \
         database cannot be read). Move it aside (mv {p} {p}.old) or set persistence_file",
        p = path.display()
    )]
    BadHeader {
        /// The file.
        path: PathBuf,
    },
    /// The log is newer than the snapshot: the snapshot is missing or old.
    #[error(
        "persistence file {p}: generation {log} is newer than the snapshot's ({snapshot}); \
         the snapshot is missing or old. Move both files aside to start empty",
        p = path.display()
    )]
    Generation {
        /// The log.
        path: PathBuf,
        /// The log's generation.
        log: u64,
        /// The snapshot's generation.
        snapshot: u64,
    },
    /// A record could not be encoded (a string longer than the format allows).
    #[error("cannot encode a persistence record: {0}")]
    Encode(#[from] RecordError),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
