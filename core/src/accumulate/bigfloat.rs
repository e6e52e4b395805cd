//! Arbitrary-precision accumulation with `rug::Float` (feature `bigfloat`,
//! std only: GMP/MPFR need a hosted target and allocate).
//!
//! A sum is order independent only while no addition rounds, so every
//! addition's rounding direction is checked and any rounding is reported as
//! [`Inexact`](AccErrorKind::Inexact): either the result is exact (and then
//! the same for every order) or the caller learns that the precision is too
//! low. The exact sum of `n` finite `f32` values is a multiple of `2^-149`
//! below `n · 2^128`, so it spans at most `277 + log2(n)` bits: precision `p`
//! never rounds for up to `2^(p - 277)` terms (320 bits: `2^43` terms).

use core::cmp::Ordering;

use rug::float::Round;
use rug::ops::AddAssignRound;
use rug::{Assign, Float};

use super::{AccError, AccErrorKind, Accumulator};

/// Accumulator whose cells are `rug::Float` at a fixed precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BigFloatAcc {
    precision: u32,
}

/// A precision outside MPFR's accepted range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrecisionError {
    /// The rejected precision in bits.
    pub precision: u32,
    /// The smallest accepted precision.
    pub min: u32,
    /// The largest accepted precision.
    pub max: u32,
}

impl core::fmt::Display for PrecisionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "bigfloat precision {} out of range {}..={}",
            self.precision, self.min, self.max
        )
    }
}

impl std::error::Error for PrecisionError {}

impl BigFloatAcc {
    /// A precision at which sums of `f32` values never round (up to `2^235`
    /// terms; the exact sum of `n` terms needs at most `277 + log2(n)` bits).
    pub const EXACT_PRECISION: u32 = 512;

    /// An accumulator with `precision_bits` of significand per cell.
    pub fn new(precision_bits: u32) -> Result<Self, PrecisionError> {
        let (min, max) = (rug::float::prec_min(), rug::float::prec_max());
        if (min..=max).contains(&precision_bits) {
            Ok(Self {
                precision: precision_bits,
            })
        } else {
            Err(PrecisionError {
                precision: precision_bits,
                min,
                max,
            })
        }
    }

    /// Significand bits of a cell.
    pub fn precision(&self) -> u32 {
        self.precision
    }
}

fn check_len(a: usize, b: usize) -> Result<(), AccError> {
    if a == b {
        Ok(())
    } else {
        Err(AccError::new(AccErrorKind::LengthMismatch, a.min(b)))
    }
}

/// On an error at index `i`, cells `0..i` have been updated; for
/// [`NonFinite`](AccErrorKind::NonFinite) cell `i` is unchanged, for
/// [`Inexact`](AccErrorKind::Inexact) it holds the rounded sum.
impl Accumulator for BigFloatAcc {
    type Cell = Float;
    const ASSOCIATIVE: bool = true;

    fn name(&self) -> &'static str {
        "bigfloat"
    }
    fn zero_cell(&self) -> Float {
        Float::new(self.precision)
    }
    fn zero(&self, cells: &mut [Float]) {
        for c in cells {
            c.assign(0);
        }
    }
    fn add(&self, cells: &mut [Float], xs: &[f32]) -> Result<(), AccError> {
        check_len(cells.len(), xs.len())?;
        for (i, (c, &x)) in cells.iter_mut().zip(xs).enumerate() {
            if !x.is_finite() {
                return Err(AccError::new(AccErrorKind::NonFinite, i));
            }
            if c.add_assign_round(x, Round::Nearest) != Ordering::Equal {
                return Err(AccError::new(AccErrorKind::Inexact, i));
            }
        }
        Ok(())
    }
    fn merge(&self, dst: &mut [Float], src: &[Float]) -> Result<(), AccError> {
        check_len(dst.len(), src.len())?;
        for (i, (d, s)) in dst.iter_mut().zip(src).enumerate() {
            // Cells only ever hold sums of finite values, but a cell built
            // elsewhere might not.
            if !s.is_finite() {
                return Err(AccError::new(AccErrorKind::NonFinite, i));
            }
            if d.add_assign_round(s, Round::Nearest) != Ordering::Equal {
                return Err(AccError::new(AccErrorKind::Inexact, i));
            }
        }
        Ok(())
    }
    fn round(&self, cells: &[Float], out: &mut [f32]) -> Result<(), AccError> {
        check_len(cells.len(), out.len())?;
        for (i, (o, c)) in out.iter_mut().zip(cells).enumerate() {
            if !c.is_finite() {
                return Err(AccError::new(AccErrorKind::NonFinite, i));
            }
            // MPFR's get_flt rounds once, subnormal results included; a
            // finite value that rounds to an infinity is an overflow.
            let v = c.to_f32_round(Round::Nearest);
            if !v.is_finite() {
                return Err(AccError::new(AccErrorKind::Overflow, i));
            }
            *o = v;
        }
        Ok(())
    }
}
