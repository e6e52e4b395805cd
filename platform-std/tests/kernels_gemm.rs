//! GEMM on every instruction set this CPU has, against a scalar f64
//! reference.
//!
//! Tolerance: `|C - C_ref| ≤ 1e-5 · (Σ_p |A_ip||B_pj| + |C0_ij|)` per element
//! (k ≤ 4096), where `C0` is C's value before an accumulating call. The bound
//! is the f32 rounding of a length-k FMA chain (≈ k·2⁻²⁴ worst case, far
//! less in practice) with room to spare; a wrong index or a dropped step
//! misses it by orders of magnitude. The AMX path (bf16x3 tiles) gets 4e-5:
//! its splitting errors are ≤ 3·2⁻¹⁸ ≈ 1.1e-5 of each |a·b|; plain bf16
//! products (2⁻⁹), or dropping one of the three terms, miss it by 50×. Elements of C's buffer outside the view
//! must come back untouched (tail masks), and equal inputs must give equal
//! bits.

use cllm_core::kernels::{Kernels, Mat, MatMut};
use cllm_std::kernels::{sgemm, Isa, KernelChoice, SimdKernels, AMX_MIN_DIM};

mod kernel_util;
use kernel_util::{available, fill, first_bit_difference, ALL_CHOICES};

fn kernels() -> Vec<SimdKernels> {
    available(&ALL_CHOICES)
}

/// How each operand is laid out in memory.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Row-major A and B (the forward pass).
    NN,
    /// B a transposed view (dinp = dout·Wᵀ).
    NT,
    /// A a transposed view (dW = inpᵀ·dout).
    TN,
    /// Both transposed.
    TT,
    /// Neither stride is 1 (padded rows and columns).
    Strided,
    /// C column-major.
    ColC,
}

const LAYOUTS: [Layout; 6] = [
    Layout::NN,
    Layout::NT,
    Layout::TN,
    Layout::TT,
    Layout::Strided,
    Layout::ColC,
];

/// Strides (rs, cs) of a rows×cols view, and the buffer length it needs.
fn view(rows: usize, cols: usize, transposed: bool, padded: bool) -> (usize, usize, usize) {
    if padded {
        // Row stride with a gap, column stride 2: every other float unused.
        let cs = 2;
        let rs = cols * 2 + 3;
        (rs, cs, rows * rs)
    } else if transposed {
        (1, rows, rows * cols)
    } else {
        (cols, 1, rows * cols)
    }
}

struct Case {
    m: usize,
    k: usize,
    n: usize,
    layout: Layout,
    accumulate: bool,
}

impl Case {
    fn new((m, k, n): (usize, usize, usize), layout: Layout, accumulate: bool) -> Self {
        Case {
            m,
            k,
            n,
            layout,
            accumulate,
        }
    }
}

/// Runs one case on `kern`, checks it against the f64 reference, and
/// returns the result buffer (for determinism checks).
fn check(kern: &SimdKernels, cs: &Case, seed: u64) -> Vec<f32> {
    let (m, k, n) = (cs.m, cs.k, cs.n);
    let (ta, tb, pad, colc) = match cs.layout {
        Layout::NN => (false, false, false, false),
        Layout::NT => (false, true, false, false),
        Layout::TN => (true, false, false, false),
        Layout::TT => (true, true, false, false),
        Layout::Strided => (false, false, true, false),
        Layout::ColC => (false, true, false, true),
    };
    let (rsa, csa, la) = view(m, k, ta, pad);
    let (rsb, csb, lb) = view(k, n, tb, pad);
    let (rsc, csc, lc) = if colc {
        (1, m + 1, (m + 1) * n)
    } else {
        view(m, n, false, pad)
    };
    let a = fill(la, seed);
    let b = fill(lb, seed + 1);
    // C's buffer: real values where the view is, a sentinel elsewhere.
    const SENTINEL: f32 = 1234.5;
    let mut c = vec![SENTINEL; lc + 5];
    let c0v = fill(m * n, seed + 2);
    for i in 0..m {
        for j in 0..n {
            c[i * rsc + j * csc] = c0v[i * n + j];
        }
    }
    let before = c.clone();
    kern.gemm(
        Mat::new(&a, m, k, rsa, csa),
        Mat::new(&b, k, n, rsb, csb),
        MatMut::new(&mut c[..lc], m, n, rsc, csc),
        cs.accumulate,
    );
    let mut in_view = vec![false; c.len()];
    for i in 0..m {
        for j in 0..n {
            let idx = i * rsc + j * csc;
            in_view[idx] = true;
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let t = a[i * rsa + p * csa] as f64 * b[p * rsb + j * csb] as f64;
                exact += t;
                mag += t.abs();
            }
            if cs.accumulate {
                exact += before[idx] as f64;
                mag += (before[idx] as f64).abs();
            }
            let err = (c[idx] as f64 - exact).abs();
            let tol = if kern.isa() == Isa::Amx { 4e-5 } else { 1e-5 };
            assert!(
                err <= tol * mag + 1e-30,
                "{} {m}×{k}×{n} {:?} acc={} at ({i},{j}): got {} want {exact} (err {err:e}, Σ|ab| {mag:e})",
                kern.describe(),
                cs.layout,
                cs.accumulate,
                c[idx]
            );
        }
    }
    for (idx, (&got, &was)) in c.iter().zip(&before).enumerate() {
        if !in_view[idx] {
            assert_eq!(
                got.to_bits(),
                was.to_bits(),
                "{} {m}×{k}×{n} {:?}: wrote outside the C view at {idx}",
                kern.describe(),
                cs.layout
            );
        }
    }
    c
}

#[test]
fn small_sizes_all_layouts_and_tails() {
    for kern in kernels() {
        for m in 1..=33 {
            for n in 1..=33 {
                for (t, &k) in [1usize, 4, 17, 33].iter().enumerate() {
                    // Every layout for every (m, n) tail, alternating accumulate.
                    for (l, &layout) in LAYOUTS.iter().enumerate() {
                        let accumulate = (m + n + t + l) % 2 == 0;
                        let cs = Case::new((m, k, n), layout, accumulate);
                        check(&kern, &cs, (m * 1000 + n * 10 + k) as u64);
                    }
                }
            }
        }
    }
}

#[test]
fn every_k_up_to_33() {
    for kern in kernels() {
        for k in 1..=33 {
            for &(m, n) in &[(1, 1), (7, 9), (8, 32), (13, 47), (33, 33)] {
                for &layout in &LAYOUTS {
                    for accumulate in [false, true] {
                        check(&kern, &Case::new((m, k, n), layout, accumulate), k as u64);
                    }
                }
            }
        }
    }
}

/// Sizes around the blocking constants (KC = 256 reduction steps, NC = 512
/// columns) so every block boundary and partial block is crossed.
#[test]
fn block_boundaries() {
    let sizes = [
        (9, 255, 40),
        (9, 256, 40),
        (17, 257, 33),
        (5, 513, 17),
        (7, 40, 511),
        (7, 40, 512),
        (3, 300, 1025),
    ];
    for kern in kernels() {
        for &(m, k, n) in &sizes {
            for &layout in &[Layout::NN, Layout::NT, Layout::TN, Layout::ColC] {
                for accumulate in [false, true] {
                    check(
                        &kern,
                        &Case::new((m, k, n), layout, accumulate),
                        (m + k + n) as u64,
                    );
                }
            }
        }
    }
}

/// The model's GEMMs (small config, one sequence and more) with the layouts
/// they use: forward NN, dinp NT, dW TN, LM head NT.
#[test]
fn model_shapes() {
    let shapes = [
        (64, 128, 384, Layout::NN),
        (384, 128, 512, Layout::NN),
        (384, 512, 128, Layout::NN),
        (64, 384, 128, Layout::NT),
        (384, 512, 128, Layout::NT),
        (128, 384, 384, Layout::TN),
        (512, 64, 128, Layout::TN),
        (384, 128, 65, Layout::NT),
        (65, 384, 128, Layout::TN),
        (64, 32, 64, Layout::NT),
        (64, 64, 32, Layout::NN),
        (256, 384, 256, Layout::NT),
        (96, 4096, 48, Layout::TN),
    ];
    for kern in kernels() {
        for &(m, k, n, layout) in &shapes {
            for accumulate in [false, true] {
                check(&kern, &Case::new((m, k, n), layout, accumulate), 7);
            }
        }
    }
}

#[test]
fn deterministic_bits() {
    for kern in kernels() {
        for &(m, k, n, layout) in &[
            (97, 300, 130, Layout::NN),
            (64, 513, 65, Layout::NT),
            (33, 700, 40, Layout::TN),
        ] {
            let cs = Case::new((m, k, n), layout, true);
            let first = check(&kern, &cs, 3);
            let again = check(&kern, &cs, 3);
            // A fresh thread starts with fresh packing buffers.
            let other = std::thread::scope(|s| s.spawn(|| check(&kern, &cs, 3)).join().unwrap());
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&first),
                bits(&again),
                "{} {m}×{k}×{n}",
                kern.describe()
            );
            assert_eq!(
                bits(&first),
                bits(&other),
                "{} {m}×{k}×{n} other thread",
                kern.describe()
            );
        }
    }
}

/// An element's bits depend only on its row of A and column of B: computing
/// one row (or one column) alone gives the same bits as inside the full
/// product, so splitting tokens across work units cannot change results.
/// (With AMX that holds among products large enough for the tiles: see
/// `amx_elements_independent_of_m_and_n`.)
#[test]
fn elements_independent_of_m_and_n() {
    let (m, k, n) = (37, 300, 45);
    let a = fill(m * k, 1);
    let b = fill(k * n, 2);
    for kern in kernels() {
        if kern.isa() == Isa::Amx {
            continue;
        }
        let (av, bv) = (Mat::row_major(&a, m, k), Mat::row_major(&b, k, n));
        let mut full = vec![0.0; m * n];
        kern.gemm(av, bv, MatMut::row_major(&mut full, m, n), false);
        for i in [0, 8, 36] {
            let mut row = vec![0.0; n];
            let ai = Mat::row_major(&a[i * k..], 1, k);
            kern.gemm(ai, bv, MatMut::row_major(&mut row, 1, n), false);
            assert_eq!(row, full[i * n..(i + 1) * n], "{} row {i}", kern.describe());
        }
        for j in [0, 16, 33, 44] {
            let mut col = vec![0.0; m];
            let bj = Mat::rows_strided(&b[j..], k, 1, n);
            kern.gemm(av, bj, MatMut::new(&mut col, m, 1, 1, 1), false);
            let want: Vec<f32> = (0..m).map(|i| full[i * n + j]).collect();
            assert_eq!(col, want, "{} column {j}", kern.describe());
        }
    }
}

/// On AMX, any block of at least `AMX_MIN_DIM` rows and columns, wherever it
/// starts, gives the bits it has inside the full product; smaller products
/// run on AVX-512 and give that path's bits.
#[test]
fn amx_elements_independent_of_m_and_n() {
    let Ok(kern) = SimdKernels::new(KernelChoice::Amx) else {
        eprintln!("skipping: no AMX");
        return;
    };
    let avx512 = SimdKernels::new(KernelChoice::Avx512).unwrap();
    let d = AMX_MIN_DIM;
    let (m, k, n) = (2 * d + 13, 300, 2 * d + 6);
    let a = fill(m * k, 1);
    let b = fill(k * n, 2);
    let (av, bv) = (Mat::row_major(&a, m, k), Mat::row_major(&b, k, n));
    let mut full = vec![0.0; m * n];
    kern.gemm(av, bv, MatMut::row_major(&mut full, m, n), false);
    for (i0, rows) in [(0, d), (5, d), (d + 8, d + 5), (13, d + 18)] {
        for (j0, cols) in [(0, d), (3, d + 1), (d + 6, d), (0, n)] {
            let mut part = vec![0.0; rows * cols];
            kern.gemm(
                Mat::row_major(&a[i0 * k..], rows, k),
                Mat::rows_strided(&b[j0..], k, cols, n),
                MatMut::row_major(&mut part, rows, cols),
                false,
            );
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        part[i * cols + j].to_bits(),
                        full[(i0 + i) * n + j0 + j].to_bits(),
                        "rows {i0}+{rows} cols {j0}+{cols} at ({i},{j})"
                    );
                }
            }
        }
    }
    let (mut one, mut want) = (vec![0.0; n], vec![0.0; n]);
    let a1 = Mat::row_major(&a, 1, k);
    kern.gemm(a1, bv, MatMut::row_major(&mut one, 1, n), false);
    avx512.gemm(a1, bv, MatMut::row_major(&mut want, 1, n), false);
    assert_eq!(one, want, "a single row runs on AVX-512");
    // Below the volume threshold too; above it the tiles give other bits.
    for (mm, kk, nn, tiles) in [(d, d, d, false), (d, 4 * d, d, true)] {
        assert_eq!(cllm_std::kernels::amx_pays(mm, kk, nn), tiles);
        let (mut x, mut y) = (vec![0.0; mm * nn], vec![0.0; mm * nn]);
        let (ap, bp) = (
            Mat::rows_strided(&a, mm, kk, k),
            Mat::rows_strided(&b, kk, nn, n),
        );
        kern.gemm(ap, bp, MatMut::row_major(&mut x, mm, nn), false);
        avx512.gemm(ap, bp, MatMut::row_major(&mut y, mm, nn), false);
        assert_eq!(x == y, !tiles, "{mm}×{kk}×{nn}");
    }
}

/// The tile path across its edges: rows and columns around the 32×32 block
/// and 16-wide tiles, steps around the 32-step tile and the 512-step block,
/// columns past the 512-column block, every layout, both C modes; and the
/// sizes just below `AMX_MIN_DIM` (or `AMX_MIN_VOLUME`) that go to AVX-512.
#[test]
fn amx_tails_and_blocks() {
    let Ok(kern) = SimdKernels::new(KernelChoice::Amx) else {
        eprintln!("skipping: no AMX");
        return;
    };
    let d = AMX_MIN_DIM;
    for &m in &[d - 1, d, d + 1, d + 15, d + 32, 2 * d + 2] {
        for &n in &[d - 1, d, d + 1, d + 16, d + 33] {
            for &k in &[d - 1, d, d + 1, d + 31, 512, 513] {
                for (l, &layout) in LAYOUTS.iter().enumerate() {
                    let accumulate = (m + n + k + l) % 2 == 0;
                    let cs = Case::new((m, k, n), layout, accumulate);
                    check(&kern, &cs, (m * 7 + n * 3 + k) as u64);
                }
            }
        }
    }
    // Also past the 2048-row chunk of A.
    for &(m, k, n) in &[
        (d + 8, 100, 513),
        (d + 1, 300, 1100),
        (d + 3, 1030, d + 5),
        (2085, 70, d + 3),
    ] {
        for &layout in &[Layout::NN, Layout::NT, Layout::TN] {
            check(&kern, &Case::new((m, k, n), layout, false), 9);
        }
    }
}

#[test]
fn k_zero_and_empty() {
    for kern in kernels() {
        let (a, b) = (Mat::row_major(&[], 2, 0), Mat::row_major(&[], 0, 3));
        let mut c = vec![3.0f32; 6];
        kern.gemm(a, b, MatMut::row_major(&mut c, 2, 3), true);
        assert_eq!(c, [3.0; 6], "k = 0 with accumulate leaves C");
        kern.gemm(a, b, MatMut::row_major(&mut c, 2, 3), false);
        assert_eq!(c, [0.0; 6], "k = 0 without accumulate zeroes C");
        let (a, b) = (Mat::row_major(&[], 0, 4), Mat::row_major(&[0.0; 12], 4, 3));
        kern.gemm(a, b, MatMut::row_major(&mut [], 0, 3), false);
    }
}

#[test]
fn free_function_uses_the_detected_path() {
    let (m, k, n) = (37, 50, 41);
    let a = fill(m * k, 1);
    let b = fill(k * n, 2);
    let mut c1 = vec![0.0; m * n];
    let mut c2 = vec![0.0; m * n];
    let (a, b) = (Mat::row_major(&a, m, k), Mat::row_major(&b, k, n));
    sgemm(a, b, MatMut::row_major(&mut c1, m, n), false);
    SimdKernels::auto().gemm(a, b, MatMut::row_major(&mut c2, m, n), false);
    assert_eq!(c1, c2);
    assert_eq!(SimdKernels::auto().isa(), Isa::detect());
}

#[test]
#[should_panic(expected = "does not fit")]
fn rejects_a_view_past_the_slice() {
    let a = vec![0.0; 11]; // 3×4 needs 12
    let b = vec![0.0; 8];
    let mut c = vec![0.0; 6];
    let (a, b) = (Mat::row_major(&a, 3, 4), Mat::row_major(&b, 4, 2));
    sgemm(a, b, MatMut::row_major(&mut c, 3, 2), false);
}

#[test]
#[should_panic(expected = "does not fit")]
fn rejects_overflowing_strides() {
    let a = vec![0.0; 4];
    let b = vec![0.0; 4];
    let mut c = vec![0.0; 4];
    let (a, b) = (
        Mat::rows_strided(&a, 2, 2, usize::MAX / 2),
        Mat::row_major(&b, 2, 2),
    );
    sgemm(a, b, MatMut::row_major(&mut c, 2, 2), false);
}

/// `gemm_bias` is bit for bit "fill C's rows with the bias, then accumulate"
/// on every path: in-place and packed B panels (m on both sides of 64),
/// column tails, several KC blocks, transposed operands and padded C rows.
#[test]
fn bias_epilogue_equals_fill_then_accumulate() {
    for kern in kernels() {
        for &(m, k, n) in &[
            (1, 5, 3),
            (7, 33, 17),
            (32, 32, 32),
            (64, 64, 96),
            (65, 130, 48),
            (100, 300, 33),
            (9, 600, 520),
            (2070, 64, 70),
        ] {
            for &(ta, tb) in &[(false, false), (false, true), (true, false)] {
                let (rsa, csa, la) = view(m, k, ta, false);
                let (rsb, csb, lb) = view(k, n, tb, false);
                let rsc = n + 5;
                let a = fill(la, 31);
                let b = fill(lb, 32);
                let bias = fill(n, 33);
                let garbage = fill(m * rsc, 34);
                let mut want = garbage.clone();
                for i in 0..m {
                    want[i * rsc..i * rsc + n].copy_from_slice(&bias);
                }
                let (a, b) = (Mat::new(&a, m, k, rsa, csa), Mat::new(&b, k, n, rsb, csb));
                kern.gemm(a, b, MatMut::rows_strided(&mut want, m, n, rsc), true);
                let mut got = garbage.clone();
                kern.gemm_bias(a, b, &bias, MatMut::rows_strided(&mut got, m, n, rsc));
                for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "{} {m}x{k}x{n} ta {ta} tb {tb} at {idx}: {g} vs {w}",
                        kern.describe()
                    );
                }
            }
        }
    }
}

/// The GEMM with the product epilogue gives the bits of the plain GEMM
/// followed by the product, on every ISA: across KC and NC block edges,
/// micro-tile tails, padded rows of C (whose padding must stay untouched),
/// with A row-major or transposed and B row-major or transposed.
#[test]
fn product_epilogue_equals_gemm_then_product() {
    for kern in kernels() {
        for &(m, k, n, pad) in &[
            (1, 1, 1, 0),
            (7, 5, 33, 3),
            (9, 300, 17, 0),
            (17, 64, 530, 5),
            (70, 257, 96, 0),
            (33, 128, 512, 0),
            (2070, 64, 70, 3),
        ] {
            let rsc = n + pad;
            for (transposed_a, transposed_b) in [(false, false), (true, false), (false, true)] {
                let a = fill(m * k, 1 + m as u64);
                let b = fill(k * n, 2 + n as u64);
                let (rsa, csa) = if transposed_a { (1, m) } else { (k, 1) };
                let (rsb, csb) = if transposed_b { (1, k) } else { (n, 1) };
                let f = fill(m * rsc, 4);
                let sentinel = -7777.0f32;
                let len = (m - 1) * rsc + n + pad;
                let what = format!(
                    "{} m{m} k{k} n{n} pad{pad} tA {transposed_a} tB {transposed_b}",
                    kern.describe()
                );

                let (a, b) = (Mat::new(&a, m, k, rsa, csa), Mat::new(&b, k, n, rsb, csb));
                let mut want = vec![sentinel; len];
                Kernels::gemm(
                    &kern,
                    a,
                    b,
                    MatMut::rows_strided(&mut want, m, n, rsc),
                    false,
                );
                for i in 0..m {
                    for j in 0..n {
                        want[i * rsc + j] *= f[i * rsc + j];
                    }
                }
                let mut c = vec![sentinel; len];
                kern.gemm_mul(a, b, &f[..len], MatMut::rows_strided(&mut c, m, n, rsc));
                let bad = first_bit_difference(&c, &want);
                assert_eq!(bad, None, "{what} mul");
            }
        }
    }
}
