//! The naive topic matcher: one filter against one topic, by splitting both on '/'.
//!
//! It is the readable statement of MQTT 4.7 matching and the oracle the trie
//! ([`super::TopicIndex`]) and the retained store are tested against. It never allocates
//! and never panics; it assumes `filter` is syntactically valid (see
//! [`super::TopicFilter`]) and gives no promise for invalid ones.

/// Does `filter` match `topic`?
///
/// - '+' matches exactly one level, which may be empty [MQTT-4.7.1-2];
/// - '#' matches its parent level and any number of child levels ("sport/#" matches
///   "sport") [MQTT-4.7.1-2];
/// - a filter starting with '+' or '#' never matches a topic starting with '$'
///   [MQTT-4.7.2-1];
/// - empty levels are real levels: "a//b" has three levels.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false; // [MQTT-4.7.2-1]
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn mqtt_4_7_1_2_hash_matches_parent_and_children() {
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/tennis"));
        assert!(matches("sport/#", "sport/tennis/player1/ranking"));
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("#", "/"));
        assert!(!matches("sport/#", "sports"));
        assert!(matches("sport/#", "sport/"));
    }

    #[test]
    fn mqtt_4_7_1_2_plus_matches_exactly_one_level() {
        assert!(matches("sport/+", "sport/"));
        assert!(matches("sport/+", "sport/tennis"));
        assert!(!matches("sport/+", "sport"));
        assert!(!matches("sport/+", "sport/tennis/x"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+/tennis/#", "sport/tennis"));
    }

    #[test]
    fn mqtt_4_7_2_1_leading_wildcard_never_matches_dollar_topics() {
        assert!(!matches("#", "$SYS/broker"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS"));
        // Only the first level is special.
        assert!(matches("a/+", "a/$b"));
        assert!(matches("a/#", "a/$b"));
    }

    #[test]
    fn empty_levels_are_levels() {
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a/b", "a//b"));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("/", "/"));
        assert!(!matches("/", "a"));
        assert!(matches("+/", "/"));
    }

    #[test]
    fn exact_match_is_case_and_byte_sensitive() {
        assert!(matches("ACCOUNTS", "ACCOUNTS"));
        assert!(!matches("ACCOUNTS", "Accounts"));
        assert!(!matches("a/b", "a/b/"));
    }
}
