//! Block recomputation: a workspace of `activation_len_recompute` stores
//! only the blocks' outputs and backward recomputes each block; the loss,
//! the logits and the gradients are the bits of the full workspace (and of
//! the kept one).

use cllm_core::kernels::Portable;
use cllm_core::model::{self, GptConfig};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Loss, logits and gradient (backward_into, then backward on top) with a
/// workspace of `len`.
fn run(cfg: &GptConfig, len: usize, b: usize, t: usize) -> (u32, Vec<u32>, Vec<u32>) {
    let n = cfg.num_params();
    let mut p = vec![0.0f32; n];
    model::init_params(cfg, &mut p, 9).unwrap();
    let toks: Vec<u32> = (0..b * t)
        .map(|i| (i * 5 % cfg.vocab_size) as u32)
        .collect();
    let tgts: Vec<u32> = (0..b * t)
        .map(|i| (i * 7 % cfg.vocab_size) as u32)
        .collect();
    let mut w = vec![f32::NAN; len];
    let mut g = vec![0.0f32; n];
    let loss = model::forward(&Portable, cfg, &p, &mut w, &toks, Some(&tgts), b, t).unwrap();
    let logits = bits(model::logits(cfg, &w, b, t).unwrap());
    model::backward_into(&Portable, cfg, &p, &mut g, &mut w, &toks, &tgts, b, t).unwrap();
    model::forward(&Portable, cfg, &p, &mut w, &toks, Some(&tgts), b, t).unwrap();
    model::backward(&Portable, cfg, &p, &mut g, &mut w, &toks, &tgts, b, t).unwrap();
    (loss.to_bits(), logits, bits(&g))
}

#[test]
fn recomputed_blocks_give_the_same_bits() {
    for (n_layer, untied_head) in [(2, false), (3, true), (4, false)] {
        let cfg = GptConfig {
            vocab_size: 13,
            n_positions: 8,
            n_embd: 8,
            n_layer,
            n_head: 2,
            untied_head,
        };
        let (b, t) = (2, 7);
        let (short, full, kept) = (
            cfg.activation_len_recompute(b, t),
            cfg.activation_len(b, t),
            cfg.activation_len_kept(b, t),
        );
        assert!(short < full, "{n_layer} blocks: recomputing saves memory");
        let want = run(&cfg, full, b, t);
        assert!(
            run(&cfg, short, b, t) == want,
            "{n_layer} blocks, recomputed"
        );
        assert!(
            run(&cfg, full - 1, b, t) == want,
            "{n_layer} blocks, between"
        );
        assert!(run(&cfg, kept, b, t) == want, "{n_layer} blocks, kept");
    }
}

#[test]
fn one_block_has_nothing_to_recompute_and_shorter_is_an_error() {
    let cfg = GptConfig {
        vocab_size: 13,
        n_positions: 8,
        n_embd: 8,
        n_layer: 1,
        n_head: 2,
        untied_head: false,
    };
    assert_eq!(cfg.activation_len_recompute(2, 7), cfg.activation_len(2, 7));
    let deep = GptConfig { n_layer: 3, ..cfg };
    let short = deep.activation_len_recompute(2, 7);
    let p = vec![0.0f32; deep.num_params()];
    let mut w = vec![0.0f32; short - 1];
    let toks = [0u32; 14];
    let r = model::forward(&Portable, &deep, &p, &mut w, &toks, None, 2, 7);
    assert!(
        matches!(r, Err(model::ModelError::BufferTooSmall { needed, .. }) if needed == short),
        "{r:?}"
    );
}
