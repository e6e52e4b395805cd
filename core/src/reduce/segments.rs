//! Fixed segments of a parameter-sized buffer and who owns which.

use core::num::NonZeroUsize;
use core::ops::Range;

/// Elements per segment. A constant, independent of thread count, depth and
/// branching, so that anything summed per segment (the gradient norm) is
/// summed in the same order on every executor. 4096 `f32` = 16 KiB, a few
/// pages: large enough to amortise the per-segment loop, small enough that
/// a few hundred participants still get work on GPT-2-small-sized buffers.
pub const SEGMENT_LEN: usize = 4096;

/// A buffer of `len` elements cut into segments of `segment_len` elements
/// (the last one possibly shorter).
///
/// With `n` participants, participant `i` owns segments `i, i+n, i+2n, …`
/// ([`Segments::owned`]): interleaving keeps the load balanced when `len` is
/// only a few segments long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Segments {
    len: usize,
    segment_len: usize,
}

impl Segments {
    /// `len` elements in segments of [`SEGMENT_LEN`].
    pub const fn new(len: usize) -> Self {
        Segments {
            len,
            segment_len: SEGMENT_LEN,
        }
    }

    /// `len` elements in segments of `segment_len` (tests and model checkers
    /// use tiny segments; executors use [`Segments::new`]).
    pub const fn with_segment_len(len: usize, segment_len: NonZeroUsize) -> Self {
        Segments {
            len,
            segment_len: segment_len.get(),
        }
    }

    /// Elements in the whole buffer.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty (then there are no segments).
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements per (full) segment.
    pub const fn segment_len(&self) -> usize {
        self.segment_len
    }

    /// Number of segments, `ceil(len / segment_len)`.
    pub const fn count(&self) -> usize {
        self.len.div_ceil(self.segment_len)
    }

    /// Element range of segment `s`; empty (`len..len`) when `s >= count()`.
    pub const fn range(&self, s: usize) -> Range<usize> {
        let start = s.saturating_mul(self.segment_len);
        if start >= self.len {
            return self.len..self.len;
        }
        let end = if self.len - start < self.segment_len {
            self.len
        } else {
            start + self.segment_len
        };
        start..end
    }

    /// The participant that owns segment `s` among `participants`
    /// (`None` when `participants == 0`).
    pub const fn owner(&self, s: usize, participants: usize) -> Option<usize> {
        if participants == 0 {
            None
        } else {
            Some(s % participants)
        }
    }

    /// Segments owned by `participant` among `participants`:
    /// `participant, participant + participants, …`. Empty when
    /// `participant >= participants`.
    pub const fn owned(&self, participant: usize, participants: usize) -> Owned {
        let count = self.count();
        let next = if participant < participants {
            participant
        } else {
            count
        };
        Owned {
            next,
            step: participants,
            count,
        }
    }

    /// Element ranges of the segments owned by `participant`.
    pub fn owned_ranges(
        &self,
        participant: usize,
        participants: usize,
    ) -> impl Iterator<Item = Range<usize>> {
        let this = *self;
        self.owned(participant, participants)
            .map(move |s| this.range(s))
    }
}

/// Iterator over the segment indices a participant owns
/// (see [`Segments::owned`]).
#[derive(Clone, Debug)]
pub struct Owned {
    next: usize,
    step: usize,
    count: usize,
}

impl Iterator for Owned {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.next >= self.count {
            return None;
        }
        let s = self.next;
        // step >= 1 here: a participant only starts below count when participants > participant >= 0.
        self.next = self.next.saturating_add(self.step);
        Some(s)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = if self.next >= self.count {
            0
        } else {
            (self.count - self.next - 1) / self.step + 1
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Owned {}
