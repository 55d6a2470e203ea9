//! `shardmq --test-config`: what a start would find wrong beyond the config's syntax. It
//! opens every file the broker opens at start (password and ACL files, TLS certificates,
//! keys, CAs, CRLs and `psk_file`s, websockets listeners' `http_dir`), reads the persistence files and checks their
//! directory, looks up `user`, resolves each listener's addresses (`bind_interface`
//! included) and checks the directories of `pid_file` and log files, and returns every
//! problem, not just the first.
//!
//! It never binds a socket, never creates or writes a file, and never changes the
//! process (the checks run as the user who runs `--test-config`).

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{listener, process, tls};
use crate::auth::{Acl, PasswordFile};
use crate::config::{Config, LogDest};
use crate::persist;

/// Every problem a start with `config` would run into, in a stable order.
pub fn check(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    security_files(config, &mut problems);
    for l in &config.listeners {
        if let Some(t) = &l.tls {
            if let Err(e) = tls::TlsSlot::new(t, l.port) {
                problems.push(format!("Error: TLS on listener {}: {e}", l.port));
            }
        }
        if let Err(e) = super::handle::websockets(config, l) {
            problems.push(e.to_string());
        }
        if let Err(e) = listener::targets(l) {
            problems.push(format!(
                "Error: {} ({})",
                super::socket::describe(&e),
                listener::describe(l)
            ));
        }
    }
    // As at start: `user` only matters when started as root.
    let user = config.user.as_deref().filter(|u| *u != "root");
    if let Some(user) = user.filter(|_| process::running_as_root()) {
        if let Err(e) = process::lookup_user(user) {
            problems.push(e.to_string());
        }
    }
    if config.persistence {
        persistence(config, &mut problems);
    }
    if let Some(pid) = &config.pid_file {
        parent_exists("pid_file", pid, &mut problems);
    }
    for dest in &config.log.dests {
        if let LogDest::File(path) = dest {
            parent_exists("log_dest file", path, &mut problems);
        }
    }
    problems
}

fn security_files(config: &Config, problems: &mut Vec<String>) {
    let mut passwords: BTreeSet<&PathBuf> = config.password_file.iter().collect();
    let mut acls: BTreeSet<&PathBuf> = config.acl_file.iter().collect();
    for l in &config.listeners {
        passwords.extend(&l.password_file);
        acls.extend(&l.acl_file);
    }
    for p in passwords {
        if let Err(e) = PasswordFile::load(p) {
            problems.push(format!("Error: {e}"));
        }
    }
    for p in acls {
        if let Err(e) = Acl::load(p) {
            problems.push(format!("Error: {e}"));
        }
    }
}

fn persistence(config: &Config, problems: &mut Vec<String>) {
    if let Err(e) = persist::import::check_store_path(config) {
        problems.push(e.to_string());
        return;
    }
    let paths = persist::store::Paths::of(config);
    if let Err(e) = persist::snapshot::read(&paths.snapshot) {
        problems.push(format!("Error: {e}"));
    }
    for log in [&paths.log, &paths.swap] {
        if let Err(e) = persist::log::read(log) {
            problems.push(format!("Error: {e}"));
        }
    }
    let snapshot = paths.snapshot;
    let dir = snapshot
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    // The store creates a missing directory: the nearest existing one must be writable.
    let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
    if !existing.is_dir() {
        problems.push(format!(
            "Error: persistence_location {}: {} is not a directory.",
            dir.display(),
            existing.display()
        ));
    } else if !writable(existing) {
        problems.push(format!(
            "Error: persistence_location {}: {} is not writable.",
            dir.display(),
            existing.display()
        ));
    }
}

fn parent_exists(option: &str, path: &Path, problems: &mut Vec<String>) {
    let parent = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    if !parent.is_dir() {
        problems.push(format!(
            "Error: {option} {}: directory {} does not exist.",
            path.display(),
            parent.display()
        ));
    }
}

/// access(2) for writing and searching, as the user running the check.
fn writable(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}
