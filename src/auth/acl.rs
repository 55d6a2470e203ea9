//! Mosquitto `acl_file`s: `user NAME`, `topic [read|write|readwrite|deny] FILTER` and
//! `pattern [..] FILTER` (with `%u` / `%c`), rules before the first `user` line applying
//! to anonymous clients. Rules are compiled into one [`TopicIndex`] per user; patterns are
//! substituted once per connection ([`Acl::client`]), and a [`ClientAcl`] caches its
//! decisions per topic so that the publish path does one hash lookup per topic (at most
//! 256 per direction, keys compacted so that the cache never pins a read buffer).
//!
//! Semantics follow Mosquitto 2: a matching `deny` rule wins, then any matching rule that
//! grants the access; nothing matching = denied. A `$`-topic is only matched by rules that
//! themselves start with `$` (so `topic read #` does not grant `$SYS`). A client whose
//! username or client id contains `+`, `#` or `/` gets no access through patterns.
//! It never does I/O except [`Acl::load`], and never panics on any file or topic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::ByteStr;
use crate::topic::{TopicFilter, TopicIndex};

/// Access bits of a rule; a rule with none of them is a `deny` rule.
pub const READ: u8 = 1;
pub const WRITE: u8 = 2;
const DENY: u8 = 0;

/// Entries a [`ClientAcl`] caches per direction before it starts over.
const CACHE_CAPACITY: usize = 256;

/// Why an `acl_file` cannot be used (it stops the start, or a reload keeps the old rules).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// The file cannot be read.
    #[error("cannot read acl_file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// A line is not a valid rule.
    #[error("acl_file {}, line {line}: {reason}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
}

/// The rules of one user (or of anonymous clients), compiled into a topic index.
#[derive(Debug, Default)]
struct RuleSet {
    /// Rule number -> access bits.
    index: TopicIndex<u32, u8>,
    /// The same rules as text, for SUBSCRIBE checks (filter against filter).
    rules: Vec<(String, u8)>,
}

impl RuleSet {
    fn add(&mut self, filter: &TopicFilter, access: u8) {
        let n = u32::try_from(self.rules.len()).unwrap_or(u32::MAX);
        self.index.insert(filter, n, access);
        self.rules.push((filter.as_str().to_owned(), access));
    }

    /// `Some(true)` allowed, `Some(false)` denied by a deny rule, `None` no rule grants.
    fn check(&self, topic: &str, access: u8) -> Option<bool> {
        let (mut deny, mut grant) = (false, false);
        self.index.for_each_match(topic, |_, &a| {
            if a == DENY {
                deny = true;
            } else if a & access != 0 {
                grant = true;
            }
        });
        if deny {
            Some(false)
        } else if grant {
            Some(true)
        } else {
            None
        }
    }
}

/// A parsed and compiled `acl_file`.
#[derive(Debug, Default)]
pub struct Acl {
    anonymous: Arc<RuleSet>,
    users: HashMap<String, Arc<RuleSet>>,
    /// `pattern` rules, unsubstituted.
    patterns: Vec<(String, u8)>,
}

impl Acl {
    pub fn load(path: &Path) -> Result<Self, AclError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses file text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AclError> {
        let mut anonymous = RuleSet::default();
        let mut users: HashMap<String, RuleSet> = HashMap::new();
        let mut patterns = Vec::new();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let err = |reason: String| AclError::Line {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            let line = raw.trim_matches(|c: char| c.is_ascii_whitespace());
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let rest = rest.trim_start_matches([' ', '\t']);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("missing username after `user`".into()));
                    }
                    user = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    // As Mosquitto: one word is the topic (read and write); with more,
                    // the first word is the access type, and an unknown one is an error
                    // (`topic reed sensors/#` must not become the topic "reed sensors/#").
                    let (access, filter) = match rest.split_once([' ', '\t']) {
                        Some((a, f)) => match access_bits(a) {
                            Some(bits) => (bits, f.trim_matches([' ', '\t'])),
                            None => {
                                return Err(err(format!(
                                    "invalid topic access type \"{a}\" (expected read, write, \
                                     readwrite or deny)"
                                )))
                            }
                        },
                        None => (READ | WRITE, rest),
                    };
                    if filter.is_empty() {
                        return Err(err(format!("empty topic in `{keyword}` line")));
                    }
                    let parsed = TopicFilter::parse(filter)
                        .map_err(|e| err(format!("invalid topic filter {filter:?}: {e}")))?;
                    if keyword == "pattern" {
                        patterns.push((filter.to_owned(), access));
                    } else {
                        match &user {
                            None => anonymous.add(&parsed, access),
                            Some(u) => users.entry(u.clone()).or_default().add(&parsed, access),
                        }
                    }
                }
                other => return Err(err(format!("unknown keyword `{other}`"))),
            }
        }
        Ok(Self {
            anonymous: Arc::new(anonymous),
            users: users.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
            patterns,
        })
    }

    /// The rules in force for one connection: its user's (or the anonymous) rules and the
    /// patterns with `%u` / `%c` substituted.
    pub fn client(&self, username: Option<&str>, client_id: &str) -> ClientAcl {
        let rules = match username {
            None => Some(Arc::clone(&self.anonymous)),
            Some(u) => self.users.get(u).cloned(),
        };
        let dangerous = |s: &str| s.contains(['+', '#', '/']);
        let mut patterns = Vec::new();
        if !username.is_some_and(&dangerous) && !dangerous(client_id) {
            for (p, access) in &self.patterns {
                if p.contains("%u") && username.is_none() {
                    continue;
                }
                let s = p
                    .replace("%c", client_id)
                    .replace("%u", username.unwrap_or_default());
                if TopicFilter::parse(&s).is_ok() {
                    patterns.push((s, *access));
                }
            }
        } else if !self.patterns.is_empty() {
            crate::log_notice!(
                "ACL denying pattern access to client with dangerous username or client id \
                 \"{client_id}\"."
            );
        }
        ClientAcl {
            rules,
            patterns,
            read_cache: crate::hash::Map::default(),
            write_cache: crate::hash::Map::default(),
        }
    }
}

fn access_bits(s: &str) -> Option<u8> {
    match s {
        "read" => Some(READ),
        "write" => Some(WRITE),
        "readwrite" => Some(READ | WRITE),
        "deny" => Some(DENY),
        _ => None,
    }
}

/// One connection's ACL with a per-topic decision cache. Rebuilt (cache and all) when the
/// rules are reloaded.
#[derive(Debug)]
pub struct ClientAcl {
    rules: Option<Arc<RuleSet>>,
    patterns: Vec<(String, u8)>,
    /// Keyed by client-chosen topics: seeded hashing (HashDoS).
    read_cache: crate::hash::Map<ByteStr, bool>,
    write_cache: crate::hash::Map<ByteStr, bool>,
}

impl ClientAcl {
    /// May this client receive a message published to `topic`?
    pub fn may_read(&mut self, topic: &ByteStr) -> bool {
        self.cached(topic, READ)
    }

    /// May this client publish to `topic`?
    pub fn may_write(&mut self, topic: &ByteStr) -> bool {
        self.cached(topic, WRITE)
    }

    fn cached(&mut self, topic: &ByteStr, access: u8) -> bool {
        let cache = if access == READ {
            &self.read_cache
        } else {
            &self.write_cache
        };
        if let Some(&d) = cache.get(topic) {
            return d;
        }
        let d = self.check(topic.as_str(), access);
        let cache = if access == READ {
            &mut self.read_cache
        } else {
            &mut self.write_cache
        };
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        // Kept across loop iterations: a compact key, not a slice of the read buffer.
        cache.insert(topic.compact(), d);
        d
    }

    /// The uncached decision for a topic name.
    pub fn check(&self, topic: &str, access: u8) -> bool {
        let user = self.rules.as_ref().and_then(|r| r.check(topic, access));
        if user == Some(false) {
            return false;
        }
        let system = topic.starts_with('$');
        let mut grant = user == Some(true);
        for (p, a) in &self.patterns {
            if system && !p.starts_with('$') {
                continue;
            }
            if crate::topic::matches(p, topic) {
                if *a == DENY {
                    return false;
                }
                grant |= a & access != 0;
            }
        }
        grant
    }

    /// May this client subscribe to `filter`? Denied when a `deny` rule covers every
    /// topic the filter matches, or when no rule grants read on any of them. Messages of
    /// a granted wildcard subscription are still checked one by one ([`Self::may_read`]).
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let rules = self.rules.iter().flat_map(|r| r.rules.iter());
        let all = rules.chain(self.patterns.iter());
        let mut grant = false;
        for (rule, access) in all {
            if filter.starts_with('$') != rule.starts_with('$')
                && (filter.starts_with(['+', '#']) || rule.starts_with(['+', '#']))
            {
                continue;
            }
            if *access == DENY {
                if covers(rule, filter) {
                    return false;
                }
            } else if access & READ != 0 && intersects(rule, filter) {
                grant = true;
            }
        }
        grant
    }
}

/// Every topic matched by `inner` is matched by `outer`.
fn covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            _ => return false,
        }
    }
}

/// Some topic is matched by both filters.
fn intersects(a: &str, b: &str) -> bool {
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(p), Some(q)) if p == "+" || q == "+" || p == q => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous
topic read public/#
topic read $SYS/broker/uptime

user alice
topic readwrite sensors/#
topic deny sensors/secret/#
topic write cmd/+/set
topic read  spaced topic/x

user bob
topic sensors/bob

pattern readwrite users/%u/#
pattern write clients/%c
pattern deny users/%u/locked
";

    fn acl() -> Acl {
        Acl::parse(FILE, Path::new("acl")).unwrap()
    }

    fn t(s: &str) -> ByteStr {
        ByteStr::from(s)
    }

    #[test]
    fn anonymous_rules_come_before_the_first_user() {
        let mut a = acl().client(None, "c1");
        assert!(a.may_read(&t("public/a/b")));
        assert!(!a.may_write(&t("public/a")));
        assert!(!a.may_read(&t("sensors/x")));
        assert!(a.may_read(&t("$SYS/broker/uptime")));
        assert!(!a.may_read(&t("$SYS/broker/clients")));
        // %u patterns do not apply without a username; %c ones do.
        assert!(a.may_write(&t("clients/c1")));
        assert!(!a.may_write(&t("clients/c2")));
    }

    #[test]
    fn cached_topics_do_not_pin_the_read_buffer() {
        let mut a = acl().client(Some("alice"), "c");
        // The topic as the codec hands it over: a slice of a 64 KiB read buffer.
        let mut read = vec![0u8; 64 * 1024];
        read[..12].copy_from_slice(b"sensors/temp");
        let read = bytes::Bytes::from(read);
        let topic = ByteStr::try_from_bytes(read.slice(0..12)).unwrap();
        assert!(a.may_read(&topic));
        drop(topic);
        assert!(
            read.is_unique(),
            "the decision cache keeps the read buffer alive"
        );
        assert!(a.may_read(&t("sensors/temp")));
    }

    #[test]
    fn deny_wins_over_grants() {
        let mut a = acl().client(Some("alice"), "c");
        assert!(a.may_read(&t("sensors/temp")));
        assert!(a.may_write(&t("sensors/temp")));
        assert!(!a.may_read(&t("sensors/secret/key")));
        assert!(!a.may_write(&t("sensors/secret")));
        assert!(a.may_write(&t("cmd/lamp/set")));
        assert!(!a.may_read(&t("cmd/lamp/set")));
        assert!(a.may_read(&t("spaced topic/x")));
        assert!(a.may_read(&t("users/alice/inbox")));
        assert!(!a.may_read(&t("users/alice/locked")));
        assert!(!a.may_read(&t("users/bob/inbox")));
        // Cached answers stay the same.
        assert!(!a.may_read(&t("sensors/secret/key")));
        assert!(a.may_read(&t("sensors/temp")));
    }

    #[test]
    fn unknown_user_has_only_patterns() {
        let a = acl().client(Some("carol"), "c");
        assert!(!a.check("public/x", READ));
        assert!(a.check("users/carol/x", READ | WRITE));
        let b = acl().client(Some("bob"), "c");
        assert!(b.check("sensors/bob", READ) && b.check("sensors/bob", WRITE));
    }

    #[test]
    fn dollar_topics_need_dollar_rules() {
        let acl = Acl::parse("user root\ntopic #\n", Path::new("acl")).unwrap();
        let a = acl.client(Some("root"), "c");
        assert!(a.check("a/b", READ));
        assert!(!a.check("$SYS/broker/uptime", READ));
        assert!(!a.may_subscribe("$SYS/#"));
        assert!(a.may_subscribe("#"));
    }

    #[test]
    fn dangerous_ids_get_no_pattern_access() {
        let a = acl().client(Some("a/b"), "c");
        assert!(!a.check("users/a/b/x", READ));
        let a = acl().client(Some("x"), "+");
        assert!(!a.check("clients/+", WRITE));
        assert!(!a.check("users/x/y", READ));
    }

    #[test]
    fn subscribe_checks() {
        let a = acl().client(Some("alice"), "c");
        assert!(a.may_subscribe("sensors/#"));
        assert!(a.may_subscribe("#")); // spans granted topics; messages filtered
        assert!(a.may_subscribe("sensors/+/x"));
        assert!(!a.may_subscribe("sensors/secret/#"));
        assert!(!a.may_subscribe("sensors/secret/+"));
        assert!(!a.may_subscribe("cmd/+/set")); // write only
        assert!(!a.may_subscribe("other/#"));
        assert!(covers("a/#", "a/b/+") && !covers("a/+", "a/#") && !covers("a/b", "a/+"));
        assert!(intersects("a/+/c", "a/#") && !intersects("a/b", "a/c"));
    }

    #[test]
    fn bad_lines_are_errors() {
        for bad in [
            "user\n",
            "topic\n",
            "topic read a/#/b\n",
            "frobnicate x\n",
            "topic reed sensors/#\n",
            "pattern rw clients/%c\n",
        ] {
            let e = Acl::parse(bad, Path::new("/etc/acl"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("/etc/acl") && e.contains("line 1"), "{bad}: {e}");
        }
    }

    /// Mosquitto refuses an unknown access type; it must not become part of the topic.
    #[test]
    fn unknown_access_type_is_an_error_with_file_and_line() {
        let e = Acl::parse(
            "user a\ntopic read x\ntopic reed sensors/#\n",
            Path::new("/etc/acl"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3") && e.contains("\"reed\""), "{e}");
        // One word is still a topic with read and write access.
        let acl = Acl::parse("topic sensors/#\n", Path::new("/etc/acl")).unwrap();
        let a = acl.client(None, "c");
        assert!(a.check("sensors/x", READ) && a.check("sensors/x", WRITE));
    }
}
