//! The worker pool: persistent threads that park between jobs.
//!
//! The owner of a [`Hierarchy`] writes a [`Job`] into the [`Control`] block,
//! bumps the generation and unparks the workers ([`Hierarchy::dispatch`]).
//! Each worker runs its part of the job in `worker_main`, where a panic is
//! caught and recorded as the job's error, and the last one to finish
//! unparks the owner. Inside a job the workers meet at a spin barrier that a
//! failing worker aborts ([`Shared::fail`]), so no one waits for it.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};

use cllm_core::accumulate::Accumulator;
use cllm_core::kernels::Kernels;
use cllm_core::reduce::RelaxStrategy;

use super::shared::{Local, Shared, Span};
use super::{ExecError, FailureInjection, Hierarchy, UpdateSettings};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Job {
    Idle,
    Train {
        step: u64,
        update: Option<UpdateSettings>,
        /// The block of leaves whose units this job computes (all leaves
        /// outside [`Hierarchy::compute_partial`]).
        leaves: Span,
        /// Stop once the units' sum is in the merged accumulator (or, for
        /// f32, in the gradient buffer): no rounding, scaling, norm or update.
        partial: bool,
    },
    /// Round / scale the reduced gradient of these segments and record their
    /// squared norms ([`Hierarchy::finish_gradients`]).
    Finish {
        segments: Span,
    },
    /// Apply the optimizer to these segments ([`Hierarchy::apply_update`]).
    Update {
        segments: Span,
        grad_norm: f64,
        update: UpdateSettings,
    },
    Eval,
    Exit,
}

/// Written by the owner of the [`Hierarchy`] only while every worker is
/// parked; published to them by the release/acquire on `generation`.
pub(super) struct Control {
    pub(super) job: Job,
    pub(super) main: Option<Thread>,
    pub(super) inject: Option<FailureInjection>,
}

/// Stops a worker's part of a step early.
pub(super) enum Stop {
    /// Another worker failed and aborted the barrier.
    Aborted,
    /// This worker failed (the error is recorded).
    Failed,
}

/// Barrier waits yield the CPU: with more workers than cores a pure spin
/// would burn the time slice the straggler needs.
pub(super) struct Yield;

impl RelaxStrategy for Yield {
    fn relax() {
        thread::yield_now();
    }
}

/// Start `threads` workers on `shared`, worker `i` pinned to core
/// `i mod cores` when `pin` is set.
pub(super) fn spawn_workers<A: Accumulator + Send + 'static, K: Kernels<f32> + Send + 'static>(
    shared: &Arc<Shared<A, K>>,
    threads: usize,
    pin: bool,
) -> Result<Vec<JoinHandle<()>>, ExecError>
where
    A::Cell: 'static,
{
    let cores = if pin { core_ids() } else { Vec::new() };
    (0..threads)
        .map(|id| {
            let sh = Arc::clone(shared);
            let core = cores.get(id % cores.len().max(1)).copied();
            thread::Builder::new()
                .name(format!("sphere-worker-{id}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    worker_main(sh, id)
                })
                .map_err(|e| ExecError::Config(format!("cannot spawn worker {id}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()
}

pub(super) fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

fn core_ids() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

fn worker_main<A: Accumulator, K: Kernels<f32>>(sh: Arc<Shared<A, K>>, id: usize) {
    let n = sh.cfg.micro_batch * sh.cfg.seq_len;
    let mut local = Local {
        work: vec![0.0; sh.work_len],
        tokens: vec![0; n],
        targets: vec![0; n],
        tag: 0,
    };
    let mut seen = 0u64;
    loop {
        let generation = loop {
            let g = sh.generation.load(Ordering::Acquire);
            if g != seen {
                break g;
            }
            thread::park();
        };
        seen = generation;
        // SAFETY: the owner wrote ctl before the release bump we acquired and
        // does not touch it again until every worker reports done.
        let (job, main) = unsafe {
            let ctl = &*sh.ctl.get();
            (ctl.job, ctl.main.clone())
        };
        let outcome = match job {
            Job::Exit => return,
            Job::Idle => Ok(()),
            Job::Train {
                step,
                update,
                leaves,
                partial,
            } => sh.catch_panic(id, || {
                sh.train(id, step, update, leaves, partial, &mut local)
            }),
            Job::Finish { segments } => sh.catch_panic(id, || sh.finish(id, segments)),
            Job::Update {
                segments,
                grad_norm,
                update,
            } => sh.catch_panic(id, || {
                let ids = (segments.start + id..segments.end).step_by(sh.cfg.threads);
                sh.update_segments(ids, grad_norm, update)?;
                sh.wait()
            }),
            Job::Eval => sh.catch_panic(id, || sh.eval(id, &mut local)),
        };
        let _ = outcome;
        if sh.done.fetch_add(1, Ordering::AcqRel) + 1 == sh.cfg.threads {
            if let Some(m) = main {
                m.unpark();
            }
        }
    }
}

impl<A: Accumulator + Send + 'static, K: Kernels<f32> + Send + 'static> Hierarchy<A, K>
where
    A::Cell: 'static,
{
    /// Run one job on every worker and wait for it.
    pub(super) fn dispatch(&mut self, job: Job) -> Result<(), ExecError> {
        self.start(job)?;
        self.join_job()
    }

    /// Whether every worker has finished the job [`start`](Self::start)ed.
    pub(super) fn job_done(&self) -> bool {
        self.shared.done.load(Ordering::Acquire) >= self.shared.cfg.threads
    }

    /// Start a job on every worker without waiting for it; the caller then
    /// calls [`join_job`](Self::join_job) (and may work in between: the
    /// workers unpark it when they are done).
    pub(super) fn start(&mut self, job: Job) -> Result<(), ExecError> {
        if self.poisoned {
            return Err(ExecError::Poisoned);
        }
        let sh = &*self.shared;
        // Reset per-step state while the workers are parked.
        if let Job::Train { leaves, .. } = job {
            // Worker i owns the units of the i-th contiguous sub-block of
            // the leaves (for the whole step: its subtree slice).
            // SAFETY: workers are parked.
            let owned = unsafe { sh.owned.all_mut() };
            let t = owned.len() - 1;
            for (i, o) in owned.iter_mut().enumerate() {
                let leaf = leaves.start + (i as u128 * leaves.len() as u128 / t as u128) as usize;
                *o = sh.leaf_span_units(Span::of(leaves.start..leaf)).end;
            }
        }
        // SAFETY: workers are parked.
        let owned = unsafe { sh.owned.all() };
        for (i, c) in sh.cursors.iter().enumerate() {
            c.store(owned[i], Ordering::Relaxed);
        }
        sh.eval_cursor.store(0, Ordering::Relaxed);
        sh.fold_ticket.store(0, Ordering::Relaxed);
        sh.done.store(0, Ordering::Relaxed);
        sh.retried.store(0, Ordering::Relaxed);
        sh.stolen.store(0, Ordering::Relaxed);
        // SAFETY: workers are parked; the generation bump publishes this.
        unsafe {
            let ctl = &mut *sh.ctl.get();
            ctl.job = job;
            ctl.main = Some(thread::current());
        }
        sh.generation.fetch_add(1, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        Ok(())
    }

    /// Wait for the job [`start`](Self::start)ed and report its error.
    pub(super) fn join_job(&mut self) -> Result<(), ExecError> {
        let sh = &*self.shared;
        while sh.done.load(Ordering::Acquire) < sh.cfg.threads {
            thread::park();
        }
        if let Some(e) = sh.error.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.poisoned = true;
            return Err(e);
        }
        Ok(())
    }
}

impl<A: Accumulator + Send + 'static, K: Kernels<f32> + Send + 'static> Hierarchy<A, K> {
    /// Stop and join the workers (their scratch is freed with them).
    pub(super) fn stop_workers(&mut self) {
        if self.workers.is_empty() {
            return;
        }
        let sh = &*self.shared;
        // SAFETY: workers are parked (or already gone after a failure, which
        // still leaves them parked: a failed step completes for everyone).
        unsafe { (*sh.ctl.get()).job = Job::Exit };
        sh.generation.fetch_add(1, Ordering::Release);
        for w in self.workers.drain(..) {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

impl<A: Accumulator, K: Kernels<f32>> Shared<A, K> {
    /// Run worker `id`'s part of a job, turning a panic that escapes it
    /// (one outside a unit's retries) into the job's error.
    fn catch_panic(&self, id: usize, part: impl FnOnce() -> Result<(), Stop>) -> Result<(), Stop> {
        catch_unwind(AssertUnwindSafe(part)).unwrap_or_else(|p| {
            Err(self.fail(ExecError::WorkerPanicked {
                worker: id,
                unit: usize::MAX,
                attempts: 1,
                message: panic_message(&*p),
            }))
        })
    }

    /// Record the first error and release everyone waiting at the barrier.
    pub(super) fn fail(&self, e: ExecError) -> Stop {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        drop(slot);
        self.barrier.abort();
        Stop::Failed
    }

    pub(super) fn wait(&self) -> Result<(), Stop> {
        self.barrier.wait().map_err(|_| Stop::Aborted)
    }
}
