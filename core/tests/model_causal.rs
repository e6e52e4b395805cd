//! Causality: the logits at position ≤ t never depend on tokens after t.
//! Checked bitwise, for every t, in both precisions, and in every sequence
//! of the batch (the other sequences must not change either).

mod model_util;

use cllm_core::kernels::Portable;
use cllm_core::model::{self, GptConfig};
use cllm_core::real::Real;
use cllm_core::rng::Rng;
use model_util::{gpt, perturbed_f64_and_f32, random_tokens};

fn logits_of<R: Real>(cfg: &GptConfig, params: &[R], tokens: &[u32], b: usize, t: usize) -> Vec<R> {
    let mut work = vec![R::ZERO; cfg.activation_len(b, t)];
    model::forward(&Portable, cfg, params, &mut work, tokens, None, b, t).unwrap();
    model::logits(cfg, &work, b, t).unwrap().to_vec()
}

fn check<R: Real>(params: &[R], cfg: &GptConfig) {
    let (b, t, v) = (2, cfg.n_positions, cfg.vocab_size);
    let mut rng = Rng::new(21);
    let tokens = random_tokens(&mut rng, b * t, v);
    let base = logits_of(cfg, params, &tokens, b, t);
    for seq in 0..b {
        for pos in 1..t {
            let mut changed = tokens.clone();
            let i = seq * t + pos;
            changed[i] = (changed[i] + 1 + rng.below(v as u64 - 1) as u32) % v as u32;
            let out = logits_of(cfg, params, &changed, b, t);
            for s in 0..b {
                for p in 0..t {
                    let r = (s * t + p) * v..(s * t + p + 1) * v;
                    let same = base[r.clone()]
                        .iter()
                        .zip(&out[r])
                        .all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits());
                    if s != seq || p < pos {
                        assert!(same, "{}: changing token {pos} of sequence {seq} changed logits at ({s}, {p})", R::NAME);
                    } else if p == pos {
                        // The changed position itself must react, or the test could not fail.
                        assert!(
                            !same,
                            "{}: logits at the changed position {pos} did not change",
                            R::NAME
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn future_tokens_never_change_past_logits() {
    // 40 positions: more than one 32-row attention block, so the blocked
    // score computation (which computes some masked entries) is covered.
    let cfg = gpt(13, 40, 16, 2, 2);
    let (p64, p32) = perturbed_f64_and_f32(&cfg, 5);
    check(&p64, &cfg);
    check(&p32, &cfg);
}
