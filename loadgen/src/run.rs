//! The coordinator: spreads clients over worker threads, advances the phases (connect
//! subscribers, connect publishers, warm up, measure, drain, done), prints a progress line
//! each second, samples CPU and broker figures at the edges of the measured window, and
//! merges the workers' results into a `Report`. It never touches a socket itself.

use anyhow::{bail, Context, Result};
use mio::{Poll, Waker};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::opts::{Kind, Plan};
use crate::report::{self, BrokerSample, Report, TimePoint};
use crate::shared::{phase, Shared};
use crate::stamp::now_ns;
use crate::worker::{Role, Worker, WorkerResult, WAKER};

/// Give up waiting for connections when none completed for this long.
const CONNECT_IDLE_TIMEOUT_NS: u64 = 15_000_000_000;

pub fn run(plan: &Plan) -> Result<Report> {
    let threads = plan.threads;
    let mut polls = Vec::with_capacity(threads);
    let mut wakers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let poll = Poll::new().context("creating poll")?;
        wakers.push(Waker::new(poll.registry(), WAKER).context("creating waker")?);
        polls.push(poll);
    }
    let sh = Arc::new(Shared::new(plan.clone(), wakers));
    let mut subs: Vec<Vec<(Role, usize)>> = vec![Vec::new(); threads];
    let mut pubs: Vec<Vec<usize>> = vec![Vec::new(); threads];
    match plan.kind {
        Kind::PubSub => {
            for j in 0..plan.subscribers {
                subs[j % threads].push((Role::Sub, j));
            }
            for i in 0..plan.publishers {
                pubs[i % threads].push(i);
            }
        }
        Kind::Conn | Kind::Churn => {
            let role = if plan.kind == Kind::Conn {
                Role::Idle
            } else {
                Role::Churn
            };
            for c in 0..plan.connections {
                subs[c % threads].push((role, c));
            }
        }
    }
    let broker_before = plan.broker_pid.map(report::sample_broker);
    let mut handles = Vec::with_capacity(threads);
    for (id, ((poll, s), p)) in polls.into_iter().zip(subs).zip(pubs).enumerate() {
        let w = Worker::new(id, Arc::clone(&sh), poll, s, p);
        let h = thread::Builder::new()
            .name(format!("loadgen-{id}"))
            .spawn(move || w.run())
            .context("spawning worker thread")?;
        handles.push(h);
    }
    let outcome = coordinate(&sh);
    if outcome.is_err() && sh.phase() != phase::ABORT {
        sh.set_phase(phase::ABORT);
    }
    let mut results = Vec::with_capacity(threads);
    for h in handles {
        match h.join() {
            Ok(r) => results.push(r),
            Err(_) => bail!("a worker thread panicked"),
        }
    }
    if let Some(msg) = sh.fatal_message() {
        bail!("{msg}");
    }
    let (timeline, window) = outcome?;
    Ok(merge(plan, results, timeline, window, broker_before))
}

/// Figures sampled at the edges of the measured window.
pub struct Window {
    pub secs: f64,
    pub cpu_secs: f64,
    pub broker_start: Option<BrokerSample>,
    pub broker_end: Option<BrokerSample>,
    pub drain_secs: f64,
}

fn sleep_until(t: u64) {
    let now = now_ns();
    if t > now {
        thread::sleep(Duration::from_nanos(t - now));
    }
}

/// Waits until `done()` or until nothing progressed for the idle timeout.
fn wait_for(sh: &Shared, what: &str, total: usize, count: impl Fn() -> usize) -> Result<()> {
    let mut last = count();
    let mut last_change = now_ns();
    let mut next_print = now_ns() + 1_000_000_000;
    loop {
        if sh.phase() == phase::ABORT {
            bail!("aborted");
        }
        let n = count();
        if n >= total {
            return Ok(());
        }
        let now = now_ns();
        if n != last {
            last = n;
            last_change = now;
        } else if now - last_change > CONNECT_IDLE_TIMEOUT_NS {
            sh.fail(format!(
                "timed out: only {n} of {total} {what} after {} s without progress",
                CONNECT_IDLE_TIMEOUT_NS / 1_000_000_000
            ));
            bail!("timed out");
        }
        if now >= next_print && !sh.plan.quiet {
            eprintln!("connecting {what}: {n}/{total}");
            next_print = now + 1_000_000_000;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn coordinate(sh: &Shared) -> Result<(Vec<TimePoint>, Window)> {
    let plan = &sh.plan;
    match plan.kind {
        Kind::PubSub => {
            wait_for(sh, "subscribers", plan.subscribers, || {
                sh.subs_ready.load(Ordering::Acquire)
            })?;
            sh.set_phase(phase::CONNECT_PUBS);
            wait_for(sh, "publishers", plan.publishers, || {
                sh.pubs_ready.load(Ordering::Acquire)
            })?;
        }
        Kind::Conn => {
            wait_for(sh, "connections", plan.connections, || {
                sh.subs_ready.load(Ordering::Acquire) + sh.conn_failed.load(Ordering::Acquire)
            })?;
        }
        Kind::Churn => {}
    }
    let run_start = now_ns();
    let warmup = (plan.warmup * 1e9) as u64;
    let measure_start = run_start + warmup;
    let measure_end = measure_start + (plan.duration * 1e9) as u64;
    sh.run_start_ns.store(run_start, Ordering::Release);
    sh.measure_start_ns.store(measure_start, Ordering::Release);
    sh.set_phase(phase::RUN);

    let mut timeline = Vec::new();
    let mut start_sample = None;
    let mut cpu_start = 0.0;
    let (mut last_sent, mut last_recv, mut last_t) = (0u64, 0u64, run_start);
    let mut next_tick = run_start + 1_000_000_000;
    loop {
        let wake = if start_sample.is_some() {
            next_tick.min(measure_end)
        } else {
            next_tick.min(measure_start)
        };
        sleep_until(wake);
        if sh.phase() == phase::ABORT {
            bail!("aborted");
        }
        let now = now_ns();
        if start_sample.is_none() && now >= measure_start {
            cpu_start = report::cpu_seconds();
            start_sample = Some(plan.broker_pid.map(report::sample_broker));
        }
        if now >= next_tick || now >= measure_end {
            let sent = sh.sum(|c| &c.sent);
            let recv = sh.sum(|c| &c.received);
            let dt = now.saturating_sub(last_t).max(1) as f64 / 1e9;
            let p99 = sh
                .interval
                .lock()
                .map(|mut h| {
                    let v = if h.is_empty() {
                        0
                    } else {
                        h.value_at_quantile(0.99)
                    };
                    h.reset();
                    v
                })
                .unwrap_or(0);
            let conns = sh.sum(|c| &c.conns);
            let tp = TimePoint {
                t: (now - run_start) as f64 / 1e9,
                sent_per_sec: (sent - last_sent) as f64 / dt,
                recv_per_sec: (recv - last_recv) as f64 / dt,
                p99_us: p99 as f64 / 1e3,
                conns,
            };
            if !plan.quiet {
                eprintln!("{}", report::progress_line(&tp, now < measure_start));
            }
            timeline.push(tp);
            (last_sent, last_recv, last_t) = (sent, recv, now);
            next_tick += 1_000_000_000;
        }
        if now >= measure_end {
            break;
        }
    }
    // A conn run samples the broker while every connection is still held.
    let held_sample = plan.broker_pid.map(report::sample_broker);
    sh.set_phase(phase::STOP);
    let stop = now_ns();
    // Counters are only comparable once every worker has published them after STOP.
    while sh.stopped.load(Ordering::Acquire) < plan.threads && sh.phase() != phase::ABORT {
        thread::sleep(Duration::from_millis(1));
    }
    let drain_deadline = stop + (plan.drain * 1e9) as u64;
    if plan.kind == Kind::PubSub {
        loop {
            let unique = sh.sum(|c| &c.unique);
            let expected = sh.sum(|c| &c.expected);
            // Publishers only: wait until every message is written to its socket and, at
            // QoS 1/2, acknowledged.
            let unacked = plan.publishers_only()
                && (sh.sum(|c| &c.unflushed) > 0
                    || (plan.qos > 0 && sh.sum(|c| &c.acked) < sh.sum(|c| &c.sent)));
            if (unique >= expected && !unacked)
                || now_ns() >= drain_deadline
                || sh.phase() == phase::ABORT
            {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    let end = now_ns();
    let cpu_secs = report::cpu_seconds() - cpu_start;
    let broker_end = if plan.kind == Kind::PubSub {
        plan.broker_pid.map(report::sample_broker)
    } else {
        held_sample
    };
    sh.set_phase(phase::DONE);
    let window = Window {
        secs: plan.duration,
        cpu_secs,
        broker_start: start_sample.flatten().and_then(Result::ok),
        broker_end: broker_end.and_then(Result::ok),
        drain_secs: (end - stop) as f64 / 1e9,
    };
    Ok((timeline, window))
}

fn merge(
    plan: &Plan,
    results: Vec<WorkerResult>,
    timeline: Vec<TimePoint>,
    w: Window,
    broker_before: Option<std::result::Result<BrokerSample, String>>,
) -> Report {
    let mut totals = WorkerResult::empty();
    for r in results {
        totals.merge(r);
    }
    Report {
        plan: plan.clone(),
        totals,
        timeline,
        duration_secs: w.secs,
        drain_secs: w.drain_secs,
        loadgen_cpu_secs: w.cpu_secs,
        broker_before: broker_before.and_then(Result::ok),
        broker_start: w.broker_start,
        broker_end: w.broker_end,
    }
}
