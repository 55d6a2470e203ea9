//! Rate-limited log lines for events a client can repeat at will (a dropped message, a
//! denied PUBLISH, a refused connection): at most [`BURST`] lines per [`WINDOW`] for each
//! call site on each shard thread, then one summary line per window with the number of
//! lines left out. Lines keep Mosquitto's wording, so `grep "Outgoing messages are being
//! dropped"` still finds them and their summaries.
//!
//! [`RateLimit`] and [`Limits`] are sans-IO (time comes in as `now`, nothing is written);
//! the `log_limited!` macro and [`flush_suppressed`] drive one [`Limits`] per thread and
//! write through [`super::write`]. Nothing here allocates after a call site's first line,
//! locks, or reads the clock.

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, Instant};

use super::Level;

/// Length of a rate-limiting window.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Lines written per call site and window before the rest are only counted.
pub const BURST: u32 = 2;

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; first write a summary of `suppressed` lines left out of the window that
    /// just ended, if non-zero.
    Emit { suppressed: u64 },
    /// Leave it out (counted).
    Suppress,
}

/// The state of one call site: a window of [`WINDOW`] from its first line.
#[derive(Debug, Clone, Default)]
pub struct RateLimit {
    start: Option<Instant>,
    emitted: u32,
    suppressed: u64,
}

impl RateLimit {
    /// Decides about a line at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let ended = self
            .start
            .map_or(true, |s| now.saturating_duration_since(s) >= WINDOW);
        if ended {
            let suppressed = std::mem::take(&mut self.suppressed);
            self.start = Some(now);
            self.emitted = 1;
            return Verdict::Emit { suppressed };
        }
        if self.emitted < BURST {
            self.emitted += 1;
            Verdict::Emit { suppressed: 0 }
        } else {
            self.suppressed += 1;
            Verdict::Suppress
        }
    }

    /// Lines left out of a window that has ended by `now` (once; then zero).
    pub fn take_summary(&mut self, now: Instant) -> u64 {
        match self.summary_due() {
            Some(due) if due <= now => {
                self.start = None;
                std::mem::take(&mut self.suppressed)
            }
            _ => 0,
        }
    }

    /// When a summary of this window's left-out lines is due (None: nothing left out).
    pub fn summary_due(&self) -> Option<Instant> {
        if self.suppressed == 0 {
            return None;
        }
        self.start.map(|s| s + WINDOW)
    }
}

/// The rate limits of every call site seen on one thread, keyed by the call site's format
/// string.
#[derive(Debug, Default)]
pub struct Limits {
    sites: Vec<(&'static str, Level, RateLimit)>,
}

impl Limits {
    /// Decides about a line of call site `site` at `level`.
    pub fn check(&mut self, site: &'static str, level: Level, now: Instant) -> Verdict {
        let i = match self.sites.iter().position(|(s, _, _)| *s == site) {
            Some(i) => i,
            None => {
                self.sites.push((site, level, RateLimit::default()));
                self.sites.len() - 1
            }
        };
        self.sites
            .get_mut(i)
            .map_or(Verdict::Emit { suppressed: 0 }, |(_, _, l)| l.check(now))
    }

    /// Summaries due at `now`: (call site, level, lines left out).
    pub fn due(&mut self, now: Instant, mut f: impl FnMut(&'static str, Level, u64)) {
        for (site, level, limit) in &mut self.sites {
            let n = limit.take_summary(now);
            if n > 0 {
                f(site, *level, n);
            }
        }
    }

    /// The earliest time a summary is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.sites
            .iter()
            .filter_map(|(_, _, l)| l.summary_due())
            .min()
    }
}

thread_local! {
    static LIMITS: RefCell<Limits> = RefCell::new(Limits::default());
}

/// The words of a call site's format string before its first argument: what users grep.
fn stem(site: &str) -> &str {
    site.split('{').next().unwrap_or(site).trim_end()
}

fn write_summary(site: &str, level: Level, suppressed: u64) {
    super::write(
        level,
        format_args!(
            "{} ...: {suppressed} more such line(s) suppressed in the last {} s.",
            stem(site),
            WINDOW.as_secs()
        ),
    );
}

/// Writes `args` of call site `site` unless its rate limit says otherwise. Prefer the
/// `log_limited!` macro.
pub fn write_limited(level: Level, site: &'static str, now: Instant, args: fmt::Arguments<'_>) {
    let verdict = LIMITS.with(|l| {
        l.try_borrow_mut()
            .map_or(Verdict::Emit { suppressed: 0 }, |mut l| {
                l.check(site, level, now)
            })
    });
    if let Verdict::Emit { suppressed } = verdict {
        if suppressed > 0 {
            write_summary(site, level, suppressed);
        }
        super::write(level, args);
    }
}

/// Writes the summaries of this thread's windows that ended by `now` (the runtime calls
/// it once per loop iteration; it costs a thread-local read when nothing is due).
pub fn flush_suppressed(now: Instant) {
    let mut due: Vec<(&'static str, Level, u64)> = Vec::new();
    LIMITS.with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            if l.next_due().is_some_and(|t| t <= now) {
                l.due(now, |site, level, n| due.push((site, level, n)));
            }
        }
    });
    for (site, level, n) in due {
        write_summary(site, level, n);
    }
}

/// When this thread's next summary is due (the runtime wakes up for it).
pub fn next_summary() -> Option<Instant> {
    LIMITS.with(|l| l.try_borrow().ok().and_then(|l| l.next_due()))
}

/// `log_limited!(level, now, "format {}", args...)`: a log line written at most `BURST`
/// (2) times per `WINDOW` (1 s) from this call site on this thread; the rest are counted
/// into a summary line.
#[macro_export]
macro_rules! log_limited {
    ($level:expr, $now:expr, $fmt:literal $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::write_limited($level, $fmt, $now, format_args!($fmt $($arg)*));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "Outgoing messages are being dropped for client {}.";

    #[test]
    fn burst_then_counted_then_summary_on_next_window() {
        let t0 = Instant::now();
        let mut l = RateLimit::default();
        assert_eq!(l.check(t0), Verdict::Emit { suppressed: 0 });
        for _ in 1..BURST {
            assert_eq!(l.check(t0), Verdict::Emit { suppressed: 0 });
        }
        for i in 0..1000u32 {
            let now = t0 + Duration::from_micros(u64::from(i));
            assert_eq!(l.check(now), Verdict::Suppress);
        }
        assert_eq!(l.summary_due(), Some(t0 + WINDOW));
        assert_eq!(l.take_summary(t0 + WINDOW / 2), 0, "window not over");
        // The next line after the window carries the count of the one before.
        assert_eq!(l.check(t0 + WINDOW), Verdict::Emit { suppressed: 1000 });
        assert_eq!(l.summary_due(), None);
        assert_eq!(l.check(t0 + WINDOW), Verdict::Emit { suppressed: 0 });
    }

    #[test]
    fn summary_without_a_next_line() {
        let t0 = Instant::now();
        let mut l = RateLimit::default();
        for _ in 0..(BURST + 7) {
            let _ = l.check(t0);
        }
        assert_eq!(l.take_summary(t0 + WINDOW), 7);
        assert_eq!(l.take_summary(t0 + 3 * WINDOW), 0, "reported once");
        // A fresh window after the summary.
        assert_eq!(l.check(t0 + 3 * WINDOW), Verdict::Emit { suppressed: 0 });
    }

    #[test]
    fn a_steady_flood_writes_a_few_lines_a_second() {
        let t0 = Instant::now();
        let mut limits = Limits::default();
        let (mut lines, mut summarised) = (0u64, 0u64);
        // 100,000 drops a second for 10 s, and one other call site once a second.
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            for _ in 0..100 {
                if let Verdict::Emit { suppressed } = limits.check(SITE, Level::Notice, now) {
                    lines += 1 + u64::from(suppressed > 0);
                    summarised += suppressed;
                }
            }
            if ms % 1000 == 0 {
                let v = limits.check("Denied PUBLISH from {}", Level::Debug, now);
                assert_eq!(v, Verdict::Emit { suppressed: 0 });
            }
            limits.due(now, |_, _, n| {
                lines += 1;
                summarised += n;
            });
        }
        limits.due(t0 + Duration::from_secs(11), |_, _, n| summarised += n);
        assert!(lines <= 10 * u64::from(BURST + 1), "{lines} lines in 10 s");
        assert_eq!(summarised + 10 * u64::from(BURST), 10 * 1000 * 100);
        assert_eq!(limits.next_due(), None);
    }

    #[test]
    fn stem_is_the_text_before_the_first_argument() {
        assert_eq!(stem(SITE), "Outgoing messages are being dropped for client");
        assert_eq!(stem("no arguments."), "no arguments.");
    }
}
