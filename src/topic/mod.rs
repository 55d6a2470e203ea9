//! Topics: validated [`TopicName`] / [`TopicFilter`] / [`SharedFilter`] newtypes, the naive
//! matcher [`matches`] (the test oracle for everything that matches topics), and the
//! subscription trie [`TopicIndex`] used on the publish hot path.
//!
//! This layer sits on top of `codec` only. It never does I/O, reads the clock, spawns
//! threads, allocates per publish in the steady state, or panics on any input (topics and
//! filters come from the network and from config / ACL files).

mod index;
mod matcher;
mod name;
mod shard_sets;

pub use index::TopicIndex;
pub use matcher::matches;
pub use name::{
    SharedFilter, TopicError, TopicFilter, TopicName, MAX_TOPIC_LEN, MAX_TOPIC_LEVELS, SHARE_PREFIX,
};
pub use shard_sets::ShardSets;
