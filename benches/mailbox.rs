//! Cross-core mailbox: the SPSC ring on one thread (cost of write/publish/take per
//! message in batches, as a shard uses it) and across two threads (throughput with the
//! consumer spinning on another core), plus the full mesh `Outbox::send`/`flush` path.
//!
//! `cargo bench --bench mailbox`

#![allow(clippy::unwrap_used)] // benchmark set-up: a failure should abort loudly

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardmq::internals::mailbox::{mesh, ring, Lane};

const BATCH: usize = 256;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("mailbox");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("ring_batch_same_thread", |b| {
        let (p, cons) = ring::<Arc<u64>>(4096);
        let item = Arc::new(7u64);
        b.iter(|| {
            for _ in 0..BATCH {
                let _ = p.write(Arc::clone(&item));
            }
            p.publish();
            while let Some(v) = cons.take() {
                black_box(v);
            }
            cons.release();
        });
    });
    g.bench_function("outbox_send_flush_drain", |b| {
        let mut shards = mesh::<Arc<u64>>(2, 4096, 1024);
        let (_o1, mut in1) = shards.pop().unwrap();
        let (mut out0, _i0) = shards.pop().unwrap();
        let item = Arc::new(7u64);
        b.iter(|| {
            for _ in 0..BATCH {
                let _ = out0.send(1, Lane::Data, Arc::clone(&item));
            }
            out0.flush(|_| {});
            in1.drain(usize::MAX, |_, v| {
                black_box(v);
            });
        });
    });
    let total: u64 = 1 << 20;
    g.throughput(Throughput::Elements(total));
    g.sample_size(10);
    g.bench_function("ring_two_threads_1M", |b| {
        b.iter(|| {
            let (p, cons) = ring::<u64>(4096);
            let t = std::thread::spawn(move || {
                let mut i = 0;
                while i < total {
                    let mut n = 0;
                    while n < 64 && i < total && p.write(i).is_ok() {
                        i += 1;
                        n += 1;
                    }
                    p.publish();
                    if n == 0 {
                        std::hint::spin_loop();
                    }
                }
            });
            let mut got = 0;
            while got < total {
                while let Some(v) = cons.take() {
                    black_box(v);
                    got += 1;
                }
                cons.release();
            }
            t.join().unwrap();
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
