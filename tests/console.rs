//! The HTTP console of an `http_listener`, black-box: curl against `/metrics` and the JSON
//! API, with the users of a password file made by `mosquitto_passwd`, clients from
//! rumqttc. Credentials are checked (none or wrong: 401; a read-only user acting: 403),
//! the figures follow real traffic, `promtool check metrics` accepts the exposition, and
//! an administrator's disconnect reaches the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::console::{curl, get_as, metric_sum, ConsoleBroker, ADMIN, VIEWER};
use common::{wait_until, BrokerProc, V4};

const TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn no_or_wrong_credentials_are_refused() {
    let Some(c) = ConsoleBroker::start("") else {
        return;
    };
    for path in ["/metrics", "/api/v1/overview", "/", "/console.js"] {
        let r = curl(&c.url(path), &[]);
        assert_eq!(r.status, 401, "{path} without credentials: {r:?}");
        assert!(
            r.headers
                .contains("WWW-Authenticate: Basic realm=\"shardmq\""),
            "{r:?}"
        );
        let r = get_as(&c.url(path), (ADMIN.0, "wrong"));
        assert_eq!(r.status, 401, "{path} with a wrong password: {r:?}");
        let r = get_as(&c.url(path), ("nobody", ADMIN.1));
        assert_eq!(r.status, 401, "{path} as an unknown user: {r:?}");
        let r = get_as(&c.url(path), VIEWER);
        assert_eq!(r.status, 200, "{path} as viewer: {r:?}");
    }
    assert!(c
        .broker
        .wait_log("HTTP console: GET /metrics (no credentials)"));
}

#[test]
fn metrics_follow_traffic_and_pass_promtool() {
    let Some(c) = ConsoleBroker::start("") else {
        return;
    };
    let client = V4::connect("metrics-pub", c.broker.port);
    for i in 0..25 {
        client.publish("m/t", rumqttc::QoS::AtMostOnce, false, format!("{i}"));
    }
    let mut text = String::new();
    let seen = wait_until(TIMEOUT, || {
        let r = get_as(&c.url("/metrics"), VIEWER);
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
        text = r.body;
        metric_sum(&text, "shardmq_publish_received_total").unwrap_or(0.0) >= 25.0
            && metric_sum(&text, "shardmq_connections").unwrap_or(0.0) >= 1.0
    });
    assert!(seen, "publishes never showed in /metrics:\n{text}");
    assert!(text.contains("# TYPE shardmq_loop_lag_seconds histogram"));
    assert!(metric_sum(&text, "shardmq_loop_lag_seconds_count").unwrap() > 0.0);
    assert_eq!(metric_sum(&text, "shardmq_build_info"), Some(1.0));
    promtool_check(&text);

    // OpenMetrics when asked as Prometheus asks.
    let r = curl(
        &c.url("/metrics"),
        &[
            "-u",
            &format!("{}:{}", VIEWER.0, VIEWER.1),
            "-H",
            "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        ],
    );
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("application/openmetrics-text"),
        "{r:?}"
    );
    assert!(r.body.ends_with("# EOF\n"));
    assert!(r.body.contains("# TYPE shardmq_publish_received counter"));
    client.disconnect();
}

/// `promtool check metrics` (Debian's `prometheus` package) reads the text on stdin.
fn promtool_check(text: &str) {
    let Some(promtool) = common::console::tool("promtool", "prometheus") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_api_lists_a_client_and_an_admin_disconnects_it() {
    let Some(c) = ConsoleBroker::start("") else {
        return;
    };
    let client = V4::connect("console-victim", c.broker.port);
    client.subscribe("watch/+/x", rumqttc::QoS::AtLeastOnce);
    let listed = wait_until(TIMEOUT, || {
        let r = get_as(&c.url("/api/v1/connections?search=victim"), VIEWER);
        r.status == 200 && r.body.contains("\"client_id\":\"console-victim\"")
    });
    assert!(listed, "the client never showed in /api/v1/connections");
    let r = get_as(&c.url("/api/v1/connections?search=nomatch"), VIEWER);
    assert_eq!(r.body, "{\"connections\":[]}");
    // The console reads figures the shard publishes between loop iterations: the
    // snapshot that first listed the client may predate its SUBSCRIBE, so wait for one
    // that has the subscription too.
    let mut last = None;
    let subscribed = wait_until(TIMEOUT, || {
        let r = get_as(&c.url("/api/v1/subscriptions"), VIEWER);
        let ok = r.body.contains("\"filter\":\"watch/+/x\"") && r.body.contains("\"qos\":1");
        last = Some(r);
        ok
    });
    assert!(subscribed, "the subscription never showed: {last:?}");
    let r = get_as(&c.url("/api/v1/listeners"), VIEWER);
    assert!(r.body.contains("\"protocol\":\"http\""), "{r:?}");
    assert!(r.body.contains(&format!("\"port\":{}", c.http)), "{r:?}");
    let r = get_as(&c.url("/api/v1/overview"), VIEWER);
    assert!(r.body.contains("\"may_write\":false"), "{r:?}");

    // The viewer may not act; the admin may.
    let target = c.url("/api/v1/connections/console-victim");
    let viewer = format!("{}:{}", VIEWER.0, VIEWER.1);
    let r = curl(&target, &["-u", &viewer, "-X", "DELETE"]);
    assert_eq!(r.status, 403, "{r:?}");
    let r = curl(
        &c.url("/api/v1/connections/nobody-here"),
        &["-u", &format!("{}:{}", ADMIN.0, ADMIN.1), "-X", "DELETE"],
    );
    assert_eq!(r.status, 404, "{r:?}");
    let r = curl(
        &target,
        &["-u", &format!("{}:{}", ADMIN.0, ADMIN.1), "-X", "DELETE"],
    );
    assert_eq!(r.status, 202, "{r:?}");
    // The client's connection ends (rumqttc reports an error, then the thread stops).
    let ended = wait_until(TIMEOUT, || {
        matches!(
            client.events.try_recv(),
            Ok(Err(_)) | Err(crossbeam_channel::TryRecvError::Disconnected)
        )
    });
    assert!(ended, "the client was not disconnected");
    assert!(c
        .broker
        .wait_log("Client console-victim disconnected by an administrator"));
    let gone = wait_until(TIMEOUT, || {
        let r = get_as(&c.url("/api/v1/connections"), VIEWER);
        r.status == 200 && !r.body.contains("console-victim")
    });
    assert!(gone);
}

#[test]
fn retained_messages_are_browsed_and_deleted() {
    let Some(c) = ConsoleBroker::start("") else {
        return;
    };
    let client = V4::connect("console-retainer", c.broker.port);
    client.publish("plant/boiler/temp", rumqttc::QoS::AtLeastOnce, true, "71.5");
    let listed = wait_until(TIMEOUT, || {
        let r = get_as(&c.url("/api/v1/retained?search=boiler"), VIEWER);
        r.body.contains("\"topic\":\"plant/boiler/temp\"")
            && r.body.contains("\"preview\":\"71.5\"")
    });
    assert!(listed, "the retained message never showed");
    let admin = format!("{}:{}", ADMIN.0, ADMIN.1);
    let r = curl(
        &c.url("/api/v1/retained/plant%2Fboiler%2F%2B"),
        &["-u", &admin, "-X", "DELETE"],
    );
    assert_eq!(r.status, 400, "a filter is not a topic: {r:?}");
    let r = curl(
        &c.url("/api/v1/retained/plant%2Fboiler%2Ftemp"),
        &["-u", &admin, "-X", "DELETE"],
    );
    assert_eq!(r.status, 202, "{r:?}");
    // A new subscriber gets nothing retained any more.
    let gone = wait_until(TIMEOUT, || {
        !get_as(&c.url("/api/v1/retained"), VIEWER)
            .body
            .contains("boiler")
    });
    assert!(gone, "the retained message was not deleted");
    let sub = V4::connect("console-late", c.broker.port);
    sub.subscribe("plant/#", rumqttc::QoS::AtLeastOnce);
    assert!(sub
        .next_publish_within(Duration::from_millis(500))
        .is_none());
    client.disconnect();
}

#[test]
fn an_http_listener_without_password_file_does_not_start() {
    let dir = common::temp_dir("console-nopw");
    let conf = dir.join("c.conf");
    std::fs::write(
        &conf,
        "listener 0 127.0.0.1\nallow_anonymous true\nhttp_listener 0 127.0.0.1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http_listener 0") && err.contains("needs a password_file"),
        "{err}"
    );
    assert!(err.contains("c.conf"), "names the file: {err}");
}

#[test]
fn an_http_listener_block_takes_no_protocol_option() {
    let _ = BrokerProc::start; // (the config error is checked without starting)
    let dir = common::temp_dir("console-proto");
    let conf = dir.join("c.conf");
    std::fs::write(&conf, "http_listener 0\nprotocol mqtt\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("protocol") && err.contains("line 2"), "{err}");
}

#[test]
fn the_console_is_served_over_tls_with_the_listener_tls_options() {
    let Some(openssl) = common::tls::openssl() else {
        return;
    };
    let pki = common::tls::Pki::generate(&openssl);
    let Some(c) = ConsoleBroker::start(&format!(
        "certfile {}\nkeyfile {}\n",
        pki.path("server.crt"),
        pki.path("server.key")
    )) else {
        return;
    };
    let url = format!("https://localhost:{}/metrics", c.http);
    let creds = format!("{}:{}", VIEWER.0, VIEWER.1);
    let r = curl(&url, &["--cacert", &pki.path("ca.crt"), "-u", &creds]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("shardmq_build_info"));
    let r = curl(&url, &["--cacert", &pki.path("ca.crt")]);
    assert_eq!(r.status, 401, "{r:?}");
    // Plain HTTP on the TLS port gets no answer.
    let r = curl(&c.url("/metrics"), &["-u", &creds]);
    assert_eq!(r.status, 0, "{r:?}");
}

#[test]
fn drops_are_counted_by_reason_and_publishes_by_qos() {
    let Some(c) = ConsoleBroker::start("message_size_limit 16") else {
        return;
    };
    let client = V4::connect("dropper", c.broker.port);
    client.publish("d/t", rumqttc::QoS::AtMostOnce, false, vec![b'x'; 100]);
    client.publish("d/t", rumqttc::QoS::AtLeastOnce, false, "small");
    let mut text = String::new();
    let seen = wait_until(TIMEOUT, || {
        text = get_as(&c.url("/metrics"), VIEWER).body;
        let too_large: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("shardmq_publish_dropped_total{")
                    && l.contains("reason=\"too_large\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let qos1: f64 = text
            .lines()
            .filter(|l| l.starts_with("shardmq_publish_received_total{") && l.contains("qos=\"1\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        too_large >= 1.0 && qos1 >= 1.0
    });
    assert!(seen, "no too_large drop or QoS 1 publish counted:\n{text}");
    client.disconnect();
}

#[test]
fn persistence_log_size_and_fsync_latency_are_exposed() {
    let dir = common::temp_dir("console-persist");
    let Some(c) = ConsoleBroker::start(&format!(
        "persistence true\npersistence_location {}/\npersistence_fsync always\n",
        dir.display()
    )) else {
        return;
    };
    let client = V4::connect("persisted", c.broker.port);
    client.publish("keep/me", rumqttc::QoS::AtLeastOnce, true, "1");
    let mut text = String::new();
    let seen = wait_until(TIMEOUT, || {
        text = get_as(&c.url("/metrics"), VIEWER).body;
        metric_sum(&text, "shardmq_persistence_fsync_seconds_count").unwrap_or(0.0) >= 1.0
            && metric_sum(&text, "shardmq_persistence_log_bytes").unwrap_or(0.0) > 16.0
            && metric_sum(&text, "shardmq_persistence_last_fsync_timestamp_seconds").unwrap_or(0.0)
                > 1.6e9
    });
    assert!(seen, "no fsync or log size in /metrics:\n{text}");
    promtool_check(&text);
    client.disconnect();
}
