//! --- HTTP console hook: what `http_listener` blocks need from the runtime. At start,
//! one [`Console`] for the broker (its [`Board`] shared with every shard) and, for each
//! http listener, the connection settings that route its requests to the console (the
//! WebSockets listener's connection state machine with a handler, see `ws::Settings`).
//! A listener without a password file stops the start: the console is never served
//! unauthenticated. Once the shards run, [`dispatch`] turns console actions into shard
//! commands. On the shard side, [`Publisher`] pins the shard's figures on the board.
//!
//! It never blocks a shard: publishing only tries the board's lock, and actions are
//! commands like the embedding API's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::command::Command;
use super::handle::StartError;
use crate::auth::Security;
use crate::broker::Broker;
use crate::codec::{ByteStr, Publish};
use crate::config::{Config, ListenerProtocol};
use crate::console::board::{Histogram, MAX_ROWS};
use crate::console::{exposition, Action, Board, Console, ConsoleListener};

/// How often a shard publishes its counters.
const FIGURES_EVERY: Duration = Duration::from_millis(250);
/// How often a shard publishes its connection, subscription and retained rows.
const ROWS_EVERY: Duration = Duration::from_secs(1);

fn protocol_name(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Mqtt => "mqtt",
        ListenerProtocol::Websockets => "websockets",
        ListenerProtocol::Http => "http",
    }
}

/// The console and each http listener's settings, by listener index.
type Setup = (Arc<Console>, Vec<(usize, Arc<crate::ws::Settings>)>);

/// The console and each http listener's settings (by listener index), or `None` when no
/// `http_listener` is configured.
pub(super) fn setup(
    config: &Config,
    security: &Arc<Security>,
    addrs: &[SocketAddr],
    shards: usize,
) -> Result<Option<Setup>, StartError> {
    let http: Vec<usize> = config
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.protocol == ListenerProtocol::Http)
        .map(|(i, _)| i)
        .collect();
    if http.is_empty() {
        return Ok(None);
    }
    for &i in &http {
        if security.domain(i).passwords.is_none() {
            let l = &config.listeners[i];
            return Err(StartError::Console(format!(
                "Error: http_listener {}{}: the HTTP console needs a password_file (its users \
                 log in with HTTP basic authentication); none applies to this listener.",
                l.port,
                l.defined_at
                    .as_ref()
                    .map(|at| format!(" ({at})"))
                    .unwrap_or_default()
            )));
        }
    }
    let info = exposition::Info {
        version: env!("CARGO_PKG_VERSION"),
        started: Instant::now(),
        listeners: config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let port = addrs.get(i).map_or(l.port, SocketAddr::port);
                (i, protocol_name(l.protocol), port)
            })
            .collect(),
    };
    let console = Arc::new(Console::new(
        Arc::new(Board::new(shards)),
        info,
        Arc::clone(security),
        config.http_writers.clone(),
    ));
    let settings = http
        .into_iter()
        .map(|i| {
            let handler = Arc::new(ConsoleListener {
                console: Arc::clone(&console),
                listener: i,
            });
            let s = crate::ws::Settings {
                port: addrs.get(i).map_or(0, SocketAddr::port),
                headers_size: crate::console::HEADERS_SIZE,
                http_dir: None,
                log_level: config.websockets_log_level,
                handler: Some(handler),
            };
            (i, Arc::new(s))
        })
        .collect();
    Ok(Some((console, settings)))
}

/// Installs how the console's actions reach the shards: a disconnect goes to every shard
/// (the one holding the connection acts), a retained delete is published on shard 0 as
/// an empty retained message (replicated and persisted like any other).
pub(super) fn dispatch(console: &Console, shards: Vec<(Sender<Command>, Arc<mio::Waker>)>) {
    console.set_dispatch(Box::new(move |action| {
        let send = |(tx, waker): &(Sender<Command>, Arc<mio::Waker>), cmd| {
            let sent = tx.send(cmd).is_ok();
            let _ = waker.wake();
            sent
        };
        match action {
            Action::Disconnect(client_id) => shards
                .iter()
                .map(|s| send(s, Command::Disconnect(client_id.clone())))
                .fold(false, |a, b| a | b),
            Action::DeleteRetained(topic) => {
                let publish = Publish {
                    retain: true,
                    topic: ByteStr::from(topic),
                    ..Publish::default()
                };
                let cmd = Command::Publish(Box::new(publish.into()));
                shards.first().is_some_and(|s| send(s, cmd))
            }
        }
    }));
}

/// --- `log_dest topic` hook: log lines become messages published on shard 0 (QoS 2,
/// not retained, as Mosquitto's `$SYS/broker/log/...`).
pub(super) fn log_topic(config: &Config, shard0: Option<(Sender<Command>, Arc<mio::Waker>)>) {
    if !config.log.dests.contains(&crate::config::LogDest::Topic) {
        return;
    }
    let Some((tx, waker)) = shard0 else { return };
    crate::log::topic::set_publisher(Some(Box::new(move |topic, line| {
        let publish = Publish {
            qos: crate::codec::QoS::ExactlyOnce,
            topic: ByteStr::from(topic),
            payload: bytes::Bytes::copy_from_slice(line.as_bytes()),
            ..Publish::default()
        };
        if tx.send(Command::Publish(Box::new(publish.into()))).is_ok() {
            let _ = waker.wake();
        }
    })));
}

/// A shard's side: its loop-lag histogram and when it last published.
pub(super) struct Publisher {
    console: Arc<Console>,
    shard: usize,
    loop_lag: Histogram,
    figures_at: Option<Instant>,
    rows_at: Option<Instant>,
}

impl Publisher {
    pub(super) fn new(console: Arc<Console>, shard: usize) -> Self {
        Self {
            console,
            shard,
            loop_lag: Histogram::default(),
            figures_at: None,
            rows_at: None,
        }
    }

    pub(super) fn console(&self) -> &Arc<Console> {
        &self.console
    }

    /// One loop iteration ended after `lag_us`; publishes when it is time.
    /// `mailbox`: this shard's outgoing data messages (in the rings and overflow, in the
    /// overflow only).
    pub(super) fn on_iteration(
        &mut self,
        broker: &mut Broker,
        mailbox: (usize, usize),
        lag_us: u64,
        now: Instant,
    ) {
        self.loop_lag.record(lag_us);
        if self.figures_at.is_some_and(|t| now < t + FIGURES_EVERY) {
            return;
        }
        let rows_due = self.rows_at.map_or(true, |t| now >= t + ROWS_EVERY);
        // Gauges that walk every session are refreshed with the rows; in between the
        // event counters are copied as they are.
        let stats = if rows_due {
            broker.shard_report().stats
        } else {
            broker.stats().clone()
        };
        let (inflight, queued) = broker.console_totals();
        let retained_bytes = broker.retained_payload_bytes();
        let rows = rows_due.then(|| {
            let (conns, subs) = broker.console_rows(MAX_ROWS);
            let retained = if self.shard == 0 {
                broker.retained_rows(MAX_ROWS)
            } else {
                Vec::new()
            };
            (conns, subs, retained)
        });
        let lag = &self.loop_lag;
        let published = self.console.board.publish(self.shard, |v| {
            v.stats = Some(stats);
            v.loop_lag.clone_from(lag);
            v.mailbox_depth = mailbox.0 as u64;
            v.mailbox_backlog = mailbox.1 as u64;
            v.inflight = inflight;
            v.queued = queued;
            v.retained_bytes = retained_bytes;
            v.at = Some(now);
            if let Some((conns, subs, retained)) = rows {
                v.conns = conns;
                v.subs = subs;
                v.retained = retained;
            }
        });
        if published {
            self.figures_at = Some(now);
            if rows_due {
                self.rows_at = Some(now);
            }
        }
    }
}
