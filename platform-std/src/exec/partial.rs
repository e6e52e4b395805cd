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
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cllm_core::accumulate::Accumulator;
use cllm_core::kernels::Kernels;
use cllm_core::reduce::Segments;

use super::pool::Job;
use super::reduce::GRAD;
use super::schedule::leaf_block_units;
use super::shared::Span;
use super::{ExecError, Hierarchy, StepStats, UpdateSettings};

/// What [`Hierarchy::compute_partial_overlapped`] calls with each final
/// piece: its element range and its cells.
pub type OnFinal<'a, C> = dyn FnMut(Range<usize>, &mut [C]) + 'a;

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
        self.check_leaves(&leaves)?;
        self.run(Job::Train {
            step,
            update: None,
            leaves: Span::of(leaves.start as usize..leaves.end as usize),
            partial: true,
        })
    }

    /// [`compute_partial`](Self::compute_partial) for an associative
    /// accumulator that hands the merged cells to `on_final` piece by piece
    /// as they become final, while the workers still compute the rest: the
    /// job reduces while backward runs (whatever
    /// [`set_streaming`](Self::set_streaming) says), and `on_final` runs on
    /// the calling thread with the element range and the cells of each
    /// piece. The pieces are `bucket` segments long, taken from the top of
    /// the buffer down (the last one shorter): always the same pieces for
    /// the same model and `bucket`, each exactly once and in that order, so
    /// processes can issue one collective per piece in step. What
    /// `on_final` writes into its piece is what [`merged_cells`](Self::merged_cells)
    /// then holds. If the job fails, the pieces not yet handed out are not.
    pub fn compute_partial_overlapped(
        &mut self,
        step: u64,
        leaves: Range<u32>,
        bucket: usize,
        on_final: &mut OnFinal<'_, A::Cell>,
    ) -> Result<StepStats, ExecError> {
        self.check_leaves(&leaves)?;
        if !A::ASSOCIATIVE || bucket == 0 {
            return Err(ExecError::Config(format!(
                "an overlapped partial job needs an associative accumulator and a bucket of at \
                 least one segment ({bucket})"
            )));
        }
        let sh = Arc::clone(&self.shared);
        let (count, t) = (sh.segments.count(), sh.cfg.threads);
        let streaming = sh.stream.swap(true, Ordering::Relaxed);
        for r in &sh.reduced {
            // Workers are parked: nothing is reduced yet.
            r.store(count, Ordering::Relaxed);
        }
        let job = Job::Train {
            step,
            update: None,
            leaves: Span::of(leaves.start as usize..leaves.end as usize),
            partial: true,
        };
        let started = self.start(job);
        // Segments top.. have been handed out.
        let mut top = count;
        let mut hand_out = |from: usize, top: &mut usize| {
            while *top > 0 && top.saturating_sub(bucket) >= from {
                let lo = top.saturating_sub(bucket);
                let r = sh.segments.range(lo).start..sh.segments.range(*top - 1).end;
                // SAFETY: every segment from `from` up is reduced into
                // accs[0] and no worker touches it again in this job; the
                // caller is the only one holding these cells.
                on_final(r.clone(), unsafe { sh.accs[0].get_mut(r) });
                *top = lo;
            }
        };
        // A panicking `on_final` must not unwind past workers that are still
        // in the job: it is held until they are done.
        let mut panicked = None;
        if started.is_ok() {
            while !self.job_done() {
                // What is still out when the job ends goes after it.
                let from = (0..t)
                    .map(|w| sh.reduced[w].load(Ordering::Acquire))
                    .max()
                    .unwrap_or(0);
                if panicked.is_none() {
                    let r = catch_unwind(AssertUnwindSafe(|| hand_out(from, &mut top)));
                    panicked = r.err();
                }
                std::thread::park_timeout(std::time::Duration::from_micros(50));
            }
        }
        let r = started.and_then(|()| self.join_job());
        sh.stream.store(streaming, Ordering::Relaxed);
        if let Some(p) = panicked {
            resume_unwind(p);
        }
        r?;
        hand_out(0, &mut top);
        Ok(self.job_stats(job))
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

    fn check_leaves(&self, leaves: &Range<u32>) -> Result<(), ExecError> {
        let n = self.shared.cfg.shape.leaf_count();
        if leaves.start > leaves.end || leaves.end > n {
            return Err(ExecError::Config(format!(
                "leaf range {leaves:?} outside the tree's {n} leaves"
            )));
        }
        Ok(())
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
