//! Fixed-point accumulation: each cell is an `i64` counting units of
//! `2^-frac_bits`.
//!
//! Integer addition is associative, so every reduction order gives the same
//! bits. The price is a bounded range and resolution: an input is rounded
//! (once, to nearest-even) to a multiple of `2^-frac_bits` when it is added,
//! and anything outside `±2^(63 - frac_bits)` is an
//! [`Overflow`](AccErrorKind::Overflow) error instead of a wrapped value.

use super::rounding::{round_scaled, F32_MIN_EXP};
use super::{AccError, AccErrorKind, Accumulator};

/// Fixed-point accumulator; cells are `i64` multiples of `2^-frac_bits`.
///
/// | `frac_bits` | resolution | range (exclusive) |
/// |---|---|---|
/// | 32 (default) | `2^-32 ≈ 2.3e-10` | `±2^31 ≈ ±2.1e9` |
/// | `f` | `2^-f` | `±2^(63-f)` |
///
/// Inputs are rounded to the resolution (so tiny gradients vanish: choose
/// `frac_bits` for the gradient scale); sums are exact within the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedAcc {
    frac_bits: u32,
}

/// A `frac_bits` outside `0..=FixedAcc::MAX_FRAC_BITS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FracBitsError {
    /// The rejected value.
    pub frac_bits: u32,
    /// The largest accepted value.
    pub max: u32,
}

impl core::fmt::Display for FracBitsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "fixed-point frac_bits {} out of range 0..={}",
            self.frac_bits, self.max
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FracBitsError {}

impl Default for FixedAcc {
    fn default() -> Self {
        Self {
            frac_bits: Self::DEFAULT_FRAC_BITS,
        }
    }
}

impl FixedAcc {
    /// The default resolution, `2^-32`, with range `±2^31`.
    pub const DEFAULT_FRAC_BITS: u32 = 32;
    /// Beyond 149 fractional bits every `f32` (a multiple of `2^-149`) is
    /// already exact, so more bits would only shrink the range.
    pub const MAX_FRAC_BITS: u32 = 149;

    /// An accumulator with resolution `2^-frac_bits`.
    pub const fn new(frac_bits: u32) -> Result<Self, FracBitsError> {
        if frac_bits <= Self::MAX_FRAC_BITS {
            Ok(Self { frac_bits })
        } else {
            Err(FracBitsError {
                frac_bits,
                max: Self::MAX_FRAC_BITS,
            })
        }
    }

    /// Number of fractional bits of a cell.
    pub const fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// `x` as a cell: `x · 2^frac_bits` rounded to the nearest integer, ties
    /// to even. Exact integer arithmetic on the bits of `x` (one rounding).
    ///
    /// Errors (index 0): [`NonFinite`](AccErrorKind::NonFinite) for NaN and
    /// infinities, [`Overflow`](AccErrorKind::Overflow) when the result does
    /// not fit an `i64`.
    pub fn to_cell(&self, x: f32) -> Result<i64, AccError> {
        to_fixed(x, self.frac_bits).map_err(|kind| AccError::new(kind, 0))
    }

    /// The value of a cell rounded to the nearest `f32` (ties to even).
    ///
    /// Never fails: `|cell| · 2^-frac_bits < 2^63` always fits an `f32`.
    pub fn to_f32(&self, cell: i64) -> f32 {
        if self.frac_bits <= 126 {
            // `as f32` rounds correctly once; multiplying by 2^-frac_bits is
            // then exact because a nonzero result is at least 2^-126 (normal).
            (cell as f32) * pow2(-(self.frac_bits as i32))
        } else {
            // The result can be subnormal: scaling after `as f32` could round
            // a second time, so round the integer directly.
            // |cell| < 2^64 and frac_bits > 126: far below f32::MAX, so the
            // `None` (overflow) arm cannot happen.
            round_scaled(
                cell < 0,
                cell.unsigned_abs() as u128,
                -(self.frac_bits as i32),
            )
            .unwrap_or(f32::INFINITY)
        }
    }
}

/// `2^e` for `e` in the normal range `-126..=127`.
fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

/// Round `x · 2^frac_bits` to an `i64`, ties to even, with checks.
///
/// Branch-free apart from the (predictable) error checks: gradients come
/// with random exponents, so a branch on "shift left or right" would be
/// mispredicted about half the time.
#[inline(always)]
fn to_fixed(x: f32, frac_bits: u32) -> Result<i64, AccErrorKind> {
    let bits = x.to_bits();
    let biased = (bits >> 23) & 0xff;
    if biased == 0xff {
        return Err(AccErrorKind::NonFinite);
    }
    // x = ±m · 2^(max(biased, 1) - 150), the subnormal case included.
    let m = ((bits & 0x7f_ffff) | (((biased != 0) as u32) << 23)) as u128;
    let shift = biased.max(1) as i32 + F32_MIN_EXP - 1 + frac_bits as i32;
    // Only normal x can have shift > 0 (frac_bits <= 149), so 2^23 <= m here:
    // past 40 the result is at least 2^64.
    if shift > 40 {
        return Err(AccErrorKind::Overflow);
    }
    // m · 2^shift = (m · 2^64) / 2^s with s = 64 - shift >= 24, rounded to
    // nearest-even by adding half - 1 plus the last kept bit before shifting.
    // Beyond s = 88 the quotient is below 1/2 and rounds to 0 anyway, so s is
    // clamped to keep the shifts in range (no overflow: t < 2^88, half <= 2^126).
    let s = (64 - shift).min(127) as u32;
    let t = m << 64;
    let mag = ((t + (1u128 << (s - 1)) - 1 + ((t >> s) & 1)) >> s) as u64;
    // The i64 range is [-2^63, 2^63 - 1].
    let neg = (bits >> 31) as u64;
    if mag > (1u64 << 63) - 1 + neg {
        return Err(AccErrorKind::Overflow);
    }
    let sign = 0i64.wrapping_sub(neg as i64);
    Ok(((mag as i64) ^ sign).wrapping_sub(sign))
}

fn check_len(a: usize, b: usize) -> Result<(), AccError> {
    if a == b {
        Ok(())
    } else {
        Err(AccError::new(AccErrorKind::LengthMismatch, a.min(b)))
    }
}

/// On an error at index `i`, cells `0..i` have been updated and cells `i..`
/// are unchanged.
impl Accumulator for FixedAcc {
    type Cell = i64;
    const ASSOCIATIVE: bool = true;

    fn name(&self) -> &'static str {
        "fixed"
    }
    fn zero_cell(&self) -> i64 {
        0
    }
    fn zero(&self, cells: &mut [i64]) {
        cells.fill(0);
    }
    fn add(&self, cells: &mut [i64], xs: &[f32]) -> Result<(), AccError> {
        check_len(cells.len(), xs.len())?;
        for (i, (c, &x)) in cells.iter_mut().zip(xs).enumerate() {
            let v = to_fixed(x, self.frac_bits).map_err(|k| AccError::new(k, i))?;
            *c = c
                .checked_add(v)
                .ok_or(AccError::new(AccErrorKind::Overflow, i))?;
        }
        Ok(())
    }
    fn merge(&self, dst: &mut [i64], src: &[i64]) -> Result<(), AccError> {
        check_len(dst.len(), src.len())?;
        for (i, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
            *d = d
                .checked_add(s)
                .ok_or(AccError::new(AccErrorKind::Overflow, i))?;
        }
        Ok(())
    }
    fn round(&self, cells: &[i64], out: &mut [f32]) -> Result<(), AccError> {
        check_len(cells.len(), out.len())?;
        for (o, &c) in out.iter_mut().zip(cells) {
            *o = self.to_f32(c);
        }
        Ok(())
    }
    fn assign(&self, cells: &mut [i64], xs: &[f32]) -> Result<(), AccError> {
        check_len(cells.len(), xs.len())?;
        for (i, (c, &x)) in cells.iter_mut().zip(xs).enumerate() {
            *c = to_fixed(x, self.frac_bits).map_err(|k| AccError::new(k, i))?;
        }
        Ok(())
    }
    fn sum_round(&self, cells: &[&[i64]], xs: &[&[f32]], out: &mut [f32]) -> Result<(), AccError> {
        for c in cells {
            check_len(out.len(), c.len())?;
        }
        for x in xs {
            check_len(out.len(), x.len())?;
        }
        let overflow = |i| AccError::new(AccErrorKind::Overflow, i);
        for (i, o) in out.iter_mut().enumerate() {
            let mut sum = 0i64;
            for c in cells {
                sum = sum.checked_add(c[i]).ok_or(overflow(i))?;
            }
            for x in xs {
                let v = to_fixed(x[i], self.frac_bits).map_err(|k| AccError::new(k, i))?;
                sum = sum.checked_add(v).ok_or(overflow(i))?;
            }
            *o = self.to_f32(sum);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_to_even_at_zero_frac_bits() {
        let acc = FixedAcc::new(0).unwrap();
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (0.75, 1),
        ];
        for (x, n) in cases {
            assert_eq!(acc.to_cell(x), Ok(n), "{x}");
        }
    }

    #[test]
    fn both_round_paths_agree_where_they_overlap() {
        // frac_bits 126 takes the float path; compare against the integer one.
        for cell in [
            1i64,
            -1,
            3,
            (1 << 24) + 1,
            i64::MAX,
            i64::MIN,
            0x1234_5678_9abc_def1,
        ] {
            let fast = FixedAcc::new(126).unwrap().to_f32(cell);
            let slow = round_scaled(cell < 0, cell.unsigned_abs() as u128, -126).unwrap();
            assert_eq!(fast.to_bits(), slow.to_bits(), "{cell}");
        }
    }
}
