//! The broker's side of bridges that connect *to* it: a client whose CONNECT carries
//! Mosquitto's bridge bit (protocol level | 0x80, sent by Mosquitto's and shardmq's
//! bridges with `try_private true`) is a bridge. Its subscriptions get No Local and
//! Retain As Published, as Mosquitto treats a bridge: what it publishes never goes back
//! to it (no loop between two brokers bridged both ways) and retained messages keep
//! their flag across brokers.
//!
//! (The bridges this broker runs itself live in `crate::bridge` and the runtime; their
//! local connection is an ordinary connection on the trusted `BRIDGE_LISTENER`; the
//! runtime asks [`Broker::session_stored`] and [`Broker::publish_bridge_sys`] for their `$SYS`
//! figures.) It never touches a socket.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{Broker, ConnId};
use crate::codec::{decode_connect_version, ByteStr, Publish, Subscribe};

/// Clears the bridge bit of a CONNECT at the front of `buf` (3.1 or 3.1.1 with 0x80);
/// true if it was set.
pub(super) fn take_bridge_bit(buf: &mut BytesMut) -> bool {
    if !matches!(decode_connect_version(buf), Some(0x83 | 0x84)) {
        return false;
    }
    // decode_connect_version found it: type byte, remaining length, name, level.
    let mut i = 1;
    while buf.get(i).is_some_and(|b| b & 0x80 != 0) {
        i += 1;
    }
    let name_len = match (buf.get(i + 1), buf.get(i + 2)) {
        (Some(&hi), Some(&lo)) => usize::from(u16::from_be_bytes([hi, lo])),
        _ => return false,
    };
    match buf.get_mut(i + 3 + name_len) {
        Some(level) => {
            *level &= 0x7F;
            true
        }
        None => false,
    }
}

impl Broker {
    /// Messages the session of `client_id` holds on this shard (queued and in flight),
    /// if it lives here: what a bridge run by this shard has waiting for its remote.
    pub fn session_stored(&self, client_id: &ByteStr) -> Option<usize> {
        let key = self.sessions.live_key_of(client_id)?;
        self.sessions.get(key).map(|s| s.session.stored())
    }

    /// Publishes one of a bridge's `$SYS` figures (retained, QoS 0) from this shard.
    pub fn publish_bridge_sys(&mut self, topic: String, value: String, now: Instant) {
        let publish = Publish {
            retain: true,
            topic: ByteStr::from(topic),
            payload: Bytes::from(value),
            ..Publish::default()
        };
        self.route(publish, None, now);
    }

    /// A bridge's subscriptions: No Local and Retain As Published.
    pub(super) fn bridge_subscription(&self, conn: ConnId, sub: &mut Subscribe) {
        if self.conns.get(conn).is_some_and(|c| c.bridge) {
            for (_, options) in &mut sub.filters {
                options.no_local = true;
                options.retain_as_published = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_bit_is_taken_from_3_1_1_and_3_1_connects() {
        // CONNECT, "MQTT", level 0x84, flags, keep alive, client id "a".
        let mut b = BytesMut::from(
            &[
                0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 0x84, 2, 0, 60, 0, 1, b'a',
            ][..],
        );
        assert!(take_bridge_bit(&mut b));
        assert_eq!(b[8], 4);
        assert!(!take_bridge_bit(&mut b), "an ordinary CONNECT");
        let mut b = BytesMut::from(
            &[
                0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 0x83, 2, 0, 60, 0, 1, b'a',
            ][..],
        );
        assert!(take_bridge_bit(&mut b));
        assert_eq!(b[10], 3);
        let mut v5 = BytesMut::from(&[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 0x85, 2, 0][..]);
        assert!(!take_bridge_bit(&mut v5), "no bridge bit in MQTT 5");
    }
}
