//! Tests of the trie: unit tests named after the spec, proptests against the naive matcher
//! and against a plain model of (filter, key) -> value.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{Node, TopicIndex};
use crate::topic::{matches, TopicFilter};

fn f(s: &str) -> TopicFilter {
    TopicFilter::parse(s).unwrap()
}

fn matched(idx: &TopicIndex<usize, String>, topic: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    idx.for_each_match(topic, |k, v| out.push((*k, v.clone())));
    out.sort();
    out
}

fn node_count<K, V, S>(n: &Node<K, V, S>) -> usize {
    let mut count = 0;
    let mut stack = vec![n];
    while let Some(n) = stack.pop() {
        count += 1;
        stack.extend(n.children.values());
        if let Some(p) = &n.plus {
            stack.push(p);
        }
    }
    count
}

fn index_of(filters: &[&str]) -> TopicIndex<usize, String> {
    let mut idx = TopicIndex::new();
    for (i, s) in filters.iter().enumerate() {
        idx.insert(&f(s), i, (*s).to_owned());
    }
    idx
}

fn names(idx: &TopicIndex<usize, String>, topic: &str) -> Vec<String> {
    let mut v: Vec<String> = matched(idx, topic).into_iter().map(|(_, s)| s).collect();
    v.sort();
    v
}

#[test]
fn mqtt_4_7_1_2_hash_matches_parent_and_children() {
    let idx = index_of(&["sport/#", "#", "sport/tennis/#"]);
    assert_eq!(names(&idx, "sport"), ["#", "sport/#"]);
    assert_eq!(
        names(&idx, "sport/tennis"),
        ["#", "sport/#", "sport/tennis/#"]
    );
    assert_eq!(
        names(&idx, "sport/tennis/x/y"),
        ["#", "sport/#", "sport/tennis/#"]
    );
    assert_eq!(names(&idx, "sports"), ["#"]);
}

#[test]
fn mqtt_4_7_1_2_plus_matches_one_level_including_empty() {
    let idx = index_of(&["sport/+", "+/+", "+", "/+"]);
    assert_eq!(names(&idx, "sport/"), ["+/+", "sport/+"]);
    assert_eq!(names(&idx, "sport"), ["+"]);
    assert_eq!(names(&idx, "/finance"), ["+/+", "/+"]);
    assert!(names(&idx, "a/b/c").is_empty());
}

#[test]
fn mqtt_4_7_2_1_leading_wildcards_skip_dollar_topics() {
    let idx = index_of(&["#", "+/monitor/Clients", "$SYS/#", "$SYS/monitor/+"]);
    assert_eq!(
        names(&idx, "$SYS/monitor/Clients"),
        ["$SYS/#", "$SYS/monitor/+"]
    );
    assert_eq!(names(&idx, "x/monitor/Clients"), ["#", "+/monitor/Clients"]);
    assert_eq!(names(&idx, "$SYS"), ["$SYS/#"]);
}

#[test]
fn empty_levels_are_levels() {
    let idx = index_of(&["a//b", "a/+/b", "a/b"]);
    assert_eq!(names(&idx, "a//b"), ["a/+/b", "a//b"]);
    assert_eq!(names(&idx, "a/b"), ["a/b"]);
}

#[test]
fn overlapping_filters_report_a_key_twice() {
    let mut idx = TopicIndex::new();
    idx.insert(&f("a/+"), 7usize, 1u8);
    idx.insert(&f("a/#"), 7, 2);
    let mut got = Vec::new();
    idx.for_each_match("a/b", |k, v| got.push((*k, *v)));
    got.sort();
    assert_eq!(got, [(7, 1), (7, 2)]);
    assert_eq!(idx.len(), 2);
}

#[test]
fn mqtt_3_8_4_3_resubscribe_replaces_and_returns_old() {
    let mut idx = TopicIndex::new();
    assert_eq!(idx.insert(&f("a/b"), 1usize, 'x'), None);
    assert_eq!(idx.insert(&f("a/b"), 1, 'y'), Some('x'));
    assert_eq!(idx.len(), 1);
    assert_eq!(idx.get("a/b", &1), Some(&'y'));
    assert_eq!(idx.get("a/b", &2), None);
}

#[test]
fn remove_prunes_empty_nodes() {
    let mut idx = TopicIndex::new();
    idx.insert(&f("a/b/c/d"), 1usize, ());
    idx.insert(&f("a/+/#"), 1, ());
    idx.insert(&f("#"), 2, ());
    assert_eq!(idx.remove("a/b/c/d", &2), None);
    assert_eq!(idx.remove("a/b/c", &1), None);
    assert_eq!(idx.remove("a/b/c/d", &1), Some(()));
    assert_eq!(node_count(&idx.root), 3); // root, a, a/+
    assert_eq!(idx.remove("a/+/#", &1), Some(()));
    assert_eq!(idx.remove("#", &2), Some(()));
    assert_eq!(node_count(&idx.root), 1);
    assert!(idx.root.slots.is_none());
    assert!(idx.is_empty());
}

#[test]
fn remove_keeps_shared_prefix() {
    let mut idx = TopicIndex::new();
    idx.insert(&f("a/b"), 1usize, ());
    idx.insert(&f("a/b/c"), 1, ());
    idx.remove("a/b/c", &1);
    assert_eq!(node_count(&idx.root), 3);
    assert_eq!(idx.get("a/b", &1), Some(&()));
    assert!(idx.has_match("a/b"));
    assert!(!idx.has_match("a/b/c"));
}

#[test]
fn many_keys_on_one_filter_use_the_position_index() {
    let mut idx = TopicIndex::new();
    for k in 0..1000usize {
        idx.insert(&f("hot/topic"), k, k);
    }
    assert_eq!(idx.insert(&f("hot/topic"), 500, 0), Some(500));
    for k in (0..1000usize).step_by(2) {
        assert!(idx.remove("hot/topic", &k).is_some());
    }
    let mut got = Vec::new();
    idx.for_each_match("hot/topic", |k, v| {
        assert!(k == v || *k == 500);
        got.push(*k);
    });
    got.sort_unstable();
    assert_eq!(got, (1..1000).step_by(2).collect::<Vec<_>>());
    for k in (1..1000usize).step_by(2) {
        assert_eq!(idx.remove("hot/topic", &k), Some(k));
    }
    assert!(idx.is_empty());
    assert_eq!(node_count(&idx.root), 1);
}

#[test]
fn deepest_filter_does_not_overflow_the_stack() {
    // The deepest filter the topic layer accepts (its depth limit keeps a 65,535-byte
    // "+/+/..." of 32,768 levels out: refused before it reaches the index); nothing here
    // recurses, so depth is bounded by memory only.
    let levels = crate::topic::MAX_TOPIC_LEVELS;
    assert!(TopicFilter::parse(&["+"; 32_768].join("/")).is_err());
    let deep = vec!["+"; levels].join("/");
    let topic = vec!["x"; levels].join("/");
    let mut idx = TopicIndex::new();
    idx.insert(&f(&deep), 1usize, ());
    idx.insert(&f(&format!("{}/#", &deep[..deep.len() - 2])), 2, ());
    let mut n = 0;
    idx.for_each_match(&topic, |_, _| n += 1);
    assert_eq!(n, 2);
    assert_eq!(idx.remove(&deep, &1), Some(()));
    drop(idx); // iterative drop of the chain
}

#[test]
fn clear_empties() {
    let mut idx = index_of(&["a", "b/#"]);
    idx.clear();
    assert!(idx.is_empty());
    assert!(names(&idx, "a").is_empty());
}

fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![Just("a"), Just("b"), Just(""), Just("$s")],
        1..5,
    )
    .prop_map(|v| v.join("/"))
}

fn filter_strategy() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            prop_oneof![
                Just("a"),
                Just("b"),
                Just(""),
                Just("$s"),
                Just("+"),
                Just("+")
            ],
            0..5,
        ),
        any::<bool>(),
    )
        .prop_map(|(mut v, hash)| {
            if hash || v.is_empty() {
                v.push("#");
            }
            let s = v.join("/");
            // A single empty level is the empty filter, which is invalid.
            if s.is_empty() {
                "+".to_owned()
            } else {
                s
            }
        })
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String, usize, u32),
    Remove(String, usize),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (filter_strategy(), 0..4usize, any::<u32>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
        (filter_strategy(), 0..4usize).prop_map(|(f, k)| Op::Remove(f, k)),
    ]
}

proptest! {
    #[test]
    fn trie_agrees_with_naive_matcher(
        subs in prop::collection::vec((filter_strategy(), 0..4usize), 0..40),
        topics in prop::collection::vec(topic_strategy(), 1..20),
    ) {
        let mut idx = TopicIndex::new();
        let mut model = BTreeMap::new();
        for (filter, key) in &subs {
            idx.insert(&f(filter), *key, filter.clone());
            model.insert((filter.clone(), *key), ());
        }
        prop_assert_eq!(idx.len(), model.len());
        for topic in &topics {
            let mut expected: Vec<(usize, String)> = model
                .keys()
                .filter(|(filter, _)| matches(filter, topic))
                .map(|(filter, key)| (*key, filter.clone()))
                .collect();
            expected.sort();
            prop_assert_eq!(matched(&idx, topic), expected, "topic {}", topic);
        }
    }

    #[test]
    fn insert_remove_agrees_with_model(
        ops in prop::collection::vec(op_strategy(), 0..80),
        topics in prop::collection::vec(topic_strategy(), 1..10),
    ) {
        let mut idx: TopicIndex<usize, u32> = TopicIndex::new();
        let mut model: BTreeMap<(String, usize), u32> = BTreeMap::new();
        for op in &ops {
            match op {
                Op::Insert(filter, key, v) => {
                    let got = idx.insert(&f(filter), *key, *v);
                    prop_assert_eq!(got, model.insert((filter.clone(), *key), *v));
                }
                Op::Remove(filter, key) => {
                    let got = idx.remove(filter, key);
                    prop_assert_eq!(got, model.remove(&(filter.clone(), *key)));
                }
            }
            prop_assert_eq!(idx.len(), model.len());
        }
        for ((filter, key), v) in &model {
            prop_assert_eq!(idx.get(filter, key), Some(v));
        }
        for topic in &topics {
            let mut got = Vec::new();
            idx.for_each_match(topic, |k, v| got.push((*k, *v)));
            got.sort_unstable();
            let mut expected: Vec<(usize, u32)> = model
                .iter()
                .filter(|((filter, _), _)| matches(filter, topic))
                .map(|((_, k), v)| (*k, *v))
                .collect();
            expected.sort_unstable();
            prop_assert_eq!(got, expected);
        }
        // Removing everything prunes the trie back to its root.
        let keys: Vec<(String, usize)> = model.keys().cloned().collect();
        for (filter, key) in keys {
            prop_assert!(idx.remove(&filter, &key).is_some());
        }
        prop_assert!(idx.is_empty());
        prop_assert_eq!(node_count(&idx.root), 1);
        prop_assert!(idx.root.slots.is_none());
    }
}

/// The index hashes levels with the per-process seeded hasher by default (HashDoS), and
/// levels crafted to collide under the unkeyed Fx hash still work as ordinary levels.
#[test]
fn default_level_hasher_is_seeded_and_fx_collisions_are_plain_levels() {
    let mut idx: TopicIndex<usize, String> =
        TopicIndex::<usize, String, crate::hash::SeededState>::default();
    let levels = crate::hash::fx_colliding_levels(300);
    for (i, l) in levels.iter().enumerate() {
        idx.insert(&f(&format!("flood/{l}")), i, l.clone());
    }
    assert_eq!(idx.len(), 300);
    for (i, l) in levels.iter().enumerate().step_by(37) {
        assert_eq!(matched(&idx, &format!("flood/{l}")), [(i, l.clone())]);
    }
    assert!(matched(&idx, "flood/x").is_empty());
}
