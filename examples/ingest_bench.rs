//! Ingestion benchmark target: the broker embedded with an ingest handler that accepts
//! every message and does nothing but count it, so `perf/ingest.sh` can measure what the
//! broker costs per message when the host takes messages in-process instead of a network
//! subscriber, with the same `mosquitto.conf` the `shardmq` executable reads.
//!
//! ```text
//! cargo run --release --example ingest_bench -- shardmq.conf ['#']
//! shardmq-loadgen fan-in --subscribers 0 --qos 1 --port PORT
//! kill -TERM PID      # prints "ingested N (qos0 A, qos1 B, qos2 C)" and exits
//! ```
//!
//! The filter (default `#`) is the second argument. The bound port of the first listener
//! is printed as `listening on PORT`. On SIGTERM or SIGINT the broker stops, every shard
//! thread is joined, and the count (all shards) is printed on stdout; a script compares it
//! with what the load generator saw acknowledged (QoS 1) or sent (QoS 0).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shardmq::executable::signals::{self, Signal};
use shardmq::{Broker, Config, Ingested, Verdict};

/// One shard's counts, by QoS (only that shard's thread adds to them).
#[derive(Default)]
struct Counts([AtomicU64; 3]);

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(conf) = args.next() else {
        eprintln!("usage: ingest_bench CONFIG_FILE [FILTER]");
        std::process::exit(2);
    };
    let filter = args.next().unwrap_or_else(|| "#".to_owned());
    let config = match Config::from_file(Path::new(&conf)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{conf}: {e}");
            std::process::exit(1);
        }
    };
    // Before the shard threads exist, so they inherit the mask and the signal thread
    // below is the only one that takes SIGTERM / SIGINT.
    if let Err(e) = signals::block() {
        eprintln!("cannot block signals: {e}");
        std::process::exit(1);
    }
    let shards: Arc<Mutex<Vec<Arc<Counts>>>> = Arc::default();
    let registry = Arc::clone(&shards);
    let broker = Broker::builder(config)
        .ingest(&filter, move |_shard| {
            let counts = Arc::new(Counts::default());
            if let Ok(mut all) = registry.lock() {
                all.push(Arc::clone(&counts));
            }
            move |msg: &Ingested<'_>| {
                let q = (msg.qos() as usize).min(2);
                counts.0[q].fetch_add(1, Ordering::Relaxed);
                Verdict::Accept
            }
        })
        .start();
    let broker = match broker {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot start the broker: {e}");
            std::process::exit(1);
        }
    };
    let stopper = broker.stopper();
    if let Err(e) = signals::spawn_handler(move |sig| {
        if sig == Signal::Stop {
            stopper.stop();
        }
    }) {
        eprintln!("cannot start the signal thread: {e}");
        std::process::exit(1);
    }
    println!("listening on {}", broker.port());
    broker.join();
    let mut by_qos = [0u64; 3];
    if let Ok(all) = shards.lock() {
        for c in all.iter() {
            for (q, n) in by_qos.iter_mut().enumerate() {
                *n += c.0[q].load(Ordering::Relaxed);
            }
        }
    }
    println!(
        "ingested {} (qos0 {}, qos1 {}, qos2 {})",
        by_qos.iter().sum::<u64>(),
        by_qos[0],
        by_qos[1],
        by_qos[2]
    );
}
