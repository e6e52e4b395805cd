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
//!   core's [`FoldPlan`](cllm_core::reduce::FoldPlan) is replayed segment by
//!   segment after each round, so the bits depend on the tree shape only,
//!   never on the thread count.
//!
//! After the reduction, the gradient norm is summed from per-segment partials
//! in segment order and each worker applies the optimizer to the segments it
//! owns (ZeRO-1 style: it alone touches their optimizer state).
//!
//! Nothing inside a step allocates, locks or does I/O: workers park between
//! steps and meet at spin barriers inside one.
//!
//! This module holds the public types; the code is split by what it does:
//! `hierarchy` ([`Hierarchy`], the handle the owner drives), `partial` (its
//! hooks for executors that span processes), `pool` (the persistent workers
//! and the job protocol), `shared` (the state the workers share), `schedule`
//! (which worker computes which unit), `compute` (one unit's forward and
//! backward, evaluation), `step` (the training job phase by phase), `stream`
//! (reducing segments while backward still runs), `phases`
//! (where each worker's time in it went), `reduce`
//! (finishing the reduced gradient, ordered sums) and `update` (the
//! optimizer update).

mod compute;
mod hierarchy;
mod partial;
mod phases;
mod pool;
mod reduce;
mod schedule;
mod shared;
mod step;
mod stream;
mod update;

use std::fmt;

use cllm_core::accumulate::AccError;
use cllm_core::model::ModelError;
use cllm_core::optim::OptimError;
use cllm_core::tree::Shape;

pub use compute::work_len;
pub use hierarchy::Hierarchy;
pub use partial::OnFinal;
pub use phases::PhaseTimes;
pub use reduce::reduction_buffers;
pub use schedule::leaf_block_units;
pub use update::{Optimizer, UpdateSettings};

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
    /// Store only each block's output and compute the block again in
    /// backward ([`GptConfig::activation_len_recompute`](cllm_core::model::GptConfig::activation_len_recompute)):
    /// about `9·L·B·T·C` fewer floats per worker for about a third more
    /// block arithmetic. The bits are the same.
    pub recompute_blocks: bool,
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecError {
    /// Invalid configuration (numbers included).
    Config(String),
    /// The model rejected the unit (e.g. a token out of range).
    Model {
        /// Index of the unit: a training unit of the step, or an evaluation unit.
        unit: usize,
        /// What the model reported.
        error: ModelError,
    },
    /// Accumulating the gradient failed (non-finite value, overflow, inexact).
    Accumulate(AccError),
    /// A worker panicked on the same unit more often than allowed.
    WorkerPanicked {
        /// Index of the worker in the pool.
        worker: usize,
        /// The unit it was computing; `usize::MAX` for a panic outside any unit.
        unit: usize,
        /// How often it panicked there (`max_retries + 1`; 1 outside a unit).
        attempts: u32,
        /// The panic payload if it was a string, else `"panic"`.
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

/// Most workers one hierarchy runs (stack arrays in the reduction phase).
pub const MAX_THREADS: usize = 64;
