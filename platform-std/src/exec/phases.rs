//! Where a worker's time in a training job went: a benchmark figure
//! (`bench_train --phases`), read with [`Hierarchy::phase_times`](super::Hierarchy::phase_times).
//! Reading the clock a few times per job is the whole cost; nothing
//! allocates.

use std::time::{Duration, Instant};

/// One worker's time in the last training job, by phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseTimes {
    /// Forward and backward of its units.
    pub compute: Duration,
    /// Adding unit gradients into its accumulator, and its part of the
    /// segment reduction (merging, f32 fold, rounding, scaling, norms).
    pub reduce: Duration,
    /// The optimizer update of the segments it owns.
    pub update: Duration,
    /// At the barriers between the phases, waiting for the others.
    pub wait: Duration,
}

impl PhaseTimes {
    /// The four phases together: the worker's wall time in the job.
    pub fn total(&self) -> Duration {
        self.compute + self.reduce + self.update + self.wait
    }
}

/// A stopwatch that charges the time since the last lap to a phase.
pub(super) struct Laps {
    last: Instant,
    pub(super) times: PhaseTimes,
}

impl Laps {
    pub(super) fn start() -> Self {
        Laps {
            last: Instant::now(),
            times: PhaseTimes::default(),
        }
    }
    fn lap(&mut self) -> Duration {
        let now = Instant::now();
        let d = now - self.last;
        self.last = now;
        d
    }
    pub(super) fn compute(&mut self) {
        let d = self.lap();
        self.times.compute += d;
    }
    pub(super) fn reduce(&mut self) {
        let d = self.lap();
        self.times.reduce += d;
    }
    pub(super) fn update(&mut self) {
        let d = self.lap();
        self.times.update += d;
    }
    pub(super) fn wait(&mut self) {
        let d = self.lap();
        self.times.wait += d;
    }
}
