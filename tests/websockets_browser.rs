//! MQTT.js (npm package `mqtt`, its browser bundle) in headless Chromium (Debian's
//! `chromium`) against shardmq's websockets listener: the broker serves the page
//! (tests/browser/index.html) and the bundle from `http_dir`; the page connects back over
//! ws:// (MQTT 5) or wss:// (MQTT 3.1.1), subscribes, publishes, and writes what it
//! received into the page, which tests/browser/run.mjs (playwright-core driving
//! /usr/bin/chromium, no browser download) reads. The test fails unless the page got its
//! own message back through the broker.
//!
//! Needs chromium, node and `npm ci` in tests/browser (CI's .ci/run does all three);
//! otherwise SKIPPED, unless SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tls::{listener_port, openssl, Pki};
use common::BrokerProc;

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

/// Chromium and the runner's node modules, or None (skipped with the reason).
fn browser() -> Option<PathBuf> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let dir = Path::new(BROWSER_DIR);
    let missing = [
        (!chromium.is_file()).then_some("chromium (apt-get install chromium)"),
        (!node_ok).then_some("node (apt-get install nodejs npm)"),
        (!dir.join("node_modules/mqtt/dist/mqtt.min.js").is_file())
            .then_some("MQTT.js (npm ci in tests/browser)"),
        (!dir.join("node_modules/playwright-core").is_dir())
            .then_some("playwright-core (npm ci in tests/browser)"),
    ];
    let missing: Vec<&str> = missing.into_iter().flatten().collect();
    if missing.is_empty() {
        return Some(chromium);
    }
    assert!(
        std::env::var("SHARDMQ_REQUIRE_INTEROP").as_deref() != Ok("1"),
        "missing {missing:?} and SHARDMQ_REQUIRE_INTEROP=1"
    );
    eprintln!("SKIPPED: missing {}", missing.join(", "));
    None
}

/// Opens `url` in headless Chromium; returns the page's result line.
fn open_page(chromium: &Path, url: &str) -> String {
    let mut child = Command::new("node")
        .arg(Path::new(BROWSER_DIR).join("run.mjs"))
        .args([url, "60000"])
        .env("CHROMIUM", chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the browser did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn roundtrip(broker: &BrokerProc, chromium: &Path, url_base: &str, version: &str) {
    let topic = format!("browser/{version}/{}", std::process::id());
    let payload = format!("chromium-says-hi-{version}");
    let url = format!("{url_base}/index.html?topic={topic}&payload={payload}&v={version}");
    let out = open_page(chromium, &url);
    assert!(
        out.contains(&format!("RESULT: ok {topic} {payload}")),
        "the page did not get its message back: {out}"
    );
    // Through this broker, over its websockets listener.
    assert!(broker.wait_log("as browser-"), "{:?}", broker.log_lines());
}

#[test]
fn mqtt_js_in_chromium_over_ws() {
    let Some(chromium) = browser() else { return };
    let broker = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\nprotocol websockets\nhttp_dir {BROWSER_DIR}\n"
    ));
    let port = listener_port(&broker, 1);
    roundtrip(&broker, &chromium, &format!("http://127.0.0.1:{port}"), "5");
}

#[test]
fn mqtt_js_in_chromium_over_wss() {
    let Some(chromium) = browser() else { return };
    let Some(openssl) = openssl() else { return };
    let pki = Pki::generate(&openssl);
    let broker = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\nprotocol websockets\nhttp_dir {BROWSER_DIR}\n\
         certfile {}\nkeyfile {}\n",
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let port = listener_port(&broker, 1);
    roundtrip(
        &broker,
        &chromium,
        &format!("https://localhost:{port}"),
        "3",
    );
}
