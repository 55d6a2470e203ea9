//! The output queue keeps nothing pinned past compaction, copies each chunk at most once,
//! and counts what it holds.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{Body, OutQueue, CHUNK_OVERHEAD};
use crate::codec::{ByteStr, Publish, QoS};
use crate::session::Message;

/// A 64 KiB "read buffer" and a message whose topic and payload are slices of it.
fn message_in_buffer(payload_len: usize) -> (Bytes, Arc<Message>) {
    let mut buf = BytesMut::zeroed(64 * 1024);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    buf[..3].copy_from_slice(b"a/b");
    let buf = buf.freeze();
    let publish = Publish {
        qos: QoS::AtMostOnce,
        topic: ByteStr::try_from_bytes(buf.slice(0..3)).unwrap(),
        payload: buf.slice(100..100 + payload_len),
        ..Publish::default()
    };
    (buf, Arc::new(Message::new(publish, Instant::now(), None)))
}

fn contents(q: &OutQueue) -> Vec<u8> {
    let mut iov = [std::io::IoSlice::new(&[]); 64];
    let n = q.io_slices(&mut iov);
    iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
}

#[test]
fn compaction_releases_the_buffers_frames_and_payloads_share() {
    let scratch = Bytes::from(vec![7u8; 64 * 1024]);
    let (read_buf, msg) = message_in_buffer(600);
    let mut q = OutQueue::default();
    q.push_slice(scratch.slice(0..5));
    q.push_slice(scratch.slice(5..9));
    q.push_body(Body::of(&msg));
    q.push_slice(scratch.slice(9..12));
    q.consume(2); // the socket took two bytes
    let before = contents(&q);
    drop(msg);
    assert!(!scratch.is_unique() && !read_buf.is_unique());

    q.compact();
    assert_eq!(contents(&q), before, "compaction changes no byte");
    assert!(
        scratch.is_unique(),
        "a queued frame still pins the scratch buffer"
    );
    assert!(
        read_buf.is_unique(),
        "a queued payload still pins the read buffer"
    );
    // The two leading frames became one chunk: frame, payload, frame.
    assert_eq!(q.chunks(), 3);
    assert_eq!(q.held(), 7 + 600 + 3 + 3 * CHUNK_OVERHEAD);
}

#[test]
fn each_chunk_is_copied_once() {
    let scratch = Bytes::from(vec![1u8; 1024]);
    let mut q = OutQueue::default();
    q.push_slice(scratch.slice(0..10));
    q.compact();
    let mut iov = [std::io::IoSlice::new(&[]); 4];
    q.io_slices(&mut iov);
    let compacted = iov[0].as_ptr();
    q.push_slice(scratch.slice(10..20));
    q.compact();
    let mut iov = [std::io::IoSlice::new(&[]); 4];
    assert_eq!(q.io_slices(&mut iov), 2);
    assert_eq!(
        iov[0].as_ptr(),
        compacted,
        "a compacted chunk was copied again"
    );
    assert!(scratch.is_unique());
}

#[test]
fn owned_chunks_and_detached_payloads_are_kept_as_they_are() {
    let owned = Bytes::from(vec![3u8; 100]);
    let (_buf, msg) = message_in_buffer(600);
    let detached = Message::detached(&msg);
    let mut q = OutQueue::default();
    q.push(owned.clone());
    q.push_body(Body::of(&detached));
    q.compact();
    let mut iov = [std::io::IoSlice::new(&[]); 4];
    assert_eq!(q.io_slices(&mut iov), 2);
    assert_eq!(iov[0].as_ptr(), owned.as_ptr());
    assert_eq!(iov[1].as_ptr(), detached.publish.payload.as_ptr());
}

#[test]
fn queues_keeping_one_payload_share_one_copy() {
    let (read_buf, msg) = message_in_buffer(1000);
    let mut a = OutQueue::default();
    let mut b = OutQueue::default();
    a.push_body(Body::of(&msg));
    b.push_body(Body::of(&msg));
    a.compact();
    b.compact();
    drop(msg);
    assert!(read_buf.is_unique());
    let (mut ia, mut ib) = (
        [std::io::IoSlice::new(&[]); 1],
        [std::io::IoSlice::new(&[]); 1],
    );
    a.io_slices(&mut ia);
    b.io_slices(&mut ib);
    assert_eq!(ia[0].as_ptr(), ib[0].as_ptr(), "one copy per message");
}

#[test]
fn a_drained_queue_keeps_no_marks() {
    let scratch = Bytes::from(vec![1u8; 64]);
    let mut q = OutQueue::default();
    q.push_slice(scratch.slice(0..10));
    q.push_slice(scratch.slice(10..20));
    q.consume(20);
    assert!(q.is_empty());
    q.compact();
    assert_eq!(q.held(), 0);
    assert!(scratch.is_unique());
}

proptest::proptest! {
    /// Any mix of frames, payloads and owned chunks, partial writes and compactions:
    /// the bytes written are the bytes queued, and after a last compaction nothing
    /// refers to the shared buffers any more.
    #[test]
    fn compaction_never_changes_the_output(
        ops in proptest::collection::vec((0u8..5, 1usize..700), 1..60),
    ) {
        let scratch = Bytes::from(vec![b's'; 64 * 1024]);
        let (read_buf, msg) = message_in_buffer(650);
        let mut q = OutQueue::default();
        let mut model: Vec<u8> = Vec::new();
        let mut written: Vec<u8> = Vec::new();
        let mut at = 0;
        for (op, n) in ops {
            match op {
                0 => {
                    let chunk = scratch.slice(at..at + n.min(100));
                    at = (at + 100) % 60_000;
                    model.extend_from_slice(&chunk);
                    q.push_slice(chunk);
                }
                1 => {
                    model.extend_from_slice(&msg.publish.payload);
                    q.push_body(Body::of(&msg));
                }
                2 => {
                    let owned = Bytes::from(vec![b'o'; n % 50 + 1]);
                    model.extend_from_slice(&owned);
                    q.push(owned);
                }
                3 => {
                    let take = n.min(q.len());
                    let mut iov = [std::io::IoSlice::new(&[]); 64];
                    let k = q.io_slices(&mut iov);
                    let mut left = take;
                    for s in &iov[..k] {
                        let m = left.min(s.len());
                        written.extend_from_slice(&s[..m]);
                        left -= m;
                    }
                    q.consume(take - left);
                }
                _ => q.compact(),
            }
            proptest::prop_assert_eq!(q.len(), model.len() - written.len());
        }
        q.compact();
        written.extend(contents_all(&q));
        proptest::prop_assert_eq!(written, model);
        drop(msg);
        proptest::prop_assert!(scratch.is_unique());
        proptest::prop_assert!(read_buf.is_unique());
    }
}

fn contents_all(q: &OutQueue) -> Vec<u8> {
    q.chunks.iter().flat_map(|c| c.iter().copied()).collect()
}

/// A drained queue keeps no buffer (an idle connection holds no queue memory) but hands
/// it to the thread's pool, and the next queue to get output takes it from there.
#[test]
fn a_drained_queue_gives_its_buffer_to_the_next_one() {
    // Each test runs on a thread of its own: the pool starts empty.
    let mut a = OutQueue::default();
    a.push(Bytes::from_static(b"frame"));
    assert_eq!(super::pool::kept(), 0);
    a.consume(5);
    assert_eq!(a.chunks(), 0);
    assert!(a.chunks.capacity() == 0, "an idle queue keeps its buffer");
    assert_eq!(super::pool::kept(), 1);
    let mut b = OutQueue::default();
    b.push(Bytes::from_static(b"next"));
    assert_eq!(
        super::pool::kept(),
        0,
        "the next queue took the pooled buffer"
    );
    assert_eq!(b.len(), 4);
}
