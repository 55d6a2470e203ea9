//! Validated topic names, topic filters and shared-subscription filters.
//!
//! These newtypes own the syntax rules of MQTT 4.7 and 4.8.2. They are built from the wire
//! (zero-copy from a [`ByteStr`]) and from config / ACL files (from `&str`), so they check
//! everything themselves and never trust the codec. They never allocate on the zero-copy
//! path and never panic on any input.

use crate::codec::ByteStr;

/// Longest topic name or filter the encoding allows [MQTT-4.7.3-3] (a UTF-8 string is
/// prefixed by a two-byte length).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Most levels a topic name or filter may have (Mosquitto's limit; see
/// [`crate::codec::wire::MAX_TOPIC_LEVELS`], which the decoder enforces on the wire).
pub const MAX_TOPIC_LEVELS: usize = crate::codec::wire::MAX_TOPIC_LEVELS;

/// Why a string is not a valid topic name or filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic is empty [MQTT-4.7.3-1].
    #[error("topic is empty")]
    Empty,
    /// The topic is longer than 65,535 bytes [MQTT-4.7.3-3].
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    /// The topic has more levels than the broker accepts (Mosquitto's limit).
    #[error("topic has more than {} levels", MAX_TOPIC_LEVELS)]
    TooDeep,
    /// The topic contains U+0000 [MQTT-4.7.3-2].
    #[error("topic contains U+0000")]
    Nul,
    /// A topic name (not a filter) contains '+' or '#' [MQTT-3.3.2-2].
    #[error("topic name contains a wildcard ('+' or '#')")]
    WildcardInName,
    /// A filter has '#' other than as its whole last level [MQTT-4.7.1-1].
    #[error("'#' is not the whole last level of the filter")]
    MultiLevelMisplaced,
    /// A filter has '+' other than as a whole level [MQTT-4.7.1-2].
    #[error("'+' is not a whole level of the filter")]
    SingleLevelMisplaced,
    /// A `$share/` filter's share name is empty or has '/', '+' or '#'
    /// [MQTT-4.8.2-1] [MQTT-4.8.2-2].
    #[error("shared subscription has an empty or invalid share name")]
    InvalidShareName,
    /// A `$share/NAME/` filter has no topic filter after the share name [MQTT-4.8.2-2].
    #[error("shared subscription has no topic filter")]
    MissingSharedFilter,
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty); // [MQTT-4.7.3-1]
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong); // [MQTT-4.7.3-3]
    }
    if s.as_bytes().contains(&0) {
        return Err(TopicError::Nul); // [MQTT-4.7.3-2]
    }
    if crate::codec::wire::is_too_deep(s.as_bytes()) {
        return Err(TopicError::TooDeep);
    }
    Ok(())
}

fn check_name(s: &str) -> Result<(), TopicError> {
    check_common(s)?;
    if s.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName); // [MQTT-3.3.2-2]
    }
    Ok(())
}

fn check_filter(s: &str) -> Result<(), TopicError> {
    check_common(s)?;
    let mut levels = s.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return Err(TopicError::MultiLevelMisplaced); // [MQTT-4.7.1-1]
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::SingleLevelMisplaced); // [MQTT-4.7.1-2]
        }
    }
    Ok(())
}

/// A validated topic string over a [`ByteStr`]: the shared part of [`TopicName`] and
/// [`TopicFilter`], which differ only in their rules (`$check`) and a few methods.
macro_rules! validated_topic {
    ($(#[$doc:meta])* $name:ident, $check:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(ByteStr);

        impl $name {
            /// Validates and copies `s`.
            pub fn parse(s: &str) -> Result<Self, TopicError> {
                $check(s)?;
                Ok(Self(ByteStr::from(s)))
            }

            /// The topic as text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }

            /// The levels between '/' separators; empty levels count ("a//b" has three).
            pub fn levels(&self) -> std::str::Split<'_, char> {
                self.0.as_str().split('/')
            }
        }

        impl TryFrom<ByteStr> for $name {
            type Error = TopicError;
            /// Zero-copy: keeps the `ByteStr` (typically a slice of the read buffer).
            fn try_from(s: ByteStr) -> Result<Self, TopicError> {
                $check(s.as_str())?;
                Ok(Self(s))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = TopicError;
            fn try_from(s: &str) -> Result<Self, TopicError> {
                Self::parse(s)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(self.as_str(), f)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

validated_topic!(
    /// A topic name as a PUBLISH carries it: non-empty, no wildcard.
    TopicName,
    check_name
);

validated_topic!(
    /// A topic filter as a SUBSCRIBE, UNSUBSCRIBE or ACL rule carries it: non-empty, '#'
    /// only as the whole last level, '+' only as a whole level.
    TopicFilter,
    check_filter
);

impl TopicName {
    /// Topics beginning with '$' are server topics: a filter starting with a wildcard
    /// never matches them [MQTT-4.7.2-1].
    pub fn is_system(&self) -> bool {
        self.0.as_str().starts_with('$')
    }
}

impl TopicFilter {
    /// True when the filter contains '+' or '#'.
    pub fn is_wildcard(&self) -> bool {
        self.0.as_str().bytes().any(|b| b == b'+' || b == b'#')
    }
}

/// The prefix that marks a shared subscription (MQTT 5, 4.8.2).
pub const SHARE_PREFIX: &str = "$share/";

/// A shared subscription `$share/{ShareName}/{filter}` (MQTT 5, 4.8.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedFilter {
    pub group: ByteStr,
    pub filter: TopicFilter,
}

impl SharedFilter {
    /// True when `s` claims to be a shared subscription (starts with `$share/`). When this
    /// is true but [`SharedFilter::parse`] returns `None`, the filter is invalid and the
    /// SUBSCRIBE must be refused, not treated as an ordinary filter.
    pub fn is_shared(s: &str) -> bool {
        s.starts_with(SHARE_PREFIX)
    }

    /// `Some((group, filter))` for a valid `$share/group/filter`; `None` when `s` is not
    /// a shared subscription or is an invalid one (see [`SharedFilter::try_parse`]).
    pub fn parse(s: &str) -> Option<(ByteStr, TopicFilter)> {
        match Self::try_parse(s) {
            Ok(Some(sf)) => Some((sf.group, sf.filter)),
            _ => None,
        }
    }

    /// `Ok(None)` when `s` is not a shared subscription, `Err` when it is one but breaks
    /// the rules, `Ok(Some(..))` otherwise.
    pub fn try_parse(s: &str) -> Result<Option<Self>, TopicError> {
        let Some(rest) = s.strip_prefix(SHARE_PREFIX) else {
            return Ok(None);
        };
        let Some((group, filter)) = rest.split_once('/') else {
            // "$share/group" with no filter. A '/' inside the group is impossible: the
            // first '/' ends it [MQTT-4.8.2-2].
            return Err(if rest.is_empty() || rest.contains(['+', '#']) {
                TopicError::InvalidShareName
            } else {
                TopicError::MissingSharedFilter
            });
        };
        if group.is_empty() || group.contains(['+', '#']) || group.contains('\0') {
            return Err(TopicError::InvalidShareName); // [MQTT-4.8.2-1] [MQTT-4.8.2-2]
        }
        if filter.is_empty() {
            return Err(TopicError::MissingSharedFilter);
        }
        let filter = TopicFilter::parse(filter)?;
        Ok(Some(Self {
            group: ByteStr::from(group),
            filter,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_4_7_3_1_empty_name_and_filter_rejected() {
        assert_eq!(TopicName::parse(""), Err(TopicError::Empty));
        assert_eq!(TopicFilter::parse(""), Err(TopicError::Empty));
    }

    #[test]
    fn mqtt_3_3_2_2_wildcard_in_name_rejected() {
        assert_eq!(TopicName::parse("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::parse("#"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::parse("a#b"), Err(TopicError::WildcardInName));
        assert!(TopicName::parse("a//b").is_ok());
        assert!(TopicName::parse("/").is_ok());
        assert!(TopicName::parse("$SYS/x").is_ok());
    }

    #[test]
    fn mqtt_4_7_1_1_hash_only_as_whole_last_level() {
        for ok in ["#", "a/#", "/#", "a//#", "+/#"] {
            assert!(TopicFilter::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["a#", "a/#/b", "#/", "##", "a/b#", "#/a"] {
            assert_eq!(
                TopicFilter::parse(bad),
                Err(TopicError::MultiLevelMisplaced),
                "{bad}"
            );
        }
    }

    #[test]
    fn mqtt_4_7_1_2_plus_only_as_whole_level() {
        for ok in ["+", "+/+", "/+", "a/+/b", "+/"] {
            assert!(TopicFilter::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["a+", "+a/b", "a/b+/c", "++"] {
            assert_eq!(
                TopicFilter::parse(bad),
                Err(TopicError::SingleLevelMisplaced),
                "{bad}"
            );
        }
    }

    #[test]
    fn mqtt_4_7_3_2_nul_rejected() {
        assert_eq!(TopicName::parse("a\0b"), Err(TopicError::Nul));
        assert_eq!(TopicFilter::parse("a\0"), Err(TopicError::Nul));
    }

    #[test]
    fn mqtt_4_7_3_3_too_long_rejected() {
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(TopicName::parse(&long), Err(TopicError::TooLong));
        assert!(TopicName::parse(&long[1..]).is_ok());
    }

    /// Config files, ACL rules and the embedding API get the wire's depth limit too.
    #[test]
    fn more_than_max_levels_rejected() {
        let ok = "a/".repeat(MAX_TOPIC_LEVELS - 1) + "a";
        let deep = "a/".repeat(MAX_TOPIC_LEVELS) + "a";
        assert!(TopicName::parse(&ok).is_ok() && TopicFilter::parse(&ok).is_ok());
        assert_eq!(TopicName::parse(&deep), Err(TopicError::TooDeep));
        assert_eq!(TopicFilter::parse(&deep), Err(TopicError::TooDeep));
        assert_eq!(
            TopicFilter::parse(&"/".repeat(65_535)),
            Err(TopicError::TooDeep)
        );
    }

    #[test]
    fn try_from_byte_str_is_zero_copy() {
        let b = ByteStr::from("a/b/c");
        let ptr = b.as_bytes().as_ptr();
        let t = TopicName::try_from(b).unwrap();
        assert_eq!(t.as_str().as_ptr(), ptr);
        assert_eq!(t.levels().collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn filter_is_wildcard_and_levels() {
        assert!(TopicFilter::parse("a/+").unwrap().is_wildcard());
        assert!(TopicFilter::parse("#").unwrap().is_wildcard());
        assert!(!TopicFilter::parse("a/b").unwrap().is_wildcard());
        let f = TopicFilter::parse("a//#").unwrap();
        assert_eq!(f.levels().collect::<Vec<_>>(), ["a", "", "#"]);
    }

    #[test]
    fn shared_filter_parses_group_and_filter() {
        let (g, f) = SharedFilter::parse("$share/g1/a/+/#").unwrap();
        assert_eq!(g.as_str(), "g1");
        assert_eq!(f.as_str(), "a/+/#");
        let (_, f) = SharedFilter::parse("$share/g/$SYS/x").unwrap();
        assert_eq!(f.as_str(), "$SYS/x");
        assert_eq!(SharedFilter::try_parse("a/b"), Ok(None));
        assert_eq!(SharedFilter::try_parse("$sharex/g/a"), Ok(None));
        assert!(!SharedFilter::is_shared("$share"));
    }

    #[test]
    fn mqtt_4_8_2_1_share_name_non_empty() {
        assert_eq!(
            SharedFilter::try_parse("$share//a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            SharedFilter::try_parse("$share/"),
            Err(TopicError::InvalidShareName)
        );
        assert!(SharedFilter::parse("$share//a").is_none());
    }

    #[test]
    fn mqtt_4_8_2_2_share_name_has_no_wildcards() {
        for bad in ["$share/g+/a", "$share/#/a", "$share/+/a", "$share/g#"] {
            assert_eq!(
                SharedFilter::try_parse(bad),
                Err(TopicError::InvalidShareName),
                "{bad}"
            );
        }
    }

    #[test]
    fn shared_filter_needs_a_valid_filter() {
        assert_eq!(
            SharedFilter::try_parse("$share/g"),
            Err(TopicError::MissingSharedFilter)
        );
        assert_eq!(
            SharedFilter::try_parse("$share/g/"),
            Err(TopicError::MissingSharedFilter)
        );
        assert_eq!(
            SharedFilter::try_parse("$share/g/a/#/b"),
            Err(TopicError::MultiLevelMisplaced)
        );
    }
}
