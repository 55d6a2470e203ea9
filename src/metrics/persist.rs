//! Persistence figures for `/metrics` and `$SYS`, process-wide (one log for every
//! shard): the latency of the live log's fsyncs as a histogram, when the last one ended,
//! the live log's size, and its failures: how many shards hold their output over a
//! failed append right now (alert on it being above 0) and how many writes or fsyncs
//! failed in total. Written by the runtime's persistence driver and compactor thread
//! with relaxed atomics (no lock, no allocation), read by the HTTP console.
//!
//! It only counts: it never touches a file and never reads the clock (durations and
//! times come in as arguments).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Upper bounds of the fsync histogram's buckets, microseconds (`+Inf` follows).
pub const FSYNC_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

static ENABLED: AtomicBool = AtomicBool::new(false);
static BUCKETS: [AtomicU64; FSYNC_BUCKETS_US.len() + 1] =
    [const { AtomicU64::new(0) }; FSYNC_BUCKETS_US.len() + 1];
static SUM_US: AtomicU64 = AtomicU64::new(0);
static COUNT: AtomicU64 = AtomicU64::new(0);
static LAST_UNIX_MS: AtomicU64 = AtomicU64::new(0);
static LOG_BYTES: AtomicU64 = AtomicU64::new(0);
static HOLDING: AtomicU64 = AtomicU64::new(0);
static WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);
static COMPACTION_FAILURES: AtomicU64 = AtomicU64::new(0);
static LOST_AT_SHUTDOWN: AtomicU64 = AtomicU64::new(0);

/// Persistence is on (its families appear in `/metrics`).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// One fsync of the live log took `us` and ended at `unix_ms`.
pub fn fsync_done(us: u64, unix_ms: u64) {
    let i = FSYNC_BUCKETS_US
        .iter()
        .position(|&b| us <= b)
        .unwrap_or(FSYNC_BUCKETS_US.len());
    BUCKETS[i].fetch_add(1, Ordering::Relaxed);
    SUM_US.fetch_add(us, Ordering::Relaxed);
    COUNT.fetch_add(1, Ordering::Relaxed);
    LAST_UNIX_MS.fetch_max(unix_ms, Ordering::Relaxed);
}

/// The live log is now `bytes` long.
pub fn log_bytes(bytes: u64) {
    LOG_BYTES.store(bytes, Ordering::Relaxed);
}

/// A shard started (`true`) or ended (`false`) holding its output over a failed append.
pub fn holding(start: bool) {
    if start {
        HOLDING.fetch_add(1, Ordering::Relaxed);
    } else {
        let _ = HOLDING.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(1))
        });
    }
}

/// One append, fsync or interval fsync of the live log failed.
pub fn write_failed() {
    WRITE_FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// A compaction (snapshot) failed; it is retried.
pub fn compaction_failed() {
    COMPACTION_FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// A shard stopped with `n` records it could not write.
pub fn lost_at_shutdown(n: u64) {
    LOST_AT_SHUTDOWN.fetch_add(n, Ordering::Relaxed);
}

/// Records shards could not write before they stopped (the executable then exits
/// non-zero).
pub fn lost_records() -> u64 {
    LOST_AT_SHUTDOWN.load(Ordering::Relaxed)
}

/// A copy of the figures, `None` while persistence is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// Per bucket of [`FSYNC_BUCKETS_US`] (not cumulative), `+Inf` last.
    pub buckets: [u64; FSYNC_BUCKETS_US.len() + 1],
    pub sum_us: u64,
    pub count: u64,
    /// Unix milliseconds of the last fsync (0: none yet).
    pub last_unix_ms: u64,
    pub log_bytes: u64,
    /// Shards holding their output over a failed append now.
    pub holding: u64,
    /// Failed appends, fsyncs and interval fsyncs since the start.
    pub write_failures: u64,
    /// Failed compactions since the start (each is retried).
    pub compaction_failures: u64,
}

pub fn figures() -> Option<Figures> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    Some(figures_unchecked())
}

/// The figures whether persistence is on or not (tests).
pub(crate) fn figures_unchecked() -> Figures {
    Figures {
        buckets: std::array::from_fn(|i| BUCKETS[i].load(Ordering::Relaxed)),
        sum_us: SUM_US.load(Ordering::Relaxed),
        count: COUNT.load(Ordering::Relaxed),
        last_unix_ms: LAST_UNIX_MS.load(Ordering::Relaxed),
        log_bytes: LOG_BYTES.load(Ordering::Relaxed),
        holding: HOLDING.load(Ordering::Relaxed),
        write_failures: WRITE_FAILURES.load(Ordering::Relaxed),
        compaction_failures: COMPACTION_FAILURES.load(Ordering::Relaxed),
    }
}
