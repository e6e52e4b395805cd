//! Accumulation throughput of every accumulator against a plain memcpy.
//!
//! ```text
//! cargo run --release -p cllm-std --example bench_accumulate [-- quick] [-- cpu]
//! cargo run --release -p cllm-std --features bigfloat --example bench_accumulate
//! ```
//!
//! `cpu` times each pass by the on-CPU time of the slowest worker thread
//! (`CLOCK_THREAD_CPUTIME_ID`) instead of wall-clock time, so that
//! other processes on a shared machine do not count; they still compete for
//! caches and memory bandwidth.
//!
//! Figures are GB/s of gradient *input* (4 bytes per `f32` element and
//! input, for merges and rounds too), so rows are comparable: a row at half
//! the memcpy figure takes twice as long per element. Each figure is the best
//! of 5 timed runs of enough passes to take about 0.3 s; threads split the
//! vector into contiguous chunks (`std::thread::scope`), one per thread.
//!
//! | column | operation |
//! |---|---|
//! | `add` | `cells += x` |
//! | `assign` | `cells = x` (first gradient of a step, no zeroing pass) |
//! | `many6` | `cells = x1 + … + x6` in one `assign_many` call (6 inputs per element) |
//! | `merge` | `dst += src` (cells) |
//! | `round` | `out = f32(cells)` (once per step) |
//! | `sumr2` | `out = f32(a + b)`, two cell buffers merged and rounded by one `sum_round` |
//! | `sum6` | `out = f32(x1 + … + x6)` by one `sum_round`, no cells (6 inputs per element) |
//!
//! `f32` and `fixed` use the trait's default `assign_many` (zero, then add
//! one input after the other), as does `f32` for `sum_round` (one element at
//! a time through a scratch cell, so its `sumr2`/`sum6` are not meaningful).

use std::hint::black_box;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use cllm_core::accumulate::{Accumulator, ExactAcc, F32Acc, FixedAcc};

/// Timed runs per figure; the best is reported (the machine may be shared).
const RUNS: usize = 5;

/// Time by on-CPU time of the worker threads instead of wall-clock time.
static CPU_TIME: AtomicBool = AtomicBool::new(false);

/// Nanoseconds this thread has spent on a CPU, if the platform says.
fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Run `run(passes)` (which returns the seconds it took) with `passes`
/// calibrated by wall clock to about 0.3 s; best of [`RUNS`].
fn gbps(bytes: usize, mut run: impl FnMut(usize) -> f64) -> f64 {
    let t = Instant::now();
    run(1);
    let once = t.elapsed().as_secs_f64();
    let passes = ((0.3 / once).ceil() as usize).clamp(1, 100_000);
    let mut best = f64::INFINITY;
    for _ in 0..RUNS {
        best = best.min(run(passes) / passes as f64);
    }
    bytes as f64 / best / 1e9
}

/// `work(dst_chunk, range)` `passes` times on each of `threads` threads,
/// thread `i` owning the `i`-th contiguous chunk of `dst` (at `range`).
/// Returns the seconds taken: wall-clock, or the slowest thread's on-CPU
/// time (see [`CPU_TIME`]).
fn on_chunks<D: Send>(
    threads: usize,
    passes: usize,
    dst: &mut [D],
    work: &(impl Fn(&mut [D], Range<usize>) + Sync),
) -> f64 {
    let chunk = dst.len().div_ceil(threads).max(1);
    let cpu = CPU_TIME.load(Ordering::Relaxed);
    let wall = Instant::now();
    let slowest = thread::scope(|s| {
        let handles: Vec<_> = dst
            .chunks_mut(chunk)
            .enumerate()
            .map(|(i, d)| {
                s.spawn(move || {
                    let range = i * chunk..i * chunk + d.len();
                    let start = thread_cpu_ns();
                    for _ in 0..passes {
                        work(d, range.clone());
                        black_box(&mut *d);
                    }
                    Some(thread_cpu_ns()? - start?)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .try_fold(0u64, |m, t| Some(m.max(t?)))
    });
    match slowest {
        Some(ns) if cpu => ns as f64 * 1e-9,
        _ => wall.elapsed().as_secs_f64(),
    }
}

/// [`on_chunks`] with `work(dst_chunk, src_chunk)`.
fn on_threads<D: Send, S: Sync>(
    threads: usize,
    passes: usize,
    dst: &mut [D],
    src: &[S],
    work: &(impl Fn(&mut [D], &[S]) + Sync),
) -> f64 {
    on_chunks(threads, passes, dst, &|d, r| work(d, &src[r]))
}

/// Gradient-like inputs: signed, magnitudes spread over 2^-24 .. 1.
fn gradients(n: usize, seed: u64) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0xff51_afd7_ed55_8ccd);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            u * f32::from_bits((127 - (s % 24) as u32) << 23)
        })
        .collect()
}

/// Inputs of the fused columns: the unit gradients of one step, i.e. for
/// each element a typical magnitude (that of `xs`) times a random factor in
/// `(-1, 1)` per unit.
fn units(xs: &[f32], n: usize) -> Vec<Vec<f32>> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            xs.iter()
                .map(|&x| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    x * ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
                })
                .collect()
        })
        .collect()
}

/// Inputs per element of the `many6` and `sum6` columns.
const FUSED: usize = 6;

struct Row {
    kind: &'static str,
    add: f64,
    assign: f64,
    many: f64,
    merge: f64,
    round: f64,
    sum_cells: f64,
    sum_inputs: f64,
}

/// [`on_chunks`] with `work(dst_chunk, input_chunks)` for `FUSED` inputs.
fn on_threads_many<D: Send>(
    threads: usize,
    passes: usize,
    dst: &mut [D],
    inputs: &[&[f32]; FUSED],
    work: &(impl Fn(&mut [D], &[&[f32]]) + Sync),
) -> f64 {
    on_chunks(threads, passes, dst, &|d, r| {
        work(d, &inputs.map(|x| &x[r.clone()]))
    })
}

/// Throughput of every operation of one accumulator.
fn bench_kind<A: Accumulator>(acc: &A, xs: &[f32], us: &[&[f32]; FUSED], threads: usize) -> Row
where
    A::Cell: Clone,
{
    let bytes = xs.len() * 4;
    let mut cells = vec![acc.zero_cell(); xs.len()];
    let add = gbps(bytes, |passes| {
        on_threads(threads, passes, &mut cells, xs, &|c, x| {
            acc.add(c, x).unwrap()
        })
    });
    let assign = gbps(bytes, |passes| {
        on_threads(threads, passes, &mut cells, xs, &|c, x| {
            acc.assign(c, x).unwrap()
        })
    });
    let many = gbps(bytes * FUSED, |passes| {
        on_threads_many(threads, passes, &mut cells, us, &|c, x| {
            acc.assign_many(c, x).unwrap()
        })
    });
    // Merge a buffer that holds one pass of the inputs.
    let mut src = vec![acc.zero_cell(); xs.len()];
    acc.add(&mut src, xs).unwrap();
    acc.zero(&mut cells);
    let merge = gbps(bytes, |passes| {
        on_threads(threads, passes, &mut cells, &src, &|d, s| {
            acc.merge(d, s).unwrap()
        })
    });
    let mut out = vec![0.0f32; xs.len()];
    let round = gbps(bytes, |passes| {
        on_threads(threads, passes, &mut out, &src, &|o, c| {
            acc.round(c, o).unwrap()
        })
    });
    // The end of a step with two workers: both accumulators merged and rounded.
    acc.assign_many(&mut cells, us).unwrap();
    let sum_cells = gbps(bytes, |passes| {
        on_chunks(threads, passes, &mut out, &|o, r| {
            acc.sum_round(&[&cells[r.clone()], &src[r]], &[], o)
                .unwrap()
        })
    });
    drop((cells, src));
    let sum_inputs = gbps(bytes * FUSED, |passes| {
        on_threads_many(threads, passes, &mut out, us, &|o, x| {
            acc.sum_round(&[], x, o).unwrap()
        })
    });
    Row {
        kind: acc.name(),
        add,
        assign,
        many,
        merge,
        round,
        sum_cells,
        sum_inputs,
    }
}

fn bench_size(len: usize, threads: usize, bigfloat_len: usize) -> Vec<Row> {
    let xs = gradients(len, 0);
    let us = units(&xs, FUSED);
    let us: [&[f32]; FUSED] = std::array::from_fn(|j| &us[j][..]);
    let mut dst = vec![0.0f32; len];
    let copy = gbps(len * 4, |passes| {
        on_threads(threads, passes, &mut dst, &xs, &|d, s| d.copy_from_slice(s))
    });
    let mut rows = vec![Row {
        kind: "memcpy",
        add: copy,
        assign: copy,
        many: copy,
        merge: copy,
        round: copy,
        sum_cells: copy,
        sum_inputs: copy,
    }];
    rows.push(bench_kind(&F32Acc, &xs, &us, threads));
    rows.push(bench_kind(&FixedAcc::default(), &xs, &us, threads));
    rows.push(bench_kind(&ExactAcc, &xs, &us, threads));
    #[cfg(feature = "bigfloat")]
    {
        use cllm_core::accumulate::BigFloatAcc;
        let acc = BigFloatAcc::new(BigFloatAcc::EXACT_PRECISION).unwrap();
        let n = bigfloat_len.min(len);
        let us: [&[f32]; FUSED] = std::array::from_fn(|j| &us[j][..n]);
        rows.push(bench_kind(&acc, &xs[..n], &us, threads));
    }
    let _ = bigfloat_len;
    rows
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let cpu = std::env::args().any(|a| a == "cpu") && thread_cpu_ns().is_some();
    CPU_TIME.store(cpu, Ordering::Relaxed);
    let all = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let sizes: &[(usize, &str)] = if quick {
        &[
            (1 << 20, "1 Mi f32 (4 MiB)"),
            (1 << 16, "64 Ki f32 (256 KiB)"),
        ]
    } else {
        &[
            (16 << 20, "16 Mi f32 (64 MiB)"),
            (256 << 10, "256 Ki f32 (1 MiB)"),
        ]
    };
    let mut threads = vec![1];
    if all > 1 {
        threads.push(all);
    }
    println!(
        "accumulation throughput, GB/s of f32 gradient input (4 B/element), best of {RUNS}, timed by {}",
        if cpu { "on-CPU time of the slowest thread" } else { "wall clock" }
    );
    #[cfg(feature = "bigfloat")]
    println!(
        "bigfloat: precision {} bits, on at most 1 Mi elements",
        cllm_core::accumulate::BigFloatAcc::EXACT_PRECISION
    );
    println!();
    println!(
        "{:<22} {:>7} {:<9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "size", "threads", "kind", "add", "assign", "many6", "merge", "round", "sumr2", "sum6"
    );
    for &(len, label) in sizes {
        for &t in &threads {
            let rows = bench_size(len, t, 1 << 20);
            for r in &rows {
                println!(
                    "{:<22} {:>7} {:<9} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                    label,
                    t,
                    r.kind,
                    r.add,
                    r.assign,
                    r.many,
                    r.merge,
                    r.round,
                    r.sum_cells,
                    r.sum_inputs
                );
            }
            let get = |k: &str| rows.iter().find(|r| r.kind == k).unwrap();
            let (copy, f32r, exact) = (get("memcpy"), get("f32"), get("exact"));
            println!(
                "{:<22} {:>7} ratios: f32/memcpy add {:.2} merge {:.2}; exact slowdown vs f32: \
                 add {:.2}x merge {:.2}x, 6 gradients {:.2}x (many6) {:.2}x (sum6 vs f32 many6)",
                label,
                t,
                f32r.add / copy.add,
                f32r.merge / copy.merge,
                f32r.add / exact.add,
                f32r.merge / exact.merge,
                f32r.many / exact.many,
                f32r.many / exact.sum_inputs
            );
        }
    }
}
