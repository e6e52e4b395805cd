//! The layers of GPT-2, each forward next to its hand-written backward
//! (llm.c style: flat row-major buffers, `B` sequences × `T` tokens).
//! LayerNorm and GELU are [`Kernels`] methods; this file holds the layers
//! built from them and from `gemm`.
//!
//! Backward functions *accumulate* (`+=`) into parameter gradients and into
//! the residual-stream gradient, and *overwrite* the activation gradients
//! they produce (so those scratch buffers need no zeroing).

use crate::kernels::{Kernels, Mat, MatMut};
use crate::real::Real;

/// Rows of attention scores computed per `gemm` call: the causal mask wastes
/// at most this many columns per row, instead of half the `T×T` square.
const ATT_ROW_BLOCK: usize = 32;

// ---------------------------------------------------------------- encoder

/// `out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]`. Tokens are already validated.
pub(crate) fn encoder_forward<R: Real>(
    out: &mut [R],
    tokens: &[u32],
    wte: &[R],
    wpe: &[R],
    t: usize,
    c: usize,
) {
    for (i, (o, &tok)) in out.chunks_exact_mut(c).zip(tokens).enumerate() {
        let e = &wte[tok as usize * c..][..c];
        let p = &wpe[(i % t) * c..][..c];
        for ((o, &e), &p) in o.iter_mut().zip(e).zip(p) {
            *o = e + p;
        }
    }
}

/// Scatters the embedding gradient: `dwte[tok] += dout`, `dwpe[t] += dout`.
pub(crate) fn encoder_backward<R: Real>(
    dwte: &mut [R],
    dwpe: &mut [R],
    dout: &[R],
    tokens: &[u32],
    t: usize,
    c: usize,
) {
    for (i, (d, &tok)) in dout.chunks_exact(c).zip(tokens).enumerate() {
        for (g, &x) in dwte[tok as usize * c..][..c].iter_mut().zip(d) {
            *g += x;
        }
        for (g, &x) in dwpe[(i % t) * c..][..c].iter_mut().zip(d) {
            *g += x;
        }
    }
}

// ----------------------------------------------------------------- matmul

/// `out[rows×oc] = inp[rows×ic] · w[ic×oc] + bias` (GPT-2 `Conv1D`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_forward<R: Real, K: Kernels<R>>(
    k: &K,
    out: &mut [R],
    inp: &[R],
    w: &[R],
    bias: &[R],
    rows: usize,
    ic: usize,
    oc: usize,
) {
    let (inp, w) = (Mat::row_major(inp, rows, ic), Mat::row_major(w, ic, oc));
    k.gemm_bias(inp, w, bias, MatMut::row_major(out, rows, oc));
}

/// Backward of [`matmul_forward`]: `dinp = dout · wᵀ` (overwritten; times
/// `dinp_factor` elementwise when given, e.g. the activation's derivative),
/// `dw (+)= inpᵀ · dout` (added when `accumulate`, else written),
/// `dbias += Σ_rows dout`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_backward<R: Real, K: Kernels<R>>(
    k: &K,
    dinp: &mut [R],
    dw: &mut [R],
    dbias: &mut [R],
    dout: &[R],
    inp: &[R],
    w: &[R],
    rows: usize,
    ic: usize,
    oc: usize,
    accumulate: bool,
    dinp_factor: Option<&[R]>,
) {
    let (dout_m, w) = (Mat::row_major(dout, rows, oc), Mat::row_major(w, ic, oc));
    let dinp = MatMut::row_major(dinp, rows, ic);
    // wᵀ is w read with swapped strides.
    match dinp_factor {
        Some(f) => k.gemm_mul(dout_m, w.t(), f, dinp),
        None => k.gemm(dout_m, w.t(), dinp, false),
    }
    let (inp, dw) = (Mat::row_major(inp, rows, ic), MatMut::row_major(dw, ic, oc));
    k.gemm(inp.t(), dout_m, dw, accumulate);
    k.add_rows(dbias, &dout[..rows * oc]);
}

// -------------------------------------------------------------- attention

/// Scale of the attention scores, `1/√head_dim`.
pub(crate) fn attn_scale<R: Real>(hd: usize) -> R {
    R::ONE / R::from_usize(hd).sqrt()
}

/// Softmax over the causal prefix `row[..=t]` of scaled scores; the rest of
/// the row gets probability exactly 0. The KV-cache path's softmax: it is
/// row `t` of what [`Kernels::causal_softmax`] gives the full forward pass
/// (that method must give these bits), so both paths agree bit for bit.
pub(crate) fn causal_softmax_row<R: Real, K: Kernels<R>>(k: &K, row: &mut [R], t: usize, scale: R) {
    let (live, masked) = row.split_at_mut(t + 1);
    k.scaled_softmax_row(live, scale);
    masked.fill(R::ZERO);
}

/// Causal multi-head self-attention. `qkv` is `[BT, 3C]` with `[q | k | v]`
/// per token (head `h` uses columns `h·hd..(h+1)·hd` of each third); writes
/// the output `atty` `[BT, C]`. Without `keep`, `probs` is `T×T` scratch
/// for one head's probabilities and backward recomputes them
/// ([`head_probs`]); with it, `probs` holds `B·H` of them (head `h` of
/// sequence `bi` at `(bi·H + h)·T²`) and keeps them for backward.
///
/// Every product is one `gemm` per block of [`ATT_ROW_BLOCK`] rows (or
/// columns) that stops at the block's diagonal edge, instead of one call per
/// token: the masked entries inside a block are exact zeros, and a chain
/// that adds `0·v` after (or starts with `0·q` before) its live terms gives
/// the same bits as one that skips them, so this equals the token-at-a-time
/// KV-cache path bit for bit.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_forward<R: Real, K: Kernels<R>>(
    k: &K,
    atty: &mut [R],
    probs: &mut [R],
    qkv: &[R],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    keep: bool,
) {
    let (hd, c3) = (c / nh, 3 * c);
    for bi in 0..b {
        for h in 0..nh {
            let q0 = bi * t * c3 + h * hd;
            let v0 = q0 + 2 * c;
            let y0 = bi * t * c + h * hd;
            let p0 = if keep { (bi * nh + h) * t * t } else { 0 };
            let p = &mut probs[p0..p0 + t * t];
            head_probs(k, p, qkv, q0, t, c, hd);
            // Y = P·V over each block's live columns.
            for (i0, i1) in row_blocks(t) {
                let rows = i1 - i0;
                k.gemm(
                    Mat::rows_strided(&p[i0 * t..], rows, i1, t),
                    Mat::rows_strided(&qkv[v0..], i1, hd, c3),
                    MatMut::rows_strided(&mut atty[y0 + i0 * c..], rows, hd, c),
                    false,
                );
            }
        }
    }
}

/// One head's causal attention probabilities `P` (`t×t`, exact zeros above
/// the diagonal) from the queries at `qkv[q0..]` and the keys `c` further
/// on: `S = Q·Kᵀ` over the column blocks at or left of the diagonal, then a
/// scaled causal softmax per row. Forward and backward call this with the
/// same inputs, so they see the same bits.
fn head_probs<R: Real, K: Kernels<R>>(
    k: &K,
    p: &mut [R],
    qkv: &[R],
    q0: usize,
    t: usize,
    c: usize,
    hd: usize,
) {
    let c3 = 3 * c;
    let k0 = q0 + c;
    for (i0, i1) in row_blocks(t) {
        let rows = i1 - i0;
        k.gemm(
            Mat::rows_strided(&qkv[q0 + i0 * c3..], rows, hd, c3),
            Mat::rows_strided(&qkv[k0..], i1, hd, c3).t(),
            MatMut::rows_strided(&mut p[i0 * t..], rows, i1, t),
            false,
        );
    }
    k.causal_softmax(&mut p[..t * t], t, attn_scale::<R>(hd));
}

/// `(start, end)` of each block of [`ATT_ROW_BLOCK`] rows of a `t`-row matrix.
fn row_blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..t)
        .step_by(ATT_ROW_BLOCK)
        .map(move |i0| (i0, (i0 + ATT_ROW_BLOCK).min(t)))
}

/// Backward of [`attention_forward`]: writes `dqkv` `[BT, 3C]` (every element
/// overwritten) from `datty`; `dpre` is `T×T` scratch, and `probs` is
/// either that too (`kept` false: recomputed per head) or the probabilities
/// a forward with `keep` left.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward<R: Real, K: Kernels<R>>(
    k: &K,
    dqkv: &mut [R],
    probs: &mut [R],
    dpre: &mut [R],
    datty: &[R],
    qkv: &[R],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    kept: bool,
) {
    let (hd, c3) = (c / nh, 3 * c);
    let scale = attn_scale::<R>(hd);
    let dpre = &mut dpre[..t * t];
    for bi in 0..b {
        for h in 0..nh {
            let q0 = bi * t * c3 + h * hd;
            let p = if kept {
                let p0 = (bi * nh + h) * t * t;
                &probs[p0..p0 + t * t]
            } else {
                head_probs(k, &mut probs[..t * t], qkv, q0, t, c, hd);
                &probs[..t * t]
            };
            let (k0, v0) = (q0 + c, q0 + 2 * c);
            let y0 = bi * t * c + h * hd;
            // dP[t,s] = dy_t · v_s, for s ≤ t (and up to the block edge).
            for (i0, i1) in row_blocks(t) {
                let rows = i1 - i0;
                k.gemm(
                    Mat::rows_strided(&datty[y0 + i0 * c..], rows, hd, c),
                    Mat::rows_strided(&qkv[v0..], i1, hd, c3).t(),
                    MatMut::rows_strided(&mut dpre[i0 * t..], rows, i1, t),
                    false,
                );
            }
            // Softmax backward, then the score scale: dS = P ∘ (dP − ⟨P, dP⟩)·scale,
            // exact zeros above the diagonal (the products below read them).
            k.causal_softmax_backward(dpre, p, t, scale);
            // dq_t = Σ_{s≤t} dS[t,s]·k_s.
            for (i0, i1) in row_blocks(t) {
                let rows = i1 - i0;
                k.gemm(
                    Mat::rows_strided(&dpre[i0 * t..], rows, i1, t),
                    Mat::rows_strided(&qkv[k0..], i1, hd, c3),
                    MatMut::rows_strided(&mut dqkv[q0 + i0 * c3..], rows, hd, c3),
                    false,
                );
            }
            // dk_s = Σ_{t≥s} dS[t,s]·q_t and dv_s = Σ_{t≥s} P[t,s]·dy_t: for a
            // block of columns s, dSᵀ (or Pᵀ) from the block's first row down.
            for (j0, j1) in row_blocks(t) {
                let (cols, below) = (j1 - j0, t - j0);
                k.gemm(
                    Mat::rows_strided(&dpre[j0 * t + j0..], below, cols, t).t(),
                    Mat::rows_strided(&qkv[q0 + j0 * c3..], below, hd, c3),
                    MatMut::rows_strided(&mut dqkv[k0 + j0 * c3..], cols, hd, c3),
                    false,
                );
                k.gemm(
                    Mat::rows_strided(&p[j0 * t + j0..], below, cols, t).t(),
                    Mat::rows_strided(&datty[y0 + j0 * c..], below, hd, c),
                    MatMut::rows_strided(&mut dqkv[v0 + j0 * c3..], cols, hd, c3),
                    false,
                );
            }
        }
    }
}

// ---------------------------------------------------------- cross-entropy

/// Mean cross-entropy of `logits` `[N, V]` against `targets` (validated);
/// stores each row's log-sum-exp in `lse` for the backward pass.
pub(crate) fn crossentropy_forward<R: Real, K: Kernels<R>>(
    k: &K,
    lse: &mut [R],
    logits: &[R],
    targets: &[u32],
    v: usize,
) -> R {
    let mut total = R::ZERO;
    for ((row, l), &tg) in logits.chunks_exact(v).zip(lse.iter_mut()).zip(targets) {
        *l = k.logsumexp(row);
        total += *l - row[tg as usize];
    }
    total / R::from_usize(targets.len())
}

/// Backward of [`crossentropy_forward`] for `d(mean loss) = 1`, in place:
/// row `i` of `logits` becomes `(softmax(logits_i) − onehot(target_i)) / N`.
pub(crate) fn crossentropy_backward<R: Real, K: Kernels<R>>(
    k: &K,
    logits: &mut [R],
    lse: &[R],
    targets: &[u32],
    v: usize,
) {
    let inv_n = R::ONE / R::from_usize(targets.len());
    for ((row, &l), &tg) in logits.chunks_exact_mut(v).zip(lse).zip(targets) {
        k.crossentropy_backward_row(row, l, tg as usize, inv_n);
    }
}
