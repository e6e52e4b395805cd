//! Big-integer reference for the accumulator tests, written independently of
//! the accumulators' own bit manipulation: values go through `f64` scaling
//! into `BigInt` counts of `2^-149`, and rounding back to `f32` is a binary
//! search over `f32` bit patterns with big-integer comparisons.
#![allow(dead_code)] // each test crate uses a different part

use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{FromPrimitive, Signed, Zero};

/// `2^149` as an `f64` (exact).
fn two_pow_149() -> f64 {
    f64::from_bits((1023 + 149) << 52)
}

/// `x` as an exact integer number of `2^-149` units.
pub fn units(x: f32) -> BigInt {
    assert!(x.is_finite());
    // Exact: an f32 is an f64, and the scaled value stays far inside f64's range.
    let scaled = x as f64 * two_pow_149();
    BigInt::from_f64(scaled).expect("integer-valued f64")
}

/// Exact sum of `xs` in units of `2^-149`.
pub fn exact_sum(xs: &[f32]) -> BigInt {
    xs.iter().map(|&x| units(x)).sum()
}

/// `n · 2^-149` rounded to the nearest `f32`, ties to even; `None` on
/// overflow (the rounded magnitude is `2^128` or more). Zero gives `+0.0`.
pub fn round_units(n: &BigInt) -> Option<f32> {
    let mag = n.abs();
    // Largest finite positive pattern whose value is <= mag.
    let (mut lo, mut hi) = (0u32, 0x7f7f_ffffu32);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if units(f32::from_bits(mid)) <= mag {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let below = units(f32::from_bits(lo));
    // The next pattern up; above f32::MAX that is 2^128 (the infinity pattern).
    let above = if lo == 0x7f7f_ffff {
        BigInt::from(1) << 277
    } else {
        units(f32::from_bits(lo + 1))
    };
    let twice = &mag * 2;
    let mid = &below + &above;
    let pick = if twice < mid || (twice == mid && lo % 2 == 0) {
        lo
    } else {
        lo + 1
    };
    if pick >= 0x7f80_0000 {
        return None;
    }
    let v = f32::from_bits(pick);
    Some(if n.is_negative() { -v } else { v })
}

/// `n / 2^shift` rounded to the nearest integer, ties to even.
pub fn div_pow2_round_even(n: &BigInt, shift: u32) -> BigInt {
    let mag: BigUint = n.magnitude().clone();
    let q = &mag >> shift;
    let r = &mag - (&q << shift);
    let twice = r * 2u32;
    let d = BigUint::from(1u32) << shift;
    let q = if twice > d || (twice == d && q.bit(0)) {
        q + 1u32
    } else {
        q
    };
    let sign = if n.is_negative() && !q.is_zero() {
        Sign::Minus
    } else {
        Sign::Plus
    };
    BigInt::from_biguint(sign, q)
}

/// A deterministic xorshift generator for tests that want many cases
/// without proptest shrinking overhead.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A finite f32 with uniformly random bits (all exponents equally likely).
    pub fn any_finite(&mut self) -> f32 {
        loop {
            let x = f32::from_bits(self.next_u64() as u32);
            if x.is_finite() {
                return x;
            }
        }
    }

    /// A random finite f32 with a biased exponent in `lo..=hi`.
    pub fn with_exponent(&mut self, lo: u32, hi: u32) -> f32 {
        let r = self.next_u64();
        let e = lo + (r as u32) % (hi - lo + 1);
        let frac = ((r >> 32) as u32) & 0x7f_ffff;
        let sign = ((r >> 63) as u32) << 31;
        f32::from_bits(sign | (e << 23) | frac)
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}
