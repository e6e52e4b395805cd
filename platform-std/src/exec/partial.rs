//! The hooks for executors that span processes (cllm-mpi).
//!
//! A step then runs as: `compute_partial` on this process's leaves →
//! read `merged_cells` (or, for f32, `gradients`) → reduce across
//! processes → write the reduced sums of the segments this process owns
//! with `merged_cells_mut` / `gradients_mut` → `finish_gradients` →
//! combine the segment norms of all processes in segment order →
//! `apply_update` → exchange the updated parameters (`params_mut`).
//! Every step uses the same arithmetic as `train_step`, so an
//! associative accumulator gives the same bits as a single process.

use std::ops::Range;

use cllm_core::accumulate::Accumulator;
use cllm_core::kernels::Kernels;
use cllm_core::reduce::Segments;

use super::pool::Job;
use super::reduce::GRAD;
use super::schedule::leaf_block_units;
use super::shared::Span;
use super::{ExecError, Hierarchy, StepStats, UpdateSettings};

impl<A: Accumulator + Send + 'static, K: Kernels<f32> + Send + 'static> Hierarchy<A, K>
where
    A::Cell: 'static,
{
    /// The units of the step that leaves `leaves` own: the contiguous range
    /// `[first unit of leaf leaves.start, first unit of leaf leaves.end)`.
    pub fn leaf_units(&self, leaves: Range<u32>) -> Range<usize> {
        leaf_block_units(self.shared.cfg.shape, self.shared.cfg.units, leaves)
    }

    /// Compute only the units owned by the contiguous block of leaves
    /// `leaves` (a slice of the tree) with the local threads, and leave their
    /// sum unrounded: for associative accumulators in [`merged_cells`]
    /// (thread accumulators merged), for f32 in [`gradients`] (the canonical
    /// fold of the block's units, as if they were a whole step of the same
    /// shape; zero when the block has no units). Nothing is scaled and the
    /// parameters are not touched. The returned loss is the mean over the
    /// block's units (0 when it has none); `grad_norm` is 0.
    ///
    /// [`merged_cells`]: Self::merged_cells
    /// [`gradients`]: Self::gradients
    pub fn compute_partial(
        &mut self,
        step: u64,
        leaves: Range<u32>,
    ) -> Result<StepStats, ExecError> {
        let n = self.shared.cfg.shape.leaf_count();
        if leaves.start > leaves.end || leaves.end > n {
            return Err(ExecError::Config(format!(
                "leaf range {leaves:?} outside the tree's {n} leaves"
            )));
        }
        self.run(Job::Train {
            step,
            update: None,
            leaves: Span::of(leaves.start as usize..leaves.end as usize),
            partial: true,
        })
    }

    /// The merged accumulator after [`compute_partial`](Self::compute_partial)
    /// (also after a full step, where it holds the unrounded sum). Empty for
    /// non-associative accumulators (f32), whose sums are in
    /// [`gradients`](Self::gradients).
    pub fn merged_cells(&self) -> &[A::Cell] {
        match self.shared.accs.first() {
            // SAFETY: as for `params`.
            Some(b) => unsafe { b.all() },
            None => &[],
        }
    }

    /// The merged accumulator, to store reduced sums before
    /// [`finish_gradients`](Self::finish_gradients).
    pub fn merged_cells_mut(&mut self) -> &mut [A::Cell] {
        match self.shared.accs.first() {
            // SAFETY: as for `params_mut`.
            Some(b) => unsafe { b.all_mut() },
            None => &mut [],
        }
    }

    /// The gradient buffer, to store reduced f32 sums before
    /// [`finish_gradients`](Self::finish_gradients).
    pub fn gradients_mut(&mut self) -> &mut [f32] {
        // SAFETY: as for `params_mut`.
        unsafe { self.shared.slots[GRAD].all_mut() }
    }

    /// The fixed segments of the parameter vector.
    pub fn segments(&self) -> Segments {
        self.shared.segments
    }

    /// Turn the reduced sums of segments `segments` into the mean gradient,
    /// with the local threads, exactly as a full step does: associative
    /// accumulators round [`merged_cells`](Self::merged_cells) into the
    /// gradient, f32 takes [`gradients`](Self::gradients) as the sum; then
    /// each element is multiplied by `1/units`. Returns `Σg²` of each segment
    /// of the range (index 0 = `segments.start`), the partials whose sum in
    /// segment order is the squared global norm.
    pub fn finish_gradients(&mut self, segments: Range<usize>) -> Result<&[f64], ExecError> {
        self.check_segments(&segments)?;
        self.dispatch(Job::Finish {
            segments: Span::of(segments.clone()),
        })?;
        // SAFETY: workers are parked again.
        Ok(unsafe { self.shared.seg_norms.get(segments) })
    }

    /// Apply the optimizer to segments `segments` (parameters and optimizer
    /// state there) with the local threads, clipping by `grad_norm` (the
    /// global norm of the mean gradient) as `train_step` does.
    pub fn apply_update(
        &mut self,
        segments: Range<usize>,
        grad_norm: f64,
        update: UpdateSettings,
    ) -> Result<(), ExecError> {
        self.check_segments(&segments)?;
        let (held, seg) = (&self.shared.state, &self.shared.segments);
        let elements = seg.range(segments.start).start..seg.range(segments.end).start;
        if !segments.is_empty() && (elements.start < held.start || elements.end > held.end) {
            return Err(ExecError::Config(format!(
                "segments {segments:?} (elements {elements:?}) lie outside the held optimizer \
                 state {held:?}"
            )));
        }
        self.dispatch(Job::Update {
            segments: Span::of(segments),
            grad_norm,
            update,
        })
    }

    fn check_segments(&self, segments: &Range<usize>) -> Result<(), ExecError> {
        let n = self.shared.segments.count();
        if segments.start > segments.end || segments.end > n {
            return Err(ExecError::Config(format!(
                "segment range {segments:?} outside the {n} segments"
            )));
        }
        Ok(())
    }
}
