//! The training job, phase by phase.
//!
//! A worker computes the units it claims, the units are reduced (thread
//! accumulators merged segment by segment, or the f32 fold plan replayed
//! round by round), each segment's owner finishes the mean gradient there,
//! and, for a full step with an update, applies the optimizer.

use cllm_core::accumulate::{AccError, Accumulator, F32Acc};
use cllm_core::kernels::Kernels;
use std::sync::atomic::Ordering;

use cllm_core::reduce::{FoldPlan, FoldRound, SEGMENT_LEN};

use super::phases::Laps;
use super::pool::Stop;
use super::reduce::{ordered_norm, GRAD};
use super::schedule::{fold_width, MAX_PENDING, MAX_UNIT_BUFFERS};
use super::shared::{Local, Shared, Span};
use super::stream::NONE;
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
            let stream = self.stream.load(Ordering::Relaxed);
            local.tag = local.tag.wrapping_add(1);
            let tag = local.tag;
            // SAFETY: accs[id], slots[mine], pending[id] and flushed[id]
            // belong to worker id in this phase.
            let my_acc = unsafe { self.accs[id].all_mut() };
            let (mut pending, mut flushed) = (0usize, false);
            let mut next = self.top_owned(id);
            let mut tmp = [0.0f32; SEGMENT_LEN];
            let mut sums = None;
            loop {
                if stream {
                    // Before claiming (see `all_claimed`): whoever sees the
                    // units used up sees this worker busy until it
                    // publishes its unit's progress.
                    self.publish(id, tag, NONE);
                }
                let Some(u) = self.claim(id) else { break };
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
                let slot = mine.start + pending;
                if !stream {
                    self.run_unit(id, step, u, slot, local, None)?;
                } else {
                    // What the reducers read once this unit is under way.
                    // SAFETY: no one reads them while this worker is busy
                    // (published NONE above).
                    unsafe {
                        self.pending.get_mut(id..id + 1)[0] = pending + 1;
                        self.flushed.get_mut(id..id + 1)[0] = flushed;
                    }
                    let mut failed = None;
                    let mut between = |first: usize| {
                        self.publish(id, tag, first);
                        if failed.is_some() || !self.all_claimed() {
                            return;
                        }
                        laps.compute();
                        let first = self.workers_ready(tag);
                        let r = self.reduce_down(id, &mut next, first, |s| {
                            // Read only now: `first` says every worker
                            // has published its final counts.
                            let (pend, done) = *sums.get_or_insert_with(|| self.summands());
                            self.reduce_segment(s, &pend, &done, partial, inv_units, &mut tmp)
                        });
                        failed = r.err();
                        laps.reduce();
                    };
                    self.run_unit(id, step, u, slot, local, Some(&mut between))?;
                    if let Some(e) = failed {
                        return Err(e);
                    }
                }
                laps.compute();
                pending += 1;
            }
            // SAFETY: no one reads these while this worker is busy.
            unsafe {
                self.pending.get_mut(id..id + 1)[0] = pending;
                self.flushed.get_mut(id..id + 1)[0] = flushed;
            }
            if stream {
                self.publish(id, tag, 0);
                self.reduce_rest(
                    id,
                    &mut next,
                    || self.workers_ready(tag),
                    |s| {
                        let (pend, done) = *sums.get_or_insert_with(|| self.summands());
                        self.reduce_segment(s, &pend, &done, partial, inv_units, &mut tmp)
                    },
                    laps,
                )?;
            } else {
                self.wait()?;
                laps.wait();
                let (pend, done) = self.summands();
                for s in self.segments.owned(id, t) {
                    self.reduce_segment(s, &pend, &done, partial, inv_units, &mut tmp)?;
                }
            }
        } else {
            // The block's units folded as if they were a whole step of this
            // shape (for the whole step: the canonical fold).
            let width = fold_width(&self.cfg, self.model.num_params());
            let mut plan = FoldPlan::new(self.cfg.shape, units.len(), width)
                .map_err(|e| self.fail(ExecError::Config(e.to_string())))?;
            let stream = self.stream.load(Ordering::Relaxed);
            let (rounds, mut round_no) = (plan.rounds(), 0);
            while let Some(round) = plan.next_round() {
                round_no += 1;
                // In the last round each owner scales its segments and takes
                // their norms right after their last add, while they are in
                // cache, and without another barrier: the same worker owns
                // the same segments in both phases.
                let finish = round_no == rounds && !partial;
                let replay = |s: usize| self.replay_segment(&round, s, finish, inv_units);
                let mut taken = 0;
                if stream {
                    local.tag = local.tag.wrapping_add(1);
                    let tag = local.tag;
                    let ready = || {
                        let bufs = (0..round.len()).filter_map(|k| round.unit_buffer(k));
                        bufs.map(|b| self.first_ready(b, tag)).max().unwrap_or(0)
                    };
                    let mut next = self.top_owned(id);
                    while let Some(k) = self.claim_in_round(id, &round, &mut taken) {
                        let u = units.start + round.units().start + k;
                        let buf = round.unit_buffer(k).expect("claimed inside the round");
                        let mut failed = None;
                        let mut between = |first: usize| {
                            self.publish(buf, tag, first);
                            if failed.is_none() {
                                laps.compute();
                                failed = self.reduce_down(id, &mut next, ready(), replay).err();
                                laps.reduce();
                            }
                        };
                        self.run_unit(id, step, u, buf, local, Some(&mut between))?;
                        if let Some(e) = failed {
                            return Err(e);
                        }
                        laps.compute();
                    }
                    self.reduce_rest(id, &mut next, ready, replay, laps)?;
                } else {
                    while let Some(k) = self.claim_in_round(id, &round, &mut taken) {
                        let u = units.start + round.units().start + k;
                        let buf = round.unit_buffer(k).expect("claimed inside the round");
                        self.run_unit(id, step, u, buf, local, None)?;
                        laps.compute();
                    }
                    self.wait()?;
                    laps.wait();
                    for s in self.segments.owned(id, t) {
                        replay(s)?;
                    }
                }
                laps.reduce();
                if !finish {
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

    /// Every worker's unit buffers and whether its accumulator holds
    /// anything: read once they are final (after the barrier, or, streaming,
    /// once all units are claimed and their workers under way).
    fn summands(&self) -> ([usize; MAX_THREADS], [bool; MAX_THREADS]) {
        let (mut pend, mut done) = ([0; MAX_THREADS], [false; MAX_THREADS]);
        for w in 0..self.cfg.threads {
            // SAFETY: written by worker w before it published what makes
            // them final; not written again in this job.
            unsafe {
                pend[w] = self.pending.get(w..w + 1)[0];
                done[w] = self.flushed.get(w..w + 1)[0];
            }
        }
        (pend, done)
    }

    /// Streaming, associative: the first segment that every worker's unit
    /// has finished (valid once all units are claimed).
    fn workers_ready(&self, tag: u32) -> usize {
        let t = self.cfg.threads;
        (0..t).map(|w| self.first_ready(w, tag)).max().unwrap_or(0)
    }

    /// Associative: sums segment `s` of every worker's accumulator and
    /// pending unit buffers into the gradient slot and finishes it, or, for
    /// a partial job, merges it into `accs[0]` for the caller.
    fn reduce_segment(
        &self,
        s: usize,
        pend: &[usize; MAX_THREADS],
        done: &[bool; MAX_THREADS],
        partial: bool,
        inv_units: f32,
        tmp: &mut [f32; SEGMENT_LEN],
    ) -> Result<(), Stop> {
        let (t, k) = (self.cfg.threads, self.per_worker);
        // Is the gradient slot (worker 0's first unit buffer) one of the
        // summands? Then the segment's sum goes through `tmp`.
        let grad_pending = pend[0] > 0;
        debug_assert!(GRAD == 0 && self.slots.len() >= k);
        let r = self.segments.range(s);
        let fail = |e: AccError| self.fail(ExecError::Accumulate(e.offset(r.start)));
        // SAFETY: segment s of every buffer belongs to worker id in
        // this phase (accs[0] is written only in partial mode).
        let mut xs: [&[f32]; MAX_PENDING] = [&[]; MAX_PENDING];
        let mut nx = 0;
        for (w, &n) in pend.iter().enumerate().take(t) {
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
            return Ok(());
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
        Ok(())
    }

    /// f32: replays the round's additions on segment `s` and, after the
    /// last round of a whole step, finishes it.
    fn replay_segment(
        &self,
        round: &FoldRound,
        s: usize,
        finish: bool,
        inv_units: f32,
    ) -> Result<(), Stop> {
        let r = self.segments.range(s);
        for cllm_core::reduce::Add { src, dst } in round.ops() {
            // SAFETY: segment s of every slot belongs to worker id in
            // the fold phase; src != dst.
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
        if finish {
            // SAFETY: segment s of the gradient slot belongs to
            // worker id.
            let g = unsafe { self.slots[GRAD].get_mut(r.clone()) };
            self.finish_segment(s, g, inv_units);
        }
        Ok(())
    }
}
