//! Helpers shared by the model integration tests.
#![allow(dead_code)]

use cllm_core::kernels::Portable;
use cllm_core::model::{self, GptConfig};
use cllm_core::real::Real;
use cllm_core::rng::Rng;

/// The gradient-check config of issue 3.
pub const TINY: GptConfig = GptConfig {
    vocab_size: 11,
    n_positions: 8,
    n_embd: 8,
    n_layer: 2,
    n_head: 2,
    untied_head: false,
};

/// `n` uniform token ids below `vocab`.
pub fn random_tokens(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(vocab as u64) as u32).collect()
}

/// GPT-2 init plus N(0, noise²) on every element, so attention is far from
/// uniform and GELU far from linear: a gradient check at the plain init
/// (weights ~0.02) would barely exercise the nonlinearities.
pub fn perturbed_params(cfg: &GptConfig, seed: u64, noise: f64) -> Vec<f64> {
    let mut p = vec![0.0f64; cfg.num_params()];
    model::init_params(cfg, &mut p, seed).unwrap();
    let mut rng = Rng::new(seed ^ 0x5eed);
    for x in p.iter_mut() {
        *x += noise * rng.normal();
    }
    p
}

/// Mean loss only.
pub fn loss<R: Real>(
    cfg: &GptConfig,
    params: &[R],
    tokens: &[u32],
    targets: &[u32],
    b: usize,
    t: usize,
) -> R {
    let mut work = vec![R::ZERO; cfg.activation_len(b, t)];
    model::forward(
        &Portable,
        cfg,
        params,
        &mut work,
        tokens,
        Some(targets),
        b,
        t,
    )
    .unwrap()
}

/// Mean loss and its gradient (into a zeroed buffer).
pub fn loss_and_grads<R: Real>(
    cfg: &GptConfig,
    params: &[R],
    tokens: &[u32],
    targets: &[u32],
    b: usize,
    t: usize,
) -> (R, Vec<R>) {
    let mut work = vec![R::ZERO; cfg.activation_len(b, t)];
    let mut grads = vec![R::ZERO; cfg.num_params()];
    let l = model::forward(
        &Portable,
        cfg,
        params,
        &mut work,
        tokens,
        Some(targets),
        b,
        t,
    )
    .unwrap();
    model::backward(
        &Portable, cfg, params, &mut grads, &mut work, tokens, targets, b, t,
    )
    .unwrap();
    (l, grads)
}

/// Median of a non-empty slice (sorted copy).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}
