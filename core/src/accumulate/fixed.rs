//! Fixed-point accumulation (being written).

/// Fixed-point accumulator (being written).
#[derive(Clone, Copy, Debug)]
pub struct FixedAcc {
    pub frac_bits: u32,
}
