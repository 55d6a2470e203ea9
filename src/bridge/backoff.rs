//! When a bridge tries again: `restart_timeout BASE` waits BASE seconds every time;
//! `restart_timeout BASE CAP` (default 5 30) is Mosquitto's "decorrelated jitter"
//! backoff: each wait is random between BASE and three times the previous one, at most
//! CAP, and a connection that worked starts it again from BASE. Randomness comes from
//! the caller's seed (no clock, no global state).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: u32,
    cap: Option<u32>,
    last: u32,
    rng: u64,
}

impl Backoff {
    pub fn new((base, cap): (u32, Option<u32>), seed: u64) -> Self {
        Self {
            base: base.max(1),
            cap,
            last: base.max(1),
            rng: seed | 1,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// A connection was established: the next failure waits BASE again.
    pub fn reset(&mut self) {
        self.last = self.base;
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let Some(cap) = self.cap else {
            return Duration::from_secs(u64::from(self.base));
        };
        let cap = cap.max(self.base);
        let hi = self.last.saturating_mul(3).clamp(self.base, cap);
        let span = u64::from(hi - self.base) * 1000 + 1;
        let ms = u64::from(self.base) * 1000 + self.random() % span;
        self.last = u32::try_from(ms / 1000)
            .unwrap_or(cap)
            .clamp(self.base, cap);
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_without_cap() {
        let mut b = Backoff::new((7, None), 42);
        for _ in 0..5 {
            assert_eq!(b.next_delay(), Duration::from_secs(7));
        }
    }

    #[test]
    fn jittered_between_base_and_cap() {
        let mut b = Backoff::new((2, Some(10)), 42);
        let delays: Vec<_> = (0..50).map(|_| b.next_delay()).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_secs(2) && *d <= Duration::from_secs(10)));
        assert!(
            delays.iter().any(|d| *d > Duration::from_secs(6)),
            "it grows"
        );
        assert!(delays.windows(2).any(|w| w[0] != w[1]), "it is jittered");
        b.reset();
        assert!(
            b.next_delay() <= Duration::from_secs(6),
            "reset starts from BASE"
        );
    }
}
