//! Threaded execution of the sphere hierarchy.
//!
//! Logical spheres are not threads. A fixed pool of persistent worker threads
//! executes the step's work units; what the tree decides is *which* units
//! belong together and in which order partial sums are combined:
//!
//! * **associative accumulators** (fixed, exact, bigfloat): every worker owns a
//!   contiguous block of leaves (a subtree slice) and adds its units into a
//!   thread-local accumulator; a worker that runs dry steals pending units from
//!   the others (the sum does not depend on who adds what). The thread
//!   accumulators then meet through the core's fixed-segment protocol: worker
//!   `i` merges segments `i, i+T, …` of all of them.
//! * **f32**: units are computed in rounds of `T` in canonical order and the
//!   core's [`FoldPlan`] is replayed segment by segment after each round, so
//!   the bits depend on the tree shape only, never on the thread count.
//!
//! After the reduction, the gradient norm is summed from per-segment partials
//! in segment order and each worker applies the optimizer to the segments it
//! owns (ZeRO-1 style: it alone touches their optimizer state).
//!
//! Nothing inside a step allocates, locks or does I/O: workers park between
//! steps and meet at spin barriers inside one.

use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};

use cllm_core::accumulate::{AccError, Accumulator, F32Acc};
use cllm_core::kernels::Kernels;
use cllm_core::model::{self, GptConfig, ModelError};
use cllm_core::optim::{self, OptimError};
use cllm_core::reduce::{FoldPlan, FoldRound, RelaxStrategy, Segments, SpinBarrier, SEGMENT_LEN};
use cllm_core::tree::Shape;

/// Where the tokens of a work unit come from. Must be a pure function of its
/// arguments: that is what lets any worker compute any unit.
pub trait UnitSource: Send + Sync {
    /// Fill `tokens` and `targets` (each `micro_batch × seq_len`) for unit
    /// `unit` of optimizer step `step`.
    fn fill_train(&self, step: u64, unit: usize, tokens: &mut [u32], targets: &mut [u32]);
    /// Number of evaluation units available (0 = no validation data).
    fn eval_units(&self) -> usize {
        0
    }
    /// Fill evaluation unit `unit`.
    fn fill_eval(&self, _unit: usize, _tokens: &mut [u32], _targets: &mut [u32]) {}
}

/// The shape of the work, independent of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecConfig {
    /// Tree depth and branching.
    pub shape: Shape,
    /// Worker threads.
    pub threads: usize,
    /// Units per optimizer step.
    pub units: usize,
    /// Sequences per unit.
    pub micro_batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Pin worker `i` to core `i mod cores`.
    pub pin_threads: bool,
    /// How many times a unit whose computation panicked is recomputed
    /// before the step fails.
    pub max_retries: u32,
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecError {
    /// Invalid configuration (numbers included).
    Config(String),
    /// The model rejected the unit (e.g. a token out of range).
    Model { unit: usize, error: ModelError },
    /// Accumulating the gradient failed (non-finite value, overflow, inexact).
    Accumulate(AccError),
    /// A worker panicked on the same unit more often than allowed.
    WorkerPanicked {
        worker: usize,
        unit: usize,
        attempts: u32,
        message: String,
    },
    /// The optimizer rejected its inputs.
    Optimizer(OptimError),
    /// An earlier step failed; the hierarchy must be rebuilt.
    Poisoned,
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Config(s) => write!(f, "invalid execution config: {s}"),
            ExecError::Model { unit, error } => write!(f, "model error in unit {unit}: {error}"),
            ExecError::Accumulate(e) => write!(f, "gradient accumulation failed: {e}"),
            ExecError::WorkerPanicked {
                worker,
                unit,
                attempts,
                message,
            } => write!(
                f,
                "worker {worker} failed on unit {unit} {attempts} time(s), giving up: {message}"
            ),
            ExecError::Optimizer(e) => write!(f, "optimizer error: {e}"),
            ExecError::Poisoned => write!(f, "an earlier step failed; the hierarchy is unusable"),
        }
    }
}

impl std::error::Error for ExecError {}

/// What one step measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    /// Mean loss over the step's units (summed in unit order).
    pub loss: f32,
    /// Global L2 norm of the mean gradient, before clipping.
    pub grad_norm: f32,
    /// Units recomputed after a worker failure.
    pub retried_units: u32,
    /// Units executed by a worker that did not own them.
    pub stolen_units: u32,
}

/// A buffer shared by the workers. Access is coordinated by the step
/// protocol (disjoint segments, phases separated by barriers), which is what
/// makes the `Sync` impl sound.
struct Buf<T> {
    cells: Box<[UnsafeCell<T>]>,
}

unsafe impl<T: Send> Sync for Buf<T> {}

impl<T> Buf<T> {
    fn new(len: usize, mut make: impl FnMut() -> T) -> Self {
        Self {
            cells: (0..len).map(|_| UnsafeCell::new(make())).collect(),
        }
    }
    /// Takes over `v`'s allocation (no copy).
    fn from_vec(v: Vec<T>) -> Self {
        let raw = Box::into_raw(v.into_boxed_slice()) as *mut [UnsafeCell<T>];
        // SAFETY: UnsafeCell<T> is repr(transparent) over T, so the slice
        // has the same layout and the allocation is freed with it.
        Self {
            cells: unsafe { Box::from_raw(raw) },
        }
    }
    /// Gives the allocation back as a vector (no copy).
    fn into_vec(self) -> Vec<T> {
        let raw = Box::into_raw(self.cells) as *mut [T];
        // SAFETY: as in `from_vec`, the other way round.
        unsafe { Box::from_raw(raw) }.into_vec()
    }
    fn len(&self) -> usize {
        self.cells.len()
    }
    /// # Safety
    /// No one writes `r` while the returned slice lives.
    unsafe fn get(&self, r: std::ops::Range<usize>) -> &[T] {
        let cells = &self.cells[r];
        // SAFETY: UnsafeCell<T> has the layout of T; the caller excludes writers.
        unsafe { std::slice::from_raw_parts(cells.as_ptr() as *const T, cells.len()) }
    }
    /// # Safety
    /// No one else reads or writes `r` while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get_mut(&self, r: std::ops::Range<usize>) -> &mut [T] {
        let cells = &self.cells[r];
        // SAFETY: as above, and the caller guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(UnsafeCell::raw_get(cells.as_ptr()), cells.len()) }
    }
    /// # Safety
    /// As [`Buf::get`], for the whole buffer.
    unsafe fn all(&self) -> &[T] {
        unsafe { self.get(0..self.len()) }
    }
    /// # Safety
    /// As [`Buf::get_mut`], for the whole buffer.
    #[allow(clippy::mut_from_ref)]
    unsafe fn all_mut(&self) -> &mut [T] {
        unsafe { self.get_mut(0..self.len()) }
    }
}

impl Buf<f32> {
    /// A zeroed buffer whose pages the OS provides on first touch, so a
    /// buffer a run never writes (SGD's second moment, say) takes no memory.
    fn zeros(len: usize) -> Self {
        Self::from_vec(vec![0.0; len])
    }
}

/// The optimizer a step applies, with its per-step settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    AdamW(optim::AdamW),
    Sgd(optim::Sgd),
}

/// Per-step settings of the update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateSettings {
    pub optimizer: Optimizer,
    /// Learning rate of this step.
    pub lr: f32,
    /// Clip the global gradient norm to this value (0 = off).
    pub grad_clip: f32,
    /// 1-based optimizer step (AdamW bias correction).
    pub t: u64,
}

/// Test hook: make the computation of a unit panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureInjection {
    /// Data step at which to fail.
    pub step: u64,
    /// Unit to fail.
    pub unit: usize,
    /// How many times to fail it (≤ `max_retries` recovers, more aborts).
    pub times: u32,
}

/// A half-open index range that is `Copy` (unlike `Range`), so jobs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn of(r: Range<usize>) -> Self {
        Span {
            start: r.start,
            end: r.end,
        }
    }
    fn len(self) -> usize {
        self.end - self.start
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Job {
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
struct Control {
    job: Job,
    main: Option<Thread>,
    inject: Option<FailureInjection>,
}

/// Stops a worker's part of a step early.
enum Stop {
    /// Another worker failed and aborted the barrier.
    Aborted,
    /// This worker failed (the error is recorded).
    Failed,
}

/// Barrier waits yield the CPU: with more workers than cores a pure spin
/// would burn the time slice the straggler needs.
struct Yield;

impl RelaxStrategy for Yield {
    fn relax() {
        thread::yield_now();
    }
}

/// Most unit gradient buffers a worker keeps before adding them to its
/// accumulator (associative mode).
const MAX_UNIT_BUFFERS: usize = 8;
/// Most workers one hierarchy runs (stack arrays in the reduction phase).
pub const MAX_THREADS: usize = 64;
const MAX_PENDING: usize = MAX_THREADS * MAX_UNIT_BUFFERS;
/// Unit buffers per worker stay within this many bytes.
const UNIT_BUFFER_BYTES: usize = 64 << 20;

/// The slot that holds the step's gradient once the units are reduced.
///
/// f32: the [`FoldPlan`]'s root is always its buffer 0 (the one unit 0 is
/// computed into, which only ever moves up the tree), so the fold leaves the
/// sum there and nothing is copied. Associative: worker 0's first unit
/// buffer, written by the reduction only after (segment by segment) it has
/// been read. Either way the slot is free again until the next job computes
/// units, which is what makes it the gradient between jobs.
const GRAD: usize = 0;

/// How many unit gradients a worker buffers: enough for its share of the
/// step when that is cheap, so wide accumulator cells are touched once per
/// step, and at least one.
fn unit_buffers_per_worker(units: usize, threads: usize, params: usize) -> usize {
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
fn fold_width(cfg: &ExecConfig, params: usize) -> usize {
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

/// Bytes per worker that keeping activations for backward may add.
const KEPT_ACTS_BYTES: usize = 16 << 20;

/// Elements of each worker's activation workspace for `cfg`: the kept
/// layout ([`GptConfig::activation_len_kept`]: backward reads the LayerNorm
/// outputs, the GELU output, its derivative and the attention probabilities
/// instead of computing them again) when that adds at most 16 MiB per worker, else the
/// recomputing one. The bits are the same either way; only the time and
/// memory differ. `CLLM_RECOMPUTE=1` (a benchmark knob) always recomputes.
pub fn work_len(model: &GptConfig, cfg: &ExecConfig) -> usize {
    let (b, t) = (cfg.micro_batch, cfg.seq_len);
    let short = model.activation_len(b, t);
    let kept = model.activation_len_kept(b, t);
    let extra = kept
        .saturating_sub(short)
        .saturating_mul(std::mem::size_of::<f32>());
    let forced = std::env::var_os("CLLM_RECOMPUTE").is_some_and(|v| v == "1");
    if extra <= KEPT_ACTS_BYTES && !forced {
        kept
    } else {
        short
    }
}

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

struct Shared<A: Accumulator, K> {
    model: GptConfig,
    cfg: ExecConfig,
    acc: A,
    kernels: K,
    source: Arc<dyn UnitSource>,
    segments: Segments,
    /// Units of worker `i` in the current job: `owned[i]..owned[i+1]`
    /// (written by the owner while the workers are parked).
    owned: Buf<usize>,

    params: Buf<f32>,
    m: Buf<f32>,
    v: Buf<f32>,
    /// f32 mode: the FoldPlan's physical buffers; associative mode: the
    /// workers' unit gradient buffers. `slots[GRAD]` doubles as the gradient
    /// buffer (see [`GRAD`]), so there is no separate one.
    slots: Vec<Buf<f32>>,
    /// Associative mode: one accumulator per worker.
    accs: Vec<Buf<A::Cell>>,
    /// Associative mode: unit gradient buffers per worker (`slots[id·k..]`).
    per_worker: usize,
    /// Associative mode, per worker: unit buffers not yet added to its
    /// accumulator, and whether the accumulator holds anything this step.
    pending: Buf<usize>,
    flushed: Buf<bool>,
    seg_norms: Buf<f64>,
    unit_losses: Buf<f32>,
    eval_losses: Buf<f32>,

    ctl: UnsafeCell<Control>,
    generation: AtomicU64,
    done: AtomicUsize,
    barrier: SpinBarrier<Yield>,
    cursors: Vec<AtomicUsize>,
    eval_cursor: AtomicUsize,
    /// f32 mode: the next unit of the step's fold plan to hand out.
    fold_ticket: AtomicUsize,
    error: Mutex<Option<ExecError>>,
    retried: AtomicUsize,
    stolen: AtomicUsize,
    /// Benchmark knob (`CLLM_NO_STEAL=1`): workers run only their own
    /// units, to measure what stealing gains when one thread is slowed.
    no_steal: bool,
    /// Elements of each worker's activation workspace ([`work_len`]).
    work_len: usize,
    injected: AtomicUsize,
}

// SAFETY: `ctl` is written only while all workers are parked (see Control).
unsafe impl<A: Accumulator, K: Sync> Sync for Shared<A, K> {}

/// Per-worker scratch, allocated once when the worker starts.
struct Local {
    work: Vec<f32>,
    tokens: Vec<u32>,
    targets: Vec<u32>,
}

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
/// let model = GptConfig { vocab_size: 16, n_positions: 8, n_embd: 16, n_layer: 1, n_head: 2 };
/// let mut params = vec![0.0; model.num_params()];
/// cllm_core::model::init_params(&model, &mut params, 42);
/// let cfg = ExecConfig {
///     shape: Shape::new(1, 12).unwrap(), threads: 2, units: 12, micro_batch: 1,
///     seq_len: 8, pin_threads: false, max_retries: 1,
/// };
/// let mut h = Hierarchy::new(model, params, ExactAcc, Portable, Arc::new(Counting), cfg).unwrap();
/// let stats = h.compute_gradients(0).unwrap();   // train across the whole tree
/// let grads: &[f32] = h.gradients();             // read the accumulated gradients
/// println!("loss {} |g| {}", stats.loss, stats.grad_norm);
/// drop(h);                                       // joins the workers
/// ```
pub struct Hierarchy<A: Accumulator + Send + 'static, K: Kernels<f32> + Send + 'static> {
    shared: Arc<Shared<A, K>>,
    workers: Vec<JoinHandle<()>>,
    poisoned: bool,
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
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
        let owned = Buf::new(t + 1, || 0usize);

        let eval_units = source.eval_units();
        let shared = Arc::new(Shared {
            segments,
            owned,
            // The caller's vector becomes the parameter buffer (no copy).
            params: Buf::from_vec(params),
            m: Buf::zeros(p),
            v: Buf::zeros(p),
            slots: (0..slots).map(|_| Buf::zeros(p)).collect(),
            accs: (0..accs).map(|_| Buf::new(p, || acc.zero_cell())).collect(),
            seg_norms: Buf::new(segments.count(), || 0.0),
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
            model,
            cfg,
            acc,
            kernels,
            source,
        });
        let cores = if cfg.pin_threads {
            core_ids()
        } else {
            Vec::new()
        };
        let workers = (0..t)
            .map(|id| {
                let sh = Arc::clone(&shared);
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
            .collect::<Result<Vec<_>, _>>()?;
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
        3 * p * f
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

    /// AdamW first and second moments (SGD uses `m` as momentum).
    pub fn optimizer_state(&self) -> (&[f32], &[f32]) {
        // SAFETY: as for `params`.
        unsafe { (self.shared.m.all(), self.shared.v.all()) }
    }

    /// Mutable optimizer state, for loading a checkpoint.
    pub fn optimizer_state_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        // SAFETY: as for `params_mut`; m and v are distinct buffers.
        unsafe { (self.shared.m.all_mut(), self.shared.v.all_mut()) }
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
        self.run(Job::Train {
            step,
            update: Some(update),
            leaves: self.all_leaves(),
            partial: false,
        })
    }

    // ---- Hooks for executors that span processes (cllm-mpi) ----
    //
    // A step then runs as: `compute_partial` on this process's leaves →
    // read `merged_cells` (or, for f32, `gradients`) → reduce across
    // processes → write the reduced sums of the segments this process owns
    // with `merged_cells_mut` / `gradients_mut` → `finish_gradients` →
    // combine the segment norms of all processes in segment order →
    // `apply_update` → exchange the updated parameters (`params_mut`).
    // Every step uses the same arithmetic as `train_step`, so an
    // associative accumulator gives the same bits as a single process.

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

    fn all_leaves(&self) -> Span {
        Span::of(0..self.shared.cfg.shape.leaf_count() as usize)
    }

    /// Loss of every unit of the last training job (only the units it
    /// computed are meaningful).
    pub fn unit_losses(&self) -> &[f32] {
        // SAFETY: as for `params`.
        unsafe { self.shared.unit_losses.all() }
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

    fn run(&mut self, job: Job) -> Result<StepStats, ExecError> {
        self.dispatch(job)?;
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
        Ok(StepStats {
            loss: ordered_mean(losses),
            grad_norm: if partial {
                0.0
            } else {
                ordered_norm(norms) as f32
            },
            retried_units: sh.retried.load(Ordering::Relaxed) as u32,
            stolen_units: sh.stolen.load(Ordering::Relaxed) as u32,
        })
    }

    /// Run one job on every worker and wait for it.
    fn dispatch(&mut self, job: Job) -> Result<(), ExecError> {
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

impl<A: Accumulator + Send + 'static, K: Kernels<f32> + Send + 'static> Hierarchy<A, K> {
    /// Stop and join the workers (their scratch is freed with them).
    fn stop_workers(&mut self) {
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

/// Sum in index order, so the figure does not depend on who computed what.
fn ordered_mean(xs: &[f32]) -> f32 {
    if xs.is_empty() {
        return 0.0;
    }
    (xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64) as f32
}

fn ordered_norm(seg_sq: &[f64]) -> f64 {
    seg_sq.iter().sum::<f64>().sqrt()
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
            } => catch_unwind(AssertUnwindSafe(|| {
                sh.train(id, step, update, leaves, partial, &mut local)
            }))
            .unwrap_or_else(|p| {
                Err(sh.fail(ExecError::WorkerPanicked {
                    worker: id,
                    unit: usize::MAX,
                    attempts: 1,
                    message: panic_message(&*p),
                }))
            }),
            Job::Finish { segments } => catch_unwind(AssertUnwindSafe(|| sh.finish(id, segments)))
                .unwrap_or_else(|p| {
                    Err(sh.fail(ExecError::WorkerPanicked {
                        worker: id,
                        unit: usize::MAX,
                        attempts: 1,
                        message: panic_message(&*p),
                    }))
                }),
            Job::Update {
                segments,
                grad_norm,
                update,
            } => catch_unwind(AssertUnwindSafe(|| {
                let ids = (segments.start + id..segments.end).step_by(sh.cfg.threads);
                sh.update_segments(ids, grad_norm, update)
            }))
            .unwrap_or_else(|p| {
                Err(sh.fail(ExecError::WorkerPanicked {
                    worker: id,
                    unit: usize::MAX,
                    attempts: 1,
                    message: panic_message(&*p),
                }))
            }),
            Job::Eval => {
                catch_unwind(AssertUnwindSafe(|| sh.eval(id, &mut local))).unwrap_or_else(|p| {
                    Err(sh.fail(ExecError::WorkerPanicked {
                        worker: id,
                        unit: usize::MAX,
                        attempts: 1,
                        message: panic_message(&*p),
                    }))
                })
            }
        };
        let _ = outcome;
        if sh.done.fetch_add(1, Ordering::AcqRel) + 1 == sh.cfg.threads {
            if let Some(m) = main {
                m.unpark();
            }
        }
    }
}

impl<A: Accumulator, K: Kernels<f32>> Shared<A, K> {
    fn leaf_span_units(&self, leaves: Span) -> Span {
        Span::of(leaf_block_units(
            self.cfg.shape,
            self.cfg.units,
            leaves.start as u32..leaves.end as u32,
        ))
    }

    /// Record the first error and release everyone waiting at the barrier.
    fn fail(&self, e: ExecError) -> Stop {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        drop(slot);
        self.barrier.abort();
        Stop::Failed
    }

    fn wait(&self) -> Result<(), Stop> {
        self.barrier.wait().map_err(|_| Stop::Aborted)
    }

    /// Compute unit `u` into slot buffer `slot`, retrying after a panic.
    fn run_unit(
        &self,
        id: usize,
        step: u64,
        u: usize,
        slot: usize,
        local: &mut Local,
    ) -> Result<(), Stop> {
        let mut attempts = 0u32;
        loop {
            let r = catch_unwind(AssertUnwindSafe(|| self.compute_unit(step, u, slot, local)));
            match r {
                Ok(Ok(loss)) => {
                    // SAFETY: unit u is computed by exactly one worker.
                    unsafe { self.unit_losses.get_mut(u..u + 1)[0] = loss };
                    return Ok(());
                }
                Ok(Err(error)) => return Err(self.fail(ExecError::Model { unit: u, error })),
                Err(p) => {
                    attempts += 1;
                    if attempts > self.cfg.max_retries {
                        return Err(self.fail(ExecError::WorkerPanicked {
                            worker: id,
                            unit: u,
                            attempts,
                            message: panic_message(&*p),
                        }));
                    }
                    self.retried.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn compute_unit(
        &self,
        step: u64,
        u: usize,
        slot: usize,
        local: &mut Local,
    ) -> Result<f32, ModelError> {
        // SAFETY: read-only field of ctl, stable during the step.
        if let Some(f) = unsafe { (*self.ctl.get()).inject } {
            if f.step == step
                && f.unit == u
                && self.injected.fetch_add(1, Ordering::Relaxed) < f.times as usize
            {
                panic!("injected failure in unit {u} at step {step}");
            }
        }
        let (b, t) = (self.cfg.micro_batch, self.cfg.seq_len);
        self.source
            .fill_train(step, u, &mut local.tokens, &mut local.targets);
        // SAFETY: parameters are read-only during the compute phase; `slot`
        // belongs to this worker for the phase.
        let params = unsafe { self.params.all() };
        let grad = unsafe { self.slots[slot].all_mut() };
        let loss = model::forward(
            &self.kernels,
            &self.model,
            params,
            &mut local.work,
            &local.tokens,
            Some(&local.targets),
            b,
            t,
        )?;
        // Writes the whole gradient: no need to zero the buffer first.
        model::backward_into(
            &self.kernels,
            &self.model,
            params,
            grad,
            &mut local.work,
            &local.tokens,
            &local.targets,
            b,
            t,
        )?;
        Ok(loss)
    }

    /// The next unit (index within `round`) for worker `id` in an f32 fold
    /// round. In a round with more units than workers they are handed out
    /// in order from a shared ticket, so a worker that is ahead takes what a
    /// slow one has not started. Otherwise (and with `CLLM_NO_STEAL=1`)
    /// worker `id` runs units `id, id + threads, …`: with one unit each,
    /// taking a late worker's unit only makes the taker run two in a row
    /// (measured slower with a competing process on one core).
    /// `taken` counts this worker's claims in the round (start it at 0).
    fn claim_in_round(&self, id: usize, round: &FoldRound, taken: &mut usize) -> Option<usize> {
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

    /// Next unit for worker `id`: its own first, then other workers'.
    fn claim(&self, id: usize) -> Option<usize> {
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
            let u = self.cursors[v].fetch_add(1, Ordering::Relaxed);
            if u < end {
                if k != 0 {
                    self.stolen.fetch_add(1, Ordering::Relaxed);
                }
                return Some(u);
            }
        }
        None
    }

    fn train(
        &self,
        id: usize,
        step: u64,
        update: Option<UpdateSettings>,
        leaves: Span,
        partial: bool,
        local: &mut Local,
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
                }
                self.run_unit(id, step, u, mine.start + pending, local)?;
                pending += 1;
            }
            unsafe {
                self.pending.get_mut(id..id + 1)[0] = pending;
                self.flushed.get_mut(id..id + 1)[0] = flushed;
            }
            self.wait()?;
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
                }
                self.wait()?;
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
                if !finish_here {
                    self.wait()?;
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
        self.wait()?;
        if partial {
            return Ok(());
        }
        let Some(up) = update else { return Ok(()) };
        // Every worker sums the same partials in the same order.
        let norm = ordered_norm(unsafe { self.seg_norms.all() });
        self.update_segments(self.segments.owned(id, t), norm, up)
    }

    /// Round (associative accumulators) and scale the reduced sums of the
    /// segments of `segments` this worker owns, recording their norms.
    fn finish(&self, id: usize, segments: Span) -> Result<(), Stop> {
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

    /// Apply the optimizer to segments `ids` (owned by this worker), with
    /// the clipping factor of global norm `norm`.
    fn update_segments(
        &self,
        ids: impl Iterator<Item = usize>,
        norm: f64,
        up: UpdateSettings,
    ) -> Result<(), Stop> {
        let scale = optim::clip_scale(norm, up.grad_clip);
        for s in ids {
            let r = self.segments.range(s);
            // SAFETY: worker id alone updates segment s (params, m, v).
            let (p, g, m, v) = unsafe {
                (
                    self.params.get_mut(r.clone()),
                    self.slots[GRAD].get(r.clone()),
                    self.m.get_mut(r.clone()),
                    self.v.get_mut(r.clone()),
                )
            };
            let m = if matches!(up.optimizer, Optimizer::Sgd(o) if o.momentum == 0.0) {
                &mut m[..0]
            } else {
                m
            };
            match up.optimizer {
                Optimizer::AdamW(o) => o.update_segment_with(
                    &self.kernels,
                    &self.model,
                    r.clone(),
                    p,
                    g,
                    m,
                    v,
                    up.t,
                    up.lr,
                    scale,
                ),
                Optimizer::Sgd(o) => {
                    o.update_segment(&self.model, r.clone(), p, g, m, up.lr, scale)
                }
            }
            .map_err(|e| self.fail(ExecError::Optimizer(e)))?;
        }
        self.wait()
    }

    /// Scale the summed gradient to the mean over units and record the
    /// segment's squared norm.
    fn finish_segment(&self, s: usize, g: &mut [f32], inv_units: f32) {
        for x in g.iter_mut() {
            *x *= inv_units;
        }
        // SAFETY: seg_norms[s] belongs to the owner of segment s.
        unsafe { self.seg_norms.get_mut(s..s + 1)[0] = optim::sum_squares(g) };
    }

    fn eval(&self, _id: usize, local: &mut Local) -> Result<(), Stop> {
        let (b, t) = (self.cfg.micro_batch, self.cfg.seq_len);
        let n = self.eval_losses.len();
        loop {
            let u = self.eval_cursor.fetch_add(1, Ordering::Relaxed);
            if u >= n {
                return Ok(());
            }
            self.source
                .fill_eval(u, &mut local.tokens, &mut local.targets);
            // SAFETY: parameters are read-only during evaluation.
            let params = unsafe { self.params.all() };
            let loss = model::forward(
                &self.kernels,
                &self.model,
                params,
                &mut local.work,
                &local.tokens,
                Some(&local.targets),
                b,
                t,
            )
            .map_err(|error| self.fail(ExecError::Model { unit: u, error }))?;
            // SAFETY: unit u is evaluated by exactly one worker.
            unsafe { self.eval_losses.get_mut(u..u + 1)[0] = loss };
        }
    }
}
