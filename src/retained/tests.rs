//! Tests of the retained store: spec statements, and proptests against a plain map and
//! the naive matcher.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::{Node, RetainedCursor, RetainedMessage, RetainedStore};
use crate::codec::{ByteStr, Properties, QoS};
use crate::topic::{matches, TopicFilter};

fn msg(topic: &str, payload: &str) -> RetainedMessage {
    RetainedMessage {
        topic: ByteStr::from(topic),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        properties: Properties::default(),
        source: None,
        expires_at: None,
    }
}

fn f(s: &str) -> TopicFilter {
    TopicFilter::parse(s).unwrap()
}

fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
    let mut v = Vec::new();
    store.for_each_match(&f(filter), |m| v.push(m.topic.to_string()));
    v.sort();
    v
}

fn node_count(n: &Node) -> usize {
    let mut count = 0;
    let mut stack = vec![n];
    while let Some(n) = stack.pop() {
        count += 1;
        stack.extend(n.children.values());
    }
    count
}

#[test]
fn set_get_replace() {
    let mut s = RetainedStore::new();
    assert!(s.set(msg("a/b", "1")).is_none());
    let old = s.set(msg("a/b", "22")).unwrap();
    assert_eq!(old.payload, "1");
    assert_eq!(s.get("a/b").unwrap().payload, "22");
    assert_eq!(s.len(), 1);
    assert_eq!(s.payload_bytes(), 2);
    assert!(s.get("a").is_none());
    assert!(s.get("a/b/c").is_none());
}

#[test]
fn mqtt_3_3_1_10_empty_payload_deletes_retained() {
    let mut s = RetainedStore::new();
    s.set(msg("a/b/c", "x"));
    s.set(msg("a", "y"));
    assert_eq!(s.set(msg("a/b/c", "")).unwrap().payload, "x");
    assert!(s.get("a/b/c").is_none());
    assert_eq!(s.len(), 1);
    assert_eq!(node_count(&s.root), 2); // root, a
    assert_eq!(s.payload_bytes(), 1);
}

#[test]
fn mqtt_3_3_1_11_empty_payload_is_not_stored() {
    let mut s = RetainedStore::new();
    assert!(s.set(msg("a/b", "")).is_none());
    assert!(s.is_empty());
    assert!(s.get("a/b").is_none());
    assert_eq!(node_count(&s.root), 1);
}

#[test]
fn invalid_topic_is_ignored() {
    let mut s = RetainedStore::new();
    s.set(msg("a/+", "x"));
    s.set(msg("", "x"));
    assert!(s.is_empty());
}

#[test]
fn mqtt_4_7_1_2_hash_matches_parent() {
    let mut s = RetainedStore::new();
    for t in [
        "sport",
        "sport/tennis",
        "sport/tennis/p1",
        "sports",
        "sport/",
    ] {
        s.set(msg(t, "x"));
    }
    assert_eq!(
        topics(&s, "sport/#"),
        ["sport", "sport/", "sport/tennis", "sport/tennis/p1"]
    );
    assert_eq!(topics(&s, "sport/+"), ["sport/", "sport/tennis"]);
    assert_eq!(topics(&s, "+"), ["sport", "sports"]);
}

#[test]
fn mqtt_4_7_2_1_wildcards_skip_dollar_topics() {
    let mut s = RetainedStore::new();
    for t in ["$SYS/uptime", "$SYS", "a/$b", "a"] {
        s.set(msg(t, "x"));
    }
    assert_eq!(topics(&s, "#"), ["a", "a/$b"]);
    assert_eq!(topics(&s, "+"), ["a"]);
    assert_eq!(topics(&s, "+/+"), ["a/$b"]);
    assert_eq!(topics(&s, "$SYS/#"), ["$SYS", "$SYS/uptime"]);
    assert_eq!(topics(&s, "$SYS/+"), ["$SYS/uptime"]);
}

fn names(out: &[Arc<RetainedMessage>]) -> Vec<String> {
    out.iter().map(|m| m.topic.to_string()).collect()
}

/// Topics in the order a walk hands them out: level by level, each in key order.
fn walk_order(v: &mut [String]) {
    v.sort_by(|a, b| a.split('/').cmp(b.split('/')));
}

#[test]
fn budgeted_hands_out_in_chunks_in_order_and_skips_deleted() {
    let mut s = RetainedStore::new();
    for i in 0..10 {
        s.set(msg(&format!("t/{i}"), "x"));
    }
    let filter = f("t/+");
    let mut cursor = RetainedCursor::default();
    let mut out = Vec::new();
    assert!(!s.matches_budgeted(&filter, &mut cursor, 3, 100, &mut out));
    assert_eq!(names(&out), ["t/0", "t/1", "t/2"]);
    // Delete two not yet handed out, replace one, delete one handed out already.
    s.set(msg("t/5", ""));
    s.set(msg("t/6", ""));
    s.set(msg("t/7", "new"));
    s.set(msg("t/1", ""));
    while !s.matches_budgeted(&filter, &mut cursor, 3, 100, &mut out) {}
    assert_eq!(
        names(&out),
        ["t/0", "t/1", "t/2", "t/3", "t/4", "t/7", "t/8", "t/9"]
    );
    assert_eq!(out[5].payload, "new");
    // Done stays done.
    assert!(s.matches_budgeted(&filter, &mut cursor, 3, 100, &mut out));
    assert_eq!(out.len(), 8);
}

#[test]
fn budgeted_walk_survives_the_deletion_of_its_path() {
    let mut s = RetainedStore::new();
    for t in ["a/1/x", "a/1/y", "a/2/x", "b/1"] {
        s.set(msg(t, "v"));
    }
    let mut cursor = RetainedCursor::default();
    let mut out = Vec::new();
    assert!(!s.matches_budgeted(&f("#"), &mut cursor, 1, 100, &mut out));
    assert_eq!(names(&out), ["a/1/x"]);
    // The walk stands inside a/1: remove the whole branch.
    s.set(msg("a/1/x", ""));
    s.set(msg("a/1/y", ""));
    while !s.matches_budgeted(&f("#"), &mut cursor, 1, 100, &mut out) {}
    assert_eq!(names(&out), ["a/1/x", "a/2/x", "b/1"]);
}

#[test]
fn budgeted_visits_bound_a_filter_that_matches_nothing() {
    let mut s = RetainedStore::new();
    for i in 0..1000 {
        s.set(msg(&format!("t/{i}/y"), "x"));
    }
    let mut cursor = RetainedCursor::default();
    let mut out = Vec::new();
    let mut calls = 0;
    while !s.matches_budgeted(&f("t/+/none"), &mut cursor, 100, 10, &mut out) {
        assert!(cursor.visited() <= 10);
        calls += 1;
    }
    assert!(out.is_empty());
    assert!(calls >= 100, "1000 nodes in {calls} calls of 10 visits");
}

#[test]
fn budgeted_max_zero_still_progresses() {
    let mut s = RetainedStore::new();
    s.set(msg("a", "x"));
    let mut cursor = RetainedCursor::default();
    let mut out = Vec::new();
    while !s.matches_budgeted(&f("#"), &mut cursor, 0, 0, &mut out) {}
    assert_eq!(out.len(), 1);
}

#[test]
fn deep_topic_does_not_overflow_the_stack() {
    // The deepest topic accepted; a deeper one (here 32,768 levels) is not stored.
    let deep = vec!["x"; crate::topic::MAX_TOPIC_LEVELS].join("/");
    let mut s = RetainedStore::new();
    s.set(msg(&deep, "x"));
    s.set(msg(&["x"; 32_768].join("/"), "x"));
    assert_eq!(topics(&s, "#").len(), 1);
    assert!(s.get(&deep).is_some());
    s.set(msg(&deep, "y"));
    drop(s);
}

#[test]
fn fan_out_shares_the_payload() {
    let mut s = RetainedStore::new();
    s.set(msg("a", "payload"));
    let mut v: Vec<Arc<RetainedMessage>> = Vec::new();
    s.for_each_match(&f("#"), |m| v.push(Arc::clone(m)));
    s.for_each_match(&f("a"), |m| v.push(Arc::clone(m)));
    assert!(Arc::ptr_eq(&v[0], &v[1]));
}

fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![Just("a"), Just("b"), Just(""), Just("$s")],
        1..5,
    )
    .prop_map(|v| v.join("/"))
    .prop_map(|s| if s.is_empty() { "a".to_owned() } else { s })
}

fn filter_strategy() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just(""), Just("$s"), Just("+")],
            0..5,
        ),
        any::<bool>(),
    )
        .prop_map(|(mut v, hash)| {
            if hash || v.is_empty() {
                v.push("#");
            }
            let s = v.join("/");
            if s.is_empty() {
                "+".to_owned()
            } else {
                s
            }
        })
}

proptest! {
    #[test]
    fn store_agrees_with_map_and_naive_matcher(
        ops in prop::collection::vec((topic_strategy(), prop_oneof![Just(""), Just("p"), Just("qq")]), 0..60),
        filters in prop::collection::vec(filter_strategy(), 1..10),
        max in 1..4usize,
        visits in 1..6usize,
    ) {
        let mut store = RetainedStore::new();
        let mut model: HashMap<String, String> = HashMap::new();
        for (topic, payload) in &ops {
            let old = store.set(msg(topic, payload));
            let expected_old = if payload.is_empty() {
                model.remove(topic)
            } else {
                model.insert(topic.clone(), (*payload).to_owned())
            };
            prop_assert_eq!(old.map(|m| String::from_utf8(m.payload.to_vec()).unwrap()), expected_old);
            prop_assert_eq!(store.len(), model.len());
        }
        prop_assert_eq!(store.payload_bytes(), model.values().map(String::len).sum::<usize>());
        for (t, p) in &model {
            prop_assert_eq!(&store.get(t).unwrap().payload[..], p.as_bytes());
        }
        for filter in &filters {
            let mut expected: Vec<String> =
                model.keys().filter(|t| matches(filter, t)).cloned().collect();
            expected.sort();
            prop_assert_eq!(topics(&store, filter), expected.clone(), "filter {}", filter);
            let mut cursor = RetainedCursor::default();
            let mut out = Vec::new();
            let mut calls = 0;
            while !store.matches_budgeted(&f(filter), &mut cursor, max, visits, &mut out) {
                calls += 1;
                prop_assert!(out.len() <= calls * max);
                prop_assert!(cursor.visited() <= visits);
            }
            // Every match once, in walk order.
            walk_order(&mut expected);
            prop_assert_eq!(names(&out), expected);
        }
        let keys: Vec<String> = model.keys().cloned().collect();
        for t in keys {
            prop_assert!(store.remove(&t).is_some());
        }
        prop_assert!(store.is_empty());
        prop_assert_eq!(node_count(&store.root), 1);
    }
}

proptest! {
    /// A walk interrupted by sets and deletes hands out each topic at most once, every
    /// topic that stayed put exactly once, and nothing that was gone when it got there.
    #[test]
    fn budgeted_walk_under_changes_hands_out_what_stayed(
        initial in prop::collection::btree_set(topic_strategy(), 0..30),
        changes in prop::collection::vec((topic_strategy(), any::<bool>()), 0..40),
        filter in filter_strategy(),
        max in 1..3usize,
        visits in 1..4usize,
    ) {
        let mut store = RetainedStore::new();
        for t in &initial {
            store.set(msg(t, "v"));
        }
        let mut cursor = RetainedCursor::default();
        let mut out = Vec::new();
        let mut touched = BTreeSet::new();
        let mut changes = changes.into_iter();
        while !store.matches_budgeted(&f(&filter), &mut cursor, max, visits, &mut out) {
            if let Some((topic, set)) = changes.next() {
                let before = out.len();
                store.set(msg(&topic, if set { "w" } else { "" }));
                touched.insert(topic);
                prop_assert_eq!(out.len(), before);
            }
        }
        let got = names(&out);
        let unique: BTreeSet<_> = got.iter().cloned().collect();
        prop_assert_eq!(unique.len(), got.len(), "a topic handed out twice");
        for t in &got {
            prop_assert!(matches(&filter, t));
        }
        for t in initial.iter().filter(|t| !touched.contains(*t) && matches(&filter, t)) {
            prop_assert!(unique.contains(t), "{} stayed put and was not handed out", t);
        }
    }
}
