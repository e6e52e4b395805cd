//! The per-segment optimizer update equals the whole-vector update bit for
//! bit, for any segmentation (including segments that straddle tensors and
//! empty ones), over several steps, for AdamW and SGD.

use cllm_core::model::GptConfig;
use cllm_core::optim::{AdamW, LrSchedule, Sgd};
use cllm_core::rng::Rng;

const CFG: GptConfig = GptConfig {
    vocab_size: 37,
    n_positions: 16,
    n_embd: 16,
    n_layer: 3,
    n_head: 2,
    untied_head: false,
};

fn randn(r: &mut Rng, n: usize, s: f64) -> Vec<f32> {
    (0..n).map(|_| (r.normal() * s) as f32).collect()
}

/// Random cut points: segment boundaries anywhere, some repeated (empty segments).
fn random_cuts(r: &mut Rng, n: usize, pieces: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..pieces - 1)
        .map(|_| r.below(n as u64 + 1) as usize)
        .collect();
    cuts.push(0);
    cuts.push(n);
    cuts.push(cuts[0]); // a guaranteed empty segment
    cuts.sort_unstable();
    cuts
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn adamw_segmented_equals_whole_bitwise() {
    let n = CFG.num_params();
    let opt = AdamW {
        lr: 3e-3,
        weight_decay: 0.1,
        ..AdamW::default()
    };
    let sched = LrSchedule {
        max_lr: 3e-3,
        min_lr: 3e-4,
        warmup_steps: 2,
        total_steps: 6,
    };
    let mut r = Rng::new(1);
    let p0 = randn(&mut r, n, 0.5);
    for (trial, pieces) in [1usize, 2, 7, 13, 64, 500].into_iter().enumerate() {
        let (mut pw, mut mw, mut vw) = (p0.clone(), vec![0.0f32; n], vec![0.0f32; n]);
        let (mut ps, mut ms, mut vs) = (p0.clone(), vec![0.0f32; n], vec![0.0f32; n]);
        for step in 1..=6u64 {
            let g = randn(&mut r, n, 1.0);
            let (lr, scale) = (sched.lr(step - 1), 0.75);
            opt.update_segment(&CFG, 0..n, &mut pw, &g, &mut mw, &mut vw, step, lr, scale)
                .unwrap();
            let cuts = random_cuts(&mut r, n, pieces);
            for w in cuts.windows(2) {
                let s = w[0]..w[1];
                let (p, m, v) = (&mut ps[s.clone()], &mut ms[s.clone()], &mut vs[s.clone()]);
                opt.update_segment(&CFG, s.clone(), p, &g[s], m, v, step, lr, scale)
                    .unwrap();
            }
            assert!(
                same_bits(&pw, &ps),
                "trial {trial}, step {step}: params differ"
            );
            assert!(
                same_bits(&mw, &ms) && same_bits(&vw, &vs),
                "trial {trial}, step {step}: state differs"
            );
        }
        assert!(!same_bits(&pw, &p0), "the update must change something");
    }
}

#[test]
fn sgd_segmented_equals_whole_bitwise() {
    let n = CFG.num_params();
    let mut r = Rng::new(2);
    let p0 = randn(&mut r, n, 0.5);
    for opt in [
        Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
        },
        Sgd {
            lr: 0.1,
            momentum: 0.0,
            weight_decay: 0.01,
        },
    ] {
        let blen = opt.state_len(&CFG);
        let (mut pw, mut bw) = (p0.clone(), vec![0.0f32; blen]);
        let (mut ps, mut bs) = (p0.clone(), vec![0.0f32; blen]);
        for _ in 0..4 {
            let g = randn(&mut r, n, 1.0);
            opt.update_segment(&CFG, 0..n, &mut pw, &g, &mut bw, opt.lr, 1.0)
                .unwrap();
            for w in random_cuts(&mut r, n, 9).windows(2) {
                let s = w[0]..w[1];
                let b = if blen > 0 {
                    &mut bs[s.clone()]
                } else {
                    &mut bs[..]
                };
                opt.update_segment(&CFG, s.clone(), &mut ps[s.clone()], &g[s], b, opt.lr, 1.0)
                    .unwrap();
            }
            assert!(same_bits(&pw, &ps) && same_bits(&bw, &bs), "{opt:?}");
        }
    }
}

/// With zero gradients only weight decay acts, so exactly the 2-D weight
/// matrices move (wte, c_attn, attn.c_proj, c_fc, mlp.c_proj), and a segment
/// straddling a decayed and a non-decayed tensor applies each rule to its part.
#[test]
fn weight_decay_touches_only_weight_matrices() {
    let n = CFG.num_params();
    let opt = AdamW {
        weight_decay: 0.5,
        ..AdamW::default()
    };
    let p0 = vec![1.0f32; n];
    let mut p = p0.clone();
    let (g, mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    // Two segments cut in the middle of block 0's c_attn.weight.
    let mid = CFG
        .tensors()
        .find(|t| t.to_string() == "transformer.h.0.attn.c_attn.weight")
        .unwrap()
        .offset
        + 5;
    for s in [0..mid, mid..n] {
        opt.update_segment(
            &CFG,
            s.clone(),
            &mut p[s.clone()],
            &g[s.clone()],
            &mut m[s.clone()],
            &mut v[s],
            1,
            0.1,
            1.0,
        )
        .unwrap();
    }
    for t in CFG.tensors() {
        let moved = p[t.range()].iter().all(|&x| x == 1.0 - 0.1 * 0.5);
        let still = p[t.range()].iter().all(|&x| x == 1.0);
        assert!(
            if t.weight_decay { moved } else { still },
            "{t}: decay {}",
            t.weight_decay
        );
    }
}
