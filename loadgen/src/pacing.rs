//! Wakeup and read pacing of a worker's event loop: how long to pause before the next
//! poll so messages accumulate (coalescing, like NIC interrupt moderation), and whether
//! one more read of a socket is needed after a read. Pure decisions on counts; it never
//! touches a socket or the clock.

/// Turns that moved fewer messages than this are followed by the coalescing pause.
const COALESCE_BELOW: u64 = 512;
/// ... or fewer than this many per socket event.
const COALESCE_PER_EVENT: u64 = 16;
/// Socket events per base pause: with many readable sockets the pause grows with them.
const PAUSE_STEP_EVENTS: u64 = 50;
/// Longest coalescing pause, in base pauses.
const PAUSE_MAX_STEPS: u64 = 20;

/// The coalescing pause (ns) after a turn that moved `moved` messages over `events`
/// socket events, for the base pause `base` (`--coalesce-us`; 0 = never pause).
///
/// "Few" is per socket event too, and so is the pause: a thousand subscribers holding a
/// few messages each cost a thousand reads, each with its syscall and the TCP ACK Linux
/// sends when a read drains a socket. Waiting one base pause per `PAUSE_STEP_EVENTS`
/// ready sockets (at most `PAUSE_MAX_STEPS`) lets each read carry more messages: roughly
/// as long as reading them takes (a few microseconds per read), so the loop idles at
/// most about half the time. Few sockets (fan-in) keep the base pause.
pub fn coalesce_pause(base: u64, moved: u64, events: u64) -> u64 {
    if base == 0 || moved >= COALESCE_BELOW.max(COALESCE_PER_EVENT * events) {
        return 0;
    }
    base.saturating_mul((events / PAUSE_STEP_EVENTS).clamp(1, PAUSE_MAX_STEPS))
}

/// After a read that returned `got` bytes into `offered` bytes of space: read again?
///
/// A short read drained the socket, and with edge-triggered epoll new data raises a new
/// event, so the read that would only return WouldBlock is skipped. A full read may have
/// left more behind. When the event also reported the peer's FIN (`read_closed`), no
/// further event will come: read on to the end of stream.
pub fn read_again(got: usize, offered: usize, read_closed: bool) -> bool {
    got >= offered || read_closed
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 200_000;

    #[test]
    fn no_pause_when_coalescing_is_off_or_turn_was_busy() {
        assert_eq!(coalesce_pause(0, 0, 1000), 0);
        assert_eq!(coalesce_pause(BASE, 512, 1), 0);
        assert_eq!(coalesce_pause(BASE, 16 * 1000, 1000), 0);
    }

    #[test]
    fn few_sockets_get_the_base_pause() {
        assert_eq!(coalesce_pause(BASE, 0, 0), BASE);
        assert_eq!(coalesce_pause(BASE, 100, 9), BASE);
        assert_eq!(coalesce_pause(BASE, 511, 49), BASE);
    }

    #[test]
    fn many_sockets_with_few_messages_pause_longer_up_to_a_cap() {
        assert_eq!(coalesce_pause(BASE, 500, 100), 2 * BASE);
        assert_eq!(coalesce_pause(BASE, 6_500, 1000), 20 * BASE);
        assert_eq!(coalesce_pause(BASE, 50_000, 50_000), 20 * BASE);
        // Same sockets, but each read carried 16 messages: no pause at all.
        assert_eq!(coalesce_pause(BASE, 16_000, 1000), 0);
        assert_eq!(coalesce_pause(u64::MAX, 0, 1000), u64::MAX);
    }

    #[test]
    fn short_read_is_the_last_unless_fin_was_seen() {
        assert!(!read_again(100, 65536, false));
        assert!(read_again(100, 65536, true));
        assert!(read_again(65536, 65536, false));
    }
}
