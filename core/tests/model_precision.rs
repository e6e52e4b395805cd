//! f32 against the f64 reference: same parameters (the f64 values rounded),
//! same batch. Tolerances, set ~5-10x above what these configs measure
//! (f32's unit roundoff is 6e-8; sums of up to a few hundred terms and
//! LayerNorm's 1/σ amplify it to ~1e-6):
//! * loss: relative difference ≤ 1e-6 (measured ~1e-7);
//! * gradients, per tensor: `max |g32 − g64| ≤ 1e-5 · max |g64|` (measured
//!   ≤ 8e-7) and relative L2 error ≤ 5e-6 (measured ≤ 8e-7).

mod model_util;

use cllm_core::model::GptConfig;
use cllm_core::rng::Rng;
use model_util::{gpt, loss_and_grads, perturbed_params, random_tokens, to_f32, TINY};

fn compare(cfg: &GptConfig, noise: f64, b: usize, t: usize) {
    let p64 = perturbed_params(cfg, 7, noise);
    let p32 = to_f32(&p64);
    let p64: Vec<f64> = p32.iter().map(|&x| x as f64).collect(); // exactly the f32 values
    let mut rng = Rng::new(8);
    let tokens = random_tokens(&mut rng, b * t, cfg.vocab_size);
    let targets = random_tokens(&mut rng, b * t, cfg.vocab_size);
    let (l64, g64) = loss_and_grads(cfg, &p64, &tokens, &targets, b, t);
    let (l32, g32) = loss_and_grads(cfg, &p32, &tokens, &targets, b, t);
    let lrel = (l32 as f64 - l64).abs() / l64.abs();
    println!("{cfg:?} b{b} t{t}: loss f64 {l64:.9} f32 {l32:.9} rel {lrel:.2e}");
    assert!(lrel <= 1e-6, "loss differs by {lrel:e}");
    for ten in cfg.tensors() {
        let r = ten.range();
        let scale = g64[r.clone()].iter().fold(0.0f64, |m, &x| m.max(x.abs()));
        let (mut maxd, mut d2, mut n2) = (0.0f64, 0.0f64, 0.0f64);
        for i in r {
            let d = g32[i] as f64 - g64[i];
            maxd = maxd.max(d.abs());
            d2 += d * d;
            n2 += g64[i] * g64[i];
        }
        if n2 == 0.0 {
            // Only the unused rows of wpe can be all zero; f32 must agree exactly.
            assert_eq!(maxd, 0.0, "{ten}");
            continue;
        }
        let (rmax, rl2) = (maxd / scale, (d2 / n2).sqrt());
        println!("  {ten:<38} max|d|/max|g| {rmax:.2e}  rel L2 {rl2:.2e}");
        assert!(rmax <= 1e-5, "{ten}: max |g32 - g64| = {rmax:e} of max |g|");
        assert!(rl2 <= 5e-6, "{ten}: relative L2 error {rl2:e}");
    }
}

#[test]
fn f32_agrees_with_f64_on_the_gradcheck_model() {
    compare(&TINY, 0.2, 2, 5);
}

#[test]
fn f32_agrees_with_f64_on_a_wider_model_at_init() {
    let cfg = gpt(65, 32, 32, 2, 4);
    compare(&cfg, 0.0, 3, 32);
}
