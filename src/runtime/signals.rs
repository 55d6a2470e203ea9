//! Signal handling for the `shardmq` binary (an embedding process keeps its own).
//!
//! SIGINT, SIGTERM and SIGHUP are blocked in every thread (call [`block`] before the
//! broker starts, so shard threads inherit the mask) and received synchronously by one
//! thread with `sigwait`: no async-signal-safety concerns, no self-pipe. It never acts
//! on a signal itself: the handler the binary passes decides.

use std::io;

/// What a received signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM: shut down cleanly.
    Stop,
    /// SIGHUP: reload what can be reloaded (log files, later passwords and ACLs).
    Reload,
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a plain C struct we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and every thread it spawns
/// afterwards.
pub fn block() -> io::Result<()> {
    let set = signal_set();
    // SAFETY: `set` is a valid, initialised sigset_t; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Spawns a thread that waits for the blocked signals and calls `on_signal` for each.
/// The thread ends after the first `Stop`.
pub fn spawn_handler(mut on_signal: impl FnMut(Signal) + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("shardmq-signals".into())
        .spawn(move || {
            let set = signal_set();
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is initialised and `sig` is a valid out-pointer.
                let rc = unsafe { libc::sigwait(&set, &mut sig) };
                if rc != 0 {
                    continue;
                }
                if sig == libc::SIGHUP {
                    on_signal(Signal::Reload);
                } else {
                    on_signal(Signal::Stop);
                    return;
                }
            }
        })?;
    Ok(())
}
