//! TLS helpers for the black-box tests: a test CA made with `openssl ca` at run time (so
//! certificates can be revoked and CRLs generated), the served certificate as
//! `openssl s_client` sees it, and a `mosquitto_sub` whose output is read line by line so
//! that a test publishes only once the subscription is acknowledged.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BrokerProc, TIMEOUT};

/// Path of openssl, or None (skip with a message); with SHARDMQ_REQUIRE_INTEROP=1 a
/// missing openssl fails the test, as `mosquitto_tool` does.
pub fn openssl() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("openssl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("SHARDMQ_REQUIRE_INTEROP").as_deref() != Ok("1"),
            "openssl not found and SHARDMQ_REQUIRE_INTEROP=1 (apt-get install openssl)"
        );
        eprintln!("SKIPPED: openssl not found; install openssl to run the TLS tests");
    }
    found
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// openssl, mosquitto_sub and mosquitto_pub, or None (test skipped).
pub struct Tools {
    pub openssl: PathBuf,
    pub sub: PathBuf,
    pub publ: PathBuf,
}

pub fn tools() -> Option<Tools> {
    Some(Tools {
        openssl: openssl()?,
        sub: super::mosquitto_tool("mosquitto_sub")?,
        publ: super::mosquitto_tool("mosquitto_pub")?,
    })
}

const CA_CONF: &str = "[ca]\ndefault_ca = test_ca\n[test_ca]\ndir = DIR\n\
database = $dir/index.txt\nnew_certs_dir = $dir/issued\nserial = $dir/serial\n\
crlnumber = $dir/crlnumber\ncertificate = $dir/ca.crt\nprivate_key = $dir/ca.key\n\
default_md = sha256\ndefault_days = 2\ndefault_crl_days = 2\npolicy = any\n\
unique_subject = no\n[any]\ncommonName = supplied\n\
[server_ext]\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature\n\
extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n\
[client_ext]\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature\n\
extendedKeyUsage = clientAuth\n";

/// A test CA in a private directory: `ca.crt`, a server certificate `server.crt` /
/// `server.key` (CN=localhost, SAN localhost and 127.0.0.1), a client certificate
/// `client1.crt` / `client1.key` and a self-signed `rogue.crt` / `rogue.key`.
pub struct Pki {
    pub dir: PathBuf,
    openssl: PathBuf,
}

const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

impl Pki {
    pub fn generate(openssl: &Path) -> Self {
        let dir = super::temp_dir("pki");
        std::fs::create_dir_all(dir.join("issued")).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        std::fs::write(dir.join("crlnumber"), "1000\n").unwrap();
        std::fs::write(
            dir.join("ca.cnf"),
            CA_CONF.replace("DIR", dir.to_str().unwrap()),
        )
        .unwrap();
        let pki = Self {
            dir,
            openssl: openssl.to_path_buf(),
        };
        run(Command::new(openssl)
            .args(["req", "-x509", "-days", "2", "-subj", "/CN=shardmq-test-ca"])
            .args(EC_KEY)
            .args(["-keyout", &pki.path("ca.key"), "-out", &pki.path("ca.crt")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
        pki.issue("server", "localhost", "server_ext");
        pki.issue("client1", "client1", "client_ext");
        run(Command::new(openssl)
            .args(["req", "-x509", "-days", "2", "-subj", "/CN=rogue"])
            .args(EC_KEY)
            .args([
                "-keyout",
                &pki.path("rogue.key"),
                "-out",
                &pki.path("rogue.crt"),
            ]));
        pki
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// Makes `NAME.key` and `NAME.crt` signed by the CA with subject CN=`cn` and the
    /// extensions of section `ext` (`server_ext` or `client_ext`).
    pub fn issue(&self, name: &str, cn: &str, ext: &str) {
        let csr = self.path(&format!("{name}.csr"));
        run(Command::new(&self.openssl)
            .args(["req", "-new", "-subj", &format!("/CN={cn}")])
            .args(EC_KEY)
            .args(["-keyout", &self.path(&format!("{name}.key")), "-out", &csr]));
        run(Command::new(&self.openssl)
            .args(["ca", "-batch", "-notext", "-config", &self.path("ca.cnf")])
            .args(["-extensions", ext, "-in", &csr])
            .args(["-out", &self.path(&format!("{name}.crt"))]));
    }

    /// Revokes `NAME.crt` in the CA's database.
    pub fn revoke(&self, name: &str) {
        run(Command::new(&self.openssl)
            .args(["ca", "-config", &self.path("ca.cnf")])
            .args(["-revoke", &self.path(&format!("{name}.crt"))]));
    }

    /// Writes the CA's current CRL (PEM) to `file` in the PKI directory.
    pub fn gencrl(&self, file: &str) {
        run(Command::new(&self.openssl)
            .args(["ca", "-gencrl", "-config", &self.path("ca.cnf")])
            .args(["-out", &self.path(file)]));
    }

    /// mosquitto_pub/sub arguments for a TLS connection trusting the CA, with the client
    /// certificate `client` (e.g. "client1") if given.
    pub fn client_args(&self, client: Option<&str>) -> Vec<String> {
        let mut args = vec!["--cafile".to_string(), self.path("ca.crt")];
        if let Some(c) = client {
            args.extend([
                "--cert".into(),
                self.path(&format!("{c}.crt")),
                "--key".into(),
                self.path(&format!("{c}.key")),
            ]);
        }
        args
    }
}

/// The port of the `index`-th listener the broker logged (0 = the plain one that
/// `BrokerProc::start` always adds first).
pub fn listener_port(b: &BrokerProc, index: usize) -> u16 {
    let mut port = 0;
    assert!(super::wait_until(TIMEOUT, || {
        let ports: Vec<u16> = b
            .log_lines()
            .iter()
            .filter_map(|l| l.split("listen socket on port ").nth(1))
            .filter_map(|r| r.trim_end_matches('.').trim().parse().ok())
            .collect();
        port = ports.get(index).copied().unwrap_or(0);
        port != 0
    }));
    port
}

/// The subject line of the certificate the TLS listener on `port` serves, as
/// `openssl s_client` prints it (e.g. "subject=CN = localhost"); None if the handshake
/// fails.
pub fn served_subject(openssl: &Path, port: u16, ca: &str) -> Option<String> {
    let out = Command::new(openssl)
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-CAfile", ca, "-verify_return_error", "-showcerts"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("subject="))
        .map(str::to_owned)
}

/// A running `mosquitto_sub -d`, its output lines collected by a thread.
pub struct Sub {
    child: Child,
    lines: crossbeam_channel::Receiver<String>,
    seen: Vec<String>,
}

impl Sub {
    /// Starts `mosquitto_sub -d -h localhost -p PORT -t TOPIC` with `args`, line-buffered
    /// through coreutils' `stdbuf` (its debug lines are block-buffered into a pipe).
    pub fn start(t: &Tools, port: u16, topic: &str, args: &[String]) -> Self {
        let mut child = Command::new("stdbuf")
            .arg("-oL")
            .arg(&t.sub)
            .args(["-d", "-v"])
            .args(endpoint(port, topic))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for an output line containing `needle` (already seen lines count).
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> bool {
        if self.seen.iter().any(|l| l.contains(needle)) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Waits until the broker acknowledged the subscription; false if the connection or
    /// the subscription failed.
    pub fn subscribed(&mut self) -> bool {
        self.wait_line("received SUBACK", TIMEOUT)
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// mosquitto_pub/sub arguments for TLS-PSK: `--psk KEY --psk-identity ID` plus `extra`.
pub fn psk_args(id: &str, key: &str, extra: &[&str]) -> Vec<String> {
    ["--psk", key, "--psk-identity", id]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_string())
        .collect()
}

/// `-h localhost -p PORT -t TOPIC` (localhost: the name the test server certificates have).
fn endpoint(port: u16, topic: &str) -> [String; 6] {
    ["-h", "localhost", "-p", &port.to_string(), "-t", topic].map(str::to_string)
}

/// Runs mosquitto_pub to `localhost:port` with `args`; true if it exited successfully.
pub fn publish(t: &Tools, port: u16, topic: &str, payload: &str, args: &[String]) -> bool {
    Command::new(&t.publ)
        .args(endpoint(port, topic))
        .args(["-m", payload])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
        .status
        .success()
}

/// Subscribes with `sub_args`, publishes `payload` with `pub_args`, and tells whether
/// the subscriber received it. False when either side could not connect.
pub fn roundtrip(
    t: &Tools,
    port: u16,
    topic: &str,
    sub_args: &[String],
    pub_args: &[String],
) -> bool {
    let mut sub = Sub::start(t, port, topic, sub_args);
    if !sub.subscribed() {
        return false;
    }
    let payload = format!("over-tls-{topic}");
    publish(t, port, topic, &payload, pub_args)
        && sub.wait_line(&format!("{topic} {payload}"), TIMEOUT)
}

/// Runs the broker on a config file with `conf` as its text, expecting it to refuse to
/// start; returns what it printed on stderr. A broker that is still running after the
/// timeout is killed and the test fails (it must never hang).
pub fn refused_start(conf: &str) -> String {
    let dir = super::temp_dir("refused");
    let path = dir.join("c.conf");
    std::fs::write(&path, conf).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = super::wait_until(TIMEOUT, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        exited && !out.status.success(),
        "the broker started with {conf:?}: {err}"
    );
    err
}

/// A plain MQTT client on the TLS port `port` sends CONNECT: true when it gets no CONNACK
/// (at most a TLS alert) and the broker closes the connection.
pub fn plain_client_refused(port: u16) -> bool {
    let mut raw = super::Raw::connect(port);
    raw.try_send(&super::connect_v311("plain", true, 60, None));
    let reply = raw.recv_within(Duration::from_secs(3));
    reply.as_ref().map_or(true, |p| p.first != 0x20) && raw.closed_by_broker()
}
