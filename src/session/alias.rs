//! MQTT 5 topic aliases of one network connection, both ways: the aliases a client sets
//! on its PUBLISHes (up to our Topic Alias Maximum, `max_topic_alias`) and the aliases
//! the broker assigns on PUBLISHes to the client (up to the client's Topic Alias
//! Maximum), most-used topics first.
//!
//! Both tables live in the session's link and die with the connection: no mapping is
//! carried from one network connection to the next [MQTT-3.3.2-7]. This module never
//! encodes bytes and never sees the wire: the broker asks [`OutboundAliases::choose`]
//! before it encodes a PUBLISH and confirms with [`OutboundAliases::bound`] once the
//! frame is in the connection's output, so the client always learns a mapping before
//! the broker relies on it.

use crate::codec::{ByteStr, Publish};

use super::ProtocolError;

/// The aliases a client set (client -> broker): alias `n` is `topics[n - 1]`.
#[derive(Debug, Default)]
pub(super) struct InboundAliases {
    /// Our Topic Alias Maximum, as announced in CONNACK.
    max: u16,
    /// Grown on first use up to `max` (most clients set none).
    topics: Vec<Option<ByteStr>>,
}

impl InboundAliases {
    pub(super) const fn new(max: u16) -> Self {
        Self {
            max,
            topics: Vec::new(),
        }
    }

    /// Resolves the Topic Alias of `p`: a PUBLISH with a topic (re)binds the alias, one
    /// with an empty topic takes the topic of the alias. Leaves `p` without an alias.
    pub(super) fn resolve(&mut self, p: &mut Publish) -> Result<(), ProtocolError> {
        let Some(alias) = p.properties.take_topic_alias() else {
            return Ok(());
        };
        // [MQTT-3.3.2-8] alias 0 is never valid; [MQTT-3.3.2-9] [MQTT-3.2.2-17] nothing
        // above the maximum we announced (absent = 0) [MQTT-3.3.2-12].
        if alias == 0 || alias > self.max {
            return Err(ProtocolError::TopicAliasInvalid);
        }
        let i = usize::from(alias - 1);
        if p.topic.is_empty() {
            // 3.3.2.3.4: an empty topic with an alias the client never set is a
            // Protocol Error.
            let topic = self.topics.get(i).and_then(Option::as_ref);
            p.topic = topic.cloned().ok_or(ProtocolError::TopicAliasUnknown)?;
        } else {
            if self.topics.len() <= i {
                self.topics.resize(i + 1, None);
            }
            // Kept as long as the connection: compact, never a slice of the read buffer.
            self.topics[i] = Some(p.topic.compact());
        }
        Ok(())
    }
}

/// What the broker does with the topic of one outbound PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasUse {
    /// The topic, no alias.
    Topic,
    /// An empty topic and this alias: the client knows the mapping.
    Known(u16),
    /// The topic and this alias: sets (or moves) the mapping; call
    /// [`OutboundAliases::bound`] once the frame is written.
    Bind(u16),
}

/// A topic with an alias, and how often it was sent since the last ageing.
#[derive(Debug, Clone, Copy)]
struct Bound {
    alias: u16,
    hits: u32,
}

/// A topic needs this many deliveries before it takes an alias: a topic sent once costs
/// no alias slot (and the client no mapping).
const BIND_AFTER: u32 = 2;

/// The aliases the broker assigned (broker -> client), up to the client's Topic Alias
/// Maximum [MQTT-3.3.2-11] [MQTT-3.1.2-26]. Topics are counted as they are sent; one
/// takes a free alias on its second delivery; when none is free, a topic sent more than
/// twice as often as the least-used aliased one takes that one's alias (the margin stops
/// two topics of equal rate from trading an alias back and forth, which would cost more
/// bytes than it saves). Counts are halved when the candidate table fills, so the
/// choice follows the recent traffic, and the tables stay bounded.
#[derive(Debug)]
pub struct OutboundAliases {
    /// The client's Topic Alias Maximum (at least 1).
    max: u16,
    /// Keyed by topics clients chose: seeded hashing (HashDoS).
    bound: crate::hash::Map<ByteStr, Bound>,
    /// Alias `n` is `by_alias[n - 1]` (aliases are handed out from 1 upwards).
    by_alias: Vec<ByteStr>,
    /// Topics without an alias, and their counts; at most `candidate_cap` entries.
    candidates: crate::hash::Map<ByteStr, u32>,
    candidate_cap: usize,
    /// The least-used aliased topic when last looked for (alias, count): a lower bound of
    /// the present least count (counts only grow between ageings), so the table is only
    /// scanned when a candidate beats it.
    least: Option<(u16, u32)>,
}

impl OutboundAliases {
    /// For a client whose Topic Alias Maximum is `max`; `None` for 0 (no aliases
    /// [MQTT-3.1.2-27]).
    pub fn new(max: u16) -> Option<Self> {
        (max > 0).then(|| Self {
            max,
            bound: crate::hash::Map::default(),
            by_alias: Vec::new(),
            candidates: crate::hash::Map::default(),
            candidate_cap: (2 * usize::from(max)).clamp(16, 4096),
            least: None,
        })
    }

    /// Counts one delivery of `topic` and says how to send it.
    pub fn choose(&mut self, topic: &ByteStr) -> AliasUse {
        if let Some(b) = self.bound.get_mut(topic) {
            b.hits = b.hits.saturating_add(1);
            return AliasUse::Known(b.alias);
        }
        let hits = if let Some(h) = self.candidates.get_mut(topic) {
            *h = h.saturating_add(1);
            *h
        } else {
            if self.candidates.len() >= self.candidate_cap {
                self.age();
            }
            self.candidates.insert(topic.compact(), 1);
            1
        };
        if hits < BIND_AFTER {
            return AliasUse::Topic;
        }
        if self.by_alias.len() < usize::from(self.max) {
            // Handed out in order: the next one is the length + 1 (fits: below max).
            return u16::try_from(self.by_alias.len() + 1).map_or(AliasUse::Topic, AliasUse::Bind);
        }
        if self
            .least
            .is_some_and(|(_, least)| hits <= least.saturating_mul(2))
        {
            return AliasUse::Topic;
        }
        self.least = self.least_used();
        match self.least {
            Some((alias, least)) if hits > least.saturating_mul(2) => AliasUse::Bind(alias),
            _ => AliasUse::Topic,
        }
    }

    /// The frame that carried `topic` with `Bind(alias)` is in the client's output: from
    /// now on the alias stands for `topic` (the topic it stood for goes back to being a
    /// candidate, with its count).
    pub fn bound(&mut self, topic: &ByteStr, alias: u16) {
        let i = usize::from(alias.saturating_sub(1));
        let hits = self.candidates.remove(topic).unwrap_or(BIND_AFTER);
        if let Some(old) = self.by_alias.get_mut(i) {
            let previous = std::mem::replace(old, topic.compact());
            if let Some(b) = self.bound.remove(&previous) {
                self.candidates.insert(previous, b.hits);
            }
        } else if i == self.by_alias.len() {
            self.by_alias.push(topic.compact());
        } else {
            return; // not an alias `choose` handed out
        }
        self.bound.insert(topic.compact(), Bound { alias, hits });
        self.least = None;
    }

    /// The aliased topic sent least often (alias, count).
    fn least_used(&self) -> Option<(u16, u32)> {
        self.bound
            .values()
            .min_by_key(|b| b.hits)
            .map(|b| (b.alias, b.hits))
    }

    /// Halves every count and forgets the candidates that fall to zero.
    fn age(&mut self) {
        self.candidates.retain(|_, h| {
            *h /= 2;
            *h > 0
        });
        for b in self.bound.values_mut() {
            b.hits /= 2;
        }
        self.least = None;
        if self.candidates.len() >= self.candidate_cap {
            // Every candidate was seen once since the last ageing: start over.
            self.candidates.clear();
        }
    }

    /// Aliases in use.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.by_alias.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    fn publish(topic: &str, alias: Option<u16>) -> Publish {
        let mut p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteStr::from(topic),
            packet_id: None,
            properties: Default::default(),
            payload: bytes::Bytes::new(),
        };
        p.properties.topic_alias = alias;
        p
    }

    #[test]
    fn mqtt_3_3_2_12_inbound_alias_set_then_used() {
        let mut a = InboundAliases::new(10);
        let mut p = publish("a/b", Some(10));
        a.resolve(&mut p).unwrap();
        assert_eq!(p.properties.topic_alias, None);
        let mut p = publish("", Some(10));
        a.resolve(&mut p).unwrap();
        assert_eq!(p.topic.as_str(), "a/b");
        // Rebinding the alias to another topic.
        a.resolve(&mut publish("c", Some(10))).unwrap();
        let mut p = publish("", Some(10));
        a.resolve(&mut p).unwrap();
        assert_eq!(p.topic.as_str(), "c");
    }

    #[test]
    fn mqtt_3_3_2_8_and_3_3_2_9_alias_0_or_above_max_invalid() {
        let mut a = InboundAliases::new(10);
        for alias in [0, 11, u16::MAX] {
            assert!(matches!(
                a.resolve(&mut publish("t", Some(alias))),
                Err(ProtocolError::TopicAliasInvalid)
            ));
        }
        let mut none = InboundAliases::new(0);
        assert!(matches!(
            none.resolve(&mut publish("t", Some(1))),
            Err(ProtocolError::TopicAliasInvalid)
        ));
    }

    #[test]
    fn unknown_alias_without_topic_is_protocol_error() {
        let mut a = InboundAliases::new(10);
        a.resolve(&mut publish("t", Some(1))).unwrap();
        assert!(matches!(
            a.resolve(&mut publish("", Some(2))),
            Err(ProtocolError::TopicAliasUnknown)
        ));
    }

    fn send(a: &mut OutboundAliases, topic: &str) -> AliasUse {
        let t = ByteStr::from(topic);
        let choice = a.choose(&t);
        if let AliasUse::Bind(n) = choice {
            a.bound(&t, n);
        }
        choice
    }

    #[test]
    fn mqtt_3_1_2_27_no_outbound_aliases_for_maximum_0() {
        assert!(OutboundAliases::new(0).is_none());
    }

    #[test]
    fn outbound_alias_on_second_delivery_then_known() {
        let mut a = OutboundAliases::new(2).unwrap();
        assert_eq!(send(&mut a, "x"), AliasUse::Topic);
        assert_eq!(send(&mut a, "x"), AliasUse::Bind(1));
        assert_eq!(send(&mut a, "x"), AliasUse::Known(1));
        assert_eq!(send(&mut a, "once"), AliasUse::Topic);
    }

    #[test]
    fn mqtt_3_3_2_11_outbound_aliases_never_above_client_maximum_busiest_first() {
        let mut a = OutboundAliases::new(3).unwrap();
        let check = |a: &mut OutboundAliases, t: &str| {
            if let AliasUse::Known(n) | AliasUse::Bind(n) = send(a, t) {
                assert!((1..=3).contains(&n), "alias {n}");
            }
        };
        // Cold topics come first and take every alias ...
        for t in 0..17 {
            check(&mut a, &format!("cold{t}"));
            check(&mut a, &format!("cold{t}"));
        }
        // ... then three topics ten times busier take them over.
        for _ in 0..50 {
            for t in 0..17 {
                check(&mut a, &format!("cold{t}"));
            }
            for t in 0..3 {
                for _ in 0..10 {
                    check(&mut a, &format!("hot{t}"));
                }
            }
        }
        assert_eq!(a.in_use(), 3);
        let mut aliased: Vec<_> = a.by_alias.iter().map(|t| t.as_str().to_owned()).collect();
        aliased.sort();
        assert_eq!(aliased, ["hot0", "hot1", "hot2"]);
    }

    #[test]
    fn a_choice_not_confirmed_binds_nothing() {
        let mut a = OutboundAliases::new(1).unwrap();
        let t = ByteStr::from("x");
        a.choose(&t);
        assert_eq!(a.choose(&t), AliasUse::Bind(1));
        // The frame was dropped (too large): the next delivery binds again.
        assert_eq!(a.choose(&t), AliasUse::Bind(1));
        a.bound(&t, 1);
        assert_eq!(a.choose(&t), AliasUse::Known(1));
    }
}
