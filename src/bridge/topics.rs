//! A bridge's topic map: which filters it subscribes to on each side, and how a topic is
//! renamed when a message crosses, exactly as Mosquitto does it.
//!
//! `topic PATTERN DIR QOS LOCAL_PREFIX REMOTE_PREFIX` subscribes to `LOCAL_PREFIX` +
//! `PATTERN` locally (out, both) and `REMOTE_PREFIX` + `PATTERN` remotely (in, both); an
//! empty pattern (`""`) makes the prefixes the whole filters. A message is renamed by the
//! first line of its direction whose filter matches it: its source prefix is removed and
//! the destination prefix put in front. Pure data: no IO, no state.

use crate::codec::QoS;
use crate::config::BridgeTopic;
use crate::topic::matches;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    inbound: bool,
    outbound: bool,
    qos: QoS,
    local_filter: String,
    remote_filter: String,
    local_prefix: String,
    remote_prefix: String,
}

/// The topic lines of one bridge, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicMap {
    entries: Vec<Entry>,
}

/// `prefix` replaced by `to` at the front of `topic` (`topic` is left as is when it does
/// not start with `prefix`, as Mosquitto leaves it).
fn rename(topic: &str, prefix: &str, to: &str) -> String {
    let rest = topic.strip_prefix(prefix).unwrap_or(topic);
    format!("{to}{rest}")
}

impl TopicMap {
    pub fn new(topics: &[BridgeTopic]) -> Self {
        let entries = topics
            .iter()
            .map(|t| {
                let local_prefix = t.local_prefix.clone().unwrap_or_default();
                let remote_prefix = t.remote_prefix.clone().unwrap_or_default();
                Entry {
                    inbound: matches!(t.direction.as_str(), "in" | "both"),
                    outbound: matches!(t.direction.as_str(), "out" | "both"),
                    qos: QoS::from_u8(t.qos).unwrap_or(QoS::AtMostOnce),
                    local_filter: format!("{local_prefix}{}", t.pattern),
                    remote_filter: format!("{remote_prefix}{}", t.pattern),
                    local_prefix,
                    remote_prefix,
                }
            })
            .collect();
        Self { entries }
    }

    /// Local subscriptions (out and both lines): filter and QoS.
    pub fn local_subscriptions(&self) -> impl Iterator<Item = (&str, QoS)> {
        self.entries
            .iter()
            .filter(|e| e.outbound)
            .map(|e| (e.local_filter.as_str(), e.qos))
    }

    /// Remote subscriptions (in and both lines): filter and QoS.
    pub fn remote_subscriptions(&self) -> impl Iterator<Item = (&str, QoS)> {
        self.entries
            .iter()
            .filter(|e| e.inbound)
            .map(|e| (e.remote_filter.as_str(), e.qos))
    }

    /// Remote filters of out-only lines (unsubscribed with `bridge_attempt_unsubscribe`).
    pub fn remote_out_only(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|e| e.outbound && !e.inbound)
            .map(|e| e.remote_filter.as_str())
    }

    /// The remote topic of a local message, if an out line matches it.
    pub fn to_remote(&self, local_topic: &str) -> Option<String> {
        let e = self
            .entries
            .iter()
            .find(|e| e.outbound && matches(&e.local_filter, local_topic))?;
        Some(rename(local_topic, &e.local_prefix, &e.remote_prefix))
    }

    /// The local topic of a remote message, if an in line matches it.
    pub fn to_local(&self, remote_topic: &str) -> Option<String> {
        let e = self
            .entries
            .iter()
            .find(|e| e.inbound && matches(&e.remote_filter, remote_topic))?;
        Some(rename(remote_topic, &e.remote_prefix, &e.local_prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(pattern: &str, dir: &str, qos: u8, l: Option<&str>, r: Option<&str>) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.into(),
            direction: dir.into(),
            qos,
            local_prefix: l.map(Into::into),
            remote_prefix: r.map(Into::into),
        }
    }

    #[test]
    fn prefixes_are_swapped_in_each_direction() {
        let m = TopicMap::new(&[
            topic("sensors/#", "out", 1, Some("edge/"), Some("site1/")),
            topic("cmd/+", "in", 2, Some("local/"), Some("remote/")),
            topic("#", "both", 0, None, None),
        ]);
        let local: Vec<_> = m.local_subscriptions().collect();
        assert_eq!(
            local,
            vec![("edge/sensors/#", QoS::AtLeastOnce), ("#", QoS::AtMostOnce)]
        );
        let remote: Vec<_> = m.remote_subscriptions().collect();
        assert_eq!(
            remote,
            vec![("remote/cmd/+", QoS::ExactlyOnce), ("#", QoS::AtMostOnce)]
        );
        assert_eq!(
            m.to_remote("edge/sensors/t1").as_deref(),
            Some("site1/sensors/t1")
        );
        assert_eq!(m.to_local("remote/cmd/x").as_deref(), Some("local/cmd/x"));
        // The catch-all line maps other topics unchanged.
        assert_eq!(m.to_remote("other").as_deref(), Some("other"));
        assert_eq!(m.to_local("x/y").as_deref(), Some("x/y"));
        assert_eq!(
            m.remote_out_only().collect::<Vec<_>>(),
            vec!["site1/sensors/#"]
        );
    }

    #[test]
    fn empty_pattern_makes_the_prefixes_whole_topics() {
        let m = TopicMap::new(&[topic("", "both", 0, Some("a/local"), Some("b/remote"))]);
        assert_eq!(
            m.local_subscriptions().next(),
            Some(("a/local", QoS::AtMostOnce))
        );
        assert_eq!(
            m.remote_subscriptions().next(),
            Some(("b/remote", QoS::AtMostOnce))
        );
        assert_eq!(m.to_remote("a/local").as_deref(), Some("b/remote"));
        assert_eq!(m.to_local("b/remote").as_deref(), Some("a/local"));
        assert_eq!(m.to_local("a/local"), None, "no line matches");
    }

    #[test]
    fn only_lines_of_the_direction_rename() {
        let m = TopicMap::new(&[topic("t/#", "in", 0, None, None)]);
        assert_eq!(m.to_remote("t/1"), None);
        assert_eq!(m.local_subscriptions().count(), 0);
    }
}
