//! Benchmarks of the portable kernels and of a full training step, printing
//! figures (not assertions). Ignored by default; run with
//! `cargo test --release -p cllm-core --test model_bench -- --ignored --nocapture --test-threads 1`.

use std::hint::black_box;
use std::time::Instant;

use cllm_core::kernels::{Kernels, Mat, MatMut, Portable};
use cllm_core::model::{self, GptConfig};
use cllm_core::rng::Rng;

/// Median of `reps` timings of `f`, in seconds.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut ts: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(|a, b| a.total_cmp(b));
    ts[reps / 2]
}

#[test]
#[ignore]
fn bench_gemm_f32() {
    let mut r = Rng::new(1);
    println!("portable gemm, f32, single thread (median of 7):");
    // (m, k, n, B transposed, A transposed): the shapes of one training step
    // with BT = 512, C = 128: forward, dinp = dout·Wᵀ, dW = inpᵀ·dout.
    for &(m, k, n, tb, ta, what) in &[
        (512, 128, 384, false, false, "fwd  inp·W      (c_attn)"),
        (512, 128, 512, false, false, "fwd  inp·W      (c_fc)"),
        (512, 512, 128, false, false, "fwd  inp·W      (mlp c_proj)"),
        (512, 512, 128, true, false, "bwd  dout·Wᵀ    (c_fc dinp)"),
        (128, 512, 512, false, true, "bwd  inpᵀ·dout  (c_fc dW)"),
        (512, 128, 65, true, false, "fwd  x·wteᵀ     (logits)"),
    ] {
        let a: Vec<f32> = (0..m * k).map(|_| r.normal() as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|_| r.normal() as f32).collect();
        let mut c = vec![0.0f32; m * n];
        let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
        let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
        let (a, b) = (Mat::new(&a, m, k, rsa, csa), Mat::new(&b, k, n, rsb, csb));
        let s = time(7, || {
            Portable.gemm(a, b, MatMut::row_major(&mut c, m, n), false);
            black_box(&c);
        });
        println!(
            "  {what:<30} {m:>4}x{k:>4}x{n:>4}: {:>7.3} ms  {:>6.2} GFLOP/s",
            s * 1e3,
            2.0 * (m * k * n) as f64 / s / 1e9
        );
    }
}

#[test]
#[ignore]
fn bench_train_step_f32() {
    for (cfg, b, t) in [
        (
            GptConfig {
                vocab_size: 65,
                n_positions: 128,
                n_embd: 128,
                n_layer: 4,
                n_head: 4,
                untied_head: false,
            },
            4,
            128,
        ),
        (
            GptConfig {
                vocab_size: 65,
                n_positions: 256,
                n_embd: 384,
                n_layer: 6,
                n_head: 6,
                untied_head: false,
            },
            1,
            256,
        ),
    ] {
        let mut p = vec![0.0f32; cfg.num_params()];
        model::init_params(&cfg, &mut p, 1).unwrap();
        let mut g = vec![0.0f32; cfg.num_params()];
        let mut w = vec![0.0f32; cfg.activation_len(b, t)];
        let mut r = Rng::new(2);
        let toks: Vec<u32> = (0..b * t)
            .map(|_| r.below(cfg.vocab_size as u64) as u32)
            .collect();
        let tg: Vec<u32> = (0..b * t)
            .map(|_| r.below(cfg.vocab_size as u64) as u32)
            .collect();
        let k = Portable;
        let fwd = time(5, || {
            black_box(model::forward(&k, &cfg, &p, &mut w, &toks, Some(&tg), b, t).unwrap());
        });
        let step = time(5, || {
            model::forward(&k, &cfg, &p, &mut w, &toks, Some(&tg), b, t).unwrap();
            model::backward(&k, &cfg, &p, &mut g, &mut w, &toks, &tg, b, t).unwrap();
        });
        // Matmul FLOPs: 24·BT·C² per block + causal attention 2·B·T²·C, head 2·BT·C·V;
        // backward ≈ 2× forward.
        let (c, l, v, bt) = (
            cfg.n_embd as f64,
            cfg.n_layer as f64,
            cfg.vocab_size as f64,
            (b * t) as f64,
        );
        let fwd_flops =
            l * (24.0 * bt * c * c + 2.0 * b as f64 * (t * t) as f64 * c) + 2.0 * bt * c * v;
        println!(
            "{cfg:?} B={b} T={t}: {} params, workspace {:.1} MiB (f32)\n  forward {:.1} ms ({:.2} GFLOP/s), forward+backward {:.1} ms ({:.2} GFLOP/s, {:.0} tokens/s)",
            cfg.num_params(),
            cfg.activation_len(b, t) as f64 * 4.0 / (1 << 20) as f64,
            fwd * 1e3,
            fwd_flops / fwd / 1e9,
            step * 1e3,
            3.0 * fwd_flops / step / 1e9,
            bt / step
        );
    }
}
