//! The broker's sans-IO tests, one file per behaviour, driven through [`harness`] (one
//! shard, a virtual clock, in-memory clients) or, for several shards, the `Mesh` of
//! `shards.rs`. Kept out of the code files so that those read without scrolling past
//! tests.

mod harness;

mod claims;
mod connect;
mod embed;
mod encode;
mod flow;
mod handoff;
mod interest_model;
mod login;
mod memory;
mod messages;
mod model;
mod options;
mod persist;
mod qos;
mod session;
mod shards;
mod shared;
mod shared_model;
mod v5_alias;
mod v5_connack;
mod v5_disconnect;
mod v5_expiry;
