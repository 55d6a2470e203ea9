//! State the coordinator and the worker threads share: the run phase, per-thread progress
//! counters, per-publisher end-to-end gates (closed loop) and the first fatal error. Only
//! atomics and two mutexes touched off the hot path; no per-message locking.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::opts::Plan;

/// Run phases, in order; the coordinator advances them and wakes every worker.
pub mod phase {
    pub const CONNECT_SUBS: u8 = 0;
    pub const CONNECT_PUBS: u8 = 1;
    pub const RUN: u8 = 2;
    /// Publishers stop; subscribers keep reading (drain).
    pub const STOP: u8 = 3;
    pub const DONE: u8 = 4;
    pub const ABORT: u8 = 5;
}

/// Progress of one worker, refreshed about ten times a second.
#[derive(Default)]
pub struct ThreadCounters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub unique: AtomicU64,
    pub expected: AtomicU64,
    /// Acknowledgements of this worker's publishers (QoS > 0), all phases.
    pub acked: AtomicU64,
    /// Publishers only: bytes encoded but not yet written to the sockets.
    pub unflushed: AtomicU64,
    pub conns: AtomicU64,
}

/// Closed-loop gate of one publisher: deliveries of its messages counted by all its
/// subscribers together (each adds `step` every `step` messages), and whether the
/// publisher waits for it. Divided by the fan-out it is the average subscriber's progress.
#[derive(Default)]
pub struct StreamGate {
    pub delivered: AtomicU64,
    pub blocked: AtomicBool,
}

pub struct Shared {
    pub plan: Plan,
    pub phase: AtomicU8,
    pub run_start_ns: AtomicU64,
    /// When this process set up the run: older stamps come from an earlier run (a
    /// persistent session's queue) and are not tracked.
    pub created_ns: u64,
    pub measure_start_ns: AtomicU64,
    /// Subscribers with every subscription granted (or idle connections up).
    pub subs_ready: AtomicUsize,
    pub pubs_ready: AtomicUsize,
    pub conn_failed: AtomicUsize,
    /// Workers that saw STOP and published their final send counters.
    pub stopped: AtomicUsize,
    pub fatal: Mutex<Option<String>>,
    pub counters: Vec<ThreadCounters>,
    /// Latency of the last progress interval (ns), merged in by workers.
    pub interval: Mutex<Histogram<u64>>,
    pub gates: Vec<StreamGate>,
    pub wakers: Vec<mio::Waker>,
}

/// Latency histogram in ns, 1 ns .. 1 h, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail (not input-dependent).
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

impl Shared {
    pub fn new(plan: Plan, wakers: Vec<mio::Waker>) -> Self {
        let threads = wakers.len();
        Self {
            gates: (0..plan.publishers)
                .map(|_| StreamGate::default())
                .collect(),
            plan,
            phase: AtomicU8::new(phase::CONNECT_SUBS),
            run_start_ns: AtomicU64::new(0),
            created_ns: crate::stamp::now_ns(),
            measure_start_ns: AtomicU64::new(u64::MAX),
            subs_ready: AtomicUsize::new(0),
            pubs_ready: AtomicUsize::new(0),
            conn_failed: AtomicUsize::new(0),
            stopped: AtomicUsize::new(0),
            fatal: Mutex::new(None),
            counters: (0..threads).map(|_| ThreadCounters::default()).collect(),
            interval: Mutex::new(new_histogram()),
            wakers,
        }
    }

    pub fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    pub fn set_phase(&self, p: u8) {
        self.phase.store(p, Ordering::Release);
        self.wake_all();
    }

    pub fn wake_all(&self) {
        for w in &self.wakers {
            let _ = w.wake();
        }
    }

    /// Records the first fatal error and aborts the run.
    pub fn fail(&self, msg: String) {
        if let Ok(mut f) = self.fatal.lock() {
            if f.is_none() {
                *f = Some(msg);
            }
        }
        self.set_phase(phase::ABORT);
    }

    pub fn fatal_message(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }

    pub fn sum(&self, f: impl Fn(&ThreadCounters) -> &AtomicU64) -> u64 {
        self.counters
            .iter()
            .map(|c| f(c).load(Ordering::Relaxed))
            .sum()
    }
}
