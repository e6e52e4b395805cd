//! Exact (Kulisch) accumulation (being written).

/// Exact accumulator (being written).
#[derive(Clone, Copy, Debug, Default)]
pub struct ExactAcc;

/// One exact register (being written).
#[derive(Clone, Copy, Debug, Default)]
pub struct ExactCell;
