//! Unit tests of the cross-shard message types: home shards, message size.

use crate::broker::{home_shard, ShardMsg};

#[test]
fn home_shard_is_stable_and_in_range() {
    assert_eq!(home_shard("abc", 1), 0);
    for n in 1..8 {
        let h = home_shard("client-42", n);
        assert!(h < n);
        assert_eq!(h, home_shard("client-42", n));
    }
    let spread: std::collections::HashSet<_> =
        (0..64).map(|i| home_shard(&format!("c{i}"), 4)).collect();
    assert_eq!(spread.len(), 4);
}

#[test]
fn shard_msg_stays_small() {
    assert!(
        std::mem::size_of::<ShardMsg>() <= 32,
        "{}",
        std::mem::size_of::<ShardMsg>()
    );
}
