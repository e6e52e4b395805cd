//! The machine's measured FMA peak: the ceiling the benchmarks quote their
//! fraction of (`bench_train` prints it next to "% of FMA peak").
//!
//! A loop of independent vector FMAs (12 chains, more than latency ×
//! ports on the cores we run on), no loads or stores, on `threads` threads
//! at once, so that two hyper-threads of one core, or two vCPUs that share
//! one, show up as the single core's peak they are.

use std::time::{Duration, Instant};

#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
use super::simd::Vf32;
use super::Isa;

/// Independent accumulation chains.
const CHAINS: usize = 12;

/// FMAs per chain per call of the inner loop.
const ITERS: usize = 1 << 14;

/// Run the loop; returns the FLOPs it did.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
unsafe fn chains<V: Vf32>(iters: usize) -> f64 {
    // SAFETY (all below): register-only arithmetic on the caller's ISA.
    let mut acc = [unsafe { V::splat(0.0) }; CHAINS];
    let (a, b) = unsafe { (V::splat(0.999_999), V::splat(1e-7)) };
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = unsafe { x.mul_add(a, b) };
        }
    }
    // Keep the result alive so the loop is not removed.
    let mut out = [0.0f32; 16];
    let mut s = 0.0f32;
    for x in acc {
        unsafe { x.store(out.as_mut_ptr()) };
        s += out[0];
    }
    std::hint::black_box(s);
    (2 * V::LANES * CHAINS * iters) as f64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(iters: usize) -> f64 {
    unsafe { chains::<super::x86::V256>(iters) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn chains_avx512(iters: usize) -> f64 {
    unsafe { chains::<super::x86::V512>(iters) }
}

/// FLOPs of one inner loop on `isa`, or None where it has no FMA path.
fn one(isa: Isa) -> Option<f64> {
    if !isa.supported() {
        return None;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => Some(unsafe { chains_avx2(ITERS) }),
        // AMX products run on tiles, everything else on AVX-512.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Amx => Some(unsafe { chains_avx512(ITERS) }),
        _ => None,
    }
}

/// Measured f32 FMA peak of `isa` in GFLOP/s (an FMA counts as 2 FLOPs)
/// with `threads` threads running at once for about `time`; None for
/// [`Isa::Scalar`] (the portable kernels use no FMA). Each thread times
/// many short bursts and reports its median rate, so a moment when another
/// job takes the core or the other thread is not running yet does not
/// count; the figure is the sum over the threads.
pub fn fma_peak_gflops(isa: Isa, threads: usize, time: Duration) -> Option<f64> {
    one(isa)?;
    let threads = threads.max(1);
    let per_thread: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    // Warm the units up (AVX-512 licence), then time.
                    one(isa);
                    let (start, mut rates) = (Instant::now(), Vec::with_capacity(4096));
                    while start.elapsed() < time {
                        let t = Instant::now();
                        let flops = one(isa).unwrap_or(0.0);
                        rates.push(flops / t.elapsed().as_secs_f64());
                    }
                    rates.sort_by(f64::total_cmp);
                    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0.0)).collect()
    });
    Some(per_thread.iter().sum::<f64>() / 1e9)
}
