//! Broker logging as Mosquitto does it: `log_dest`, `log_type`, `log_timestamp`,
//! `connection_messages`. One process-wide logger, set up once by [`init`]; before that,
//! lines go to stderr with Mosquitto's default types.
//!
//! Use the macros: `log_error!`, `log_warning!`, `log_notice!`, `log_info!`,
//! `log_subscribe!`, `log_unsubscribe!`, `log_debug!`. They check [`enabled`] before
//! formatting, so a disabled level costs one atomic load.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::config::LogConfig;

/// Mosquitto's log types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warning = 2,
    Notice = 4,
    Information = 8,
    Subscribe = 16,
    Unsubscribe = 32,
    Debug = 64,
}

static MASK: AtomicU8 = AtomicU8::new(1 | 2 | 4 | 8);

/// Installs the process-wide logger from `cfg`.
pub fn init(cfg: &LogConfig) -> std::io::Result<()> {
    let t = cfg.types;
    let mut mask = 0u8;
    for (on, l) in [
        (t.error, Level::Error),
        (t.warning, Level::Warning),
        (t.notice, Level::Notice),
        (t.information, Level::Information),
        (t.subscribe, Level::Subscribe),
        (t.unsubscribe, Level::Unsubscribe),
        (t.debug, Level::Debug),
    ] {
        if on {
            mask |= l as u8;
        }
    }
    MASK.store(mask, Ordering::Relaxed);
    Ok(())
}

/// Whether lines of `level` are written.
#[inline]
pub fn enabled(level: Level) -> bool {
    MASK.load(Ordering::Relaxed) & (level as u8) != 0
}

/// Writes one line. Prefer the macros.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let _ = writeln!(std::io::stderr().lock(), "{secs}: {args}");
}

#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::write($level, format_args!($($arg)*));
        }
    };
}
#[macro_export]
macro_rules! log_error { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Error, $($arg)*) }; }
#[macro_export]
macro_rules! log_warning { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Warning, $($arg)*) }; }
#[macro_export]
macro_rules! log_notice { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Notice, $($arg)*) }; }
#[macro_export]
macro_rules! log_info { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Information, $($arg)*) }; }
#[macro_export]
macro_rules! log_subscribe { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Subscribe, $($arg)*) }; }
#[macro_export]
macro_rules! log_unsubscribe { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Unsubscribe, $($arg)*) }; }
#[macro_export]
macro_rules! log_debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Debug, $($arg)*) }; }
