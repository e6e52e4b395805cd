//! `SharedSlice`: one buffer, written by several threads in disjoint ranges.
//!
//! This is the only place in the reduction protocol that holds `unsafe`
//! code. The segment protocol ([`super::Segments`] + [`super::SpinBarrier`])
//! is what makes its callers' ranges disjoint; the type cannot check that by
//! itself, so handing out ranges is `unsafe` and the contract is spelled out
//! on each method.
//!
//! Under `cfg(loom)` every range access is also reported to loom (one
//! tracked cell per element, modulo [`LOOM_TRACKED`]), so the model checker
//! catches two threads touching the same element without a happens-before
//! edge between them, i.e. a barrier that does not order the data.

use core::marker::PhantomData;
use core::ops::Range;
use core::ptr::NonNull;

/// Elements tracked individually by loom (element `i` maps to tracker
/// `i % LOOM_TRACKED`; loom tests use buffers shorter than this).
#[cfg(loom)]
pub const LOOM_TRACKED: usize = 32;

/// A mutable slice that several threads may access at once, each in its own
/// range.
///
/// Built from `&'a mut [T]`, so for `'a` nothing else can touch the memory;
/// two `SharedSlice`s therefore never overlap unless they are the same value.
pub struct SharedSlice<'a, T> {
    ptr: NonNull<T>,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
    #[cfg(loom)]
    tracker: [loom::cell::UnsafeCell<()>; LOOM_TRACKED],
}

// SAFETY: a `SharedSlice` is a `&mut [T]` that can be split between threads;
// moving it to another thread moves the exclusive borrow, which needs `T: Send`.
unsafe impl<T: Send> Send for SharedSlice<'_, T> {}
// SAFETY: sharing it lets several threads get `&mut` to disjoint elements
// (like `split_at_mut` + scoped threads: needs `T: Send`) and `&` to the same
// elements at once (needs `T: Sync`). The disjointness itself is the
// contract of the `unsafe` accessors below.
unsafe impl<T: Send + Sync> Sync for SharedSlice<'_, T> {}

impl<'a, T> SharedSlice<'a, T> {
    /// Takes the exclusive borrow of `slice` for `'a`.
    pub fn new(slice: &'a mut [T]) -> Self {
        SharedSlice {
            len: slice.len(),
            ptr: NonNull::from(slice).cast(),
            _borrow: PhantomData,
            #[cfg(loom)]
            tracker: core::array::from_fn(|_| loom::cell::UnsafeCell::new(())),
        }
    }

    /// Number of elements.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Address of the first element (for identity checks; do not write through it).
    pub const fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }

    /// The whole slice; `&mut self` proves no range is lent out.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: `ptr..ptr+len` is the slice borrowed in `new` for 'a, and
        // `&mut self` excludes every other access through this value.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn check(&self, r: &Range<usize>) {
        assert!(
            r.start <= r.end && r.end <= self.len,
            "range {}..{} out of a shared slice of {} elements",
            r.start,
            r.end,
            self.len
        );
    }

    /// Elements `r`, shared.
    ///
    /// # Safety
    /// While the returned slice lives, no thread may write any element of `r`
    /// (through [`SharedSlice::range_mut`] or otherwise).
    ///
    /// # Panics
    /// If `r` is not within `0..len()` (as slice indexing does).
    pub unsafe fn range(&self, r: Range<usize>) -> &[T] {
        self.check(&r);
        #[cfg(loom)]
        for i in r.clone() {
            self.tracker[i % LOOM_TRACKED].with(|_| ());
        }
        // SAFETY: in bounds (checked above) of the slice borrowed for 'a; no
        // concurrent writer by the caller's contract.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr().add(r.start), r.end - r.start) }
    }

    /// Elements `r`, exclusive.
    ///
    /// # Safety
    /// While the returned slice lives, no other access to any element of `r`
    /// may happen, from any thread, including through another slice returned
    /// by [`SharedSlice::range`] or [`SharedSlice::range_mut`]. The segment
    /// protocol guarantees this: between two barriers each segment has one
    /// owner, and a buffer is either written whole by one thread or split
    /// by segment.
    ///
    /// # Panics
    /// If `r` is not within `0..len()` (as slice indexing does).
    #[allow(clippy::mut_from_ref)] // the point of the type; exclusivity is the caller's contract
    pub unsafe fn range_mut(&self, r: Range<usize>) -> &mut [T] {
        self.check(&r);
        #[cfg(loom)]
        for i in r.clone() {
            self.tracker[i % LOOM_TRACKED].with_mut(|_| ());
        }
        // SAFETY: in bounds (checked above) of the slice borrowed for 'a; no
        // other access to these elements by the caller's contract.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr().add(r.start), r.end - r.start) }
    }
}

impl<T> core::fmt::Debug for SharedSlice<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedSlice")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}
