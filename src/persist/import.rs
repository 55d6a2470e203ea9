//! Migrating a Mosquitto broker's data: `shardmq import-mosquitto-db PATH` turns what
//! Mosquitto saved ([`super::mosquitto_db`]) into shardmq records (retained messages,
//! persistent sessions with their subscriptions, queued messages and QoS 1/2 messages in
//! flight with their packet ids) and writes them through the [`Store`], so the next start
//! restores them as if shardmq had saved them. [`to_records`] is sans-IO (`now` is a
//! parameter); [`import_file`] does the file work.
//!
//! It never ignores what it cannot carry over: the summary counts what was left out and
//! why (expired messages and sessions, QoS 2 messages of expired publishers), and a
//! damaged file or an entry that does not decode stops the import before anything is
//! written. [`check_store_path`] is what makes a broker refuse to start on a Mosquitto
//! file it was not asked to import.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::mosquitto_db::{self as mdb, state, ClientMessage, DbError, MosquittoDb, StoredMessage};

#[path = "import_qos2.rs"]
mod qos2;
use super::record::{stage, InflightEntry, Record, EXPIRY_NEVER};
use super::state::State;
use super::store::Paths;
use crate::codec::{self, ByteStr, Packet, ProtocolVersion, Publish, QoS};
use crate::config::{Config, DEFAULT_PERSISTENCE_FILE, OLD_DEFAULT_PERSISTENCE_FILE};

/// Why an import (or a start) cannot use a persistence file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("Error: {} is a Mosquitto persistence file (format version {version}); shardmq does not read it directly, and will not start over it. Import it once with `shardmq import-mosquitto-db {}{}` (the original is kept as {}{MOVED_SUFFIX}), then start shardmq again.", path.display(), path.display(), config_arg(config.as_deref()), path.display())]
    MosquittoFormat {
        path: PathBuf,
        version: u32,
        config: Option<PathBuf>,
    },
    #[error("Error: found {}, saved by an earlier shardmq whose default persistence_file was {OLD_DEFAULT_PERSISTENCE_FILE}; the default is now Mosquitto's {DEFAULT_PERSISTENCE_FILE}. Rename it (and its .log) to {DEFAULT_PERSISTENCE_FILE}, or set `persistence_file {OLD_DEFAULT_PERSISTENCE_FILE}`.", old.display())]
    OldDefaultName { old: PathBuf },
    #[error("Error: cannot read {}: {source}.", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Error: {}: {source}.", path.display())]
    Db { path: PathBuf, source: DbError },
    #[error("Error: {}: {what} does not decode as MQTT ({reason}); nothing was imported.", path.display())]
    Entry {
        path: PathBuf,
        what: String,
        reason: String,
    },
    #[error("Error: shardmq's store {} already holds {retained} retained messages and {sessions} sessions; import into an empty store (move its files aside first).", path.display())]
    NotEmpty {
        path: PathBuf,
        retained: usize,
        sessions: usize,
    },
    #[error("Error: {} exists already; move it aside before importing.", path.display())]
    Exists { path: PathBuf },
    #[error("{0}")]
    Store(#[from] super::Error),
}

/// Where the Mosquitto file that sat at shardmq's snapshot path is moved by the import.
pub const MOVED_SUFFIX: &str = ".mosquitto";

fn config_arg(config: Option<&Path>) -> String {
    config.map_or_else(String::new, |c| format!(" -c {}", c.display()))
}

/// What an import carried over, and what it left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub retained: usize,
    pub sessions: usize,
    pub subscriptions: usize,
    pub queued: usize,
    pub inflight: usize,
    pub expired_messages: usize,
    pub expired_sessions: usize,
    /// Incoming QoS 2 messages a client sent but had not released (PUBREL) yet: delivered
    /// by the import, their packet ids kept for the client's PUBREL (`import_qos2.rs`).
    pub incoming_qos2: usize,
    /// Such messages whose publisher's session has expired (Mosquitto drops them too).
    pub incoming_qos2_lost: usize,
    /// Client entries without an id (Mosquitto skips them too).
    pub empty_clients: usize,
    /// Sessions whose user name is known but whose port is no listener of the config:
    /// imported without their user (anonymous until the client connects again).
    pub users_without_listener: usize,
    /// User names Mosquitto 2.0.0 to 2.0.15 wrote from a stale buffer (a client without a
    /// user name saved after one with): imported without a user.
    pub stale_users: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} retained messages, {} persistent sessions with {} subscriptions, {} queued \
             and {} in-flight messages",
            self.retained, self.sessions, self.subscriptions, self.queued, self.inflight
        )?;
        if self.incoming_qos2 > 0 {
            write!(
                f,
                ", {} incoming QoS 2 messages awaiting PUBREL (delivered to their \
                 subscribers now; their clients' PUBREL completes them)",
                self.incoming_qos2
            )?;
        }
        let left_out = [
            (self.expired_messages, "expired messages"),
            (self.expired_sessions, "expired sessions"),
            (
                self.incoming_qos2_lost,
                "incoming QoS 2 messages awaiting PUBREL of expired sessions",
            ),
            (self.empty_clients, "client entries without an id"),
            (
                self.stale_users,
                "user names Mosquitto (2.0.0 to 2.0.15) wrote from another client's buffer \
                 (the sessions are imported, anonymous until their clients connect again)",
            ),
            (
                self.users_without_listener,
                "user names of sessions whose listener port is not in the config (the \
                 sessions are imported, anonymous until their clients connect again)",
            ),
        ];
        for (n, what) in left_out {
            if n > 0 {
                write!(f, "; left out: {n} {what}")?;
            }
        }
        Ok(())
    }
}

/// A Mosquitto entry that is not valid MQTT.
#[derive(Debug)]
pub struct BadEntry {
    pub what: String,
    pub reason: String,
}

fn bad(what: String, reason: impl std::fmt::Display) -> BadEntry {
    BadEntry {
        what,
        reason: reason.to_string(),
    }
}

fn utf8(what: &str, b: &Bytes) -> Result<ByteStr, BadEntry> {
    ByteStr::try_from_bytes(b.clone()).map_err(|_| bad(what.to_string(), "not MQTT UTF-8"))
}

/// Builds an MQTT 5 PUBLISH with Mosquitto's stored fields and decodes it with the
/// network codec, so topic, properties and payload are checked exactly as if a client
/// had sent them.
fn publish_of(m: &StoredMessage, now_s: i64) -> Result<Publish, BadEntry> {
    let what = || format!("stored message {}", m.store_id);
    let qos = QoS::from_u8(m.qos).ok_or_else(|| bad(what(), "QoS above 2"))?;
    let mut body = BytesMut::new();
    let topic_len = u16::try_from(m.topic.len()).map_err(|_| bad(what(), "topic too long"))?;
    body.put_u16(topic_len);
    body.put_slice(&m.topic);
    if qos != QoS::AtMostOnce {
        body.put_u16(m.source_mid.max(1));
    }
    if m.properties.is_empty() {
        body.put_u8(0);
    } else {
        body.put_slice(&m.properties);
    }
    body.put_slice(&m.payload);
    let mut frame = BytesMut::with_capacity(body.len() + 5);
    frame.put_u8(0x30 | (m.qos << 1) | u8::from(m.retain));
    codec::wire::put_varint(&mut frame, body.len());
    frame.put_slice(&body);
    let mut publish = match codec::decode(&mut frame, ProtocolVersion::V5, 0) {
        Ok(Some(Packet::Publish(p))) => p,
        Ok(_) => return Err(bad(what(), "incomplete")),
        Err(e) => return Err(bad(what(), e)),
    };
    publish.dup = false;
    // Per-connection properties never belong to a stored message.
    let _ = publish.properties.take_topic_alias();
    if m.expiry_time > 0 {
        // Mosquitto keeps the expiry as a time; the broker counts it from `received`,
        // which the import sets to now.
        let left = u32::try_from((m.expiry_time - now_s).max(1)).unwrap_or(u32::MAX);
        publish.properties.message_expiry_interval = Some(left);
    }
    Ok(publish)
}

/// The subscription identifiers in a client message's properties.
fn sub_ids(c: &ClientMessage) -> Result<Vec<u32>, BadEntry> {
    if c.properties.is_empty() {
        return Ok(Vec::new());
    }
    let m = StoredMessage {
        store_id: c.store_id,
        expiry_time: 0,
        source_id: Bytes::new(),
        source_mid: 0,
        topic: Bytes::from_static(b"x"),
        qos: 0,
        retain: false,
        payload: Bytes::new(),
        properties: c.properties.clone(),
    };
    Ok(publish_of(&m, 0)?
        .properties
        .subscription_identifiers
        .iter()
        .copied()
        .collect())
}

/// Where an outgoing message of Mosquitto's is in its flow, as a shardmq inflight stage
/// (`None`: not sent yet, it is queued).
fn inflight_stage(state: u8) -> Option<u8> {
    match state {
        state::WAIT_FOR_PUBACK => Some(stage::PUBACK),
        state::WAIT_FOR_PUBREC => Some(stage::PUBREC),
        state::RESEND_PUBREL | state::WAIT_FOR_PUBCOMP => Some(stage::PUBCOMP),
        _ => None,
    }
}

/// One session being built.
struct Session {
    version: u8,
    expiry: u32,
    /// `Record::SessionUser` of the session's user name and listener.
    user: Option<Record>,
    records: Vec<Record>,
    inflight: Vec<InflightEntry>,
    seq: u64,
}

/// The shardmq records of everything `db` holds that is still valid at Unix time
/// `now_ms`. `listener_of` maps a port a client connected on (format 6 keeps it, with
/// the user name) to the index of that listener in shardmq's config.
pub fn to_records(
    db: &MosquittoDb,
    now_ms: u64,
    listener_of: &dyn Fn(u16) -> Option<u32>,
) -> Result<(Vec<Record>, Summary), BadEntry> {
    let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let mut summary = Summary::default();
    let mut publishes: HashMap<u64, Publish> = HashMap::new();
    for (id, m) in &db.messages {
        if m.expiry_time > 0 && m.expiry_time <= now_s {
            summary.expired_messages += 1;
            continue;
        }
        publishes.insert(*id, publish_of(m, now_s)?);
    }
    let mut records = Vec::new();
    for id in &db.retained {
        let Some(p) = publishes.get(id) else {
            continue; // expired (counted above)
        };
        let mut publish = p.clone();
        publish.retain = true;
        records.push(Record::Retain { publish });
        summary.retained += 1;
    }
    let mut sessions: BTreeMap<ByteStr, Session> = BTreeMap::new();
    let mut subs: Vec<qos2::Sub> = Vec::new();
    let mut expired: Vec<ByteStr> = Vec::new();
    for c in &db.clients {
        if c.id.is_empty() {
            summary.empty_clients += 1;
            continue;
        }
        let id = utf8("client id", &c.id)?;
        let never = c.session_expiry_interval == u32::MAX && c.session_expiry_time == 0;
        let expiry = if never {
            EXPIRY_NEVER
        } else if c.session_expiry_time > 0 {
            let left = c.session_expiry_time - now_s;
            if left <= 0 {
                expired.push(id);
                continue;
            }
            u32::try_from(left).unwrap_or(EXPIRY_NEVER - 1)
        } else if c.session_expiry_interval == 0 {
            expired.push(id); // ends when it disconnects: it has
            continue;
        } else {
            c.session_expiry_interval
        };
        // Only MQTT 5 clients choose an expiry other than 0 or "never"; the version is
        // updated by the client's next CONNECT anyway.
        let version = if matches!(c.session_expiry_interval, 0 | u32::MAX) {
            4
        } else {
            5
        };
        let mut session = Session::new(version, expiry);
        // Mosquitto 2.0.0 to 2.0.15 reuse the previous client's user name buffer (and its
        // byte-swapped length) for a client without one, writing heap bytes after the
        // name's NUL: a name with a NUL is that, not a user (MQTT names have no U+0000).
        let stale = c.username.as_ref().is_some_and(|n| n.contains(&0));
        if stale {
            summary.stale_users += 1;
        }
        if let Some(name) = c.username.as_ref().filter(|_| !stale) {
            let username = utf8("user name", name)?;
            match listener_of(c.listener_port) {
                // Its ACL follows the session, as if the client had connected to shardmq.
                Some(listener) => {
                    session.user = Some(Record::SessionUser {
                        client_id: id.clone(),
                        listener,
                        username: Some(username),
                        identity: None,
                    });
                }
                None => summary.users_without_listener += 1,
            }
        }
        sessions.insert(id, session);
    }
    summary.expired_sessions = expired.len();
    for s in &db.subscriptions {
        let id = utf8("client id", &s.client_id)?;
        let filter = utf8("subscription", &s.topic)?;
        if !codec::wire::is_valid_topic_filter(filter.as_bytes()) || s.qos > 2 {
            return Err(bad(
                format!("subscription {:?}", filter.as_str()),
                "invalid filter or QoS",
            ));
        }
        subs.push(qos2::Sub {
            client: id.clone(),
            filter: filter.clone(),
            qos: s.qos,
            options: s.options,
            id: (s.identifier != 0).then_some(s.identifier),
        });
        if let Some(session) = session_of(&mut sessions, &expired, id.clone()) {
            session.records.push(Record::Subscribe {
                client_id: id,
                filter,
                // QoS in bits 0-1, No Local and Retain As Published as Mosquitto keeps them.
                options: s.qos | (s.options & 0b1100),
                id: s.identifier,
            });
            summary.subscriptions += 1;
        }
    }
    let mut held = Vec::new();
    for c in &db.client_messages {
        if c.direction != mdb::DIRECTION_OUT {
            if c.qos == 2 && c.state == state::WAIT_FOR_PUBREL && c.mid != 0 {
                held.push(qos2::Held {
                    publisher: utf8("client id", &c.client_id)?,
                    packet_id: c.mid,
                    publish: publishes.get(&c.store_id),
                });
            }
            continue;
        }
        let Some(p) = publishes.get(&c.store_id) else {
            continue; // expired (counted above)
        };
        let id = utf8("client id", &c.client_id)?;
        let qos = QoS::from_u8(c.qos)
            .ok_or_else(|| bad(format!("message of client {}", id.as_str()), "QoS above 2"))?;
        let sub_ids = sub_ids(c)?;
        let Some(session) = session_of(&mut sessions, &expired, id.clone()) else {
            continue;
        };
        session.seq += 1;
        let seq = session.seq;
        match inflight_stage(c.state).filter(|_| c.mid != 0 && qos != QoS::AtMostOnce) {
            Some(stage) => {
                session.inflight.push(InflightEntry {
                    seq,
                    packet_id: c.mid,
                    stage,
                });
                summary.inflight += 1;
            }
            None => summary.queued += 1,
        }
        session.records.push(Record::Message {
            client_id: id,
            seq,
            qos,
            retain: c.retain,
            sub_ids,
            received: now_ms,
            publish: p.clone(),
        });
    }
    let mut out = qos2::Out {
        sessions: &mut sessions,
        expired: &expired,
        records: &mut records,
        summary: &mut summary,
    };
    qos2::release(held, &subs, now_ms, &mut out);
    summary.sessions = sessions.len();
    for (id, s) in sessions {
        s.into_records(&id, now_ms, &mut records);
    }
    Ok((records, summary))
}

/// The session of `id`. Mosquitto creates a session for a subscription or message whose
/// client has no entry of its own; so does the import (never expiring, as Mosquitto's).
/// `None` for an expired session.
fn session_of<'a>(
    sessions: &'a mut BTreeMap<ByteStr, Session>,
    expired: &[ByteStr],
    id: ByteStr,
) -> Option<&'a mut Session> {
    if expired.contains(&id) {
        return None;
    }
    Some(
        sessions
            .entry(id)
            .or_insert_with(|| Session::new(4, EXPIRY_NEVER)),
    )
}

impl Session {
    fn new(version: u8, expiry: u32) -> Self {
        Self {
            version,
            expiry,
            user: None,
            records: Vec::new(),
            inflight: Vec::new(),
            seq: 0,
        }
    }

    /// Open, then offline since the import, then its subscriptions and messages.
    fn into_records(self, id: &ByteStr, now_ms: u64, out: &mut Vec<Record>) {
        out.push(Record::SessionOpen {
            client_id: id.clone(),
            version: self.version,
            expiry: self.expiry,
        });
        out.extend(self.user);
        out.push(Record::SessionOffline {
            client_id: id.clone(),
            at: now_ms,
            expiry: self.expiry,
        });
        out.extend(self.records);
        if !self.inflight.is_empty() {
            out.push(Record::Window {
                client_id: id.clone(),
                done_below: 0,
                inflight: self.inflight,
            });
        }
    }
}

/// Refuses a store path that holds Mosquitto's format, or a leftover of the old default
/// name, so that data is never silently ignored.
pub fn check_store_path(config: &Config) -> Result<(), ImportError> {
    let snapshot = Paths::of(config).snapshot;
    let mut head = [0u8; 23];
    if let Ok(mut f) = std::fs::File::open(&snapshot) {
        let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
        if let Some(version) = mdb::version(&head[..n]) {
            return Err(ImportError::MosquittoFormat {
                path: snapshot,
                version,
                config: config.source_files.first().cloned(),
            });
        }
        return Ok(());
    }
    if config.persistence_file == DEFAULT_PERSISTENCE_FILE {
        let old = snapshot.with_file_name(OLD_DEFAULT_PERSISTENCE_FILE);
        let mut old_log = old.clone().into_os_string();
        old_log.push(".log");
        if old.exists() || Path::new(&old_log).exists() {
            return Err(ImportError::OldDefaultName { old });
        }
    }
    Ok(())
}

/// What [`import_file`] did.
#[derive(Debug)]
pub struct Imported {
    pub summary: Summary,
    /// shardmq's snapshot now holding the data.
    pub snapshot: PathBuf,
    /// Where the Mosquitto file that sat at the snapshot path was moved, if it did.
    pub moved: Option<PathBuf>,
    /// Mosquitto's format version of the file.
    pub version: u32,
}

/// Imports the Mosquitto file at `path` into the (empty) store `config` names.
pub fn import_file(
    config: &Config,
    path: &Path,
    now: Instant,
    now_ms: u64,
) -> Result<Imported, ImportError> {
    let data = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let db = mdb::parse(&Bytes::from(data)).map_err(|source| ImportError::Db {
        path: path.to_path_buf(),
        source,
    })?;
    // Without per_listener_settings every listener has the same rules: any will do.
    let listener_of = |port: u16| {
        let index = config.listeners.iter().position(|l| l.port == port);
        match index {
            Some(i) => u32::try_from(i).ok(),
            None => (!config.per_listener_settings).then_some(0),
        }
    };
    let (records, summary) =
        to_records(&db, now_ms, &listener_of).map_err(|e| ImportError::Entry {
            path: path.to_path_buf(),
            what: e.what,
            reason: e.reason,
        })?;
    let Paths {
        snapshot,
        log,
        swap,
    } = Paths::of(config);
    let mut moved = None;
    if let Err(ImportError::MosquittoFormat { .. }) = check_store_path(config) {
        // Mosquitto's file sits where shardmq keeps its snapshot (the default name):
        // keep it next to it, under another name.
        let mut aside = snapshot.clone().into_os_string();
        aside.push(MOVED_SUFFIX);
        let aside = PathBuf::from(aside);
        for p in [&aside, &log, &swap] {
            if p.exists() {
                return Err(ImportError::Exists { path: p.clone() });
            }
        }
        std::fs::rename(&snapshot, &aside).map_err(|source| ImportError::Io {
            path: snapshot.clone(),
            source,
        })?;
        moved = Some(aside);
    }
    let written = write_store(config, &snapshot, records, now);
    if let (Err(_), Some(aside)) = (&written, &moved) {
        // Put Mosquitto's file back where it was: nothing was imported.
        let _ = std::fs::rename(aside, &snapshot);
    }
    written?;
    Ok(Imported {
        summary,
        snapshot,
        moved,
        version: db.version,
    })
}

/// Writes `records` into the store of `config`, which must be empty, as a new snapshot
/// (with an empty live log and spare, as after a shutdown).
fn write_store(
    config: &Config,
    snapshot: &Path,
    records: Vec<Record>,
    now: Instant,
) -> Result<(), ImportError> {
    let (store, existing) = super::open(config, now)?;
    if !existing.is_empty() {
        return Err(ImportError::NotEmpty {
            path: snapshot.to_path_buf(),
            retained: existing.retained.len(),
            sessions: existing.sessions.len(),
        });
    }
    let mut state = State::default();
    for r in records {
        state.apply(r);
    }
    let generation = store.generation() + 1;
    let paths = store.paths().clone();
    // The store's files must be closed before the full compaction replaces them.
    drop(store);
    super::compact::full(&paths, generation, &state)?;
    Ok(())
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
