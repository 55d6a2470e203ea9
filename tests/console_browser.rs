//! The HTTP console page in headless Chromium (Debian's `chromium`, driven by
//! playwright-core as tests/websockets_browser.rs does; tests/browser/console.mjs): log in
//! with the password file's admin user, see a rumqttc test client listed, save a
//! screenshot (an artifact under the target dir's tmp, checked not to be blank: the page
//! decodes it and counts its colours), click "disconnect" and see the client's
//! connection end. Needs chromium, node and `npm ci` in tests/browser (CI's .ci/run);
//! otherwise SKIPPED, unless SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::console::{ConsoleBroker, ADMIN};
use common::{wait_until, V4};

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

fn browser() -> Option<PathBuf> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let ready = chromium.is_file()
        && node_ok
        && Path::new(BROWSER_DIR)
            .join("node_modules/playwright-core")
            .is_dir();
    if ready {
        return Some(chromium);
    }
    assert!(
        std::env::var("SHARDMQ_REQUIRE_INTEROP").as_deref() != Ok("1"),
        "chromium, node or tests/browser/node_modules missing and SHARDMQ_REQUIRE_INTEROP=1"
    );
    eprintln!("SKIPPED: needs chromium, node and `npm ci` in tests/browser");
    None
}

#[test]
fn log_in_see_a_client_and_disconnect_it_from_the_page() {
    let Some(chromium) = browser() else { return };
    let Some(c) = ConsoleBroker::start("") else {
        return;
    };
    let client = V4::connect("browser-victim", c.broker.port);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-connections.png");
    let _ = std::fs::remove_file(&shot);
    let mut child = Command::new("node")
        .arg(Path::new(BROWSER_DIR).join("console.mjs"))
        .arg(c.url("/"))
        .args([ADMIN.0, ADMIN.1, "browser-victim"])
        .arg(&shot)
        .arg("60000")
        .env("CHROMIUM", &chromium)
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
    let out = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned();
    let colours: usize = out
        .split("RESULT: ok colours=")
        .nth(1)
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("the page run failed: {out}"));
    eprintln!("screenshot: {} ({colours} colours)", shot.display());
    assert!(
        colours >= 16,
        "the screenshot looks blank ({colours} colours)"
    );
    let size = std::fs::metadata(&shot).unwrap().len();
    assert!(size > 10_000, "screenshot of {size} bytes");
    // The click reached the broker, and the client's connection ended.
    assert!(c
        .broker
        .wait_log("Client browser-victim disconnected by an administrator"));
    let ended = wait_until(Duration::from_secs(30), || {
        matches!(
            client.events.try_recv(),
            Ok(Err(_)) | Err(crossbeam_channel::TryRecvError::Disconnected)
        )
    });
    assert!(ended, "the client was not disconnected");
}
