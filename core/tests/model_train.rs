//! Training-level checks: a fresh model predicts (nearly) uniformly, and a
//! small model memorises a short text with AdamW.

mod model_util;

use cllm_core::kernels::Portable;
use cllm_core::model::{self, GptConfig};
use cllm_core::optim::{self, AdamW};
use cllm_core::rng::Rng;
use model_util::{gpt, random_tokens};

/// At init the logits are `ln_f(x)·wteᵀ` with wte ~ N(0, 0.02²), so each is
/// ~N(0, C·0.02²) and the expected loss is about `ln V + C·0.02²/2`
/// (= ln V + 0.013 for C = 64). We require |loss − ln V| < 0.05.
#[test]
fn fresh_model_loss_is_ln_vocab() {
    let cfg = gpt(65, 64, 64, 2, 4);
    let (b, t) = (4, 64);
    let mut p = vec![0.0f32; cfg.num_params()];
    let mut work = vec![0.0f32; cfg.activation_len(b, t)];
    let ln_v = (cfg.vocab_size as f32).ln();
    for seed in 1..=4 {
        model::init_params(&cfg, &mut p, seed).unwrap();
        let mut rng = Rng::new(100 + seed);
        let tokens = random_tokens(&mut rng, b * t, cfg.vocab_size);
        let targets = random_tokens(&mut rng, b * t, cfg.vocab_size);
        let loss = model::forward(
            &Portable,
            &cfg,
            &p,
            &mut work,
            &tokens,
            Some(&targets[..]),
            b,
            t,
        )
        .unwrap();
        println!(
            "seed {seed}: loss {loss:.4}, ln V {ln_v:.4}, diff {:+.4}",
            loss - ln_v
        );
        assert!(
            (loss - ln_v).abs() < 0.05,
            "seed {seed}: loss {loss} vs ln V {ln_v}"
        );
    }
}

/// The opening of tinyshakespeare.
const TEXT: &str =
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n\
First Citizen:\nYou are all resolved rather to die than to famish?";
const MAX_STEPS: u64 = 300;

/// Memorise a short passage: loss < 0.1 within `MAX_STEPS` AdamW steps.
#[test]
fn small_model_memorises_a_passage() {
    let mut vocab: Vec<char> = TEXT.chars().collect();
    vocab.sort_unstable();
    vocab.dedup();
    let ids: Vec<u32> = TEXT
        .chars()
        .map(|ch| vocab.iter().position(|&v| v == ch).unwrap() as u32)
        .collect();
    let t = ids.len() - 1;
    let cfg = GptConfig {
        vocab_size: vocab.len(),
        n_positions: 160,
        n_embd: 32,
        n_layer: 2,
        n_head: 4,
        untied_head: false,
    };
    let (tokens, targets) = (&ids[..t], &ids[1..]);

    let n = cfg.num_params();
    let mut p = vec![0.0f32; n];
    model::init_params(&cfg, &mut p, 1).unwrap();
    let (mut g, mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    let mut work = vec![0.0f32; cfg.activation_len(1, t)];
    let opt = AdamW {
        lr: 1e-2,
        weight_decay: 0.0,
        ..AdamW::default()
    };
    let k = Portable;
    let first = model::forward(&k, &cfg, &p, &mut work, tokens, Some(targets), 1, t).unwrap();
    let mut last = first;
    let mut reached = None;
    for step in 1..=MAX_STEPS {
        let loss = model::forward(&k, &cfg, &p, &mut work, tokens, Some(targets), 1, t).unwrap();
        last = loss;
        if loss < 0.1 {
            reached = Some(step - 1);
            break;
        }
        g.fill(0.0);
        model::backward(&k, &cfg, &p, &mut g, &mut work, tokens, targets, 1, t).unwrap();
        let scale = optim::clip_scale(optim::sum_squares(&g).sqrt(), 1.0);
        opt.update_segment(&cfg, 0..n, &mut p, &g, &mut m, &mut v, step, opt.lr, scale)
            .unwrap();
    }
    println!(
        "vocab {}, {} tokens, {n} params: loss {first:.3} -> {last:.4} after {reached:?} steps",
        vocab.len(),
        t
    );
    assert!(
        reached.is_some(),
        "loss still {last} after {MAX_STEPS} steps"
    );
}
