//! One logging macro for both transports: plain text over semihosting by
//! default, defmt frames (also over semihosting) with the `defmt` feature.
//! Messages use only `{}` placeholders, with arguments that format both ways
//! (integers, `&str`, and the wrappers below).

use core::fmt;

#[cfg(not(feature = "defmt"))]
macro_rules! say {
    ($($t:tt)*) => {
        cortex_m_semihosting::hprintln!($($t)*)
    };
}

// hprintln must not be used with defmt-semihosting: both write to the host's
// stdout and plain text would corrupt the defmt frames.
#[cfg(feature = "defmt")]
macro_rules! say {
    ($($t:tt)*) => {
        defmt::println!($($t)*)
    };
}

pub(crate) use say;

/// An `f32` shown with four decimals (defmt shows it in full).
pub struct Dec4(pub f32);

impl fmt::Display for Dec4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.4}", self.0)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Dec4 {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=f32}", self.0)
    }
}

/// A `u32` in hexadecimal (bit patterns, checksums, addresses).
pub struct Hex(pub u32);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Hex {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=u32:#x}", self.0)
    }
}

/// Anything with `Display` (cllm-core's errors, panic messages). Under defmt
/// it is formatted on the device, which costs flash but needs no `Format`
/// impls in the core.
pub struct Shown<'a, T: fmt::Display + ?Sized>(pub &'a T);

impl<T: fmt::Display + ?Sized> fmt::Display for Shown<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(feature = "defmt")]
impl<T: fmt::Display + ?Sized> defmt::Format for Shown<'_, T> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{}", defmt::Display2Format(self.0))
    }
}
