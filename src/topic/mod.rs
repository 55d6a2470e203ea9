//! Topics: validated [`TopicName`] / [`TopicFilter`] / [`SharedFilter`] newtypes, the naive
//! matcher [`matches`] (the test oracle for everything that matches topics), and the
//! subscription trie [`TopicIndex`] used on the publish hot path, and the persistent
//! filter -> shard set indexes every shard shares ([`ShardSets`] for wildcard-free
//! filters, [`WildcardSets`] for the others).
//!
//! This layer sits on top of `codec` only. It never does I/O, reads the clock, spawns
//! threads, allocates per publish in the steady state, or panics on any input (topics and
//! filters come from the network and from config / ACL files).

mod index;
mod matcher;
mod name;
mod shard_sets;
mod wildcard_sets;

pub use index::TopicIndex;
pub use matcher::matches;
pub use name::{
    SharedFilter, TopicError, TopicFilter, TopicName, MAX_TOPIC_LEN, MAX_TOPIC_LEVELS, SHARE_PREFIX,
};
pub use shard_sets::ShardSets;
pub use wildcard_sets::WildcardSets;
