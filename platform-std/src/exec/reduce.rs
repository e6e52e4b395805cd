//! Finishing the reduced gradient, and sums that must not depend on who
//! computed what.
//!
//! Once the units are reduced, each segment's sum is rounded (associative
//! accumulators), scaled to the mean and its squared norm recorded
//! ([`Shared::finish`], [`Shared::finish_segment`]); losses and the global
//! norm are summed in index order ([`ordered_mean`], [`ordered_norm`]). Also
//! here: the slot that holds the gradient ([`GRAD`]) and how many reduction
//! buffers a configuration needs ([`reduction_buffers`]).

use cllm_core::accumulate::Accumulator;
use cllm_core::kernels::Kernels;
use cllm_core::optim;
use cllm_core::reduce::FoldPlan;

use super::pool::Stop;
use super::schedule::{fold_width, unit_buffers_per_worker};
use super::shared::{Shared, Span};
use super::{ExecConfig, ExecError};

/// The slot that holds the step's gradient once the units are reduced.
///
/// f32: the [`FoldPlan`]'s root is always its buffer 0 (the one unit 0 is
/// computed into, which only ever moves up the tree), so the fold leaves the
/// sum there and nothing is copied. Associative: worker 0's first unit
/// buffer, written by the reduction only after (segment by segment) it has
/// been read. Either way the slot is free again until the next job computes
/// units, which is what makes it the gradient between jobs.
pub(super) const GRAD: usize = 0;

/// The parameter-sized reduction buffers a hierarchy running `cfg` holds for
/// a model of `params` parameters: `(f32 buffers, accumulators)`.
///
/// The f32 buffers include the one that holds the gradient between steps:
/// for f32 the fold plan's `width + depth + 1`, the width being two units
/// per thread when the extra buffers take at most 32 MiB, else one (never
/// more than a step has units); for an associative accumulator each
/// worker's unit buffers (its share of the step, at most 8 and 64 MiB). An
/// associative
/// accumulator adds one accumulator per worker. Besides these the hierarchy
/// holds the parameters and the optimizer's two moments.
pub fn reduction_buffers(cfg: &ExecConfig, associative: bool, params: usize) -> (usize, usize) {
    if associative {
        let per_worker = unit_buffers_per_worker(cfg.units, cfg.threads, params);
        (cfg.threads * per_worker, cfg.threads)
    } else {
        (
            FoldPlan::buffers_for(cfg.shape.depth(), fold_width(cfg, params)),
            0,
        )
    }
}

/// Sum in index order, so the figure does not depend on who computed what.
pub(super) fn ordered_mean(xs: &[f32]) -> f32 {
    if xs.is_empty() {
        return 0.0;
    }
    (xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64) as f32
}

pub(super) fn ordered_norm(seg_sq: &[f64]) -> f64 {
    seg_sq.iter().sum::<f64>().sqrt()
}

impl<A: Accumulator, K: Kernels<f32>> Shared<A, K> {
    /// Round (associative accumulators) and scale the reduced sums of the
    /// segments of `segments` this worker owns, recording their norms.
    pub(super) fn finish(&self, id: usize, segments: Span) -> Result<(), Stop> {
        let inv_units = 1.0 / self.cfg.units as f32;
        for s in (segments.start + id..segments.end).step_by(self.cfg.threads) {
            let r = self.segments.range(s);
            // SAFETY: segment s belongs to worker id in this job.
            let g = unsafe { self.slots[GRAD].get_mut(r.clone()) };
            if A::ASSOCIATIVE {
                let cells = unsafe { self.accs[0].get(r.clone()) };
                self.acc
                    .round(cells, g)
                    .map_err(|e| self.fail(ExecError::Accumulate(e.offset(r.start))))?;
            }
            self.finish_segment(s, g, inv_units);
        }
        Ok(())
    }

    /// Scale the summed gradient to the mean over units and record the
    /// segment's squared norm.
    pub(super) fn finish_segment(&self, s: usize, g: &mut [f32], inv_units: f32) {
        for x in g.iter_mut() {
            *x *= inv_units;
        }
        // SAFETY: seg_norms[s] belongs to the owner of segment s.
        unsafe { self.seg_norms.get_mut(s..s + 1)[0] = optim::sum_squares(g) };
    }
}
