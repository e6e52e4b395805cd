//! Generation with the KV cache gives the logits of the full forward pass.
//!
//! With the portable kernels the two paths run the same row-level code in
//! the same order, so we require bitwise equality (tolerance 0). A platform
//! kernel whose gemm depends on the matrix size may differ in the last bits;
//! that is its own test's business.

mod model_util;

use cllm_core::kernels::Portable;
use cllm_core::model::{self, GptConfig, ModelError};
use cllm_core::real::Real;
use cllm_core::rng::Rng;
use model_util::{gpt, perturbed_f64_and_f32, random_tokens};

fn check<R: Real>(cfg: &GptConfig, params: &[R]) {
    let (t, v) = (cfg.n_positions, cfg.vocab_size);
    let mut rng = Rng::new(31);
    let tokens = random_tokens(&mut rng, t, v);
    let mut work = vec![R::ZERO; cfg.activation_len(1, t)];
    model::forward(&Portable, cfg, params, &mut work, &tokens, None, 1, t).unwrap();
    let full = model::logits(cfg, &work, 1, t).unwrap();

    // The cache starts as garbage: only positions already written may be read.
    let mut cache = vec![R::from_f64(f64::NAN); cfg.kv_cache_len()];
    let mut iw = vec![R::ZERO; cfg.infer_work_len()];
    let mut out = vec![R::ZERO; v];
    let mut max_diff = 0.0f64;
    for (pos, &tok) in tokens.iter().enumerate() {
        model::forward_cached(
            &Portable, cfg, params, &mut cache, &mut iw, tok, pos, &mut out,
        )
        .unwrap();
        let row = &full[pos * v..(pos + 1) * v];
        for (a, b) in out.iter().zip(row) {
            max_diff = max_diff.max((a.to_f64() - b.to_f64()).abs());
            assert_eq!(
                a.to_f64().to_bits(),
                b.to_f64().to_bits(),
                "{}: position {pos}: {a} vs {b}",
                R::NAME
            );
        }
    }
    println!("{}: {} positions, max |diff| {max_diff:e}", R::NAME, t);
}

#[test]
fn cached_generation_equals_full_forward_bitwise() {
    let cfg = gpt(29, 37, 24, 3, 3);
    let (p64, p32) = perturbed_f64_and_f32(&cfg, 9);
    check(&cfg, &p64);
    check(&cfg, &p32);
}

#[test]
fn cached_forward_rejects_bad_input() {
    let cfg = gpt(5, 4, 4, 1, 2);
    let p = vec![0.0f32; cfg.num_params()];
    let mut cache = vec![0.0f32; cfg.kv_cache_len()];
    let mut w = vec![0.0f32; cfg.infer_work_len()];
    let mut out = vec![0.0f32; 5];
    let k = Portable;
    assert_eq!(
        model::forward_cached(&k, &cfg, &p, &mut cache, &mut w, 5, 0, &mut out),
        Err(ModelError::TokenOutOfRange {
            index: 0,
            token: 5,
            vocab_size: 5
        })
    );
    assert_eq!(
        model::forward_cached(&k, &cfg, &p, &mut cache, &mut w, 1, 4, &mut out),
        Err(ModelError::PositionOutOfRange {
            pos: 4,
            n_positions: 4
        })
    );
    assert!(matches!(
        model::forward_cached(&k, &cfg, &p, &mut cache[..3], &mut w, 1, 0, &mut out),
        Err(ModelError::BufferTooSmall { .. })
    ));
    assert!(matches!(
        model::forward_cached(&k, &cfg, &p, &mut cache, &mut w, 1, 0, &mut out[..4]),
        Err(ModelError::BufferLength { .. })
    ));
}
