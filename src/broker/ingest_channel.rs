//! The channel form of an ingest handler, for hosts that take messages on other threads
//! or async tasks: each shard's instance sends a [`Delivery`] (an owned copy of the
//! message, its [`Origin`] and an [`AckToken`]) into a bounded channel the host supplies
//! through [`IngestSender`]; a full channel is "busy" (the device is not read and the
//! message is offered again), and the device's PUBACK/PUBREC waits for the token.
//!
//! It never blocks a shard: it only looks for room and sends without waiting. The
//! instance is the only sender of its channel, so room it saw is still there when it
//! sends.

use bytes::Bytes;

use crate::codec::{ByteStr, Properties, QoS};

use super::ingest::{IngestHandler, Ingested, Origin, Verdict};
use super::ingest_ack::AckToken;

/// A message taken by a channel ingest handler (a copy: it keeps no read buffer alive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestMessage {
    topic: ByteStr,
    payload: Bytes,
    qos: QoS,
    retain: bool,
    properties: Properties,
    origin: Origin,
}

impl IngestMessage {
    fn copy_of(m: &Ingested<'_>) -> Self {
        Self {
            topic: m.publish.topic.compact(),
            payload: Bytes::copy_from_slice(m.payload()),
            qos: m.qos(),
            retain: m.retain(),
            properties: m.publish.properties.compact(),
            origin: m.provenance().to_origin(),
        }
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        self.topic.as_str()
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The QoS the device published it at.
    pub fn qos(&self) -> QoS {
        self.qos
    }

    /// The device's RETAIN flag.
    pub fn retain(&self) -> bool {
        self.retain
    }

    /// The device's MQTT 5 properties (empty for MQTT 3.1.1 devices).
    pub fn properties(&self) -> crate::MessageProperties<'_> {
        crate::MessageProperties(&self.properties)
    }

    /// Who published it.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}

/// A message and the token that acknowledges it to the device: call
/// [`AckToken::ack`] once the message is safe (a QoS 0 message's token acknowledges
/// nothing). Dropping an un-acked token disconnects the device, which sends the message
/// again.
#[derive(Debug)]
pub struct Delivery {
    /// The message.
    pub message: IngestMessage,
    /// Its acknowledgement.
    pub token: AckToken,
}

/// The sending side of a host's bounded channel (one per shard), as a channel ingest
/// handler uses it; implemented for `crossbeam_channel::Sender<Delivery>`. For an async
/// host, implement it for its own channel (e.g. tokio's `mpsc::Sender`: `capacity() >
/// 0` and `try_send`).
pub trait IngestSender: Send {
    /// Whether a [`IngestSender::send`] now would not wait.
    fn has_room(&self) -> bool;

    /// Sends without waiting; gives the delivery back if the receiving side is gone.
    #[allow(clippy::result_large_err)] // given back only when the host is gone
    fn send(&mut self, delivery: Delivery) -> Result<(), Delivery>;
}

impl IngestSender for crossbeam_channel::Sender<Delivery> {
    fn has_room(&self) -> bool {
        !self.is_full()
    }

    fn send(&mut self, delivery: Delivery) -> Result<(), Delivery> {
        self.try_send(delivery).map_err(|e| e.into_inner())
    }
}

/// The ingest handler over an [`IngestSender`].
pub(crate) struct ChannelHandler<S>(pub(crate) S);

impl<S: IngestSender> IngestHandler for ChannelHandler<S> {
    fn ingest(&mut self, msg: &Ingested<'_>) -> Verdict {
        if !self.0.has_room() {
            return Verdict::Busy;
        }
        let token = if msg.qos() == QoS::AtMostOnce {
            AckToken::detached()
        } else {
            msg.defer_ack()
        };
        let delivery = Delivery {
            message: IngestMessage::copy_of(msg),
            token,
        };
        match self.0.send(delivery) {
            Ok(()) => Verdict::Accept,
            // The host is gone: the dropped token disconnects the device.
            Err(_) => Verdict::Busy,
        }
    }
}
