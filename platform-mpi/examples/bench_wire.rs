//! Cost of the integer wire formats per gradient element (no MPI traffic):
//! `cargo run --release -p cllm-mpi --example bench_wire`.
//! Reports the best of several repetitions (the machine may be shared).

use std::time::Instant;

use cllm_core::accumulate::{Accumulator, ExactAcc, ExactCell};
use cllm_std::dist::wire::{ExactWindow, FixedWire};

fn best<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let n = 1 << 20;
    let mut seed = 0x1234_5678u64;
    let mut cells = vec![ExactCell::ZERO; n];
    for _ in 0..4 {
        let xs: Vec<f32> = (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1e-2
            })
            .collect();
        ExactAcc.add(&mut cells, &xs).unwrap();
    }
    let ns = |s: f64| s * 1e9 / n as f64;
    let t_need = best(5, || {
        std::hint::black_box(ExactWindow::need(&cells));
    });
    let w = ExactWindow::agree(ExactWindow::need(&cells));
    let mut lanes = vec![0i64; n * w.lanes()];
    let t_enc = best(5, || w.encode(&cells, &mut lanes));
    let mut out = vec![ExactCell::ZERO; n];
    let t_dec = best(5, || w.decode(&lanes, &mut out).unwrap());
    assert_eq!(out, cells);
    println!(
        "exact: {} lanes; need {:.2} ns/cell, encode {:.2} ns/cell, decode {:.2} ns/cell",
        w.lanes(),
        ns(t_need),
        ns(t_enc),
        ns(t_dec)
    );
    let fixed: Vec<i64> = (0..n as i64)
        .map(|i| (i * 7919) % 100_000 - 50_000)
        .collect();
    let t_need = best(5, || {
        std::hint::black_box(FixedWire::need(&fixed));
    });
    let mut lanes = vec![0i64; 2 * n];
    let t_enc = best(5, || FixedWire::Split.encode(&fixed, &mut lanes));
    let mut out = vec![0i64; n];
    let t_dec = best(5, || FixedWire::Split.decode(&lanes, &mut out).unwrap());
    assert_eq!(out, fixed);
    println!(
        "fixed: need {:.2} ns/cell, split encode {:.2} ns/cell, split decode {:.2} ns/cell",
        ns(t_need),
        ns(t_enc),
        ns(t_dec)
    );
}
