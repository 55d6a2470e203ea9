//! A real Prometheus server (Debian's `prometheus` package) scrapes the console's
//! `/metrics` every 2 s with basic authentication; the test asks Prometheus' own HTTP
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
            "global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n\
             scrape_configs:\n  - job_name: shardmq\n    scrape_interval: 2s\n    scrape_timeout: 2s\n\
             \x20   basic_auth:\n      username: {}\n      password: {}\n\
             \x20   static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
            VIEWER.0, VIEWER.1
        ),
    )
    .unwrap();
    // A free port for Prometheus' own HTTP API (it cannot bind port 0 and report it):
    // if another process takes it first, Prometheus exits and is started on another.
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus");
        let mut p = Prometheus {
            child,
            port,
            dir: dir.clone(),
        };
        let ready = wait_until(TIMEOUT, || {
            p.child.try_wait().unwrap().is_some()
                || curl(&format!("http://127.0.0.1:{port}/-/ready"), &[]).status == 200
        });
        if ready && p.child.try_wait().unwrap().is_none() {
            return Some(p);
        }
        let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
        eprintln!("Prometheus did not become ready on port {port}; retrying. Its log:\n{log}");
        let _ = p.child.kill();
        let _ = p.child.wait();
        std::mem::forget(p); // keep the directory for the next attempt
    }
    panic!("Prometheus did not start");
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
    let mut up = None;
    let scraped = wait_until(TIMEOUT, || {
        up = query(&prom, "up{job=\"shardmq\"}");
        up == Some(1.0)
    });
    if !scraped {
        let targets = curl(
            &format!("http://127.0.0.1:{}/api/v1/targets", prom.port),
            &[],
        );
        let log = std::fs::read_to_string(prom.dir.join("prometheus.log")).unwrap_or_default();
        panic!(
            "Prometheus never scraped shardmq successfully (up = {up:?}); targets: {}\nlog:\n{log}",
            targets.body
        );
    }
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
