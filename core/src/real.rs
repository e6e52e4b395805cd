//! The [`Real`] trait: the number type the model math is generic over.
//!
//! Implemented for `f32` (training) and `f64` (the reference for gradient
//! checks). Every transcendental function goes through the pure-Rust `libm`
//! crate rather than `std` or the platform C library, so the same inputs give
//! the same bits on x86, ARM and thumbv6m: reproducibility across platforms is
//! part of cllm's contract. The basic operations (`+ - * /`, `sqrt`) are
//! correctly rounded IEEE 754 everywhere, and Rust never fuses `a * b + c`
//! into an FMA on its own, so the portable kernels built on them are
//! bit-identical on every platform too.

use core::fmt;
use core::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A real number type (`f32` or `f64`) for the model math.
pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + PartialEq
    + fmt::Debug
    + fmt::Display
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + 'static
{
    /// `0`.
    const ZERO: Self;
    /// `1`.
    const ONE: Self;
    /// `-∞`, the identity of `max`.
    const NEG_INFINITY: Self;
    /// Short name (`"f32"`, `"f64"`) for logs and test messages.
    const NAME: &'static str;

    /// `0` (same as [`Real::ZERO`], for generic code that prefers calls).
    #[inline(always)]
    fn zero() -> Self {
        Self::ZERO
    }
    /// `1`.
    #[inline(always)]
    fn one() -> Self {
        Self::ONE
    }
    /// Nearest value to `x` (ties to even).
    fn from_f64(x: f64) -> Self;
    /// Exact widening (`f32`) or identity (`f64`).
    fn to_f64(self) -> f64;
    /// Nearest value to `x`.
    fn from_f32(x: f32) -> Self;
    /// Nearest `f32` to `self`.
    fn to_f32(self) -> f32;
    /// Nearest value to the integer `n`.
    fn from_usize(n: usize) -> Self;
    /// Square root (correctly rounded).
    fn sqrt(self) -> Self;
    /// `e^self` (libm).
    fn exp(self) -> Self;
    /// Natural logarithm (libm).
    fn ln(self) -> Self;
    /// Hyperbolic tangent (libm).
    fn tanh(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// `true` unless NaN or ±∞.
    fn is_finite(self) -> bool;
    /// The larger of the two; `other` when `self` is NaN.
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        if self > other {
            self
        } else {
            other
        }
    }
}

macro_rules! impl_real {
    ($t:ty, $name:expr, $sqrt:path, $exp:path, $ln:path, $tanh:path, $fabs:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const NAME: &'static str = $name;

            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_f32(x: f32) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline(always)]
            fn from_usize(n: usize) -> Self {
                n as $t
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                $sqrt(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $ln(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $fabs(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
        }
    };
}

impl_real!(
    f32,
    "f32",
    libm::sqrtf,
    libm::expf,
    libm::logf,
    libm::tanhf,
    libm::fabsf
);
impl_real!(
    f64,
    "f64",
    libm::sqrt,
    libm::exp,
    libm::log,
    libm::tanh,
    libm::fabs
);

#[cfg(test)]
mod tests {
    use super::Real;

    fn roundtrip<R: Real>() {
        assert_eq!(R::from_f64(0.5).to_f64(), 0.5);
        assert_eq!(R::from_usize(7).to_f64(), 7.0);
        assert_eq!(R::ONE.exp().ln().to_f64(), 1.0);
        assert_eq!(R::from_f64(4.0).sqrt().to_f64(), 2.0);
        assert_eq!(R::ZERO.tanh().to_f64(), 0.0);
        assert_eq!(R::from_f64(-3.0).abs().to_f64(), 3.0);
        assert!(!R::NEG_INFINITY.is_finite());
        assert_eq!(R::from_f64(2.0).max(R::ONE).to_f64(), 2.0);
    }

    #[test]
    fn f32_and_f64_basics() {
        roundtrip::<f32>();
        roundtrip::<f64>();
    }

    #[test]
    fn transcendental_values_are_libm() {
        // Compare with values produced by libm itself, to catch a silent swap
        // to a platform implementation in the macro above.
        assert_eq!(Real::exp(0.3f32).to_bits(), libm::expf(0.3).to_bits());
        assert_eq!(Real::tanh(0.7f64).to_bits(), libm::tanh(0.7).to_bits());
        assert_eq!(Real::ln(1.7f32).to_bits(), libm::logf(1.7).to_bits());
    }
}
