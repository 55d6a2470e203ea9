//! Shared helpers for the black-box tests: a real `shardmq` process (or an in-process
//! broker) on an OS-chosen port, rumqttc clients driven from a background thread, a raw
//! TCP client for byte-exact protocol checks, and the mosquitto_pub/sub skip rule.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod bridge;
pub mod console;
pub mod persist;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod tls;
pub mod ws;

/// Generous: the CI machine has 2 cores and runs tests in parallel.
pub const TIMEOUT: Duration = Duration::from_secs(20);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh private directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("shardmq-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Resident memory of process `pid` in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Waits until `cond` holds, polling; false after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `shardmq` process started from the binary cargo built for these tests.
/// `log_type all` without `debug` (see [`BrokerProc::start`]).
pub const LOG_TYPES: &str =
    "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
                             log_type subscribe\nlog_type unsubscribe\nlog_type websockets\n";

pub struct BrokerProc {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl BrokerProc {
    /// Starts shardmq with `listener 0 127.0.0.1`, anonymous access and `extra` config lines.
    /// Every log type but `debug` (the per-packet trace, which a flooding test would turn
    /// into millions of lines): add `log_type debug` in `extra` for it.
    pub fn start(extra: &str) -> Self {
        Self::start_config(&format!(
            "listener 0 127.0.0.1\nallow_anonymous true\n{LOG_TYPES}{extra}\n"
        ))
    }

    /// Starts shardmq with exactly this config file text (it must log its listening port).
    pub fn start_config(text: &str) -> Self {
        Self::start_config_with(text, |_| {})
    }

    /// [`BrokerProc::start`] with `configure` applied to the command before the spawn
    /// (e.g. a `pre_exec` that lowers a resource limit).
    pub fn start_with(extra: &str, configure: impl FnOnce(&mut Command)) -> Self {
        Self::start_config_with(
            &format!("listener 0 127.0.0.1\nallow_anonymous true\n{LOG_TYPES}{extra}\n"),
            configure,
        )
    }

    /// [`BrokerProc::start_config`] with `configure` applied to the command.
    pub fn start_config_with(text: &str, configure: impl FnOnce(&mut Command)) -> Self {
        let dir = temp_dir("broker");
        let config_path = dir.join("shardmq.conf");
        std::fs::write(&config_path, text).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_shardmq"));
        command
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("spawn shardmq");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[shardmq] {line}");
                log2.lock().unwrap().push(line);
            }
        });
        let mut this = Self {
            child,
            port: 0,
            dir,
            config_path,
            log,
        };
        let mut port = 0;
        let ok = wait_until(TIMEOUT, || {
            port = this.logged_port().unwrap_or(0);
            port != 0
        });
        if !ok {
            let status = this.child.try_wait();
            panic!(
                "shardmq did not report a listening port (status {status:?}); log: {:?}",
                this.log_lines()
            );
        }
        this.port = port;
        this
    }

    fn logged_port(&self) -> Option<u16> {
        self.log.lock().unwrap().iter().find_map(|l| {
            let rest = l.split("listen socket on port ").nth(1)?;
            rest.trim_end_matches('.').trim().parse().ok()
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The broker's resident set size (VmRSS), KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str) -> bool {
        wait_until(TIMEOUT, || {
            self.log.lock().unwrap().iter().any(|l| l.contains(needle))
        })
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the process to exit; None on timeout.
    pub fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// rumqttc (MQTT 3.1.1)

pub type V4Event = Result<rumqttc::Event, rumqttc::ConnectionError>;

/// A rumqttc client whose connection is polled by a background thread.
pub struct V4 {
    pub client: rumqttc::Client,
    pub events: crossbeam_channel::Receiver<V4Event>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn v4_options(id: &str, port: u16) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

impl V4 {
    /// Connects and waits for CONNACK (panics if refused).
    pub fn connect(id: &str, port: u16) -> Self {
        Self::connect_with(v4_options(id, port))
    }

    pub fn connect_with(opts: rumqttc::MqttOptions) -> Self {
        let c = Self::start(opts);
        let ack = c.wait_connack();
        assert_eq!(
            ack.code,
            rumqttc::ConnectReturnCode::Success,
            "CONNACK refused"
        );
        c
    }

    /// Starts the client without waiting for anything.
    pub fn start(opts: rumqttc::MqttOptions) -> Self {
        let (client, mut connection) = rumqttc::Client::new(opts, 1000);
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // rumqttc restarts the connection when a poll times out before CONNACK, so
            // the first wait is long (a loaded machine may answer slowly); after it, short
            // waits keep the stop flag responsive.
            let mut wait = TIMEOUT;
            while !stop2.load(Ordering::Relaxed) {
                match connection.recv_timeout(wait) {
                    Ok(Ok(ev)) => {
                        if matches!(ev, rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) {
                            wait = Duration::from_millis(50);
                        }
                        if tx.send(Ok(ev)).is_err() {
                            return;
                        }
                    }
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e));
                        return; // no automatic reconnect in tests
                    }
                    Err(rumqttc::RecvTimeoutError::Timeout) => {}
                    Err(rumqttc::RecvTimeoutError::Disconnected) => return,
                }
            }
            // Dropping `connection` closes the socket without DISCONNECT.
        });
        Self {
            client,
            events: rx,
            stop,
            thread: Some(thread),
        }
    }

    pub fn wait_connack(&self) -> rumqttc::ConnAck {
        self.wait_for(|ev| match ev {
            rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)) => Some(a.clone()),
            _ => None,
        })
        .expect("CONNACK")
    }

    /// Waits for an incoming packet that `f` picks; None on timeout or connection error.
    pub fn wait_for<T>(&self, mut f: impl FnMut(&rumqttc::Event) -> Option<T>) -> Option<T> {
        self.wait_for_within(TIMEOUT, &mut f)
    }

    pub fn wait_for_within<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&rumqttc::Event) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(ev)) => {
                    if let Some(t) = f(&ev) {
                        return Some(t);
                    }
                }
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    pub fn subscribe(&self, filter: &str, qos: rumqttc::QoS) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).unwrap();
        self.wait_for(|ev| match ev {
            rumqttc::Event::Incoming(rumqttc::Packet::SubAck(a)) => Some(a.return_codes.clone()),
            _ => None,
        })
        .expect("SUBACK")
    }

    pub fn publish(
        &self,
        topic: &str,
        qos: rumqttc::QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) {
        self.client
            .publish(topic, qos, retain, payload.into())
            .unwrap();
    }

    /// The next PUBLISH received.
    pub fn next_publish(&self) -> Option<rumqttc::Publish> {
        self.wait_for(|ev| match ev {
            rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
    }

    pub fn next_publish_within(&self, timeout: Duration) -> Option<rumqttc::Publish> {
        self.wait_for_within(timeout, |ev| match ev {
            rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
    }

    /// Sends DISCONNECT and waits for the connection thread to end.
    pub fn disconnect(mut self) {
        let _ = self.client.disconnect();
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            match self.events.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect))) => break,
                Ok(Err(_)) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                _ => {}
            }
        }
        self.stop();
    }

    /// Closes the socket without DISCONNECT (an abnormal disconnect for the broker).
    pub fn drop_connection(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for V4 {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// $SYS: where the shards stand

/// Latest value of every `$SYS` topic matching `filter` seen within a few ticks, until
/// `done` holds (the broker needs a short `sys_interval`).
pub fn watch_sys(
    port: u16,
    filter: &str,
    mut done: impl FnMut(&std::collections::HashMap<String, String>) -> bool,
) -> std::collections::HashMap<String, String> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mon = V4::connect(&format!("sysmon-{}-{n}", std::process::id()), port);
    mon.subscribe(filter, rumqttc::QoS::AtMostOnce);
    let mut seen = std::collections::HashMap::new();
    wait_until(TIMEOUT, || {
        while let Some(p) = mon.next_publish_within(Duration::from_millis(50)) {
            seen.insert(
                p.topic.clone(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            );
        }
        done(&seen)
    });
    seen
}

/// A `$SYS` value as a number (0 when absent).
pub fn num(seen: &std::collections::HashMap<String, String>, topic: &str) -> u64 {
    seen.get(topic).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Both shards of a `threads 2` broker hold at least one client (the monitor
/// connection included).
pub fn assert_both_shards_used(port: u16) {
    let seen = watch_sys(port, "$SYS/broker/shards/+/clients/connected", |s| {
        num(s, "$SYS/broker/shards/0/clients/connected") > 0
            && num(s, "$SYS/broker/shards/1/clients/connected") > 0
    });
    assert!(
        num(&seen, "$SYS/broker/shards/0/clients/connected") > 0
            && num(&seen, "$SYS/broker/shards/1/clients/connected") > 0,
        "connections not spread over both shards: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Raw TCP client: hand-encoded packets, independent of shardmq's codec.

pub struct Raw {
    pub stream: TcpStream,
}

/// Encodes a remaining length.
pub fn var_int(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

pub fn mqtt_str(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A whole packet: first byte + remaining length + body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    var_int(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// CONNECT for MQTT 3.1.1 (level 4) with optional will (topic, payload, qos, retain).
pub fn connect_v311(
    client_id: &str,
    clean: bool,
    keep_alive: u16,
    will: Option<(&str, &[u8], u8, bool)>,
) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str(b"MQTT", &mut body);
    body.push(4);
    let mut flags = if clean { 0x02 } else { 0 };
    if let Some((_, _, qos, retain)) = will {
        flags |= 0x04 | (qos << 3) | if retain { 0x20 } else { 0 };
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    mqtt_str(client_id.as_bytes(), &mut body);
    if let Some((topic, payload, _, _)) = will {
        mqtt_str(topic.as_bytes(), &mut body);
        mqtt_str(payload, &mut body);
    }
    frame(0x10, &body)
}

pub fn publish(
    topic: &str,
    qos: u8,
    retain: bool,
    dup: bool,
    packet_id: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_str(topic.as_bytes(), &mut body);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    let first = 0x30 | (qos << 1) | u8::from(retain) | if dup { 0x08 } else { 0 };
    frame(first, &body)
}

pub fn subscribe(packet_id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    for (f, q) in filters {
        mqtt_str(f.as_bytes(), &mut body);
        body.push(*q);
    }
    frame(0x82, &body)
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62), PUBCOMP (0x70).
pub fn ack(first: u8, packet_id: u16) -> Vec<u8> {
    frame(first, &packet_id.to_be_bytes())
}

/// True when the peer closes `stream` (EOF or reset) within the timeout, skipping what
/// it sends first.
pub fn closed_within(stream: &mut TcpStream) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

/// Whether python3 with paho-mqtt is installed; if not, the test is skipped with a
/// message (a failure with SHARDMQ_REQUIRE_INTEROP=1).
pub fn paho_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("SHARDMQ_REQUIRE_INTEROP").as_deref() != Ok("1"),
            "python3 with paho-mqtt not found and SHARDMQ_REQUIRE_INTEROP=1 (pip install paho-mqtt)"
        );
        eprintln!("SKIPPED: python3 with paho-mqtt not found; pip install paho-mqtt to run this interop test");
    }
    ok
}

/// One received packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    pub first: u8,
    pub body: Vec<u8>,
}

impl RawPacket {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
    /// Topic, packet id (0 for QoS 0) and payload of a 3.1.1 PUBLISH.
    pub fn publish_parts(&self) -> (String, u16, Vec<u8>) {
        assert_eq!(self.kind(), 3, "not a PUBLISH: {self:?}");
        let tl = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        let topic = String::from_utf8(self.body[2..2 + tl].to_vec()).unwrap();
        let qos = (self.first >> 1) & 3;
        let mut at = 2 + tl;
        let mut id = 0;
        if qos > 0 {
            id = u16::from_be_bytes([self.body[at], self.body[at + 1]]);
            at += 2;
        }
        (topic, id, self.body[at..].to_vec())
    }
    pub fn packet_id(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }
}

/// One write of `buf[*at..]` to a socket with a write timeout, advancing `*at`. A write
/// that timed out (or would block) is not an error: the next call resumes where this one
/// stopped, so a frame is never abandoned half-written. `Err`: the connection is gone.
pub fn write_resuming(stream: &mut TcpStream, buf: &[u8], at: &mut usize) -> std::io::Result<()> {
    match stream.write(&buf[*at..]) {
        Ok(n) => {
            *at += n;
            Ok(())
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl Raw {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Self { stream }
    }

    /// Connects with MQTT 3.1.1 and returns the CONNACK (session present, return code).
    pub fn mqtt_connect(port: u16, client_id: &str, clean: bool) -> (Self, bool, u8) {
        let mut raw = Self::connect(port);
        raw.send(&connect_v311(client_id, clean, 60, None));
        let ack = raw.recv().expect("CONNACK");
        assert_eq!(ack.first, 0x20, "expected CONNACK, got {ack:?}");
        (raw, ack.body[0] & 1 == 1, ack.body[1])
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends, ignoring errors (the broker may already have closed the socket).
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// The next packet, or None on EOF / timeout.
    pub fn recv(&mut self) -> Option<RawPacket> {
        let mut first = [0u8; 1];
        self.stream.read_exact(&mut first).ok()?;
        let mut len = 0usize;
        let mut mult = 1usize;
        loop {
            let mut b = [0u8; 1];
            self.stream.read_exact(&mut b).ok()?;
            len += (b[0] & 0x7f) as usize * mult;
            mult *= 128;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).ok()?;
        Some(RawPacket {
            first: first[0],
            body,
        })
    }

    pub fn recv_within(&mut self, timeout: Duration) -> Option<RawPacket> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let p = self.recv();
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        p
    }

    /// True when the broker closes the connection (EOF or reset) within the timeout,
    /// skipping any packets it sends first (e.g. a DISCONNECT).
    pub fn closed_by_broker(&mut self) -> bool {
        closed_within(&mut self.stream)
    }

    /// Subscribes and returns the SUBACK return codes. PUBLISH packets that match the new
    /// subscription may arrive before the SUBACK [MQTT-3.8.4] (with several shards the
    /// SUBACK waits until every shard knows the subscription); they are skipped.
    pub fn subscribe(&mut self, packet_id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
        self.send(&subscribe(packet_id, filters));
        let ack = loop {
            let p = self.recv().expect("SUBACK");
            if p.kind() != 3 {
                break p;
            }
        };
        assert_eq!(ack.kind(), 9, "expected SUBACK, got {ack:?}");
        assert_eq!(ack.packet_id(), packet_id);
        ack.body[2..].to_vec()
    }

    pub fn disconnect(mut self) {
        let _ = self.stream.write_all(&[0xE0, 0x00]);
    }
}

// ---------------------------------------------------------------------------------------
// mosquitto_pub / mosquitto_sub

/// Path of a mosquitto client program, or None (test skipped, with a message). With
/// SHARDMQ_REQUIRE_INTEROP=1 a missing program fails the test instead.
pub fn mosquitto_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("SHARDMQ_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("{name} not found and SHARDMQ_REQUIRE_INTEROP=1 (apt-get install mosquitto-clients)");
        }
        eprintln!("SKIPPED: {name} not found; install mosquitto-clients to run this interop test");
    }
    found
}

/// Path of the mosquitto broker, or None (test skipped, with a message). With
/// SHARDMQ_REQUIRE_INTEROP=1 a missing broker fails the test instead.
pub fn mosquitto_broker() -> Option<PathBuf> {
    let found = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("SHARDMQ_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("mosquitto not found and SHARDMQ_REQUIRE_INTEROP=1 (apt-get install mosquitto)");
        }
        eprintln!("SKIPPED: mosquitto not found; install mosquitto to run this interop test");
    }
    found
}

/// A Mosquitto broker (`bin`, from [`mosquitto_broker`]) on a port of its own on
/// 127.0.0.1, with the config lines `extra`, its config file in `dir`. Killed when
/// dropped; [`MosquittoProc::stop`] stops it as an operator does (SIGTERM: it saves its
/// persistence file).
pub struct MosquittoProc {
    child: Child,
    pub port: u16,
}

impl MosquittoProc {
    pub fn start(bin: &std::path::Path, dir: &std::path::Path, extra: &str) -> Self {
        // Mosquitto needs a fixed port: one the kernel just handed out and freed. Another
        // test may take it in between: then Mosquitto exits ("Address already in use")
        // and a connect could even reach the other process, so wait for Mosquitto's own
        // "running" line (logged once its listeners are open) and try another port if it
        // exited instead.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = dir.join("mosquitto.conf");
            let log = dir.join("mosquitto.stderr");
            // `user root`: started as root, Mosquitto would switch to the mosquitto user,
            // who may not write the test's directory.
            std::fs::write(
                &conf,
                format!("listener {port} 127.0.0.1\nuser root\nlog_dest stderr\n{extra}\n"),
            )
            .unwrap();
            let mut child = Command::new(bin)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut exited = false;
            let running = wait_until(TIMEOUT, || {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    exited = true;
                    return true;
                }
                std::fs::read_to_string(&log).is_ok_and(|l| l.contains(" running"))
            });
            assert!(
                running,
                "mosquitto did not start: {:?}",
                std::fs::read_to_string(&log)
            );
            if !exited {
                return Self { child, port };
            }
            eprintln!(
                "mosquitto exited at start (port {port} taken?), retrying: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("mosquitto did not start on any of 5 ports");
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) {
        // SAFETY: plain kill(2) of the child this process started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let stopped = wait_until(TIMEOUT, || matches!(self.child.try_wait(), Ok(Some(_))));
        assert!(stopped, "mosquitto did not stop");
    }
}

impl Drop for MosquittoProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the Python test client `tests/paho/<script>` with `args`; asserts that it exits
/// successfully and printed `ok <check>` for every check (its output in the message).
pub fn run_python_checks(script: &str, args: &[&str], checks: &[&str]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/paho")
        .join(script);
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in checks {
        assert!(
            stdout.contains(&format!("ok {check}")),
            "{script}: {stdout}"
        );
    }
}
