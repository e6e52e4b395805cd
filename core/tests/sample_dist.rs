//! Sampling draws from the distribution it claims: empirical frequencies over
//! many draws match the (truncated, renormalised) softmax within 5 standard
//! errors, truncated tokens never appear, and a seed fixes the sequence.

use cllm_core::rng::Rng;
use cllm_core::sample::{sample, Candidate};

const N: usize = 40_000;

fn softmax(logits: &[f32], temp: f32) -> Vec<f64> {
    let m = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let e: Vec<f64> = logits
        .iter()
        .map(|&x| ((x as f64 - m) / temp as f64).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn frequencies(logits: &[f32], temp: f32, top_k: usize, top_p: f32, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut scratch = vec![Candidate::default(); logits.len()];
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..N {
        counts[sample(logits, temp, top_k, top_p, &mut rng, &mut scratch).unwrap() as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / N as f64).collect()
}

fn assert_matches(freq: &[f64], want: &[f64], what: &str) {
    for (i, (&f, &p)) in freq.iter().zip(want).enumerate() {
        if p == 0.0 {
            assert_eq!(f, 0.0, "{what}: token {i} must never be drawn");
        } else {
            let se = (p * (1.0 - p) / N as f64).sqrt();
            assert!(
                (f - p).abs() <= 5.0 * se + 1e-12,
                "{what}: token {i}: {f:.4} vs {p:.4}"
            );
        }
    }
}

// Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1.
fn logits4() -> Vec<f32> {
    [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect()
}

#[test]
fn temperature_scales_the_softmax() {
    let l = [1.0f32, -0.5, 2.0, 0.0, 0.7];
    for temp in [1.0f32, 0.5, 2.0] {
        assert_matches(
            &frequencies(&l, temp, 0, 1.0, 1),
            &softmax(&l, temp),
            &format!("T={temp}"),
        );
    }
}

#[test]
fn top_k_keeps_the_k_most_likely() {
    let l = [1.0f32, -0.5, 2.0, 0.0, 0.7];
    let full = softmax(&l, 1.0);
    let keep = [true, false, true, false, true]; // top 3: tokens 2, 0, 4
    let s: f64 = full
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(p, _)| p)
        .sum();
    let want: Vec<f64> = full
        .iter()
        .zip(keep)
        .map(|(&p, k)| if k { p / s } else { 0.0 })
        .collect();
    assert_matches(&frequencies(&l, 1.0, 3, 1.0, 2), &want, "top_k=3");
    // top_k = 1 is greedy.
    assert_matches(
        &frequencies(&l, 1.0, 1, 1.0, 3),
        &[0.0, 0.0, 1.0, 0.0, 0.0],
        "top_k=1",
    );
}

#[test]
fn top_p_keeps_the_smallest_nucleus() {
    let l = logits4();
    // 0.5 < 0.7 <= 0.5 + 0.3: keep two tokens.
    assert_matches(
        &frequencies(&l, 1.0, 0, 0.7, 4),
        &[0.625, 0.375, 0.0, 0.0],
        "top_p=0.7",
    );
    assert_matches(
        &frequencies(&l, 1.0, 0, 0.45, 5),
        &[1.0, 0.0, 0.0, 0.0],
        "top_p=0.45",
    );
    assert_matches(
        &frequencies(&l, 1.0, 0, 0.9, 6),
        &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
        "top_p=0.9",
    );
    // Combined with top_k: top 3 first (0.5, 0.3, 0.15 renormalised), then p.
    assert_matches(
        &frequencies(&l, 1.0, 3, 0.8, 7),
        &[0.625, 0.375, 0.0, 0.0],
        "top_k=3 top_p=0.8",
    );
}

#[test]
fn masked_tokens_are_never_drawn_and_seed_fixes_the_sequence() {
    let l = [f32::NEG_INFINITY, 0.0, 0.0, f32::NEG_INFINITY];
    assert_matches(
        &frequencies(&l, 1.0, 0, 1.0, 8),
        &[0.0, 0.5, 0.5, 0.0],
        "masked",
    );
    let draw = |seed| {
        let mut rng = Rng::new(seed);
        let mut s = vec![Candidate::default(); 4];
        (0..64)
            .map(|_| sample(&logits4(), 0.8, 3, 0.95, &mut rng, &mut s).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(11), draw(11));
    assert_ne!(draw(11), draw(12));
}
