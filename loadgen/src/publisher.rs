//! The publishing side of a worker: per-publisher state (template, sequence, packet ids,
//! windows) and the hot loop that batches many stamped PUBLISH packets into one reused
//! write buffer per client and flushes it with one write. Closed loop bounds messages not
//! yet seen by a subscriber (`--inflight`); open loop sends on a schedule and stamps the
//! *intended* send time so stalls show up as latency (no coordinated omission).
//! It never allocates per message.

use std::cmp::Reverse;
use std::sync::atomic::Ordering;

use crate::opts::Plan;
use crate::stamp::{self, Stamp};
use crate::wire::PublishTemplate;
use crate::worker::{State, Worker, WBUF_HIGH};

/// Most messages one publisher encodes per turn (keeps turns fair between publishers).
const BATCH: u64 = 256;
/// A closed-loop publisher that saw no progress for this long gives up on its window
/// (the messages were dropped by the broker) and counts a stall.
const STALL_NS: u64 = 1_000_000_000;
/// Retry delay for an open-loop publisher held back by its QoS window or socket.
const RETRY_NS: u64 = 1_000_000;

pub struct Publisher {
    pub stream: u32,
    tmpl: PublishTemplate,
    qos: u8,
    pub seq: u32,
    fanout: u64,
    unacked: usize,
    max_inflight: usize,
    /// Packet ids in use (QoS > 0): one bit per id, allocated on first use.
    ids: Vec<u64>,
    next_id: u16,
    /// Open loop: first intended send time and interval between messages.
    t0: u64,
    interval_ns: f64,
    /// Closed loop: messages written off as never delivered (after stalls).
    credit: u64,
    last_acked: u64,
    last_acked_ns: u64,
}

impl Publisher {
    pub fn new(plan: &Plan, idx: usize) -> Self {
        Self {
            stream: idx as u32,
            tmpl: PublishTemplate::new(
                plan.version,
                &plan.topic(idx),
                plan.qos,
                false,
                plan.payload,
            ),
            qos: plan.qos,
            seq: 0,
            fanout: plan.fanout(idx),
            unacked: 0,
            max_inflight: plan.inflight,
            ids: Vec::new(),
            next_id: 1,
            t0: 0,
            interval_ns: plan.rate.map_or(0.0, |r| 1e9 / r),
            credit: 0,
            last_acked: 0,
            last_acked_ns: 0,
        }
    }

    /// Honours the broker's v5 Receive Maximum for QoS > 0.
    pub fn limit_inflight(&mut self, receive_max: usize) {
        self.max_inflight = self.max_inflight.min(receive_max.max(1));
    }

    fn alloc_id(&mut self) -> u16 {
        if self.ids.is_empty() {
            self.ids = vec![0; 1024];
        }
        loop {
            let id = self.next_id;
            self.next_id = if id == u16::MAX { 1 } else { id + 1 };
            let (w, b) = (usize::from(id / 64), 1u64 << (id % 64));
            if self.ids[w] & b == 0 {
                self.ids[w] |= b;
                self.unacked += 1;
                return id;
            }
        }
    }

    /// PUBACK / PUBCOMP (or a failed PUBREC) frees a packet id; true if it was in use.
    /// Unknown ids are ignored.
    pub fn release(&mut self, id: u16) -> bool {
        let (w, b) = (usize::from(id / 64), 1u64 << (id % 64));
        if let Some(word) = self.ids.get_mut(w) {
            if *word & b != 0 {
                *word &= !b;
                self.unacked -= 1;
                return true;
            }
        }
        false
    }

    fn qos_window(&self) -> u64 {
        if self.qos == 0 {
            u64::MAX
        } else {
            self.max_inflight.saturating_sub(self.unacked) as u64
        }
    }

    /// Messages the average subscriber has seen (plus those written off).
    fn acked(&self, delivered: u64) -> u64 {
        delivered / self.fanout.max(1) + self.credit
    }

    fn intended(&self, seq: u64) -> u64 {
        self.t0 + (seq as f64 * self.interval_ns) as u64
    }

    /// How many messages are due by `horizon`: exactly those whose [`Self::intended`]
    /// time is not after it (the float estimate is corrected with `intended` itself, so
    /// the next message's time is always after `horizon`).
    fn due_end(&self, horizon: u64) -> u64 {
        let mut end = (horizon.saturating_sub(self.t0) as f64 / self.interval_ns) as u64 + 1;
        while self.intended(end) <= horizon {
            end += 1;
        }
        while end > 0 && self.intended(end - 1) > horizon {
            end -= 1;
        }
        end
    }
}

impl Worker {
    /// Puts a publisher on the open-loop schedule (closed loop needs none).
    pub fn schedule(&mut self, key: usize, now: u64) {
        let plan = &self.sh.plan;
        if !plan.is_open_loop() {
            return;
        }
        let n = plan.publishers.max(1) as f64;
        if let Some(p) = self.clients.get_mut(key).and_then(|c| c.publ.as_mut()) {
            // Spread first sends over one interval so publishers do not fire together.
            p.t0 = now + (p.interval_ns * (f64::from(p.stream) / n)) as u64;
            self.heap.push(Reverse((p.t0, key)));
        }
    }

    /// Sends what every publisher may send now.
    pub fn pump(&mut self, now: u64) {
        if self.sh.plan.is_open_loop() {
            let horizon = now + self.slack;
            while let Some(&Reverse((due, key))) = self.heap.peek() {
                if due > horizon {
                    break;
                }
                self.heap.pop();
                let next = self.send_open(key, now, horizon);
                if let Some(t) = next {
                    // Never again in this pump: a publisher held back by its window or
                    // its write buffer waits for I/O, and one whose next message is
                    // not due yet must not be looked at before it is (a time at or
                    // before `horizon` here spun this loop forever at rates whose
                    // interval is not a whole number of nanoseconds).
                    self.heap.push(Reverse((t.max(horizon + 1), key)));
                }
            }
        } else {
            for i in 0..self.pub_keys.len() {
                let key = self.pub_keys[i];
                self.send_closed(key, now);
            }
        }
    }

    /// Closed loop: as many as the end-to-end and QoS windows allow, in one batch.
    fn send_closed(&mut self, key: usize, now: u64) {
        let inflight = self.sh.plan.inflight as u64;
        let publishers_only = self.sh.plan.publishers_only();
        let measure_start = self.measure_start;
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.state != State::Ready || c.pending() > WBUF_HIGH {
            return;
        }
        let Some(p) = c.publ.as_mut() else {
            return;
        };
        let gate = &self.sh.gates[p.stream as usize];
        // Publishers only (no subscriber): no end-to-end window; QoS 1/2 is bounded by
        // the acknowledgements, QoS 0 by the socket (WBUF_HIGH above).
        let mut out = if publishers_only {
            0
        } else {
            u64::from(p.seq).saturating_sub(p.acked(gate.delivered.load(Ordering::Acquire)))
        };
        if out >= inflight {
            gate.blocked.store(true, Ordering::SeqCst);
            // Re-check after announcing: a subscriber may have advanced in between.
            out = u64::from(p.seq).saturating_sub(p.acked(gate.delivered.load(Ordering::SeqCst)));
            if out >= inflight {
                return;
            }
        }
        let n = (inflight - out).min(p.qos_window()).min(BATCH);
        if n == 0 {
            return;
        }
        for _ in 0..n {
            let id = if p.qos > 0 { p.alloc_id() } else { 0 };
            let payload = p.tmpl.append(&mut c.wbuf, id);
            stamp::write(
                payload,
                Stamp {
                    stream: p.stream,
                    seq: p.seq,
                    sent_ns: now,
                },
            );
            p.seq = p.seq.wrapping_add(1);
        }
        self.sent_total += n;
        self.expected_total += n * p.fanout;
        if now >= measure_start {
            self.res.sent += n;
            self.res.expected += n * p.fanout;
        }
        if let Err(e) = c.flush(now) {
            self.sh.fail(format!("write to broker failed: {e}"));
        }
    }

    /// Open loop: every message whose intended time is before `horizon` (now + timer
    /// slack). A late message is stamped with its intended time (the wait counts as
    /// latency: no coordinated omission); one sent up to `slack` early with the actual
    /// send time (no bias either way). Returns when to look at this publisher again.
    fn send_open(&mut self, key: usize, now: u64, horizon: u64) -> Option<u64> {
        let measure_start = self.measure_start;
        let c = self.clients.get_mut(key)?;
        if c.state != State::Ready {
            return None;
        }
        let room = if c.pending() > WBUF_HIGH { 0 } else { BATCH };
        let p = c.publ.as_mut()?;
        let due_end = p.due_end(horizon);
        let behind = due_end.saturating_sub(u64::from(p.seq));
        let n = behind.min(p.qos_window()).min(room);
        let mut sent_measured = 0;
        for _ in 0..n {
            let id = if p.qos > 0 { p.alloc_id() } else { 0 };
            let t = p.intended(u64::from(p.seq)).min(now);
            let payload = p.tmpl.append(&mut c.wbuf, id);
            stamp::write(
                payload,
                Stamp {
                    stream: p.stream,
                    seq: p.seq,
                    sent_ns: t,
                },
            );
            p.seq = p.seq.wrapping_add(1);
            if t >= measure_start {
                sent_measured += 1;
            }
        }
        self.sent_total += n;
        self.expected_total += n * p.fanout;
        self.res.sent += sent_measured;
        self.res.expected += sent_measured * p.fanout;
        let next = if u64::from(p.seq) < due_end {
            now + RETRY_NS
        } else {
            p.intended(u64::from(p.seq))
        };
        if n > 0 {
            if let Err(e) = c.flush(now) {
                self.sh.fail(format!("write to broker failed: {e}"));
            }
        }
        Some(next)
    }

    /// Closed loop only: a publisher whose window has not moved for `STALL_NS` writes the
    /// outstanding messages off (the broker dropped them) and counts a stall.
    pub fn check_stalls(&mut self, now: u64) {
        // Publishers only: nothing is waited for end to end, so nothing stalls.
        if self.sh.plan.is_open_loop() || self.sh.plan.publishers_only() {
            return;
        }
        let inflight = self.sh.plan.inflight as u64;
        for &key in &self.pub_keys {
            let Some(p) = self.clients.get_mut(key).and_then(|c| c.publ.as_mut()) else {
                continue;
            };
            let acked = p.acked(
                self.sh.gates[p.stream as usize]
                    .delivered
                    .load(Ordering::Acquire),
            );
            if acked != p.last_acked || p.last_acked_ns == 0 {
                p.last_acked = acked;
                p.last_acked_ns = now;
                continue;
            }
            let out = u64::from(p.seq).saturating_sub(acked);
            if out >= inflight && now.saturating_sub(p.last_acked_ns) > STALL_NS {
                p.credit += out;
                p.last_acked_ns = now;
                self.res.stalls += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opts::{resolve, Cli};
    use clap::Parser;

    fn publisher(qos: &str) -> Publisher {
        let cli = Cli::try_parse_from(["x", "fan-in", "--qos", qos, "--inflight", "3"]).unwrap();
        let plan = resolve(cli.cmd, String::new()).unwrap();
        Publisher::new(&plan, 0)
    }

    #[test]
    fn packet_ids_are_unique_nonzero_and_reused_after_release() {
        let mut p = publisher("1");
        let a = p.alloc_id();
        let b = p.alloc_id();
        assert_ne!(a, b);
        assert!(a != 0 && b != 0);
        assert_eq!(p.qos_window(), 1);
        assert!(p.release(a));
        assert!(!p.release(a)); // double release is ignored
        assert_eq!(p.qos_window(), 2);
        // wrap around skips 0 and ids still in use
        p.next_id = u16::MAX;
        let c = p.alloc_id();
        let d = p.alloc_id();
        assert_eq!(c, u16::MAX);
        assert_eq!(d, 1);
        assert_ne!(d, b);
    }

    /// At 3,300 msg/s the interval (303,030.30 ns) is not a whole number of nanoseconds:
    /// the float estimate alone could call a message not due whose intended time had
    /// passed, and the open-loop pump spun forever on it.
    #[test]
    fn due_messages_are_exactly_those_whose_time_has_come() {
        let mut p = publisher("0");
        p.t0 = 1_234_567;
        for rate in [3_300.0, 6_400.0, 7.0, 999_983.0] {
            p.interval_ns = 1e9 / rate;
            for step in 0..20_000u64 {
                let horizon = p.t0 + step * 15_151 + step % 7;
                let end = p.due_end(horizon);
                assert!(p.intended(end) > horizon, "rate {rate} step {step}");
                assert!(
                    end == 0 || p.intended(end - 1) <= horizon,
                    "rate {rate} step {step}"
                );
            }
        }
        assert_eq!(p.due_end(p.t0 - 1), 0);
        assert_eq!(p.due_end(p.t0), 1);
    }

    #[test]
    fn qos0_has_no_protocol_window() {
        assert_eq!(publisher("0").qos_window(), u64::MAX);
    }
}
