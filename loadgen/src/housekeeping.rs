//! Periodic duties of a worker, off the message path: progress counters for the
//! coordinator, the latency interval histogram, closed-loop stall checks, keepalive
//! PINGREQs, and the DISCONNECT of every client at the end. It never parses packets.

use std::sync::atomic::Ordering;

use crate::shared::phase;
use crate::stamp::now_ns;
use crate::wire;
use crate::worker::{State, Worker};

impl Worker {
    pub(crate) fn housekeeping(&mut self, ph: u8, now: u64) {
        self.publish_counters();
        if !self.interval.is_empty() {
            if let Ok(mut h) = self.sh.interval.lock() {
                let _ = h.add(&self.interval);
            }
            self.interval.reset();
        }
        if ph == phase::RUN {
            self.check_stalls(now);
        }
        // Keepalive: PINGREQ on clients silent for half the keepalive. [MQTT-3.1.2-23]
        let ka = u64::from(self.sh.plan.keepalive) * 1_000_000_000;
        if ka > 0 && now.saturating_sub(self.last_ping_scan) >= 1_000_000_000 {
            self.last_ping_scan = now;
            let mut dead = Vec::new();
            for (k, c) in self.clients.iter_mut() {
                if c.state != State::Connecting && now.saturating_sub(c.last_write_ns) > ka / 2 {
                    wire::encode_pingreq(&mut c.wbuf);
                    c.last_write_ns = now;
                    if c.flush(now).is_err() {
                        dead.push(k);
                    }
                }
            }
            for k in dead {
                self.drop_client(k, "write failed", false);
            }
        }
    }

    pub(crate) fn publish_counters(&self) {
        let t = &self.sh.counters[self.id];
        t.sent.store(self.sent_total, Ordering::Relaxed);
        t.expected.store(self.expected_total, Ordering::Relaxed);
        t.received.store(self.recv_total, Ordering::Relaxed);
        t.unique.store(self.unique_total, Ordering::Relaxed);
        t.acked.store(self.res.acked_all, Ordering::Relaxed);
        if self.sh.plan.publishers_only() {
            let unflushed: usize = self.clients.iter().map(|(_, c)| c.pending()).sum();
            t.unflushed.store(unflushed as u64, Ordering::Relaxed);
        }
        t.conns.store(self.conns, Ordering::Relaxed);
    }

    pub(crate) fn shutdown(&mut self) {
        let now = now_ns();
        for (_, c) in self.clients.iter_mut() {
            if c.state == State::Ready || c.state == State::WaitSubAck {
                wire::encode_disconnect(&mut c.wbuf);
                let _ = c.flush(now);
            }
        }
        self.clients.clear();
        self.conns = 0;
    }
}
