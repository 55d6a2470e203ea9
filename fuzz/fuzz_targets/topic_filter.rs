//! Topic names and filters: parsing never panics, and the trie index agrees with the
//! naive matcher (the oracle) on whether a filter matches a topic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardmq::internals::topic::{matches, TopicFilter, TopicIndex, TopicName};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    // "filter\ntopic": both halves from the input.
    let (f, t) = s.split_once('\n').unwrap_or((s, s));
    let filter = TopicFilter::parse(f);
    let topic = TopicName::parse(t);
    if let (Ok(filter), Ok(topic)) = (filter, topic) {
        let mut index: TopicIndex<u32, ()> = TopicIndex::new();
        index.insert(&filter, 1, ());
        let mut found = false;
        index.for_each_match(topic.as_str(), |_, ()| found = true);
        assert_eq!(
            found,
            matches(filter.as_str(), topic.as_str()),
            "index and matcher disagree on {f:?} / {t:?}"
        );
        assert_eq!(found, index.has_match(topic.as_str()));
        assert!(index.remove(filter.as_str(), &1).is_some());
        assert!(index.is_empty());
    }
});
