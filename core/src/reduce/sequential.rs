//! The reference driver: the whole protocol on one core.
//!
//! Used by tests as the ground truth for threaded executors, by the
//! bare-metal example as its executor, and by the docs as the smallest
//! complete use of the seam.

use super::{FoldPlan, ReduceError};
use crate::accumulate::{AccError, AccErrorKind, Accumulator, F32Acc};
use crate::tree::Shape;

/// `f32` elements [`reduce_sequential`] needs in `f32_bufs` for a tree of
/// `depth` and `params` parameters: `params` (a unit scratch buffer) for an
/// associative accumulator, `(depth + 2) * params` (the width-1 fold plan)
/// otherwise.
pub const fn sequential_f32_len<A: Accumulator>(depth: u32, params: usize) -> usize {
    if A::ASSOCIATIVE {
        params
    } else {
        FoldPlan::buffers_for(depth, 1) * params
    }
}

/// Cells [`reduce_sequential`] needs: `params` for an associative
/// accumulator, none otherwise.
pub const fn sequential_cell_len<A: Accumulator>(params: usize) -> usize {
    if A::ASSOCIATIVE {
        params
    } else {
        0
    }
}

fn need(expected: usize, got: usize) -> Result<(), ReduceError> {
    if got >= expected {
        Ok(())
    } else {
        Err(ReduceError::BufferLength { expected, got })
    }
}

/// Buffer `i` of length `p` in a flat array of buffers.
fn buf(bufs: &mut [f32], p: usize, i: usize) -> &mut [f32] {
    &mut bufs[i * p..][..p]
}

/// Buffers `src` (shared) and `dst` (exclusive), `src != dst`.
fn pair(bufs: &mut [f32], p: usize, src: usize, dst: usize) -> (&[f32], &mut [f32]) {
    if src < dst {
        let (lo, hi) = bufs.split_at_mut(dst * p);
        (&lo[src * p..][..p], &mut hi[..p])
    } else {
        let (lo, hi) = bufs.split_at_mut(src * p);
        (&hi[..p], &mut lo[dst * p..][..p])
    }
}

/// Reduces `units` unit gradients in the canonical f32 order of `shape`,
/// computing `width` units per round (any width gives the same bits; width
/// 1 uses the least memory).
///
/// `compute_unit(u, g)` gets a zeroed buffer `g` of `out.len()` elements and
/// writes (or accumulates) unit `u`'s gradient into it. `bufs` must hold
/// `FoldPlan::buffers_for(depth, width) * out.len()` elements (a longer
/// slice is fine, the rest is untouched). `out` receives the root's value,
/// or zeros when `units == 0`. A non-finite gradient is reported as
/// [`AccErrorKind::NonFinite`] (with its index in `out`).
pub fn fold_sequential<A: Accumulator<Cell = f32>>(
    acc: &A,
    shape: Shape,
    units: usize,
    width: usize,
    bufs: &mut [f32],
    out: &mut [f32],
    mut compute_unit: impl FnMut(usize, &mut [f32]),
) -> Result<(), ReduceError> {
    let p = out.len();
    let mut plan = FoldPlan::new(shape, units, width)?;
    need(plan.buffers().saturating_mul(p), bufs.len())?;
    while let Some(round) = plan.next_round() {
        for (u, b) in round.unit_buffers() {
            let g = buf(bufs, p, b);
            g.fill(0.0);
            compute_unit(u, g);
        }
        for op in round.ops() {
            let (src, dst) = pair(bufs, p, op.src, op.dst);
            acc.merge(dst, src)?;
        }
    }
    match plan.root() {
        Some(b) => acc.round(buf(bufs, p, b), out)?,
        None => out.fill(0.0),
    }
    // A unit that was only ever moved (a lone unit) met no `merge` check.
    match out.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(AccError::new(AccErrorKind::NonFinite, i).into()),
        None => Ok(()),
    }
}

/// Adds every unit's gradient into one accumulator, in unit order, and
/// rounds it into `out`. For an associative accumulator this gives the bits
/// of any tree and any executor; for a non-associative one (`F32Acc`) it is
/// the flat order, *not* the canonical tree order: see [`reduce_sequential`].
///
/// `cells` and `scratch` must hold at least `out.len()` elements (only that
/// prefix is used).
pub fn accumulate_sequential<A: Accumulator>(
    acc: &A,
    units: usize,
    cells: &mut [A::Cell],
    scratch: &mut [f32],
    out: &mut [f32],
    mut compute_unit: impl FnMut(usize, &mut [f32]),
) -> Result<(), ReduceError> {
    let p = out.len();
    need(p, cells.len())?;
    need(p, scratch.len())?;
    let (cells, scratch) = (&mut cells[..p], &mut scratch[..p]);
    acc.zero(cells);
    for u in 0..units {
        scratch.fill(0.0);
        compute_unit(u, scratch);
        acc.add(cells, scratch)?;
    }
    acc.round(cells, out)?;
    Ok(())
}

/// The reference reduction of one step for any accumulator.
///
/// * Associative accumulators (`A::ASSOCIATIVE`): [`accumulate_sequential`]
///   into `cells`, with the first `out.len()` elements of `f32_bufs` as
///   the unit scratch.
/// * Otherwise the canonical f32 order: [`fold_sequential`] with width 1 in
///   `f32_bufs`; `cells` is not used (may be empty). The additions are
///   `f32` additions ([`F32Acc`], the only non-associative accumulator).
///
/// Size the buffers with [`sequential_f32_len`] and [`sequential_cell_len`].
pub fn reduce_sequential<A: Accumulator>(
    acc: &A,
    shape: Shape,
    units: usize,
    f32_bufs: &mut [f32],
    cells: &mut [A::Cell],
    out: &mut [f32],
    compute_unit: impl FnMut(usize, &mut [f32]),
) -> Result<(), ReduceError> {
    if A::ASSOCIATIVE {
        accumulate_sequential(acc, units, cells, f32_bufs, out, compute_unit)
    } else {
        fold_sequential(&F32Acc, shape, units, 1, f32_bufs, out, compute_unit)
    }
}
