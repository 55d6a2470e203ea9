//! The final report: counts, rates, latency percentiles, the load generator's own CPU time
//! (getrusage) and the broker's CPU and memory (from /proc/PID), as text for people and as
//! hand-written JSON for scripts. Also the per-second progress line. It reads /proc but
//! never touches the network.

use hdrhistogram::Histogram;
use std::fmt::Write as _;

use crate::opts::{Kind, Plan};
use crate::worker::WorkerResult;

/// One progress interval.
#[derive(Clone, Debug)]
pub struct TimePoint {
    pub t: f64,
    pub sent_per_sec: f64,
    pub recv_per_sec: f64,
    pub p99_us: f64,
    pub conns: u64,
}

/// Broker figures from /proc/PID/stat and /proc/PID/status.
#[derive(Clone, Debug)]
pub struct BrokerSample {
    pub cpu_secs: f64,
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

pub struct Report {
    pub plan: Plan,
    /// Every worker's measurements, summed.
    pub totals: WorkerResult,
    pub timeline: Vec<TimePoint>,
    pub duration_secs: f64,
    pub drain_secs: f64,
    pub loadgen_cpu_secs: f64,
    pub broker_before: Option<BrokerSample>,
    pub broker_start: Option<BrokerSample>,
    pub broker_end: Option<BrokerSample>,
}

/// CPU time (user + system) of this process so far, all threads.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the rusage struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an owned rusage.
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Reads utime+stime (fields 14, 15 of /proc/PID/stat) and VmRSS / VmHWM.
pub fn sample_broker(pid: u32) -> Result<BrokerSample, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("broker pid {pid}: {e}"))?;
    // The command name may hold spaces: fields start after the last ')'.
    let after = stat.rsplit_once(')').map(|x| x.1).ok_or("bad /proc stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_secs = (ticks(11) + ticks(12)) as f64 / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("broker pid {pid}: {e}"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(BrokerSample {
        cpu_secs,
        rss_kb: kb("VmRSS:"),
        hwm_kb: kb("VmHWM:"),
    })
}

pub fn progress_line(tp: &TimePoint, warmup: bool) -> String {
    format!(
        "[{:>5.1}s]{} sent {:>10.0}/s  recv {:>10.0}/s  p99 {:>9.1} us  conns {}",
        tp.t,
        if warmup { " (warmup)" } else { "" },
        tp.sent_per_sec,
        tp.recv_per_sec,
        tp.p99_us,
        tp.conns
    )
}

/// Latency percentiles in microseconds.
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles {
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            p999: 0.0,
            max: 0.0,
            mean: 0.0,
        };
    }
    let us = |v: u64| v as f64 / 1e3;
    Percentiles {
        p50: us(h.value_at_quantile(0.5)),
        p90: us(h.value_at_quantile(0.9)),
        p99: us(h.value_at_quantile(0.99)),
        p999: us(h.value_at_quantile(0.999)),
        max: us(h.max()),
        mean: h.mean() / 1e3,
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "null".to_string(),
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

impl Report {
    pub fn lost(&self) -> u64 {
        self.totals
            .expected
            .saturating_sub(self.totals.counts.unique())
    }
    pub fn is_messaging(&self) -> bool {
        self.plan.kind == Kind::PubSub
    }
    pub fn msgs_per_sec(&self) -> f64 {
        self.totals.counts.received as f64 / self.duration_secs
    }
    pub fn sent_per_sec(&self) -> f64 {
        self.totals.sent as f64 / self.duration_secs
    }
    /// Publishers only: messages the broker took in the measured window, the
    /// acknowledged ones at QoS 1/2, the sent ones at QoS 0 (nothing acknowledges them).
    pub fn accepted(&self) -> u64 {
        if self.plan.qos > 0 {
            self.totals.acked
        } else {
            self.totals.sent
        }
    }
    pub fn accepted_per_sec(&self) -> f64 {
        self.accepted() as f64 / self.duration_secs
    }
    /// Messages the broker's CPU time is divided by: deliveries to subscribers, or with
    /// publishers only what it accepted.
    fn handled(&self) -> u64 {
        if self.plan.publishers_only() {
            self.accepted()
        } else {
            self.totals.counts.received
        }
    }
    pub fn mb_per_sec(&self) -> f64 {
        self.totals.bytes as f64 / self.duration_secs / 1e6
    }
    pub fn connections(&self) -> u64 {
        match self.plan.kind {
            Kind::PubSub => (self.plan.publishers + self.plan.subscribers) as u64,
            Kind::Conn => self.totals.connects_ok,
            Kind::Churn => self.plan.connections as u64,
        }
    }
    /// (sent + received) per CPU-second of the load generator itself.
    pub fn loadgen_msgs_per_cpu_sec(&self) -> Option<f64> {
        (self.loadgen_cpu_secs > 0.0).then(|| {
            (self.totals.sent + self.totals.counts.received) as f64 / self.loadgen_cpu_secs
        })
    }
    pub fn broker_cpu_secs(&self) -> Option<f64> {
        match (&self.broker_start, &self.broker_end) {
            (Some(a), Some(b)) => Some(b.cpu_secs - a.cpu_secs),
            _ => None,
        }
    }
    pub fn broker_cpu_us_per_msg(&self) -> Option<f64> {
        let c = self.broker_cpu_secs()?;
        let n = self.handled();
        (n > 0).then(|| c * 1e6 / n as f64)
    }
    /// Broker RSS growth per held connection (conn scenario).
    pub fn broker_bytes_per_connection(&self) -> Option<f64> {
        let (a, b) = (self.broker_before.as_ref()?, self.broker_end.as_ref()?);
        (self.totals.connects_ok > 0 && self.plan.kind == Kind::Conn)
            .then(|| (b.rss_kb as f64 - a.rss_kb as f64) * 1024.0 / self.totals.connects_ok as f64)
    }
    fn main_latency(&self) -> &Histogram<u64> {
        if self.is_messaging() {
            &self.totals.latency
        } else {
            &self.totals.connect_latency
        }
    }

    pub fn text(&self) -> String {
        let p = &self.plan;
        let mut s = String::new();
        if !self.is_messaging() {
            let _ = writeln!(
                s,
                "== {} (MQTT {}, keepalive {} s, {}) ==",
                p.scenario,
                if p.version.is_v5() { "5.0" } else { "3.1.1" },
                p.keepalive,
                if p.connect_rate > 0.0 {
                    format!("{} connects/s", p.connect_rate)
                } else {
                    "connects as fast as possible".into()
                }
            );
        } else {
            let _ = writeln!(
                s,
                "== {} (MQTT {}, QoS {}, {} B payload, {}) ==",
                p.scenario,
                if p.version.is_v5() { "5.0" } else { "3.1.1" },
                p.qos,
                p.payload,
                match p.rate {
                    Some(r) => format!("open loop {r} msg/s per publisher"),
                    None => format!("closed loop, inflight {}", p.inflight),
                }
            );
        }
        if self.is_messaging() {
            let _ = writeln!(
                s,
                "publishers {}  subscribers {}  topics {}  duration {:.1} s  drain {:.2} s",
                p.publishers, p.subscribers, p.topics, self.duration_secs, self.drain_secs
            );
            let _ = writeln!(
                s,
                "sent {}  expected {}  received {}  lost {}  duplicated {}  reordered {}",
                self.totals.sent,
                self.totals.expected,
                self.totals.counts.received,
                self.lost(),
                self.totals.counts.duplicated,
                self.totals.counts.reordered
            );
            let _ = writeln!(
                s,
                "throughput: sent {:.0} msg/s  received {:.0} msg/s  {:.2} MB/s payload",
                self.sent_per_sec(),
                self.msgs_per_sec(),
                self.mb_per_sec()
            );
            if p.publishers_only() {
                let _ = writeln!(
                    s,
                    "publishers only (no subscriber): acknowledged {} ({} in all phases), \
                     sent {} in all phases; {} {:.0} msg/s",
                    self.totals.acked,
                    self.totals.acked_all,
                    self.totals.sent_all,
                    if p.qos > 0 {
                        "acknowledged"
                    } else {
                        "sent (QoS 0: nothing acknowledges)"
                    },
                    self.accepted_per_sec()
                );
            }
            if self.totals.rejected > 0 {
                let _ = writeln!(
                    s,
                    "rejected by the broker (v5 PUBACK/PUBREC reason >= 0x80): {}",
                    self.totals.rejected
                );
            }
            if self.totals.stalls > 0 {
                let _ = writeln!(
                    s,
                    "closed-loop stalls (window given up after 1 s): {}",
                    self.totals.stalls
                );
            }
        } else {
            let _ = writeln!(
                s,
                "connections ok {}  failed {}  churn cycles {}  held {:.1} s",
                self.totals.connects_ok,
                self.totals.connect_failed,
                self.totals.churn_cycles,
                self.duration_secs
            );
            if self.plan.kind == Kind::Churn {
                let _ = writeln!(
                    s,
                    "churn rate: {:.0} connect+disconnect cycles/s",
                    self.totals.churn_cycles as f64 / self.duration_secs
                );
            }
            if let Some(e) = &self.totals.first_conn_error {
                let _ = writeln!(s, "first connect error: {e}");
            }
        }
        let l = percentiles(self.main_latency());
        if p.publishers_only() {
            let _ = writeln!(s, "end-to-end latency: not measured (no subscriber)");
        } else {
            let _ = writeln!(
            s,
            "{} latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            if self.is_messaging() { "end-to-end" } else { "connect" },
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            l.mean
        );
        }
        let _ = write!(s, "loadgen CPU {:.3} s", self.loadgen_cpu_secs);
        if let Some(r) = self
            .loadgen_msgs_per_cpu_sec()
            .filter(|_| self.is_messaging())
        {
            let _ = write!(s, " = {:.2} M msgs (sent+received) per CPU-second", r / 1e6);
        }
        let _ = writeln!(s);
        if let Some(c) = self.broker_cpu_secs() {
            let _ = write!(s, "broker CPU {c:.3} s");
            if let Some(u) = self.broker_cpu_us_per_msg() {
                let what = if p.publishers_only() {
                    "accepted"
                } else {
                    "delivered"
                };
                let _ = write!(s, " = {u:.3} us per {what} msg");
            }
            let _ = writeln!(s);
        }
        if let Some(b) = &self.broker_end {
            let _ = write!(s, "broker RSS {} kB, peak {} kB", b.rss_kb, b.hwm_kb);
            if let Some(per) = self.broker_bytes_per_connection() {
                let _ = write!(s, ", {per:.0} B per connection");
            }
            let _ = writeln!(s);
        }
        s
    }

    pub fn json(&self) -> String {
        let p = &self.plan;
        let lat = |h: &Histogram<u64>| {
            let l = percentiles(h);
            format!(
                "{{\"p50\": {:.3}, \"p90\": {:.3}, \"p99\": {:.3}, \"p999\": {:.3}, \"max\": {:.3}, \"mean\": {:.3}}}",
                l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            )
        };
        let be = self.broker_end.as_ref();
        let mut s = String::from("{\n");
        let mut kv = |k: &str, v: String| {
            let _ = writeln!(s, "  \"{k}\": {v},");
        };
        kv("scenario", format!("\"{}\"", esc(&p.scenario)));
        kv("protocol", p.version.level().to_string());
        kv("qos", p.qos.to_string());
        kv("payload_bytes", p.payload.to_string());
        kv("publishers", p.publishers.to_string());
        kv("subscribers", p.subscribers.to_string());
        kv("topics", p.topics.to_string());
        kv("open_loop", p.is_open_loop().to_string());
        kv("rate_per_publisher", num(p.rate));
        kv("inflight", p.inflight.to_string());
        kv("threads", p.threads.to_string());
        kv("duration_secs", format!("{:.3}", self.duration_secs));
        kv("warmup_secs", format!("{:.3}", p.warmup));
        kv("drain_secs", format!("{:.3}", self.drain_secs));
        kv("sent", self.totals.sent.to_string());
        kv("expected", self.totals.expected.to_string());
        kv("received", self.totals.counts.received.to_string());
        kv("lost", self.lost().to_string());
        kv("duplicated", self.totals.counts.duplicated.to_string());
        kv("reordered", self.totals.counts.reordered.to_string());
        kv("stalls", self.totals.stalls.to_string());
        kv("foreign_messages", self.totals.foreign.to_string());
        kv("rejected_by_broker", self.totals.rejected.to_string());
        kv("publishers_only", p.publishers_only().to_string());
        kv("acked", self.totals.acked.to_string());
        kv("acked_all_phases", self.totals.acked_all.to_string());
        kv("sent_all_phases", self.totals.sent_all.to_string());
        kv("msgs_per_sec", format!("{:.3}", self.msgs_per_sec()));
        kv("sent_per_sec", format!("{:.3}", self.sent_per_sec()));
        kv(
            "acked_per_sec",
            format!("{:.3}", self.totals.acked as f64 / self.duration_secs),
        );
        kv("mb_per_sec", format!("{:.3}", self.mb_per_sec()));
        // Publishers only: no subscriber, so no end-to-end latency (null, not zeros).
        kv("latency_measured", (!p.publishers_only()).to_string());
        if p.publishers_only() && self.is_messaging() {
            kv("latency_us", "null".into());
        } else {
            kv("latency_us", lat(self.main_latency()));
        }
        kv("connect_latency_us", lat(&self.totals.connect_latency));
        kv("connections", self.connections().to_string());
        kv("connects_ok", self.totals.connects_ok.to_string());
        kv("connect_failed", self.totals.connect_failed.to_string());
        kv("churn_cycles", self.totals.churn_cycles.to_string());
        kv(
            "loadgen_cpu_seconds",
            format!("{:.3}", self.loadgen_cpu_secs),
        );
        kv(
            "loadgen_msgs_per_cpu_second",
            num(self.loadgen_msgs_per_cpu_sec()),
        );
        kv(
            "broker_pid",
            p.broker_pid.map_or("null".into(), |x| x.to_string()),
        );
        kv("broker_cpu_seconds", num(self.broker_cpu_secs()));
        kv("broker_cpu_us_per_msg", num(self.broker_cpu_us_per_msg()));
        kv(
            "broker_peak_rss_kb",
            be.map_or("null".into(), |b| b.hwm_kb.to_string()),
        );
        kv(
            "broker_rss_kb",
            be.map_or("null".into(), |b| b.rss_kb.to_string()),
        );
        kv(
            "broker_bytes_per_connection",
            num(self.broker_bytes_per_connection()),
        );
        let tl: Vec<String> = self
            .timeline
            .iter()
            .map(|t| {
                format!(
                    "{{\"t\": {:.3}, \"sent_per_sec\": {:.1}, \"recv_per_sec\": {:.1}, \"p99_us\": {:.1}, \"connections\": {}}}",
                    t.t, t.sent_per_sec, t.recv_per_sec, t.p99_us, t.conns
                )
            })
            .collect();
        kv("timeline", format!("[{}]", tl.join(", ")));
        let _ = writeln!(s, "  \"command\": \"{}\"", esc(&p.command_line));
        s.push_str("}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_and_reads_own_proc() {
        assert_eq!(esc("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
        let me = sample_broker(std::process::id()).unwrap();
        assert!(me.rss_kb > 0 && me.hwm_kb >= me.rss_kb);
        assert!(sample_broker(u32::MAX).is_err());
        assert!(cpu_seconds() >= 0.0);
    }
}
