//! Which worker computes which unit.
//!
//! A training job's units belong to contiguous blocks of leaves
//! ([`leaf_block_units`]): worker `i` owns the `i`-th sub-block and, with an
//! associative accumulator, claims its own units first and then steals
//! other workers' ([`Shared::claim`]). f32 units are handed out round by
//! round of the fold plan ([`Shared::claim_in_round`]), whose width
//! ([`fold_width`]) is sized here, as is the number of unit buffers a worker
//! keeps ([`unit_buffers_per_worker`]). Who computes a unit never changes
//! the bits.

use std::ops::Range;
use std::sync::atomic::Ordering;

use cllm_core::accumulate::Accumulator;
use cllm_core::kernels::Kernels;
use cllm_core::reduce::FoldRound;
use cllm_core::tree::Shape;

use super::shared::{Shared, Span};
use super::{ExecConfig, MAX_THREADS};

/// Most unit gradient buffers a worker keeps before adding them to its
/// accumulator (associative mode).
pub(super) const MAX_UNIT_BUFFERS: usize = 8;

pub(super) const MAX_PENDING: usize = MAX_THREADS * MAX_UNIT_BUFFERS;
/// Unit buffers per worker stay within this many bytes.
const UNIT_BUFFER_BYTES: usize = 64 << 20;

/// How many unit gradients a worker buffers: enough for its share of the
/// step when that is cheap, so wide accumulator cells are touched once per
/// step, and at least one.
pub(super) fn unit_buffers_per_worker(units: usize, threads: usize, params: usize) -> usize {
    let share = units.div_ceil(threads.max(1));
    let fit = UNIT_BUFFER_BYTES / (params.max(1) * std::mem::size_of::<f32>());
    share.min(fit).clamp(1, MAX_UNIT_BUFFERS)
}

/// Extra f32 unit buffers (beyond one per worker) a fold round may use.
const WIDE_ROUND_BYTES: usize = 32 << 20;

/// Units per f32 fold round: two per worker when the extra buffers fit in
/// [`WIDE_ROUND_BYTES`], else one; never more than a step has. Workers
/// claim a round's units as they go, so in a wide round a worker that is
/// ahead takes units from one that is behind (a preempted vCPU) instead of
/// waiting for it at the barrier. The bits do not depend on the width or
/// on who computes which unit.
pub(super) fn fold_width(cfg: &ExecConfig, params: usize) -> usize {
    let narrow = cfg.threads.min(cfg.units).max(1);
    let wide = (2 * cfg.threads)
        .min(cfg.units)
        .min(cllm_core::reduce::MAX_WIDTH);
    let extra = (wide.saturating_sub(narrow)).saturating_mul(params * std::mem::size_of::<f32>());
    if extra <= WIDE_ROUND_BYTES {
        wide.max(narrow)
    } else {
        narrow
    }
}

/// The units owned by the contiguous block of leaves `leaves` of `shape`
/// when a step has `units` units (see [`Shape::leaf_units`]).
pub fn leaf_block_units(shape: Shape, units: usize, leaves: Range<u32>) -> Range<usize> {
    let first = |leaf: u32| {
        if leaf >= shape.leaf_count() {
            units
        } else {
            shape.leaf_units(leaf, units).start
        }
    };
    if leaves.start >= leaves.end {
        let u = first(leaves.start);
        return u..u;
    }
    first(leaves.start)..first(leaves.end)
}

impl<A: Accumulator, K: Kernels<f32>> Shared<A, K> {
    pub(super) fn leaf_span_units(&self, leaves: Span) -> Span {
        Span::of(leaf_block_units(
            self.cfg.shape,
            self.cfg.units,
            leaves.start as u32..leaves.end as u32,
        ))
    }

    /// The next unit (index within `round`) for worker `id` in an f32 fold
    /// round. In a round with more units than workers they are handed out
    /// in order from a shared ticket, so a worker that is ahead takes what a
    /// slow one has not started. Otherwise (and with `CLLM_NO_STEAL=1`)
    /// worker `id` runs units `id, id + threads, …`: with one unit each,
    /// taking a late worker's unit only makes the taker run two in a row
    /// (measured slower with a competing process on one core).
    /// `taken` counts this worker's claims in the round (start it at 0).
    pub(super) fn claim_in_round(
        &self,
        id: usize,
        round: &FoldRound,
        taken: &mut usize,
    ) -> Option<usize> {
        let (start, end) = (round.units().start, round.units().end);
        if self.no_steal || round.len() <= self.cfg.threads {
            let k = id + *taken * self.cfg.threads;
            *taken += 1;
            return (k < round.len()).then_some(k);
        }
        // A ticket below `start` (rounds before used fixed order) counts
        // as `start`; the swap always expects the value last seen, so it
        // cannot spin on a value that is never there.
        let mut seen = self.fold_ticket.load(Ordering::Relaxed);
        loop {
            let next = seen.max(start);
            if next >= end {
                return None;
            }
            match self.fold_ticket.compare_exchange_weak(
                seen,
                next + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let k = next - start;
                    if k % self.cfg.threads != id {
                        self.stolen.fetch_add(1, Ordering::Relaxed);
                    }
                    return Some(k);
                }
                Err(now) => seen = now,
            }
        }
    }

    /// Whether every unit of the job has been claimed (no worker will start
    /// another one).
    pub(super) fn all_claimed(&self) -> bool {
        // SAFETY: `owned` is only written while the workers are parked.
        let owned = unsafe { self.owned.all() };
        (0..self.cfg.threads).all(|v| self.cursors[v].load(Ordering::Acquire) >= owned[v + 1])
    }

    /// Next unit for worker `id`: its own first, then other workers'.
    pub(super) fn claim(&self, id: usize) -> Option<usize> {
        let t = self.cfg.threads;
        // SAFETY: `owned` is only written while the workers are parked.
        let owned = unsafe { self.owned.all() };
        let victims = if self.no_steal { 1 } else { t };
        for k in 0..victims {
            let v = (id + k) % t;
            let end = owned[v + 1];
            if self.cursors[v].load(Ordering::Relaxed) >= end {
                continue;
            }
            // Release: a streaming reducer that sees the cursors used up
            // ([`Shared::all_claimed`]) also sees what the claimer stored
            // before claiming.
            let u = self.cursors[v].fetch_add(1, Ordering::AcqRel);
            if u < end {
                if k != 0 {
                    self.stolen.fetch_add(1, Ordering::Relaxed);
                }
                return Some(u);
            }
        }
        None
    }
}
