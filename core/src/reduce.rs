//! The fixed-segment, lock-free reduction protocol that every executor drives.
//!
//! # Pieces
//!
//! * [`Segments`]: a parameter-sized buffer cut into fixed segments of
//!   [`SEGMENT_LEN`] elements; with `n` participants, participant `i` owns
//!   segments `i, i+n, …`, so participants write disjoint memory and take
//!   no lock.
//! * [`SharedSlice`]: a buffer several threads access at once in disjoint
//!   ranges (all the `unsafe` lives there).
//! * [`SpinBarrier`]: separates phases; abortable, so a failing participant
//!   never leaves the others spinning.
//! * [`FoldPlan`]: the canonical `f32` reduction order of a tree, as buffer
//!   operations replayed segment by segment.
//! * [`merge_owned_segments`], [`replay_owned_segments`],
//!   [`round_owned_segments`]: one participant's share of a phase.
//! * [`reduce_sequential`] (and [`fold_sequential`],
//!   [`accumulate_sequential`]): the reference driver on one core.
//!
//! # The seam
//!
//! A step reduces `U` unit gradients (each computed single-threaded into an
//! `f32` buffer, so its bits do not depend on who computes it).
//!
//! *Associative accumulators* (`A::ASSOCIATIVE`: fixed point, exact) give
//! the same bits in any order, so each participant adds whichever units it
//! gets into its own cells, then, after a barrier, every participant calls
//! [`merge_owned_segments`] (all partial sums into one) and
//! [`round_owned_segments`] on its segments.
//!
//! *`f32`* must follow the tree: every participant builds the same
//! [`FoldPlan`] (a pure function of shape, units and width = number of
//! participants) and, per round, computes unit `k` into
//! [`FoldRound::unit_buffer`]`(k)`, waits at the barrier, replays the
//! round's additions on its own segments ([`replay_owned_segments`]) and
//! waits again. Memory is `width + depth + 1` gradient buffers, never one
//! per sphere. For a fixed shape the bits do not depend on the number of
//! participants.
//!
//! The sequential driver runs the same protocol on one core:
//!
//! ```
//! use cllm_core::accumulate::F32Acc;
//! use cllm_core::reduce::{fold_sequential, reduce_sequential, sequential_cell_len, sequential_f32_len, FoldPlan};
//! use cllm_core::tree::Shape;
//!
//! const P: usize = 4; // parameters
//! const DEPTH: u32 = 2;
//! let shape = Shape::new(DEPTH, 3).unwrap(); // 13 spheres, 9 leaves
//! let units = 5;
//! let unit_grad = |u: usize, g: &mut [f32]| {
//!     for (i, x) in g.iter_mut().enumerate() {
//!         *x = (u * P + i) as f32 * 0.5;
//!     }
//! };
//!
//! // Buffers sized at compile time: (depth + 2) * P floats for f32, no cells.
//! let mut bufs = [0.0f32; sequential_f32_len::<F32Acc>(DEPTH, P)];
//! let mut cells = [0.0f32; sequential_cell_len::<F32Acc>(P)];
//! let mut grad = [0.0f32; P];
//! reduce_sequential(&F32Acc, shape, units, &mut bufs, &mut cells, &mut grad, unit_grad)?;
//! assert_eq!(grad, [20.0, 22.5, 25.0, 27.5]);
//!
//! // Three units per round (the schedule of three threads): the same bits.
//! let mut wide = [0.0f32; FoldPlan::buffers_for(DEPTH, 3) * P];
//! let mut grad3 = [0.0f32; P];
//! fold_sequential(&F32Acc, shape, units, 3, &mut wide, &mut grad3, unit_grad)?;
//! assert_eq!(grad.map(f32::to_bits), grad3.map(f32::to_bits));
//! # Ok::<(), cllm_core::reduce::ReduceError>(())
//! ```
//!
//! and a threaded executor drives it like this (std threads here; the
//! protocol itself only needs the atomics in [`SpinBarrier`]):
//!
//! ```
//! # use cllm_core::accumulate::F32Acc;
//! # use cllm_core::reduce::*;
//! # use cllm_core::tree::Shape;
//! # const P: usize = 4;
//! # let shape = Shape::new(2, 3).unwrap();
//! # let units = 5;
//! # let unit_grad = |u: usize, g: &mut [f32]| for (i, x) in g.iter_mut().enumerate() { *x = (u * P + i) as f32 * 0.5 };
//! let threads = 2;
//! let mut storage = vec![[0.0f32; P]; FoldPlan::buffers_for(shape.depth(), threads)];
//! let bufs: Vec<SharedSlice<f32>> = storage.iter_mut().map(|b| SharedSlice::new(b)).collect();
//! let (barrier, segments) = (SpinBarrier::new(threads), Segments::new(P));
//! let roots: Vec<Result<Option<usize>, ReduceError>> = std::thread::scope(|s| {
//!     let workers: Vec<_> = (0..threads)
//!         .map(|t| {
//!             let (bufs, barrier, segments) = (&bufs, &barrier, &segments);
//!             s.spawn(move || {
//!                 let guard = barrier.abort_on_drop(); // a failure releases the others
//!                 let mut plan = FoldPlan::new(shape, units, threads)?;
//!                 while let Some(round) = plan.next_round() {
//!                     if let Some((u, b)) = round.unit_buffers().nth(t) {
//!                         // SAFETY: buffer b is this thread's alone until the barrier.
//!                         let g = unsafe { bufs[b].range_mut(0..P) };
//!                         g.fill(0.0);
//!                         unit_grad(u, g);
//!                     }
//!                     barrier.wait()?;
//!                     // SAFETY: every thread replays only the segments it owns.
//!                     unsafe { replay_owned_segments(&F32Acc, &round, segments, t, threads, bufs)? };
//!                     barrier.wait()?;
//!                 }
//!                 guard.disarm();
//!                 Ok(plan.root())
//!             })
//!         })
//!         .collect();
//!     workers.into_iter().map(|w| w.join().unwrap()).collect()
//! });
//! let root = roots[0].unwrap().unwrap();
//! drop(bufs);
//! assert_eq!(storage[root], [20.0, 22.5, 25.0, 27.5]);
//! ```

use core::fmt;

use crate::accumulate::AccError;

mod barrier;
mod fold;
mod merge;
mod segments;
mod sequential;
mod shared;

pub use barrier::{AbortGuard, Aborted, SpinBarrier};
pub use fold::{Add, FoldPlan, FoldRound, RoundOps, MAX_DEPTH, MAX_WIDTH};
pub use merge::{merge_owned_segments, replay_owned_segments, round_owned_segments};
pub use segments::{Owned, Segments, SEGMENT_LEN};
pub use sequential::{
    accumulate_sequential, fold_sequential, reduce_sequential, sequential_cell_len,
    sequential_f32_len,
};
pub use shared::SharedSlice;
#[cfg(loom)]
pub use shared::LOOM_TRACKED;
/// How [`SpinBarrier`] waiters relax (re-exported from `spin`, so executors
/// can pass their own, e.g. one that yields to the OS scheduler).
pub use spin::relax::{RelaxStrategy, Spin};

/// Why a reduction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceError {
    /// An accumulator call failed; the index is within the whole buffer.
    Acc(AccError),
    /// A buffer has the wrong number of elements.
    BufferLength {
        /// Elements needed: exactly for segment buffers, at least for the
        /// sequential reductions.
        expected: usize,
        /// Elements the buffer has.
        got: usize,
    },
    /// Fewer physical buffers than the fold plan uses.
    TooFewBuffers {
        /// Buffers the fold round uses ([`FoldRound::buffers`]).
        needed: usize,
        /// Buffers that were passed.
        got: usize,
    },
    /// The fold width (units per round) is 0 or above [`MAX_WIDTH`].
    Width {
        /// The width that was asked for.
        width: usize,
        /// The largest supported width, [`MAX_WIDTH`].
        max: usize,
    },
    /// The tree is deeper than a fold plan supports ([`MAX_DEPTH`]).
    Depth {
        /// Depth of the tree's shape.
        depth: u32,
        /// The deepest tree a plan supports, [`MAX_DEPTH`].
        max: u32,
    },
    /// Source `src` of a merge is the destination buffer itself.
    Aliased {
        /// Index of that source in `srcs` (0 for `cells` in
        /// [`round_owned_segments`]).
        src: usize,
    },
    /// The barrier was aborted by a participant.
    Aborted,
}

impl From<AccError> for ReduceError {
    fn from(e: AccError) -> Self {
        ReduceError::Acc(e)
    }
}

impl From<Aborted> for ReduceError {
    fn from(_: Aborted) -> Self {
        ReduceError::Aborted
    }
}

impl fmt::Display for ReduceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ReduceError::Acc(e) => write!(f, "{e}"),
            ReduceError::BufferLength { expected, got } => {
                write!(f, "buffer of {got} elements where {expected} are needed")
            }
            ReduceError::TooFewBuffers { needed, got } => {
                write!(
                    f,
                    "{got} gradient buffers where the fold plan uses {needed}"
                )
            }
            ReduceError::Width { width, max } => {
                write!(f, "fold width {width} is not in 1..={max}")
            }
            ReduceError::Depth { depth, max } => {
                write!(f, "tree depth {depth} exceeds the fold plan maximum {max}")
            }
            ReduceError::Aliased { src } => {
                write!(f, "merge source {src} is the destination buffer")
            }
            ReduceError::Aborted => write!(f, "{Aborted}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ReduceError {}
