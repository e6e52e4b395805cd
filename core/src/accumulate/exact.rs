//! Exact (Kulisch) accumulation: each cell is a 320-bit two's-complement
//! fixed-point register whose last bit is worth `2^-149`, the smallest `f32`
//! subnormal.
//!
//! Every finite `f32` is an integer multiple of `2^-149` below `2^128`, i.e.
//! below `2^277` register units, so it lands in the register without rounding,
//! and 320 bits leave `2^42` maximal-magnitude terms of headroom before the
//! sign bit is reached (reported as [`Overflow`](AccErrorKind::Overflow), never
//! wrapped). Sums are exact, hence independent of the order of additions; the
//! only rounding is the final, correct (nearest-even) one in [`ExactCell::to_f32`].

use super::rounding::{round_normalized, F32_MIN_EXP};
use super::{AccError, AccErrorKind, Accumulator};

/// Number of 64-bit limbs of an [`ExactCell`].
pub const EXACT_LIMBS: usize = 5;

/// Exact accumulator (cells are [`ExactCell`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExactAcc;

/// One exact register: the value is `limbs · 2^-149`, `limbs` a 320-bit
/// two's-complement integer stored little-endian (limb 0 least significant).
///
/// Plain data (`Copy`, no pointers), so cells can be shipped between
/// processes with [`to_le_bytes`](Self::to_le_bytes) /
/// [`from_le_bytes`](Self::from_le_bytes) and merged there.
/// `repr(transparent)`: a slice of cells has the memory layout of a slice of
/// `[u64; 5]` (native endianness), for zero-copy transports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct ExactCell {
    limbs: [u64; EXACT_LIMBS],
}

impl ExactCell {
    /// The register holding zero.
    pub const ZERO: Self = Self {
        limbs: [0; EXACT_LIMBS],
    };
    /// Size of the serialized form.
    pub const BYTES: usize = 8 * EXACT_LIMBS;
    /// The weight of the last bit, as a power of two: `2^-149`.
    pub const LSB_EXP: i32 = F32_MIN_EXP;

    /// The register with these limbs (little-endian, two's complement).
    pub const fn from_limbs(limbs: [u64; EXACT_LIMBS]) -> Self {
        Self { limbs }
    }

    /// The limbs (little-endian, two's complement).
    pub const fn limbs(&self) -> [u64; EXACT_LIMBS] {
        self.limbs
    }

    /// Little-endian bytes of the 320-bit integer.
    pub fn to_le_bytes(&self) -> [u8; Self::BYTES] {
        let mut out = [0u8; Self::BYTES];
        for (chunk, limb) in out.chunks_exact_mut(8).zip(&self.limbs) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        out
    }

    /// The inverse of [`to_le_bytes`](Self::to_le_bytes).
    pub fn from_le_bytes(bytes: [u8; Self::BYTES]) -> Self {
        let mut limbs = [0u64; EXACT_LIMBS];
        for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *limb = u64::from_le_bytes(b);
        }
        Self { limbs }
    }

    /// The register holding exactly `x`.
    pub fn from_f32(x: f32) -> Result<Self, AccErrorKind> {
        let mut c = Self::ZERO;
        c.add_f32(x)?;
        Ok(c)
    }

    /// `true` when the value is below zero.
    pub const fn is_negative(&self) -> bool {
        (self.limbs[EXACT_LIMBS - 1] as i64) < 0
    }

    /// `self += x`, exactly. On error the register is unchanged.
    ///
    /// Errors: [`NonFinite`](AccErrorKind::NonFinite) for NaN and
    /// infinities, [`Overflow`](AccErrorKind::Overflow) when the sum leaves
    /// the 320-bit range (more than `2^42` terms of maximal magnitude).
    #[inline]
    pub fn add_f32(&mut self, x: f32) -> Result<(), AccErrorKind> {
        let mut window = AddendWindow::new();
        window.add(self, x)
    }

    /// `self += other`, exactly. On overflow the register is unchanged.
    #[inline(always)]
    pub fn add_cell(&mut self, other: &Self) -> Result<(), AccErrorKind> {
        let mut carry = 0u64;
        let mut sum = [0u64; EXACT_LIMBS];
        for ((s, &l), &a) in sum.iter_mut().zip(&self.limbs).zip(&other.limbs) {
            let t = l as u128 + a as u128 + carry as u128;
            *s = t as u64;
            carry = (t >> 64) as u64;
        }
        self.commit(sum, other.limbs[EXACT_LIMBS - 1])
    }

    /// Store `sum` unless the top-limb addition overflowed as a signed
    /// number (both operands of one sign, the result of the other), which
    /// is exactly when the 320-bit two's-complement sum wrapped.
    #[inline(always)]
    fn commit(&mut self, sum: [u64; EXACT_LIMBS], top_addend: u64) -> Result<(), AccErrorKind> {
        let top = self.limbs[EXACT_LIMBS - 1];
        let new_top = sum[EXACT_LIMBS - 1];
        if ((top ^ new_top) & (top_addend ^ new_top)) >> 63 != 0 {
            return Err(AccErrorKind::Overflow);
        }
        self.limbs = sum;
        Ok(())
    }

    /// The value rounded once to the nearest `f32`, ties to even (subnormal
    /// results included). A magnitude that rounds to `2^128` or more is
    /// [`Overflow`](AccErrorKind::Overflow) rather than an infinity.
    #[inline]
    pub fn to_f32(&self) -> Result<f32, AccErrorKind> {
        // |value| = (limbs XOR s) + (s & 1) with s the sign mask: branch-free,
        // since signs of gradient sums are a coin toss. -2^319 gives 2^319.
        let s = ((self.limbs[EXACT_LIMBS - 1] as i64) >> 63) as u64;
        // ext[1..] = |value| = (limbs XOR s) + (s & 1), branch-free since
        // the signs of gradient sums are a coin toss (-2^319 gives 2^319).
        // ext[0] = 0 is a guard limb so that the window below always has
        // three limbs to read.
        let mut ext = [0u64; EXACT_LIMBS + 1];
        let mut carry = s & 1;
        for (m, &l) in ext[1..].iter_mut().zip(&self.limbs) {
            let t = (l ^ s) as u128 + carry as u128;
            *m = t as u64;
            carry = (t >> 64) as u64;
        }
        // Bit j set when ext[j] is nonzero.
        let nonzero = ext
            .iter()
            .enumerate()
            .fold(0u32, |acc, (j, &l)| acc | (((l != 0) as u32) << j));
        if nonzero == 0 {
            return Ok(0.0);
        }
        // The 128 bits from the leading one down, from limbs top, top-1 and
        // top-2 (top >= 2 thanks to the guard limb); everything below folds
        // into a sticky bit, which preserves round-to-nearest-even because
        // 128 >= 24 + 2 bits are kept.
        let top = (31 - nonzero.leading_zeros()).max(2) as usize;
        let head = (ext[top] as u128) << 64 | ext[top - 1] as u128;
        let lz = head.leading_zeros(); // >= 64 only when top was raised to 2
        let low = (ext[top - 2] as u128) << lz;
        let window = (head << lz) | (low >> 64);
        let sticky = low as u64 != 0 || nonzero & ((1 << (top - 2)) - 1) != 0;
        let exp = 64 * (top as i32 - 2) - lz as i32 + F32_MIN_EXP;
        let r = round_normalized(s != 0, window | sticky as u128, exp);
        r.ok_or(AccErrorKind::Overflow)
    }
}

/// Scratch space that turns an `f32` into its 320-bit addend without
/// data-dependent branches.
///
/// `x = ±m · 2^off` register units is a 128-bit two's-complement integer `W`
/// (the 24-bit `m` shifted by `off mod 64`, negated if `x < 0`) placed at
/// limb `k = off / 64` and sign-extended above; the limbs below `k` are zero
/// (negating a number whose low limbs are zero leaves them zero). Laid out as
/// `[0, 0, 0, 0, W_lo, W_hi, ext, ext, ext]`, the addend's limbs are the five
/// consecutive words starting at `4 - k`: five stores and five loads instead
/// of a compare-and-select per limb, and no carry ripple to mispredict.
struct AddendWindow {
    words: [u64; 2 * EXACT_LIMBS - 1],
}

impl AddendWindow {
    #[inline(always)]
    fn new() -> Self {
        Self {
            words: [0; 2 * EXACT_LIMBS - 1],
        }
    }

    #[inline(always)]
    fn add(&mut self, cell: &mut ExactCell, x: f32) -> Result<(), AccErrorKind> {
        let bits = x.to_bits();
        let biased = (bits >> 23) & 0xff;
        if biased == 0xff {
            return Err(AccErrorKind::NonFinite);
        }
        // x = ±m · 2^(max(biased, 1) - 150) = ±m · 2^off register units.
        let m = (bits & 0x7f_ffff) | (((biased != 0) as u32) << 23);
        let off = biased.saturating_sub(1); // 0..=253, so k <= 3
        let k = (off >> 6) as usize;
        let w = (m as u128) << (off & 63);
        let neg = 0u128.wrapping_sub((bits >> 31) as u128); // all ones if x < 0
        let w = (w ^ neg).wrapping_sub(neg);
        let ext = ((w as i128) >> 127) as u64;
        let [.., lo, hi, e0, e1, e2] = &mut self.words;
        (*lo, *hi, *e0, *e1, *e2) = (w as u64, (w >> 64) as u64, ext, ext, ext);
        let addend = &self.words[EXACT_LIMBS - 1 - k..][..EXACT_LIMBS];
        let mut carry = 0u64;
        let mut sum = [0u64; EXACT_LIMBS];
        for ((s, &l), &a) in sum.iter_mut().zip(&cell.limbs).zip(addend) {
            let t = l as u128 + a as u128 + carry as u128;
            *s = t as u64;
            carry = (t >> 64) as u64;
        }
        cell.commit(sum, addend[EXACT_LIMBS - 1])
    }
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
impl Accumulator for ExactAcc {
    type Cell = ExactCell;
    const ASSOCIATIVE: bool = true;

    fn name(&self) -> &'static str {
        "exact"
    }
    fn zero_cell(&self) -> ExactCell {
        ExactCell::ZERO
    }
    fn zero(&self, cells: &mut [ExactCell]) {
        cells.fill(ExactCell::ZERO);
    }
    fn add(&self, cells: &mut [ExactCell], xs: &[f32]) -> Result<(), AccError> {
        check_len(cells.len(), xs.len())?;
        let mut window = AddendWindow::new();
        for (i, (c, &x)) in cells.iter_mut().zip(xs).enumerate() {
            window.add(c, x).map_err(|k| AccError::new(k, i))?;
        }
        Ok(())
    }
    fn merge(&self, dst: &mut [ExactCell], src: &[ExactCell]) -> Result<(), AccError> {
        check_len(dst.len(), src.len())?;
        for (i, (d, s)) in dst.iter_mut().zip(src).enumerate() {
            d.add_cell(s).map_err(|k| AccError::new(k, i))?;
        }
        Ok(())
    }
    fn round(&self, cells: &[ExactCell], out: &mut [f32]) -> Result<(), AccError> {
        check_len(cells.len(), out.len())?;
        for (i, (o, c)) in out.iter_mut().zip(cells).enumerate() {
            *o = c.to_f32().map_err(|k| AccError::new(k, i))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let mut c = ExactCell::from_f32(-3.5e30).unwrap();
        c.add_f32(1e-40).unwrap();
        assert_eq!(ExactCell::from_le_bytes(c.to_le_bytes()), c);
    }

    #[test]
    fn overflow_is_reported_and_leaves_the_register() {
        let max = ExactCell::from_limbs([u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX >> 1]);
        let mut c = max;
        assert_eq!(c.add_f32(f32::from_bits(1)), Err(AccErrorKind::Overflow));
        assert_eq!(c, max);
        assert_eq!(c.add_f32(-0.0), Ok(()));
        assert_eq!(c.add_f32(-f32::from_bits(1)), Ok(()));
        let mut m = ExactCell::from_limbs([0, 0, 0, 0, 1 << 63]);
        assert_eq!(m.add_f32(-f32::from_bits(1)), Err(AccErrorKind::Overflow));
        assert_eq!(m.add_cell(&m.clone()), Err(AccErrorKind::Overflow));
        assert_eq!(m.to_f32(), Err(AccErrorKind::Overflow));
        assert_eq!(max.to_f32(), Err(AccErrorKind::Overflow));
    }
}
