//! What the `shardmq` executable does to its own process, as Mosquitto does it: switch
//! from root to the configured `user` ([`drop_privileges`]: supplementary groups, group,
//! then user, and a check that root cannot be regained) and become a daemon (`-d`,
//! [`daemonize`]: fork, setsid, standard streams on /dev/null).
//!
//! The executable calls them after [`super::Prepared`] bound the listeners and loaded
//! the TLS, password and ACL files (so privileged ports and root-only keys work), and
//! before any thread exists (a fork copies only the calling thread). This module never
//! touches the broker; it is not used by the embedding API (a library must not change
//! its host process's identity).

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

/// A user account from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Why the process cannot become what the configuration asks for (Mosquitto's wording).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("Error: Unable to drop privileges to '{0}' because this user does not exist.")]
    NoSuchUser(String),
    #[error("Error {step} whilst dropping privileges to '{user}': {source}.")]
    Drop {
        step: &'static str,
        user: String,
        source: std::io::Error,
    },
    #[error("Error: privileges were not dropped: user '{0}' could become root again.")]
    NotDropped(String),
    #[error("Error: cannot become a daemon ({step}): {source}.")]
    Daemon {
        step: &'static str,
        source: std::io::Error,
    },
}

/// Whether the process runs with root's effective user id.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Looks `name` up in the password database (`getpwnam_r`).
pub fn lookup_user(name: &str) -> Result<User, ProcessError> {
    let missing = || ProcessError::NoSuchUser(name.to_string());
    let c_name = CString::new(name).map_err(|_| missing())?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: passwd is plain data; getpwnam_r fills it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the sizes passed; `result` is set to
        // `&mut pwd` or null.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return Err(missing());
        }
        return Ok(User {
            name: name.to_string(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        });
    }
}

fn os_err(ret: libc::c_int) -> Result<(), std::io::Error> {
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// When running as root and `user` names another account: initgroups, setgid, setuid
/// to it, then checks that root cannot be regained. Returns the user switched to.
/// Not running as root, or `user root`: nothing changes (`Ok(None)`).
pub fn drop_privileges(user: Option<&str>) -> Result<Option<User>, ProcessError> {
    let Some(name) = user else {
        return Ok(None);
    };
    if !running_as_root() || name == "root" {
        return Ok(None);
    }
    let u = lookup_user(name)?;
    let fail = |step, source| ProcessError::Drop {
        step,
        user: name.to_string(),
        source,
    };
    let c_name = CString::new(name).map_err(|_| ProcessError::NoSuchUser(name.to_string()))?;
    // SAFETY: `c_name` is a NUL-terminated user name.
    let rc = unsafe { libc::initgroups(c_name.as_ptr(), u.gid) };
    os_err(rc).map_err(|e| fail("setting groups", e))?;
    // SAFETY: plain setgid/setuid calls, checked.
    os_err(unsafe { libc::setgid(u.gid) }).map_err(|e| fail("setting gid", e))?;
    // SAFETY: as above.
    os_err(unsafe { libc::setuid(u.uid) }).map_err(|e| fail("setting uid", e))?;
    // SAFETY: plain calls; a successful setuid(0) would mean root is still reachable.
    let regained = u.uid != 0 && unsafe { libc::setuid(0) } == 0;
    if regained {
        return Err(ProcessError::NotDropped(name.to_string()));
    }
    Ok(Some(u))
}

/// The daemon's side of `-d`: the parent exits once the daemon says how its start went.
pub struct Daemon {
    report: std::fs::File,
}

/// Forks. The parent waits for the child's report and exits with 0 (the broker runs) or
/// 1 (its start failed; the child printed why on the original standard error). The child
/// returns: it is a session leader without a controlling terminal; its standard streams
/// go to /dev/null once it calls [`Daemon::running`].
pub fn daemonize() -> Result<Daemon, ProcessError> {
    let fail = |step, source| ProcessError::Daemon { step, source };
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    os_err(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })
        .map_err(|e| fail("pipe", e))?;
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process has a single thread here (the caller's contract).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fail("fork", std::io::Error::last_os_error()));
    }
    if pid > 0 {
        drop(write_end);
        let mut byte = [0u8; 1];
        let mut r = std::fs::File::from(read_end);
        let code = match r.read(&mut byte) {
            Ok(1) => 0,
            _ => 1,
        };
        // SAFETY: _exit ends the parent without running destructors or atexit handlers
        // that belong to the daemon (the sockets and files are the child's now).
        unsafe { libc::_exit(code) };
    }
    drop(read_end);
    // SAFETY: plain setsid call in the child, checked.
    if unsafe { libc::setsid() } < 0 {
        return Err(fail("setsid", std::io::Error::last_os_error()));
    }
    Ok(Daemon {
        report: std::fs::File::from(write_end),
    })
}

impl Daemon {
    /// The broker runs: standard streams go to /dev/null and the parent exits with 0.
    pub fn running(mut self) -> Result<(), ProcessError> {
        let fail = |step, source| ProcessError::Daemon { step, source };
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| fail("open /dev/null", e))?;
        for fd in 0..3 {
            // SAFETY: `null` is open; dup2 onto the standard descriptors.
            let rc = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
            if rc < 0 {
                return Err(fail("dup2", std::io::Error::last_os_error()));
            }
        }
        self.report
            .write_all(&[1])
            .map_err(|e| fail("report to the parent", e))
    }
}
