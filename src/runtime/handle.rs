//! Starting, controlling and stopping a running broker: binding the listeners, building
//! one shard per thread, and the handles ([`BrokerHandle`], [`Stopper`], [`Reloader`])
//! through which the embedding process talks to the shards, only ever by sending them a
//! [`super::command::Command`] and waking them. It never touches a shard's state directly
//! and never blocks a shard (only the calling thread waits, e.g. for `subscribe`).
//!
//! Starting has two steps so that the `shardmq` executable can drop privileges and
//! become a daemon in between, as Mosquitto does: [`prepare`] binds every listener (the
//! ports claimed exclusively) and loads the TLS, password and ACL files, with no thread
//! started yet; [`Prepared::start`] then opens the persistence files (as the user the
//! broker runs as), restores the saved state and starts the shard threads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::command::Command;
use super::listener;
use super::shard::Shard;
use super::tls::{TlsError, TlsSlot};
use crate::auth::Security;
use crate::broker::access::LoginSink;
use crate::broker::embed::{
    self, Injected, InternalSub, PublishError, PublishSlots, SubscribeError, Subscription,
    DEFAULT_SUBSCRIPTION_CAPACITY,
};
use crate::broker::ingest::{IngestEntry, IngestHandler, Qos0Policy};
use crate::broker::ingest_ack::AckSink;
use crate::broker::outgoing::Outgoing;
use crate::broker::ShardMsg;
use crate::codec::{Publish, QoS};
use crate::config::Config;

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener cannot listen (Mosquitto's reason first: "Address already in use").
    #[error(transparent)]
    Bind(#[from] listener::BindError),
    /// The event loop (epoll, a thread) could not be set up.
    #[error("cannot start the event loop: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration has no listener.
    #[error("the configuration has no listener")]
    NoListener,
    /// A password or ACL file could not be loaded.
    #[error(transparent)]
    Security(#[from] crate::auth::AuthError),
    /// A websockets listener's `http_dir` cannot be used.
    #[error("Error: Unable to open http dir \"{}\" ({at}): {source}", path.display())]
    HttpDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Where the configuration names it.
        at: crate::config::Location,
        /// Why it cannot be opened.
        source: std::io::Error,
    },
    /// A bridge's TLS files could not be loaded.
    #[error("TLS of bridge {name}: {source}")]
    BridgeTls {
        /// The bridge (its `connection` name).
        name: String,
        /// What went wrong.
        source: super::tls::TlsError,
    },
    /// A TLS listener's files could not be loaded.
    #[error("TLS on listener {port}: {source}")]
    Tls {
        /// The listener's port.
        port: u16,
        /// What went wrong.
        source: super::tls::TlsError,
    },
    /// An `http_listener` cannot serve the console (e.g. no password file applies).
    #[error("{0}")]
    Console(String),
    /// The persistence files could not be opened or restored.
    #[error("{0}")]
    Persist(#[from] crate::persist::Error),
    /// The persistence file is not shardmq's (Mosquitto's format, or the old default
    /// name): it must be imported or renamed, never ignored.
    #[error(transparent)]
    ForeignPersistence(#[from] crate::persist::import::ImportError),
    /// An ingest handler's filter is not a valid (non-shared) topic filter, or there are
    /// more than [`crate::MAX_INGEST_HANDLERS`] handlers.
    #[error("ingest handler for '{filter}': {reason}")]
    Ingest {
        /// The handler's filter, as given.
        filter: String,
        /// Why it was refused.
        reason: String,
    },
}

struct ShardControl {
    commands: Sender<Command>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
}

/// A running broker. Dropping it stops the broker and waits for its threads.
pub struct BrokerHandle {
    addrs: Vec<SocketAddr>,
    shards: Vec<ShardControl>,
    config: Arc<Config>,
    /// The TLS listeners' configurations by bound port (see [`Reloader::reload_tls`]).
    tls: Arc<[(u16, Arc<TlsSlot>)]>,
    /// Id of the last in-process subscription.
    last_sub: AtomicU64,
    /// The bound on [`BrokerHandle::publish`] messages not routed yet.
    publish_slots: PublishSlots,
}

/// Messages a data ring holds between two shards before the sender spills into its
/// overflow and stops reading the publishers that feed that shard.
const MAILBOX_CAPACITY: usize = 16 * 1024;
/// Messages a control ring holds (control is rare and drained first: it spills into its
/// overflow only while the receiving shard is busy with one long iteration).
const CONTROL_CAPACITY: usize = 1024;

/// How many shards to run: `threads` from the config, else the CPUs this process may use.
fn shard_count(config: &Config, cpus: &[usize]) -> usize {
    config
        .threads
        .unwrap_or_else(|| cpus.len().max(1))
        .clamp(1, crate::mailbox::MAX_SHARDS)
}

/// A broker whose listeners are bound and whose TLS, password and ACL files are loaded;
/// nothing runs yet. See the module doc.
pub struct Prepared {
    config: Arc<Config>,
    per_shard: Vec<Vec<listener::Bound>>,
    addrs: Vec<SocketAddr>,
    tls_slots: Vec<(u16, Arc<TlsSlot>)>,
    security: Arc<Security>,
    cpus: Vec<usize>,
    /// The HTTP console, when an `http_listener` is configured.
    console: Option<Arc<crate::console::Console>>,
}

/// Binds every listener and loads the TLS, password and ACL files (step 1 of a start).
pub fn prepare(config: &Arc<Config>) -> Result<Prepared, StartError> {
    if config.listeners.is_empty() {
        return Err(StartError::NoListener);
    }
    // --- bridge hook: TLS files of the bridges are read now, so a bad one stops the start.
    for b in config.bridges.iter().filter(|b| b.uses_tls()) {
        super::bridge_tls::client_config(b).map_err(|source| StartError::BridgeTls {
            name: b.name.clone(),
            source,
        })?;
    }
    let cpus = listener::allowed_cpus();
    let n = shard_count(config, &cpus);
    let mut per_shard: Vec<Vec<listener::Bound>> = (0..n).map(|_| Vec::new()).collect();
    let mut addrs = Vec::with_capacity(config.listeners.len());
    let mut tls_slots = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        // --- TLS hook: one configuration per TLS listener, shared by the shards and
        // reloaded on SIGHUP.
        let tls = match &l.tls {
            Some(t) => Some(Arc::new(TlsSlot::new(t, l.port).map_err(|source| {
                StartError::Tls {
                    port: l.port,
                    source,
                }
            })?)),
            None => None,
        };
        let ws = websockets(config, l)?;
        let bound = listener::bind_listener(i, l, n, config.set_tcp_nodelay)?;
        addrs.push(bound.addr);
        tls_slots.extend(tls.clone().map(|slot| (bound.addr.port(), slot)));
        for (shard, sockets) in per_shard.iter_mut().zip(bound.per_shard) {
            for mut b in sockets {
                b.tls.clone_from(&tls);
                b.ws.clone_from(&ws);
                shard.push(b);
            }
        }
    }
    // Password and ACL files: a bad file stops the start, naming file and line.
    let security = Arc::new(Security::load(config)?);
    // --- HTTP console hook: http listeners' connections go to the console.
    let console = match super::console::setup(config, &security, &addrs, n)? {
        Some((console, settings)) => {
            for b in per_shard.iter_mut().flatten() {
                if let Some((_, s)) = settings.iter().find(|(i, _)| *i == b.index) {
                    b.ws = Some(Arc::clone(s));
                }
            }
            Some(console)
        }
        None => None,
    };
    Ok(Prepared {
        config: Arc::clone(config),
        per_shard,
        addrs,
        tls_slots,
        security,
        cpus,
        console,
    })
}

/// Makes one shard's instance of an ingest handler (called once per shard at start).
pub(crate) type MakeHandler = Box<dyn FnMut(usize) -> Box<dyn IngestHandler> + Send>;

/// An ingest handler as the builder describes it: filter, QoS 0 policy, one instance per
/// shard.
pub(crate) struct IngestSpec {
    pub(crate) filter: crate::topic::TopicFilter,
    pub(crate) qos0: Qos0Policy,
    pub(crate) make: MakeHandler,
}

/// Makes one shard's instance of the host's access hook (called once per shard at start).
pub(crate) type MakeAccess =
    Box<dyn FnMut(usize) -> Box<dyn crate::broker::access::AccessHook> + Send>;

/// What the embedding API adds to a start: the bound on the host's publishes, the
/// ingest handlers and the access hook.
pub(crate) struct Embedding {
    pub(crate) publish_capacity: usize,
    pub(crate) ingest: Vec<IngestSpec>,
    pub(crate) access: Option<MakeAccess>,
}

/// --- WebSockets hook: the settings a websockets listener's connections share (its
/// `http_dir` resolved once, here, so a missing directory stops the start).
pub(super) fn websockets(
    config: &Config,
    l: &crate::config::Listener,
) -> Result<Option<Arc<crate::ws::Settings>>, StartError> {
    if l.protocol != crate::config::ListenerProtocol::Websockets {
        return Ok(None);
    }
    let http_dir = match &l.http_dir {
        Some((path, at)) => {
            Some(
                crate::http::files::HttpDir::open(path).map_err(|source| StartError::HttpDir {
                    path: path.clone(),
                    at: at.clone(),
                    source,
                })?,
            )
        }
        None => None,
    };
    Ok(Some(Arc::new(crate::ws::Settings {
        port: l.port,
        headers_size: config.websockets_headers_size,
        http_dir,
        log_level: config.websockets_log_level,
        handler: None,
    })))
}

pub(crate) fn start(
    config: &Arc<Config>,
    embedding: Embedding,
) -> Result<BrokerHandle, StartError> {
    prepare(config)?.start_embedded(embedding)
}

impl Prepared {
    /// The bound address of each listener, in config order (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Opens the persistence files (refusing corrupt data and Mosquitto's format),
    /// restores the saved state and starts the shard threads (step 2 of a start).
    pub fn start(self) -> Result<BrokerHandle, StartError> {
        self.start_with(crate::DEFAULT_PUBLISH_CAPACITY)
    }

    /// [`Prepared::start`] with at most `publish_capacity` host publishes not routed yet
    /// (see [`crate::BrokerBuilder::publish_capacity`]).
    pub fn start_with(self, publish_capacity: usize) -> Result<BrokerHandle, StartError> {
        self.start_embedded(Embedding {
            publish_capacity,
            ingest: Vec::new(),
            access: None,
        })
    }

    /// [`Prepared::start`] with the embedding API's additions.
    pub(crate) fn start_embedded(self, embedding: Embedding) -> Result<BrokerHandle, StartError> {
        let Embedding {
            publish_capacity,
            mut ingest,
            mut access,
        } = embedding;
        let Self {
            config,
            per_shard,
            addrs,
            tls_slots,
            security,
            cpus,
            console,
        } = self;
        let config = &config;
        let n = per_shard.len();
        let store = if config.persistence {
            crate::persist::import::check_store_path(config)?;
            Some(super::persist::Persister::open_store(config)?)
        } else {
            None
        };
        let mesh = crate::mailbox::mesh::<ShardMsg>(n, MAILBOX_CAPACITY, CONTROL_CAPACITY);
        // Connection limits are counted across all shards.
        let admission = Arc::new(super::admission::Admission::new(config, Instant::now()));
        // The shards' interest in wildcard-free filters, kept once for all of them.
        let interest = crate::broker::InterestTable::new();
        let mut shards = Vec::with_capacity(n);
        let mut controls = Vec::with_capacity(n);
        for (id, (mailbox, bound)) in mesh.into_iter().zip(per_shard).enumerate() {
            let (tx, rx): (Sender<Command>, Receiver<Command>) = crossbeam_channel::unbounded();
            let admission = Arc::clone(&admission);
            let mut shard = Shard::new(id, n, config, bound, rx, mailbox, admission, &interest)?;
            shard.set_security(Arc::clone(&security));
            if let Some(make) = access.as_mut() {
                // Deferred logins' answers come back to this shard as commands.
                let (commands, waker) = (tx.clone(), shard.waker());
                let sink = LoginSink::new(move |a| {
                    if commands.send(Command::LoginAnswer(a)).is_ok() {
                        let _ = waker.wake();
                    }
                });
                shard.set_access(make(id), sink);
            }
            if !ingest.is_empty() {
                let handlers = ingest
                    .iter_mut()
                    .map(|spec| IngestEntry {
                        filter: spec.filter.clone(),
                        qos0: spec.qos0,
                        handler: (spec.make)(id),
                    })
                    .collect();
                // Ack tokens come back to this shard as commands.
                let (commands, waker) = (tx.clone(), shard.waker());
                let sink = AckSink::new(move |t| {
                    if commands.send(Command::IngestToken(t)).is_ok() {
                        let _ = waker.wake();
                    }
                });
                shard.set_ingest(handlers, sink);
            }
            if let Some(console) = &console {
                shard.set_console(super::console::Publisher::new(Arc::clone(console), id));
            }
            if let Some(store) = &store {
                shard.set_persister(super::persist::Persister::new(store));
            }
            controls.push((tx, shard.waker()));
            shards.push(shard);
        }
        if let Some(store) = &store {
            Shard::exchange_restored_mail(&mut shards);
            for shard in &mut shards {
                shard.flush_persist();
            }
            super::persist::Persister::finish_restore(store)?;
        }
        let wakers: Arc<[Arc<mio::Waker>]> = controls.iter().map(|(_, w)| Arc::clone(w)).collect();
        if let Some(console) = &console {
            super::console::dispatch(console, controls.clone());
        }
        super::console::log_topic(config, controls.first().cloned());
        let mut handles = Vec::with_capacity(n);
        for (mut shard, (tx, waker)) in shards.into_iter().zip(controls) {
            shard.set_peers(Arc::clone(&wakers));
            let id = shard.id();
            let cpu = (!cpus.is_empty() && n > 1).then(|| cpus[id % cpus.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("shardmq-shard-{id}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(e) = listener::pin_current_thread(cpu) {
                            crate::log_warning!("Warning: cannot pin shard {id} to CPU {cpu}: {e}");
                        }
                    }
                    shard.run();
                })?;
            handles.push(ShardControl {
                commands: tx,
                waker,
                thread: Some(thread),
            });
        }
        if n > 1 {
            crate::log_notice!("shardmq running {n} shards.");
        }
        Ok(BrokerHandle {
            addrs,
            shards: handles,
            config: Arc::clone(config),
            tls: tls_slots.into(),
            last_sub: AtomicU64::new(0),
            publish_slots: PublishSlots::new(publish_capacity),
        })
    }
}

impl BrokerHandle {
    /// The bound address of each listener, in config order (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The port of the first listener.
    pub fn port(&self) -> u16 {
        self.addrs.first().map_or(0, SocketAddr::port)
    }

    /// Publishes `message` into the broker as if a client had sent it (QoS is honoured
    /// towards subscribers; there is no acknowledgement back to the caller). Never
    /// blocks: the broker holds at most its publish capacity of such messages not routed
    /// yet ([`crate::DEFAULT_PUBLISH_CAPACITY`], see
    /// [`crate::BrokerBuilder::publish_capacity`]); beyond it the message comes back in
    /// [`PublishError::Full`] and the refusal is counted
    /// (`$SYS/broker/publish/embed/refused`). [`BrokerHandle::publish_timeout`] waits
    /// for room instead. A message no client could publish (a wildcard in the topic, a
    /// property too long, larger than `message_size_limit`, RETAIN with
    /// `retain_available false`) comes back in
    /// [`PublishError::Invalid`], checked on the calling thread.
    ///
    /// Which shard routes it: the one its topic hashes to. So the messages that one
    /// thread publishes on one topic reach every subscriber in the order they were
    /// published (each shard takes the host's messages in order and routes in order, and
    /// MQTT orders per publisher and topic [MQTT-4.6.0-6]); messages on different topics
    /// may be routed in parallel, by different shards, and overtake each other, as
    /// those of different clients do.
    ///
    /// ```no_run
    /// # use shardmq::{Broker, Config, Outgoing, PublishError};
    /// # let broker = Broker::builder(Config::default()).start().unwrap();
    /// match broker.publish(Outgoing::new("sensors/boiler", "71.5")) {
    ///     Ok(()) => {}
    ///     Err(PublishError::Full(m)) => println!("busy, {} kept for later", m.topic()),
    ///     Err(e) => eprintln!("{e}"),
    /// }
    /// ```
    pub fn publish(&self, message: Outgoing) -> Result<(), PublishError> {
        let publish = self.check(message)?;
        match self.publish_slots.try_take() {
            Some(slot) => self.send_injected(Injected::new(publish, slot)),
            None => Err(full(publish)),
        }
    }

    /// [`BrokerHandle::publish`], waiting up to `timeout` on the calling thread for room
    /// (back-pressure for a host that produces faster than the broker routes).
    pub fn publish_timeout(
        &self,
        message: Outgoing,
        timeout: Duration,
    ) -> Result<(), PublishError> {
        let publish = self.check(message)?;
        match self.publish_slots.take_timeout(timeout) {
            Some(slot) => self.send_injected(Injected::new(publish, slot)),
            None => Err(full(publish)),
        }
    }

    /// [`BrokerHandle::publish`] that waits (up to `timeout`) for room, then until the
    /// broker has routed the message: when it returns, every matching subscription has it
    /// (in-process subscriptions have it in their channel; MQTT subscribers' connections
    /// have it queued or in flight). Returns whether any subscription matched.
    ///
    /// With persistence on, it returns only once the records the message made are
    /// written as `persistence_fsync` says (the retained message, the copies queued for
    /// persistent sessions, the message on its way to other shards at QoS 1 and 2): at
    /// the point where the broker would send a client's PUBACK for it. A broker killed
    /// after that restarts with them. Records that cannot be written hold the shard (see
    /// `persistence` in README.md); if the broker stops before they are written, the
    /// message comes back in [`PublishError::Stopped`]. (At QoS 0 a copy for a
    /// persistent session on another shard is recorded by that shard, a moment later, as
    /// for a client's QoS 0 message.)
    ///
    /// ```no_run
    /// # use shardmq::{Broker, Config, Outgoing};
    /// # use std::time::Duration;
    /// # let broker = Broker::builder(Config::default()).start().unwrap();
    /// let cmd = Outgoing::new("valves/3/set", "open");
    /// if !broker.publish_routed(cmd, Duration::from_secs(1)).expect("routed") {
    ///     println!("nobody listens to valves/3/set");
    /// }
    /// ```
    pub fn publish_routed(
        &self,
        message: Outgoing,
        timeout: Duration,
    ) -> Result<bool, PublishError> {
        let publish = self.check(message)?;
        let Some(slot) = self.publish_slots.take_timeout(timeout) else {
            return Err(full(publish));
        };
        let (routed, done) = crossbeam_channel::bounded(1);
        // Kept to give it back if the broker stops before routing it (Bytes: shared).
        let copy = publish.clone();
        self.send_injected(Injected::reporting(publish, slot, routed))?;
        done.recv().map_err(|_| stopped(copy))
    }

    /// Checks `message` on the host's thread, so that a shard only gets what it can route.
    fn check(&self, message: Outgoing) -> Result<Publish, PublishError> {
        match message.check(&self.config) {
            Ok(()) => Ok(message.into_publish()),
            Err(reason) => Err(PublishError::Invalid {
                message: Box::new(message),
                reason,
            }),
        }
    }

    fn send_injected(&self, injected: Injected) -> Result<(), PublishError> {
        let shard = host_shard(injected.publish.topic.as_str(), self.shards.len());
        let Some(s) = self.shards.get(shard) else {
            return Err(stopped(injected.publish));
        };
        let command = Command::Publish(Box::new(injected));
        match s.commands.send(command) {
            Ok(()) => {
                let _ = s.waker.wake();
                Ok(())
            }
            Err(e) => match e.into_inner() {
                Command::Publish(injected) => Err(stopped(injected.publish)),
                _ => unreachable!("sent a publish"),
            },
        }
    }

    /// Subscribes the host process to `filter` with a channel of
    /// [`DEFAULT_SUBSCRIPTION_CAPACITY`] messages; see
    /// [`BrokerHandle::subscribe_with_capacity`].
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<Subscription, SubscribeError> {
        self.subscribe_with_capacity(filter, qos, DEFAULT_SUBSCRIPTION_CAPACITY)
    }

    /// Subscribes the host process to `filter`: every message published after this
    /// returns (by a client or [`BrokerHandle::publish`]) and matching it is delivered to
    /// the returned [`Subscription`] at the lower of its QoS and `qos`, in order per
    /// publisher, after the matching retained messages. The broker never waits for the
    /// host: once `capacity` (at least 1) messages are queued, further ones are dropped
    /// and counted ([`Subscription::dropped`], `$SYS/broker/publish/messages/dropped`),
    /// whatever their QoS. No ACL applies. Dropping the `Subscription` unsubscribes.
    ///
    /// A shared filter (`$share/GROUP/FILTER`) makes the subscription one member of that
    /// group, next to MQTT clients and other in-process members: each message of the
    /// group goes to one member only, and a member whose channel is full is passed over
    /// while another has room (a message is dropped only when every member is full).
    /// Shared subscriptions get no retained messages [MQTT-4.8.2].
    pub fn subscribe_with_capacity(
        &self,
        filter: &str,
        qos: QoS,
        capacity: usize,
    ) -> Result<Subscription, SubscribeError> {
        let (filter, share) = embed::parse_filter(filter)?;
        let id = self.last_sub.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let sub = InternalSub {
            id,
            filter: filter.clone(),
            qos,
            tx,
            dropped: Arc::clone(&dropped),
            share,
        };
        let shards = self.stopper().shards;
        let unsubscribe = shards.clone();
        // Built first, so an error below unsubscribes whatever was installed.
        let subscription = Subscription::new(
            filter,
            rx,
            dropped,
            Box::new(move || {
                for (commands, waker) in &unsubscribe {
                    if commands.send(Command::Unsubscribe(id)).is_ok() {
                        let _ = waker.wake();
                    }
                }
            }),
        );
        // Shard 0 first, with its retained replica: nothing live can precede the
        // retained messages. Then every other shard; each acknowledges once installed.
        let install = |targets: &[(Sender<Command>, Arc<mio::Waker>)], retained: bool| {
            let (ack, acks) = crossbeam_channel::bounded(targets.len());
            for (commands, waker) in targets {
                let cmd = Command::Subscribe {
                    sub: Box::new(sub.clone()),
                    retained,
                    ack: ack.clone(),
                };
                if commands.send(cmd).is_err() {
                    return Err(SubscribeError::Stopped);
                }
                let _ = waker.wake();
            }
            drop(ack); // a shard that stops drops its sender: recv errs, no hang
            for _ in targets {
                acks.recv().map_err(|_| SubscribeError::Stopped)?;
            }
            Ok(())
        };
        let (first, rest) = shards.split_at(shards.len().min(1));
        install(first, true)?;
        install(rest, false)?;
        Ok(subscription)
    }

    /// Re-reads the password and ACL files and installs them in every shard without
    /// dropping connections. On error the old rules stay in force.
    pub fn reload_security(&self) -> Result<(), crate::auth::AuthError> {
        self.reloader().reload_security()
    }

    /// Re-reads the TLS listeners' files for new connections; see
    /// [`Reloader::reload_tls`].
    pub fn reload_tls(&self) -> Vec<(u16, Result<(), TlsError>)> {
        self.reloader().reload_tls()
    }

    /// A cloneable, `Send` handle for [`BrokerHandle::reload_security`] and
    /// [`BrokerHandle::reload_tls`] from another thread (the SIGHUP handler).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            config: Arc::clone(&self.config),
            shards: self.stopper().shards,
            tls: Arc::clone(&self.tls),
        }
    }

    /// The systemd watchdog's liveness check of the shards (for the executable).
    #[doc(hidden)]
    pub fn watchdog(&self) -> super::notify::Watchdog {
        super::notify::Watchdog {
            shards: self.stopper().shards,
        }
    }

    /// Asks every shard to stop without waiting.
    pub fn request_stop(&self) {
        self.stopper().stop();
    }

    /// A cloneable, `Send` handle that can stop the broker from another thread (e.g. a
    /// signal-handling thread) while this handle waits in [`BrokerHandle::join`].
    pub fn stopper(&self) -> Stopper {
        Stopper {
            shards: self
                .shards
                .iter()
                .map(|s| (s.commands.clone(), Arc::clone(&s.waker)))
                .collect(),
        }
    }

    /// Stops the broker and waits for its threads to end.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    /// Waits until the broker stops (after `request_stop`, e.g. from a signal).
    pub fn join(mut self) {
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn stop_and_join(&mut self) {
        self.request_stop();
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The shard that routes the host's messages on `topic` (of `shards`): always the same
/// one for a topic, so one thread's messages on a topic keep their order (see
/// [`BrokerHandle::publish`]), and spread over the shards by topic.
fn host_shard(topic: &str, shards: usize) -> usize {
    use std::hash::BuildHasher;
    // The host chooses its topics (no HashDoS concern); the seeded hash is just a good one.
    let h = crate::hash::SeededState.hash_one(topic);
    // Widening u64 -> u128 and back below `shards` (a usize): never truncates.
    ((u128::from(h) * shards as u128) >> 64) as usize
}

fn full(p: Publish) -> PublishError {
    PublishError::Full(Box::new(Outgoing::from_publish(p)))
}

fn stopped(p: Publish) -> PublishError {
    PublishError::Stopped(Box::new(Outgoing::from_publish(p)))
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Stops a running broker from any thread.
#[derive(Clone)]
pub struct Stopper {
    shards: Vec<(Sender<Command>, Arc<mio::Waker>)>,
}

impl Stopper {
    /// Asks every shard to stop, without waiting.
    pub fn stop(&self) {
        for (commands, waker) in &self.shards {
            let _ = commands.send(Command::Shutdown);
            let _ = waker.wake();
        }
    }
}

/// Reloads the security files and the TLS listeners' files of a running broker from any thread.
#[derive(Clone)]
pub struct Reloader {
    config: Arc<Config>,
    shards: Vec<(Sender<Command>, Arc<mio::Waker>)>,
    tls: Arc<[(u16, Arc<TlsSlot>)]>,
}

impl Reloader {
    /// See [`BrokerHandle::reload_security`].
    pub fn reload_security(&self) -> Result<(), crate::auth::AuthError> {
        let security = Arc::new(Security::load(&self.config)?);
        for (commands, waker) in &self.shards {
            if commands
                .send(Command::SetSecurity(Arc::clone(&security)))
                .is_ok()
            {
                let _ = waker.wake();
            }
        }
        Ok(())
    }

    /// Applies the `connection` blocks of a reloaded configuration: bridges that are new
    /// start, removed ones stop, changed ones restart; the others keep their connection.
    pub fn reload_bridges(&self, bridges: &[crate::config::BridgeConfig]) {
        let bridges: Arc<[crate::config::BridgeConfig]> = Arc::from(bridges.to_vec());
        for (commands, waker) in &self.shards {
            if commands
                .send(Command::SetBridges(Arc::clone(&bridges)))
                .is_ok()
            {
                let _ = waker.wake();
            }
        }
    }

    /// Re-reads every TLS listener's certificate, key, CA, CRL and psk_file. New
    /// connections use them; connections that are up keep their session. A listener whose
    /// files fail to load keeps its configuration in force. Returns the outcome for each
    /// TLS listener, by bound port.
    pub fn reload_tls(&self) -> Vec<(u16, Result<(), TlsError>)> {
        self.tls
            .iter()
            .map(|(port, slot)| (*port, slot.reload()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::host_shard;

    #[test]
    fn host_messages_of_a_topic_always_go_to_one_shard_and_topics_spread() {
        for shards in 1..=8 {
            let mut used = vec![0usize; shards];
            for t in 0..256 {
                let topic = format!("sensors/{t}/temp");
                let s = host_shard(&topic, shards);
                assert!(s < shards);
                assert_eq!(s, host_shard(&topic, shards), "stable per topic");
                used[s] += 1;
            }
            // 256 topics over at most 8 shards: every shard gets a fair share.
            assert!(used.iter().all(|&n| n >= 256 / shards / 3), "{used:?}");
        }
    }
}
