//! Topic matching on the publish hot path: `TopicIndex::for_each_match` with 1k, 100k and
//! 1M subscriptions, for exact filters, '+'-heavy filters and '#'-heavy filters.
//!
//! Each index is built once per (shape, size); every iteration matches one topic from a
//! pre-built list of 1024 topics that each match exactly one subscription.
//!
//! `topic_hasher/*` runs the same 100k-subscription match with the unkeyed Fx hasher and
//! with the seeded hasher the index uses (`shardmq::hash::SeededState`) in one run, and
//! `topic_flood/*` inserts levels crafted to collide under Fx (a HashDoS attempt) under
//! one node with each hasher.
//!
//! `cargo bench --bench topic`

use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::Duration;

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use shardmq::internals::hash::{fx_colliding_levels, FxBuildHasher, SeededState};
use shardmq::internals::topic::{TopicFilter, TopicIndex};

use common::{build, topics, Shape};

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

/// A group with the sampling every match benchmark uses.
fn match_group<'a>(
    c: &'a mut Criterion,
    name: String,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group
}

/// One match per iteration, cycling through `topics`.
fn bench_match<S: BuildHasher + Default>(
    b: &mut criterion::Bencher<'_>,
    idx: &TopicIndex<usize, u8, S>,
    topics: &[String],
) {
    let mut j = 0usize;
    b.iter(|| {
        let t = &topics[j & 1023];
        j = j.wrapping_add(1);
        let mut hits = 0usize;
        idx.for_each_match(black_box(t), |k, _| hits += *k);
        black_box(hits)
    });
}

fn bench_matching(c: &mut Criterion) {
    for shape in Shape::ALL {
        let mut group = match_group(c, format!("topic_match/{}", shape.name()));
        for n in SIZES {
            let idx: TopicIndex<usize, u8> = build(shape, n);
            let topics = topics(shape, n);
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                bench_match(b, &idx, &topics);
            });
        }
        group.finish();
    }
}

fn match_with<S: BuildHasher + Default>(c: &mut Criterion, group: &str, name: &str) {
    let mut group = match_group(c, group.to_owned());
    for shape in Shape::ALL {
        let n = 100_000;
        let idx: TopicIndex<usize, u8, S> = build(shape, n);
        let topics = topics(shape, n);
        group.bench_function(format!("{}/{name}", shape.name()), |b| {
            bench_match(b, &idx, &topics);
        });
    }
    group.finish();
}

/// Same run, same machine state: the unkeyed hasher against the seeded one.
fn bench_hashers(c: &mut Criterion) {
    match_with::<FxBuildHasher>(c, "topic_hasher", "fx");
    match_with::<SeededState>(c, "topic_hasher", "seeded");
}

/// Inserting `n` subscriptions `flood/<level>` whose levels all collide under Fx.
fn flood<S: BuildHasher + Default>(filters: &[TopicFilter]) -> usize {
    let mut idx: TopicIndex<usize, (), S> = TopicIndex::default();
    for (i, f) in filters.iter().enumerate() {
        idx.insert(f, i, ());
    }
    idx.len()
}

fn bench_flood(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_flood");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(200));
    group.measurement_time(Duration::from_secs(3));
    for n in [1_000, 4_000] {
        let filters: Vec<TopicFilter> = fx_colliding_levels(n)
            .iter()
            .filter_map(|l| TopicFilter::parse(&format!("flood/{l}")).ok())
            .collect();
        group.bench_with_input(BenchmarkId::new("fx", n), &filters, |b, f| {
            b.iter(|| black_box(flood::<FxBuildHasher>(f)));
        });
        group.bench_with_input(BenchmarkId::new("seeded", n), &filters, |b, f| {
            b.iter(|| black_box(flood::<SeededState>(f)));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_matching, bench_hashers, bench_flood);
criterion_main!(benches);
