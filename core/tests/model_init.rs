//! Initialisation and the RNG behind it: reproducible bits, GPT-2 statistics,
//! and pinned generator outputs so a platform or dependency change that
//! alters the stream is caught.

use cllm_core::model::{self, GptConfig, TensorKind};
use cllm_core::rng::{Rng, SplitMix64};

/// SplitMix64's published test vector (seed 1234567).
#[test]
fn splitmix64_matches_reference_vector() {
    let mut s = SplitMix64::new(1234567);
    let want = [
        6457827717110365317u64,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ];
    for w in want {
        assert_eq!(s.next_u64(), w);
    }
}

/// xoshiro256** seeded by SplitMix64: values from an independent Python
/// implementation of the reference algorithms.
#[test]
fn xoshiro_stream_is_pinned() {
    let pinned: [(u64, [u64; 4]); 2] = [
        (
            0,
            [
                0x99ec5f36cb75f2b4,
                0xbf6e1f784956452a,
                0x1a5f849d4933e6e0,
                0x6aa594f1262d2d2c,
            ],
        ),
        (
            42,
            [
                0x15780b2e0c2ec716,
                0x6104d9866d113a7e,
                0xae17533239e499a1,
                0xecb8ad4703b360a1,
            ],
        ),
    ];
    for (seed, want) in pinned {
        let mut r = Rng::new(seed);
        for w in want {
            assert_eq!(r.next_u64(), w, "seed {seed}");
        }
    }
}

/// Box–Muller normals: the Python reference (platform libm) agrees to a few
/// ulps; the exact bits of our libm-based values are pinned as well.
#[test]
fn normal_stream_is_pinned() {
    let python = [
        -0.303263064678738f64,
        0.28846173882942383,
        1.3438117634372806,
        -0.6879751798977497,
    ];
    let bits: [u64; 4] = PINNED_NORMAL_BITS;
    let mut r = Rng::new(42);
    for (i, (&p, &b)) in python.iter().zip(&bits).enumerate() {
        let z = r.normal();
        assert!(
            (z - p).abs() <= 4.0 * f64::EPSILON * p.abs(),
            "normal {i}: {z} vs python {p}"
        );
        assert_eq!(
            z.to_bits(),
            b,
            "normal {i}: {z:e} has bits {:#x}",
            z.to_bits()
        );
    }
}

/// Bits of the first four `Rng::new(42).normal()` values with Rust `libm`.
/// The first three equal the Python (glibc) reference bit for bit; the fourth
/// is 1 ulp away (glibc's `sin` rounds differently), which is exactly why the
/// core never calls the platform's math library.
const PINNED_NORMAL_BITS: [u64; 4] = [
    0xbfd368a97c38507c,
    0x3fd27628399adbda,
    0x3ff58040c37f1762,
    0xbfe603e48643db90,
];

const CFG: GptConfig = GptConfig {
    vocab_size: 512,
    n_positions: 64,
    n_embd: 64,
    n_layer: 4,
    n_head: 4,
    untied_head: false,
};

fn init<R: cllm_core::real::Real>(seed: u64) -> Vec<R> {
    let mut p = vec![R::ZERO; CFG.num_params()];
    model::init_params(&CFG, &mut p, seed).unwrap();
    p
}

#[test]
fn same_seed_same_bits_different_seed_different_weights() {
    let (a, b, c) = (init::<f32>(1), init::<f32>(1), init::<f32>(2));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    let differing = a.iter().zip(&c).filter(|(x, y)| x != y).count();
    let random: usize = CFG
        .tensors()
        .filter(|t| t.kind.weight_decay() || t.kind == TensorKind::Wpe)
        .map(|t| t.len)
        .sum();
    assert_eq!(
        differing, random,
        "every random element should differ between seeds"
    );
    // The f32 init is the f64 init rounded.
    let d = init::<f64>(1);
    assert!(a.iter().zip(&d).all(|(&x, &y)| x == y as f32));
    // First wte values = 0.02 · the pinned normals.
    let mut r = Rng::new(1);
    for &x in &d[..4] {
        assert_eq!(x, r.normal() * 0.02);
    }
}

#[test]
fn init_follows_gpt2() {
    let p = init::<f64>(7);
    let proj_std = 0.02 / (2.0 * CFG.n_layer as f64).sqrt();
    let (mut big, mut big_n) = ((0.0, 0.0), 0usize);
    let (mut proj, mut proj_n) = ((0.0, 0.0), 0usize);
    for t in CFG.tensors() {
        let s = &p[t.range()];
        match t.kind {
            TensorKind::Ln1Weight | TensorKind::Ln2Weight | TensorKind::LnfWeight => {
                assert!(s.iter().all(|&x| x == 1.0), "{t}")
            }
            TensorKind::AttnProjWeight | TensorKind::MlpProjWeight => {
                for &x in s {
                    proj.0 += x;
                    proj.1 += x * x;
                }
                proj_n += s.len();
            }
            TensorKind::Wte
            | TensorKind::LmHead
            | TensorKind::Wpe
            | TensorKind::AttnWeight
            | TensorKind::FcWeight => {
                for &x in s {
                    big.0 += x;
                    big.1 += x * x;
                }
                big_n += s.len();
            }
            _ => assert!(s.iter().all(|&x| x == 0.0), "{t} should be zero"),
        }
    }
    let stats = |(s1, s2): (f64, f64), n: usize| {
        (
            s1 / n as f64,
            (s2 / n as f64 - (s1 / n as f64).powi(2)).sqrt(),
        )
    };
    let (m, sd) = stats(big, big_n);
    println!("std 0.02 tensors: n {big_n}, mean {m:.2e}, std {sd:.5}");
    assert!(
        m.abs() < 1e-3 && (sd / 0.02 - 1.0).abs() < 0.01,
        "mean {m}, std {sd}"
    );
    let (m, sd) = stats(proj, proj_n);
    println!("residual projections: n {proj_n}, mean {m:.2e}, std {sd:.6} (want {proj_std:.6})");
    assert!(
        m.abs() < 1e-3 && (sd / proj_std - 1.0).abs() < 0.02,
        "mean {m}, std {sd}"
    );
}

#[test]
fn init_rejects_wrong_length() {
    let mut p = vec![0.0f32; CFG.num_params() + 1];
    assert!(model::init_params(&CFG, &mut p, 1).is_err());
}
