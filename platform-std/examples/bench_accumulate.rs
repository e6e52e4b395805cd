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
//! Figures are GB/s of gradient *input* (4 bytes per `f32` element, for
//! merges too), so rows are comparable: a row at half the memcpy figure takes
//! twice as long per element. Each figure is the best of 5 timed runs of
//! enough passes to take about 0.3 s; threads split the vector into
//! contiguous chunks (`std::thread::scope`), one per thread. `round` is the
//! final conversion of the cells to `f32` (once per step).

use std::hint::black_box;
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

/// `work(dst_chunk, src_chunk)` `passes` times on each of `threads` threads,
/// thread `i` owning the `i`-th contiguous chunk. Returns the seconds taken:
/// wall-clock, or the slowest thread's on-CPU time (see [`CPU_TIME`]).
fn on_threads<D: Send, S: Sync>(
    threads: usize,
    passes: usize,
    dst: &mut [D],
    src: &[S],
    work: &(impl Fn(&mut [D], &[S]) + Sync),
) -> f64 {
    let chunk = dst.len().div_ceil(threads).max(1);
    let cpu = CPU_TIME.load(Ordering::Relaxed);
    let wall = Instant::now();
    let slowest = thread::scope(|s| {
        let handles: Vec<_> = dst
            .chunks_mut(chunk)
            .zip(src.chunks(chunk))
            .map(|(d, x)| {
                s.spawn(move || {
                    let start = thread_cpu_ns();
                    for _ in 0..passes {
                        work(d, x);
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

/// Gradient-like inputs: signed, magnitudes spread over 2^-24 .. 1.
fn gradients(n: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
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

struct Row {
    kind: &'static str,
    add: f64,
    merge: f64,
    round: f64,
}

/// Add, merge and round throughput of one accumulator.
fn bench_kind<A: Accumulator>(acc: &A, xs: &[f32], threads: usize) -> Row
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
    Row {
        kind: acc.name(),
        add,
        merge,
        round,
    }
}

fn bench_size(len: usize, threads: usize, bigfloat_len: usize) -> Vec<Row> {
    let xs = gradients(len);
    let mut dst = vec![0.0f32; len];
    let copy = gbps(len * 4, |passes| {
        on_threads(threads, passes, &mut dst, &xs, &|d, s| d.copy_from_slice(s))
    });
    let mut rows = vec![Row {
        kind: "memcpy",
        add: copy,
        merge: copy,
        round: copy,
    }];
    rows.push(bench_kind(&F32Acc, &xs, threads));
    rows.push(bench_kind(&FixedAcc::default(), &xs, threads));
    rows.push(bench_kind(&ExactAcc, &xs, threads));
    #[cfg(feature = "bigfloat")]
    {
        use cllm_core::accumulate::BigFloatAcc;
        let acc = BigFloatAcc::new(BigFloatAcc::EXACT_PRECISION).unwrap();
        rows.push(bench_kind(&acc, &xs[..bigfloat_len.min(len)], threads));
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
        "{:<22} {:>7} {:<9} {:>9} {:>9} {:>9}",
        "size", "threads", "kind", "add", "merge", "round"
    );
    for &(len, label) in sizes {
        for &t in &threads {
            let rows = bench_size(len, t, 1 << 20);
            for r in &rows {
                println!(
                    "{:<22} {:>7} {:<9} {:>9.2} {:>9.2} {:>9.2}",
                    label, t, r.kind, r.add, r.merge, r.round
                );
            }
            let get = |k: &str| rows.iter().find(|r| r.kind == k).unwrap();
            let (copy, f32r, exact) = (get("memcpy"), get("f32"), get("exact"));
            println!(
                "{:<22} {:>7} ratios: f32/memcpy add {:.2} merge {:.2}; exact slowdown vs f32 add {:.2}x merge {:.2}x",
                label,
                t,
                f32r.add / copy.add,
                f32r.merge / copy.merge,
                f32r.add / exact.add,
                f32r.merge / exact.merge
            );
        }
    }
}
