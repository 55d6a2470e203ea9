//! Reuse of the allocations of this shard's messages that other shards handed back
//! (`Control::Release`): the message record (`Arc<Message>`, some 600 bytes) of a
//! cross-shard publish is allocated here and comes back in a batch once the receivers
//! are done with it. Freeing a batch at once overflows the allocator's per-thread cache
//! (glibc keeps 7 chunks per size), so every free and the next message's allocation take
//! the allocator's slow path; keeping the emptied allocations and writing the next
//! messages into them costs neither.
//!
//! A message's contents are dropped when it comes back (so the read buffer its topic and
//! payload are slices of is free for reuse at once); only the allocation waits, at most
//! [`POOL`] of them. It never keeps an allocation another reference can reach: a message
//! comes back only when this was the last reference, and that is checked again.

use std::mem::MaybeUninit;
use std::sync::Arc;

use crate::session::Message;

/// Most allocations kept (about 0.6 MB of `Message` records).
pub(super) const POOL: usize = 1024;

/// The emptied allocations, ready for the next messages.
#[derive(Debug, Default)]
pub(super) struct Recycler {
    free: Vec<Arc<MaybeUninit<Message>>>,
}

impl Recycler {
    /// Takes back messages this shard allocated: drops their contents now and keeps
    /// their allocations (up to [`POOL`]); a message still referenced elsewhere is only
    /// let go of.
    pub(super) fn recycle(&mut self, msgs: Vec<Arc<Message>>) {
        for mut msg in msgs {
            if self.free.len() >= POOL || Arc::get_mut(&mut msg).is_none() {
                continue; // dropped: freed or released by the last holder
            }
            let raw = Arc::into_raw(msg).cast::<MaybeUninit<Message>>();
            // SAFETY: `raw` comes from `Arc::<Message>::into_raw`, and `MaybeUninit<Message>`
            // has the size and alignment of `Message` (what `Arc::from_raw` requires).
            let mut slot = unsafe { Arc::from_raw(raw) };
            if let Some(m) = Arc::get_mut(&mut slot) {
                // SAFETY: the value is an initialised `Message` (it was one a moment
                // ago) and this is the only reference (no other `Arc` or `Weak`: checked
                // above and by `get_mut`); from here on the slot counts as uninitialised
                // and is only ever written before it is read again (`wrap`).
                unsafe { m.assume_init_drop() };
                self.free.push(slot);
            }
            // (`get_mut` cannot fail here; if it did, dropping `slot` would only leak
            // the contents, never drop them twice.)
        }
    }

    /// `Arc::new(msg)`, in a kept allocation when there is one. Inlined: the message
    /// is some 600 bytes, and a call would copy it once more (measured: +90
    /// instructions per message on the single-shard path).
    #[inline]
    pub(super) fn wrap(&mut self, msg: Message) -> Arc<Message> {
        let Some(mut slot) = self.free.pop() else {
            return Arc::new(msg);
        };
        let Some(m) = Arc::get_mut(&mut slot) else {
            return Arc::new(msg); // (never: the pool holds the only reference)
        };
        m.write(msg);
        let raw = Arc::into_raw(slot).cast::<Message>();
        // SAFETY: the slot holds an initialised `Message` (just written), `raw` comes
        // from `Arc::<MaybeUninit<Message>>::into_raw`, and both types have the same
        // size and alignment.
        unsafe { Arc::from_raw(raw) }
    }

    /// Allocations kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::codec::{ByteStr, Properties, Publish, QoS};

    fn message(payload: Bytes) -> Message {
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteStr::from_static("a/b"),
            packet_id: None,
            properties: Properties::default(),
            payload,
        };
        Message::new(publish, Instant::now(), Some(7))
    }

    #[test]
    fn a_handed_back_message_is_emptied_at_once_and_its_allocation_reused() {
        let mut r = Recycler::default();
        let mut buf = BytesMut::from(&b"payload-of-a-read-buffer"[..]);
        let payload = buf.split_to(20).freeze(); // 4 bytes left in `buf`
        let first = r.wrap(message(payload));
        let addr = Arc::as_ptr(&first);
        assert!(!buf.try_reclaim(20), "the message pins the read buffer");
        r.recycle(vec![first]);
        assert_eq!(r.len(), 1);
        // The payload's slice is gone: the read buffer is unique again and can be
        // reclaimed in place.
        assert!(
            buf.try_reclaim(20),
            "the recycled message still pins the buffer"
        );
        let second = r.wrap(message(Bytes::from_static(b"next")));
        assert_eq!(Arc::as_ptr(&second), addr, "the allocation was not reused");
        assert_eq!(second.publish.payload, Bytes::from_static(b"next"));
        assert_eq!(second.origin, Some(7));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_message_still_shared_is_not_kept() {
        let mut r = Recycler::default();
        let msg = r.wrap(message(Bytes::from_static(b"x")));
        let other = Arc::clone(&msg);
        r.recycle(vec![msg]);
        assert_eq!(r.len(), 0);
        assert_eq!(other.publish.payload, Bytes::from_static(b"x"));
    }

    #[test]
    fn the_pool_is_bounded_and_dropping_it_frees_everything() {
        let mut r = Recycler::default();
        let msgs: Vec<_> = (0..POOL + 5)
            .map(|_| Arc::new(message(Bytes::from(vec![1u8; 32]))))
            .collect();
        r.recycle(msgs);
        assert_eq!(r.len(), POOL);
        drop(r); // (Miri: no leak, no double drop)
    }
}
