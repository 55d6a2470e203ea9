//! Log destinations: stderr, stdout, append-mode files, syslog and `$SYS/broker/log`
//! topics (`topic.rs`).
//!
//! Each formatted line goes to each destination with one `write` call (files are opened
//! with O_APPEND, so concurrent lines never interleave). Write errors are ignored: a
//! full disk must not take the broker down. This module owns the file handles and the
//! `openlog` call; it never formats.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Once;

use super::Level;
use crate::config::LogDest;

enum Sink {
    Stderr,
    Stdout,
    File(File),
    Syslog,
    /// `$SYS/broker/log/<level>` (see `topic.rs`).
    Topic,
}

/// The open destinations of one logger.
pub(super) struct Sinks(Vec<Sink>);

static OPENLOG: Once = Once::new();

impl Sinks {
    /// Opens every destination; `topic` and `none` open nothing.
    pub fn open(dests: &[LogDest]) -> std::io::Result<Self> {
        let mut sinks = Vec::with_capacity(dests.len());
        for dest in dests {
            match dest {
                LogDest::Stderr => sinks.push(Sink::Stderr),
                LogDest::Stdout => sinks.push(Sink::Stdout),
                LogDest::File(path) => {
                    let f = OpenOptions::new().create(true).append(true).open(path)?;
                    sinks.push(Sink::File(f));
                }
                LogDest::Syslog => {
                    OPENLOG.call_once(|| {
                        // SAFETY: the ident is a 'static C string literal, as openlog
                        // keeps the pointer.
                        unsafe {
                            libc::openlog(c"shardmq".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON)
                        };
                    });
                    sinks.push(Sink::Syslog);
                }
                LogDest::Topic => sinks.push(Sink::Topic),
                LogDest::None => {}
            }
        }
        Ok(Self(sinks))
    }

    /// Writes one formatted line (ending in `\n`) to every destination; syslog gets it
    /// without the first `prefix_len` bytes (the timestamp: syslog adds its own).
    pub fn write(&self, level: Level, line: &str, prefix_len: usize) {
        for sink in &self.0 {
            match sink {
                Sink::Stderr => write_stderr(line.as_bytes()),
                Sink::Stdout => {
                    let _ = std::io::stdout().lock().write_all(line.as_bytes());
                }
                Sink::File(f) => {
                    let mut f: &File = f;
                    let _ = f.write_all(line.as_bytes());
                }
                Sink::Syslog => syslog(level, line.get(prefix_len..).unwrap_or(line)),
                Sink::Topic => {
                    let secs = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    super::topic::publish(level, line, secs);
                }
            }
        }
    }
}

pub(super) fn write_stderr(bytes: &[u8]) {
    let _ = std::io::stderr().lock().write_all(bytes);
}

fn syslog(level: Level, line: &str) {
    let priority = match level {
        Level::Error => libc::LOG_ERR,
        Level::Warning => libc::LOG_WARNING,
        Level::Notice | Level::Subscribe | Level::Unsubscribe => libc::LOG_NOTICE,
        Level::Information => libc::LOG_INFO,
        Level::Debug | Level::Websockets => libc::LOG_DEBUG,
    };
    let text = line.trim_end_matches('\n').replace('\0', " ");
    let Ok(msg) = CString::new(text) else {
        return;
    };
    // SAFETY: "%s" with one NUL-terminated argument; syslog is thread-safe.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr()) };
}
