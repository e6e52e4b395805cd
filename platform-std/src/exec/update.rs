//! The optimizer update: the optimizer with its per-step settings, and the
//! update of the segments a worker owns (ZeRO-1 style: the owner of a
//! segment alone touches its parameters and optimizer state).

use cllm_core::accumulate::Accumulator;
use cllm_core::kernels::Kernels;
use cllm_core::optim;

use super::pool::Stop;
use super::reduce::GRAD;
use super::shared::Shared;
use super::ExecError;

/// The optimizer a step applies, with its per-step settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// AdamW; its `lr` is ignored here, the step uses [`UpdateSettings::lr`].
    AdamW(optim::AdamW),
    /// SGD, with momentum unless it is 0; `lr` as for `AdamW`.
    Sgd(optim::Sgd),
}

/// Per-step settings of the update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateSettings {
    /// Which optimizer updates the parameters, with its hyper-parameters.
    pub optimizer: Optimizer,
    /// Learning rate of this step.
    pub lr: f32,
    /// Clip the global gradient norm to this value (0 = off).
    pub grad_clip: f32,
    /// 1-based optimizer step (AdamW bias correction).
    pub t: u64,
}

impl<A: Accumulator, K: Kernels<f32>> Shared<A, K> {
    /// Apply the optimizer to segments `ids` (owned by this worker), with
    /// the clipping factor of global norm `norm`. The caller meets the
    /// others at the barrier afterwards.
    pub(super) fn update_segments(
        &self,
        ids: impl Iterator<Item = usize>,
        norm: f64,
        up: UpdateSettings,
    ) -> Result<(), Stop> {
        let scale = optim::clip_scale(norm, up.grad_clip);
        for s in ids {
            let r = self.segments.range(s);
            // The held optimizer state starts at element `state.start`
            // (callers only update segments inside it).
            let held = r.start - self.state.start..r.end - self.state.start;
            // SAFETY: worker id alone updates segment s (params, m, v).
            let (p, g, m, v) = unsafe {
                (
                    self.params.get_mut(r.clone()),
                    self.slots[GRAD].get(r.clone()),
                    self.m.get_mut(held.clone()),
                    self.v.get_mut(held),
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
        Ok(())
    }
}
