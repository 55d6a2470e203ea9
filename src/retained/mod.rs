//! The retained store: the last retained message per topic, kept in a trie by topic level
//! so a SUBSCRIBE walks only the branches its filter can reach (never a scan of every
//! topic), with a budgeted lookup so a wildcard subscription over many retained messages
//! can be delivered across several loop iterations.
//!
//! Sans-IO: no I/O, no clock, no threads. Message expiry is the caller's business (it has
//! the clock). Nothing here recurses, so a very deep topic cannot overflow the stack, and
//! nothing panics on any input.

mod store;

pub use store::{RetainSource, RetainedCursor, RetainedMessage, RetainedStore};
