//! The persistence files end to end, without threads: open, append, rotate, compact and
//! reopen; a copy of the directory taken at every step of a compaction (what `kill -9`
//! or power loss leaves) reopens to everything appended; files written by the first
//! released version (`testdata/`, made by its binary) still load.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::log::HEADER_LEN;
use super::store::with_suffix;
use super::*;
use crate::codec::{ByteStr, Publish, QoS};
use crate::config::{Config, PersistenceFsync};

pub(super) fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("smq-files-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub(super) fn config(dir: &Path) -> Config {
    Config {
        persistence: true,
        persistence_location: Some(dir.to_path_buf()),
        persistence_file: "test.db".into(),
        persistence_fsync: PersistenceFsync::Never,
        ..Config::default()
    }
}

pub(super) fn retain(topic: &str, payload: &str) -> Record {
    Record::Retain {
        publish: Publish {
            retain: true,
            topic: ByteStr::from(topic),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            ..Publish::default()
        },
    }
}

/// Appends `records` and applies them to `model` (what the compactor thread does).
pub(super) fn append(store: &mut Store, model: &mut State, records: Vec<Record>) {
    store.append(&records).unwrap();
    for r in records {
        model.apply(r);
    }
}

/// Opens a copy of `from` (the files as a crash left them) and checks its state.
fn reopen_copy(from: &Path, tag: &str, expect: &State, edit: impl FnOnce(&Path)) {
    let to = dir(tag);
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    edit(&to);
    let now = Instant::now();
    let (_, state) = open(&config(&to), now).unwrap_or_else(|e| panic!("{tag}: {e}"));
    assert_eq!(&state, expect, "{tag}");
    // Whatever open did to the files, they open again to the same state.
    let (_, again) = open(&config(&to), now).unwrap();
    assert_eq!(&again, expect, "{tag}, second open");
    std::fs::remove_dir_all(&to).unwrap();
}

#[test]
fn records_survive_reopen_and_compaction() {
    let d = dir("reopen");
    let now = Instant::now();
    let (mut store, mut model) = open(&config(&d), now).unwrap();
    append(
        &mut store,
        &mut model,
        vec![retain("a", "1"), retain("b", "2")],
    );
    drop(store);
    let (mut store, state) = open(&config(&d), now).unwrap();
    assert_eq!(state, model);
    let rotation = store.rotate(now).unwrap();
    let at_rotation = model.clone();
    append(&mut store, &mut model, vec![retain("a", "")]);
    let paths = store.paths().clone();
    let r = rotation;
    let done = compact::run(
        r.generation,
        r.frozen,
        r.live_path,
        &at_rotation,
        &paths,
        &mut || {},
    );
    store.finish_compaction(done.map_err(|_| ()));
    drop(store);
    let (store, state) = open(&config(&d), now).unwrap();
    assert_eq!(state, model);
    assert_eq!(state.retained.len(), 1);
    assert_eq!(store.generation(), 1);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Swaps the names of the two logs in `dir` (an exchange done, or undone by power loss).
fn swap_names(dir: &Path) {
    compact::exchange(&dir.join("test.db.log"), &dir.join("test.db.log.swap")).unwrap();
}

#[test]
fn a_crash_at_any_step_of_a_compaction_loses_nothing() {
    let d = dir("crash");
    let c = config(&d);
    let now = Instant::now();
    let (mut store, mut model) = open(&c, now).unwrap();
    let paths = store.paths().clone();
    append(
        &mut store,
        &mut model,
        vec![retain("a", "1"), retain("b", "1")],
    );
    reopen_copy(&d, "crash-a", &model, |_| {});

    let rotation = store.rotate(now).unwrap();
    let frozen_state = model.clone();
    reopen_copy(&d, "crash-b", &model, |_| {});
    append(
        &mut store,
        &mut model,
        vec![retain("a", "2"), retain("c", "2")],
    );
    reopen_copy(&d, "crash-c", &model, |_| {});
    // Killed while writing the snapshot: a partial temporary file.
    reopen_copy(&d, "crash-d", &model, |to| {
        std::fs::write(
            to.join("test.db.tmp"),
            b"SMQSNAP\x01\x01\0\0\0\0\0\0\0garbage",
        )
        .unwrap();
    });
    // The steps of `compact::run`, one by one.
    let generation = rotation.generation;
    let mut frozen = rotation.frozen;
    frozen.sync().unwrap();
    snapshot::write(&paths.snapshot, generation, &frozen_state).unwrap();
    reopen_copy(&d, "crash-e", &model, |_| {});
    reopen_copy(&d, "crash-f", &model, swap_names);
    reopen_copy(&d, "crash-g", &model, |to| {
        swap_names(to);
        std::fs::write(to.join("test.db.log.swap.tmp"), b"SMQLOG").unwrap();
    });
    drop(frozen);
    compact::exchange(&paths.log, &paths.swap).unwrap();
    let spare = compact::prepare_spare(&paths.swap, generation + 1).unwrap();
    store.finish_compaction(Ok(store::Compacted {
        spare,
        snapshot_len: 100,
        live_path: paths.log.clone(),
    }));
    reopen_copy(&d, "crash-h", &model, |_| {});

    // And the next compaction runs over the same files, live log under its usual name.
    append(&mut store, &mut model, vec![retain("d", "3")]);
    let r = store.rotate(now).unwrap();
    assert_eq!(r.generation, generation + 1);
    assert_eq!(r.live_path, paths.swap);
    let done = compact::run(
        r.generation,
        r.frozen,
        r.live_path,
        &model,
        &paths,
        &mut || {},
    );
    store.finish_compaction(done.map_err(|_| ()));
    append(&mut store, &mut model, vec![retain("e", "4")]);
    reopen_copy(&d, "crash-i", &model, |_| {});
    let (store, _) = open(&c, now).unwrap();
    assert_eq!(store.generation(), generation + 1);
    let live = log::read(&paths.log).unwrap().unwrap();
    assert_eq!((live.generation, live.records.len()), (generation + 1, 1));
    for tmp in [
        with_suffix(&paths.swap, ".tmp"),
        snapshot::tmp_path(&paths.snapshot),
    ] {
        assert!(!tmp.exists(), "{}", tmp.display());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn open_finishes_an_interrupted_compaction_and_keeps_appending() {
    let d = dir("finish");
    let now = Instant::now();
    let (mut store, mut model) = open(&config(&d), now).unwrap();
    append(&mut store, &mut model, vec![retain("a", "1")]);
    let _rotation = store.rotate(now).unwrap();
    append(&mut store, &mut model, vec![retain("b", "2")]);
    drop(store); // killed during the snapshot
    let (mut store, state) = open(&config(&d), now).unwrap();
    assert_eq!(state, model);
    // Finished into a snapshot newer than both logs, with a fresh live log and spare.
    assert_eq!(store.generation(), 2);
    assert_eq!(
        std::fs::metadata(&store.paths().log).unwrap().len(),
        HEADER_LEN
    );
    append(&mut store, &mut model, vec![retain("c", "3")]);
    drop(store);
    assert_eq!(open(&config(&d), now).unwrap().1, model);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_log_with_records_newer_than_the_snapshot_is_refused() {
    let d = dir("gen");
    let now = Instant::now();
    let (mut store, mut model) = open(&config(&d), now).unwrap();
    append(&mut store, &mut model, vec![retain("a", "1")]);
    let paths = store.paths().clone();
    drop(store);
    // The snapshot (generation 0: none) is gone but the log says generation 5.
    let mut l = log::LogWriter::create(&paths.log, 5).unwrap();
    let mut buf = bytes::BytesMut::new();
    record::encode(&retain("a", "1"), &mut buf).unwrap();
    l.append(&buf).unwrap();
    drop(l);
    assert!(matches!(
        open(&config(&d), now),
        Err(Error::Generation { .. })
    ));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn compaction_is_due_after_its_changes_whatever_the_fsync_setting() {
    let d = dir("due");
    let mut c = config(&d);
    c.persistence_fsync = PersistenceFsync::Always;
    c.autosave_on_changes = true;
    c.autosave_interval = Duration::from_secs(3);
    let now = Instant::now();
    let (mut store, mut model) = open(&c, now).unwrap();
    append(
        &mut store,
        &mut model,
        vec![retain("a", "1"), retain("b", "1")],
    );
    assert!(!store.compaction_due(now));
    append(&mut store, &mut model, vec![retain("c", "1")]);
    assert!(store.compaction_due(now));
    let _rotation = store.rotate(now).unwrap();
    assert!(!store.compaction_due(now), "one compaction at a time");
    assert!(store.rotate(now).is_err());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Files written by shardmq 0.1.0 as released (see `testdata/README`): they load, and
/// after one start with this version they still hold the same state.
#[test]
fn files_of_the_first_release_load() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/persist/testdata");
    let d = dir("compat");
    std::fs::copy(data.join("shardmq.db"), d.join("test.db")).unwrap();
    std::fs::copy(data.join("shardmq.db.log"), d.join("test.db.log")).unwrap();
    let now = Instant::now();
    let (store, state) = open(&config(&d), now).unwrap();
    assert_eq!(store.generation(), 1);
    let topics: Vec<&str> = state.retained.keys().map(ByteStr::as_str).collect();
    assert_eq!(topics, ["fx/after", "fx/ret", "keep/ret"]);
    let ids: Vec<&str> = state.sessions.keys().map(ByteStr::as_str).collect();
    assert_eq!(ids, ["fx-pub2", "fx-sub", "fx-will"]);
    let sub = &state.sessions[&ByteStr::from("fx-sub")];
    let filters: Vec<&str> = sub.subscriptions.keys().map(ByteStr::as_str).collect();
    assert_eq!(filters, ["fx/#", "other/+"]);
    assert_eq!(sub.messages.len(), 7, "{sub:?}");
    assert_eq!(sub.inflight.len(), 7);
    assert!(sub.messages.values().any(|m| m.qos == QoS::ExactlyOnce));
    assert!(sub.user.is_none(), "not recorded by that version");
    let will = &state.sessions[&ByteStr::from("fx-will")];
    assert_eq!(will.expiry, 3600);
    assert_eq!(will.version, 5);
    let (_, w) = will.will.as_ref().unwrap();
    assert_eq!(&w.payload[..], b"bye");
    drop(store);
    assert_eq!(open(&config(&d), now).unwrap().1, state);
    std::fs::remove_dir_all(&d).unwrap();

    // A log alone, as `kill -9` left it before any snapshot.
    let d = dir("compat-log");
    std::fs::copy(data.join("crash-only.log"), d.join("test.db.log")).unwrap();
    let (_, crashed) = open(&config(&d), now).unwrap();
    let without_after: Vec<&ByteStr> = state
        .retained
        .keys()
        .filter(|t| t.as_str() != "fx/after")
        .collect();
    assert_eq!(crashed.retained.keys().collect::<Vec<_>>(), without_after);
    assert_eq!(crashed.sessions.len(), 3);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A compaction whose snapshot cannot be written is retried over a spare under a
/// numbered name; a retry that fails too makes the chain of logs longer. A crash at any
/// step reopens to everything appended, and the retry that succeeds leaves the usual
/// two logs and no numbered one.
#[test]
fn a_failed_compaction_is_retried_and_a_crash_at_any_step_loses_nothing() {
    let d = dir("retry");
    let now = Instant::now();
    let (mut store, mut model) = open(&config(&d), now).unwrap();
    let paths = store.paths().clone();
    let mut broken = paths.clone();
    broken.snapshot = d.join("missing").join("test.db");
    append(
        &mut store,
        &mut model,
        vec![retain("a", "1"), retain("b", "1")],
    );
    // The first attempt and the first retry fail, the second retry succeeds.
    for attempt in 0..3 {
        let r = store.rotate(now).unwrap();
        if attempt > 0 {
            assert_eq!(r.live_path, paths.numbered(r.generation));
        }
        let at_rotation = model.clone();
        append(
            &mut store,
            &mut model,
            vec![retain("c", &attempt.to_string())],
        );
        reopen_copy(&d, &format!("retry-{attempt}-running"), &model, |_| {});
        if attempt == 2 {
            // Killed after the snapshot, before the live log got its usual name back.
            reopen_copy(&d, "retry-snapshot-written", &model, |to| {
                snapshot::write(&to.join("test.db"), r.generation, &at_rotation).unwrap();
            });
            let done = compact::run(
                r.generation,
                r.frozen,
                r.live_path,
                &at_rotation,
                &paths,
                &mut || {},
            )
            .unwrap();
            assert_eq!(done.live_path, paths.log);
            store.finish_compaction(Ok(done));
            break;
        }
        let done = compact::run(
            r.generation,
            r.frozen,
            r.live_path,
            &at_rotation,
            &broken,
            &mut || {},
        );
        assert!(done.is_err());
        store.finish_compaction(Err(()));
        assert!(store.compaction_failed());
        assert!(!store.compaction_due(now + Duration::from_secs(3600)));
        append(
            &mut store,
            &mut model,
            vec![retain("d", &attempt.to_string())],
        );
        reopen_copy(&d, &format!("retry-{attempt}-failed"), &model, |_| {});
        // What the compactor thread does when the retry is due.
        let g = store.generation() + 1;
        let spare = compact::prepare_spare(&paths.numbered(g), g).unwrap();
        store.retry_with(spare);
        assert!(store.compaction_due(now));
        assert!(store.poll_timeout().is_some_and(|t| t <= now));
    }
    assert!(
        paths.numbered_logs().is_empty(),
        "{:?}",
        paths.numbered_logs()
    );
    let live = log::read(&paths.log).unwrap().unwrap();
    assert_eq!(live.generation, store.generation());
    assert_eq!(live.records.len(), 1);
    let spare = log::read(&paths.swap).unwrap().unwrap();
    assert_eq!(
        (spare.generation, spare.valid_len),
        (store.generation() + 1, HEADER_LEN)
    );
    append(&mut store, &mut model, vec![retain("e", "4")]);
    reopen_copy(&d, "retry-done", &model, |_| {});
    // And the next compaction is an ordinary one again.
    let r = store.rotate(now).unwrap();
    assert_eq!(r.live_path, paths.swap);
    drop(store);
    let (_, state) = open(&config(&d), now).unwrap();
    assert_eq!(state, model);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Numbered logs older than the snapshot, and temporary files of numbered spares, are
/// removed on open.
#[test]
fn open_removes_numbered_leftovers() {
    let d = dir("leftovers");
    let now = Instant::now();
    let (mut store, mut model) = open(&config(&d), now).unwrap();
    let paths = store.paths().clone();
    append(&mut store, &mut model, vec![retain("a", "1")]);
    drop(store);
    let old = log::LogWriter::create(&paths.numbered(0), 0).unwrap();
    drop(old);
    std::fs::write(with_suffix(&paths.numbered(7), ".tmp"), b"SMQ").unwrap();
    let (_, state) = open(&config(&d), now).unwrap();
    assert_eq!(state, model);
    assert!(paths.numbered_logs().is_empty());
    assert!(paths.numbered_tmp_files().is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}
