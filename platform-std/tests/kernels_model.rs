//! The SIMD kernels plugged into the model give the portable model's loss and
//! gradients within float tolerance, and the same bits run to run.

use cllm_core::kernels::{Kernels, Portable};
use cllm_core::model::{self, GptConfig};
use cllm_std::kernels::{KernelChoice, SimdKernels};

fn grads<K: Kernels<f32>>(
    k: &K,
    cfg: &GptConfig,
    p: &[f32],
    tok: &[u32],
    tgt: &[u32],
    b: usize,
    t: usize,
) -> (f32, Vec<f32>) {
    let mut work = vec![0.0; cfg.activation_len(b, t)];
    let mut g = vec![0.0; p.len()];
    let loss = model::forward(k, cfg, p, &mut work, tok, Some(tgt), b, t).unwrap();
    model::backward(k, cfg, p, &mut g, &mut work, tok, tgt, b, t).unwrap();
    (loss, g)
}

#[test]
fn simd_model_matches_portable() {
    let cfg = GptConfig {
        vocab_size: 67,
        n_positions: 40,
        n_embd: 48,
        n_layer: 2,
        n_head: 4,
    };
    let (b, t) = (3, 37);
    let mut p = vec![0.0; cfg.num_params()];
    model::init_params(&cfg, &mut p, 3).unwrap();
    let tok: Vec<u32> = (0..b * t).map(|i| (i * 31 % 67) as u32).collect();
    let tgt: Vec<u32> = (0..b * t).map(|i| (i * 17 % 67) as u32).collect();
    let (l0, g0) = grads(&Portable, &cfg, &p, &tok, &tgt, b, t);
    let simd = SimdKernels::new(KernelChoice::Auto).unwrap();
    let (l1, g1) = grads(&simd, &cfg, &p, &tok, &tgt, b, t);
    assert!((l0 - l1).abs() <= 1e-5 * l0.abs(), "loss {l0} vs {l1}");
    let scale = g0.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let worst = g0
        .iter()
        .zip(&g1)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-4 * scale, "max |Δg| {worst} vs max |g| {scale}");
    let (l2, g2) = grads(&simd, &cfg, &p, &tok, &tgt, b, t);
    assert_eq!(l1.to_bits(), l2.to_bits());
    assert!(g1.iter().zip(&g2).all(|(a, b)| a.to_bits() == b.to_bits()));
}
