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

use super::rounding::F32_MIN_EXP;
use super::{check_len, check_lens, AccError, AccErrorKind, Accumulator};

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
    #[inline]
    pub fn from_f32(x: f32) -> Result<Self, AccErrorKind> {
        Self::from_f32_inline(x)
    }

    /// [`from_f32`](Self::from_f32), forced inline for the slice loops.
    #[inline(always)]
    fn from_f32_inline(x: f32) -> Result<Self, AccErrorKind> {
        let bits = x.to_bits();
        let a = if ((bits >> 23) & 0xff).wrapping_sub(1) < 0xfe {
            Addend::normal(bits)
        } else {
            Addend::from_f32(x).ok_or(AccErrorKind::NonFinite)?
        };
        Ok(Self { limbs: a.limbs() })
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
        self.add_f32_inline(x)
    }

    /// [`add_f32`](Self::add_f32), forced inline for the slice loops.
    #[inline(always)]
    fn add_f32_inline(&mut self, x: f32) -> Result<(), AccErrorKind> {
        let bits = x.to_bits();
        let biased = (bits >> 23) & 0xff;
        // Zeros, subnormals, infinities and NaN (biased exponent 0 or 255)
        // leave the hot path, which can then assume a normal number.
        // Registers within 2^317 units of overflow also leave it, so that
        // the hot path needs no overflow check.
        if biased.wrapping_sub(1) >= 0xfe || !far_from_overflow(self.limbs[EXACT_LIMBS - 1]) {
            return self.add_unusual(x);
        }
        self.add_unchecked(Addend::normal(bits));
        Ok(())
    }

    /// [`add_f32`](Self::add_f32) for zeros (nothing to add), subnormals,
    /// non-finite values and registers near overflow.
    #[cold]
    #[inline(never)]
    fn add_unusual(&mut self, x: f32) -> Result<(), AccErrorKind> {
        match Addend::from_f32(x) {
            None => Err(AccErrorKind::NonFinite),
            Some(_) if x == 0.0 => Ok(()),
            Some(a) => self.add_addend(a),
        }
    }

    /// `self += other`, exactly. On overflow the register is unchanged.
    #[inline(always)]
    pub fn add_cell(&mut self, other: &Self) -> Result<(), AccErrorKind> {
        let mut carry = false;
        let mut sum = [0u64; EXACT_LIMBS];
        for ((s, &l), &a) in sum.iter_mut().zip(&self.limbs).zip(&other.limbs) {
            (*s, carry) = adc(l, a, carry);
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

    /// `self += a`; on overflow the register is unchanged.
    #[inline(always)]
    fn add_addend(&mut self, a: Addend) -> Result<(), AccErrorKind> {
        if far_from_overflow(self.limbs[EXACT_LIMBS - 1]) {
            self.add_unchecked(a);
            Ok(())
        } else {
            self.commit(a.add_to(&self.limbs), a.top())
        }
    }

    /// `self += a` for a register [far from overflow](far_from_overflow).
    ///
    /// One arm per limb position `k`, which depends only on the magnitude
    /// (`k = 1` for every `f32` in `[2^-84, 2^2)`), so the branch is
    /// predicted; each arm is a straight carry chain over limbs `k..5`, and
    /// the limbs below `k` are neither read nor written.
    #[inline(always)]
    fn add_unchecked(&mut self, a: Addend) {
        let Addend { lo, hi, ext: e, k } = a;
        let l = &mut self.limbs;
        match k {
            1 => {
                let c;
                (l[1], c) = l[1].overflowing_add(lo);
                let (s2, c) = adc(l[2], hi, c);
                let (s3, c) = adc(l[3], e, c);
                (l[2], l[3], l[4]) = (s2, s3, adc(l[4], e, c).0);
            }
            0 => {
                let c;
                (l[0], c) = l[0].overflowing_add(lo);
                let (s1, c) = adc(l[1], hi, c);
                let (s2, c) = adc(l[2], e, c);
                let (s3, c) = adc(l[3], e, c);
                (l[1], l[2], l[3], l[4]) = (s1, s2, s3, adc(l[4], e, c).0);
            }
            2 => {
                let c;
                (l[2], c) = l[2].overflowing_add(lo);
                let (s3, c) = adc(l[3], hi, c);
                (l[3], l[4]) = (s3, adc(l[4], e, c).0);
            }
            _ => {
                let c;
                (l[3], c) = l[3].overflowing_add(lo);
                l[4] = adc(l[4], hi, c).0;
            }
        }
    }

    /// The value rounded once to the nearest `f32`, ties to even (subnormal
    /// results included). A magnitude that rounds to `2^128` or more is
    /// [`Overflow`](AccErrorKind::Overflow) rather than an infinity.
    #[inline]
    pub fn to_f32(&self) -> Result<f32, AccErrorKind> {
        self.rounded()
    }

    /// [`to_f32`](Self::to_f32), forced inline for the slice loops.
    #[inline(always)]
    fn rounded(&self) -> Result<f32, AccErrorKind> {
        let l = &self.limbs;
        // Above its most significant limb a register is sign extension: the
        // first limb from the top that differs from the sign mask `s` holds
        // the leading bit of the value.
        let s = ((l[EXACT_LIMBS - 1] as i64) >> 63) as u64;
        if l[4] == s && l[3] == s {
            // |value| <= 2^192 units = 2^43: every gradient sum.
            let in2 = l[2] != s;
            if in2 || l[1] != s {
                // Limb 2 or limb 1 (2^-21 <= |value| < 2^43, or 2^-85 <=
                // |value| < 2^-21): both are common and mixed at random in a
                // gradient buffer, so the limbs are picked by index and by a
                // shift rather than by a branch (which LLVM makes of a select
                // of loads). `below` is limb 0 for k = 2; for k = 1 it must
                // add nothing to the sticky bits, and limb 0 shifted as
                // `signed_window` shifts `lo` (limb 0 then) adds nothing new.
                let k = 1 + in2 as usize;
                let lz = (l[k] ^ s).leading_zeros() & 63;
                let below = l[0] << (lz & (in2 as u32).wrapping_sub(1));
                let (window, shift) = signed_window(l[k], l[k - 1], below, k, s);
                Ok(f32::from_bits(scale((window as f32).to_bits(), shift)))
            } else {
                // |value| <= 2^64 units. Below 2^24 units it is exact, and the
                // f32 bit pattern is the magnitude itself (subnormals, and the
                // lowest normal binade, whose biased exponent 1 is the
                // integer's bit 23).
                let (mag, wrapped) = (l[0] ^ s).overflowing_add(s & 1);
                if !wrapped && mag < 1 << 24 {
                    Ok(f32::from_bits((s as u32 & 0x8000_0000) | mag as u32))
                } else {
                    Ok(round_window::<0>(l, s))
                }
            }
        } else if l[4] == s {
            Ok(round_window::<3>(l, s))
        } else {
            round_top(l, s).ok_or(AccErrorKind::Overflow)
        }
    }
}

/// [`round_window`] for limb 4, the only one whose values can round to
/// `2^128` or more (limb 3 ends at `2^256` units = `2^107`): `None` then.
#[inline(always)]
fn round_top(l: &[u64; EXACT_LIMBS], s: u64) -> Option<f32> {
    let (window, shift) = signed_window(l[4], l[3], l[2] | l[1] | l[0], 4, s);
    let bits = (window as f32).to_bits();
    if ((bits >> 23) & 0xff) as i32 + shift >= 0xff {
        None
    } else {
        Some(f32::from_bits(scale(bits, shift)))
    }
}

/// The register (sign mask `s`) rounded to the nearest `f32`, ties to even,
/// given that limb `K` holds its leading bit (`l[K] != s`, the limbs above
/// are `s`), that the result is normal, and (for `K = 4`) that it is finite.
///
/// One rounding, done by the hardware: see [`signed_window`].
#[inline(always)]
fn round_window<const K: usize>(l: &[u64; EXACT_LIMBS], s: u64) -> f32 {
    // Below limb 0 the register continues with zeros (it is an integer).
    let lo = if K > 0 { l[K - 1] } else { 0 };
    let below = l[..K.saturating_sub(1)].iter().fold(0, |a, &x| a | x);
    let (window, shift) = signed_window(l[K], lo, below, K, s);
    f32::from_bits(scale((window as f32).to_bits(), shift))
}

/// Add `shift` to the exponent field of the normal `f32` pattern `bits`,
/// the result being normal too (multiplication by `2^shift`, exactly).
#[inline(always)]
fn scale(bits: u32, shift: i32) -> u32 {
    (bits as i32).wrapping_add(shift << 23) as u32
}

/// A signed 64-bit window `w` and `shift` such that rounding `w` to `f32`
/// and multiplying by `2^shift` gives the register's value correctly
/// rounded (ties to even), given that limb `K` (`hi`) holds the leading bit,
/// `lo` is limb `K - 1` (zero for `K = 0`) and `below` the OR of the limbs
/// under it.
///
/// Why this rounds once and correctly:
///
/// * Let `p = 64 K + 63 - lz` be the position of the leading bit: the
///   highest bit that differs from the sign. `w` is bits `p + 1` (the sign)
///   down to `p - 61` of the two's-complement register, so `w` lies in
///   `[2^62, 2^63)` or `[-2^63, -2^62)`, plus 1 (a sticky bit in bit 0)
///   when any bit below `p - 61` is set. The register is `(w' + f) ·
///   2^(p - 62)` units with `w'` the window without sticky and `0 <= f < 1`
///   (in two's complement the low bits always count upwards).
/// * Rounding 63 significant bits to 24 puts the rounding boundaries
///   (midpoints between neighbouring `f32`s) on multiples of `2^38`, so
///   `w' + f` and `w' | 1` (for `f > 0`) lie on the same side of every
///   boundary: the sticky bit keeps nearest-even rounding exact, for either
///   sign (ties to even is symmetric, so rounding the signed value is
///   rounding the magnitude and applying the sign).
/// * `w as f32` is correctly rounded (Rust guarantees round-to-nearest,
///   ties to even, for integer-to-float casts) and is `±2^62 … ±2^63`, a
///   normal number with biased exponent 189 or 190.
/// * The value is `(w as f32) · 2^(p - 62 - 149)`, and the biased exponent
///   after scaling is `p - 22` or `p - 21`: at least 1 (normal, so the
///   scaling is exact and cannot round again) because the callers only get
///   here for `|value| >= 2^24` units, i.e. `p >= 23`; and at most 254 for
///   `K <= 3` (`p <= 255`), so only `K = 4` can overflow (see [`round_top`]).
#[inline(always)]
fn signed_window(hi: u64, lo: u64, below: u64, k: usize, s: u64) -> (i64, i32) {
    // `l[K] != s`, so lz <= 63; the mask lets the shifts below compile
    // without range fix-ups.
    let lz = (hi ^ s).leading_zeros() & 63;
    // Bits p down to p - 63.
    let top = (hi << lz) | ((lo >> 1) >> (63 - lz));
    let rest = (lo << lz) | below | (top & 1);
    let window = (top >> 1) | (s & 1 << 63) | (rest != 0) as u64;
    let p = 64 * k as i32 + 63 - lz as i32;
    (window as i64, p - 62 + F32_MIN_EXP)
}

/// `a + b + carry` and the carry out.
#[inline(always)]
fn adc(a: u64, b: u64, carry: bool) -> (u64, bool) {
    let (s, c1) = a.overflowing_add(b);
    let (s, c2) = s.overflowing_add(carry as u64);
    (s, c1 | c2)
}

/// `true` when the top limb keeps |value| below `2^317` units: then adding
/// anything below `2^278` units (an `f32`, or an exact `f64` pre-sum below
/// `2^100`) cannot reach the sign bit, so the overflow check can be skipped.
/// Registers that large take the checked path.
#[inline(always)]
fn far_from_overflow(top: u64) -> bool {
    top.wrapping_add(1 << 61) < 1 << 62
}

/// A finite `f32` (or an exact `f64` sum of `f32`s) as a 320-bit addend:
/// the two's-complement 128-bit integer `(lo, hi)` at limb `k`, the limbs
/// below it zero and those above it `ext` (its sign extension).
#[derive(Clone, Copy)]
struct Addend {
    lo: u64,
    hi: u64,
    ext: u64,
    k: usize,
}

impl Addend {
    /// The addend of the normal `f32` with bit pattern `bits`.
    #[inline(always)]
    fn normal(bits: u32) -> Self {
        // x = ±m · 2^(biased - 150) = ±m · 2^off units.
        let m = (bits & 0x7f_ffff) | 1 << 23;
        let off = ((bits >> 23) & 0xff) - 1;
        let w = (m as u128) << (off & 63); // < 2^87
        let n = 0u64.wrapping_sub((bits >> 31) as u64);
        let w = (w ^ (n as u128 | (n as u128) << 64)).wrapping_add(n as u128 & 1);
        Self {
            lo: w as u64,
            hi: (w >> 64) as u64,
            // m != 0, so a negative x gives a negative w: the extension is n.
            ext: n,
            k: (off >> 6) as usize,
        }
    }

    /// `None` for NaN and infinities.
    #[inline(always)]
    fn from_f32(x: f32) -> Option<Self> {
        let bits = x.to_bits();
        let biased = (bits >> 23) & 0xff;
        if biased == 0xff {
            return None;
        }
        // x = ±m · 2^(max(biased, 1) - 150) = ±m · 2^off units.
        let m = (bits & 0x7f_ffff) | (((biased != 0) as u32) << 23);
        let off = biased.saturating_sub(1); // 0..=253, so k <= 3
        Some(Self::place(m as u64, off, bits >> 31 != 0))
    }

    /// The exact sum `y` of some `f32`s, known to be below `2^100` in
    /// magnitude (`None` otherwise, and for non-finite `y`).
    #[inline(always)]
    fn from_f64_sum(y: f64) -> Option<Self> {
        let bits = y.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as u32;
        if biased >= 1023 + 100 {
            return None;
        }
        // y = ±m · 2^(biased - 1075) = ±m · 2^(biased - 926) units. A sum of
        // f32s is a whole number of units (>= 1 unless zero), so when the
        // exponent is negative the low bits of m are zero and shifting them
        // out is exact. Zero (biased 0) has m = 0.
        let m = (bits & ((1 << 52) - 1)) | (((biased != 0) as u64) << 52);
        let off = biased as i32 - 926;
        let drop = (-off).clamp(0, 63) as u32;
        Some(Self::place(m >> drop, off.max(0) as u32, bits >> 63 != 0))
    }

    /// `±m · 2^off` units for `m < 2^53`, `off < 256`.
    #[inline(always)]
    fn place(m: u64, off: u32, neg: bool) -> Self {
        let w = (m as u128) << (off & 63); // < 2^117
        let n = 0u128.wrapping_sub(neg as u128);
        let w = (w ^ n).wrapping_sub(n);
        Self {
            lo: w as u64,
            hi: (w >> 64) as u64,
            // The sign of the negated value, not `neg`: -0.0 adds zero.
            ext: ((w as i128) >> 127) as u64,
            k: (off >> 6) as usize,
        }
    }

    /// The addend's top limb (limb 4).
    #[inline(always)]
    fn top(&self) -> u64 {
        if self.k == EXACT_LIMBS - 2 {
            self.hi
        } else {
            self.ext
        }
    }

    /// The addend as a register.
    #[inline(always)]
    fn limbs(&self) -> [u64; EXACT_LIMBS] {
        let Self { lo, hi, ext: e, k } = *self;
        match k {
            0 => [lo, hi, e, e, e],
            1 => [0, lo, hi, e, e],
            2 => [0, 0, lo, hi, e],
            _ => [0, 0, 0, lo, hi],
        }
    }

    /// `l + self` modulo `2^320`.
    #[inline(always)]
    fn add_to(&self, l: &[u64; EXACT_LIMBS]) -> [u64; EXACT_LIMBS] {
        let Self { lo, hi, ext: e, k } = *self;
        let mut r = *l;
        match k {
            0 => {
                let (s0, c) = l[0].overflowing_add(lo);
                let (s1, c) = adc(l[1], hi, c);
                let (s2, c) = adc(l[2], e, c);
                let (s3, c) = adc(l[3], e, c);
                r = [s0, s1, s2, s3, adc(l[4], e, c).0];
            }
            1 => {
                let (s1, c) = l[1].overflowing_add(lo);
                let (s2, c) = adc(l[2], hi, c);
                let (s3, c) = adc(l[3], e, c);
                (r[1], r[2], r[3], r[4]) = (s1, s2, s3, adc(l[4], e, c).0);
            }
            2 => {
                let (s2, c) = l[2].overflowing_add(lo);
                let (s3, c) = adc(l[3], hi, c);
                (r[2], r[3], r[4]) = (s2, s3, adc(l[4], e, c).0);
            }
            _ => {
                let (s3, c) = l[3].overflowing_add(lo);
                (r[3], r[4]) = (s3, adc(l[4], hi, c).0);
            }
        }
        r
    }
}

/// How far ahead (in cells) the slice loops ask for cache lines: about 1 KiB,
/// 20 lines. Measured on a many-core x86-64 host, where the hardware
/// prefetchers alone left `round` on a 10 MB buffer 2.5x slower than on an
/// L2-resident one (memory latency, not bandwidth, was the limit).
const PREFETCH: usize = 32;

/// Ask for the cache line holding `xs[i]`: a hint on x86-64, nothing
/// elsewhere. Any `i` is allowed (the hint never faults), so loops need not
/// stop prefetching near the end.
#[inline(always)]
fn prefetch<T>(xs: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = xs.as_ptr().wrapping_add(i).cast::<i8>();
        // SAFETY: a prefetch is a hint with no architectural effect; it does
        // not fault, whatever the address (SSE is part of x86-64).
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (xs, i);
}

/// Elements per block of [`ExactAcc::add_many`] and friends: the exact `f64`
/// pre-sums of a block live on the stack (1 KiB) and vectorise.
const BLOCK: usize = 64;

/// Exact `f64` sums of `xs[..][start..start + n]` into `sums[..n]`, and
/// whether each is exact (or finite at all).
///
/// Any `f32` is an `f64`, and an `f64` addition is exact exactly when the
/// TwoSum error term is zero (a NaN term when an input was not finite), so
/// where all terms are zero `sums[i]` *is* the exact sum: adding it to a
/// register, or rounding it to `f32`, gives the same bits as adding the
/// `f32`s one by one. Gradients of one element have similar magnitudes, so
/// this is the rule; the rest takes the exact path one `f32` at a time.
#[inline(always)]
fn block_sums(xs: &[&[f32]], start: usize, sums: &mut [f64; BLOCK], exact: &mut [bool; BLOCK]) {
    let n = exact.len().min(xs[0].len() - start);
    // The inputs two blocks ahead, one request per 64-byte line.
    for x in xs {
        for line in (0..BLOCK).step_by(16) {
            prefetch(x, start + 2 * BLOCK + line);
        }
    }
    let mut err = [0f64; BLOCK];
    for ((s, e), &x) in sums.iter_mut().zip(&mut err).zip(&xs[0][start..start + n]) {
        *s = x as f64;
        // Zero, or NaN for a non-finite input, which a single input would
        // not flag otherwise.
        *e = *s * 0.0;
    }
    for x in &xs[1..] {
        for ((s, e), &x) in sums.iter_mut().zip(&mut err).zip(&x[start..start + n]) {
            let (a, b) = (*s, x as f64);
            let t = a + b;
            let bv = t - a;
            *e += ((a - (t - bv)) + (b - bv)).abs();
            *s = t;
        }
    }
    for (ok, e) in exact.iter_mut().zip(&err) {
        *ok = *e == 0.0;
    }
}

/// `cell + xs[0][i] + xs[1][i] + …` one `f32` at a time (the exact slow path),
/// leaving `cell` unchanged on error.
#[cold]
#[inline(never)]
fn add_column(cell: &mut ExactCell, xs: &[&[f32]], i: usize) -> Result<(), AccErrorKind> {
    let mut c = *cell;
    for x in xs {
        c.add_f32(x[i])?;
    }
    *cell = c;
    Ok(())
}

/// On an error at index `i`, cells `0..i` have been updated and cells `i..`
/// are unchanged (`round` and `sum_round`: `out[0..i]` written, `out[i..]`
/// unchanged), for the fused methods too: an element's inputs are all
/// added, or (on error) none. Without errors the fused methods give the bits
/// of the one-by-one operations; with several bad elements they report the
/// lowest index, where one input after the other would report the first
/// bad element of the first input that has one.
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
        for i in 0..cells.len() {
            prefetch(cells, i + PREFETCH);
            cells[i]
                .add_f32_inline(xs[i])
                .map_err(|k| AccError::new(k, i))?;
        }
        Ok(())
    }
    fn merge(&self, dst: &mut [ExactCell], src: &[ExactCell]) -> Result<(), AccError> {
        check_len(dst.len(), src.len())?;
        for i in 0..dst.len() {
            prefetch(dst, i + PREFETCH);
            prefetch(src, i + PREFETCH);
            dst[i].add_cell(&src[i]).map_err(|k| AccError::new(k, i))?;
        }
        Ok(())
    }
    fn round(&self, cells: &[ExactCell], out: &mut [f32]) -> Result<(), AccError> {
        check_len(cells.len(), out.len())?;
        for (i, o) in out.iter_mut().enumerate() {
            prefetch(cells, i + PREFETCH);
            *o = cells[i].rounded().map_err(|k| AccError::new(k, i))?;
        }
        Ok(())
    }
    fn assign(&self, cells: &mut [ExactCell], xs: &[f32]) -> Result<(), AccError> {
        check_len(cells.len(), xs.len())?;
        for i in 0..cells.len() {
            // Even a write-only loop waits for its lines (write-allocate).
            prefetch(cells, i + PREFETCH);
            cells[i] = ExactCell::from_f32_inline(xs[i]).map_err(|k| AccError::new(k, i))?;
        }
        Ok(())
    }
    fn add_many(&self, cells: &mut [ExactCell], xs: &[&[f32]]) -> Result<(), AccError> {
        check_lens(cells.len(), xs)?;
        match xs {
            [] => Ok(()),
            [x] => self.add(cells, x),
            _ => many(cells, xs, false),
        }
    }
    fn assign_many(&self, cells: &mut [ExactCell], xs: &[&[f32]]) -> Result<(), AccError> {
        check_lens(cells.len(), xs)?;
        match xs {
            [] => {
                self.zero(cells);
                Ok(())
            }
            [x] => self.assign(cells, x),
            _ => many(cells, xs, true),
        }
    }
    fn sum_round(
        &self,
        cells: &[&[ExactCell]],
        xs: &[&[f32]],
        out: &mut [f32],
    ) -> Result<(), AccError> {
        for c in cells {
            check_len(out.len(), c.len())?;
        }
        check_lens(out.len(), xs)?;
        let mut sums = [0f64; BLOCK];
        let mut exact = [true; BLOCK];
        for (b, chunk) in out.chunks_mut(BLOCK).enumerate() {
            let start = b * BLOCK;
            if !xs.is_empty() {
                block_sums(xs, start, &mut sums, &mut exact);
            }
            for (j, o) in chunk.iter_mut().enumerate() {
                let i = start + j;
                for c in cells {
                    prefetch(c, i + PREFETCH);
                }
                let at = |k| AccError::new(k, i);
                let fast = !xs.is_empty() && exact[j];
                if cells.is_empty() && fast {
                    // The f64 is the exact sum: one rounding to f32. Adding
                    // +0.0 turns -0.0 (all inputs -0.0) into the +0.0 an exact
                    // zero rounds to.
                    let r = (sums[j] + 0.0) as f32;
                    if r.is_infinite() {
                        return Err(at(AccErrorKind::Overflow));
                    }
                    *o = r;
                    continue;
                }
                let mut acc = match cells.split_first() {
                    Some((first, rest)) => {
                        let mut acc = first[i];
                        for c in rest {
                            acc.add_cell(&c[i]).map_err(at)?;
                        }
                        acc
                    }
                    None => ExactCell::ZERO,
                };
                if !xs.is_empty() {
                    // Near overflow, one by one: a partial sum may overflow.
                    let fast = fast && far_from_overflow(acc.limbs[EXACT_LIMBS - 1]);
                    match Addend::from_f64_sum(sums[j]).filter(|_| fast) {
                        Some(a) => acc.add_unchecked(a),
                        None => add_column(&mut acc, xs, i).map_err(at)?,
                    }
                }
                *o = acc.rounded().map_err(at)?;
            }
        }
        Ok(())
    }
}

/// `add_many` (`assign = false`) and `assign_many` for two or more inputs:
/// per block of elements, the exact `f64` pre-sums, then one register update
/// per element.
fn many(cells: &mut [ExactCell], xs: &[&[f32]], assign: bool) -> Result<(), AccError> {
    let mut sums = [0f64; BLOCK];
    let mut exact = [true; BLOCK];
    let len = cells.len();
    for b in 0..len.div_ceil(BLOCK) {
        let start = b * BLOCK;
        block_sums(xs, start, &mut sums, &mut exact);
        let chunk = &mut cells[start..(start + BLOCK).min(len)];
        for j in 0..chunk.len() {
            prefetch(chunk, j + PREFETCH);
            let c = &mut chunk[j];
            // Near overflow, one by one: a partial sum may overflow.
            let fast = exact[j] && (assign || far_from_overflow(c.limbs[EXACT_LIMBS - 1]));
            let r = match (Addend::from_f64_sum(sums[j]).filter(|_| fast), assign) {
                (Some(a), true) => {
                    *c = ExactCell { limbs: a.limbs() };
                    Ok(())
                }
                (Some(a), false) => {
                    c.add_unchecked(a);
                    Ok(())
                }
                (None, true) => {
                    let mut z = ExactCell::ZERO;
                    add_column(&mut z, xs, start + j).map(|()| *c = z)
                }
                (None, false) => add_column(c, xs, start + j),
            };
            r.map_err(|k| AccError::new(k, start + j))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::rounding::round_normalized;
    use super::*;

    /// The previous `to_f32`: the magnitude in full, then a 128-bit window
    /// from three limbs rounded by [`round_normalized`] (itself tested
    /// against the general rounding), subnormals through the general route.
    fn to_f32_reference(c: &ExactCell) -> Result<f32, AccErrorKind> {
        let s = ((c.limbs[EXACT_LIMBS - 1] as i64) >> 63) as u64;
        let mut ext = [0u64; EXACT_LIMBS + 1];
        let mut carry = s & 1;
        for (m, &l) in ext[1..].iter_mut().zip(&c.limbs) {
            let t = (l ^ s) as u128 + carry as u128;
            *m = t as u64;
            carry = (t >> 64) as u64;
        }
        let nonzero = ext
            .iter()
            .enumerate()
            .fold(0u32, |acc, (j, &l)| acc | (((l != 0) as u32) << j));
        if nonzero == 0 {
            return Ok(0.0);
        }
        let top = (31 - nonzero.leading_zeros()).max(2) as usize;
        let head = (ext[top] as u128) << 64 | ext[top - 1] as u128;
        let lz = head.leading_zeros();
        let low = (ext[top - 2] as u128) << lz;
        let window = (head << lz) | (low >> 64);
        let sticky = low as u64 != 0 || nonzero & ((1 << (top - 2)) - 1) != 0;
        let exp = 64 * (top as i32 - 2) - lz as i32 + F32_MIN_EXP;
        round_normalized(s != 0, window | sticky as u128, exp).ok_or(AccErrorKind::Overflow)
    }

    /// `c + x` by the definition: `x`'s integer number of units (from `f64`
    /// arithmetic) shifted bit by bit into a 320-bit two's-complement addend.
    fn add_reference(c: &ExactCell, x: f32) -> Result<ExactCell, AccErrorKind> {
        if !x.is_finite() {
            return Err(AccErrorKind::NonFinite);
        }
        // |x| = m · 2^e exactly, m < 2^24, e >= -149.
        let (mut m, mut e) = (x.abs() as f64, 0i32);
        while m != (m as u64) as f64 || m >= (1 << 24) as f64 {
            if m >= (1 << 24) as f64 {
                m /= 2.0;
                e += 1;
            } else {
                m *= 2.0;
                e -= 1;
            }
        }
        let mut a = [0u64; EXACT_LIMBS];
        for bit in 0..24 {
            if (m as u64 >> bit) & 1 == 1 {
                let p = (bit + e + 149) as usize;
                a[p / 64] |= 1 << (p % 64);
            }
        }
        if x < 0.0 {
            let mut carry = true;
            for l in &mut a {
                (*l, carry) = adc(!*l, 0, carry);
            }
        }
        let mut r = *c;
        r.add_cell(&ExactCell { limbs: a })?;
        Ok(r)
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn negate(c: &mut ExactCell) {
        let mut carry = true;
        for l in &mut c.limbs {
            (*l, carry) = adc(!*l, 0, carry);
        }
    }

    /// A register whose leading one is anywhere in the 320 bits (uniformly
    /// over positions, so every output exponent is hit), with dense, sparse,
    /// all-ones and tie-shaped bits below it, and either sign.
    fn random_cell(r: &mut Rng) -> ExactCell {
        let lead = r.below(320) as usize;
        let mut limbs = [0u64; EXACT_LIMBS];
        for (j, l) in limbs.iter_mut().enumerate() {
            *l = match r.below(4) {
                0 => 0,
                1 => u64::MAX,
                _ => r.next(),
            };
            // Nothing above the leading one.
            if 64 * j > lead {
                *l = 0;
            } else if 64 * j + 63 >= lead {
                *l &= u64::MAX >> (63 - lead % 64);
                *l |= 1 << (lead % 64);
            }
        }
        if r.below(3) == 0 {
            // A tie, or a tie plus or minus one unit, at a random cut.
            let cut = r.below(lead as u64 + 1) as usize;
            for b in 0..cut {
                limbs[b / 64] &= !(1 << (b % 64));
            }
            if cut > 0 {
                limbs[(cut - 1) / 64] |= 1 << ((cut - 1) % 64);
            }
        }
        let mut c = ExactCell { limbs };
        if r.below(5) == 0 {
            let one = ExactCell::from_limbs([1, 0, 0, 0, 0]);
            let _ = if r.below(2) == 0 {
                c.add_cell(&one)
            } else {
                let mut m = one;
                negate(&mut m);
                c.add_cell(&m)
            };
        }
        if r.below(2) == 0 {
            negate(&mut c);
        }
        c
    }

    #[test]
    fn to_f32_matches_the_reference_densely() {
        let check = |c: &ExactCell| {
            let want = to_f32_reference(c).map(f32::to_bits);
            assert_eq!(c.to_f32().map(f32::to_bits), want, "{:x?}", c.limbs);
        };
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..2_000_000 {
            check(&random_cell(&mut r));
        }
        // Every power of two, and its neighbours one unit away, both signs:
        // the carry of the ones' complement through whole limbs.
        for p in 0..319 {
            let mut c = ExactCell::ZERO;
            c.limbs[p / 64] = 1 << (p % 64);
            for d in [0i64, 1, -1] {
                let mut v = c;
                let mut one = ExactCell::from_limbs([d as u64, 0, 0, 0, 0]);
                if d < 0 {
                    one.limbs = [u64::MAX; EXACT_LIMBS];
                }
                v.add_cell(&one).unwrap();
                check(&v);
                negate(&mut v);
                check(&v);
            }
        }
        check(&ExactCell::from_limbs([0, 0, 0, 0, 1 << 63]));
        check(&ExactCell::from_limbs([u64::MAX; 5]));
    }

    #[test]
    fn add_matches_the_reference_densely() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..300_000 {
            let mut c = if i % 4 == 0 {
                ExactCell::ZERO
            } else {
                random_cell(&mut r)
            };
            if i % 64 == 1 {
                // Near the top, so that additions overflow.
                c.limbs[4] = (c.limbs[4] as i64).signum() as u64 ^ (u64::MAX >> 1);
            }
            let x = match r.below(3) {
                0 => f32::from_bits(r.next() as u32),
                1 => f32::from_bits((r.next() as u32 & 0x807f_ffff) | (r.below(3) as u32) << 23),
                _ => f32::from_bits(
                    (r.next() as u32 & 0x807f_ffff) | (100 + r.below(40) as u32) << 23,
                ),
            };
            let want = add_reference(&c, x);
            let mut got = c;
            let res = got.add_f32(x);
            assert_eq!(res.map(|()| got), want, "{:x?} + {x:e}", c.limbs);
            if res.is_err() {
                assert_eq!(got, c);
            }
            assert_eq!(
                ExactCell::from_f32(x),
                add_reference(&ExactCell::ZERO, x),
                "{x:e}"
            );
        }
    }

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
