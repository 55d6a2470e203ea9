//! Broker logging as Mosquitto does it: `log_dest`, `log_type`, `log_timestamp`,
//! `log_timestamp_format`, `connection_messages`. One process-wide logger, set up by
//! [`init`] (again on a config reload) and [`reinit`] (reopen log files on SIGHUP, for
//! logrotate); before `init`, lines go to stderr with Mosquitto's default types.
//!
//! Use the macros: `log_error!`, `log_warning!`, `log_notice!`, `log_info!`,
//! `log_subscribe!`, `log_unsubscribe!`, `log_debug!`, and `log_limited!` for lines a
//! client can make the broker repeat (at most a few a second per call site, then a
//! summary with the count; see `limit.rs`). They check [`enabled`] before
//! formatting, so a disabled level costs one atomic load. An enabled line is formatted
//! into a per-thread buffer and written with one `write` per destination under a shared
//! (read) lock, so shard threads log concurrently without contending. This module never
//! panics on an I/O error: a line that cannot be written is dropped.
//!
//! `log_dest topic` publishes lines on `$SYS/broker/log/<level>` through the publisher
//! the runtime installs (`topic.rs`).

mod format;
mod limit;
mod sink;
pub mod topic;

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::RwLock;

use crate::config::LogConfig;

use format::{push_message, push_prefix, Timestamp};
#[doc(hidden)] // for `log_limited!`
pub use limit::write_limited;
pub(crate) use limit::{flush_suppressed, next_summary};
use sink::Sinks;

/// Mosquitto's log types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum Level {
    /// Errors (`log_type error`).
    Error = 1,
    /// Warnings (`log_type warning`).
    Warning = 2,
    /// Notices (`log_type notice`): connections refused, clients cut off, ...
    Notice = 4,
    /// Information (`log_type information`): connections and disconnections.
    Information = 8,
    /// Subscriptions (`log_type subscribe`).
    Subscribe = 16,
    /// Unsubscriptions (`log_type unsubscribe`).
    Unsubscribe = 32,
    /// Debugging (`log_type debug`).
    Debug = 64,
    /// `log_type websockets`: WebSocket details, as `websockets_log_level` selects.
    Websockets = 128,
}

static MASK: AtomicU8 = AtomicU8::new(1 | 2 | 4 | 8);
static CONNECTION_MESSAGES: AtomicBool = AtomicBool::new(true);

struct Logger {
    config: LogConfig,
    timestamp: Timestamp,
    sinks: Sinks,
}

/// `None` until [`init`]: stderr with epoch timestamps.
static LOGGER: RwLock<Option<Logger>> = RwLock::new(None);

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The `log_type` mask of `cfg` as [`Level`] bits.
fn mask_of(cfg: &LogConfig) -> u8 {
    let t = cfg.types;
    [
        (t.error, Level::Error),
        (t.warning, Level::Warning),
        (t.notice, Level::Notice),
        (t.information, Level::Information),
        (t.subscribe, Level::Subscribe),
        (t.unsubscribe, Level::Unsubscribe),
        (t.debug, Level::Debug),
        (t.websockets, Level::Websockets),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .fold(0, |m, (_, l)| m | l as u8)
}

/// Installs the process-wide logger from `cfg`: opens `log_dest file` paths (append),
/// opens syslog, sets the type mask. Calling it again (config reload) replaces the
/// logger. On error (a log file cannot be opened) the previous logger stays.
pub fn init(cfg: &LogConfig) -> std::io::Result<()> {
    let sinks = Sinks::open(&cfg.dests)?;
    let logger = Logger {
        config: cfg.clone(),
        timestamp: Timestamp::new(cfg.timestamp, cfg.timestamp_format.as_deref()),
        sinks,
    };
    let mut slot = LOGGER.write().unwrap_or_else(|e| e.into_inner());
    *slot = Some(logger);
    MASK.store(mask_of(cfg), Ordering::Relaxed);
    CONNECTION_MESSAGES.store(cfg.connection_messages, Ordering::Relaxed);
    Ok(())
}

/// Reopens the log files of the current configuration (SIGHUP after logrotate). On
/// error the old files stay open.
pub fn reinit() -> std::io::Result<()> {
    let mut slot = LOGGER.write().unwrap_or_else(|e| e.into_inner());
    if let Some(logger) = slot.as_mut() {
        logger.sinks = Sinks::open(&logger.config.dests)?;
    }
    Ok(())
}

/// Whether lines of `level` are written.
#[inline]
pub fn enabled(level: Level) -> bool {
    MASK.load(Ordering::Relaxed) & (level as u8) != 0
}

/// `connection_messages`: whether connects and disconnects are logged.
#[inline]
pub fn connection_messages() -> bool {
    CONNECTION_MESSAGES.load(Ordering::Relaxed)
}

/// A host's receiver of log lines (see [`set_callback`]).
type Callback = Box<dyn Fn(Level, &str) + Send + Sync>;

static CALLBACK: RwLock<Option<Callback>> = RwLock::new(None);
static HAS_CALLBACK: AtomicBool = AtomicBool::new(false);

/// Sends every log line of an enabled level to `callback` (the message, without
/// timestamp) instead of the configured destinations: an embedding host decides where
/// the broker's logs go (its own logger, the `log` or `tracing` facade). Process-wide,
/// like the logger; replaces an earlier callback. The callback runs on the thread that
/// logs (often a shard thread): it must be quick, and must not call [`set_callback`] or
/// [`clear_callback`].
///
/// ```
/// shardmq::log::set_callback(|level, line| eprintln!("[shardmq {level:?}] {line}"));
/// # shardmq::log::clear_callback();
/// ```
pub fn set_callback(callback: impl Fn(Level, &str) + Send + Sync + 'static) {
    let mut slot = CALLBACK.write().unwrap_or_else(|e| e.into_inner());
    *slot = Some(Box::new(callback));
    HAS_CALLBACK.store(true, Ordering::Release);
}

/// Removes the callback of [`set_callback`]: lines go to the configured destinations.
pub fn clear_callback() {
    let mut slot = CALLBACK.write().unwrap_or_else(|e| e.into_inner());
    *slot = None;
    HAS_CALLBACK.store(false, Ordering::Release);
}

/// Writes one line. Prefer the macros.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    if HAS_CALLBACK.load(Ordering::Acquire) {
        let line = fmt::format(args);
        let callback = CALLBACK.read().unwrap_or_else(|e| e.into_inner());
        if let Some(callback) = callback.as_ref() {
            callback(level, &line);
            return;
        }
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    // The lock is not held while `args` is formatted: a Display impl may log itself.
    let emit = |buf: &mut String| {
        buf.clear();
        {
            let logger = LOGGER.read().unwrap_or_else(|e| e.into_inner());
            let ts = logger.as_ref().map_or(&Timestamp::Epoch, |l| &l.timestamp);
            push_prefix(buf, ts, secs);
        }
        let prefix_len = buf.len();
        push_message(buf, args);
        let logger = LOGGER.read().unwrap_or_else(|e| e.into_inner());
        match logger.as_ref() {
            Some(l) => l.sinks.write(level, buf, prefix_len),
            None => sink::write_stderr(buf.as_bytes()),
        }
    };
    // A Display impl that logs would re-enter: it gets a fresh buffer instead.
    let reused = LINE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            emit(&mut buf);
            if buf.capacity() > 64 * 1024 {
                *buf = String::new();
            }
            true
        }
        Err(_) => false,
    });
    if !reused {
        emit(&mut String::new());
    }
}

/// Writes a line at a level (checked before formatting). Internal.
#[doc(hidden)]
#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::write($level, format_args!($($arg)*));
        }
    };
}
#[doc(hidden)]
#[macro_export]
macro_rules! log_error { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Error, $($arg)*) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! log_warning { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Warning, $($arg)*) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! log_notice { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Notice, $($arg)*) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! log_info { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Information, $($arg)*) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! log_subscribe { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Subscribe, $($arg)*) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! log_unsubscribe { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Unsubscribe, $($arg)*) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! log_debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Debug, $($arg)*) }; }

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogDest, LogTypes};

    #[test]
    fn mask_follows_log_types() {
        let mut cfg = LogConfig::default();
        assert_eq!(mask_of(&cfg), 1 | 2 | 4 | 8);
        cfg.types = LogTypes::ALL;
        assert_eq!(mask_of(&cfg), 255);
        cfg.types = LogTypes {
            debug: true,
            ..LogTypes::default()
        };
        assert_eq!(mask_of(&cfg), Level::Debug as u8);
    }

    /// The only test that touches the global logger (tests run in parallel).
    #[test]
    fn file_dest_appends_lines_and_reinit_reopens() {
        let dir = std::env::temp_dir().join(format!("shardmq-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broker.log");
        std::fs::write(&path, "old\n").unwrap();
        let cfg = LogConfig {
            dests: vec![LogDest::File(path.clone())],
            types: LogTypes {
                error: true,
                debug: true,
                ..LogTypes::default()
            },
            connection_messages: false,
            timestamp: false,
            timestamp_format: None,
        };
        init(&cfg).unwrap();
        assert!(!connection_messages());
        assert!(enabled(Level::Debug) && !enabled(Level::Notice));
        crate::log_error!("logtest first {}", 1);
        crate::log_notice!("logtest not written");
        // logrotate: move the file away, reinit opens a new one at the same path.
        let rotated = dir.join("broker.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        reinit().unwrap();
        crate::log_debug!("logtest second");
        let threads: Vec<_> = (0..4)
            .map(|t| std::thread::spawn(move || crate::log_error!("logtest t{t}")))
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Other tests' brokers log concurrently into whatever logger is installed: look
        // only at this test's lines.
        let ours = |text: String| -> Vec<String> {
            text.lines()
                .filter(|l| *l == "old" || l.starts_with("logtest "))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            ours(std::fs::read_to_string(&rotated).unwrap()),
            ["old", "logtest first 1"]
        );
        let new = ours(std::fs::read_to_string(&path).unwrap());
        assert_eq!(
            new.first().map(String::as_str),
            Some("logtest second"),
            "{new:?}"
        );
        assert_eq!(new.len(), 5, "{new:?}");
        let bad = LogConfig {
            dests: vec![LogDest::File(dir.join("no/such/dir/x.log"))],
            ..cfg
        };
        assert!(init(&bad).is_err());
        init(&LogConfig::default()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
