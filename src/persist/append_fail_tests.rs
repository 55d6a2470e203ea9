//! Failed appends, without threads: a write cut short, a failed fsync and a failed cut
//! (injected into a real file through [`super::log::Faults`]) leave the log as it was
//! before the append, so the caller's retry writes the batch exactly once and the log
//! reopens without a torn record; a failed snapshot leaves the old snapshot and the logs
//! readable.

use std::path::Path;
use std::time::{Duration, Instant};

use super::files_tests::{append, dir, retain};
use super::*;
use crate::config::{Config, PersistenceFsync};

/// `always`, and a compaction due after every change.
fn config(dir: &Path) -> Config {
    Config {
        persistence_fsync: PersistenceFsync::Always,
        autosave_on_changes: true,
        autosave_interval: Duration::from_secs(1),
        ..super::files_tests::config(dir)
    }
}

fn file_len(store: &Store) -> u64 {
    std::fs::metadata(&store.paths().log).unwrap().len()
}

/// Reads the live log: its records' topics, and that it has no torn tail.
fn topics_on_disk(store: &Store) -> Vec<String> {
    let c = log::read(&store.paths().log).unwrap().unwrap();
    assert!(c.torn.is_none(), "torn tail: {:?}", c.torn);
    assert_eq!(c.valid_len, store.log_len());
    c.records
        .iter()
        .map(|r| match r {
            Record::Retain { publish } => publish.topic.to_string(),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn reopened_topics(d: &Path) -> Vec<String> {
    let (_, state) = open(&config(d), Instant::now()).unwrap();
    state.retained.keys().map(ToString::to_string).collect()
}

#[test]
fn a_write_cut_short_leaves_no_bytes_and_the_retry_writes_the_batch_once() {
    let d = dir("fail-short");
    let (mut store, _) = open(&config(&d), Instant::now()).unwrap();
    store.append(&[retain("a", "1")]).unwrap();
    let before = store.log_len();
    store.log_mut().faults.write_after = Some(7);
    let batch = [retain("b", "2"), retain("c", "3")];
    assert!(store.append(&batch).is_err());
    assert_eq!(store.log_len(), before);
    assert_eq!(
        file_len(&store),
        before,
        "the partial write was not cut off"
    );
    store.append(&batch).unwrap();
    assert_eq!(topics_on_disk(&store), ["a", "b", "c"]);
    drop(store);
    assert_eq!(reopened_topics(&d), ["a", "b", "c"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_failed_fsync_cuts_the_batch_and_the_retry_writes_and_fsyncs_it_again() {
    let d = dir("fail-fsync");
    let (mut store, _) = open(&config(&d), Instant::now()).unwrap();
    store.append(&[retain("a", "1")]).unwrap();
    let before = store.log_len();
    store.log_mut().faults.syncs = 2;
    let batch = [retain("b", "2")];
    for _ in 0..2 {
        let e = store.append(&batch).unwrap_err();
        assert!(e.to_string().contains("test.db.log"), "{e}");
        assert_eq!(file_len(&store), before, "bytes whose fsync failed stayed");
    }
    store.append(&batch).unwrap();
    assert_eq!(topics_on_disk(&store), ["a", "b"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_failed_cut_is_redone_before_the_next_write_and_holds_compactions_back() {
    let d = dir("fail-cut");
    let now = Instant::now();
    let (mut store, _) = open(&config(&d), now).unwrap();
    store.append(&[retain("a", "1")]).unwrap();
    assert!(store.compaction_due(now));
    let before = store.log_len();
    store.log_mut().faults.write_after = Some(5);
    store.log_mut().faults.cuts = 2;
    assert!(store.append(&[retain("b", "2")]).is_err());
    // The five bytes stay in the file for now, but not in the log's length.
    assert_eq!(file_len(&store), before + 5);
    assert_eq!(store.log_len(), before);
    assert!(
        !store.compaction_due(now),
        "would rotate over a torn record"
    );
    // The next attempt cannot cut either: it writes nothing.
    assert!(store.append(&[retain("b", "2")]).is_err());
    assert_eq!(file_len(&store), before + 5);
    store.append(&[retain("b", "2")]).unwrap();
    assert_eq!(topics_on_disk(&store), ["a", "b"]);
    assert!(store.compaction_due(now));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_failed_snapshot_keeps_the_old_snapshot_and_the_logs_readable() {
    let d = dir("fail-snapshot");
    let now = Instant::now();
    let (mut store, mut model) = open(&config(&d), now).unwrap();
    append(
        &mut store,
        &mut model,
        vec![retain("a", "1"), retain("b", "2")],
    );
    let r = store.rotate(now).unwrap();
    let at_rotation = model.clone();
    append(&mut store, &mut model, vec![retain("c", "3")]);
    // The snapshot cannot be written (its directory does not exist).
    let mut paths = store.paths().clone();
    paths.snapshot = d.join("missing").join("test.db");
    let (generation, live_path) = (r.generation, r.live_path);
    let done = compact::run(
        generation,
        r.frozen,
        live_path,
        &at_rotation,
        &paths,
        &mut || {},
    );
    assert!(done.is_err());
    store.finish_compaction(Err(()));
    assert!(!store.compaction_due(now + Duration::from_secs(3600)));
    append(&mut store, &mut model, vec![retain("d", "4")]);
    drop(store);
    let (_, state) = open(&config(&d), now).unwrap();
    assert_eq!(state, model);
    assert_eq!(reopened_topics(&d), ["a", "b", "c", "d"]);
    std::fs::remove_dir_all(&d).unwrap();
}
