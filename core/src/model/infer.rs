//! Generation: one token at a time with a KV cache.
//!
//! The cache holds, for every block, the keys and values of every position
//! seen so far: `[n_layer][k|v][n_positions][C]`, `kv_cache_len()` elements.
//! Each step reuses the row-level building blocks of the full forward pass
//! (same gemm row order, same LayerNorm, softmax and GELU code), so with the
//! portable kernels its logits equal the full forward pass's bit for bit.

use crate::kernels::{Kernels, Mat, MatMut};
use crate::real::Real;

use super::config::{GptConfig, LN_EPS};
use super::error::{at_least, exact, Buffer, ModelError};
use super::layers::{attn_scale, causal_softmax_row, matmul_forward};
use super::layout::{split_mut, ParamViews};

/// Runs token `token` at position `pos` and writes its next-token logits
/// (`vocab_size` of them) to `logits_out`.
///
/// Positions `0..pos` of `cache` must hold the keys/values written by the
/// previous calls for the same sequence (start a sequence at `pos = 0`; the
/// cache needs no clearing). This call writes position `pos`. `cache` must be
/// at least [`GptConfig::kv_cache_len`] long and `work` at least
/// [`GptConfig::infer_work_len`].
#[allow(clippy::too_many_arguments)]
pub fn forward_cached<R: Real, K: Kernels<R>>(
    k: &K,
    cfg: &GptConfig,
    params: &[R],
    cache: &mut [R],
    work: &mut [R],
    token: u32,
    pos: usize,
    logits_out: &mut [R],
) -> Result<(), ModelError> {
    cfg.validate()?;
    exact(Buffer::Params, cfg.num_params(), params.len())?;
    at_least(Buffer::Cache, cfg.kv_cache_len(), cache.len())?;
    at_least(Buffer::Work, cfg.infer_work_len(), work.len())?;
    exact(Buffer::Logits, cfg.vocab_size, logits_out.len())?;
    if token as usize >= cfg.vocab_size {
        return Err(ModelError::TokenOutOfRange {
            index: 0,
            token,
            vocab_size: cfg.vocab_size,
        });
    }
    if pos >= cfg.n_positions {
        return Err(ModelError::PositionOutOfRange {
            pos,
            n_positions: cfg.n_positions,
        });
    }
    let (c, np, nh, v) = (cfg.n_embd, cfg.n_positions, cfg.n_head, cfg.vocab_size);
    let (hd, eps, scale) = (c / nh, R::from_f64(LN_EPS), attn_scale::<R>(c / nh));
    let p = ParamViews::new(cfg, params);
    let [x, xm, ln, qkv, att, atty, fch, gl, stats] = split_mut(
        &mut work[..cfg.infer_work_len()],
        [c, c, c, 3 * c, np, c, 4 * c, 4 * c, 2],
    );
    let (mean, rstd) = stats.split_at_mut(1);

    let (e, pe) = (&p.wte[token as usize * c..][..c], &p.wpe[pos * c..][..c]);
    for ((o, &a), &b) in x.iter_mut().zip(e).zip(pe) {
        *o = a + b;
    }
    for l in 0..cfg.n_layer {
        let lp = p.layer(cfg, l);
        let kv = &mut cache[l * 2 * np * c..(l + 1) * 2 * np * c];
        let (kc, vc) = kv.split_at_mut(np * c);

        k.layernorm_forward(ln, mean, rstd, x, lp.ln1_w, lp.ln1_b, eps);
        matmul_forward(k, qkv, ln, lp.attn_w, lp.attn_b, 1, c, 3 * c);
        kc[pos * c..(pos + 1) * c].copy_from_slice(&qkv[c..2 * c]);
        vc[pos * c..(pos + 1) * c].copy_from_slice(&qkv[2 * c..]);
        for h in 0..nh {
            let row = &mut att[..pos + 1];
            let keys = Mat::rows_strided(&kc[h * hd..], pos + 1, hd, c);
            let q = Mat::row(&qkv[h * hd..], hd);
            k.gemm(q, keys.t(), MatMut::row(row, pos + 1), false);
            causal_softmax_row(k, row, pos, scale);
            let values = Mat::rows_strided(&vc[h * hd..], pos + 1, hd, c);
            let y = MatMut::row(&mut atty[h * hd..], hd);
            k.gemm(Mat::row(row, pos + 1), values, y, false);
        }
        matmul_forward(k, ln, atty, lp.proj_w, lp.proj_b, 1, c, c);
        k.add(xm, x, ln);

        k.layernorm_forward(ln, mean, rstd, xm, lp.ln2_w, lp.ln2_b, eps);
        matmul_forward(k, fch, ln, lp.fc_w, lp.fc_b, 1, c, 4 * c);
        k.gelu_forward(gl, fch);
        matmul_forward(k, ln, gl, lp.mproj_w, lp.mproj_b, 1, 4 * c, c);
        k.add(x, xm, ln);
    }
    k.layernorm_forward(ln, mean, rstd, x, p.lnf_w, p.lnf_b, eps);
    let head = Mat::row_major(p.head(), v, c);
    k.gemm(Mat::row(ln, c), head.t(), MatMut::row(logits_out, v), false);
    Ok(())
}
