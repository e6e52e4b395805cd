//! Shape checks and ISA dispatch for the elementwise and row kernels; the
//! kernels themselves are generic, in `simd`.

use super::simd;
use super::Isa;

pub use super::simd::AdamW;

/// Calls `simd::$f::<f32>` or the x86 entry point matching `$isa`.
macro_rules! dispatch {
    ($isa:expr, $f:ident ( $($arg:expr),* )) => {
        match $isa {
            // SAFETY: the scalar instantiation uses no special instructions;
            // the caller checked the shapes the kernel's contract asks for.
            Isa::Scalar => unsafe { simd::$f::<f32>($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                assert!($isa.supported());
                // SAFETY: AVX2+FMA asserted above; shapes checked by the caller.
                unsafe { super::x86::avx2::$f($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Amx => {
                assert!($isa.supported());
                // SAFETY: AVX-512F asserted above; shapes checked by the caller.
                unsafe { super::x86::avx512::$f($($arg),*) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 ISA on another architecture"),
        }
    };
}

pub(super) fn exp(isa: Isa, out: &mut [f32], inp: &[f32]) {
    assert_eq!(out.len(), inp.len(), "exp: length mismatch");
    dispatch!(isa, exp(out, inp))
}

pub(super) fn logsumexp(isa: Isa, inp: &[f32]) -> f32 {
    dispatch!(isa, logsumexp(inp))
}

pub(super) fn exp_shift_scale(isa: Isa, row: &mut [f32], shift: f32, scale: f32) {
    dispatch!(isa, exp_shift_scale(row, shift, scale))
}

pub(super) fn gelu_forward(isa: Isa, out: &mut [f32], inp: &[f32]) {
    assert_eq!(out.len(), inp.len(), "gelu_forward: length mismatch");
    dispatch!(isa, gelu_forward(out, inp))
}

pub(super) fn gelu_backward(isa: Isa, dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    assert!(
        dinp.len() == inp.len() && dout.len() == inp.len(),
        "gelu_backward: length mismatch"
    );
    dispatch!(isa, gelu_backward(dinp, inp, dout))
}

pub(super) fn gelu_forward_grad(isa: Isa, out: &mut [f32], x: &mut [f32]) {
    assert_eq!(out.len(), x.len(), "gelu_forward_grad: length mismatch");
    dispatch!(isa, gelu_forward_grad(out, x))
}

/// Rows in a `rows × c` buffer, after checking it is whole rows.
fn rows_of(what: &str, len: usize, c: usize) -> usize {
    assert!(c > 0, "{what}: zero-width rows");
    assert_eq!(len % c, 0, "{what}: length {len} is not whole rows of {c}");
    len / c
}

pub(super) fn layernorm_forward(
    isa: Isa,
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
) {
    let c = weight.len();
    let rows = rows_of("layernorm_forward", inp.len(), c);
    assert!(
        bias.len() == c && out.len() == inp.len() && mean.len() == rows && rstd.len() == rows,
        "layernorm_forward: shape mismatch"
    );
    dispatch!(isa, layernorm_forward(out, mean, rstd, inp, weight, bias))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn layernorm_backward(
    isa: Isa,
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
) {
    let c = weight.len();
    let rows = rows_of("layernorm_backward", inp.len(), c);
    assert!(
        dweight.len() == c
            && dbias.len() == c
            && dinp.len() == inp.len()
            && dout.len() == inp.len()
            && mean.len() == rows
            && rstd.len() == rows,
        "layernorm_backward: shape mismatch"
    );
    dispatch!(
        isa,
        layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd)
    )
}

pub(super) fn softmax_row(isa: Isa, out: &mut [f32], inp: &[f32]) {
    assert_eq!(out.len(), inp.len(), "softmax_row: length mismatch");
    if inp.is_empty() {
        return;
    }
    dispatch!(isa, softmax_row(out, inp))
}

pub(super) fn scaled_softmax_row(isa: Isa, row: &mut [f32], scale: f32) {
    if row.is_empty() {
        return;
    }
    dispatch!(isa, scaled_softmax_row(row, scale))
}

pub(super) fn causal_softmax(isa: Isa, p: &mut [f32], t: usize, scale: f32) {
    assert!(
        p.len() >= t * t,
        "causal_softmax: {} floats for {t}×{t}",
        p.len()
    );
    dispatch!(isa, causal_softmax(p, t, scale))
}

pub(super) fn causal_softmax_backward(isa: Isa, d: &mut [f32], p: &[f32], t: usize, scale: f32) {
    assert!(
        d.len() >= t * t && p.len() >= t * t,
        "causal_softmax_backward: {} and {} floats for {t}×{t}",
        d.len(),
        p.len()
    );
    dispatch!(isa, causal_softmax_backward(d, p, t, scale))
}

pub(super) fn add(isa: Isa, out: &mut [f32], a: &[f32], b: &[f32]) {
    assert!(
        out.len() == a.len() && a.len() == b.len(),
        "add: lengths {} {} {}",
        out.len(),
        a.len(),
        b.len()
    );
    dispatch!(isa, add(out, a, b))
}

pub(super) fn mul(isa: Isa, out: &mut [f32], a: &[f32], b: &[f32]) {
    assert!(
        out.len() == a.len() && a.len() == b.len(),
        "mul: lengths {} {} {}",
        out.len(),
        a.len(),
        b.len()
    );
    dispatch!(isa, mul(out, a, b))
}

pub(super) fn mul_in_place(isa: Isa, acc: &mut [f32], f: &[f32]) {
    assert_eq!(acc.len(), f.len(), "mul_in_place: length mismatch");
    dispatch!(isa, mul_in_place(acc, f))
}

pub(super) fn add_rows(isa: Isa, acc: &mut [f32], m: &[f32]) {
    let c = acc.len();
    assert!(
        m.len().is_multiple_of(c),
        "add_rows: {} elements are not whole rows of {c}",
        m.len()
    );
    if c == 0 {
        return;
    }
    dispatch!(isa, add_rows(acc, m))
}

pub(super) fn softmax_backward_row(isa: Isa, d: &mut [f32], p: &[f32], scale: f32) {
    assert_eq!(d.len(), p.len(), "softmax_backward_row: length mismatch");
    dispatch!(isa, softmax_backward_row(d, p, scale))
}

pub(super) fn adamw(
    isa: Isa,
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    hp: &AdamW,
) {
    let n = params.len();
    assert!(
        grads.len() == n && m.len() == n && v.len() == n,
        "adamw: length mismatch"
    );
    dispatch!(isa, adamw(params, grads, m, v, hp))
}
