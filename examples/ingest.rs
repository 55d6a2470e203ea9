//! An ingestion service: every message a device publishes on `telemetry/#` is appended
//! to a file and flushed to disk (fsync) *before* the broker acknowledges it, so a
//! device that got its PUBACK can forget the message: a crash or `kill -9` of this
//! process right after loses nothing that was acknowledged. When the disk refuses a
//! write the handler answers "busy": the device is not read (TCP pushes back) and the
//! same message is offered again shortly; nothing is dropped.
//!
//! ```text
//! cargo run --example ingest -- telemetry.log 1883
//! mosquitto_pub -p 1883 -q 1 -t telemetry/boiler -m 71.5
//! ```
//!
//! Each line of the file is `topic<TAB>client id<TAB>payload` (payload as UTF-8,
//! lossily). Port 0 picks a free port; the bound port is printed as `listening on PORT`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Arc, Mutex};

use shardmq::{Broker, Config, Ingested, Verdict};

/// One file shared by the shards' handler instances (each holds the lock for one
/// append + fsync).
struct Sink {
    file: Mutex<File>,
}

impl Sink {
    /// Appends `msg` and makes it durable; `Busy` if the disk said no.
    fn store(&self, msg: &Ingested<'_>) -> Verdict {
        let mut line = Vec::with_capacity(msg.topic().len() + msg.payload().len() + 32);
        line.extend_from_slice(msg.topic().as_bytes());
        line.push(b'\t');
        line.extend_from_slice(msg.provenance().client_id().as_bytes());
        line.push(b'\t');
        line.extend(
            msg.payload()
                .iter()
                .map(|&b| if b == b'\n' { b' ' } else { b }),
        );
        line.push(b'\n');
        let Ok(mut file) = self.file.lock() else {
            return Verdict::Busy;
        };
        match file.write_all(&line).and_then(|()| file.sync_data()) {
            Ok(()) => Verdict::Accept,
            Err(e) => {
                eprintln!("cannot store a message ({e}); the device waits");
                Verdict::Busy
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "telemetry.log".to_owned());
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(1883);
    let file = match OpenOptions::new().create(true).append(true).open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot open {path}: {e}");
            std::process::exit(1);
        }
    };
    let sink = Arc::new(Sink {
        file: Mutex::new(file),
    });
    let config = Config::with_listener(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let broker = Broker::builder(config)
        .ingest("telemetry/#", move |_shard| {
            let sink = Arc::clone(&sink);
            move |msg: &Ingested<'_>| sink.store(msg)
        })
        .start();
    let broker = match broker {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot start the broker: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", broker.port());
    broker.join();
}
