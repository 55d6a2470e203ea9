//! A failure streak of one shard's log appends: when it started, how many attempts
//! failed, and when to try again (a backoff from [`FIRST_RETRY`] doubling to
//! [`MAX_RETRY`]). Plain state over `now` arguments, so the schedule is unit-tested
//! without a clock; it never touches the log or the broker.

use std::time::{Duration, Instant};

/// The first retry after a failed append.
pub(super) const FIRST_RETRY: Duration = Duration::from_millis(10);
/// The longest wait between two attempts.
pub(super) const MAX_RETRY: Duration = Duration::from_secs(1);

/// One shard's streak of failed appends (it exists only while the batch is held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Streak {
    pub(super) since: Instant,
    /// Failed attempts, the first included.
    pub(super) failures: u64,
    backoff: Duration,
    next_try: Instant,
}

impl Streak {
    /// The first append of a streak failed at `now`.
    pub(super) fn start(now: Instant) -> Self {
        Self {
            since: now,
            failures: 1,
            backoff: FIRST_RETRY,
            next_try: now + FIRST_RETRY,
        }
    }

    /// Another attempt failed at `now`: wait twice as long (at most [`MAX_RETRY`]).
    pub(super) fn failed_again(&mut self, now: Instant) {
        self.failures += 1;
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
        self.next_try = now + self.backoff;
    }

    /// When to try again (the loop's timer).
    pub(super) fn next_try(&self) -> Instant {
        self.next_try
    }

    /// Whether an attempt is due at `now`.
    pub(super) fn due(&self, now: Instant) -> bool {
        now >= self.next_try
    }

    /// Try at the next call, whatever the backoff (shutdown's last attempt).
    pub(super) fn try_now(&mut self, now: Instant) {
        self.next_try = self.next_try.min(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_10_ms_to_at_most_1_s() {
        let t0 = Instant::now();
        let mut s = Streak::start(t0);
        assert_eq!(s.next_try(), t0 + FIRST_RETRY);
        assert!(!s.due(t0));
        assert!(s.due(t0 + FIRST_RETRY));
        let mut waits = Vec::new();
        for _ in 0..10 {
            let now = s.next_try();
            s.failed_again(now);
            waits.push(s.next_try() - now);
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000]);
        assert_eq!(s.failures, 11);
        assert_eq!(s.since, t0);
    }

    #[test]
    fn try_now_makes_the_next_attempt_due_at_once() {
        let t0 = Instant::now();
        let mut s = Streak::start(t0);
        for _ in 0..8 {
            s.failed_again(t0);
        }
        assert!(!s.due(t0));
        s.try_now(t0);
        assert!(s.due(t0));
    }
}
