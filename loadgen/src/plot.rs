//! Hand-written SVG: throughput (sent and received msgs/s) over time, and the end-to-end
//! latency percentile curve on a log "nines" axis. Pure string building; no I/O.

use std::fmt::Write as _;

use crate::report::Report;

const W: f64 = 900.0;
const H: f64 = 300.0;
const ML: f64 = 80.0;
const MR: f64 = 20.0;
const MT: f64 = 30.0;
const MB: f64 = 40.0;

fn polyline(s: &mut String, pts: &[(f64, f64)], color: &str) {
    let mut d = String::new();
    for (x, y) in pts {
        let _ = write!(d, "{x:.1},{y:.1} ");
    }
    let _ = writeln!(
        s,
        r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{d}"/>"#
    );
}

fn frame(s: &mut String, y0: f64, title: &str, xlabel: &str, ymax: f64, yunit: &str) {
    let _ = writeln!(
        s,
        r#"<text x="{ML}" y="{:.0}" font-size="15" font-weight="bold">{title}</text>"#,
        y0 + 20.0
    );
    let (top, bot) = (y0 + MT, y0 + H - MB);
    let _ = writeln!(
        s,
        r##"<rect x="{ML}" y="{top}" width="{:.0}" height="{:.0}" fill="none" stroke="#888"/>"##,
        W - ML - MR,
        bot - top
    );
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let y = bot - f * (bot - top);
        let _ = writeln!(
            s,
            r##"<line x1="{ML}" x2="{:.0}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            W - MR,
            ML - 5.0,
            y + 4.0,
            human(ymax * f, yunit)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.0}" y="{:.0}" font-size="12" text-anchor="middle">{xlabel}</text>"#,
        (ML + W - MR) / 2.0,
        y0 + H - 8.0
    );
}

fn human(v: f64, unit: &str) -> String {
    if v < 100.0 && v.fract() != 0.0 {
        format!("{v:.1}{unit}")
    } else if v >= 1e6 {
        format!("{:.1}M{unit}", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k{unit}", v / 1e3)
    } else {
        format!("{v:.0}{unit}")
    }
}

pub fn svg(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{:.0}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"#,
        2.0 * H
    );
    // Throughput over time.
    let tl = &r.timeline;
    let tmax = tl.last().map_or(1.0, |t| t.t).max(1.0);
    let ymax = tl
        .iter()
        .map(|t| t.sent_per_sec.max(t.recv_per_sec))
        .fold(1.0, f64::max)
        * 1.1;
    frame(
        &mut s,
        0.0,
        &format!("{}: msgs/s (blue sent, green received)", r.plan.scenario),
        "seconds",
        ymax,
        "",
    );
    let x = |t: f64| ML + t / tmax * (W - ML - MR);
    let y = |v: f64, y0: f64, max: f64| y0 + H - MB - v / max * (H - MT - MB);
    let sent: Vec<(f64, f64)> = tl
        .iter()
        .map(|t| (x(t.t), y(t.sent_per_sec, 0.0, ymax)))
        .collect();
    let recv: Vec<(f64, f64)> = tl
        .iter()
        .map(|t| (x(t.t), y(t.recv_per_sec, 0.0, ymax)))
        .collect();
    for i in 0..=4 {
        let t = tmax * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.0}" font-size="11" text-anchor="middle">{t:.1}</text>"#,
            x(t),
            H - MB + 14.0
        );
    }
    polyline(&mut s, &sent, "#1f6fd0");
    polyline(&mut s, &recv, "#2a9d3a");
    // Latency percentile curve: x = nines (0 = p0, 1 = p90, 2 = p99, ... 5 = p99.999).
    let h = if r.is_messaging() {
        &r.totals.latency
    } else {
        &r.totals.connect_latency
    };
    let y0 = H;
    let max_nines = 5.0;
    // Axis in ms when the tail is long, else in us.
    let (div, unit) = if h.max() > 10_000_000 {
        (1e6, "ms")
    } else {
        (1e3, "us")
    };
    let lmax = (h.max() as f64 / div).max(1.0) * 1.1;
    let title = format!("latency by percentile ({unit})");
    frame(&mut s, y0, &title, "percentile", lmax, "");
    let xn = |n: f64| ML + n / max_nines * (W - ML - MR);
    let mut pts = Vec::new();
    if !h.is_empty() {
        for i in 0..=200 {
            let n = f64::from(i) / 200.0 * max_nines;
            let q = 1.0 - 10f64.powf(-n);
            pts.push((xn(n), y(h.value_at_quantile(q) as f64 / div, y0, lmax)));
        }
    }
    polyline(&mut s, &pts, "#c0392b");
    for (i, lbl) in ["0", "90", "99", "99.9", "99.99", "99.999"]
        .iter()
        .enumerate()
    {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.0}" font-size="11" text-anchor="middle">{lbl}</text>"#,
            xn(i as f64),
            y0 + H - MB + 14.0
        );
    }
    s.push_str("</svg>\n");
    s
}
