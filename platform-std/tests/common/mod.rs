//! Helpers shared by the integration tests.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use cllm_core::accumulate::Accumulator;
use cllm_core::kernels::Portable;
use cllm_core::model::{self, GptConfig};
use cllm_core::optim::AdamW;
use cllm_core::reduce::{reduce_sequential, sequential_cell_len, sequential_f32_len};
use cllm_core::tree::Shape;
use cllm_std::exec::{ExecConfig, Optimizer, UnitSource, UpdateSettings};

/// A tied-head GPT config over an 8-token context with 2 heads.
pub const fn small_gpt(vocab_size: usize, n_embd: usize, n_layer: usize) -> GptConfig {
    GptConfig {
        vocab_size,
        n_positions: 8,
        n_embd,
        n_layer,
        n_head: 2,
        untied_head: false,
    }
}

/// The bit patterns of `v`, so that comparisons are exact (NaN included).
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A token id below `vocab` that is a pure hash of (step, unit, position).
pub fn hashed_token(vocab: usize, step: u64, unit: usize, i: usize) -> u32 {
    let mut z = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (unit as u64) << 20 ^ i as u64;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % vocab as u64) as u32
}

/// A unit source whose tokens are a pure function of (vocabulary, step,
/// unit, position), each target the next position's token.
pub struct Hashed {
    token: fn(usize, u64, usize, usize) -> u32,
    vocab: usize,
    eval_units: usize,
}

impl Hashed {
    /// Tokens from `token` below `vocab`; evaluation unit `u` (of
    /// `eval_units`) is training unit `u` of step `u64::MAX`.
    pub const fn new(
        token: fn(usize, u64, usize, usize) -> u32,
        vocab: usize,
        eval_units: usize,
    ) -> Self {
        Hashed {
            token,
            vocab,
            eval_units,
        }
    }
}

impl UnitSource for Hashed {
    fn fill_train(&self, step: u64, unit: usize, tokens: &mut [u32], targets: &mut [u32]) {
        for i in 0..tokens.len() {
            tokens[i] = (self.token)(self.vocab, step, unit, i);
            targets[i] = (self.token)(self.vocab, step, unit, i + 1);
        }
    }
    fn eval_units(&self) -> usize {
        self.eval_units
    }
    fn fill_eval(&self, unit: usize, tokens: &mut [u32], targets: &mut [u32]) {
        self.fill_train(u64::MAX, unit, tokens, targets)
    }
}

/// GPT-2 init with seed 7, then spread so that f32 rounding is
/// order-sensitive.
pub fn spread_params(model: &GptConfig) -> Vec<f32> {
    let mut p = vec![0.0; model.num_params()];
    model::init_params(model, &mut p, 7).unwrap();
    for (i, x) in p.iter_mut().enumerate() {
        *x += ((i * 7919 % 1000) as f32 - 500.0) * 1e-3;
    }
    p
}

/// An unpinned executor config that retries a failed unit once and keeps
/// activations.
pub fn exec_config(
    shape: Shape,
    threads: usize,
    units: usize,
    micro_batch: usize,
    seq_len: usize,
) -> ExecConfig {
    ExecConfig {
        shape,
        threads,
        units,
        micro_batch,
        seq_len,
        pin_threads: false,
        max_retries: 1,
        recompute_blocks: false,
    }
}

/// AdamW at learning rate 1e-2 with betas (0.9, 0.99) and eps 1e-8.
pub fn adamw(weight_decay: f32) -> Optimizer {
    Optimizer::AdamW(AdamW {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay,
    })
}

/// Update settings at learning rate 1e-2.
pub fn update_at(optimizer: Optimizer, grad_clip: f32, t: u64) -> UpdateSettings {
    UpdateSettings {
        optimizer,
        lr: 1e-2,
        grad_clip,
        t,
    }
}

/// The summed gradient of `units` units over `shape`, computed on one core
/// by the core's reference driver; `fill` supplies unit `u`'s tokens.
pub fn sequential_sum<A: Accumulator>(
    acc: &A,
    model: &GptConfig,
    p: &[f32],
    shape: Shape,
    units: usize,
    (mb, seq): (usize, usize),
    mut fill: impl FnMut(usize, &mut [u32], &mut [u32]),
) -> Vec<f32> {
    let n = p.len();
    let mut bufs = vec![0.0f32; sequential_f32_len::<A>(shape.depth(), n)];
    let mut cells: Vec<A::Cell> = (0..sequential_cell_len::<A>(n))
        .map(|_| acc.zero_cell())
        .collect();
    let mut out = vec![0.0f32; n];
    let mut work = vec![0.0f32; model.activation_len(mb, seq)];
    let (mut tok, mut tgt) = (vec![0u32; mb * seq], vec![0u32; mb * seq]);
    reduce_sequential(
        acc,
        shape,
        units,
        &mut bufs,
        &mut cells,
        &mut out,
        |u, g| {
            fill(u, &mut tok, &mut tgt);
            model::forward(&Portable, model, p, &mut work, &tok, Some(&tgt), mb, seq).unwrap();
            model::backward(&Portable, model, p, g, &mut work, &tok, &tgt, mb, seq).unwrap();
        },
    )
    .unwrap();
    out
}

/// Small deterministic generator for test inputs (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n` (slightly biased; fine for tests).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
