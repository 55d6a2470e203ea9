//! Ingest handlers, the embedding API's lossless way in: the host's [`IngestHandler`]s
//! (one instance per shard, each with its topic filter), the borrowed [`Ingested`]
//! message they are offered on the publisher's shard thread, with its [`Provenance`],
//! and what this shard holds for the connections whose message a handler answered
//! [`Verdict::Busy`] to.
//!
//! The guarantee: a QoS 1/2 PUBLISH matching a handler is acknowledged (PUBACK/PUBREC)
//! only after every matching handler accepted it; a busy handler holds the message (and
//! everything its connection sent after it, in order) and stops reading that connection
//! (flow control's rule 7), and the message is offered again after a short back-off, to
//! the handlers that have not accepted it yet, until they do or the connection ends (then
//! the device sends it again: it was never acknowledged). At QoS 0 each handler's
//! [`Qos0Policy`] chooses between dropping (counted) and the same back-pressure.
//!
//! It never copies a message it offers for the first time (topic and payload are slices of
//! the read buffer); a held message is copied once, so it does not pin that buffer while it
//! waits. It never blocks, sleeps or touches a socket: the coordinator
//! (`ingest_hook.rs`) applies what it decides.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::codec::{ByteStr, Packet, Publish, QoS};
use crate::topic::{TopicFilter, TopicIndex};

use super::ingest_ack::{AckSink, AckToken, Awaiting};
use super::ConnId;

/// Most handlers a broker takes (a held message records which accepted it in a `u64`).
pub const MAX_INGEST_HANDLERS: usize = 64;

/// First back-off before a message a handler was busy with is offered again; it doubles
/// on each "busy" up to [`RETRY_MAX`].
pub(super) const RETRY_FIRST: Duration = Duration::from_millis(1);
/// Longest back-off between two offers of a held message.
pub(super) const RETRY_MAX: Duration = Duration::from_millis(50);

/// A handler's answer to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The handler took the message (and is responsible for it from now on): the broker
    /// acknowledges it to the device (QoS 1/2) and routes it to its subscribers.
    Accept,
    /// The handler cannot take it now: the broker stops reading the publishing device and
    /// offers the same message again shortly. Never dropped at QoS 1/2 (see
    /// [`Qos0Policy`] for QoS 0).
    Busy,
}

/// What a [`Verdict::Busy`] means for a QoS 0 message (QoS 1/2 are always held).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Qos0Policy {
    /// The message is not given to this handler (counted in
    /// `$SYS/broker/publish/messages/dropped`); the device is read on. The default.
    #[default]
    Drop,
    /// As at QoS 1: the message is held and the device is not read until the handler
    /// accepts it.
    BackPressure,
}

/// Who published a message: the connection it came in on.
///
/// ```
/// # fn f(from: &shardmq::Provenance<'_>) {
/// println!("{} ({:?}) from {} on listener {}, MQTT level {}",
///     from.client_id(), from.username(), from.peer(), from.listener(), from.protocol_level());
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    pub(super) client_id: &'a ByteStr,
    pub(super) username: Option<&'a ByteStr>,
    pub(super) listener: usize,
    pub(super) peer: SocketAddr,
    pub(super) protocol_level: u8,
}

impl<'a> Provenance<'a> {
    /// The client identifier of the publishing session.
    pub fn client_id(&self) -> &'a str {
        self.client_id.as_str()
    }

    /// The user name it authenticated as (or the TLS identity with
    /// `use_identity_as_username`); `None` for an anonymous client.
    pub fn username(&self) -> Option<&'a str> {
        self.username.map(ByteStr::as_str)
    }

    /// The listener it connected to: an index into the configuration's listeners, in
    /// order (and into [`crate::BrokerHandle::local_addrs`]).
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// The device's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The MQTT protocol level it speaks: 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0).
    pub fn protocol_level(&self) -> u8 {
        self.protocol_level
    }

    /// An owned copy (cheap: the client id and user name are shared, not copied).
    pub fn to_origin(&self) -> Origin {
        Origin {
            client_id: self.client_id.clone(),
            username: self.username.cloned(),
            listener: self.listener,
            peer: self.peer,
            protocol_level: self.protocol_level,
        }
    }
}

/// Who published a message, owned (see [`Provenance`] for each field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    client_id: ByteStr,
    username: Option<ByteStr>,
    listener: usize,
    peer: SocketAddr,
    protocol_level: u8,
}

impl Origin {
    /// The client identifier of the publishing session.
    pub fn client_id(&self) -> &str {
        self.client_id.as_str()
    }

    /// The user name it authenticated as; `None` for an anonymous client.
    pub fn username(&self) -> Option<&str> {
        self.username.as_ref().map(ByteStr::as_str)
    }

    /// The listener it connected to (index in configuration order).
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// The device's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The MQTT protocol level: 3, 4 or 5.
    pub fn protocol_level(&self) -> u8 {
        self.protocol_level
    }
}

/// A message offered to an [`IngestHandler`], borrowed for the call: topic and payload
/// are slices of the connection's read buffer (no copy). Cloning the [`Bytes`] to keep
/// them is cheap but keeps that buffer alive; copy what is kept for long.
pub struct Ingested<'a> {
    pub(super) publish: &'a Publish,
    pub(super) from: Provenance<'a>,
    pub(super) shard: usize,
    pub(super) defer: &'a Defer<'a>,
}

/// What [`Ingested::defer_ack`] needs: where tokens report, and which message they are
/// for; counts the tokens issued during one offer.
pub(super) struct Defer<'a> {
    pub(super) sink: Option<&'a AckSink>,
    pub(super) conn: ConnId,
    pub(super) uid: u64,
    pub(super) seq: u64,
    pub(super) issued: Cell<u32>,
}

impl fmt::Debug for Ingested<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingested")
            .field("topic", &self.topic())
            .field("qos", &self.qos())
            .field("payload_len", &self.payload().len())
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl<'a> Ingested<'a> {
    /// The topic name.
    pub fn topic(&self) -> &'a str {
        self.publish.topic.as_str()
    }

    /// The topic name as the bytes it arrived in (UTF-8, validated).
    pub fn topic_bytes(&self) -> &'a Bytes {
        self.publish.topic.as_bytes()
    }

    /// The payload, as it arrived.
    pub fn payload(&self) -> &'a Bytes {
        &self.publish.payload
    }

    /// The QoS the device published it at.
    pub fn qos(&self) -> QoS {
        self.publish.qos
    }

    /// The device's RETAIN flag.
    pub fn retain(&self) -> bool {
        self.publish.retain
    }

    /// The device's MQTT 5 properties (empty for MQTT 3.1.1 devices).
    pub fn properties(&self) -> crate::MessageProperties<'a> {
        crate::MessageProperties(&self.publish.properties)
    }

    /// Who published it.
    pub fn provenance(&self) -> &Provenance<'a> {
        &self.from
    }

    /// The shard (thread) this handler instance runs on, from 0.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Defers the device's acknowledgement of this message until the returned token is
    /// [acked](AckToken::ack), from any thread (e.g. once an async task stored it).
    /// Answer [`Verdict::Accept`] after taking the token: the message is routed now, and
    /// the device is read on; its PUBACK/PUBREC (and those of the messages it sent
    /// after it) wait for the token. Dropping the token without acking it closes the
    /// device's connection, so that it sends the message again.
    ///
    /// ```
    /// # use shardmq::{Ingested, Verdict, AckToken};
    /// # fn f(to_task: &crossbeam_channel::Sender<(Vec<u8>, AckToken)>) {
    /// let handler = move |msg: &Ingested<'_>| {
    ///     if to_task.is_full() {
    ///         return Verdict::Busy; // back-pressure, nothing taken
    ///     }
    ///     let _ = to_task.try_send((msg.payload().to_vec(), msg.defer_ack()));
    ///     Verdict::Accept
    /// };
    /// # }
    /// ```
    pub fn defer_ack(&self) -> AckToken {
        let d = self.defer;
        match d.sink {
            Some(sink) => {
                d.issued.set(d.issued.get() + 1);
                AckToken::new(sink.clone(), d.conn, d.uid, d.seq)
            }
            None => AckToken::detached(),
        }
    }
}

/// The host's receiver of the messages that match its filter, called on the publishing
/// device's shard thread (one instance per shard, see [`crate::BrokerBuilder::ingest`]).
///
/// It must return quickly and never block for long: it runs in the shard's event loop,
/// and every device on that shard waits while it runs. To wait for something (a disk,
/// a queue with room), answer [`Verdict::Busy`]: only the publishing device waits. It
/// must not panic (the shard would stop).
///
/// A closure `FnMut(&Ingested<'_>) -> Verdict + Send` is a handler.
pub trait IngestHandler: Send {
    /// Offers one message; see [`Verdict`].
    fn ingest(&mut self, msg: &Ingested<'_>) -> Verdict;
}

impl<F> IngestHandler for F
where
    F: FnMut(&Ingested<'_>) -> Verdict + Send,
{
    fn ingest(&mut self, msg: &Ingested<'_>) -> Verdict {
        self(msg)
    }
}

/// One handler of one shard with its filter and QoS 0 policy (what the runtime installs).
pub struct IngestEntry {
    pub filter: TopicFilter,
    pub qos0: Qos0Policy,
    pub handler: Box<dyn IngestHandler>,
}

impl fmt::Debug for IngestEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestEntry")
            .field("filter", &self.filter)
            .field("qos0", &self.qos0)
            .finish_non_exhaustive()
    }
}

/// The outcome of offering a message to the matching handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offer {
    /// Every matching handler took it (or none matched): acknowledge and route.
    Accepted,
    /// A handler was busy: hold it, with the set of handlers that took it already.
    Busy { accepted: u64 },
}

/// A message held for a busy handler.
#[derive(Debug)]
pub(super) struct HeldPublish {
    pub(super) key: usize,
    pub(super) publish: Publish,
    /// Handlers (bit i = handler i) that accepted it already: not offered again.
    pub(super) accepted: u64,
    /// Its place in the connection's acknowledgement order, if a handler deferred it.
    pub(super) seq: Option<u64>,
}

/// What a connection has waiting while a handler is busy: the held message and what
/// the connection sent after it, in order.
#[derive(Debug)]
struct HeldConn {
    uid: u64,
    publish: Option<HeldPublish>,
    queued: VecDeque<Packet>,
    /// The next back-off.
    delay: Duration,
}

/// This shard's handlers and the connections they hold.
#[derive(Debug, Default)]
pub(super) struct Ingest {
    index: TopicIndex<usize, ()>,
    handlers: Vec<IngestEntry>,
    held: HashMap<ConnId, HeldConn>,
    /// Acknowledgements waiting for [`AckToken`]s.
    pub(super) awaiting: Awaiting,
    /// QoS 0 messages a busy handler with [`Qos0Policy::Drop`] did not get.
    pub(super) dropped: u64,
}

/// A copy of `p` that pins no read buffer.
fn detach(p: &Publish) -> Publish {
    Publish {
        topic: p.topic.compact(),
        payload: Bytes::copy_from_slice(&p.payload),
        properties: p.properties.compact(),
        ..*p
    }
}

impl Ingest {
    /// Installs this shard's handlers (at most [`MAX_INGEST_HANDLERS`], the rest are
    /// ignored: the builder refuses more).
    pub(super) fn set_handlers(&mut self, handlers: Vec<IngestEntry>) {
        self.index = TopicIndex::new();
        for (i, h) in handlers.iter().enumerate().take(MAX_INGEST_HANDLERS) {
            self.index.insert(&h.filter, i, ());
        }
        self.handlers = handlers;
        self.handlers.truncate(MAX_INGEST_HANDLERS);
    }

    /// Whether there are no handlers (the publish path's one check).
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// Offers `msg` to the matching handlers that are not in `accepted`, in the order
    /// they were installed, until one is busy.
    pub(super) fn offer(&mut self, msg: &Ingested<'_>, mut accepted: u64) -> Offer {
        let mut matching: SmallVec<[usize; 4]> = SmallVec::new();
        self.index
            .for_each_match(msg.topic(), |&i, ()| matching.push(i));
        matching.sort_unstable();
        for i in matching {
            let bit = 1u64 << i;
            if accepted & bit != 0 {
                continue;
            }
            let Some(entry) = self.handlers.get_mut(i) else {
                continue;
            };
            match entry.handler.ingest(msg) {
                Verdict::Accept => accepted |= bit,
                Verdict::Busy if msg.qos() == QoS::AtMostOnce && entry.qos0 == Qos0Policy::Drop => {
                    self.dropped += 1;
                    accepted |= bit;
                }
                Verdict::Busy => return Offer::Busy { accepted },
            }
        }
        Offer::Accepted
    }

    /// Whether connection `conn` has a message held: then what it sends next is queued
    /// behind it. (While what was queued is replayed, nothing is held.)
    #[inline]
    pub(super) fn holds(&self, conn: ConnId) -> bool {
        !self.held.is_empty() && self.held.get(&conn).is_some_and(|e| e.publish.is_some())
    }

    /// Holds `held` for connection `conn` (uid); returns the back-off before the next
    /// offer.
    pub(super) fn hold(&mut self, conn: ConnId, uid: u64, held: &HeldPublish) -> Duration {
        let entry = self.held.entry(conn).or_insert_with(|| HeldConn {
            uid,
            publish: None,
            queued: VecDeque::new(),
            delay: RETRY_FIRST,
        });
        if entry.uid != uid {
            // A stale entry of an earlier connection in the same slot.
            *entry = HeldConn {
                uid,
                publish: None,
                queued: VecDeque::new(),
                delay: RETRY_FIRST,
            };
        }
        let delay = entry.delay;
        entry.delay = (delay * 2).min(RETRY_MAX);
        entry.publish = Some(HeldPublish {
            publish: detach(&held.publish),
            ..*held
        });
        delay
    }

    /// Queues a packet `conn` sent behind its held message (a PUBLISH is copied so that
    /// it does not pin the read buffer).
    pub(super) fn queue(&mut self, conn: ConnId, packet: Packet) {
        if let Some(entry) = self.held.get_mut(&conn) {
            let packet = match packet {
                Packet::Publish(p) => Packet::Publish(detach(&p)),
                other => other,
            };
            entry.queued.push_back(packet);
        }
    }

    /// Takes the held message of `conn` if it is still connection `uid`'s (for another
    /// offer).
    pub(super) fn take_publish(&mut self, conn: ConnId, uid: u64) -> Option<HeldPublish> {
        self.held
            .get_mut(&conn)
            .filter(|e| e.uid == uid)
            .and_then(|e| e.publish.take())
    }

    /// The next packet queued behind `conn`'s (now taken) held message, unless a
    /// message is held again. `None` when there is nothing left: then the entry is
    /// gone, and returns whether there was one.
    pub(super) fn next_queued(&mut self, conn: ConnId, uid: u64) -> Next {
        let Some(entry) = self.held.get_mut(&conn).filter(|e| e.uid == uid) else {
            return Next::Gone;
        };
        if entry.publish.is_some() {
            return Next::Held;
        }
        match entry.queued.pop_front() {
            Some(p) => Next::Packet(Box::new(p)),
            None => {
                self.held.remove(&conn);
                Next::Released
            }
        }
    }

    /// The connection ended: what it held is dropped (never acknowledged, so the device
    /// sends it again). Returns the held message's QoS 2 packet id, which the session
    /// must forget so that the resent message is not taken for a duplicate.
    pub(super) fn on_conn_end(&mut self, conn: ConnId) -> Option<(usize, u16)> {
        self.awaiting.on_conn_end(conn);
        let entry = self.held.remove(&conn)?;
        let held = entry.publish?;
        (held.publish.qos == QoS::ExactlyOnce)
            .then_some(held.publish.packet_id)
            .flatten()
            .map(|id| (held.key, id))
    }
}

/// What comes next for a connection whose held message was taken.
#[derive(Debug)]
pub(super) enum Next {
    /// A packet it sent after the message: handle it.
    Packet(Box<Packet>),
    /// A message is held again: stop.
    Held,
    /// Nothing is held any more: read the connection again.
    Released,
    /// The connection is gone.
    Gone,
}

/// Validates an ingest handler's filter. A shared filter (`$share/...`) is refused: a
/// handler already gets every matching message once.
pub fn parse_filter(filter: &str) -> Result<TopicFilter, String> {
    if crate::topic::SharedFilter::is_shared(filter) {
        return Err("shared filters ($share/...) are not for ingest handlers".to_owned());
    }
    TopicFilter::parse(filter).map_err(|e| e.to_string())
}
