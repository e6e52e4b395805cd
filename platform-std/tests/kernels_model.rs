//! The SIMD kernels plugged into the model give the portable model's loss and
//! gradients within float tolerance, and the same bits run to run.

use cllm_core::kernels::{Kernels, Portable};
use cllm_core::model::{self, GptConfig};
use cllm_std::kernels::{KernelChoice, SimdKernels};

mod kernel_util;
use kernel_util::{first_bit_difference, ALL_CHOICES};

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

/// A model 64 wide (with 70+ token rows every big product runs on AMX
/// tiles) over `vocab` tokens, GPT-2 init from `seed`, and `b × t` tokens
/// and targets `i·tok_mul` and `i·tgt_mul` mod `vocab`.
fn wide_case(
    vocab: usize,
    seed: u64,
    (b, t): (usize, usize),
    (tok_mul, tgt_mul): (usize, usize),
) -> (GptConfig, Vec<f32>, Vec<u32>, Vec<u32>) {
    let cfg = GptConfig {
        vocab_size: vocab,
        n_positions: 40,
        n_embd: 64,
        n_layer: 2,
        n_head: 4,
        untied_head: false,
    };
    let mut p = vec![0.0; cfg.num_params()];
    model::init_params(&cfg, &mut p, seed).unwrap();
    let tok = (0..b * t).map(|i| (i * tok_mul % vocab) as u32).collect();
    let tgt = (0..b * t).map(|i| (i * tgt_mul % vocab) as u32).collect();
    (cfg, p, tok, tgt)
}

#[test]
fn simd_model_matches_portable() {
    let (b, t) = (3, 37);
    let (cfg, p, tok, tgt) = wide_case(67, 3, (b, t), (31, 17));
    let (l0, g0) = grads(&Portable, &cfg, &p, &tok, &tgt, b, t);
    // AMX (bf16x3 GEMMs, 4× AVX-512's GEMM error bound) gets 4× the room.
    for (choice, room) in [(KernelChoice::Auto, 1.0), (KernelChoice::Amx, 4.0)] {
        let Ok(simd) = SimdKernels::new(choice) else {
            eprintln!("skipping {choice:?}: not supported here");
            continue;
        };
        let (l1, g1) = grads(&simd, &cfg, &p, &tok, &tgt, b, t);
        let what = simd.describe();
        assert!(
            (l0 - l1).abs() <= room * 1e-5 * l0.abs(),
            "{what}: loss {l0} vs {l1}"
        );
        let scale = g0.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let worst = g0
            .iter()
            .zip(&g1)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("{what}: loss {l0} vs {l1}; max |Δg| {worst:e}, max |g| {scale:e}");
        assert!(
            worst <= room * 1e-4 * scale,
            "{what}: max |Δg| {worst} vs max |g| {scale}"
        );
        let (l2, g2) = grads(&simd, &cfg, &p, &tok, &tgt, b, t);
        assert_eq!(l1.to_bits(), l2.to_bits());
        assert!(first_bit_difference(&g1, &g2).is_none());
    }
}

/// Generation with the KV cache gives the full forward pass's logits bit for
/// bit with every kernel choice: the blocked attention products add only
/// exact zeros beyond the causal edge, and a GEMM row depends only on its own
/// row of A, so the two paths compute each value by the same chain.
#[test]
fn cached_generation_equals_full_forward_with_each_kernel() {
    let cfg = GptConfig {
        vocab_size: 29,
        n_positions: 70,
        n_embd: 24,
        n_layer: 2,
        n_head: 3,
        untied_head: false,
    };
    let t = cfg.n_positions;
    let mut p = vec![0.0; cfg.num_params()];
    model::init_params(&cfg, &mut p, 5).unwrap();
    // Larger than init so attention is far from uniform.
    for (i, x) in p.iter_mut().enumerate() {
        *x += ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.3;
    }
    let tokens: Vec<u32> = (0..t).map(|i| (i * 13 % 29) as u32).collect();
    let choices = [
        KernelChoice::Portable,
        KernelChoice::Avx2,
        KernelChoice::Avx512,
    ];
    // A kernel set this CPU lacks is skipped (Auto always exists).
    for k in choices
        .into_iter()
        .filter_map(|c| SimdKernels::new(c).ok().map(|k| (c, k)))
    {
        let (choice, k) = k;
        let mut work = vec![0.0; cfg.activation_len(1, t)];
        model::forward(&k, &cfg, &p, &mut work, &tokens, None, 1, t).unwrap();
        let full = model::logits(&cfg, &work, 1, t).unwrap();
        let mut cache = vec![f32::NAN; cfg.kv_cache_len()];
        let mut iw = vec![0.0; cfg.infer_work_len()];
        let mut out = vec![0.0; cfg.vocab_size];
        for (pos, &tok) in tokens.iter().enumerate() {
            model::forward_cached(&k, &cfg, &p, &mut cache, &mut iw, tok, pos, &mut out).unwrap();
            let row = &full[pos * cfg.vocab_size..(pos + 1) * cfg.vocab_size];
            for (a, b) in out.iter().zip(row) {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{choice:?} position {pos}: {a} vs {b}"
                );
            }
        }
    }
}

/// `backward_into` over a buffer full of garbage gives what `backward` adds
/// to a zeroed one, with every kernel choice (an exact zero may differ in
/// sign, which `==` ignores), and a second `backward_into` does not add.
#[test]
fn backward_into_equals_zeroing_then_backward_with_each_kernel() {
    let (b, t) = (2, 35);
    let (cfg, p, tok, tgt) = wide_case(53, 5, (b, t), (29, 13));
    for choice in ALL_CHOICES {
        let Ok(k) = SimdKernels::new(choice) else {
            continue;
        };
        let (_, want) = grads(&k, &cfg, &p, &tok, &tgt, b, t);
        let mut work = vec![0.0; cfg.activation_len(b, t)];
        let mut g: Vec<f32> = (0..p.len()).map(|i| (i % 97) as f32 - 48.5).collect();
        for round in 0..2 {
            model::forward(&k, &cfg, &p, &mut work, &tok, Some(&tgt), b, t).unwrap();
            model::backward_into(&k, &cfg, &p, &mut g, &mut work, &tok, &tgt, b, t).unwrap();
            let bad = g.iter().zip(&want).position(|(a, b)| a != b);
            assert_eq!(bad, None, "{} round {round}", k.describe());
        }
    }
}

/// A workspace long enough to keep the GELU output, its derivative and the
/// attention probabilities gives the short workspace's loss, logits and
/// gradients bit for bit with every kernel choice; and a backward that no
/// longer sees the kept region refuses to run instead of reading garbage.
#[test]
fn kept_workspace_gives_the_recomputing_bits_with_each_kernel() {
    let (b, t) = (3, 37);
    let (cfg, p, tok, tgt) = wide_case(41, 9, (b, t), (23, 11));
    let (short, long) = (cfg.activation_len(b, t), cfg.activation_len_kept(b, t));
    assert!(long > short);
    for choice in ALL_CHOICES {
        let Ok(k) = SimdKernels::new(choice) else {
            continue;
        };
        let (want_loss, want) = grads(&k, &cfg, &p, &tok, &tgt, b, t);
        let mut work = vec![f32::NAN; long];
        let mut g = vec![0.0; p.len()];
        for round in 0..2 {
            let loss = model::forward(&k, &cfg, &p, &mut work, &tok, Some(&tgt), b, t).unwrap();
            assert_eq!(loss.to_bits(), want_loss.to_bits(), "{}", k.describe());
            g.fill(0.0);
            model::backward(&k, &cfg, &p, &mut g, &mut work, &tok, &tgt, b, t).unwrap();
            let bad = first_bit_difference(&g, &want);
            assert_eq!(bad, None, "{} round {round}", k.describe());
        }
        model::forward(&k, &cfg, &p, &mut work, &tok, Some(&tgt), b, t).unwrap();
        let err = model::backward(&k, &cfg, &p, &mut g, &mut work[..short], &tok, &tgt, b, t);
        assert_eq!(err, Err(model::ModelError::NoForward), "{}", k.describe());
    }
}
