//! Per-participant segment work: merging partial sums, replaying a fold
//! round, rounding to f32. Each function touches only the segments its
//! participant owns, so all participants call it at once, between barriers.

use super::{FoldRound, ReduceError, Segments, SharedSlice};
use crate::accumulate::Accumulator;

fn check_len(expected: usize, got: usize) -> Result<(), ReduceError> {
    if expected == got {
        Ok(())
    } else {
        Err(ReduceError::BufferLength { expected, got })
    }
}

/// Whether two shared slices are the same memory. Distinct `SharedSlice`s
/// come from distinct `&mut` borrows and cannot overlap, so identity is the
/// only aliasing possible.
fn same<T, U>(a: &SharedSlice<'_, T>, b: &SharedSlice<'_, U>) -> bool {
    !a.is_empty() && a.as_ptr().cast::<u8>() == b.as_ptr().cast::<u8>()
}

/// `dst[s] += srcs[0][s]; dst[s] += srcs[1][s]; …` for every segment `s`
/// owned by `participant` (see [`Segments::owned`]): how thread-local
/// accumulators become one, with all participants working at once.
///
/// Errors carry indices within the whole buffer. Every buffer must be
/// `segments.len()` long, and `dst` must not be one of `srcs`.
///
/// # Safety
/// During the call no other thread may write the segments `participant`
/// owns in `dst` or in any of `srcs`, nor read them in `dst`. Participants
/// calling this concurrently with the same `segments`, `participants` and
/// buffers and distinct `participant` satisfy this; so does anything
/// separated from the call by a [`super::SpinBarrier`] phase.
pub unsafe fn merge_owned_segments<A: Accumulator>(
    acc: &A,
    segments: &Segments,
    participant: usize,
    participants: usize,
    dst: &SharedSlice<'_, A::Cell>,
    srcs: &[SharedSlice<'_, A::Cell>],
) -> Result<(), ReduceError> {
    check_len(segments.len(), dst.len())?;
    for (i, src) in srcs.iter().enumerate() {
        check_len(segments.len(), src.len())?;
        if same(dst, src) {
            return Err(ReduceError::Aliased { src: i });
        }
    }
    for r in segments.owned_ranges(participant, participants) {
        // SAFETY: `participant` owns segment `r` in every buffer (caller's
        // contract); `dst` is none of `srcs` (checked), so the exclusive and
        // shared ranges are different memory.
        let d = unsafe { dst.range_mut(r.clone()) };
        for src in srcs {
            let s = unsafe { src.range(r.clone()) };
            acc.merge(d, s)
                .map_err(|e| ReduceError::Acc(e.offset(r.start)))?;
        }
    }
    Ok(())
}

/// Replays the additions of a [`FoldRound`] on the segments `participant`
/// owns: `bufs[op.dst][s] += bufs[op.src][s]`, op after op. Each element sees
/// the additions in plan order, so any number of participants gives the
/// same bits.
///
/// `bufs` are the plan's physical buffers (at least `round.buffers()`, each
/// `segments.len()` long). Errors carry indices within the whole buffer.
///
/// # Safety
/// As for [`merge_owned_segments`], for every buffer in `bufs`: during the
/// call no other thread accesses the segments `participant` owns (e.g. all
/// unit computations of the round are finished, behind a barrier).
pub unsafe fn replay_owned_segments<A: Accumulator<Cell = f32>>(
    acc: &A,
    round: &FoldRound,
    segments: &Segments,
    participant: usize,
    participants: usize,
    bufs: &[SharedSlice<'_, f32>],
) -> Result<(), ReduceError> {
    if bufs.len() < round.buffers() {
        return Err(ReduceError::TooFewBuffers {
            needed: round.buffers(),
            got: bufs.len(),
        });
    }
    for b in bufs {
        check_len(segments.len(), b.len())?;
    }
    for op in round.ops() {
        // The plan never adds a buffer to itself, and indices are < buffers().
        let (src, dst) = (&bufs[op.src], &bufs[op.dst]);
        for r in segments.owned_ranges(participant, participants) {
            // SAFETY: owned segment (caller's contract); src != dst, and
            // distinct SharedSlices never overlap.
            let d = unsafe { dst.range_mut(r.clone()) };
            let s = unsafe { src.range(r.clone()) };
            acc.merge(d, s)
                .map_err(|e| ReduceError::Acc(e.offset(r.start)))?;
        }
    }
    Ok(())
}

/// `out[s] = round(cells[s])` for every segment `s` owned by `participant`.
///
/// # Safety
/// During the call no other thread may write the segments `participant`
/// owns in `cells`, nor access them in `out`.
pub unsafe fn round_owned_segments<A: Accumulator>(
    acc: &A,
    segments: &Segments,
    participant: usize,
    participants: usize,
    cells: &SharedSlice<'_, A::Cell>,
    out: &SharedSlice<'_, f32>,
) -> Result<(), ReduceError> {
    check_len(segments.len(), cells.len())?;
    check_len(segments.len(), out.len())?;
    if same(cells, out) {
        return Err(ReduceError::Aliased { src: 0 });
    }
    for r in segments.owned_ranges(participant, participants) {
        // SAFETY: owned segment (caller's contract); `cells` is not `out`
        // (checked), and distinct SharedSlices never overlap.
        let c = unsafe { cells.range(r.clone()) };
        let o = unsafe { out.range_mut(r.clone()) };
        acc.round(c, o)
            .map_err(|e| ReduceError::Acc(e.offset(r.start)))?;
    }
    Ok(())
}
