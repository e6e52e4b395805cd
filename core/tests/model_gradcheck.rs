//! Finite-difference check of the hand-written backward pass, in f64, for
//! every element of every parameter tensor of a tiny model (issue 3).
//!
//! Two numeric estimates per element:
//! * `n2`, the plain central difference `(L(p+h) − L(p−h)) / 2h`, `h = 1e-6`.
//!   Its rounding floor is `≈ ε·|L|/h ≈ 3e-10` absolute, so on its own it
//!   cannot resolve a 1e-5 relative error on gradients below ~3e-5.
//! * `n4`, the fourth-order central difference
//!   `(−L(p+2h) + 8L(p+h) − 8L(p−h) + L(p−2h)) / 12h`, `h = 1e-3`
//!   (truncation `O(h⁴)`, rounding `≈ 1e-12`): the reference for the
//!   issue's bounds.
//!
//! Error of an element: `|a − n| / max(|a| + |n|, FLOOR)` with analytic `a`.
//! Issue 3 requires typical (median) ≤ 1e-6 and worst ≤ 1e-5: asserted
//! against `n4` (median per tensor, worst overall). Against `n2` we assert
//! the median and that every difference stays within its rounding floor.
//! Some gradients are exactly zero in exact arithmetic (the key biases: a
//! constant added to every key shifts all scores of a query equally, and
//! softmax ignores that); they are checked separately to be ≤ 1e-14, and the
//! FLOOR of 1e-7 keeps near-zero values from dividing by zero (rows of
//! `wpe` beyond the sequence length must be exactly 0, asserted too).

mod model_util;

use cllm_core::model::{GptConfig, ModelError, TensorKind};
use cllm_core::rng::Rng;
use model_util::{loss, loss_and_grads, median, perturbed_params, random_tokens, TINY};

const H2: f64 = 1e-6;
const H4: f64 = 1e-3;
const FLOOR: f64 = 1e-7;
const B: usize = 2;
const T: usize = 5;

fn rel(a: f64, n: f64) -> f64 {
    (a - n).abs() / (a.abs() + n.abs()).max(FLOOR)
}

#[test]
fn backward_matches_finite_differences_for_every_parameter() {
    gradcheck(TINY);
}

/// The same for a model with its own `lm_head.weight` (wte then gets the
/// embedding gradient only).
#[test]
fn backward_matches_finite_differences_with_an_untied_head() {
    gradcheck(GptConfig {
        untied_head: true,
        ..TINY
    });
}

fn gradcheck(cfg: GptConfig) {
    let mut params = perturbed_params(&cfg, 1, 0.2);
    let mut rng = Rng::new(2);
    let tokens = random_tokens(&mut rng, B * T, cfg.vocab_size);
    let targets = random_tokens(&mut rng, B * T, cfg.vocab_size);
    let (l0, grads) = loss_and_grads(&cfg, &params, &tokens, &targets, B, T);
    assert!(l0.is_finite());
    let c = cfg.n_embd;

    let at = |params: &mut Vec<f64>, i: usize, d: f64| {
        let orig = params[i];
        params[i] = orig + d;
        let l = loss(&cfg, params, &tokens, &targets, B, T);
        params[i] = orig;
        l
    };

    let (mut worst4, mut worst2_abs) = ((0.0f64, String::new()), 0.0f64);
    let (mut all4, mut all2) = (Vec::new(), Vec::new());
    println!(
        "{:<38} {:>4} {:>10} {:>10} {:>10} {:>10}",
        "tensor", "n", "max|grad|", "med err4", "max err4", "med err2"
    );
    for t in cfg.tensors() {
        let (mut e4s, mut e2s) = (Vec::new(), Vec::new());
        let mut gmax = 0.0f64;
        for i in t.range() {
            let a = grads[i];
            let n2 = (at(&mut params, i, H2) - at(&mut params, i, -H2)) / (2.0 * H2);
            let n4 = (-at(&mut params, i, 2.0 * H4) + 8.0 * at(&mut params, i, H4)
                - 8.0 * at(&mut params, i, -H4)
                + at(&mut params, i, -2.0 * H4))
                / (12.0 * H4);
            let j = i - t.offset;
            if t.kind == TensorKind::AttnBias && (c..2 * c).contains(&j) {
                // Key bias: the true gradient is exactly zero.
                assert!(
                    a.abs() <= 1e-14 && n4.abs() <= 1e-11,
                    "{t}[{j}]: {a:e} / {n4:e} should be 0"
                );
                continue;
            }
            if t.kind == TensorKind::Wpe && j >= T * c {
                // Positions the batch never reaches get no gradient at all.
                assert_eq!(
                    a,
                    0.0,
                    "{t}[{j}] (position {}) must have zero gradient",
                    j / c
                );
            }
            gmax = gmax.max(a.abs());
            let e4 = rel(a, n4);
            if e4 > worst4.0 {
                worst4 = (e4, format!("{t}[{j}]: analytic {a:e}, numeric {n4:e}"));
            }
            worst2_abs = worst2_abs.max((a - n2).abs());
            e4s.push(e4);
            e2s.push(rel(a, n2));
        }
        let (m4, x4, m2) = (
            median(&e4s),
            e4s.iter().cloned().fold(0.0, f64::max),
            median(&e2s),
        );
        println!(
            "{:<38} {:>4} {:>10.3e} {:>10.3e} {:>10.3e} {:>10.3e}",
            t.to_string(),
            t.len,
            gmax,
            m4,
            x4,
            m2
        );
        // A tensor whose gradient is all zero would pass vacuously.
        assert!(gmax > 1e-3, "{t}: gradient is (nearly) zero, max {gmax:e}");
        assert!(
            m4 <= 1e-6,
            "{t}: median relative error {m4:e} > 1e-6 (4th-order FD)"
        );
        assert!(
            m2 <= 1e-6,
            "{t}: median relative error {m2:e} > 1e-6 (h = 1e-6 FD)"
        );
        all4.extend(e4s);
        all2.extend(e2s);
    }
    println!(
        "4th-order FD: median {:.3e}, worst {:.3e} at {}\nh=1e-6 FD:    median {:.3e}, worst |a - n| {:.3e}",
        median(&all4),
        worst4.0,
        worst4.1,
        median(&all2),
        worst2_abs
    );
    assert!(
        worst4.0 <= 1e-5,
        "worst relative error {:e} > 1e-5 at {}",
        worst4.0,
        worst4.1
    );
    assert!(
        worst2_abs <= 2e-9,
        "h = 1e-6 FD differs by {worst2_abs:e}, beyond its rounding floor"
    );
}

#[test]
fn backward_accumulates_into_grads() {
    accumulates(TINY);
    accumulates(GptConfig {
        untied_head: true,
        ..TINY
    });
}

fn accumulates(cfg: GptConfig) {
    let params = perturbed_params(&cfg, 3, 0.1);
    let mut rng = Rng::new(4);
    let tokens = random_tokens(&mut rng, B * T, cfg.vocab_size);
    let targets = random_tokens(&mut rng, B * T, cfg.vocab_size);
    let (_, g) = loss_and_grads(&cfg, &params, &tokens, &targets, B, T);

    let k = cllm_core::kernels::Portable;
    let mut work = vec![0.0f64; cfg.activation_len(B, T)];
    let mut acc: Vec<f64> = (0..g.len()).map(|i| i as f64 * 0.25).collect();
    cllm_core::model::forward(
        &k,
        &cfg,
        &params,
        &mut work,
        &tokens,
        Some(&targets[..]),
        B,
        T,
    )
    .unwrap();
    cllm_core::model::backward(
        &k, &cfg, &params, &mut acc, &mut work, &tokens, &targets, B, T,
    )
    .unwrap();
    // Backward adds several contributions straight into `acc`, so the
    // rounding differs from adding the finished gradient: compare to 1e-12.
    for (i, (&a, &gi)) in acc.iter().zip(&g).enumerate() {
        let want = i as f64 * 0.25 + gi;
        assert!(
            (a - want).abs() <= 1e-12 * (1.0 + want.abs()),
            "element {i}: {a} vs {want}"
        );
    }
    // The forward state is consumed: a second backward is an error, not garbage.
    let e = cllm_core::model::backward(
        &k, &cfg, &params, &mut acc, &mut work, &tokens, &targets, B, T,
    );
    assert_eq!(e, Err(ModelError::NoForward));
}
