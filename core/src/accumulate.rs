//! Gradient accumulators, generic over the number type.
//!
//! An accumulator is a *strategy* that works on slices of cells, so that any
//! segment of a buffer can be handled by whichever thread owns it and buffers
//! live wherever the caller puts them (a static arena, a `Vec`, an MPI window).
//!
//! | kind | cell | reduction order matters? |
//! |---|---|---|
//! | [`F32Acc`] | `f32` | yes: rounding depends on the order of additions |
//! | [`FixedAcc`] | `i64` with configurable fractional bits | no: integer addition is associative |
//! | [`ExactAcc`] | long (Kulisch) register | no: the sum is exact, rounded once at the end |
//! | `BigFloatAcc` (feature `bigfloat`) | `rug::Float` | no, as long as no addition rounds (reported) |

use core::fmt;

#[cfg(feature = "bigfloat")]
mod bigfloat;
mod exact;
mod fixed;
mod float32;
mod rounding;

#[cfg(feature = "bigfloat")]
pub use bigfloat::{BigFloatAcc, PrecisionError};
pub use exact::{ExactAcc, ExactCell, EXACT_LIMBS};
pub use fixed::{FixedAcc, FracBitsError};
pub use float32::F32Acc;

/// What went wrong while accumulating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccErrorKind {
    /// A NaN or an infinity was added.
    NonFinite,
    /// The value does not fit the accumulator's range (fixed point), or the
    /// rounded result does not fit an `f32`.
    Overflow,
    /// An arbitrary-precision addition had to round, so the result could
    /// depend on the reduction order (raise the precision).
    Inexact,
    /// Two slices that must have the same length do not.
    LengthMismatch,
}

/// An accumulation error with the index (within the slice passed to the
/// failing call) of the first offending element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccError {
    /// Which check failed: non-finite input, overflow, inexact, or length.
    pub kind: AccErrorKind,
    /// Position of the first offending element in the failing call's slice.
    pub index: usize,
}

impl AccError {
    /// The error `kind` at element `index` of the failing call's slice.
    pub const fn new(kind: AccErrorKind, index: usize) -> Self {
        Self { kind, index }
    }

    /// The same error with its index shifted by `offset`, for callers that
    /// pass sub-slices and want the index in the whole buffer.
    pub const fn offset(self, offset: usize) -> Self {
        Self {
            kind: self.kind,
            index: self.index + offset,
        }
    }
}

impl fmt::Display for AccError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            AccErrorKind::NonFinite => "non-finite gradient value (NaN or infinity)",
            AccErrorKind::Overflow => "accumulator overflow",
            AccErrorKind::Inexact => "inexact arbitrary-precision addition (raise the precision)",
            AccErrorKind::LengthMismatch => "slice length mismatch",
        };
        write!(f, "{what} at element {}", self.index)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AccError {}

/// A way of summing `f32` gradients elementwise.
///
/// All slice arguments of one call must have the same length; otherwise the
/// call returns [`AccErrorKind::LengthMismatch`] and changes nothing.
pub trait Accumulator: Sync {
    /// One accumulation register.
    type Cell: Send + Sync;
    /// `true` when every reduction order gives the same bits, so executors
    /// may regroup additions freely (work stealing, thread-local partial sums).
    const ASSOCIATIVE: bool;

    /// Short name for logs and CLI (`f32`, `fixed`, `exact`, `bigfloat`).
    fn name(&self) -> &'static str;
    /// A cell holding zero, to build buffers.
    fn zero_cell(&self) -> Self::Cell;
    /// Set every cell to zero.
    fn zero(&self, cells: &mut [Self::Cell]);
    /// `cells[i] += xs[i]`.
    fn add(&self, cells: &mut [Self::Cell], xs: &[f32]) -> Result<(), AccError>;
    /// `dst[i] += src[i]`.
    fn merge(&self, dst: &mut [Self::Cell], src: &[Self::Cell]) -> Result<(), AccError>;
    /// `out[i] = cells[i]` rounded to the nearest `f32` (ties to even).
    fn round(&self, cells: &[Self::Cell], out: &mut [f32]) -> Result<(), AccError>;

    /// `cells[i] = xs[i]`: the first gradient of a buffer without a separate
    /// [`zero`](Self::zero) pass. Implementations may write the cells without
    /// reading them (the default zeroes, then adds).
    ///
    /// On an error at index `i`, cells `0..i` hold their values and cells
    /// `i..` are unspecified.
    fn assign(&self, cells: &mut [Self::Cell], xs: &[f32]) -> Result<(), AccError> {
        check_len(cells.len(), xs.len())?;
        self.zero(cells);
        self.add(cells, xs)
    }

    /// `cells[i] += xs[0][i] + xs[1][i] + …`: several gradients in one call,
    /// so that implementations can read and write each cell once instead of
    /// once per gradient. Same bits as adding the gradients one by one.
    ///
    /// On an error the cells are unspecified (the default adds the gradients
    /// one after the other); the index is that of an offending element.
    fn add_many(&self, cells: &mut [Self::Cell], xs: &[&[f32]]) -> Result<(), AccError> {
        check_lens(cells.len(), xs)?;
        for x in xs {
            self.add(cells, x)?;
        }
        Ok(())
    }

    /// `cells[i] = xs[0][i] + xs[1][i] + …` (zero when `xs` is empty): like
    /// [`add_many`](Self::add_many) without reading the old cells.
    ///
    /// On an error the cells are unspecified.
    fn assign_many(&self, cells: &mut [Self::Cell], xs: &[&[f32]]) -> Result<(), AccError> {
        check_lens(cells.len(), xs)?;
        match xs.split_first() {
            None => {
                self.zero(cells);
                Ok(())
            }
            Some((first, rest)) => {
                self.assign(cells, first)?;
                self.add_many(cells, rest)
            }
        }
    }

    /// `out[i]` = the sum of `cells[0][i], cells[1][i], …` and `xs[0][i],
    /// xs[1][i], …`, rounded once as by [`round`](Self::round): merge and
    /// round in one pass, without writing cells. For a non-associative
    /// accumulator it is the left fold from zero, cells first.
    ///
    /// On an error at index `i`, `out[0..i]` hold their results and `out[i..]`
    /// are unspecified. The default works one element at a time through a
    /// one-cell scratch buffer; implementations override it for speed.
    fn sum_round(
        &self,
        cells: &[&[Self::Cell]],
        xs: &[&[f32]],
        out: &mut [f32],
    ) -> Result<(), AccError> {
        for c in cells {
            check_len(out.len(), c.len())?;
        }
        check_lens(out.len(), xs)?;
        let mut acc = [self.zero_cell()];
        for i in 0..out.len() {
            let at = |e: AccError| e.offset(i);
            self.zero(&mut acc);
            for c in cells {
                self.merge(&mut acc, &c[i..i + 1]).map_err(at)?;
            }
            for x in xs {
                self.add(&mut acc, &x[i..i + 1]).map_err(at)?;
            }
            self.round(&acc, &mut out[i..i + 1]).map_err(at)?;
        }
        Ok(())
    }
}

/// [`LengthMismatch`](AccErrorKind::LengthMismatch) at the shorter length
/// unless `a == b`.
pub(crate) fn check_len(a: usize, b: usize) -> Result<(), AccError> {
    if a == b {
        Ok(())
    } else {
        Err(AccError::new(AccErrorKind::LengthMismatch, a.min(b)))
    }
}

/// [`check_len`] of `len` against every slice of `xs`.
pub(crate) fn check_lens(len: usize, xs: &[&[f32]]) -> Result<(), AccError> {
    xs.iter().try_for_each(|x| check_len(len, x.len()))
}
