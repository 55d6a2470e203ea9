//! Payload stamping: the first 16 bytes of every payload carry the stream id (u32), the
//! sequence number (u32) and the send timestamp (u64, CLOCK_MONOTONIC ns), little endian,
//! so a subscriber in the same host can check loss/order and measure end-to-end latency.
//! Owns the layout and the clock read; it never allocates.

/// Bytes a stamp occupies; payloads are at least this long.
pub const STAMP_LEN: usize = 16;

/// What a subscriber reads back from a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub stream: u32,
    pub seq: u32,
    pub sent_ns: u64,
}

/// Writes the stamp into the start of `payload` (no-op if it is shorter than `STAMP_LEN`).
#[inline]
pub fn write(payload: &mut [u8], s: Stamp) {
    if let Some(p) = payload.get_mut(..STAMP_LEN) {
        p[0..4].copy_from_slice(&s.stream.to_le_bytes());
        p[4..8].copy_from_slice(&s.seq.to_le_bytes());
        p[8..16].copy_from_slice(&s.sent_ns.to_le_bytes());
    }
}

/// Reads a stamp; `None` when the payload is too short to carry one (not ours).
#[inline]
pub fn read(payload: &[u8]) -> Option<Stamp> {
    let p = payload.get(..STAMP_LEN)?;
    let mut a = [0u8; 4];
    let mut b = [0u8; 4];
    let mut c = [0u8; 8];
    a.copy_from_slice(&p[0..4]);
    b.copy_from_slice(&p[4..8]);
    c.copy_from_slice(&p[8..16]);
    Some(Stamp {
        stream: u32::from_le_bytes(a),
        seq: u32::from_le_bytes(b),
        sent_ns: u64::from_le_bytes(c),
    })
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every thread of this host.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_leaves_padding() {
        let mut p = [0xEEu8; 24];
        let s = Stamp {
            stream: 0xDEAD_BEEF,
            seq: 42,
            sent_ns: u64::MAX - 3,
        };
        write(&mut p, s);
        assert_eq!(read(&p), Some(s));
        assert_eq!(&p[16..], &[0xEE; 8]);
    }

    #[test]
    fn short_payload_has_no_stamp() {
        assert_eq!(read(&[1, 2, 3]), None);
        let mut p = [7u8; 15];
        write(
            &mut p,
            Stamp {
                stream: 1,
                seq: 1,
                sent_ns: 1,
            },
        );
        assert_eq!(p, [7u8; 15]);
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a && a > 0);
    }
}
