//! The kernel seam: the dense math the model spends its time in.
//!
//! [`Kernels`] has a portable default for every method, so a platform crate
//! overrides only what pays (a SIMD/BLAS `gemm` for `f32`, say) and keeps the
//! rest. [`Portable`] uses every default.
//!
//! # Determinism
//! The portable kernels use a fixed, documented order of operations and no
//! FMA, so their results are bit-identical on every platform:
//! * `gemm`: `C[i][j] ← C[i][j] + A[i][0]·B[0][j] + A[i][1]·B[1][j] + …`,
//!   evaluated left to right over the shared dimension, whatever the strides
//!   or sizes (see [`gemm`](mod@gemm)). Row `i` of the result therefore
//!   depends only on row `i` of `A`, which the causality and KV-cache tests
//!   rely on.
//! * reductions (`layernorm`, `softmax`, `logsumexp`) sum in index order.
//!
//! # Panics
//! Kernels are called by the model with sizes it has already validated, so a
//! size mismatch here is a bug in the caller: the kernels check sizes once up
//! front with `assert!` (cheap, O(1)) and panic with the offending numbers.

pub mod gemm;
mod mat;

pub use mat::{assert_row_major, product_dims, Mat, MatMut};

use crate::real::Real;

/// One AdamW step's constants for a run of parameters ([`Kernels::adamw`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// This step's learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to `√v̂`.
    pub eps: f32,
    /// Decoupled weight decay of this run (0 for biases, LayerNorm, wpe).
    pub weight_decay: f32,
    /// `1 − β1^t`.
    pub bias_correction1: f32,
    /// `1 − β2^t`.
    pub bias_correction2: f32,
    /// Multiplies every gradient (the clipping factor; 1 for none).
    pub grad_scale: f32,
}

/// GELU's `sqrt(2/π)`.
const GELU_SCALE: f64 = 0.797_884_560_802_865_4;
/// GELU's cubic coefficient.
const GELU_CUBIC: f64 = 0.044_715;

/// The math kernels the model calls. Every method has a portable default.
pub trait Kernels<R: Real>: Sync {
    /// `C = A·B` (`accumulate = false`) or `C += A·B` (`accumulate = true`)
    /// for `A` `m×k`, `B` `k×n` and `C` `m×n`. The operands are strided
    /// views ([`Mat`], [`MatMut`]), so transposes are free ([`Mat::t`]).
    ///
    /// # Panics
    /// If the shapes do not agree ([`product_dims`]), if a slice is too short
    /// for its view, or if `C`'s rows overlap (`m > 1`, `c.cs == 1` and
    /// `c.rs < n`).
    fn gemm(&self, a: Mat<'_, R>, b: Mat<'_, R>, c: MatMut<'_, R>, accumulate: bool) {
        gemm::gemm(a, b, c, accumulate);
    }

    /// `C = bias + A·B` for a row-major `C` (`c.cs == 1`), `bias` (`n`
    /// values) added to every row: a linear layer's forward. The default
    /// fills each row with `bias` and calls [`Kernels::gemm`] with
    /// `accumulate`, so every element is `bias[j] + (A·B)[i][j]`; an
    /// override must give the same bits as that (e.g. by adding the bias as
    /// it stores the product).
    ///
    /// # Panics
    /// As [`Kernels::gemm`], or if `c.cs != 1` or `bias` is shorter than `n`.
    fn gemm_bias(&self, a: Mat<'_, R>, b: Mat<'_, R>, bias: &[R], c: MatMut<'_, R>) {
        let (m, _, n) = product_dims("gemm_bias", &a, &b, &c);
        assert_row_major("gemm_bias", &c);
        assert!(
            bias.len() >= n,
            "gemm_bias: bias of {} for {n} columns",
            bias.len()
        );
        let rsc = c.rs;
        for i in 0..m {
            c.data[i * rsc..i * rsc + n].copy_from_slice(&bias[..n]);
        }
        self.gemm(a, b, c, true);
    }

    /// `C = (A·B) ∘ F` for a row-major `C` (`c.cs == 1`; `F` is `m×n` with
    /// C's row stride; C is overwritten): [`Kernels::gemm`] followed by the
    /// elementwise product on each row, which is what the default does (an
    /// override must give those bits, e.g. by multiplying each part of C as
    /// it finishes).
    ///
    /// # Panics
    /// As `gemm`, or if `c.cs != 1` or `f` does not hold the `m×n` view.
    fn gemm_mul(&self, a: Mat<'_, R>, b: Mat<'_, R>, f: &[R], mut c: MatMut<'_, R>) {
        let (m, _, n) = product_dims("gemm_mul", &a, &b, &c);
        assert_row_major("gemm_mul", &c);
        let rsc = c.rs;
        self.gemm(a, b, c.reborrow(), false);
        for i in 0..m {
            let row = i * rsc..i * rsc + n;
            for (x, &y) in c.data[row.clone()].iter_mut().zip(&f[row]) {
                *x *= y;
            }
        }
    }

    /// `out[i] = gelu(inp[i])` with GPT-2's tanh approximation
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    ///
    /// # Panics
    /// If the lengths differ.
    fn gelu_forward(&self, out: &mut [R], inp: &[R]) {
        assert_eq!(out.len(), inp.len(), "gelu_forward: out and inp lengths");
        let s = R::from_f64(GELU_SCALE);
        let c = R::from_f64(GELU_CUBIC);
        let half = R::from_f64(0.5);
        for (o, &x) in out.iter_mut().zip(inp) {
            let cube = c * x * x * x;
            *o = half * x * (R::ONE + (s * (x + cube)).tanh());
        }
    }

    /// `dinp[i] = gelu'(inp[i]) · dout[i]` (overwrites: the caller need not
    /// zero `dinp`).
    ///
    /// # Panics
    /// If the lengths differ.
    fn gelu_backward(&self, dinp: &mut [R], inp: &[R], dout: &[R]) {
        assert!(
            dinp.len() == inp.len() && inp.len() == dout.len(),
            "gelu_backward: lengths {} {} {}",
            dinp.len(),
            inp.len(),
            dout.len()
        );
        for ((d, &x), &g) in dinp.iter_mut().zip(inp).zip(dout) {
            *d = gelu_grad(x) * g;
        }
    }

    /// `out[i] = gelu(x[i])` and, in place, `x[i] = gelu'(x[i])`: the two
    /// values the backward pass needs from the pre-activation, in one pass
    /// so an implementation can share their exponential. Then
    /// [`Kernels::mul`] of `x` and `dout` is [`Kernels::gelu_backward`].
    ///
    /// Bit for bit, `out` must equal [`Kernels::gelu_forward`] and `x·dout`
    /// what `gelu_backward` gives (the default uses this trait's
    /// `gelu_forward` and the portable derivative, as `gelu_backward`'s
    /// default does).
    ///
    /// # Panics
    /// If the lengths differ.
    fn gelu_forward_grad(&self, out: &mut [R], x: &mut [R]) {
        self.gelu_forward(out, x);
        for v in x.iter_mut() {
            *v = gelu_grad(*v);
        }
    }

    /// LayerNorm of each row of `inp` (`rows = mean.len()`, width
    /// `C = weight.len()`): `out = (x − μ)·rstd·weight + bias` with the biased
    /// variance, `rstd = 1/√(var + eps)`. Stores `μ` and `rstd` per row for
    /// the backward pass.
    ///
    /// # Panics
    /// If the lengths do not match `rows × C`.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_forward(
        &self,
        out: &mut [R],
        mean: &mut [R],
        rstd: &mut [R],
        inp: &[R],
        weight: &[R],
        bias: &[R],
        eps: R,
    ) {
        let c = weight.len();
        let rows = mean.len();
        assert!(
            c > 0
                && bias.len() == c
                && rstd.len() == rows
                && inp.len() == rows * c
                && out.len() == rows * c,
            "layernorm_forward: rows {rows}, C {c}, bias {}, rstd {}, inp {}, out {}",
            bias.len(),
            rstd.len(),
            inp.len(),
            out.len()
        );
        let inv_c = R::ONE / R::from_usize(c);
        for r in 0..rows {
            let x = &inp[r * c..(r + 1) * c];
            let o = &mut out[r * c..(r + 1) * c];
            let mut sum = R::ZERO;
            for &v in x {
                sum += v;
            }
            let mu = sum * inv_c;
            let mut var = R::ZERO;
            for &v in x {
                let d = v - mu;
                var += d * d;
            }
            let rs = R::ONE / (var * inv_c + eps).sqrt();
            for j in 0..c {
                o[j] = (x[j] - mu) * rs * weight[j] + bias[j];
            }
            mean[r] = mu;
            rstd[r] = rs;
        }
    }

    /// Backward of [`Kernels::layernorm_forward`]; *accumulates* into
    /// `dinp`, `dweight` and `dbias`.
    ///
    /// # Panics
    /// If the lengths do not match `rows × C`.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        dinp: &mut [R],
        dweight: &mut [R],
        dbias: &mut [R],
        dout: &[R],
        inp: &[R],
        weight: &[R],
        mean: &[R],
        rstd: &[R],
    ) {
        let c = weight.len();
        let rows = mean.len();
        assert!(
            c > 0
                && dweight.len() == c
                && dbias.len() == c
                && rstd.len() == rows
                && inp.len() == rows * c
                && dout.len() == rows * c
                && dinp.len() == rows * c,
            "layernorm_backward: rows {rows}, C {c}, dweight {}, dbias {}, rstd {}, inp {}, dout {}, dinp {}",
            dweight.len(),
            dbias.len(),
            rstd.len(),
            inp.len(),
            dout.len(),
            dinp.len()
        );
        let inv_c = R::ONE / R::from_usize(c);
        for r in 0..rows {
            let x = &inp[r * c..(r + 1) * c];
            let g = &dout[r * c..(r + 1) * c];
            let di = &mut dinp[r * c..(r + 1) * c];
            let (mu, rs) = (mean[r], rstd[r]);
            // The two row means that couple the elements of a normalised row.
            let mut dnorm_mean = R::ZERO;
            let mut dnorm_norm_mean = R::ZERO;
            for j in 0..c {
                let norm = (x[j] - mu) * rs;
                let dnorm = weight[j] * g[j];
                dnorm_mean += dnorm;
                dnorm_norm_mean += dnorm * norm;
            }
            dnorm_mean *= inv_c;
            dnorm_norm_mean *= inv_c;
            for j in 0..c {
                let norm = (x[j] - mu) * rs;
                let dnorm = weight[j] * g[j];
                dbias[j] += g[j];
                dweight[j] += norm * g[j];
                di[j] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rs;
            }
        }
    }

    /// Softmax backward of one row, scaled: `d[i] = p[i]·(d[i] − ⟨p, d⟩)·scale`
    /// (`d` holds the gradient of the probabilities `p` on entry and that of
    /// the scores on return).
    ///
    /// # Panics
    /// If the lengths differ.
    fn softmax_backward_row(&self, d: &mut [R], p: &[R], scale: R) {
        assert_eq!(d.len(), p.len(), "softmax_backward_row: length mismatch");
        let mut dot = R::ZERO;
        for (&pv, &dv) in p.iter().zip(d.iter()) {
            dot += pv * dv;
        }
        for (dv, &pv) in d.iter_mut().zip(p) {
            *dv = pv * (*dv - dot) * scale;
        }
    }

    /// `row = softmax(row·scale)`: every element multiplied by `scale` (and
    /// rounded), then [`Kernels::softmax_row`]. An implementation may fuse
    /// the two but must give those bits (attention and the KV-cache path
    /// both call this).
    fn scaled_softmax_row(&self, row: &mut [R], scale: R) {
        for x in row.iter_mut() {
            *x *= scale;
        }
        self.softmax_row(row);
    }

    /// Causal softmax of one head's `t×t` scores `p` (row-major), in place:
    /// row `i` becomes [`Kernels::scaled_softmax_row`] of its first `i + 1`
    /// entries followed by exact zeros. An override must give those bits; it
    /// saves a call per row.
    ///
    /// # Panics
    /// If `p` is shorter than `t·t`.
    fn causal_softmax(&self, p: &mut [R], t: usize, scale: R) {
        for (i, row) in p[..t * t].chunks_exact_mut(t.max(1)).enumerate() {
            let (live, masked) = row.split_at_mut(i + 1);
            self.scaled_softmax_row(live, scale);
            masked.fill(R::ZERO);
        }
    }

    /// Backward of [`Kernels::causal_softmax`]: row `i` of the `t×t`
    /// gradient `d` becomes [`Kernels::softmax_backward_row`] of its first
    /// `i + 1` entries (with row `i` of the probabilities `p`) followed by
    /// exact zeros. An override must give those bits.
    ///
    /// # Panics
    /// If `d` or `p` is shorter than `t·t`.
    fn causal_softmax_backward(&self, d: &mut [R], p: &[R], t: usize, scale: R) {
        let rows = d[..t * t]
            .chunks_exact_mut(t.max(1))
            .zip(p[..t * t].chunks_exact(t.max(1)));
        for (i, (drow, prow)) in rows.enumerate() {
            let (live, masked) = drow.split_at_mut(i + 1);
            self.softmax_backward_row(live, &prow[..i + 1], scale);
            masked.fill(R::ZERO);
        }
    }

    /// In-place numerically stable softmax of one row (max subtracted first).
    /// An empty row is left alone.
    fn softmax_row(&self, row: &mut [R]) {
        if row.is_empty() {
            return;
        }
        let mut max = R::NEG_INFINITY;
        for &v in row.iter() {
            max = max.max(v);
        }
        let mut sum = R::ZERO;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = R::ONE / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }

    /// `ln Σ exp(row[i])`, computed stably (max subtracted first).
    /// Returns `-∞` for an empty row.
    fn logsumexp(&self, row: &[R]) -> R {
        let mut max = R::NEG_INFINITY;
        for &v in row {
            max = max.max(v);
        }
        if !max.is_finite() {
            return max;
        }
        let mut sum = R::ZERO;
        for &v in row {
            sum += (v - max).exp();
        }
        max + sum.ln()
    }

    /// Cross-entropy backward for one row of logits, in place, for
    /// `d(mean loss) = 1`: `row[i] = exp(row[i] − lse)·inv_n`, then
    /// `row[target] −= inv_n` (`lse` is the row's log-sum-exp, `inv_n` is
    /// 1/positions).
    ///
    /// # Panics
    /// If `target` is outside the row.
    fn crossentropy_backward_row(&self, row: &mut [R], lse: R, target: usize, inv_n: R) {
        assert!(
            target < row.len(),
            "crossentropy_backward_row: target {target} outside a row of {}",
            row.len()
        );
        for x in row.iter_mut() {
            *x = (*x - lse).exp() * inv_n;
        }
        row[target] -= inv_n;
    }

    /// One AdamW step over a run of parameters that share one weight-decay
    /// rule: with `g = grad·grad_scale`,
    /// `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
    /// `p ← p − lr·(m̂/(√v̂ + ε) + wd·p)`, `m̂ = m/bc1`, `v̂ = v/bc2`.
    ///
    /// # Panics
    /// If the lengths differ.
    fn adamw(&self, params: &mut [R], grads: &[R], m: &mut [R], v: &mut [R], c: &AdamWStep) {
        assert!(
            grads.len() == params.len() && m.len() == params.len() && v.len() == params.len(),
            "adamw: lengths {} {} {} {}",
            params.len(),
            grads.len(),
            m.len(),
            v.len()
        );
        let f = |x: f32| R::from_f64(x as f64);
        let (b1, b2, scale) = (f(c.beta1), f(c.beta2), f(c.grad_scale));
        let (ob1, ob2) = (R::ONE - b1, R::ONE - b2);
        let (bc1, bc2, lr, eps, wd) = (
            f(c.bias_correction1),
            f(c.bias_correction2),
            f(c.lr),
            f(c.eps),
            f(c.weight_decay),
        );
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            let g = g * scale;
            *m = b1 * *m + ob1 * g;
            *v = b2 * *v + ob2 * g * g;
            let mhat = *m / bc1;
            let vhat = *v / bc2;
            *p -= lr * (mhat / (vhat.sqrt() + eps) + wd * *p);
        }
    }

    /// `out[i] = a[i] + b[i]` (the residual connection).
    ///
    /// # Panics
    /// If the lengths differ.
    fn add(&self, out: &mut [R], a: &[R], b: &[R]) {
        assert!(
            out.len() == a.len() && a.len() == b.len(),
            "add: lengths {} {} {}",
            out.len(),
            a.len(),
            b.len()
        );
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = x + y;
        }
    }

    /// `acc[j] += Σ_r m[r][j]` over the rows of `m` (`acc.len()` wide), each
    /// column summed in row order (a bias gradient). An implementation may
    /// vectorise across columns but must keep that order.
    ///
    /// # Panics
    /// If `m` is not whole rows of `acc.len()` (or `acc` is empty and `m` is not).
    fn add_rows(&self, acc: &mut [R], m: &[R]) {
        let c = acc.len();
        assert!(
            m.len().is_multiple_of(c),
            "add_rows: {} elements are not whole rows of {c}",
            m.len()
        );
        if c == 0 {
            return;
        }
        for row in m.chunks_exact(c) {
            for (a, &x) in acc.iter_mut().zip(row) {
                *a += x;
            }
        }
    }

    /// `out = a ∘ b` (elementwise product).
    ///
    /// # Panics
    /// If the lengths differ.
    fn mul(&self, out: &mut [R], a: &[R], b: &[R]) {
        assert!(
            out.len() == a.len() && a.len() == b.len(),
            "mul: lengths {} {} {}",
            out.len(),
            a.len(),
            b.len()
        );
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = x * y;
        }
    }
}

/// gelu'(x) for the tanh approximation (the portable derivative).
fn gelu_grad<R: Real>(x: R) -> R {
    let s = R::from_f64(GELU_SCALE);
    let c = R::from_f64(GELU_CUBIC);
    let c3 = R::from_f64(3.0 * GELU_CUBIC);
    let half = R::from_f64(0.5);
    let th = (s * (x + c * x * x * x)).tanh();
    let sech2 = R::ONE - th * th;
    half * (R::ONE + th) + half * x * sech2 * s * (R::ONE + c3 * x * x)
}

/// The portable kernels: every [`Kernels`] default, for any [`Real`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Portable;

impl<R: Real> Kernels<R> for Portable {}

#[cfg(test)]
mod tests {
    use super::*;

    fn gelu_ref(x: f64) -> f64 {
        0.5 * x * (1.0 + libm::tanh(GELU_SCALE * (x + GELU_CUBIC * x * x * x)))
    }

    #[test]
    fn gelu_forward_grad_equals_forward_and_backward() {
        let xs = [-9.0f32, -4.0, -1.3, -0.2, -0.0, 0.0, 0.4, 1.7, 3.5, 12.0];
        let dout = [0.3f32, -1.0, 2.5, 1.0, 1.0, -0.7, 0.9, 1.1, -2.0, 0.5];
        let (mut y0, mut d0) = ([0.0f32; 10], [0.0f32; 10]);
        Portable.gelu_forward(&mut y0, &xs);
        Portable.gelu_backward(&mut d0, &xs, &dout);
        let (mut y, mut g, mut d) = ([0.0f32; 10], xs, [0.0f32; 10]);
        Portable.gelu_forward_grad(&mut y, &mut g);
        Portable.mul(&mut d, &g, &dout);
        for i in 0..10 {
            assert_eq!(y[i].to_bits(), y0[i].to_bits(), "gelu at {}", xs[i]);
            assert_eq!(d[i].to_bits(), d0[i].to_bits(), "gelu' at {}", xs[i]);
        }
    }

    #[test]
    fn gelu_backward_matches_finite_differences() {
        let xs = [-4.0, -1.3, -0.2, 0.0, 0.4, 1.7, 3.5];
        let mut d = [0.0f64; 7];
        let ones = [1.0f64; 7];
        Portable.gelu_backward(&mut d, &xs, &ones);
        for (i, &x) in xs.iter().enumerate() {
            let h = 1e-6;
            let fd = (gelu_ref(x + h) - gelu_ref(x - h)) / (2.0 * h);
            assert!((fd - d[i]).abs() < 1e-8, "x {x}: {fd} vs {}", d[i]);
        }
        let mut out = [0.0f64; 7];
        Portable.gelu_forward(&mut out, &xs);
        for (o, &x) in out.iter().zip(&xs) {
            assert!((o - gelu_ref(x)).abs() < 1e-15);
        }
    }

    #[test]
    fn layernorm_normalises_and_backward_matches_fd() {
        let c = 5;
        let x = [0.3f64, -1.2, 2.0, 0.7, -0.1, 1.0, 1.5, -2.5, 0.0, 0.25];
        let w = [1.1, 0.9, -0.5, 2.0, 0.3];
        let b = [0.1, -0.2, 0.0, 0.5, 1.0];
        let g = [0.7, -0.3, 1.2, 0.05, -0.9, 0.2, 0.4, -1.1, 0.6, 0.8];
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let (mut o, mut m, mut r) = ([0.0; 10], [0.0; 2], [0.0; 2]);
            Portable.layernorm_forward(&mut o, &mut m, &mut r, x, w, b, 1e-5);
            o.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>()
        };
        let (mut o, mut m, mut r) = ([0.0; 10], [0.0; 2], [0.0; 2]);
        Portable.layernorm_forward(&mut o, &mut m, &mut r, &x, &[1.0; 5], &[0.0; 5], 1e-5);
        let mean0: f64 = o[..c].iter().sum::<f64>() / c as f64;
        let var0: f64 = o[..c].iter().map(|v| v * v).sum::<f64>() / c as f64;
        assert!(
            mean0.abs() < 1e-12 && (var0 - 1.0).abs() < 1e-4,
            "{mean0} {var0}"
        );
        Portable.layernorm_forward(&mut o, &mut m, &mut r, &x, &w, &b, 1e-5);
        let (mut dx, mut dw, mut db) = ([0.0; 10], [0.0; 5], [0.0; 5]);
        Portable.layernorm_backward(&mut dx, &mut dw, &mut db, &g, &x, &w, &m, &r);
        let h = 1e-6;
        for i in 0..10 {
            let (mut xp, mut xm) = (x, x);
            xp[i] += h;
            xm[i] -= h;
            let fd = (loss(&xp, &w, &b) - loss(&xm, &w, &b)) / (2.0 * h);
            assert!((fd - dx[i]).abs() < 1e-7, "dx[{i}] {fd} vs {}", dx[i]);
        }
        for j in 0..c {
            let (mut wp, mut wm) = (w, w);
            wp[j] += h;
            wm[j] -= h;
            let fd = (loss(&x, &wp, &b) - loss(&x, &wm, &b)) / (2.0 * h);
            assert!((fd - dw[j]).abs() < 1e-7, "dw[{j}] {fd} vs {}", dw[j]);
            assert!((db[j] - (g[j] + g[j + c])).abs() < 1e-15);
        }
    }

    #[test]
    fn softmax_and_logsumexp_are_stable() {
        let mut row = [1000.0f32, 1001.0, 999.0];
        let lse = Portable.logsumexp(&row);
        Portable.softmax_row(&mut row);
        let s: f32 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-6 && row.iter().all(|p| p.is_finite()));
        assert!((row[1] - 0.665_240_9).abs() < 1e-6, "{row:?}");
        assert!((lse - 1_001.407_6).abs() < 1e-3, "{lse}");
        assert_eq!(Kernels::<f32>::logsumexp(&Portable, &[]), f32::NEG_INFINITY);
    }
}
