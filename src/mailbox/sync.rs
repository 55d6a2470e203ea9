//! The synchronisation primitives of the mailbox, swappable for loom's model-checked ones:
//! std's in every build except `RUSTFLAGS="--cfg loom" cargo test` (see the `mailbox`
//! module documentation), as crossbeam and tokio do it. `UnsafeCell` takes loom's
//! closure-based API in both builds so that loom can check every slot access.

#[cfg(all(test, loom))]
pub(super) use loom::{
    cell::UnsafeCell,
    sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering},
    sync::Arc,
};

#[cfg(not(all(test, loom)))]
pub(super) use std::sync::{
    atomic::{fence, AtomicBool, AtomicUsize, Ordering},
    Arc,
};

/// `std::cell::UnsafeCell` with loom's access API.
#[cfg(not(all(test, loom)))]
#[derive(Debug)]
pub(super) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(all(test, loom)))]
impl<T> UnsafeCell<T> {
    pub(super) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared pointer to the value.
    #[inline(always)]
    pub(super) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a mutable pointer to the value.
    #[inline(always)]
    pub(super) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
