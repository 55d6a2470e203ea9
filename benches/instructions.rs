//! The publish hot path as a fixed amount of work, for instruction counting under
//! callgrind (`perf/hash.sh`): unlike wall-clock benchmarks the count does not depend on
//! what else the machine runs, so before/after comparisons hold on a shared 2-core box.
//!
//! `instructions topic-exact|topic-plus|topic-hash|fanout N` runs N topic matches against
//! a 100,000-subscription index (with the index's default hasher), or N publishes
//! fanned out to 1,000 subscribers. The per-operation cost is the difference between two
//! counts divided by the difference in N (set-up cancels out). Under `cargo bench` (any
//! other arguments) it does nothing. Uses only API that predates the seeded hasher, so the
//! same file measures older commits.

mod common;

use std::hint::black_box;

use shardmq::internals::topic::TopicIndex;

use common::{build, topics, Fanout, Shape};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let shape = match args.get(1).map(String::as_str) {
        Some("topic-exact") => Shape::Exact,
        Some("topic-plus") => Shape::Plus,
        Some("topic-hash") => Shape::Hash,
        Some("fanout") => {
            let mut f = Fanout::new(2);
            let bytes: usize = (0..n).map(|_| f.publish_once()).sum();
            println!("fanout {n} publishes, {bytes} bytes queued");
            return;
        }
        _ => return, // `cargo bench` passes --bench
    };
    let size = 100_000;
    // No hasher named: whatever the index hashes levels with by default.
    let idx: TopicIndex<usize, u8> = build(shape, size);
    let topics = topics(shape, size);
    let mut hits = 0usize;
    for j in 0..n {
        idx.for_each_match(black_box(&topics[j & 1023]), |k, _| hits += *k);
    }
    println!("{} {n} matches, checksum {}", shape.name(), black_box(hits));
}
