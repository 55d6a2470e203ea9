//! Formatting one log line: Mosquitto's timestamp prefix and the message.
//!
//! `log_timestamp true` without a format gives `1700000000: message`; with
//! `log_timestamp_format` the prefix is `strftime(format, localtime(now))`. The formatted
//! prefix is cached per thread for the current second, so a busy shard calls
//! `localtime_r`/`strftime` at most once a second. Pure formatting: no I/O here.

use std::cell::RefCell;
use std::ffi::CString;
use std::fmt::{self, Write as _};

/// How lines are prefixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timestamp {
    None,
    /// Seconds since the Unix epoch, Mosquitto's default.
    Epoch,
    /// A strftime format, local time.
    Format(CString),
}

impl Timestamp {
    /// From `log_timestamp` / `log_timestamp_format`. A format with a NUL byte cannot be
    /// passed to strftime and falls back to epoch seconds.
    pub fn new(enabled: bool, format: Option<&str>) -> Self {
        match (enabled, format) {
            (false, _) => Self::None,
            (true, None) => Self::Epoch,
            (true, Some(f)) => CString::new(f).map_or(Self::Epoch, Self::Format),
        }
    }
}

thread_local! {
    /// (second, format, formatted prefix) of the last strftime call on this thread.
    static PREFIX_CACHE: RefCell<(i64, Option<CString>, String)> =
        const { RefCell::new((i64::MIN, None, String::new())) };
}

/// Appends `prefix: message\n` to `out`.
#[cfg(test)]
pub(crate) fn format_line(out: &mut String, ts: &Timestamp, secs: i64, msg: fmt::Arguments<'_>) {
    push_prefix(out, ts, secs);
    push_message(out, msg);
}

/// Appends the message and the newline.
pub(crate) fn push_message(out: &mut String, msg: fmt::Arguments<'_>) {
    let _ = out.write_fmt(msg);
    out.push('\n');
}

/// Appends the timestamp prefix (`1700000000: `), if any.
pub(crate) fn push_prefix(out: &mut String, ts: &Timestamp, secs: i64) {
    match ts {
        Timestamp::None => {}
        Timestamp::Epoch => {
            let _ = write!(out, "{secs}: ");
        }
        Timestamp::Format(f) => {
            push_formatted(out, f, secs);
            out.push_str(": ");
        }
    }
}

fn push_formatted(out: &mut String, format: &CString, secs: i64) {
    let cached = PREFIX_CACHE.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        if c.0 != secs || c.1.as_ref() != Some(format) {
            let s = strftime_local(format, secs)?;
            *c = (secs, Some(format.clone()), s);
        }
        out.push_str(&c.2);
        Some(())
    });
    if cached.is_none() {
        match strftime_local(format, secs) {
            Some(s) => out.push_str(&s),
            None => {
                let _ = write!(out, "{secs}");
            }
        }
    }
}

/// `strftime(format, localtime_r(secs))`; `None` if the time cannot be converted or the
/// result is empty or longer than 255 bytes.
pub(crate) fn strftime_local(format: &CString, secs: i64) -> Option<String> {
    // time_t is i32 on some 32-bit targets, i64 here.
    #[allow(clippy::useless_conversion)]
    let t: libc::time_t = secs.try_into().ok()?;
    // SAFETY: all-zero is a valid `tm` (plain integers and a nullable pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call; localtime_r is the
    // thread-safe variant and writes only into `tm`.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return None;
    }
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for `buf.len()` bytes, `format` is NUL-terminated and
    // `tm` was filled by localtime_r. strftime writes at most `buf.len()` bytes.
    let n = unsafe {
        libc::strftime(
            buf.as_mut_ptr().cast::<libc::c_char>(),
            buf.len(),
            format.as_ptr(),
            &tm,
        )
    };
    if n == 0 {
        return None;
    }
    Some(String::from_utf8_lossy(buf.get(..n)?).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts: &Timestamp, secs: i64, msg: &str) -> String {
        let mut s = String::new();
        format_line(&mut s, ts, secs, format_args!("{msg}"));
        s
    }

    #[test]
    fn epoch_prefix_like_mosquitto() {
        let ts = Timestamp::new(true, None);
        assert_eq!(line(&ts, 1_700_000_000, "hello"), "1700000000: hello\n");
    }

    #[test]
    fn no_timestamp() {
        let ts = Timestamp::new(false, Some("%Y"));
        assert_eq!(line(&ts, 1_700_000_000, "x y"), "x y\n");
    }

    #[test]
    fn strftime_format() {
        // %s and the year of 2023-11-14 do not depend on the time zone.
        let ts = Timestamp::new(true, Some("%s|%Y|%%"));
        assert_eq!(line(&ts, 1_700_000_000, "m"), "1700000000|2023|%: m\n");
        // Cached for the same second, recomputed for another one.
        assert_eq!(line(&ts, 1_700_000_000, "m"), "1700000000|2023|%: m\n");
        assert_eq!(line(&ts, 1_700_000_001, "m"), "1700000001|2023|%: m\n");
    }

    #[test]
    fn iso_like_format_has_the_right_shape() {
        let ts = Timestamp::new(true, Some("%Y-%m-%dT%H:%M:%S"));
        let l = line(&ts, 1_700_000_000, "m");
        assert_eq!(l.len(), "2023-11-14T22:13:20: m\n".len(), "{l}");
        assert!(l.starts_with("2023-11-1"), "{l}");
    }

    #[test]
    fn bad_formats_fall_back() {
        assert_eq!(Timestamp::new(true, Some("a\0b")), Timestamp::Epoch);
        // Empty strftime output falls back to epoch seconds.
        let ts = Timestamp::new(true, Some(""));
        assert_eq!(line(&ts, 5, "m"), "5: m\n");
        let long = "%Y".repeat(200);
        let ts = Timestamp::new(true, Some(&long));
        assert_eq!(line(&ts, 5, "m"), "5: m\n");
    }
}
