//! A real Prometheus server (Debian's `prometheus` package) scrapes the console's
//! `/metrics` every second with basic authentication; the test asks Prometheus' own HTTP
//! API for the values it stored: `up` is 1 and the publishes sent by a rumqttc client are
//! counted. Needs `prometheus` (CI's .ci/run installs it); otherwise SKIPPED, unless
//! SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::console::{curl, ConsoleBroker, VIEWER};
use common::{wait_until, V4};

/// Prometheus can be slow to start on a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(90);

struct Prometheus {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_prometheus(target_port: u16) -> Option<Prometheus> {
    let binary = common::console::tool("prometheus", "prometheus")?;
    let dir = common::temp_dir("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: shardmq\n    scrape_interval: 1s\n\
             \x20   basic_auth:\n      username: {}\n      password: {}\n\
             \x20   static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
            VIEWER.0, VIEWER.1
        ),
    )
    .unwrap();
    // A free port for Prometheus' own HTTP API (it cannot bind port 0 and report it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Some(Prometheus { child, port, dir })
}

/// The first value of an instant query, if Prometheus has one.
fn query(p: &Prometheus, promql: &str) -> Option<f64> {
    let r = curl(
        &format!("http://127.0.0.1:{}/api/v1/query", p.port),
        &["--get", "--data-urlencode", &format!("query={promql}")],
    );
    if r.status != 200 {
        return None;
    }
    // {"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.123,"42"]}]}}
    let value = r.body.split("\"value\":[").nth(1)?;
    let value = value.split(',').nth(1)?;
    value
        .trim_matches(|c| c == '"' || c == ']' || c == '}')
        .parse()
        .ok()
}

#[test]
fn prometheus_scrapes_the_console() {
    let Some(c) = ConsoleBroker::start("") else {
        return;
    };
    let Some(prom) = start_prometheus(c.http) else {
        return;
    };
    let client = V4::connect("prom-pub", c.broker.port);
    for i in 0..40 {
        client.publish("p/t", rumqttc::QoS::AtLeastOnce, false, format!("{i}"));
    }
    let up = wait_until(TIMEOUT, || query(&prom, "up{job=\"shardmq\"}") == Some(1.0));
    assert!(up, "Prometheus never scraped shardmq successfully");
    let mut last = None;
    let counted = wait_until(TIMEOUT, || {
        last = query(&prom, "sum(shardmq_publish_received_total)");
        last.is_some_and(|v| v >= 40.0)
    });
    assert!(
        counted,
        "Prometheus has {last:?} publishes received, expected >= 40"
    );
    assert_eq!(query(&prom, "sum(shardmq_connections)"), Some(1.0));
    let lag = query(&prom, "sum(shardmq_loop_lag_seconds_count)");
    assert!(lag.is_some_and(|v| v > 0.0), "loop lag histogram: {lag:?}");
    client.disconnect();
}
