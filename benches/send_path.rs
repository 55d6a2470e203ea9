//! What one write of a subscriber's output costs the kernel, by how it is handed over:
//! `writev` of one iovec per frame (main before round 4), `sendmsg` of the same iovecs
//! (no VFS layer), and `sendmsg` with frames that lie end to end merged into one iovec
//! (what `runtime/conn.rs` does now). A batch is K frames of 20 bytes (a 16-byte QoS 0
//! PUBLISH) cut one after another from one buffer, as the encoder cuts them, written to
//! a loopback TCP socket and read back by the same thread, so the loopback receive path
//! (run in the sender's context) is in every variant alike.
//!
//! `cargo bench --bench send_path [ROUNDS]`: rounds alternate the variants (A B C A B C
//! ...) so that other load on the host hits them alike; the figure is this thread's CPU
//! time (user + system, `CLOCK_THREAD_CPUTIME_ID`) per batch, the median over rounds, and
//! its ratio to `writev`.
#![allow(clippy::unwrap_used)] // a benchmark: set-up failures should stop it
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // counts and ns

use std::io::{IoSlice, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

const FRAME: usize = 20;
const SENDS: usize = 2_000;

#[derive(Clone, Copy, Debug)]
enum Variant {
    Writev,
    Sendmsg,
    Merged,
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn send(fd: i32, iov: &[IoSlice<'_>], variant: Variant, whole: &[u8]) -> usize {
    let n = match variant {
        // SAFETY: `iov` are valid slices (IoSlice is ABI-compatible with iovec).
        Variant::Writev => unsafe { libc::writev(fd, iov.as_ptr().cast(), iov.len() as i32) },
        Variant::Sendmsg | Variant::Merged => {
            let one = [IoSlice::new(whole)];
            let v = if matches!(variant, Variant::Merged) {
                &one[..]
            } else {
                iov
            };
            // SAFETY: an all-zero msghdr is valid; `v` outlives the call.
            unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = v.as_ptr().cast_mut().cast();
                msg.msg_iovlen = v.len() as _;
                libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            }
        }
    };
    assert!(n >= 0, "send failed: {}", std::io::Error::last_os_error());
    n as usize
}

/// CPU ns per batch of `k` frames over `SENDS` sends.
fn round(tx: &TcpStream, rx: &mut TcpStream, k: usize, variant: Variant) -> f64 {
    let buf = vec![0x30u8; k * FRAME];
    let iov: Vec<IoSlice<'_>> = buf.chunks(FRAME).map(IoSlice::new).collect();
    let mut sink = vec![0u8; buf.len()];
    let fd = tx.as_raw_fd();
    let start = thread_cpu_ns();
    for _ in 0..SENDS {
        let n = send(fd, &iov, variant, &buf);
        assert_eq!(n, buf.len(), "short send");
        rx.read_exact(&mut sink).unwrap();
    }
    (thread_cpu_ns() - start) as f64 / SENDS as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(7);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut rx, _) = listener.accept().unwrap();
    tx.set_nodelay(true).unwrap();
    let variants = [Variant::Writev, Variant::Sendmsg, Variant::Merged];
    println!("frames/batch  variant   CPU ns/batch (median of {rounds})  ratio to writev");
    for k in [1, 6, 10, 100, 700] {
        let mut t: [Vec<f64>; 3] = Default::default();
        for _ in 0..rounds {
            for (i, v) in variants.iter().enumerate() {
                t[i].push(round(&tx, &mut rx, k, *v));
            }
        }
        let base = median(&mut t[0].clone());
        for (i, v) in variants.iter().enumerate() {
            let m = median(&mut t[i]);
            println!(
                "{k:>12}  {:<8}  {m:>10.0}  {:>6.3}",
                format!("{v:?}"),
                m / base
            );
        }
    }
}
