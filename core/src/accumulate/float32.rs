//! Plain `f32` accumulation: the fastest, but its rounding depends on the
//! order of additions, so executors must follow the canonical tree order.

use super::{AccError, AccErrorKind, Accumulator};

/// `f32` accumulator (cells are `f32`).
#[derive(Clone, Copy, Debug, Default)]
pub struct F32Acc;

fn check_len(a: usize, b: usize) -> Result<(), AccError> {
    if a == b {
        Ok(())
    } else {
        Err(AccError::new(AccErrorKind::LengthMismatch, a.min(b)))
    }
}

fn first_non_finite(xs: &[f32]) -> Option<usize> {
    xs.iter().position(|x| !x.is_finite())
}

impl Accumulator for F32Acc {
    type Cell = f32;
    const ASSOCIATIVE: bool = false;

    fn name(&self) -> &'static str {
        "f32"
    }
    fn zero_cell(&self) -> f32 {
        0.0
    }
    fn zero(&self, cells: &mut [f32]) {
        cells.fill(0.0);
    }
    fn add(&self, cells: &mut [f32], xs: &[f32]) -> Result<(), AccError> {
        check_len(cells.len(), xs.len())?;
        for (c, x) in cells.iter_mut().zip(xs) {
            *c += *x;
        }
        // Checked after the fact: a non-finite input makes a non-finite cell,
        // and one pass over the output is cheaper than a branch per element.
        match first_non_finite(cells) {
            Some(i) => Err(AccError::new(AccErrorKind::NonFinite, i)),
            None => Ok(()),
        }
    }
    fn merge(&self, dst: &mut [f32], src: &[f32]) -> Result<(), AccError> {
        self.add(dst, src)
    }
    fn round(&self, cells: &[f32], out: &mut [f32]) -> Result<(), AccError> {
        check_len(cells.len(), out.len())?;
        out.copy_from_slice(cells);
        Ok(())
    }
}
