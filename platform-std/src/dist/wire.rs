//! How accumulator cells cross ranks as integers, so that the built-in
//! `MPI_SUM` on `i64` — which MPI may apply in any order and any grouping —
//! gives exactly the sum a single process would get.
//!
//! * [`ExactCell`] (320-bit two's complement): carry-save form. The register
//!   is cut into ten 32-bit digits; each digit travels in its own `i64`
//!   lane (the low digits unsigned, the top one signed), so the lane sums of
//!   up to `2^31` ranks cannot overflow, and the carries are propagated once,
//!   after the reduction ([`ExactWindow::decode`]). Most gradients use a
//!   few of the ten digits: the ranks first agree (one tiny `MPI_MAX`) on the
//!   window of digits any cell needs, and only that window travels.
//! * fixed-point `i64` cells: when `ranks · max|cell|` fits an `i64`, no
//!   partial sum can overflow and cells travel as they are; otherwise they
//!   travel as two carry-save lanes and an out-of-range total is reported as
//!   [`AccErrorKind::Overflow`], never wrapped.

use cllm_core::accumulate::{AccError, AccErrorKind, ExactCell, EXACT_LIMBS};

/// 32-bit digits of an exact register.
pub const EXACT_DIGITS: usize = 2 * EXACT_LIMBS;

fn digits(c: &ExactCell) -> [u32; EXACT_DIGITS] {
    let mut d = [0u32; EXACT_DIGITS];
    for (i, l) in c.limbs().iter().enumerate() {
        d[2 * i] = *l as u32;
        d[2 * i + 1] = (*l >> 32) as u32;
    }
    d
}

/// The digits `lo..=hi` of exact registers as `i64` lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExactWindow {
    lo: usize,
    hi: usize,
}

/// What one rank needs of the exact window, to be combined with
/// [`ExactWindow::agree`] under `MPI_MAX` (two `i64`s).
pub type WindowNeed = [i64; 2];

impl ExactWindow {
    /// All ten digits (always correct, never the cheapest).
    pub const FULL: ExactWindow = ExactWindow {
        lo: 0,
        hi: EXACT_DIGITS - 1,
    };

    /// This rank's need: `[hi, EXACT_DIGITS-1-lo]` where `hi` is the
    /// highest digit that is not a sign extension of the digit below it and
    /// `lo` the lowest nonzero digit over all cells. Elementwise `MPI_MAX` of
    /// the needs of all ranks gives the window every cell fits in.
    pub fn need(cells: &[ExactCell]) -> WindowNeed {
        // OR-accumulate instead of a per-cell search: `mag` collects the
        // bits that differ from each cell's sign (the highest one bounds the
        // signed width of every cell), `any` the set bits (the lowest one
        // bounds the zero low digits). Branch-free, so it vectorises.
        let mut mag = [0u64; EXACT_LIMBS];
        let mut any = [0u64; EXACT_LIMBS];
        for c in cells {
            let l = c.limbs();
            let sign = ((l[EXACT_LIMBS - 1] as i64) >> 63) as u64;
            for k in 0..EXACT_LIMBS {
                mag[k] |= l[k] ^ sign;
                any[k] |= l[k];
            }
        }
        // Highest bit b differing from the sign: b + 2 signed bits suffice,
        // so the top digit needed is (b + 1) / 32.
        let hi = match mag.iter().rposition(|&x| x != 0) {
            Some(k) => (64 * k + 63 - mag[k].leading_zeros() as usize + 1) / 32,
            None => 0, // every cell is 0 or -1
        };
        let lo = match any.iter().position(|&x| x != 0) {
            Some(k) => (64 * k + any[k].trailing_zeros() as usize) / 32,
            None => EXACT_DIGITS - 1, // all zero: no constraint from below
        };
        [hi as i64, (EXACT_DIGITS - 1 - lo) as i64]
    }

    /// The window from the elementwise maximum of every rank's
    /// [`need`](Self::need).
    pub fn agree(max_need: WindowNeed) -> ExactWindow {
        let hi = (max_need[0].clamp(0, EXACT_DIGITS as i64 - 1)) as usize;
        let lo = (EXACT_DIGITS as i64 - 1 - max_need[1]).clamp(0, EXACT_DIGITS as i64 - 1) as usize;
        ExactWindow { lo: lo.min(hi), hi }
    }

    /// `i64` lanes per cell.
    pub fn lanes(&self) -> usize {
        self.hi - self.lo + 1
    }

    /// Write the lanes of `cells` (cell-major) into `out`
    /// (`cells.len() · lanes()` long). Every cell must fit the window,
    /// which [`need`](Self::need) + [`agree`](Self::agree) guarantee.
    pub fn encode(&self, cells: &[ExactCell], out: &mut [i64]) {
        let n = self.lanes();
        debug_assert_eq!(out.len(), cells.len() * n);
        for (c, o) in cells.iter().zip(out.chunks_exact_mut(n)) {
            let d = digits(c);
            for (k, lane) in o.iter_mut().enumerate() {
                let digit = d[self.lo + k];
                *lane = if self.lo + k == self.hi {
                    digit as i32 as i64
                } else {
                    digit as i64
                };
            }
        }
    }

    /// Cells from lane sums (`MPI_SUM` of [`encode`](Self::encode)d
    /// lanes of at most `2^31 - 1` ranks): the carries are propagated and
    /// a total outside the 320-bit range is an
    /// [`Overflow`](AccErrorKind::Overflow) at that element.
    pub fn decode(&self, lanes: &[i64], out: &mut [ExactCell]) -> Result<(), AccError> {
        let n = self.lanes();
        if lanes.len() != out.len() * n {
            return Err(AccError::new(
                AccErrorKind::LengthMismatch,
                out.len().min(lanes.len() / n),
            ));
        }
        for (i, (l, o)) in lanes.chunks_exact(n).zip(out.iter_mut()).enumerate() {
            let mut d = [0u32; EXACT_DIGITS];
            // |lane sum| < ranks·2^32 and |carry| ≤ ranks, so with fewer
            // than 2^31 ranks (MPI's int) every t fits an i64.
            let mut carry = 0i64;
            for (digit, &s) in d[self.lo..=self.hi].iter_mut().zip(l) {
                let t = s + carry;
                *digit = t as u32;
                carry = t >> 32;
            }
            // Above the window the value is `carry`, |carry| < 2^31: its
            // digit, then its sign extension. Only when the window reaches
            // the top digit can the total leave the register.
            if self.hi + 1 < EXACT_DIGITS {
                d[self.hi + 1] = carry as u32;
                d[self.hi + 2..].fill((carry >> 32) as u32);
            } else if carry != -(((d[EXACT_DIGITS - 1] as i32) < 0) as i64) {
                return Err(AccError::new(AccErrorKind::Overflow, i));
            }
            let mut limbs = [0u64; EXACT_LIMBS];
            for (j, limb) in limbs.iter_mut().enumerate() {
                *limb = d[2 * j] as u64 | (d[2 * j + 1] as u64) << 32;
            }
            *o = ExactCell::from_limbs(limbs);
        }
        Ok(())
    }
}

/// How fixed-point cells travel in one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixedWire {
    /// As they are: `ranks · max|cell| ≤ i64::MAX`, so no partial sum of
    /// any grouping can overflow.
    Direct,
    /// Two carry-save lanes, `cell mod 2^32` and `cell >> 32`.
    Split,
}

impl FixedWire {
    /// This rank's need, for `MPI_MAX`: the largest `|cell|` (saturated at
    /// `i64::MAX`).
    pub fn need(cells: &[i64]) -> i64 {
        cells
            .iter()
            .map(|c| c.unsigned_abs().min(i64::MAX as u64) as i64)
            .max()
            .unwrap_or(0)
    }

    /// The encoding for `ranks` ranks whose largest `|cell|` is `max_abs`.
    pub fn agree(max_abs: i64, ranks: usize) -> FixedWire {
        if (max_abs as u128) * (ranks as u128) <= i64::MAX as u128 && max_abs < i64::MAX {
            FixedWire::Direct
        } else {
            FixedWire::Split
        }
    }

    /// `i64` lanes per cell.
    pub fn lanes(&self) -> usize {
        match self {
            FixedWire::Direct => 1,
            FixedWire::Split => 2,
        }
    }

    /// The lanes of `cells` into `out` (`cells.len() · lanes()` long).
    pub fn encode(&self, cells: &[i64], out: &mut [i64]) {
        match self {
            FixedWire::Direct => out.copy_from_slice(cells),
            FixedWire::Split => {
                for (c, o) in cells.iter().zip(out.chunks_exact_mut(2)) {
                    o[0] = c & 0xffff_ffff;
                    o[1] = c >> 32;
                }
            }
        }
    }

    /// Cells from lane sums; a total outside `i64` is an
    /// [`Overflow`](AccErrorKind::Overflow) at that element.
    pub fn decode(&self, lanes: &[i64], out: &mut [i64]) -> Result<(), AccError> {
        let n = self.lanes();
        if lanes.len() != out.len() * n {
            return Err(AccError::new(
                AccErrorKind::LengthMismatch,
                out.len().min(lanes.len() / n),
            ));
        }
        match self {
            FixedWire::Direct => out.copy_from_slice(lanes),
            FixedWire::Split => {
                for (i, (l, o)) in lanes.chunks_exact(2).zip(out.iter_mut()).enumerate() {
                    let t = ((l[1] as i128) << 32) + l[0] as i128;
                    *o = i64::try_from(t).map_err(|_| AccError::new(AccErrorKind::Overflow, i))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cllm_core::accumulate::{Accumulator, ExactAcc};

    /// SplitMix64.
    fn rng(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn random_f32(seed: &mut u64) -> f32 {
        let r = rng(seed);
        match r % 5 {
            0 => 0.0,
            1 => {
                f32::from_bits((r >> 8) as u32 & 0x7f7f_ffff) * if r & 1 == 0 { 1.0 } else { -1.0 }
            }
            _ => ((r >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 1e-2,
        }
    }

    /// Lane sums of several "ranks" decode to the merged register.
    fn check_exact(ranks: usize, len: usize, seed: u64) {
        let mut s = seed;
        let per_rank: Vec<Vec<ExactCell>> = (0..ranks)
            .map(|_| {
                let mut cells = vec![ExactCell::ZERO; len];
                for _ in 0..3 {
                    let xs: Vec<f32> = (0..len).map(|_| random_f32(&mut s)).collect();
                    ExactAcc.add(&mut cells, &xs).unwrap();
                }
                cells
            })
            .collect();
        let mut want = vec![ExactCell::ZERO; len];
        for c in &per_rank {
            ExactAcc.merge(&mut want, c).unwrap();
        }
        let need = per_rank
            .iter()
            .map(|c| ExactWindow::need(c))
            .fold([0, 0], |a, b| [a[0].max(b[0]), a[1].max(b[1])]);
        let w = ExactWindow::agree(need);
        let mut sums = vec![0i64; len * w.lanes()];
        let mut lanes = vec![0i64; len * w.lanes()];
        for c in &per_rank {
            w.encode(c, &mut lanes);
            for (s, l) in sums.iter_mut().zip(&lanes) {
                *s += l;
            }
        }
        let mut got = vec![ExactCell::ZERO; len];
        w.decode(&sums, &mut got).unwrap();
        assert_eq!(got, want, "ranks {ranks} window {w:?}");
        // The full window gives the same cells.
        let mut sums = vec![0i64; len * EXACT_DIGITS];
        let mut lanes = vec![0i64; len * EXACT_DIGITS];
        for c in &per_rank {
            ExactWindow::FULL.encode(c, &mut lanes);
            for (s, l) in sums.iter_mut().zip(&lanes) {
                *s += l;
            }
        }
        ExactWindow::FULL.decode(&sums, &mut got).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn exact_lanes_sum_to_the_merged_register() {
        for (ranks, seed) in [(1, 1), (2, 2), (3, 3), (7, 4), (64, 5)] {
            check_exact(ranks, 257, seed);
        }
    }

    #[test]
    fn small_gradients_use_a_narrow_window() {
        let mut cells = vec![ExactCell::ZERO; 4];
        ExactAcc
            .add(&mut cells, &[1e-3, -2.5e-4, 0.0, 7e-2])
            .unwrap();
        let w = ExactWindow::agree(ExactWindow::need(&cells));
        assert!(w.lanes() <= 3, "{w:?}");
        let all_zero = ExactWindow::agree(ExactWindow::need(&[ExactCell::ZERO]));
        assert_eq!(all_zero.lanes(), 1);
    }

    #[test]
    fn exact_overflow_is_reported_not_wrapped() {
        let max = ExactCell::from_limbs([u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX >> 1]);
        let w = ExactWindow::agree(ExactWindow::need(&[max]));
        let mut lanes = vec![0i64; w.lanes()];
        w.encode(&[max], &mut lanes);
        let doubled: Vec<i64> = lanes.iter().map(|x| 2 * x).collect();
        let mut out = [ExactCell::ZERO];
        assert_eq!(
            w.decode(&doubled, &mut out).unwrap_err().kind,
            AccErrorKind::Overflow
        );
        // The most negative register plus itself too.
        let min = ExactCell::from_limbs([0, 0, 0, 0, 1 << 63]);
        let w = ExactWindow::agree(ExactWindow::need(&[min]));
        let mut lanes = vec![0i64; w.lanes()];
        w.encode(&[min], &mut lanes);
        let mut out = [ExactCell::ZERO];
        w.decode(&lanes, &mut out).unwrap();
        assert_eq!(out[0], min);
        let doubled: Vec<i64> = lanes.iter().map(|x| 2 * x).collect();
        assert!(w.decode(&doubled, &mut out).is_err());
    }

    #[test]
    fn fixed_direct_and_split() {
        let cells = [5i64, -7, i64::MAX / 3, i64::MIN / 3];
        let need = FixedWire::need(&cells);
        assert_eq!(FixedWire::agree(need, 3), FixedWire::Direct);
        assert_eq!(FixedWire::agree(need, 4), FixedWire::Split);
        assert_eq!(
            FixedWire::agree(FixedWire::need(&[i64::MIN]), 1),
            FixedWire::Split
        );
        for wire in [FixedWire::Direct, FixedWire::Split] {
            let mut lanes = vec![0i64; cells.len() * wire.lanes()];
            wire.encode(&cells, &mut lanes);
            let sums: Vec<i64> = lanes.iter().map(|x| 3 * x).collect();
            let mut out = [0i64; 4];
            wire.decode(&sums, &mut out).unwrap();
            assert_eq!(out, cells.map(|c| 3 * c));
        }
        let big = [i64::MAX / 2 + 1];
        let mut lanes = [0i64; 2];
        FixedWire::Split.encode(&big, &mut lanes);
        let sums = lanes.map(|x| 2 * x);
        let mut out = [0i64];
        assert_eq!(
            FixedWire::Split.decode(&sums, &mut out).unwrap_err(),
            AccError::new(AccErrorKind::Overflow, 0)
        );
    }
}
