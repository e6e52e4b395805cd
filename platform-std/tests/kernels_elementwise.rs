//! Elementwise and row kernels on every instruction set this CPU has,
//! against scalar references written here (f64 unless stated).
//!
//! Tolerances, with u = 2⁻²⁴ (half an f32 ulp at 1):
//! - `exp`: ≤ 2 ulp from `libm::expf` over a dense sweep of [-104, 89]
//!   (every 61st float; the measured maximum is printed with --nocapture).
//! - GELU: the exponent `a = -2u(x)` is itself rounded to f32 (as in any
//!   f32 GELU, tanh-based ones included), which costs a relative error of
//!   about `|a|·u` wherever `e^a` matters (x < 0). Forward:
//!   `≤ (4 + 4|a|·σ(a))` ulp of the f64 value where that is a normal f32,
//!   absolute 1e-37 below (x < -10); for x ≥ 0 that is ≤ ~4 ulp.
//!   Backward: `|err| ≤ 8u·(1 + |a|)·(|s| + |2x·s·(1-s)·u'|)·|dout|` plus the
//!   rounding of the `+=`: a few ulp of the terms of gelu' (the sum cancels
//!   near x ≈ -0.75, where no relative bound can hold).
//! - Layernorm: `out` within 16u of `|w|·(|x| + |mean|)·rstd + |b|`;
//!   backward terms likewise scaled by the magnitudes summed.
//! - Softmax: `≤ (8 + |x - max| + 2√cols)·u` relative: exp, the row sum
//!   (√cols: the scalar path sums sequentially), one multiply, and the f32
//!   rounding of `x - max` (inherent to f32 softmax).
//! - AdamW: m, v within 4u relative (8u with a gradient scale); params within
//!   `4u·|p| + 8u·lr·|update|`.
//! - Log-sum-exp: within `(8 + 2√cols)·u·(|max| + 1)`; the cross-entropy
//!   gradient row `exp(x − lse)/n` within `(4 + |x − lse|)·u` relative.
//! - Residual add, product and bias-gradient row sums: bitwise the portable
//!   kernel's (same operations in the same order per element).
//! - Softmax backward row `p·(d − ⟨p,d⟩)·s`: within
//!   `(4·|p·(d − dot)| + (2 + n)·|p|·Σ|p·d|)·u·|s|` of the f64 value (the dot
//!   product's rounding, in any summation order, carried by `p`).

use cllm_core::kernels::Kernels;
use cllm_std::kernels::{AdamW, SimdKernels};

mod kernel_util;
use kernel_util::{available, fill, first_bit_difference, ALL_CHOICES};

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn kernels() -> Vec<SimdKernels> {
    available(&ALL_CHOICES[..3])
}

/// `fill` with every value multiplied by `mul`.
fn fill_scaled(n: usize, seed: u64, mul: f32) -> Vec<f32> {
    fill(n, seed).iter().map(|v| v * mul).collect()
}

/// `fill` with every value multiplied by `mul`, then `add` added.
fn fill_affine(n: usize, seed: u64, mul: f32, add: f32) -> Vec<f32> {
    fill(n, seed).iter().map(|v| v * mul + add).collect()
}

/// Distance in representable floats (both finite, or both the same inf).
fn ulp_dist(a: f32, b: f32) -> u64 {
    if a == b {
        return 0;
    }
    let key = |x: f32| {
        let i = x.to_bits() as i64;
        if i < 0x8000_0000 {
            i
        } else {
            0x8000_0000 - i
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

/// Size of one f32 ulp at |r|.
fn ulp_at(r: f64) -> f64 {
    let a = (r.abs() as f32).max(f32::MIN_POSITIVE);
    let e = a.to_bits() >> 23;
    f32::from_bits(e << 23) as f64 * 2f64.powi(-23)
}

/// The sizes every kernel runs on: lengths around the vector widths.
const LENS: [usize; 12] = [1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1000];

/// Checks `f` neither reads nor writes beyond its slices by running it on
/// the front of larger buffers whose tails hold sentinels.
const SENTINEL: f32 = -7777.0;

fn with_tail(v: &[f32]) -> Vec<f32> {
    let mut w = v.to_vec();
    w.extend_from_slice(&[SENTINEL; 17]);
    w
}

fn tail_intact(w: &[f32], n: usize, what: &str) {
    assert!(
        w[n..].iter().all(|&x| x == SENTINEL),
        "{what}: wrote past the slice"
    );
}

#[test]
fn exp_matches_libm_over_a_dense_sweep() {
    // Every 61st float in [-104, 89] (about 37M points), plus the ends.
    let lo = (-104.0f32).to_bits();
    let hi = 89.0f32.to_bits();
    let mut xs: Vec<f32> = (0..=hi).step_by(61).map(f32::from_bits).collect();
    xs.extend((0x8000_0000..=lo).step_by(61).map(f32::from_bits));
    xs.extend([89.0, -104.0, 0.0, -0.0, 88.72283, -87.33654, -103.97]);
    let want: Vec<f32> = xs.iter().map(|&x| libm::expf(x)).collect();
    for kern in kernels() {
        let mut got = vec![0.0; xs.len()];
        kern.exp(&mut got, &xs);
        let (mut worst, mut at) = (0, 0.0);
        for ((&g, &w), &x) in got.iter().zip(&want).zip(&xs) {
            let d = ulp_dist(g, w);
            if d > worst {
                (worst, at) = (d, x);
            }
        }
        println!(
            "exp {}: max {worst} ulp from libm::expf (at x = {at})",
            kern.describe()
        );
        assert!(worst <= 2, "exp {}: {worst} ulp at {at}", kern.describe());
        let mut special = [0.0; 4];
        kern.exp(
            &mut special,
            &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 100.0],
        );
        assert!(special[0].is_nan(), "exp(NaN)");
        assert_eq!(special[1..], [f32::INFINITY, 0.0, f32::INFINITY]);
    }
}

/// GPT-2's gelu_new, `0.5·x·(1 + tanh u)`, as the equal `x·σ(2u)`: in f64
/// too, `1 + tanh u` cancels to nothing for x below about -6.
/// The exponent `a = -2u(x)` of `x·σ(2u) = x/(1 + e^a)`.
fn gelu_exponent(x: f64) -> f64 {
    -2.0 * (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)
}

/// Forward tolerance in ulps (see the module docs).
fn gelu_tol_ulps(x: f64) -> f64 {
    let a = gelu_exponent(x);
    let sig = 1.0 / (1.0 + (-a).exp());
    4.0 + 4.0 * a.abs() * sig
}

fn gelu_ref(x: f64) -> f64 {
    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    x / (1.0 + (-2.0 * u).exp())
}

/// gelu'(x) and the magnitude of its two terms (for the tolerance).
fn gelu_grad_ref(x: f64) -> (f64, f64) {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let u = c * (x + 0.044715 * x * x * x);
    // 0.5(1 + tanh u) = σ(2u) computed without cancellation.
    let s = 1.0 / (1.0 + (-2.0 * u).exp());
    let t2 = 2.0 * x * s * (1.0 - s) * c * (1.0 + 3.0 * 0.044715 * x * x);
    (s + t2, s.abs() + t2.abs())
}

/// A dense sweep of x: every 97th float in [-12, 12] and the sizes above.
fn gelu_inputs() -> Vec<f32> {
    let hi = 12.0f32.to_bits();
    let mut xs: Vec<f32> = (0..=hi).step_by(97).map(f32::from_bits).collect();
    xs.extend(
        (0x8000_0000..=(-12.0f32).to_bits())
            .step_by(97)
            .map(f32::from_bits),
    );
    xs.extend([-30.0, -10.5, 30.0, 0.0, -0.0]);
    xs
}

#[test]
fn gelu_forward_accuracy() {
    let xs = gelu_inputs();
    for kern in kernels() {
        let mut out = vec![0.0; xs.len()];
        kern.gelu_forward(&mut out, &xs);
        let (mut worst, mut at) = (0.0f64, 0.0);
        let (mut worst_pos, mut worst_rel) = (0.0f64, 0.0f64);
        let mut worst_vs_tanhf = 0.0f64;
        for (&y, &x) in out.iter().zip(&xs) {
            let r = gelu_ref(x as f64);
            let err = (y as f64 - r).abs();
            if r.abs() >= f32::MIN_POSITIVE as f64 {
                let ulps = err / ulp_at(r);
                if ulps > worst {
                    (worst, at) = (ulps, x);
                }
                if x >= 0.0 {
                    worst_pos = worst_pos.max(ulps);
                }
                let tol = gelu_tol_ulps(x as f64);
                worst_rel = worst_rel.max(ulps / tol);
                assert!(
                    ulps <= tol,
                    "gelu_forward {} at x = {x}: {ulps:.1} ulp > {tol:.1}",
                    kern.describe()
                );
            } else {
                assert!(
                    err <= 1e-37,
                    "gelu {} tiny at x = {x}: {y} vs {r}",
                    kern.describe()
                );
            }
            // The same formula in f32 with libm::tanhf, as a portable kernel
            // would compute it; its `1 + tanh` loses digits for x < 0, so
            // compare absolutely, scaled by |x|.
            let xf = x;
            let t = libm::tanhf(0.797_884_6 * (xf + 0.044715 * xf * xf * xf));
            let yt = 0.5 * xf * (1.0 + t);
            worst_vs_tanhf = worst_vs_tanhf.max((y - yt).abs() as f64 / (xf.abs() as f64).max(1.0));
        }
        println!(
            "gelu_forward {}: max {worst:.2} ulp from f64 (at x = {at}), {worst_pos:.2} ulp for x ≥ 0, {worst_rel:.2} of the tolerance; vs the libm::tanhf formula: max |Δ|/max(|x|,1) = {worst_vs_tanhf:e}",
            kern.describe()
        );
    }
}

#[test]
fn gelu_backward_accuracy() {
    let xs = gelu_inputs();
    let n = xs.len();
    let dout: Vec<f32> = fill_scaled(n, 5, 3.0);
    let dinp0 = fill(n, 6);
    for kern in kernels() {
        let mut dinp = dinp0.clone();
        kern.gelu_backward(&mut dinp, &xs, &dout);
        let mut worst = 0.0f64;
        for i in 0..n {
            let (g, mag) = gelu_grad_ref(xs[i] as f64);
            let a = gelu_exponent(xs[i] as f64).abs();
            // Overwrites: the old contents of dinp must not leak in.
            let want = g * dout[i] as f64;
            let tol = 8.0 * U * (1.0 + a) * mag * (dout[i] as f64).abs() + U * want.abs() + 1e-37;
            let err = (dinp[i] as f64 - want).abs();
            worst = worst.max(err / tol);
            assert!(
                err <= tol,
                "gelu_backward {} at x = {}: {} vs {want}",
                kern.describe(),
                xs[i],
                dinp[i]
            );
        }
        println!(
            "gelu_backward {}: max error {worst:.3} of the tolerance",
            kern.describe()
        );
    }
}

#[test]
fn elementwise_tails_stay_in_bounds() {
    for kern in kernels() {
        for &n in &LENS {
            let x: Vec<f32> = fill_scaled(n, n as u64, 5.0);
            let mut out = with_tail(&vec![0.0; n]);
            kern.gelu_forward(&mut out[..n], &x);
            tail_intact(&out, n, "gelu_forward");
            for (i, &xi) in x.iter().enumerate() {
                let r = gelu_ref(xi as f64);
                let tol = gelu_tol_ulps(xi as f64) * ulp_at(r);
                assert!((out[i] as f64 - r).abs() <= tol, "gelu n={n} i={i}");
            }
            let mut d = with_tail(&vec![0.5; n]);
            kern.gelu_backward(&mut d[..n], &x, &x);
            tail_intact(&d, n, "gelu_backward");
            let mut e = with_tail(&vec![0.0; n]);
            kern.exp(&mut e[..n], &x);
            tail_intact(&e, n, "exp");
            let mut s = with_tail(&vec![0.0; n]);
            kern.softmax_row(&mut s[..n], &x);
            tail_intact(&s, n, "softmax_row");
            let (mut p, mut m, mut v) = (with_tail(&x), with_tail(&x), with_tail(&x));
            let hp = AdamW::at_step(1e-3, 0.9, 0.95, 1e-8, 0.1, 3);
            let v0: Vec<f32> = x.iter().map(|a| a.abs()).collect();
            v[..n].copy_from_slice(&v0);
            kern.adamw(&mut p[..n], &x, &mut m[..n], &mut v[..n], &hp);
            tail_intact(&p, n, "adamw p");
            tail_intact(&m, n, "adamw m");
            tail_intact(&v, n, "adamw v");
        }
    }
}

fn softmax_ref(x: &[f32]) -> Vec<f64> {
    let mx = x.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
    let e: Vec<f64> = x.iter().map(|&v| (v as f64 - mx).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn softmax_accuracy() {
    for kern in kernels() {
        for &cols in &[1usize, 3, 8, 15, 16, 17, 33, 64, 65, 256, 1000] {
            let rows = 5;
            let x: Vec<f32> = fill_scaled(rows * cols, cols as u64, 20.0);
            let mut out = vec![0.0; rows * cols];
            kern.softmax_rows(&mut out, &x, cols);
            for r in 0..rows {
                let row = &x[r * cols..(r + 1) * cols];
                let want = softmax_ref(row);
                let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                for (j, &w) in want.iter().enumerate() {
                    let got = out[r * cols + j] as f64;
                    let d = (row[j] - mx).abs() as f64;
                    let sum_depth = 2.0 * (cols as f64).sqrt();
                    assert!(
                        (got - w).abs() <= (8.0 + d + sum_depth) * U * w + 1e-38,
                        "softmax {} cols={cols} ({r},{j}): {got} vs {w}",
                        kern.describe()
                    );
                }
            }
        }
    }
}

/// f64 layernorm of one row: (out, mean, rstd).
fn layernorm_ref(x: &[f32], w: &[f32], b: &[f32]) -> (Vec<f64>, f64, f64) {
    let c = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / c;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c;
    let rstd = 1.0 / (var + 1e-5).sqrt();
    let out = x
        .iter()
        .zip(w.iter().zip(b))
        .map(|(&v, (&wi, &bi))| (v as f64 - mean) * rstd * wi as f64 + bi as f64)
        .collect();
    (out, mean, rstd)
}

#[test]
fn layernorm_forward_accuracy() {
    for kern in kernels() {
        for &c in &[1usize, 7, 16, 17, 64, 128, 384, 385] {
            let rows = 6;
            let x: Vec<f32> = fill_affine(rows * c, c as u64, 2.0, 0.3);
            let w: Vec<f32> = fill(c, 1).iter().map(|v| v + 1.0).collect();
            let b = fill(c, 2);
            let mut out = with_tail(&vec![0.0; rows * c]);
            let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
            kern.layernorm_forward(&mut out[..rows * c], &mut mean, &mut rstd, &x, &w, &b);
            tail_intact(&out, rows * c, "layernorm_forward");
            for r in 0..rows {
                let xr = &x[r * c..(r + 1) * c];
                let (want, m, s) = layernorm_ref(xr, &w, &b);
                assert!(
                    (mean[r] as f64 - m).abs() <= 16.0 * U * (1.0 + m.abs()),
                    "mean c={c}"
                );
                assert!(
                    (rstd[r] as f64 - s).abs() <= 16.0 * U * s,
                    "rstd c={c}: {} vs {s}",
                    rstd[r]
                );
                for j in 0..c {
                    let scale = (w[j] as f64).abs() * ((xr[j] as f64).abs() + m.abs()) * s
                        + (b[j] as f64).abs();
                    let err = (out[r * c + j] as f64 - want[j]).abs();
                    assert!(
                        err <= 16.0 * U * scale,
                        "layernorm {} c={c} ({r},{j}): err {err:e}",
                        kern.describe()
                    );
                }
            }
        }
    }
}

#[test]
fn layernorm_backward_accuracy() {
    for kern in kernels() {
        for &c in &[1usize, 7, 16, 17, 128, 385] {
            let rows = 5;
            let x: Vec<f32> = fill_affine(rows * c, c as u64, 2.0, 0.3);
            let w: Vec<f32> = fill(c, 1).iter().map(|v| v + 1.0).collect();
            let b = fill(c, 2);
            let dout = fill(rows * c, 3);
            let (dinp0, dw0, db0) = (fill(rows * c, 4), fill(c, 5), fill(c, 6));
            let mut out = vec![0.0; rows * c];
            let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
            kern.layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &b);
            let (mut dinp, mut dw, mut db) = (with_tail(&dinp0), with_tail(&dw0), with_tail(&db0));
            kern.layernorm_backward(
                &mut dinp[..rows * c],
                &mut dw[..c],
                &mut db[..c],
                &dout,
                &x,
                &w,
                &mean,
                &rstd,
            );
            tail_intact(&dinp, rows * c, "layernorm_backward dinp");
            tail_intact(&dw, c, "layernorm_backward dweight");
            tail_intact(&db, c, "layernorm_backward dbias");
            // f64 reference from the same saved mean/rstd.
            let (mut rdw, mut rdb) = (
                dw0.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                db0.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            );
            let (mut mdw, mut mdb) = (
                dw0.iter().map(|v| v.abs() as f64).collect::<Vec<_>>(),
                db0.iter().map(|v| v.abs() as f64).collect::<Vec<_>>(),
            );
            for r in 0..rows {
                let (m, s) = (mean[r] as f64, rstd[r] as f64);
                let xr = &x[r * c..(r + 1) * c];
                let gr = &dout[r * c..(r + 1) * c];
                let norm: Vec<f64> = xr.iter().map(|&v| (v as f64 - m) * s).collect();
                let dn: Vec<f64> = gr
                    .iter()
                    .zip(&w)
                    .map(|(&g, &wi)| g as f64 * wi as f64)
                    .collect();
                let dn_mean = dn.iter().sum::<f64>() / c as f64;
                let dnn_mean = dn.iter().zip(&norm).map(|(a, b)| a * b).sum::<f64>() / c as f64;
                let mag_mean = dn.iter().map(|v| v.abs()).sum::<f64>() / c as f64;
                let mag_nmean = dn
                    .iter()
                    .zip(&norm)
                    .map(|(a, b)| (a * b).abs())
                    .sum::<f64>()
                    / c as f64;
                for j in 0..c {
                    rdb[j] += gr[j] as f64;
                    mdb[j] += (gr[j] as f64).abs();
                    rdw[j] += norm[j] * gr[j] as f64;
                    mdw[j] += (norm[j] * gr[j] as f64).abs();
                    let want = dinp0[r * c + j] as f64 + (dn[j] - dn_mean - norm[j] * dnn_mean) * s;
                    let mag = (dinp0[r * c + j] as f64).abs()
                        + (dn[j].abs() + mag_mean + norm[j].abs() * mag_nmean) * s;
                    let err = (dinp[r * c + j] as f64 - want).abs();
                    assert!(
                        err <= 16.0 * U * mag,
                        "ln dinp {} c={c} ({r},{j}): err {err:e} mag {mag:e}",
                        kern.describe()
                    );
                }
            }
            for j in 0..c {
                assert!(
                    (dw[j] as f64 - rdw[j]).abs() <= 16.0 * U * mdw[j],
                    "ln dweight {} c={c} j={j}",
                    kern.describe()
                );
                assert!(
                    (db[j] as f64 - rdb[j]).abs() <= 16.0 * U * mdb[j],
                    "ln dbias {} c={c} j={j}",
                    kern.describe()
                );
            }
        }
    }
}

#[test]
fn adamw_accuracy() {
    let n = 1003;
    let p0: Vec<f32> = fill(n, 1);
    let g: Vec<f32> = fill_scaled(n, 2, 0.1);
    let m0: Vec<f32> = fill_scaled(n, 3, 0.01);
    let v0: Vec<f32> = fill(n, 4).iter().map(|v| v.abs() * 1e-3).collect();
    let mut hp = AdamW::at_step(3e-4, 0.9, 0.95, 1e-8, 0.1, 7);
    // The clipping factor scales every gradient before use.
    hp.grad_scale = 0.7;
    for kern in kernels() {
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        kern.adamw(&mut p, &g, &mut m, &mut v, &hp);
        for i in 0..n {
            let (b1, b2) = (hp.beta1 as f64, hp.beta2 as f64);
            let gi = g[i] as f64 * hp.grad_scale as f64;
            let mi = b1 * m0[i] as f64 + (1.0 - b1) * gi;
            let vi = b2 * v0[i] as f64 + (1.0 - b2) * gi * gi;
            let mhat = mi / hp.bias_correction1 as f64;
            let vhat = vi / hp.bias_correction2 as f64;
            let upd = mhat / (vhat.sqrt() + hp.eps as f64) + hp.weight_decay as f64 * p0[i] as f64;
            let pi = p0[i] as f64 - hp.lr as f64 * upd;
            let mmag = b1 * (m0[i] as f64).abs() + (1.0 - b1) * gi.abs();
            assert!(
                (m[i] as f64 - mi).abs() <= 8.0 * U * mmag,
                "adamw m {} i={i}",
                kern.describe()
            );
            assert!(
                (v[i] as f64 - vi).abs() <= 8.0 * U * vi,
                "adamw v {} i={i}",
                kern.describe()
            );
            let tol = 4.0 * U * (p0[i] as f64).abs()
                + 8.0
                    * U
                    * hp.lr as f64
                    * (mhat.abs() / (vhat.sqrt() + hp.eps as f64)
                        + (hp.weight_decay * p0[i]).abs() as f64);
            assert!(
                (p[i] as f64 - pi).abs() <= tol,
                "adamw p {} i={i}: {} vs {pi}",
                kern.describe(),
                p[i]
            );
        }
    }
}

#[test]
fn deterministic_bits() {
    let n = 4099;
    let x: Vec<f32> = fill_scaled(n, 9, 6.0);
    let g = fill(n, 10);
    let c = 97;
    let rows = n / c;
    let w = fill(c, 11);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for kern in kernels() {
        let run = || {
            let mut all = Vec::new();
            let mut out = vec![0.0; n];
            kern.gelu_forward(&mut out, &x);
            all.extend(bits(&out));
            let mut d = g.clone();
            kern.gelu_backward(&mut d, &x, &g);
            all.extend(bits(&d));
            let mut s = vec![0.0; rows * c];
            kern.softmax_rows(&mut s, &x[..rows * c], c);
            all.extend(bits(&s));
            let (mut o, mut mean, mut rstd) =
                (vec![0.0; rows * c], vec![0.0; rows], vec![0.0; rows]);
            kern.layernorm_forward(&mut o, &mut mean, &mut rstd, &x[..rows * c], &w, &w);
            all.extend(bits(&o));
            let (mut dx, mut dw, mut db) = (vec![0.0; rows * c], vec![0.0; c], vec![0.0; c]);
            kern.layernorm_backward(
                &mut dx,
                &mut dw,
                &mut db,
                &g[..rows * c],
                &x[..rows * c],
                &w,
                &mean,
                &rstd,
            );
            all.extend(bits(&dx));
            all.extend(bits(&dw));
            let (mut p, mut m, mut v) = (x.clone(), g.clone(), vec![0.1; n]);
            kern.adamw(
                &mut p,
                &g,
                &mut m,
                &mut v,
                &AdamW::at_step(1e-3, 0.9, 0.95, 1e-8, 0.1, 2),
            );
            all.extend(bits(&p));
            all
        };
        assert_eq!(run(), run(), "{} is not deterministic", kern.describe());
    }
}

#[test]
fn describe_names_the_path() {
    assert_eq!(SimdKernels::portable().describe(), "portable");
    let auto = SimdKernels::auto().describe();
    assert!(
        ["portable", "avx2+fma", "avx512f+fma"].contains(&auto.as_str()),
        "{auto}"
    );
}

#[test]
fn logsumexp_and_crossentropy_rows() {
    use cllm_core::kernels::Kernels;
    for cols in [1usize, 7, 16, 65, 256, 1001] {
        let x: Vec<f32> = fill_affine(cols, cols as u64, 12.0, 3.0);
        let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        let n = 37.0f64;
        for kern in kernels() {
            let got = Kernels::<f32>::logsumexp(&kern, &x) as f64;
            let tol = (8.0 + 2.0 * (cols as f64).sqrt()) * U * (max.abs() + 1.0);
            assert!(
                (got - lse).abs() <= tol,
                "{} cols {cols}: {got} vs {lse}",
                kern.describe()
            );
            let mut row = x.clone();
            let target = cols / 2;
            kern.crossentropy_backward_row(&mut row, lse as f32, target, (1.0 / n) as f32);
            for (i, (&r, &xi)) in row.iter().zip(&x).enumerate() {
                let d = xi as f64 - lse as f32 as f64;
                let want = d.exp() / n - if i == target { 1.0 / n } else { 0.0 };
                let tol = (4.0 + d.abs()) * U * (d.exp() / n)
                    + if i == target { 2.0 * U / n } else { 0.0 };
                assert!(
                    (r as f64 - want).abs() <= tol,
                    "{} cols {cols} i {i}: {r} vs {want}",
                    kern.describe()
                );
            }
        }
    }
    // Special rows keep the portable kernel's answers.
    for kern in kernels() {
        assert_eq!(Kernels::<f32>::logsumexp(&kern, &[]), f32::NEG_INFINITY);
        assert_eq!(
            Kernels::<f32>::logsumexp(&kern, &[f32::NEG_INFINITY; 3]),
            f32::NEG_INFINITY
        );
        assert_eq!(
            Kernels::<f32>::logsumexp(&kern, &[1.0, f32::INFINITY]),
            f32::INFINITY
        );
        assert!(Kernels::<f32>::logsumexp(&kern, &[1.0, f32::NAN, 2.0]).is_nan());
    }
}

/// The seam's AdamW (what the executor runs) agrees with the core's portable
/// update within the AdamW tolerance above.
#[test]
fn seam_adamw_matches_portable() {
    use cllm_core::kernels::{AdamWStep, Kernels, Portable};
    let n = 517;
    let p0 = fill(n, 21);
    let g: Vec<f32> = fill_scaled(n, 22, 0.3);
    let m0: Vec<f32> = fill_scaled(n, 23, 0.01);
    let v0: Vec<f32> = fill(n, 24).iter().map(|v| v.abs() * 1e-3).collect();
    let c = AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.1,
        bias_correction1: 1.0 - 0.9f32.powi(5),
        bias_correction2: 1.0 - 0.99f32.powi(5),
        grad_scale: 0.5,
    };
    let (mut pp, mut mp, mut vp) = (p0.clone(), m0.clone(), v0.clone());
    Portable.adamw(&mut pp, &g, &mut mp, &mut vp, &c);
    for kern in kernels() {
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        Kernels::<f32>::adamw(&kern, &mut p, &g, &mut m, &mut v, &c);
        for i in 0..n {
            let upd = (p0[i] - pp[i]).abs() as f64;
            assert!(
                (m[i] - mp[i]).abs() as f64 <= 8.0 * U * mp[i].abs().max(m0[i].abs()) as f64,
                "m {i}"
            );
            assert!(
                (v[i] - vp[i]).abs() as f64 <= 8.0 * U * vp[i] as f64,
                "v {i}"
            );
            let tol = 8.0 * U * p0[i].abs() as f64 + 16.0 * U * upd + 1e-12;
            assert!(
                (p[i] - pp[i]).abs() as f64 <= tol,
                "{} p {i}: {} vs {}",
                kern.describe(),
                p[i],
                pp[i]
            );
        }
    }
}

/// The fused pass backward uses must not change a bit: its GELU equals
/// `gelu_forward` and its derivative times `dout` equals `gelu_backward`,
/// for every kernel, over the dense sweep and every tail length.
#[test]
fn gelu_forward_grad_equals_the_separate_kernels() {
    let sweep = gelu_inputs();
    let mut inputs: Vec<Vec<f32>> = vec![sweep];
    inputs.extend(LENS.iter().map(|&n| fill_scaled(n, 40 + n as u64, 6.0)));
    for kern in kernels() {
        for x in &inputs {
            let n = x.len();
            let dout: Vec<f32> = fill_scaled(n, 9, 2.0);
            let mut want_y = vec![0.0; n];
            kern.gelu_forward(&mut want_y, x);
            let mut want_d = vec![0.0; n];
            kern.gelu_backward(&mut want_d, x, &dout);
            let mut y = with_tail(&vec![0.0; n]);
            let mut g = with_tail(x);
            kern.gelu_forward_grad(&mut y[..n], &mut g[..n]);
            tail_intact(&y, n, "gelu_forward_grad out");
            tail_intact(&g, n, "gelu_forward_grad x");
            for i in 0..n {
                assert_eq!(
                    y[i].to_bits(),
                    want_y[i].to_bits(),
                    "{} gelu at x = {}",
                    kern.describe(),
                    x[i]
                );
                let d = g[i] * dout[i];
                assert_eq!(
                    d.to_bits(),
                    want_d[i].to_bits(),
                    "{} gelu' at x = {}",
                    kern.describe(),
                    x[i]
                );
            }
        }
    }
}

/// The residual add, the product and the bias-gradient row sums give the
/// core's portable bits with every kernel and every tail, and stay inside
/// their slices.
#[test]
fn add_mul_and_row_sums_equal_portable() {
    use cllm_core::kernels::{Kernels, Portable};
    for kern in kernels() {
        for &n in &LENS {
            let (a, b) = (fill(n, 70 + n as u64), fill(n, 71 + n as u64));
            let (mut want_s, mut want_p) = (vec![0.0; n], vec![0.0; n]);
            Portable.add(&mut want_s, &a, &b);
            Portable.mul(&mut want_p, &a, &b);
            let mut out = with_tail(&vec![0.0; n]);
            kern.add(&mut out[..n], &a, &b);
            tail_intact(&out, n, "add");
            assert!(first_bit_difference(&out[..n], &want_s).is_none());
            kern.mul(&mut out[..n], &a, &b);
            tail_intact(&out, n, "mul");
            assert!(first_bit_difference(&out[..n], &want_p).is_none());
            for rows in [1, 3, 70] {
                // Rows of very different sizes, so the order of the adds shows.
                let m: Vec<f32> = fill(n * rows, 80 + n as u64)
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v * [1.0, 1e7, 1e-3][i % 3])
                    .collect();
                let acc0 = fill(n, 90 + n as u64);
                let mut want = acc0.clone();
                Portable.add_rows(&mut want, &m);
                let mut acc = with_tail(&acc0);
                kern.add_rows(&mut acc[..n], &m);
                tail_intact(&acc, n, "add_rows");
                let bad = first_bit_difference(&acc[..n], &want);
                assert_eq!(bad, None, "{} add_rows {rows}x{n}", kern.describe());
            }
        }
    }
}

#[test]
fn softmax_backward_row_accuracy() {
    for kern in kernels() {
        for &n in &LENS {
            let x = fill(n, 100 + n as u64);
            let mut p = vec![0.0f32; n];
            kern.softmax_row(&mut p, &x);
            let d0: Vec<f32> = fill_scaled(n, 101 + n as u64, 3.0);
            let scale = 0.176_776_7f32;
            let dot: f64 = p.iter().zip(&d0).map(|(&a, &b)| a as f64 * b as f64).sum();
            let abs_dot: f64 = p
                .iter()
                .zip(&d0)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            let mut d = with_tail(&d0);
            kern.softmax_backward_row(&mut d[..n], &p, scale);
            tail_intact(&d, n, "softmax_backward_row");
            for i in 0..n {
                let (pi, di) = (p[i] as f64, d0[i] as f64);
                let want = pi * (di - dot) * scale as f64;
                let tol = (4.0 * (pi * (di - dot)).abs() + (2 + n) as f64 * pi * abs_dot)
                    * U
                    * scale as f64;
                let err = (d[i] as f64 - want).abs();
                assert!(
                    err <= tol,
                    "{} n={n} i={i}: {} vs {want} (tol {tol})",
                    kern.describe(),
                    d[i]
                );
            }
        }
    }
}

/// The fused in-place scaled softmax attention uses gives the bits of
/// scaling the row and then the row softmax, with every kernel and tail
/// (all-negative rows included, where a padding lane in the max would show),
/// and the core's `Kernels::softmax_row` through the seam equals the
/// two-slice kernel.
#[test]
fn scaled_softmax_row_equals_scaling_then_softmax() {
    use cllm_core::kernels::Kernels;
    for kern in kernels() {
        for &n in &LENS {
            for (shift, scale) in [(0.0f32, 0.176_776_7f32), (-50.0, 1.0), (30.0, 0.125)] {
                let x: Vec<f32> = fill_affine(n, 110 + n as u64, 8.0, shift);
                let scaled: Vec<f32> = x.iter().map(|v| v * scale).collect();
                let mut want = vec![0.0; n];
                kern.softmax_row(&mut want, &scaled);
                let mut row = with_tail(&x);
                kern.scaled_softmax_row(&mut row[..n], scale);
                tail_intact(&row, n, "scaled_softmax_row");
                let bad = first_bit_difference(&row[..n], &want);
                assert_eq!(bad, None, "{} n={n} scale={scale}", kern.describe());
                let mut seam = scaled.clone();
                Kernels::softmax_row(&kern, &mut seam);
                assert!(first_bit_difference(&seam, &want).is_none());
            }
        }
    }
}

/// The whole-head causal softmax and its backward give, row by row, the
/// bits of the single-row kernels on each causal prefix and exact zeros
/// after it, with every kernel (the KV-cache path calls the single-row
/// kernel and must match the full forward pass bit for bit).
#[test]
fn causal_softmax_equals_the_row_kernels() {
    use cllm_core::kernels::Kernels;
    for kern in kernels() {
        for t in [1, 2, 7, 17, 33, 64] {
            let scale = 0.176_776_7f32;
            let s0: Vec<f32> = fill_scaled(t * t, 120 + t as u64, 9.0);
            let mut want = s0.clone();
            for i in 0..t {
                let row = &mut want[i * t..(i + 1) * t];
                kern.scaled_softmax_row(&mut row[..=i], scale);
                row[i + 1..].fill(0.0);
            }
            let mut p = with_tail(&s0);
            Kernels::causal_softmax(&kern, &mut p[..t * t], t, scale);
            tail_intact(&p, t * t, "causal_softmax");
            assert!(
                first_bit_difference(&p[..t * t], &want).is_none(),
                "{} causal_softmax t={t}",
                kern.describe()
            );

            let d0: Vec<f32> = fill_scaled(t * t, 130 + t as u64, 2.0);
            let mut want_d = d0.clone();
            for i in 0..t {
                let row = &mut want_d[i * t..(i + 1) * t];
                kern.softmax_backward_row(&mut row[..=i], &want[i * t..i * t + i + 1], scale);
                row[i + 1..].fill(0.0);
            }
            let mut d = with_tail(&d0);
            Kernels::causal_softmax_backward(&kern, &mut d[..t * t], &want, t, scale);
            tail_intact(&d, t * t, "causal_softmax_backward");
            assert!(
                first_bit_difference(&d[..t * t], &want_d).is_none(),
                "{} causal_softmax_backward t={t}",
                kern.describe()
            );
        }
    }
}
