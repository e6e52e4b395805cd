//! Helpers shared by the model integration tests.
#![allow(dead_code)]

use cllm_core::kernels::Portable;
use cllm_core::model::{self, GptConfig};
use cllm_core::real::Real;
use cllm_core::rng::Rng;

/// The gradient-check config of issue 3.
pub const TINY: GptConfig = gpt(11, 8, 8, 2, 2);

/// A tied-head GPT config: vocabulary, context, width, layers, heads.
pub const fn gpt(
    vocab_size: usize,
    n_positions: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
) -> GptConfig {
    GptConfig {
        vocab_size,
        n_positions,
        n_embd,
        n_layer,
        n_head,
        untied_head: false,
    }
}

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

/// `p` rounded to f32, element by element.
pub fn to_f32(p: &[f64]) -> Vec<f32> {
    p.iter().map(|&x| x as f32).collect()
}

/// `perturbed_params` with noise 0.2, and the same rounded to f32.
pub fn perturbed_f64_and_f32(cfg: &GptConfig, seed: u64) -> (Vec<f64>, Vec<f32>) {
    let p64 = perturbed_params(cfg, seed, 0.2);
    let p32 = to_f32(&p64);
    (p64, p32)
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
    forward(cfg, params, &mut work, (tokens, targets), (b, t))
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
    let l = forward(cfg, params, &mut work, (tokens, targets), (b, t));
    model::backward(
        &Portable, cfg, params, &mut grads, &mut work, tokens, targets, b, t,
    )
    .unwrap();
    (l, grads)
}

/// The portable forward pass with targets, leaving its activations in `work`.
fn forward<R: Real>(
    cfg: &GptConfig,
    params: &[R],
    work: &mut [R],
    (tokens, targets): (&[u32], &[u32]),
    (b, t): (usize, usize),
) -> R {
    model::forward(&Portable, cfg, params, work, tokens, Some(targets), b, t).unwrap()
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
