//! `log_dest topic`: log lines published on `$SYS/broker/log/<level>` as Mosquitto does
//! (`E`, `W`, `N`, `I`, `M/subscribe`, `M/unsubscribe`; debug lines never, or delivering
//! them would log again). The runtime installs the publisher ([`set_publisher`]) once the
//! shards run; lines written before that, or past [`MAX_PER_SECOND`] in a second, are not
//! published (they still go to the other destinations).
//!
//! It never blocks and never logs: the publisher only queues a message for a shard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use super::Level;

/// Publishes one line on a topic (installed by the runtime).
pub type Publisher = Box<dyn Fn(&'static str, &str) + Send + Sync>;

static PUBLISHER: RwLock<Option<Publisher>> = RwLock::new(None);

/// Lines published per second at most (a log storm must not flood the broker).
pub const MAX_PER_SECOND: u64 = 1000;
/// (second, lines published in it).
static WINDOW: AtomicU64 = AtomicU64::new(0);

/// Installs (or with `None` removes) the publisher of `log_dest topic` lines.
pub fn set_publisher(publisher: Option<Publisher>) {
    *PUBLISHER.write().unwrap_or_else(|e| e.into_inner()) = publisher;
}

/// Mosquitto's topic for a line of `level`; None for the levels it never publishes.
pub const fn topic_of(level: Level) -> Option<&'static str> {
    match level {
        Level::Error => Some("$SYS/broker/log/E"),
        Level::Warning => Some("$SYS/broker/log/W"),
        Level::Notice => Some("$SYS/broker/log/N"),
        Level::Information => Some("$SYS/broker/log/I"),
        Level::Subscribe => Some("$SYS/broker/log/M/subscribe"),
        Level::Unsubscribe => Some("$SYS/broker/log/M/unsubscribe"),
        Level::Debug | Level::Websockets => None,
    }
}

/// Whether one more line may be published in second `now_secs`.
fn admit(now_secs: u64) -> bool {
    let mut cur = WINDOW.load(Ordering::Relaxed);
    loop {
        let (sec, n) = (cur >> 20, cur & 0xF_FFFF);
        let next = if sec == now_secs & 0xFFF_FFFF_FFFF {
            if n >= MAX_PER_SECOND {
                return false;
            }
            cur + 1
        } else {
            ((now_secs & 0xFFF_FFFF_FFFF) << 20) | 1
        };
        match WINDOW.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(seen) => cur = seen,
        }
    }
}

/// Publishes `line` (without its newline) for `level`, if a publisher is installed.
pub(super) fn publish(level: Level, line: &str, now_secs: u64) {
    let Some(topic) = topic_of(level) else {
        return;
    };
    let publisher = PUBLISHER.read().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = publisher.as_ref() {
        if admit(now_secs) {
            p(topic, line.trim_end_matches('\n'));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosquitto_topics_and_no_debug() {
        assert_eq!(topic_of(Level::Notice), Some("$SYS/broker/log/N"));
        assert_eq!(
            topic_of(Level::Subscribe),
            Some("$SYS/broker/log/M/subscribe")
        );
        assert_eq!(topic_of(Level::Debug), None);
    }

    #[test]
    fn at_most_max_per_second() {
        let second = 1_000_000;
        let admitted = (0..MAX_PER_SECOND + 50).filter(|_| admit(second)).count();
        assert_eq!(admitted as u64, MAX_PER_SECOND);
        assert!(admit(second + 1));
    }
}
