//! TLS listeners, black-box: certificates are generated at run time with `openssl` (a CA,
//! a server certificate for localhost / 127.0.0.1, a client certificate), and
//! mosquitto_pub / mosquitto_sub connect with `--cafile` (and `--cert` / `--key`).
//! Skipped with a message when openssl or the mosquitto clients are missing, unless
//! SHARDMQ_REQUIRE_INTEROP=1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::BrokerProc;

/// Path of openssl, or None (skip with a message); with SHARDMQ_REQUIRE_INTEROP=1 a
/// missing openssl fails the test, as `mosquitto_tool` does.
fn openssl() -> Option<PathBuf> {
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

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// A CA, a server certificate (CN=localhost, SAN localhost / 127.0.0.1) and client
    /// certificates `client1` (signed by the CA) and `rogue` (self-signed).
    fn generate(openssl: &Path) -> Self {
        let dir = common::temp_dir("pki");
        let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new(openssl)
            .args(["req", "-x509", "-days", "2", "-subj", "/CN=shardmq-test-ca"])
            .args(ec)
            .args(["-keyout", &p("ca.key"), "-out", &p("ca.crt")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
        std::fs::write(
            dir.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n\
             subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for (name, cn, ext) in [
            ("server", "localhost", "server.ext"),
            ("client1", "client1", "client.ext"),
        ] {
            run(Command::new(openssl)
                .args(["req", "-subj", &format!("/CN={cn}")])
                .args(ec)
                .args(["-keyout", &p(&format!("{name}.key"))])
                .args(["-out", &p(&format!("{name}.csr"))]));
            run(Command::new(openssl)
                .args([
                    "x509",
                    "-req",
                    "-days",
                    "2",
                    "-in",
                    &p(&format!("{name}.csr")),
                ])
                .args([
                    "-CA",
                    &p("ca.crt"),
                    "-CAkey",
                    &p("ca.key"),
                    "-CAcreateserial",
                ])
                .args(["-extfile", &p(ext), "-out", &p(&format!("{name}.crt"))]));
        }
        run(Command::new(openssl)
            .args(["req", "-x509", "-days", "2", "-subj", "/CN=rogue"])
            .args(ec)
            .args(["-keyout", &p("rogue.key"), "-out", &p("rogue.crt")]));
        Self { dir }
    }
}

/// The port of the second listener the broker logged (the TLS one).
fn tls_port(b: &BrokerProc) -> u16 {
    let mut port = 0;
    assert!(common::wait_until(common::TIMEOUT, || {
        let ports: Vec<u16> = b
            .log_lines()
            .iter()
            .filter_map(|l| l.split("listen socket on port ").nth(1))
            .filter_map(|r| r.trim_end_matches('.').trim().parse().ok())
            .collect();
        port = ports.get(1).copied().unwrap_or(0);
        port != 0
    }));
    port
}

struct Tools {
    openssl: PathBuf,
    sub: PathBuf,
    publ: PathBuf,
}

fn tools() -> Option<Tools> {
    Some(Tools {
        openssl: openssl()?,
        sub: common::mosquitto_tool("mosquitto_sub")?,
        publ: common::mosquitto_tool("mosquitto_pub")?,
    })
}

/// Subscribes over TLS with `args`, publishes `payload` over TLS with `pub_args`, and
/// returns what the subscriber printed (None if it could not connect).
fn roundtrip(
    t: &Tools,
    port: u16,
    args: &[&str],
    pub_args: &[&str],
    topic: &str,
) -> Option<String> {
    let sub = Command::new(&t.sub)
        .args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            "8",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let _ = Command::new(&t.publ)
        .args([
            "-h",
            "localhost",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-m",
            "over-tls",
        ])
        .args(pub_args)
        .output()
        .unwrap();
    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[test]
fn tls_listener_serves_mosquitto_clients() {
    let Some(t) = tools() else { return };
    let pki = Pki::generate(&t.openssl);
    let b = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\ncertfile {}\nkeyfile {}",
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let port = tls_port(&b);
    let ca = pki.path("ca.crt");
    let got = roundtrip(&t, port, &["--cafile", &ca], &["--cafile", &ca], "tls/a");
    assert_eq!(got.as_deref(), Some("over-tls"));
    // MQTT 5 over TLS too.
    let v5 = ["--cafile", ca.as_str(), "-V", "mqttv5"];
    let got = roundtrip(&t, port, &v5, &v5, "tls/b");
    assert_eq!(got.as_deref(), Some("over-tls"));
    // A plain-text client on the TLS port gets nothing and the broker carries on.
    let mut raw = common::Raw::connect(port);
    raw.try_send(&common::connect_v311("plain", true, 60, None));
    // At most a TLS alert (0x15), never a CONNACK, then the close.
    let reply = raw.recv_within(Duration::from_secs(3));
    assert!(
        reply.as_ref().map_or(true, |p| p.first != 0x20),
        "{reply:?}"
    );
    assert!(raw.closed_by_broker());
    let (_c, _, code) = common::Raw::mqtt_connect(b.port, "plain-ok", true);
    assert_eq!(code, 0);
}

#[test]
fn tls_require_certificate_and_identity_as_username() {
    let Some(t) = tools() else { return };
    let pki = Pki::generate(&t.openssl);
    let acl = pki.dir.join("acl");
    std::fs::write(&acl, "user client1\ntopic readwrite id/#\n").unwrap();
    let b = BrokerProc::start(&format!(
        "acl_file {}\nlistener 0 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
         require_certificate true\nuse_identity_as_username true",
        acl.display(),
        pki.path("ca.crt"),
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let port = tls_port(&b);
    let ca = pki.path("ca.crt");
    let (c1, k1) = (pki.path("client1.crt"), pki.path("client1.key"));
    let with_cert = [
        "--cafile",
        ca.as_str(),
        "--cert",
        c1.as_str(),
        "--key",
        k1.as_str(),
    ];
    // The certificate's CN is the username: the ACL for client1 applies.
    assert_eq!(
        roundtrip(&t, port, &with_cert, &with_cert, "id/x").as_deref(),
        Some("over-tls")
    );
    // Without a client certificate the handshake fails.
    assert!(roundtrip(&t, port, &["--cafile", &ca], &["--cafile", &ca], "id/y").is_none());
    // A certificate from another CA is refused.
    let (rc, rk) = (pki.path("rogue.crt"), pki.path("rogue.key"));
    let rogue = [
        "--cafile",
        ca.as_str(),
        "--cert",
        rc.as_str(),
        "--key",
        rk.as_str(),
    ];
    assert!(roundtrip(&t, port, &rogue, &rogue, "id/z").is_none());
}

#[test]
fn tls_version_13_only() {
    let Some(t) = tools() else { return };
    let pki = Pki::generate(&t.openssl);
    let b = BrokerProc::start(&format!(
        "listener 0 127.0.0.1\ncertfile {}\nkeyfile {}\ntls_version tlsv1.3",
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    let port = tls_port(&b);
    let ca = pki.path("ca.crt");
    let v13 = ["--cafile", ca.as_str(), "--tls-version", "tlsv1.3"];
    assert_eq!(
        roundtrip(&t, port, &v13, &v13, "v/13").as_deref(),
        Some("over-tls")
    );
    // mosquitto clients treat --tls-version as a minimum; openssl s_client can insist.
    let handshake = |flag: &str| {
        Command::new(&t.openssl)
            .args(["s_client", flag, "-connect", &format!("127.0.0.1:{port}")])
            .args(["-CAfile", &ca, "-verify_return_error"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(handshake("-tls1_3"));
    assert!(!handshake("-tls1_2"));
}

#[test]
fn tls_bad_key_file_stops_the_start() {
    let dir = common::temp_dir("badtls");
    let conf = dir.join("c.conf");
    std::fs::write(
        &conf,
        format!(
            "listener 0 127.0.0.1\ncertfile {0}/missing.crt\nkeyfile {0}/missing.key\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shardmq"))
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.crt"), "{err}");
}
