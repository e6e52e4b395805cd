//! [`Hierarchy`], the handle its owner drives: construction and validation,
//! access to the buffers, the jobs of a step, and the hooks with which
//! executors that span processes (cllm-mpi) split a step.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use cllm_core::accumulate::Accumulator;
use cllm_core::kernels::Kernels;
use cllm_core::model::GptConfig;
use cllm_core::reduce::{Segments, SpinBarrier};

use super::compute::work_len;
use super::pool::{spawn_workers, Control, Job};
use super::reduce::{ordered_mean, ordered_norm, reduction_buffers, GRAD};
use super::schedule::unit_buffers_per_worker;
use super::shared::{Buf, Shared, Span};
use super::{
    ExecConfig, ExecError, FailureInjection, PhaseTimes, StepStats, UnitSource, UpdateSettings,
    MAX_THREADS,
};

/// A running hierarchy: persistent workers plus the model's buffers.
///
/// ```no_run
/// use std::sync::Arc;
/// use cllm_core::{accumulate::ExactAcc, kernels::Portable, model::GptConfig, tree::Shape};
/// use cllm_std::exec::{ExecConfig, Hierarchy, UnitSource};
///
/// struct Counting;
/// impl UnitSource for Counting {
///     fn fill_train(&self, step: u64, unit: usize, tokens: &mut [u32], targets: &mut [u32]) {
///         for (i, (t, y)) in tokens.iter_mut().zip(targets.iter_mut()).enumerate() {
///             *t = ((step as usize + unit + i) % 16) as u32;
///             *y = (*t + 1) % 16;
///         }
///     }
/// }
///
/// let model = GptConfig { vocab_size: 16, n_positions: 8, n_embd: 16, n_layer: 1, n_head: 2, untied_head: false };
/// let mut params = vec![0.0; model.num_params()];
/// cllm_core::model::init_params(&model, &mut params, 42);
/// let cfg = ExecConfig {
///     shape: Shape::new(1, 12).unwrap(), threads: 2, units: 12, micro_batch: 1,
///     seq_len: 8, pin_threads: false, max_retries: 1, recompute_blocks: false,
/// };
/// let mut h = Hierarchy::new(model, params, ExactAcc, Portable, Arc::new(Counting), cfg).unwrap();
/// let stats = h.compute_gradients(0).unwrap();   // train across the whole tree
/// let grads: &[f32] = h.gradients();             // read the accumulated gradients
/// println!("loss {} |g| {}", stats.loss, stats.grad_norm);
/// drop(h);                                       // joins the workers
/// ```
pub struct Hierarchy<A: Accumulator + Send + 'static, K: Kernels<f32> + Send + 'static> {
    pub(super) shared: Arc<Shared<A, K>>,
    pub(super) workers: Vec<JoinHandle<()>>,
    pub(super) poisoned: bool,
}

impl<A: Accumulator + Send + 'static, K: Kernels<f32> + Send + 'static> Hierarchy<A, K>
where
    A::Cell: 'static,
{
    /// Start the workers. `params` is the initial parameter vector.
    pub fn new(
        model: GptConfig,
        params: Vec<f32>,
        acc: A,
        kernels: K,
        source: Arc<dyn UnitSource>,
        cfg: ExecConfig,
    ) -> Result<Self, ExecError> {
        let all = 0..model.num_params();
        Self::with_optimizer_shard(model, params, acc, kernels, source, cfg, all)
    }

    /// [`new`](Self::new), holding optimizer state only for the elements
    /// `shard` of the parameter vector (one rank's block of whole segments,
    /// ZeRO stage 1): `m` and `v` take `2 × shard.len()` floats instead of
    /// `2 × P`. Such a hierarchy can only update segments inside its shard
    /// ([`apply_update`](Self::apply_update)); [`train_step`](Self::train_step)
    /// needs the whole state.
    pub fn with_optimizer_shard(
        model: GptConfig,
        params: Vec<f32>,
        acc: A,
        kernels: K,
        source: Arc<dyn UnitSource>,
        cfg: ExecConfig,
        shard: std::ops::Range<usize>,
    ) -> Result<Self, ExecError> {
        model
            .validate()
            .map_err(|e| ExecError::Config(e.to_string()))?;
        let bad = |s: String| Err(ExecError::Config(s));
        if cfg.threads == 0 || cfg.units == 0 || cfg.micro_batch == 0 || cfg.seq_len == 0 {
            return bad(format!(
                "threads ({}), units ({}), micro-batch ({}) and seq-len ({}) must be positive",
                cfg.threads, cfg.units, cfg.micro_batch, cfg.seq_len
            ));
        }
        if cfg.threads > MAX_THREADS {
            return bad(format!(
                "{} threads requested, at most {MAX_THREADS}",
                cfg.threads
            ));
        }
        if cfg.seq_len > model.n_positions {
            return bad(format!(
                "seq-len {} exceeds the model context {}",
                cfg.seq_len, model.n_positions
            ));
        }
        let p = model.num_params();
        if params.len() != p {
            return bad(format!(
                "{} parameters given, the model has {p}",
                params.len()
            ));
        }
        let t = cfg.threads;
        let per_worker = unit_buffers_per_worker(cfg.units, t, p);
        let (slots, accs) = reduction_buffers(&cfg, A::ASSOCIATIVE, p);
        let segments = Segments::new(p);
        let aligned = |e: usize| e == p || e.is_multiple_of(segments.segment_len());
        if shard.start > shard.end || shard.end > p || !aligned(shard.start) || !aligned(shard.end)
        {
            return bad(format!(
                "optimizer shard {shard:?} is not a block of whole segments of the {p} parameters"
            ));
        }
        let owned = Buf::new(t + 1, || 0usize);

        let eval_units = source.eval_units();
        let shared = Arc::new(Shared {
            segments,
            owned,
            // The caller's vector becomes the parameter buffer (no copy).
            params: Buf::from_vec(params),
            m: Buf::zeros(shard.len()),
            v: Buf::zeros(shard.len()),
            state: shard,
            slots: (0..slots).map(|_| Buf::zeros(p)).collect(),
            accs: (0..accs).map(|_| Buf::new(p, || acc.zero_cell())).collect(),
            seg_norms: Buf::new(segments.count(), || 0.0),
            phases: Buf::new(t, Default::default),
            per_worker,
            pending: Buf::new(t, || 0usize),
            flushed: Buf::new(t, || false),
            unit_losses: Buf::new(cfg.units, || 0.0),
            eval_losses: Buf::new(eval_units, || 0.0),
            ctl: UnsafeCell::new(Control {
                job: Job::Idle,
                main: None,
                inject: None,
            }),
            generation: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            barrier: SpinBarrier::with_relax(t),
            cursors: (0..t).map(|_| AtomicUsize::new(0)).collect(),
            eval_cursor: AtomicUsize::new(0),
            fold_ticket: AtomicUsize::new(0),
            error: Mutex::new(None),
            retried: AtomicUsize::new(0),
            stolen: AtomicUsize::new(0),
            no_steal: std::env::var_os("CLLM_NO_STEAL").is_some_and(|v| v == "1"),
            work_len: work_len(&model, &cfg),
            injected: AtomicUsize::new(0),
            stream: AtomicBool::new(std::env::var_os("CLLM_STREAM").is_some_and(|v| v == "1")),
            ready: (0..slots.max(t))
                .map(|_| AtomicU64::new(u64::MAX))
                .collect(),
            reduced: (0..t).map(|_| AtomicUsize::new(0)).collect(),
            model,
            cfg,
            acc,
            kernels,
            source,
        });
        let workers = spawn_workers(&shared, t, cfg.pin_threads)?;
        Ok(Self {
            shared,
            workers,
            poisoned: false,
        })
    }

    /// Bytes held by the hierarchy's buffers (parameters, optimizer state,
    /// reduction buffers — the gradient is one of them — and per-worker
    /// scratch).
    pub fn memory_bytes(&self) -> usize {
        let sh = &self.shared;
        let p = sh.params.len();
        let f = std::mem::size_of::<f32>();
        let cell = std::mem::size_of::<A::Cell>();
        let work = sh.work_len;
        (p + sh.m.len() + sh.v.len()) * f
            + sh.slots.len() * p * f
            + sh.accs.len() * p * cell
            + sh.cfg.threads * (work * f + 2 * sh.cfg.micro_batch * sh.cfg.seq_len * 4)
    }

    /// Number of gradient buffers (f32 slots, the one holding the gradient
    /// included, plus accumulators; see [`reduction_buffers`]) — the figure
    /// that must stay `O((threads + depth))`, never `O(spheres)`.
    pub fn gradient_buffers(&self) -> usize {
        self.shared.slots.len() + self.shared.accs.len()
    }

    /// The configuration the hierarchy runs.
    pub fn config(&self) -> &ExecConfig {
        &self.shared.cfg
    }

    /// The parameters.
    pub fn params(&self) -> &[f32] {
        // SAFETY: workers are parked between calls (&self excludes a step).
        unsafe { self.shared.params.all() }
    }

    /// The parameters, for loading a checkpoint.
    pub fn params_mut(&mut self) -> &mut [f32] {
        // SAFETY: workers are parked; &mut self excludes a step.
        unsafe { self.shared.params.all_mut() }
    }

    /// AdamW first and second moments (SGD uses `m` as momentum) of the
    /// elements [`optimizer_shard`](Self::optimizer_shard) (all of them
    /// unless built with [`with_optimizer_shard`](Self::with_optimizer_shard)).
    pub fn optimizer_state(&self) -> (&[f32], &[f32]) {
        // SAFETY: as for `params`.
        unsafe { (self.shared.m.all(), self.shared.v.all()) }
    }

    /// Mutable optimizer state, for loading a checkpoint.
    pub fn optimizer_state_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        // SAFETY: as for `params_mut`; m and v are distinct buffers.
        unsafe { (self.shared.m.all_mut(), self.shared.v.all_mut()) }
    }

    /// The elements of the parameter vector whose optimizer state this
    /// hierarchy holds.
    pub fn optimizer_shard(&self) -> std::ops::Range<usize> {
        self.shared.state.clone()
    }

    fn whole_state(&self) -> Result<(), ExecError> {
        let p = self.shared.segments.len();
        match self.shared.state == (0..p) {
            true => Ok(()),
            false => Err(ExecError::Config(format!(
                "a whole-model update needs the whole optimizer state; this hierarchy holds \
                 elements {:?} of {p}",
                self.shared.state
            ))),
        }
    }

    /// The mean gradient of the last step (after reduction, before clipping),
    /// or, after [`compute_partial`](Self::compute_partial) with f32, the
    /// block's sum. It lives in a reduction buffer, so the next training job
    /// overwrites it (and `compute_partial` with an associative accumulator,
    /// whose sum is in [`merged_cells`](Self::merged_cells), leaves it
    /// meaningless until [`finish_gradients`](Self::finish_gradients)).
    pub fn gradients(&self) -> &[f32] {
        // SAFETY: as for `params`.
        unsafe { self.shared.slots[GRAD].all() }
    }

    /// Test hook: make a unit's computation panic (see [`FailureInjection`]).
    #[doc(hidden)]
    pub fn inject_failure(&mut self, f: Option<FailureInjection>) {
        self.shared.injected.store(0, Ordering::Relaxed);
        // SAFETY: workers are parked.
        unsafe { (*self.shared.ctl.get()).inject = f };
    }

    /// Compute the step's mean gradient across the hierarchy (no update).
    pub fn compute_gradients(&mut self, step: u64) -> Result<StepStats, ExecError> {
        self.run(Job::Train {
            step,
            update: None,
            leaves: self.all_leaves(),
            partial: false,
        })
    }

    /// Compute the step's gradient and apply the optimizer.
    pub fn train_step(
        &mut self,
        step: u64,
        update: UpdateSettings,
    ) -> Result<StepStats, ExecError> {
        self.whole_state()?;
        self.run(Job::Train {
            step,
            update: Some(update),
            leaves: self.all_leaves(),
            partial: false,
        })
    }

    fn all_leaves(&self) -> Span {
        Span::of(0..self.shared.cfg.shape.leaf_count() as usize)
    }

    /// Reduce gradient segments while backward still produces the rest, or
    /// (the default; `CLLM_STREAM=1` starts a hierarchy with streaming on)
    /// in a phase after all units. The bits are the same either way; on one
    /// machine the time is too (the same cores do the same memory-bound
    /// additions), and a unit that panics after streaming part of its
    /// gradient fails the step instead of being recomputed.
    pub fn set_streaming(&mut self, on: bool) {
        self.shared.stream.store(on, Ordering::Relaxed);
    }

    /// Per worker, where its time in the last training job went (compute,
    /// reduction, update, waiting at barriers).
    pub fn phase_times(&self) -> &[PhaseTimes] {
        // SAFETY: written by the workers inside a job; they are parked now.
        unsafe { self.shared.phases.all() }
    }

    /// Loss of every unit of the last training job (only the units it
    /// computed are meaningful).
    pub fn unit_losses(&self) -> &[f32] {
        // SAFETY: as for `params`.
        unsafe { self.shared.unit_losses.all() }
    }

    /// Mean loss over the source's evaluation units (None if it has none).
    pub fn evaluate(&mut self) -> Result<Option<f32>, ExecError> {
        if self.shared.eval_losses.len() == 0 {
            return Ok(None);
        }
        self.run(Job::Eval)?;
        // SAFETY: workers are parked again.
        let losses = unsafe { self.shared.eval_losses.all() };
        Ok(Some(ordered_mean(losses)))
    }

    pub(super) fn run(&mut self, job: Job) -> Result<StepStats, ExecError> {
        self.dispatch(job)?;
        Ok(self.job_stats(job))
    }

    /// What the training job `job`, just finished, measured.
    pub(super) fn job_stats(&self, job: Job) -> StepStats {
        let sh = &*self.shared;
        let units = match job {
            Job::Train { leaves, .. } => sh.leaf_span_units(leaves),
            _ => Span::of(0..sh.cfg.units),
        };
        let partial = matches!(job, Job::Train { partial: true, .. });
        // SAFETY: workers are parked again.
        let (losses, norms) = unsafe {
            (
                sh.unit_losses.get(units.start..units.end),
                sh.seg_norms.all(),
            )
        };
        StepStats {
            loss: ordered_mean(losses),
            grad_norm: if partial {
                0.0
            } else {
                ordered_norm(norms) as f32
            },
            retried_units: sh.retried.load(Ordering::Relaxed) as u32,
            stolen_units: sh.stolen.load(Ordering::Relaxed) as u32,
        }
    }
}

impl<A: Accumulator + Send + 'static, K: Kernels<f32> + Send + 'static> Hierarchy<A, K> {
    /// Stop the workers and hand back the parameters without copying them
    /// (what `params().to_vec()` then `drop` would give, without holding
    /// two copies at once).
    pub fn into_params(mut self) -> Vec<f32> {
        self.stop_workers();
        match Arc::get_mut(&mut self.shared) {
            // Every worker has exited and dropped its handle.
            Some(sh) => std::mem::replace(&mut sh.params, Buf::from_vec(Vec::new())).into_vec(),
            None => self.params().to_vec(),
        }
    }
}

impl<A: Accumulator + Send + 'static, K: Kernels<f32> + Send + 'static> Drop for Hierarchy<A, K> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}
