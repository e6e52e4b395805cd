//! Streaming reduction: segments are reduced while backward still runs.
//!
//! Backward hands out the gradient stage by stage (head, blocks from the
//! last down, embeddings; [`GradSink`]), and the part already handed out
//! is always a suffix of the buffer. A unit's worker publishes, after each
//! stage, the first segment of that suffix (`ready`, tagged with the round
//! so a value left from an earlier round reads as "nothing yet"). Between
//! its own stages, and after its last unit, a worker reduces the segments
//! it owns that every contributing unit has finished, from the top down.
//! Each segment goes through exactly the additions, in exactly the order,
//! of the phase-after-backward path, so the bits do not change; what
//! changes is that a segment is summed while its gradients are still in
//! cache and that nobody waits for the slowest unit before starting.
//!
//! On with `CLLM_STREAM=1` or [`Hierarchy::set_streaming`](super::Hierarchy::set_streaming).
//! Off by default: measured side by side (`bench_train --stream on,off`)
//! it takes the same time on one machine, since the same cores do the same
//! memory-bound additions either way.

use std::cell::Cell;
use std::sync::atomic::Ordering;

use cllm_core::accumulate::Accumulator;
use cllm_core::kernels::Kernels;
use cllm_core::model::GradSink;
use cllm_core::reduce::SEGMENT_LEN;

use super::phases::Laps;
use super::pool::Stop;
use super::shared::{Buf, Shared};

/// "No segment is final yet" in a `ready` entry.
pub(super) const NONE: usize = u32::MAX as usize;

/// A unit buffer as backward's sink: hands out the stage's range and, once
/// a stage is final, calls `between` with the first final segment.
pub(super) struct SlotSink<'a, F: FnMut(usize)> {
    pub(super) buf: &'a Buf<f32>,
    pub(super) between: F,
    /// Set once part of the gradient has been handed over: a unit that
    /// fails after that cannot simply be recomputed.
    pub(super) published: &'a Cell<bool>,
}

impl<F: FnMut(usize)> GradSink<f32> for SlotSink<'_, F> {
    fn stage(&mut self, range: std::ops::Range<usize>) -> &mut [f32] {
        // SAFETY: the buffer belongs to this unit's worker except for the
        // segments it has published, and backward never asks for those.
        unsafe { self.buf.get_mut(range) }
    }
    fn finished(&mut self, from: usize) {
        self.published.set(true);
        (self.between)(from.div_ceil(SEGMENT_LEN));
    }
}

impl<A: Accumulator, K: Kernels<f32>> Shared<A, K> {
    /// Entry `i` of `ready`: segments `first..` are final, in round `tag`.
    pub(super) fn publish(&self, i: usize, tag: u32, first: usize) {
        let v = (u64::from(tag) << 32) | first.min(NONE) as u64;
        self.ready[i].store(v, Ordering::Release);
    }

    /// The first final segment of entry `i` in round `tag` ([`NONE`] when
    /// it holds another round's value).
    pub(super) fn first_ready(&self, i: usize, tag: u32) -> usize {
        let v = self.ready[i].load(Ordering::Acquire);
        if (v >> 32) as u32 == tag {
            (v & u64::from(u32::MAX)) as usize
        } else {
            NONE
        }
    }

    /// The highest segment worker `id` owns, where its top-down walk starts.
    pub(super) fn top_owned(&self, id: usize) -> Option<usize> {
        let (n, t) = (self.segments.count(), self.cfg.threads);
        (id < n).then(|| id + (n - 1 - id) / t * t)
    }

    /// Walks worker `id`'s owned segments down from `next` while they are
    /// at or above `first` (all contributions final), calling `f` on each
    /// and publishing how far it got (`reduced`).
    pub(super) fn reduce_down(
        &self,
        id: usize,
        next: &mut Option<usize>,
        first: usize,
        mut f: impl FnMut(usize) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        while let Some(s) = *next {
            if s < first {
                break;
            }
            f(s)?;
            *next = s.checked_sub(self.cfg.threads);
            let done = if next.is_some() { s } else { 0 };
            self.reduced[id].store(done, Ordering::Release);
        }
        Ok(())
    }

    /// Spins until `ready_from()` lets worker `id` reduce all its remaining
    /// segments; gives up when another worker has failed. Spinning counts
    /// as waiting, reducing as reduction.
    pub(super) fn reduce_rest(
        &self,
        id: usize,
        next: &mut Option<usize>,
        mut ready_from: impl FnMut() -> usize,
        mut f: impl FnMut(usize) -> Result<(), Stop>,
        laps: &mut Laps,
    ) -> Result<(), Stop> {
        let mut spins = 0u32;
        while next.is_some() {
            let first = ready_from();
            if next.is_some_and(|s| s >= first) {
                laps.wait();
                self.reduce_down(id, next, first, &mut f)?;
                laps.reduce();
                spins = 0;
                continue;
            }
            if self.barrier.is_aborted() {
                return Err(Stop::Aborted);
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        self.reduced[id].store(0, Ordering::Release);
        Ok(())
    }
}
