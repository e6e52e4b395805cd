//! Computing units on a worker.
//!
//! One training unit: its tokens from the [`UnitSource`](super::UnitSource),
//! forward and backward into a unit buffer, recomputed after a panic up to
//! `max_retries` times ([`Shared::run_unit`]). The evaluation job
//! ([`Shared::eval`]), and the size of each worker's activation workspace
//! ([`work_len`]).

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use cllm_core::accumulate::Accumulator;
use cllm_core::kernels::Kernels;
use cllm_core::model::{self, GptConfig, ModelError};

use super::pool::{panic_message, Stop};
use super::shared::{Local, Shared};
use super::stream::SlotSink;
use super::{ExecConfig, ExecError};

/// Bytes per worker that keeping activations for backward may add.
const KEPT_ACTS_BYTES: usize = 16 << 20;

/// Elements of each worker's activation workspace for `cfg`: the kept
/// layout ([`GptConfig::activation_len_kept`]: backward reads the LayerNorm
/// outputs, the GELU output, its derivative and the attention probabilities
/// instead of computing them again) when that adds at most 16 MiB per worker, else the
/// recomputing one. The bits are the same either way; only the time and
/// memory differ. `CLLM_RECOMPUTE=1` (a benchmark knob) always recomputes;
/// [`ExecConfig::recompute_blocks`] stores only the blocks' outputs.
pub fn work_len(model: &GptConfig, cfg: &ExecConfig) -> usize {
    let (b, t) = (cfg.micro_batch, cfg.seq_len);
    if cfg.recompute_blocks {
        return model.activation_len_recompute(b, t);
    }
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

impl<A: Accumulator, K: Kernels<f32>> Shared<A, K> {
    /// Compute unit `u` into slot buffer `slot`, retrying after a panic.
    /// With `between`, backward streams ([`stream`](super::stream)):
    /// `between` runs after each of its stages with the first segment that
    /// is final. A unit that panics after that fails the step, since others
    /// may already have added what it handed over.
    pub(super) fn run_unit(
        &self,
        id: usize,
        step: u64,
        u: usize,
        slot: usize,
        local: &mut Local,
        mut between: Option<&mut dyn FnMut(usize)>,
    ) -> Result<(), Stop> {
        let mut attempts = 0u32;
        let published = Cell::new(false);
        loop {
            let r = catch_unwind(AssertUnwindSafe(|| {
                let between = between.as_mut().map(|b| &mut **b as &mut dyn FnMut(usize));
                self.compute_unit(step, u, slot, local, between, &published)
            }));
            match r {
                Ok(Ok(loss)) => {
                    // SAFETY: unit u is computed by exactly one worker.
                    unsafe { self.unit_losses.get_mut(u..u + 1)[0] = loss };
                    return Ok(());
                }
                Ok(Err(error)) => return Err(self.fail(ExecError::Model { unit: u, error })),
                Err(p) => {
                    attempts += 1;
                    if attempts > self.cfg.max_retries || published.get() {
                        let mut message = panic_message(&*p);
                        if published.get() {
                            message += " (after streaming part of its gradient: not retried)";
                        }
                        return Err(self.fail(ExecError::WorkerPanicked {
                            worker: id,
                            unit: u,
                            attempts,
                            message,
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
        between: Option<&mut dyn FnMut(usize)>,
        published: &Cell<bool>,
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
        // SAFETY: parameters are read-only during the compute phase.
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
        )?;
        if let Some(between) = between {
            let mut sink = SlotSink {
                buf: &self.slots[slot],
                between,
                published,
            };
            model::backward_streaming(
                &self.kernels,
                &self.model,
                params,
                &mut sink,
                &mut local.work,
                &local.tokens,
                &local.targets,
                b,
                t,
            )?;
            return Ok(loss);
        }
        // SAFETY: `slot` belongs to this worker for the phase.
        let grad = unsafe { self.slots[slot].all_mut() };
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

    pub(super) fn eval(&self, _id: usize, local: &mut Local) -> Result<(), Stop> {
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
