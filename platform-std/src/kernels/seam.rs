//! `SimdKernels` plugged into the core's kernel seam: each method goes
//! straight to the ISA's entry in the dispatch table (`dispatch::Ops`) or to
//! the GEMM driver; `SimdKernels` itself keeps only what the trait lacks.
//!
//! Only what measurably pays is overridden (GEMM, GELU, LayerNorm, row
//! softmax and its backward, log-sum-exp and the cross-entropy gradient,
//! AdamW, and the residual add, product and bias-gradient sums);
//! everything else keeps the core's portable defaults.

use cllm_core::kernels::{AdamWStep, Kernels, Mat, MatMut};

use super::AdamW;

use super::{gemm, SimdKernels};

impl Kernels<f32> for SimdKernels {
    fn gemm(&self, a: Mat<'_, f32>, b: Mat<'_, f32>, c: MatMut<'_, f32>, accumulate: bool) {
        gemm::sgemm_with(self.isa, a, b, c, accumulate)
    }

    fn gemm_bias(&self, a: Mat<'_, f32>, b: Mat<'_, f32>, bias: &[f32], c: MatMut<'_, f32>) {
        gemm::sgemm_bias_with(self.isa, a, b, bias, c)
    }

    fn gemm_mul(&self, a: Mat<'_, f32>, b: Mat<'_, f32>, f: &[f32], c: MatMut<'_, f32>) {
        // Each strip is multiplied as it finishes: the bits of `gemm`, then
        // the product.
        gemm::sgemm_mul_with(self.isa, a, b, f, c)
    }

    fn gelu_forward(&self, out: &mut [f32], inp: &[f32]) {
        self.ops().gelu_forward(out, inp)
    }

    fn gelu_backward(&self, dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
        self.ops().gelu_backward(dinp, inp, dout)
    }

    fn gelu_forward_grad(&self, out: &mut [f32], x: &mut [f32]) {
        self.ops().gelu_forward_grad(out, x)
    }

    fn layernorm_forward(
        &self,
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        weight: &[f32],
        bias: &[f32],
        eps: f32,
    ) {
        // The SIMD kernel has GPT-2's epsilon built in.
        if eps == 1e-5 {
            SimdKernels::layernorm_forward(self, out, mean, rstd, inp, weight, bias)
        } else {
            cllm_core::kernels::Portable.layernorm_forward(out, mean, rstd, inp, weight, bias, eps)
        }
    }

    fn layernorm_backward(
        &self,
        dinp: &mut [f32],
        dweight: &mut [f32],
        dbias: &mut [f32],
        dout: &[f32],
        inp: &[f32],
        weight: &[f32],
        mean: &[f32],
        rstd: &[f32],
    ) {
        self.ops()
            .layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd)
    }

    fn softmax_row(&self, row: &mut [f32]) {
        // x·1 is x for every number x, so these are the plain softmax's bits.
        self.ops().scaled_softmax_row(row, 1.0)
    }

    fn scaled_softmax_row(&self, row: &mut [f32], scale: f32) {
        self.ops().scaled_softmax_row(row, scale)
    }

    fn causal_softmax(&self, p: &mut [f32], t: usize, scale: f32) {
        self.ops().causal_softmax(p, t, scale)
    }

    fn causal_softmax_backward(&self, d: &mut [f32], p: &[f32], t: usize, scale: f32) {
        self.ops().causal_softmax_backward(d, p, t, scale)
    }

    fn softmax_backward_row(&self, d: &mut [f32], p: &[f32], scale: f32) {
        // The dot product is summed lane-wise: not the portable bits.
        self.ops().softmax_backward_row(d, p, scale)
    }

    fn add(&self, out: &mut [f32], a: &[f32], b: &[f32]) {
        self.ops().add(out, a, b)
    }

    fn mul(&self, out: &mut [f32], a: &[f32], b: &[f32]) {
        self.ops().mul(out, a, b)
    }

    fn add_rows(&self, acc: &mut [f32], m: &[f32]) {
        self.ops().add_rows(acc, m)
    }

    fn logsumexp(&self, row: &[f32]) -> f32 {
        if row.is_empty() {
            return f32::NEG_INFINITY;
        }
        self.ops().logsumexp(row)
    }

    fn crossentropy_backward_row(&self, row: &mut [f32], lse: f32, target: usize, inv_n: f32) {
        assert!(
            target < row.len(),
            "crossentropy_backward_row: target {target} outside a row of {}",
            row.len()
        );
        SimdKernels::exp_shift_scale(self, row, lse, inv_n);
        row[target] -= inv_n;
    }

    fn adamw(
        &self,
        params: &mut [f32],
        grads: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        c: &AdamWStep,
    ) {
        let hp = AdamW {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            bias_correction1: c.bias_correction1,
            bias_correction2: c.bias_correction2,
            grad_scale: c.grad_scale,
        };
        SimdKernels::adamw(self, params, grads, m, v, &hp)
    }
}
