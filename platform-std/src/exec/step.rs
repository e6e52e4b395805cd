//! The training job, phase by phase.
//!
//! A worker computes the units it claims, the units are reduced (thread
//! accumulators merged segment by segment, or the f32 fold plan replayed
//! round by round), each segment's owner finishes the mean gradient there,
//! and, for a full step with an update, applies the optimizer.

use cllm_core::accumulate::{AccError, Accumulator, F32Acc};
use cllm_core::kernels::Kernels;
use cllm_core::reduce::{FoldPlan, SEGMENT_LEN};

use super::phases::Laps;
use super::pool::Stop;
use super::reduce::{ordered_norm, GRAD};
use super::schedule::{fold_width, MAX_PENDING, MAX_UNIT_BUFFERS};
use super::shared::{Local, Shared, Span};
use super::{ExecError, UpdateSettings, MAX_THREADS};

impl<A: Accumulator, K: Kernels<f32>> Shared<A, K> {
    /// One worker's part of a training job: its units, the reduction, the
    /// finish and the update, with the time each took.
    pub(super) fn train(
        &self,
        id: usize,
        step: u64,
        update: Option<UpdateSettings>,
        leaves: Span,
        partial: bool,
        local: &mut Local,
    ) -> Result<(), Stop> {
        let mut laps = Laps::start();
        let r = self.train_phases(id, step, update, leaves, partial, local, &mut laps);
        // SAFETY: phases[id] belongs to worker id.
        unsafe { self.phases.get_mut(id..id + 1)[0] = laps.times };
        r
    }

    // Long (about 200 lines) on purpose: the phases are separated by
    // barriers (`self.wait()`) that every worker must reach in the same
    // order, and the SAFETY arguments of each phase lean on the barrier
    // before it; kept in one function, the order and the reasoning are
    // read top to bottom. The phases' work is in compute.rs, reduce.rs and
    // update.rs.
    #[allow(clippy::too_many_arguments)]
    fn train_phases(
        &self,
        id: usize,
        step: u64,
        update: Option<UpdateSettings>,
        leaves: Span,
        partial: bool,
        local: &mut Local,
        laps: &mut Laps,
    ) -> Result<(), Stop> {
        let t = self.cfg.threads;
        let inv_units = 1.0 / self.cfg.units as f32;
        let units = self.leaf_span_units(leaves);
        if A::ASSOCIATIVE {
            // Unit gradients wait in this worker's buffers and are added to
            // its accumulator K at a time (one pass over the wide cells per
            // K units); whatever is pending at the end is summed straight
            // into the rounded result, segment by segment.
            let k = self.per_worker;
            let mine = id * k..(id + 1) * k;
            // SAFETY: accs[id], slots[mine], pending[id] and flushed[id]
            // belong to worker id in this phase.
            let my_acc = unsafe { self.accs[id].all_mut() };
            let (mut pending, mut flushed) = (0usize, false);
            while let Some(u) = self.claim(id) {
                // Flush only when a new unit needs a buffer, so a worker
                // whose share fits its buffers never touches its cells.
                if pending == k {
                    let mut bufs: [&[f32]; MAX_UNIT_BUFFERS] = [&[]; MAX_UNIT_BUFFERS];
                    for (j, b) in bufs.iter_mut().take(k).enumerate() {
                        *b = unsafe { self.slots[mine.start + j].all() };
                    }
                    let r = if flushed {
                        self.acc.add_many(my_acc, &bufs[..k])
                    } else {
                        self.acc.assign_many(my_acc, &bufs[..k])
                    };
                    r.map_err(|e| self.fail(ExecError::Accumulate(e)))?;
                    (pending, flushed) = (0, true);
                    laps.reduce();
                }
                self.run_unit(id, step, u, mine.start + pending, local)?;
                laps.compute();
                pending += 1;
            }
            unsafe {
                self.pending.get_mut(id..id + 1)[0] = pending;
                self.flushed.get_mut(id..id + 1)[0] = flushed;
            }
            self.wait()?;
            laps.wait();
            // SAFETY: written by their owners before the barrier.
            let (pend, done) = unsafe { (self.pending.all(), self.flushed.all()) };
            // Is the gradient slot (worker 0's first unit buffer) one of the
            // summands? Then each segment's sum goes through `tmp`.
            let grad_pending = pend[0] > 0;
            debug_assert!(GRAD == 0 && self.slots.len() >= k);
            let mut tmp = [0.0f32; SEGMENT_LEN];
            for s in self.segments.owned(id, t) {
                let r = self.segments.range(s);
                let fail = |e: AccError| self.fail(ExecError::Accumulate(e.offset(r.start)));
                // SAFETY: segment s of every buffer belongs to worker id in
                // this phase (accs[0] is written only in partial mode).
                let mut xs: [&[f32]; MAX_PENDING] = [&[]; MAX_PENDING];
                let mut nx = 0;
                for (w, &n) in pend.iter().enumerate() {
                    for j in 0..n {
                        xs[nx] = unsafe { self.slots[w * k + j].get(r.clone()) };
                        nx += 1;
                    }
                }
                if partial {
                    // Leave the merged cells in accs[0] for the caller.
                    let dst = unsafe { self.accs[0].get_mut(r.clone()) };
                    if done[0] {
                        self.acc.add_many(dst, &xs[..nx]).map_err(fail)?;
                    } else {
                        self.acc.assign_many(dst, &xs[..nx]).map_err(fail)?;
                    }
                    for w in (1..t).filter(|&w| done[w]) {
                        let src = unsafe { self.accs[w].get(r.clone()) };
                        self.acc.merge(dst, src).map_err(fail)?;
                    }
                    continue;
                }
                let mut cells: [&[A::Cell]; MAX_THREADS] = [&[]; MAX_THREADS];
                let mut nc = 0;
                for w in (0..t).filter(|&w| done[w]) {
                    cells[nc] = unsafe { self.accs[w].get(r.clone()) };
                    nc += 1;
                }
                if grad_pending {
                    let out = &mut tmp[..r.len()];
                    self.acc
                        .sum_round(&cells[..nc], &xs[..nx], out)
                        .map_err(fail)?;
                    // The summands' slices are not used past this point.
                    // SAFETY: segment s of the gradient slot belongs to
                    // worker id, and its sum has been read.
                    let g = unsafe { self.slots[GRAD].get_mut(r.clone()) };
                    g.copy_from_slice(out);
                    self.finish_segment(s, g, inv_units);
                } else {
                    // SAFETY: the gradient slot is no summand; segment s of
                    // it belongs to worker id.
                    let g = unsafe { self.slots[GRAD].get_mut(r.clone()) };
                    self.acc
                        .sum_round(&cells[..nc], &xs[..nx], g)
                        .map_err(fail)?;
                    self.finish_segment(s, g, inv_units);
                }
            }
        } else {
            // The block's units folded as if they were a whole step of this
            // shape (for the whole step: the canonical fold).
            let width = fold_width(&self.cfg, self.model.num_params());
            let mut plan = FoldPlan::new(self.cfg.shape, units.len(), width)
                .map_err(|e| self.fail(ExecError::Config(e.to_string())))?;
            let (rounds, mut round_no) = (plan.rounds(), 0);
            while let Some(round) = plan.next_round() {
                round_no += 1;
                // In the last round each owner scales its segments and takes
                // their norms right after their last add, while they are in
                // cache, and without another barrier: the same worker owns
                // the same segments in both phases.
                let finish_here = round_no == rounds && !partial;
                let mut taken = 0;
                while let Some(k) = self.claim_in_round(id, &round, &mut taken) {
                    let u = units.start + round.units().start + k;
                    let buf = round.unit_buffer(k).expect("claimed inside the round");
                    self.run_unit(id, step, u, buf, local)?;
                    laps.compute();
                }
                self.wait()?;
                laps.wait();
                for s in self.segments.owned(id, t) {
                    let r = self.segments.range(s);
                    for cllm_core::reduce::Add { src, dst } in round.ops() {
                        // SAFETY: segment s of every slot belongs to worker id
                        // in the fold phase; src != dst.
                        let (d, x) = unsafe {
                            (
                                self.slots[dst].get_mut(r.clone()),
                                self.slots[src].get(r.clone()),
                            )
                        };
                        // Non-associative means f32: the slots are the cells.
                        F32Acc
                            .merge(d, x)
                            .map_err(|e| self.fail(ExecError::Accumulate(e.offset(r.start))))?;
                    }
                    if finish_here {
                        // SAFETY: segment s of the gradient slot belongs to
                        // worker id.
                        let g = unsafe { self.slots[GRAD].get_mut(r.clone()) };
                        self.finish_segment(s, g, inv_units);
                    }
                }
                laps.reduce();
                if !finish_here {
                    self.wait()?;
                    laps.wait();
                }
            }
            // The sum is in the gradient slot: the plan's root is buffer 0,
            // the first unit's, whatever the shape and width (checked so a
            // future plan cannot silently train on the wrong buffer).
            let root = plan.root();
            if root.is_some_and(|b| b != GRAD) {
                return Err(self.fail(ExecError::Config(format!(
                    "the fold plan left the sum in buffer {root:?}, not {GRAD}"
                ))));
            }
            if units.len() == 0 {
                for s in self.segments.owned(id, t) {
                    let r = self.segments.range(s);
                    // SAFETY: segment s of the gradient slot belongs to worker id.
                    let g = unsafe { self.slots[GRAD].get_mut(r.clone()) };
                    // Only a partial block can be empty: its sum is zero.
                    g.fill(0.0);
                    if !partial {
                        self.finish_segment(s, g, inv_units);
                    }
                }
            }
        }
        laps.reduce();
        self.wait()?;
        laps.wait();
        if partial {
            return Ok(());
        }
        let Some(up) = update else { return Ok(()) };
        // Every worker sums the same partials in the same order.
        let norm = ordered_norm(unsafe { self.seg_norms.all() });
        self.update_segments(self.segments.owned(id, t), norm, up)?;
        laps.update();
        self.wait()?;
        laps.wait();
        Ok(())
    }
}
