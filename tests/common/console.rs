//! A broker with an `http_listener` (the HTTP console) and two users of its password file
//! (made by Mosquitto's own `mosquitto_passwd`): `admin` (`http_acl write`) and `viewer`
//! (read-only); and `curl` as the HTTP client.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

use super::BrokerProc;

pub const ADMIN: (&str, &str) = ("admin", "s3cret-admin");
pub const VIEWER: (&str, &str) = ("viewer", "s3cret-viewer");

/// The broker (MQTT on listener 0, the console on listener 1) and the console's port.
pub struct ConsoleBroker {
    pub broker: BrokerProc,
    pub http: u16,
}

/// Writes a password file with [`ADMIN`] and [`VIEWER`]; None when mosquitto_passwd is
/// missing (the test is skipped, or fails with SHARDMQ_REQUIRE_INTEROP=1).
pub fn password_file(dir: &Path) -> Option<std::path::PathBuf> {
    let tool = super::mosquitto_tool("mosquitto_passwd")?;
    let file = dir.join("console.passwd");
    for (i, (user, password)) in [ADMIN, VIEWER].into_iter().enumerate() {
        let mut cmd = Command::new(&tool);
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg(&file)
            .args([user, password])
            .status()
            .unwrap()
            .success();
        assert!(ok, "mosquitto_passwd failed");
    }
    Some(file)
}

impl ConsoleBroker {
    /// Starts a broker with `extra` config lines after the http_listener line.
    pub fn start(extra: &str) -> Option<Self> {
        let dir = super::temp_dir("console-pw");
        let passwd = password_file(&dir)?;
        let broker = BrokerProc::start_config(&format!(
            "listener 0 127.0.0.1\nallow_anonymous true\nlog_type all\n\
             password_file {}\nhttp_acl write {}\nhttp_listener 0 127.0.0.1\n{extra}\n",
            passwd.display(),
            ADMIN.0
        ));
        let http = super::tls::listener_port(&broker, 1);
        Some(Self { broker, http })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

/// A response as curl saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: String,
    pub body: String,
}

/// `curl` with these extra arguments against `url`.
pub fn curl(url: &str, args: &[&str]) -> Reply {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-D", "-", "-o", "-"])
        .args(["-w", "\n--status:%{http_code}\n--type:%{content_type}\n"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, trailer) = text
        .rsplit_once("\n--status:")
        .unwrap_or((&text, "0\n--type:"));
    let (status, ctype) = trailer.split_once("\n--type:").unwrap_or(("0", ""));
    let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or(("", rest));
    Reply {
        status: status.trim().parse().unwrap_or(0),
        content_type: ctype.trim().to_string(),
        headers: headers.to_string(),
        body: body.to_string(),
    }
}

/// `curl -u user:password`.
pub fn get_as(url: &str, (user, password): (&str, &str)) -> Reply {
    curl(url, &["-u", &format!("{user}:{password}")])
}

/// The sum over shards of a metric's samples (`name{...} value` lines), if any.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// `name` on the PATH, or None (the test is SKIPPED with the Debian package to install;
/// with SHARDMQ_REQUIRE_INTEROP=1 it fails instead).
pub fn tool(name: &str, package: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("SHARDMQ_REQUIRE_INTEROP").as_deref() != Ok("1"),
            "{name} not found and SHARDMQ_REQUIRE_INTEROP=1 (apt-get install {package})"
        );
        eprintln!("SKIPPED: {name} not found (apt-get install {package})");
    }
    found
}
