//! Optimizers that update one parameter *segment* at a time, the LR
//! schedule, and global-norm clipping helpers.
//!
//! In the sphere hierarchy each segment owner updates its own segments (and
//! owns their optimizer state, ZeRO-1 style), so an update takes the global
//! element range it covers plus the matching sub-slices. The update is purely
//! elementwise with per-call constants computed the same way every time, so
//! any segmentation gives bitwise the same result as one whole-vector update
//! (`tests/optim_segment.rs`). A segment may straddle tensors: the range
//! tells which tensor, and so which weight-decay rule, applies to each element.
//!
//! Clipping by global norm: each owner sums squares of its segments with
//! [`sum_squares`]; the partial sums are added in segment order (fixed), the
//! square root taken, and [`clip_scale`] gives the factor passed to every
//! update as `grad_scale`.

use core::fmt;
use core::ops::Range;

use crate::kernels::{AdamWStep, Kernels, Portable};
use crate::model::GptConfig;

/// An optimizer call that cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptimError {
    /// `range` extends beyond the parameter vector.
    RangeOutOfBounds {
        /// Start of the range.
        start: usize,
        /// End of the range.
        end: usize,
        /// Number of parameters.
        num_params: usize,
    },
    /// A slice (`what`) does not have the range's length.
    LengthMismatch {
        /// Which slice.
        what: &'static str,
        /// The range's length.
        expected: usize,
        /// The slice's length.
        actual: usize,
    },
    /// AdamW steps are 1-based (bias correction divides by `1 − β^step`).
    StepZero,
}

impl fmt::Display for OptimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OptimError::RangeOutOfBounds {
                start,
                end,
                num_params,
            } => {
                write!(
                    f,
                    "segment {start}..{end} is outside the {num_params} parameters"
                )
            }
            OptimError::LengthMismatch {
                what,
                expected,
                actual,
            } => {
                write!(
                    f,
                    "{what} slice has {actual} elements, the segment has {expected}"
                )
            }
            OptimError::StepZero => write!(f, "AdamW step must be at least 1"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for OptimError {}

/// Checks the range and that every slice has its length.
fn check_segment(
    cfg: &GptConfig,
    range: &Range<usize>,
    slices: &[(&'static str, usize)],
) -> Result<(), OptimError> {
    let num_params = cfg.num_params();
    if range.start > range.end || range.end > num_params {
        return Err(OptimError::RangeOutOfBounds {
            start: range.start,
            end: range.end,
            num_params,
        });
    }
    let expected = range.end - range.start;
    for &(what, actual) in slices {
        if actual != expected {
            return Err(OptimError::LengthMismatch {
                what,
                expected,
                actual,
            });
        }
    }
    Ok(())
}

/// Calls `f(local_range, weight_decay)` for each piece of `range` that lies
/// in one tensor, with `local_range` relative to `range.start`.
fn for_each_piece(cfg: &GptConfig, range: &Range<usize>, mut f: impl FnMut(Range<usize>, bool)) {
    for t in cfg.tensors() {
        let tr = t.range();
        if tr.end <= range.start {
            continue;
        }
        if tr.start >= range.end {
            break;
        }
        let (s, e) = (tr.start.max(range.start), tr.end.min(range.end));
        f(s - range.start..e - range.start, t.weight_decay);
    }
}

/// AdamW (Loshchilov & Hutter) with bias correction and decoupled weight
/// decay on the 2-D weight matrices only (see
/// [`TensorKind::weight_decay`](crate::model::TensorKind::weight_decay)).
///
/// Per element, with `g = grad·grad_scale`:
/// `m = β₁m + (1−β₁)g`, `v = β₂v + (1−β₂)g²`,
/// `p −= lr·(m̂/(√v̂ + eps) + wd·p)` with `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)`
/// (llm.c's formulation; `wd = 0` for non-decayed tensors).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    /// Peak learning rate, for callers to feed their [`LrSchedule`]; the
    /// update itself uses its `lr` argument (the scheduled value).
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator guard.
    pub eps: f32,
    /// Decoupled weight decay (applied to 2-D weight matrices only).
    pub weight_decay: f32,
}

impl Default for AdamW {
    /// nanoGPT's GPT-2 settings: lr 6e-4, β (0.9, 0.95), eps 1e-8, wd 0.1.
    fn default() -> Self {
        Self {
            lr: 6e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

impl AdamW {
    /// Elements of each of the two state buffers `m` and `v` (zero-initialised
    /// by the caller): one per parameter.
    pub fn state_len(cfg: &GptConfig) -> usize {
        cfg.num_params()
    }

    /// Updates the parameters in global `range` (`params`, `grads`, `m`, `v`
    /// are the sub-slices for that range). `step` is 1-based; `lr` is this
    /// step's learning rate; `grad_scale` multiplies every gradient (the
    /// clipping factor, 1 for none). Uses the portable kernel; see
    /// [`AdamW::update_segment_with`].
    #[allow(clippy::too_many_arguments)]
    pub fn update_segment(
        &self,
        cfg: &GptConfig,
        range: Range<usize>,
        params: &mut [f32],
        grads: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        step: u64,
        lr: f32,
        grad_scale: f32,
    ) -> Result<(), OptimError> {
        self.update_segment_with(
            &Portable, cfg, range, params, grads, m, v, step, lr, grad_scale,
        )
    }

    /// [`AdamW::update_segment`] with the element loop of kernels `k`
    /// ([`Kernels::adamw`], called once per run of one weight-decay rule).
    /// The result depends on `k` but not on how the parameters are cut into
    /// segments.
    #[allow(clippy::too_many_arguments)]
    pub fn update_segment_with<K: Kernels<f32>>(
        &self,
        k: &K,
        cfg: &GptConfig,
        range: Range<usize>,
        params: &mut [f32],
        grads: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        step: u64,
        lr: f32,
        grad_scale: f32,
    ) -> Result<(), OptimError> {
        check_segment(
            cfg,
            &range,
            &[
                ("params", params.len()),
                ("grads", grads.len()),
                ("m", m.len()),
                ("v", v.len()),
            ],
        )?;
        if step == 0 {
            return Err(OptimError::StepZero);
        }
        // Bias corrections in f64 (libm, exact integer exponent) rounded once:
        // identical for every segment of the same step.
        let t = step.min(i32::MAX as u64) as i32;
        let mut c = AdamWStep {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: 0.0,
            bias_correction1: (1.0 - libm::pow(self.beta1 as f64, t as f64)) as f32,
            bias_correction2: (1.0 - libm::pow(self.beta2 as f64, t as f64)) as f32,
            grad_scale,
        };
        for_each_piece(cfg, &range, |r, decay| {
            c.weight_decay = if decay { self.weight_decay } else { 0.0 };
            k.adamw(
                &mut params[r.clone()],
                &grads[r.clone()],
                &mut m[r.clone()],
                &mut v[r],
                &c,
            );
        });
        Ok(())
    }
}

/// SGD with optional momentum and L2 weight decay (PyTorch's `SGD`
/// semantics, dampening 0, no Nesterov), decay on 2-D weight matrices only.
///
/// Per element: `g = grad·grad_scale + wd·p`; with momentum
/// `buf = μ·buf + g; p −= lr·buf`, without `p −= lr·g`. A zero-initialised
/// buffer reproduces PyTorch's first step (`buf = g`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Peak learning rate (see [`AdamW::lr`]).
    pub lr: f32,
    /// Momentum `μ`; 0 disables the buffer.
    pub momentum: f32,
    /// L2 weight decay (added to the gradient), 2-D weight matrices only.
    pub weight_decay: f32,
}

impl Sgd {
    /// Elements of the momentum buffer: `num_params`, or 0 without momentum.
    pub fn state_len(&self, cfg: &GptConfig) -> usize {
        if self.momentum != 0.0 {
            cfg.num_params()
        } else {
            0
        }
    }

    /// Updates the parameters in global `range`. `momentum_buf` is the
    /// sub-slice for `range` (it must be empty when `momentum == 0`).
    #[allow(clippy::too_many_arguments)]
    pub fn update_segment(
        &self,
        cfg: &GptConfig,
        range: Range<usize>,
        params: &mut [f32],
        grads: &[f32],
        momentum_buf: &mut [f32],
        lr: f32,
        grad_scale: f32,
    ) -> Result<(), OptimError> {
        let buf_len = if self.momentum != 0.0 {
            momentum_buf.len()
        } else {
            params.len()
        };
        check_segment(
            cfg,
            &range,
            &[
                ("params", params.len()),
                ("grads", grads.len()),
                ("momentum", buf_len),
            ],
        )?;
        let mu = self.momentum;
        for_each_piece(cfg, &range, |r, decay| {
            let wd = if decay { self.weight_decay } else { 0.0 };
            if mu != 0.0 {
                let it = params[r.clone()]
                    .iter_mut()
                    .zip(&grads[r.clone()])
                    .zip(&mut momentum_buf[r]);
                for ((p, &g), b) in it {
                    let g = g * grad_scale + wd * *p;
                    *b = mu * *b + g;
                    *p -= lr * *b;
                }
            } else {
                for (p, &g) in params[r.clone()].iter_mut().zip(&grads[r]) {
                    let g = g * grad_scale + wd * *p;
                    *p -= lr * g;
                }
            }
        });
        Ok(())
    }
}

/// Learning rate: linear warmup to `max_lr`, then cosine decay to `min_lr`
/// at `total_steps`, then `min_lr` (nanoGPT/llm.c schedule).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// Peak rate, reached at the end of warmup.
    pub max_lr: f32,
    /// Floor of the cosine decay.
    pub min_lr: f32,
    /// Steps of linear warmup.
    pub warmup_steps: u64,
    /// Step at which the decay reaches `min_lr`.
    pub total_steps: u64,
}

impl LrSchedule {
    /// The rate for 0-based `step`: `max_lr·(step+1)/warmup_steps` during
    /// warmup, then `min_lr + ½(1 + cos(π·r))·(max_lr − min_lr)` with
    /// `r = (step − warmup)/(total − warmup)`, and `min_lr` from `total_steps` on.
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            return (self.max_lr as f64 * (step + 1) as f64 / self.warmup_steps as f64) as f32;
        }
        if step >= self.total_steps {
            return self.min_lr;
        }
        let span = (self.total_steps - self.warmup_steps) as f64;
        let r = (step - self.warmup_steps) as f64 / span;
        let coeff = 0.5 * (1.0 + libm::cos(core::f64::consts::PI * r));
        (self.min_lr as f64 + coeff * (self.max_lr as f64 - self.min_lr as f64)) as f32
    }
}

/// `Σ g²` of a segment in `f64`, summed in index order (fixed), so per-segment
/// partials added in segment order give the same global norm on every run.
pub fn sum_squares(grads: &[f32]) -> f64 {
    let mut s = 0.0f64;
    for &g in grads {
        let g = g as f64;
        s += g * g;
    }
    s
}

/// Clipping factor for global norm `total_norm` (= `√Σ sum_squares`):
/// `min(1, max_norm/(total_norm + 1e-6))` as PyTorch's `clip_grad_norm_`;
/// 1 when `max_norm ≤ 0` (clipping off). A non-finite norm gives 0 for `+∞`
/// and NaN for NaN, so the caller must check for it (the accumulators report
/// non-finite gradients before this point).
pub fn clip_scale(total_norm: f64, max_norm: f32) -> f32 {
    if max_norm <= 0.0 {
        return 1.0;
    }
    let coef = max_norm as f64 / (total_norm + 1e-6);
    if coef.is_nan() {
        return f32::NAN;
    }
    coef.min(1.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let s = LrSchedule {
            max_lr: 1.0,
            min_lr: 0.1,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-7);
        assert!((s.lr(9) - 1.0).abs() < 1e-7);
        assert!((s.lr(10) - 1.0).abs() < 1e-7);
        assert!((s.lr(60) - 0.55).abs() < 1e-6);
        assert!((s.lr(109) - 0.1).abs() < 1e-3);
        assert_eq!(s.lr(110), 0.1);
        assert_eq!(s.lr(10_000), 0.1);
        for st in 10..109 {
            assert!(s.lr(st + 1) <= s.lr(st));
        }
        let no_warm = LrSchedule {
            max_lr: 1.0,
            min_lr: 0.0,
            warmup_steps: 0,
            total_steps: 4,
        };
        assert_eq!(no_warm.lr(0), 1.0);
    }

    #[test]
    fn clipping_helpers() {
        assert_eq!(sum_squares(&[3.0, 4.0]), 25.0);
        assert_eq!(clip_scale(5.0, 10.0), 1.0);
        assert!((clip_scale(10.0, 1.0) - 0.1).abs() < 1e-7);
        assert_eq!(clip_scale(10.0, 0.0), 1.0);
        assert_eq!(clip_scale(f64::INFINITY, 1.0), 0.0);
        assert!(clip_scale(f64::NAN, 1.0).is_nan());
    }

    #[test]
    fn adamw_first_step_moves_by_lr_times_sign() {
        // With bias correction, step 1 gives m̂ = g, v̂ = g², so Δp ≈ −lr·sign(g).
        let cfg = GptConfig {
            vocab_size: 3,
            n_positions: 2,
            n_embd: 2,
            n_layer: 1,
            n_head: 1,
            untied_head: false,
        };
        let n = cfg.num_params();
        let mut p = [0.0f32; 96];
        let g: [f32; 96] = core::array::from_fn(|i| if i % 2 == 0 { 0.5 } else { -2.0 });
        let (mut m, mut v) = ([0.0f32; 96], [0.0f32; 96]);
        let opt = AdamW {
            weight_decay: 0.0,
            ..AdamW::default()
        };
        opt.update_segment(
            &cfg,
            0..n,
            &mut p[..n],
            &g[..n],
            &mut m[..n],
            &mut v[..n],
            1,
            0.01,
            1.0,
        )
        .unwrap();
        for (i, &x) in p[..n].iter().enumerate() {
            let want = if i % 2 == 0 { -0.01 } else { 0.01 };
            assert!((x - want).abs() < 1e-6, "{i}: {x}");
        }
        let e = opt.update_segment(
            &cfg,
            0..n,
            &mut p[..n],
            &g[..n],
            &mut m[..n],
            &mut v[..n],
            0,
            0.01,
            1.0,
        );
        assert_eq!(e, Err(OptimError::StepZero));
        let e = opt.update_segment(
            &cfg,
            0..n + 1,
            &mut p[..n + 1],
            &g[..n + 1],
            &mut m[..n + 1],
            &mut v[..n + 1],
            1,
            0.01,
            1.0,
        );
        assert!(matches!(e, Err(OptimError::RangeOutOfBounds { .. })));
        let e = opt.update_segment(
            &cfg,
            0..n,
            &mut p[..n],
            &g[..n - 1],
            &mut m[..n],
            &mut v[..n],
            1,
            0.01,
            1.0,
        );
        assert_eq!(
            e,
            Err(OptimError::LengthMismatch {
                what: "grads",
                expected: n,
                actual: n - 1
            })
        );
    }
}
