//! The persistence layer's error type. Every variant names the file; a corrupt record
//! also names its offset and says how to start anyway, because the broker never starts
//! empty over data it could not read.

use std::path::PathBuf;

use super::record::RecordError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("persistence file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "persistence file {p}: corrupt record at offset {offset}: {reason}. Refusing to start \
         over data that cannot be read; to start without it, move the file aside \
         (mv {p} {p}.corrupt) and restart",
        p = path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "persistence file {p}: not a shardmq persistence file (bad header; a Mosquitto \
         database cannot be read). Move it aside (mv {p} {p}.old) or set persistence_file",
        p = path.display()
    )]
    BadHeader { path: PathBuf },
    #[error(
        "persistence file {p}: generation {log} is newer than the snapshot's ({snapshot}); \
         the snapshot is missing or old. Move both files aside to start empty",
        p = path.display()
    )]
    Generation {
        path: PathBuf,
        log: u64,
        snapshot: u64,
    },
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
