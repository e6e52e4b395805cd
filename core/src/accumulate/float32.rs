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

/// Elements per non-finite check: small enough that finding the offending
/// index rescans little, large enough that the vectorised add loop runs long.
const CHECK_CHUNK: usize = 256;

fn first_non_finite(xs: &[f32]) -> Option<usize> {
    xs.iter().position(|x| !x.is_finite())
}

/// `true` when some value is a NaN or an infinity (all exponent bits set);
/// branch-free so that it vectorises.
#[inline(always)]
fn any_non_finite(xs: &[f32]) -> bool {
    xs.iter().fold(false, |bad, x| {
        bad | (x.to_bits() & 0x7f80_0000 == 0x7f80_0000)
    })
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
        // Checked after the fact: a non-finite input makes a non-finite cell.
        // Checking each chunk while it is still in L1 keeps this a single
        // pass over memory; every cell is added even after an error.
        let mut first_bad_chunk = None;
        for (n, (cc, xc)) in cells
            .chunks_mut(CHECK_CHUNK)
            .zip(xs.chunks(CHECK_CHUNK))
            .enumerate()
        {
            for (c, x) in cc.iter_mut().zip(xc) {
                *c += *x;
            }
            if any_non_finite(cc) && first_bad_chunk.is_none() {
                first_bad_chunk = Some(n);
            }
        }
        match first_bad_chunk {
            Some(n) => {
                let start = n * CHECK_CHUNK;
                let i = first_non_finite(&cells[start..]).unwrap_or(0);
                Err(AccError::new(AccErrorKind::NonFinite, start + i))
            }
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
