//! Mosquitto's persistence file (`mosquitto.db`), read sans-IO: the bytes of the file in,
//! its chunks out. Formats 2 to 6, which Mosquitto 1.3 to 2.0 write (1.4: 3, 1.5.6: 4,
//! 1.6: 5, 2.0: 6), with the layouts of Mosquitto's `persist.h` / `persist_read_v234.c` /
//! `persist_read_v5.c`: a 15-byte magic, a CRC (unused, 0), the format version, then
//! chunks (`type`, `length`, body) of configuration, stored messages, retained message
//! ids, clients, client messages and subscriptions. Integers are big-endian except the
//! 64-bit fields Mosquitto writes in host order (message ids, times): those are read as
//! little-endian, the order of every host Mosquitto packages ship for (x86, ARM).
//!
//! [`parse`] never panics and never trusts a length: every field is bounds-checked
//! against its chunk, and a chunk against the file. It does not interpret what it reads
//! (that is [`super::import`]); strings stay bytes.

use std::collections::BTreeMap;

use bytes::Bytes;

/// The first 15 bytes of every Mosquitto persistence file.
pub const MAGIC: [u8; 15] = *b"\x00\xb5\x00mosquitto db";

const CHUNK_CFG: u32 = 1;
const CHUNK_MSG_STORE: u32 = 2;
const CHUNK_CLIENT_MSG: u32 = 3;
const CHUNK_RETAIN: u32 = 4;
const CHUNK_SUB: u32 = 5;
const CHUNK_CLIENT: u32 = 6;

/// Sizes of Mosquitto's fixed structs (C layout on 64-bit hosts, padding included).
const PF_SUB: usize = 12;
const PF_CLIENT_V6: usize = 24;

/// A message in Mosquitto's message store (a `DB_CHUNK_MSG_STORE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub store_id: u64,
    /// Unix seconds when it expires, 0 = never (formats 5 and 6).
    pub expiry_time: i64,
    pub source_id: Bytes,
    pub source_mid: u16,
    pub topic: Bytes,
    pub qos: u8,
    pub retain: bool,
    pub payload: Bytes,
    /// MQTT 5 PUBLISH properties with their variable-length prefix (formats 5 and 6).
    pub properties: Bytes,
}

/// A client session (a `DB_CHUNK_CLIENT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: Bytes,
    pub username: Option<Bytes>,
    /// Unix seconds when the session expires, 0 = not scheduled (formats 5 and 6).
    pub session_expiry_time: i64,
    /// Seconds; `u32::MAX` = never (formats before 5 have no expiry: never).
    pub session_expiry_interval: u32,
    pub last_mid: u16,
    pub listener_port: u16,
}

/// A message in a client's inflight window or queue (a `DB_CHUNK_CLIENT_MSG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    pub client_id: Bytes,
    pub store_id: u64,
    pub mid: u16,
    pub qos: u8,
    /// Mosquitto's `enum mosquitto_msg_state` (see [`state`]).
    pub state: u8,
    pub retain: bool,
    pub dup: bool,
    /// 0 = from the client (incoming), 1 = to the client (outgoing).
    pub direction: u8,
    /// MQTT 5 properties with their length prefix (the subscription identifier).
    pub properties: Bytes,
}

/// Mosquitto's message states (`enum mosquitto_msg_state`, the same in 1.4 to 2.0).
pub mod state {
    pub const PUBLISH_QOS0: u8 = 1;
    pub const PUBLISH_QOS1: u8 = 2;
    pub const WAIT_FOR_PUBACK: u8 = 3;
    pub const PUBLISH_QOS2: u8 = 4;
    pub const WAIT_FOR_PUBREC: u8 = 5;
    pub const RESEND_PUBREL: u8 = 6;
    pub const WAIT_FOR_PUBREL: u8 = 7;
    pub const RESEND_PUBCOMP: u8 = 8;
    pub const WAIT_FOR_PUBCOMP: u8 = 9;
    pub const SEND_PUBREC: u8 = 10;
    pub const QUEUED: u8 = 11;
}

/// `direction` of a client message sent to the client.
pub const DIRECTION_OUT: u8 = 1;

/// A subscription of a client (a `DB_CHUNK_SUB`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub client_id: Bytes,
    pub topic: Bytes,
    pub qos: u8,
    /// No Local (bit 2) and Retain As Published (bit 3), as in SUBSCRIBE (format 6).
    pub options: u8,
    /// Subscription Identifier, 0 = none.
    pub identifier: u32,
}

/// Everything a Mosquitto persistence file holds, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MosquittoDb {
    pub version: u32,
    pub last_db_id: u64,
    pub messages: BTreeMap<u64, StoredMessage>,
    /// Store ids of retained messages.
    pub retained: Vec<u64>,
    pub clients: Vec<Client>,
    pub client_messages: Vec<ClientMessage>,
    pub subscriptions: Vec<Subscription>,
    /// Chunks of a type Mosquitto does not know either (skipped, as Mosquitto does).
    pub unknown_chunks: usize,
}

/// Why bytes are not a Mosquitto persistence file shardmq can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    #[error("not a Mosquitto persistence file (it does not start with Mosquitto's magic)")]
    NotMosquitto,
    #[error("Mosquitto persistence format version {0} is not supported (versions 2 to 6 are: Mosquitto 1.3 to 2.0)")]
    Version(u32),
    #[error("the file ends inside a chunk (offset {0}): it is truncated")]
    Truncated(usize),
    #[error("malformed {what} chunk at offset {offset}: {reason}")]
    Malformed {
        offset: usize,
        what: &'static str,
        reason: &'static str,
    },
    #[error("message ids of {0} bytes (only 8-byte ids are supported)")]
    DbidSize(u8),
}

/// Whether `data` starts like a Mosquitto persistence file.
pub fn is_mosquitto_db(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// The format version of a Mosquitto persistence file, if `data` is one.
pub fn version(data: &[u8]) -> Option<u32> {
    if !is_mosquitto_db(data) {
        return None;
    }
    let v = data.get(19..23)?;
    Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

/// A bounds-checked reader over one chunk body.
struct Body<'a> {
    data: &'a Bytes,
    pos: usize,
    end: usize,
    offset: usize,
    what: &'static str,
}

impl Body<'_> {
    fn malformed(&self, reason: &'static str) -> DbError {
        DbError::Malformed {
            offset: self.offset,
            what: self.what,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<Bytes, DbError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.end)
            .ok_or_else(|| self.malformed("a field runs past the end of the chunk"))?;
        let out = self.data.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DbError> {
        let b = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&b);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DbError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DbError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DbError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A 64-bit field Mosquitto writes in host byte order.
    fn host_u64(&mut self) -> Result<u64, DbError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn skip(&mut self, n: usize) -> Result<(), DbError> {
        self.take(n).map(drop)
    }

    /// A string with a 16-bit big-endian length (formats 2 to 4).
    fn string(&mut self) -> Result<Bytes, DbError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn rest(&mut self) -> Bytes {
        let out = self.data.slice(self.pos..self.end);
        self.pos = self.end;
        out
    }
}

/// Parses a whole Mosquitto persistence file.
pub fn parse(data: &Bytes) -> Result<MosquittoDb, DbError> {
    if !is_mosquitto_db(data) {
        return Err(DbError::NotMosquitto);
    }
    let version = version(data).ok_or(DbError::Truncated(data.len()))?;
    if !(2..=6).contains(&version) {
        return Err(DbError::Version(version));
    }
    let v56 = version >= 5;
    let header_len = if v56 { 8 } else { 6 };
    let mut db = MosquittoDb {
        version,
        ..MosquittoDb::default()
    };
    let mut pos = 23;
    while pos < data.len() {
        let header = data
            .get(pos..pos + header_len)
            .ok_or(DbError::Truncated(pos))?;
        let (chunk, length) = if v56 {
            (
                u32::from_be_bytes([header[0], header[1], header[2], header[3]]),
                u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
            )
        } else {
            (
                u32::from(u16::from_be_bytes([header[0], header[1]])),
                u32::from_be_bytes([header[2], header[3], header[4], header[5]]),
            )
        };
        let start = pos + header_len;
        let end = usize::try_from(length)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= data.len())
            .ok_or(DbError::Truncated(pos))?;
        let mut body = Body {
            data,
            pos: start,
            end,
            offset: pos,
            what: "unknown",
        };
        match chunk {
            CHUNK_CFG => read_cfg(&mut body, v56, &mut db)?,
            CHUNK_MSG_STORE => {
                let m = read_msg_store(&mut body, version)?;
                db.messages.insert(m.store_id, m);
            }
            CHUNK_CLIENT_MSG => db.client_messages.push(read_client_msg(&mut body, v56)?),
            CHUNK_RETAIN => {
                body.what = "retain";
                db.retained.push(body.host_u64()?);
            }
            CHUNK_SUB => db.subscriptions.push(read_sub(&mut body, v56)?),
            CHUNK_CLIENT => db.clients.push(read_client(&mut body, version)?),
            _ => db.unknown_chunks += 1,
        }
        pos = end;
    }
    Ok(db)
}

fn read_cfg(b: &mut Body<'_>, v56: bool, db: &mut MosquittoDb) -> Result<(), DbError> {
    b.what = "configuration";
    let (last_db_id, dbid_size) = if v56 {
        let id = b.host_u64()?;
        let _shutdown = b.u8()?;
        (id, b.u8()?)
    } else {
        let _shutdown = b.u8()?;
        let size = b.u8()?;
        (b.host_u64()?, size)
    };
    if dbid_size != 8 {
        return Err(DbError::DbidSize(dbid_size));
    }
    db.last_db_id = last_db_id;
    Ok(())
}

fn read_msg_store(b: &mut Body<'_>, version: u32) -> Result<StoredMessage, DbError> {
    b.what = "message store";
    if version >= 5 {
        let store_id = b.host_u64()?;
        let expiry_time = i64::from_le_bytes(b.array()?);
        let payload_len = b.u32()?;
        let source_mid = b.u16()?;
        let source_id_len = b.u16()?;
        let source_username_len = b.u16()?;
        let topic_len = b.u16()?;
        let _source_port = b.u16()?;
        let qos = b.u8()?;
        let retain = b.u8()? != 0;
        let source_id = b.take(usize::from(source_id_len))?;
        b.skip(usize::from(source_username_len))?;
        let topic = b.take(usize::from(topic_len))?;
        let payload_len =
            usize::try_from(payload_len).map_err(|_| b.malformed("payload length"))?;
        let payload = b.take(payload_len)?;
        let properties = b.rest();
        return Ok(StoredMessage {
            store_id,
            expiry_time,
            source_id,
            source_mid,
            topic,
            qos,
            retain,
            payload,
            properties,
        });
    }
    let store_id = b.host_u64()?;
    let source_id = b.string()?;
    if version == 4 {
        let _source_username = b.string()?;
        let _source_port = b.u16()?;
    }
    let source_mid = b.u16()?;
    let _mid = b.u16()?;
    let topic = b.string()?;
    let qos = b.u8()?;
    let retain = b.u8()? != 0;
    let payload_len = usize::try_from(b.u32()?).map_err(|_| b.malformed("payload length"))?;
    let payload = b.take(payload_len)?;
    Ok(StoredMessage {
        store_id,
        expiry_time: 0,
        source_id,
        source_mid,
        topic,
        qos,
        retain,
        payload,
        properties: Bytes::new(),
    })
}

fn read_client_msg(b: &mut Body<'_>, v56: bool) -> Result<ClientMessage, DbError> {
    b.what = "client message";
    if v56 {
        let store_id = b.host_u64()?;
        let mid = b.u16()?;
        let id_len = b.u16()?;
        let qos = b.u8()?;
        let state = b.u8()?;
        let retain_dup = b.u8()?;
        let direction = b.u8()?;
        let client_id = b.take(usize::from(id_len))?;
        return Ok(ClientMessage {
            client_id,
            store_id,
            mid,
            qos,
            state,
            retain: retain_dup & 0xF0 != 0,
            dup: retain_dup & 0x0F != 0,
            direction,
            properties: b.rest(),
        });
    }
    let client_id = b.string()?;
    let store_id = b.host_u64()?;
    let mid = b.u16()?;
    let qos = b.u8()?;
    let retain = b.u8()? != 0;
    let direction = b.u8()?;
    let state = b.u8()?;
    let dup = b.u8()? != 0;
    Ok(ClientMessage {
        client_id,
        store_id,
        mid,
        qos,
        state,
        retain,
        dup,
        direction,
        properties: Bytes::new(),
    })
}

fn read_sub(b: &mut Body<'_>, v56: bool) -> Result<Subscription, DbError> {
    b.what = "subscription";
    if v56 {
        let identifier = b.u32()?;
        let id_len = b.u16()?;
        let topic_len = b.u16()?;
        let qos = b.u8()?;
        let options = b.u8()?;
        b.skip(PF_SUB - 10)?;
        let client_id = b.take(usize::from(id_len))?;
        let topic = b.take(usize::from(topic_len))?;
        return Ok(Subscription {
            client_id,
            topic,
            qos,
            options,
            identifier,
        });
    }
    let client_id = b.string()?;
    let topic = b.string()?;
    let qos = b.u8()?;
    Ok(Subscription {
        client_id,
        topic,
        qos,
        options: 0,
        identifier: 0,
    })
}

fn read_client(b: &mut Body<'_>, version: u32) -> Result<Client, DbError> {
    b.what = "client";
    if version >= 5 {
        let session_expiry_time = i64::from_le_bytes(b.array()?);
        let session_expiry_interval = b.u32()?;
        let last_mid = b.u16()?;
        let id_len = b.u16()?;
        let (listener_port, username_len) = if version == 6 {
            let port = b.u16()?;
            let len = b.u16()?;
            b.skip(PF_CLIENT_V6 - 20)?;
            (port, len)
        } else {
            (0, 0)
        };
        let id = b.take(usize::from(id_len))?;
        let username = (username_len > 0)
            .then(|| b.take(usize::from(username_len)))
            .transpose()?;
        return Ok(Client {
            id,
            username,
            session_expiry_time,
            session_expiry_interval,
            last_mid,
            listener_port,
        });
    }
    let id = b.string()?;
    let last_mid = b.u16()?;
    if version >= 3 {
        let _disconnect_time = b.array::<8>()?;
    }
    Ok(Client {
        id,
        username: None,
        session_expiry_time: 0,
        session_expiry_interval: u32::MAX,
        last_mid,
        listener_port: 0,
    })
}

#[cfg(test)]
#[path = "mosquitto_db_tests.rs"]
pub(crate) mod tests;
