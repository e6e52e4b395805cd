//! GEMM and elementwise kernel benchmark: GFLOP/s per model shape for each
//! candidate side by side, and ns/element for the elementwise kernels.
//!
//!     cargo run --release -p cllm-std --example bench_gemm [-- --quick] [-- --filter TEXT]
//!
//! Candidates are timed interleaved, round after round, so that load from
//! other processes hits them alike; the table shows the best and the median
//! round. Times are this thread's CPU time (Linux; wall time elsewhere), so
//! being descheduled on a shared machine does not count, though sharing the
//! core's caches still does. All runs are single-threaded.

use cllm_core::kernels::{Kernels, Mat, MatMut};
use cllm_std::kernels::{fma_peak_gflops, AdamW, Isa, KernelChoice, SimdKernels};
use std::hint::black_box;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// A row-major m×k, B row-major k×n (forward: inp·W).
    NN,
    /// B is a transposed view of an n×k matrix (dinp = dout·Wᵀ, logits = x·wteᵀ).
    NT,
    /// A is a transposed view of a k×m matrix (dW = inpᵀ·dout).
    TN,
}

struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    layout: Layout,
}

const fn s(name: &'static str, m: usize, k: usize, n: usize, layout: Layout) -> Shape {
    Shape {
        name,
        m,
        k,
        n,
        layout,
    }
}

use Layout::*;

const SHAPES: &[Shape] = &[
    s("reference 768x128x384", 768, 128, 384, NN),
    // small: C=128, T=64, 4 heads (hd=32); BT=64 is one sequence, 768 the batch
    s("S fwd qkv BT64", 64, 128, 384, NN),
    s("S fwd qkv BT768", 768, 128, 384, NN),
    s("S fwd attproj BT768", 768, 128, 128, NN),
    s("S fwd fc BT768", 768, 128, 512, NN),
    s("S fwd mlpproj BT768", 768, 512, 128, NN),
    s("S dinp qkv BT768", 768, 384, 128, NT),
    s("S dinp fc BT768", 768, 512, 128, NT),
    s("S dinp mlpproj BT768", 768, 128, 512, NT),
    s("S dW qkv BT64", 128, 64, 384, TN),
    s("S dW qkv BT768", 128, 768, 384, TN),
    s("S dW mlpproj BT768", 512, 768, 128, TN),
    s("S lmhead fwd V65", 768, 128, 65, NT),
    s("S lmhead dx V65", 768, 65, 128, NN),
    s("S lmhead dwte V65", 65, 768, 128, TN),
    s("S att q.kT T64", 64, 32, 64, NT),
    s("S att a.v T64", 64, 64, 32, NN),
    // medium: C=384, T=256, 6 heads (hd=64); BT=1024 is 4 sequences
    s("M fwd qkv BT1024", 1024, 384, 1152, NN),
    s("M fwd attproj BT1024", 1024, 384, 384, NN),
    s("M fwd fc BT1024", 1024, 384, 1536, NN),
    s("M fwd mlpproj BT1024", 1024, 1536, 384, NN),
    s("M dinp qkv BT1024", 1024, 1152, 384, NT),
    s("M dinp fc BT1024", 1024, 1536, 384, NT),
    s("M dW qkv BT1024", 384, 1024, 1152, TN),
    s("M dW mlpproj BT1024", 1536, 1024, 384, TN),
    s("M fwd fc BT256", 256, 384, 1536, NN),
    s("M dW fc BT4096", 384, 4096, 1536, TN),
    s("M lmhead fwd V256", 1024, 384, 256, NT),
    s("M att q.kT T256", 256, 64, 256, NT),
    s("M att a.v T256", 256, 256, 64, NN),
    // single-thread peak
    s("square 1024", 1024, 1024, 1024, NN),
    s("square 2048", 2048, 2048, 2048, NN),
];

struct Strides {
    rsa: usize,
    csa: usize,
    rsb: usize,
    csb: usize,
}

fn strides(sh: &Shape) -> Strides {
    let (m, k, n) = (sh.m, sh.k, sh.n);
    let (rsa, csa) = if sh.layout == TN { (1, m) } else { (k, 1) };
    let (rsb, csb) = if sh.layout == NT { (1, k) } else { (n, 1) };
    Strides { rsa, csa, rsb, csb }
}

type GemmFn = Box<dyn Fn(&Shape, &Strides, &[f32], &[f32], &mut [f32])>;

fn candidates() -> Vec<(String, GemmFn)> {
    let mut v: Vec<(String, GemmFn)> = vec![(
        "matrixmultiply".into(),
        Box::new(|sh, st, a, b, c| {
            // SAFETY: the views fit the buffers (sized from the same shape).
            unsafe {
                matrixmultiply::sgemm(
                    sh.m,
                    sh.k,
                    sh.n,
                    1.0,
                    a.as_ptr(),
                    st.rsa as isize,
                    st.csa as isize,
                    b.as_ptr(),
                    st.rsb as isize,
                    st.csb as isize,
                    0.0,
                    c.as_mut_ptr(),
                    sh.n as isize,
                    1,
                )
            }
        }),
    )];
    for choice in [KernelChoice::Avx2, KernelChoice::Avx512, KernelChoice::Amx] {
        if let Ok(kern) = SimdKernels::new(choice) {
            v.push((
                format!("cllm {}", kern.describe()),
                Box::new(move |sh, st, a, b, c| {
                    kern.gemm(
                        Mat::new(a, sh.m, sh.k, st.rsa, st.csa),
                        Mat::new(b, sh.k, sh.n, st.rsb, st.csb),
                        MatMut::row_major(c, sh.m, sh.n),
                        false,
                    )
                }),
            ));
        }
    }
    v
}

/// Deterministic pseudo-random values in [-1, 1).
fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// This thread's CPU time in seconds (Linux), so that time spent descheduled
/// by other processes on this shared machine is not counted; wall time
/// elsewhere.
#[cfg(target_os = "linux")]
fn now() -> f64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: glibc's clock_gettime with a valid clock id and a pointer to a
    // properly laid out timespec (64-bit Linux).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(not(target_os = "linux"))]
fn now() -> f64 {
    use std::sync::OnceLock;
    static T0: OnceLock<Instant> = OnceLock::new();
    T0.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Seconds per call of `f`: `rounds` interleaved timings of each closure,
/// each round long enough (~`budget`) to swamp timer noise.
fn time_interleaved(fs: &mut [&mut dyn FnMut()], rounds: usize, budget: Duration) -> Vec<Vec<f64>> {
    // Calibrate repetitions per round on the first closure.
    let mut reps = 1usize;
    loop {
        let t = Instant::now();
        for _ in 0..reps {
            (fs[0])();
        }
        if t.elapsed() >= budget / 4 || reps >= 1 << 20 {
            let per = t.elapsed().as_secs_f64() / reps as f64;
            reps = ((budget.as_secs_f64() / per.max(1e-9)) as usize).max(1);
            break;
        }
        reps *= 2;
    }
    let mut out = vec![Vec::new(); fs.len()];
    for _ in 0..rounds {
        for (i, f) in fs.iter_mut().enumerate() {
            let t = now();
            for _ in 0..reps {
                f();
            }
            out[i].push((now() - t) / reps as f64);
        }
    }
    out
}

fn best_median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2])
}

fn bench_gemm(quick: bool, filter: Option<&str>) {
    let cands = candidates();
    // Many short rounds: on a shared machine the best round is the one that
    // ran undisturbed, and short rounds are more likely to.
    let rounds = if quick { 15 } else { 61 };
    let budget = Duration::from_millis(3);
    print!("{:<24} {:>16} {:>3}", "shape", "m×k×n", "lay");
    for (name, _) in &cands {
        print!(" {:>22}", name);
    }
    println!("   (GFLOP/s best / median of {rounds})");
    for sh in SHAPES {
        if filter.is_some_and(|f| !sh.name.contains(f)) {
            continue;
        }
        let st = strides(sh);
        let a = fill(sh.m * sh.k, 1);
        let b = fill(sh.k * sh.n, 2);
        let mut cs: Vec<Vec<f32>> = cands.iter().map(|_| vec![0.0; sh.m * sh.n]).collect();
        let results = {
            let mut closures: Vec<Box<dyn FnMut() + '_>> = cands
                .iter()
                .zip(cs.iter_mut())
                .map(|((_, f), c)| {
                    let (a, b, st) = (&a, &b, &st);
                    Box::new(move || f(sh, st, black_box(a), black_box(b), black_box(c)))
                        as Box<dyn FnMut()>
                })
                .collect();
            let mut refs: Vec<&mut dyn FnMut()> = closures
                .iter_mut()
                .map(|b| &mut **b as &mut dyn FnMut())
                .collect();
            time_interleaved(&mut refs, rounds, budget)
        };
        // Sanity: every candidate computed the same product.
        let scale: f32 = (sh.k as f32).sqrt();
        for c in &cs[1..] {
            let err = c
                .iter()
                .zip(&cs[0])
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                err <= 1e-4 * scale,
                "{}: candidates disagree by {err}",
                sh.name
            );
        }
        let flops = 2.0 * (sh.m * sh.k * sh.n) as f64;
        let lay = match sh.layout {
            NN => "NN",
            NT => "NT",
            TN => "TN",
        };
        print!(
            "{:<24} {:>16} {:>3}",
            sh.name,
            format!("{}×{}×{}", sh.m, sh.k, sh.n),
            lay
        );
        for r in results {
            let (best, med) = best_median(r);
            print!(
                " {:>22}",
                format!("{:.1} / {:.1}", flops / best / 1e9, flops / med / 1e9)
            );
        }
        println!();
    }
}

fn gelu_scalar_libm(out: &mut [f32], inp: &[f32]) {
    const S: f32 = 0.797_884_6;
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = 0.5 * x * (1.0 + (S * (x + 0.044715 * x * x * x)).tanh());
    }
}

type Job<'a> = Box<dyn FnMut() + 'a>;

fn bench_elementwise(quick: bool) {
    let isas: Vec<SimdKernels> = [
        KernelChoice::Portable,
        KernelChoice::Avx2,
        KernelChoice::Avx512,
    ]
    .into_iter()
    .filter_map(|c| SimdKernels::new(c).ok())
    .collect();
    let timer = RowTimer {
        rounds: if quick { 3 } else { 7 },
        budget: Duration::from_millis(if quick { 10 } else { 30 }),
    };
    print!(
        "\n{:<34} {:>14}",
        "elementwise (ns/elem, best)", "scalar libm"
    );
    for k in &isas {
        print!(" {:>14}", k.describe());
    }
    println!();

    let n = 768 * 512;
    let x: Vec<f32> = fill(n, 3).iter().map(|v| v * 4.0).collect();
    let g = fill(n, 4);
    let x = &x;
    let g = &g;

    let mut o = vec![0.0; n];
    let libm: Job = Box::new(move || gelu_scalar_libm(black_box(&mut o), black_box(x)));
    let jobs = isas
        .iter()
        .map(|&k| {
            let mut o = vec![0.0; n];
            Box::new(move || k.gelu_forward(black_box(&mut o), black_box(x))) as Job
        })
        .collect();
    timer.row(&format!("gelu_forward n={n}"), n, Some(libm), jobs);

    let jobs = isas
        .iter()
        .map(|&k| {
            let mut d = vec![0.0; n];
            Box::new(move || k.gelu_backward(black_box(&mut d), black_box(x), black_box(g))) as Job
        })
        .collect();
    timer.row(&format!("gelu_backward n={n}"), n, None, jobs);

    let jobs = isas
        .iter()
        .map(|&k| {
            let (mut o, mut d) = (vec![0.0; n], x.to_vec());
            Box::new(move || {
                // Refill the input: the kernel overwrites it with gelu'.
                d.copy_from_slice(x);
                k.gelu_forward_grad(black_box(&mut o), black_box(&mut d))
            }) as Job
        })
        .collect();
    timer.row(&format!("gelu_forward_grad (+copy) n={n}"), n, None, jobs);

    bench_layernorm(&isas, &timer, x, g);
    bench_softmax(&isas, &timer, x);
    bench_adamw(&isas, &timer);
}

/// Times the elementwise rows: the optional libm baseline and one job per
/// ISA, interleaved; each job owns its output buffers.
struct RowTimer {
    rounds: usize,
    budget: Duration,
}

impl RowTimer {
    fn row(&self, label: &str, elems: usize, libm: Option<Job>, jobs: Vec<Job>) {
        let has_libm = libm.is_some();
        let mut all: Vec<Job> = libm.into_iter().chain(jobs).collect();
        let mut refs: Vec<&mut dyn FnMut()> = all
            .iter_mut()
            .map(|b| &mut **b as &mut dyn FnMut())
            .collect();
        let res = time_interleaved(&mut refs, self.rounds, self.budget);
        print!("{label:<34}");
        if !has_libm {
            print!(" {:>14}", "-");
        }
        for r in res {
            print!(" {:>14.3}", best_median(r).0 * 1e9 / elems as f64);
        }
        println!();
    }
}

fn bench_layernorm(isas: &[SimdKernels], timer: &RowTimer, x: &[f32], g: &[f32]) {
    for (rows, c) in [(768, 128), (1024, 384)] {
        let (w, b) = (fill(c, 5), fill(c, 6));
        let (w, b) = (&w, &b);
        let xin = &x[..rows * c];
        let gy = &g[..rows * c];
        let jobs = isas
            .iter()
            .map(|&k| {
                let (mut o, mut mean, mut rstd) =
                    (vec![0.0; rows * c], vec![0.0; rows], vec![0.0; rows]);
                Box::new(move || {
                    k.layernorm_forward(
                        black_box(&mut o),
                        &mut mean,
                        &mut rstd,
                        black_box(xin),
                        w,
                        b,
                    )
                }) as Job
            })
            .collect();
        timer.row(
            &format!("layernorm_forward {rows}×{c}"),
            rows * c,
            None,
            jobs,
        );

        let (mut o, mut mean, mut rstd) = (vec![0.0; rows * c], vec![0.0; rows], vec![0.0; rows]);
        SimdKernels::portable().layernorm_forward(&mut o, &mut mean, &mut rstd, xin, w, b);
        let (mean, rstd) = (&mean, &rstd);
        let jobs = isas
            .iter()
            .map(|&k| {
                let (mut dx, mut dw, mut db) = (vec![0.0; rows * c], vec![0.0; c], vec![0.0; c]);
                Box::new(move || {
                    k.layernorm_backward(
                        black_box(&mut dx),
                        &mut dw,
                        &mut db,
                        black_box(gy),
                        xin,
                        w,
                        mean,
                        rstd,
                    )
                }) as Job
            })
            .collect();
        timer.row(
            &format!("layernorm_backward {rows}×{c}"),
            rows * c,
            None,
            jobs,
        );
    }
}

fn bench_softmax(isas: &[SimdKernels], timer: &RowTimer, x: &[f32]) {
    for (rows, c) in [(64, 64), (256, 256), (768, 65)] {
        let xin = &x[..rows * c];
        let jobs = isas
            .iter()
            .map(|&k| {
                let mut o = vec![0.0; rows * c];
                Box::new(move || k.softmax_rows(black_box(&mut o), black_box(xin), c)) as Job
            })
            .collect();
        timer.row(&format!("softmax_rows {rows}×{c}"), rows * c, None, jobs);
    }
}

fn bench_adamw(isas: &[SimdKernels], timer: &RowTimer) {
    let np = 1 << 20;
    let (p0, gr) = (fill(np, 7), fill(np, 8));
    let gr = &gr;
    let hp = AdamW::at_step(1e-3, 0.9, 0.95, 1e-8, 0.1, 10);
    let jobs = isas
        .iter()
        .map(|&k| {
            let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; np], vec![0.0; np]);
            Box::new(move || k.adamw(black_box(&mut p), black_box(gr), &mut m, &mut v, &hp)) as Job
        })
        .collect();
    timer.row(&format!("adamw n={np}"), np, None, jobs);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let filter = args
        .iter()
        .position(|a| a == "--filter")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.as_str());
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.as_str());
    println!("cpu: best path {}; single-threaded", Isa::detect().name());
    let time = Duration::from_millis(if quick { 200 } else { 1000 });
    let peaks: Vec<String> = [Isa::Avx512, Isa::Avx2Fma]
        .into_iter()
        .filter_map(|isa| {
            Some(format!(
                "{} {:.1} GFLOP/s",
                isa.name(),
                fma_peak_gflops(isa, 1, time)?
            ))
        })
        .collect();
    if !peaks.is_empty() {
        println!(
            "register-only FMA peak (one thread, median burst): {}",
            peaks.join(", ")
        );
    }
    if only != Some("elementwise") {
        bench_gemm(quick, filter);
    }
    if only != Some("gemm") {
        bench_elementwise(quick);
    }
    if only.is_none() || only == Some("fused") {
        bench_fused(quick);
    }
}

/// The GEMM with the product epilogue (c_proj's input gradient times GELU's
/// derivative) against the GEMM followed by the product, interleaved.
fn bench_fused(quick: bool) {
    let Ok(k) = SimdKernels::new(KernelChoice::Auto) else {
        return;
    };
    let rounds = if quick { 3 } else { 9 };
    let budget = Duration::from_millis(if quick { 10 } else { 40 });
    println!(
        "\nfused epilogues ({}; µs per call, best / median)        separate            fused",
        k.describe()
    );
    for (label, m, c) in [("S BT768", 768, 128), ("M BT512", 512, 384)] {
        let n = 4 * c;
        let (w, f) = (fill(c * n, 8), fill(m * n, 10));
        let (w, f) = (&w, &f);
        // dinp = dout·wᵀ (c_proj's w is n×c: B is a transposed view), times f.
        let dout = fill(m * c, 11);
        let dout = &dout;
        let (mut d1, mut d2, mut s1) = (vec![0.0; m * n], vec![0.0; m * n], vec![0.0; m * n]);
        let (dout, w) = (Mat::row_major(dout, m, c), Mat::row_major(w, n, c).t());
        let mut sep = || {
            k.gemm(dout, w, MatMut::row_major(&mut s1, m, n), false);
            cllm_core::kernels::Kernels::mul(&k, &mut d1, f, &s1);
        };
        let mut fused = || {
            k.gemm_mul(dout, w, f, MatMut::row_major(&mut d2, m, n));
        };
        let res = time_interleaved(&mut [&mut sep, &mut fused], rounds, budget);
        let t: Vec<(f64, f64)> = res.into_iter().map(best_median).collect();
        println!(
            "{:<54} {:>7.1} / {:>7.1}  {:>7.1} / {:>7.1}",
            format!("{label} mproj dinp {m}×{c}×{n} · gelu'"),
            t[0].0 * 1e6,
            t[0].1 * 1e6,
            t[1].0 * 1e6,
            t[1].1 * 1e6
        );
    }
}
