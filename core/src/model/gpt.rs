//! The whole model: forward pass with loss, and the backward pass.

use core::ops::Range;

use crate::kernels::{Kernels, Mat, MatMut};
use crate::real::Real;

use super::config::{GptConfig, LN_EPS};
use super::error::{at_least, exact, Buffer, ModelError};
use super::layers::{
    attention_backward, attention_forward, crossentropy_backward, crossentropy_forward,
    encoder_backward, encoder_forward, matmul_backward, matmul_forward,
};
use super::layout::{LayerGrads, LayerParams, ParamViews};
use super::work::{block_acts, kept_block, last_output, ActSizes, KeptActs, LayerActs, Work};

/// Checks everything a forward/backward call depends on, before touching
/// any buffer, and returns the workspace sizes.
fn check_call(
    cfg: &GptConfig,
    params: usize,
    work: usize,
    tokens: &[u32],
    targets: Option<&[u32]>,
    batch: usize,
    seq: usize,
) -> Result<ActSizes, ModelError> {
    cfg.validate()?;
    if batch == 0 || seq == 0 {
        return Err(ModelError::EmptyBatch { batch, seq });
    }
    if seq > cfg.n_positions {
        return Err(ModelError::SeqTooLong {
            seq,
            n_positions: cfg.n_positions,
        });
    }
    let sizes = ActSizes::new(cfg, batch, seq).ok_or(ModelError::SizeOverflow { batch, seq })?;
    exact(Buffer::Params, cfg.num_params(), params)?;
    at_least(Buffer::Work, sizes.recompute_total, work)?;
    exact(Buffer::Tokens, sizes.bt, tokens.len())?;
    let vocab_size = cfg.vocab_size;
    if let Some(index) = tokens.iter().position(|&t| t as usize >= vocab_size) {
        return Err(ModelError::TokenOutOfRange {
            index,
            token: tokens[index],
            vocab_size,
        });
    }
    if let Some(targets) = targets {
        exact(Buffer::Targets, sizes.bt, targets.len())?;
        if let Some(index) = targets.iter().position(|&t| t as usize >= vocab_size) {
            return Err(ModelError::TargetOutOfRange {
                index,
                target: targets[index],
                vocab_size,
            });
        }
    }
    Ok(sizes)
}

/// Forward pass of `batch` sequences of `seq` tokens (`tokens` row-major,
/// `batch·seq` long) through the model.
///
/// With `targets` (same shape: the next token at every position) it returns
/// the mean cross-entropy over all `batch·seq` positions and prepares `work`
/// for [`backward`]. Without targets it returns `0` and only the logits are
/// meaningful (read them with [`logits`]). `work` must hold at least
/// [`GptConfig::activation_len_recompute`]`(batch, seq)` elements; its
/// previous contents do not matter. Shorter than
/// [`GptConfig::activation_len`], only each block's output is stored and
/// backward computes the block again; with [`GptConfig::activation_len_kept`]
/// or more, a forward with targets keeps what backward would otherwise
/// recompute. The results are the same bits in every case.
#[allow(clippy::too_many_arguments)]
pub fn forward<R: Real, K: Kernels<R>>(
    k: &K,
    cfg: &GptConfig,
    params: &[R],
    work: &mut [R],
    tokens: &[u32],
    targets: Option<&[u32]>,
    batch: usize,
    seq: usize,
) -> Result<R, ModelError> {
    let sizes = check_call(cfg, params.len(), work.len(), tokens, targets, batch, seq)?;
    let (c, v, bt) = (cfg.n_embd, cfg.vocab_size, sizes.bt);
    let p = ParamViews::new(cfg, params);
    let mut w = Work::carve(&sizes, work);
    w.flag[0] = R::ZERO;
    // Kept activations only serve a backward pass.
    let mut kept = w.kept.take().filter(|_| targets.is_some());

    encoder_forward(w.encoded, tokens, p.wte, p.wpe, seq, c);
    for l in 0..cfg.n_layer {
        let (x_in, mut la) = block_acts(&sizes, w.encoded, w.layers, l, w.recompute);
        let ka = kept.as_deref_mut().map(|kr| kept_block(&sizes, kr, l));
        block_forward(
            k,
            cfg,
            &p.layer(cfg, l),
            x_in,
            &mut la,
            ka,
            w.s_ln,
            w.s_a,
            w.probs,
            &sizes,
        );
    }
    let x = last_output(&sizes, w.layers, w.recompute);
    k.layernorm_forward(
        w.s_ln,
        w.lnf_mean,
        w.lnf_rstd,
        x,
        p.lnf_w,
        p.lnf_b,
        R::from_f64(LN_EPS),
    );
    // logits = ln_f(x) · headᵀ, the head being wte (tied) or lm_head.
    let head = Mat::row_major(p.head(), v, c);
    let ln = Mat::row_major(w.s_ln, bt, c);
    k.gemm(ln, head.t(), MatMut::row_major(w.logits, bt, v), false);

    match targets {
        Some(targets) => {
            let loss = crossentropy_forward(k, w.lse, w.logits, targets, v);
            w.flag[0] = if kept.is_some() { flag_kept() } else { R::ONE };
            Ok(loss)
        }
        None => Ok(R::ZERO),
    }
}

/// The workspace flag after a forward with targets that kept the optional
/// region (1 when it did not; 0 when backward may not run).
fn flag_kept<R: Real>() -> R {
    R::from_usize(2)
}

/// One pre-LN block: `x += attn(ln_1(x)); x += mlp(ln_2(x))`. With `kept`,
/// both LayerNorm outputs, the GELU output and the attention probabilities
/// go there, and `la.fch` ends up holding the GELU derivative.
#[allow(clippy::too_many_arguments)]
fn block_forward<R: Real, K: Kernels<R>>(
    k: &K,
    cfg: &GptConfig,
    lp: &LayerParams<'_, R>,
    x_in: &[R],
    la: &mut LayerActs<'_, R>,
    mut kept: Option<KeptActs<'_, R>>,
    s_ln: &mut [R],
    s_a: &mut [R],
    probs: &mut [R],
    sz: &ActSizes,
) {
    let (c, bt, eps) = (cfg.n_embd, sz.bt, R::from_f64(LN_EPS));
    let s_ln = &mut s_ln[..bt * c];
    let keep = kept.is_some();
    let ln1 = match kept {
        Some(ref mut ka) => &mut *ka.ln1,
        None => &mut *s_ln,
    };
    k.layernorm_forward(ln1, la.ln1_mean, la.ln1_rstd, x_in, lp.ln1_w, lp.ln1_b, eps);
    matmul_forward(k, la.qkv, ln1, lp.attn_w, lp.attn_b, bt, c, 3 * c);
    let probs = match kept {
        Some(ref mut ka) => &mut *ka.probs,
        None => probs,
    };
    attention_forward(k, la.atty, probs, la.qkv, sz.b, sz.t, c, cfg.n_head, keep);
    matmul_forward(k, s_ln, la.atty, lp.proj_w, lp.proj_b, bt, c, c);
    k.add(la.res_mid, x_in, s_ln);

    let ln2 = match kept {
        Some(ref mut ka) => &mut *ka.ln2,
        None => &mut *s_ln,
    };
    k.layernorm_forward(
        ln2,
        la.ln2_mean,
        la.ln2_rstd,
        la.res_mid,
        lp.ln2_w,
        lp.ln2_b,
        eps,
    );
    matmul_forward(k, la.fch, ln2, lp.fc_w, lp.fc_b, bt, c, 4 * c);
    let gelu = match kept {
        Some(ka) => {
            k.gelu_forward_grad(ka.gelu, la.fch);
            ka.gelu
        }
        None => {
            k.gelu_forward(s_a, la.fch);
            s_a
        }
    };
    matmul_forward(k, s_ln, gelu, lp.mproj_w, lp.mproj_b, bt, 4 * c, c);
    k.add(la.res_out, la.res_mid, s_ln);
}

/// Backward pass: *adds* the gradient of the mean loss of the preceding
/// [`forward`] (same `work`, `tokens`, `targets`, `batch`, `seq`) to `grads`
/// (`num_params` long; callers zero it per unit).
///
/// It consumes the forward state: the logits in `work` are overwritten with
/// their gradient, so a second `backward` without a new forward returns
/// [`ModelError::NoForward`] (as does one after a forward without targets).
#[allow(clippy::too_many_arguments)]
pub fn backward<R: Real, K: Kernels<R>>(
    k: &K,
    cfg: &GptConfig,
    params: &[R],
    grads: &mut [R],
    work: &mut [R],
    tokens: &[u32],
    targets: &[u32],
    batch: usize,
    seq: usize,
) -> Result<(), ModelError> {
    let accumulate = true;
    let n = Some(grads.len());
    backward_with(
        k, cfg, params, grads, n, work, tokens, targets, batch, seq, accumulate,
    )
}

/// As [`backward`], but *writes* the gradient into `grads`: whatever it
/// held is ignored, so a caller that wants one unit's gradient need not
/// zero a parameter-sized buffer first. The values equal zeroing `grads`
/// and calling [`backward`] (an exact zero may come out as `-0.0` instead
/// of `+0.0`; nothing downstream can tell them apart).
///
/// The weight matrices are written by their first product (a `gemm`
/// without accumulation); only the small rest (position embeddings,
/// biases, LayerNorm) is zeroed and accumulated.
#[allow(clippy::too_many_arguments)]
pub fn backward_into<R: Real, K: Kernels<R>>(
    k: &K,
    cfg: &GptConfig,
    params: &[R],
    grads: &mut [R],
    work: &mut [R],
    tokens: &[u32],
    targets: &[u32],
    batch: usize,
    seq: usize,
) -> Result<(), ModelError> {
    let accumulate = false;
    let n = Some(grads.len());
    backward_with(
        k, cfg, params, grads, n, work, tokens, targets, batch, seq, accumulate,
    )
}

/// Where [`backward_streaming`] writes the gradient: one stage at a time
/// (the head, each block from the last down, the embeddings), so that the
/// caller can take the finished part (reduce it, send it) while the rest is
/// computed. The gradient buffer is in [`Tensors`](super::Tensors) order,
/// so the finished part is always a suffix of it.
///
/// A plain slice is a sink that does nothing between stages; that is what
/// [`backward`] and [`backward_into`] use, so every backward runs this one
/// code path.
pub trait GradSink<R> {
    /// Elements `range` of the gradient, for this stage to write. A range
    /// never reaches into what [`finished`](GradSink::finished) has handed
    /// over.
    fn stage(&mut self, range: Range<usize>) -> &mut [R];
    /// Backward will not touch elements `from..` of the gradient again:
    /// they hold their final values.
    fn finished(&mut self, from: usize);
}

impl<R> GradSink<R> for [R] {
    fn stage(&mut self, range: Range<usize>) -> &mut [R] {
        &mut self[range]
    }
    fn finished(&mut self, _from: usize) {}
}

/// As [`backward_into`] (the gradient is written, not added), through a
/// [`GradSink`] that is told after each stage which suffix of the gradient
/// is final: after the head `ln_f..` (and an untied `lm_head`), after block
/// `l` the blocks `l..` onwards, after the embeddings everything. The
/// values are the same as [`backward_into`]'s, bit for bit, whatever the
/// sink does between stages.
#[allow(clippy::too_many_arguments)]
pub fn backward_streaming<R: Real, K: Kernels<R>, S: GradSink<R> + ?Sized>(
    k: &K,
    cfg: &GptConfig,
    params: &[R],
    sink: &mut S,
    work: &mut [R],
    tokens: &[u32],
    targets: &[u32],
    batch: usize,
    seq: usize,
) -> Result<(), ModelError> {
    let accumulate = false;
    backward_with(
        k, cfg, params, sink, None, work, tokens, targets, batch, seq, accumulate,
    )
}

/// [`backward`] (`accumulate`), [`backward_into`] or [`backward_streaming`].
/// `grads_len` is the length of a plain gradient slice, to check (a sink
/// checks its own ranges).
#[allow(clippy::too_many_arguments)]
fn backward_with<R: Real, K: Kernels<R>, S: GradSink<R> + ?Sized>(
    k: &K,
    cfg: &GptConfig,
    params: &[R],
    sink: &mut S,
    grads_len: Option<usize>,
    work: &mut [R],
    tokens: &[u32],
    targets: &[u32],
    batch: usize,
    seq: usize,
    accumulate: bool,
) -> Result<(), ModelError> {
    let sizes = check_call(
        cfg,
        params.len(),
        work.len(),
        tokens,
        Some(targets),
        batch,
        seq,
    )?;
    if let Some(n) = grads_len {
        exact(Buffer::Grads, cfg.num_params(), n)?;
    }
    let (c, v, bt, eps) = (cfg.n_embd, cfg.vocab_size, sizes.bt, R::from_f64(LN_EPS));
    let p = ParamViews::new(cfg, params);
    let mut w = Work::carve(&sizes, work);
    let mut kept = w.kept.take();
    if w.flag[0] == flag_kept() {
        if kept.is_none() {
            // Same buffer, shorter slice: the kept region is out of reach.
            return Err(ModelError::NoForward);
        }
    } else if w.flag[0] == R::ONE {
        kept = None;
    } else {
        return Err(ModelError::NoForward);
    }
    w.flag[0] = R::ZERO;
    // Offsets of the gradient's pieces (the buffer order of `Tensors`).
    let (wte_len, n) = (v * c, cfg.layer_params());
    let blocks = wte_len + cfg.n_positions * c;
    let lnf = blocks + cfg.n_layer * n;
    let total = cfg.num_params();

    // loss → logits → ln_f output, and the head (wte when tied). Written
    // without accumulation, a tied head is wte's first write; an untied
    // wte is zeroed just before the embeddings add into it.
    crossentropy_backward(k, w.logits, w.lse, targets, v);
    let x = last_output(&sizes, w.layers, w.recompute);
    k.layernorm_forward(w.s_ln, w.lnf_mean, w.lnf_rstd, x, p.lnf_w, p.lnf_b, eps);
    let dlnf = &mut w.s_a[..bt * c];
    let (dlogits, head) = (
        Mat::row_major(w.logits, bt, v),
        Mat::row_major(p.head(), v, c),
    );
    k.gemm(dlogits, head, MatMut::row_major(dlnf, bt, c), false);
    let dhead = sink.stage(if cfg.untied_head {
        lnf + 2 * c..total
    } else {
        0..wte_len
    });
    let ln = Mat::row_major(w.s_ln, bt, c);
    k.gemm(dlogits.t(), ln, MatMut::row_major(dhead, v, c), accumulate);
    let (dlnf_w, dlnf_b) = sink.stage(lnf..lnf + 2 * c).split_at_mut(c);
    if !accumulate {
        dlnf_w.fill(R::ZERO);
        dlnf_b.fill(R::ZERO);
    }
    w.dres.fill(R::ZERO);
    k.layernorm_backward(
        w.dres, dlnf_w, dlnf_b, dlnf, x, p.lnf_w, w.lnf_mean, w.lnf_rstd,
    );
    sink.finished(lnf);

    for l in (0..cfg.n_layer).rev() {
        let (x_in, mut la) = block_acts(&sizes, w.encoded, w.layers, l, w.recompute);
        if w.recompute {
            // The same inputs through the same kernels: the same bits as the
            // forward pass stored (its output is written again unchanged).
            block_forward(
                k,
                cfg,
                &p.layer(cfg, l),
                x_in,
                &mut la,
                None,
                w.s_ln,
                w.s_a,
                w.probs,
                &sizes,
            );
        }
        let ka = kept.as_deref_mut().map(|kr| kept_block(&sizes, kr, l));
        let scratch = Scratch {
            s_ln: &mut *w.s_ln,
            s_a: &mut *w.s_a,
            s_b: &mut *w.s_b,
            probs: &mut *w.probs,
            dpre: &mut *w.dpre,
        };
        let start = blocks + l * n;
        let mut lg = LayerGrads::new(sink.stage(start..start + n), c);
        if !accumulate {
            // The matrices are written by their first product.
            for t in [
                &mut *lg.ln1_w,
                &mut *lg.ln1_b,
                &mut *lg.attn_b,
                &mut *lg.proj_b,
                &mut *lg.ln2_w,
                &mut *lg.ln2_b,
                &mut *lg.fc_b,
                &mut *lg.mproj_b,
            ] {
                t.fill(R::ZERO);
            }
        }
        block_backward(
            k,
            cfg,
            &p.layer(cfg, l),
            &mut lg,
            x_in,
            la,
            ka,
            w.dres,
            scratch,
            &sizes,
            accumulate,
        );
        sink.finished(start);
    }
    let (dwte, dwpe) = sink.stage(0..blocks).split_at_mut(wte_len);
    if !accumulate {
        dwpe.fill(R::ZERO);
        if cfg.untied_head {
            dwte.fill(R::ZERO);
        }
    }
    encoder_backward(dwte, dwpe, w.dres, tokens, seq, c);
    sink.finished(0);
    Ok(())
}

/// The backward scratch buffers one block borrows.
struct Scratch<'a, R> {
    s_ln: &'a mut [R],
    s_a: &'a mut [R],
    s_b: &'a mut [R],
    probs: &'a mut [R],
    dpre: &'a mut [R],
}

/// Backward of [`block_forward`]. `dres` holds the gradient of the block's
/// output on entry and of its input on return; `kept` is what that forward
/// kept, if it did.
#[allow(clippy::too_many_arguments)]
fn block_backward<R: Real, K: Kernels<R>>(
    k: &K,
    cfg: &GptConfig,
    lp: &LayerParams<'_, R>,
    lg: &mut LayerGrads<'_, R>,
    x_in: &[R],
    la: LayerActs<'_, R>,
    kept: Option<KeptActs<'_, R>>,
    dres: &mut [R],
    s: Scratch<'_, R>,
    sz: &ActSizes,
    accumulate: bool,
) {
    let (c, bt, eps) = (cfg.n_embd, sz.bt, R::from_f64(LN_EPS));
    let Scratch {
        s_ln,
        s_a,
        s_b,
        probs,
        dpre,
    } = s;
    let s_ln = &mut s_ln[..bt * c];

    // MLP branch; recompute what forward did not keep: LayerNorm, and GELU
    // with its derivative in one pass (the pre-activation is not needed
    // again, so its buffer takes the derivative).
    let (ln1, ln2, gelu, probs, probs_kept) = match kept {
        Some(ka) => (Some(&*ka.ln1), &*ka.ln2, &*ka.gelu, ka.probs, true),
        None => {
            k.layernorm_forward(
                s_ln,
                la.ln2_mean,
                la.ln2_rstd,
                la.res_mid,
                lp.ln2_w,
                lp.ln2_b,
                eps,
            );
            k.gelu_forward_grad(s_a, la.fch);
            (None, &*s_ln, &*s_a, probs, false)
        }
    };
    // The gradient of the pre-activation: (dres · mproj_wᵀ) ∘ gelu', the
    // product fused into the GEMM.
    let dfch = &mut *s_b;
    matmul_backward(
        k,
        dfch,
        lg.mproj_w,
        lg.mproj_b,
        dres,
        gelu,
        lp.mproj_w,
        bt,
        4 * c,
        c,
        accumulate,
        Some(&*la.fch),
    );
    let dln2 = &mut s_a[..bt * c];
    matmul_backward(
        k,
        dln2,
        lg.fc_w,
        lg.fc_b,
        dfch,
        ln2,
        lp.fc_w,
        bt,
        c,
        4 * c,
        accumulate,
        None,
    );
    k.layernorm_backward(
        dres,
        lg.ln2_w,
        lg.ln2_b,
        dln2,
        la.res_mid,
        lp.ln2_w,
        la.ln2_mean,
        la.ln2_rstd,
    );

    // Attention branch.
    let datty = &mut s_a[..bt * c];
    matmul_backward(
        k, datty, lg.proj_w, lg.proj_b, dres, la.atty, lp.proj_w, bt, c, c, accumulate, None,
    );
    let dqkv = &mut s_b[..bt * 3 * c];
    attention_backward(
        k, dqkv, probs, dpre, datty, la.qkv, sz.b, sz.t, c, cfg.n_head, probs_kept,
    );
    let ln1 = match ln1 {
        Some(ln1) => ln1,
        None => {
            k.layernorm_forward(
                s_ln,
                la.ln1_mean,
                la.ln1_rstd,
                x_in,
                lp.ln1_w,
                lp.ln1_b,
                eps,
            );
            &*s_ln
        }
    };
    let dln1 = &mut s_a[..bt * c];
    matmul_backward(
        k,
        dln1,
        lg.attn_w,
        lg.attn_b,
        dqkv,
        ln1,
        lp.attn_w,
        bt,
        c,
        3 * c,
        accumulate,
        None,
    );
    k.layernorm_backward(
        dres,
        lg.ln1_w,
        lg.ln1_b,
        dln1,
        x_in,
        lp.ln1_w,
        la.ln1_mean,
        la.ln1_rstd,
    );
}

/// The logits `[batch, seq, vocab]` (row-major) left in `work` by the last
/// [`forward`] with the same `batch` and `seq` (not valid after
/// [`backward`], which overwrites them with their gradient).
pub fn logits<'w, R: Real>(
    cfg: &GptConfig,
    work: &'w [R],
    batch: usize,
    seq: usize,
) -> Result<&'w [R], ModelError> {
    cfg.validate()?;
    if batch == 0 || seq == 0 {
        return Err(ModelError::EmptyBatch { batch, seq });
    }
    if seq > cfg.n_positions {
        return Err(ModelError::SeqTooLong {
            seq,
            n_positions: cfg.n_positions,
        });
    }
    let sizes = ActSizes::new(cfg, batch, seq).ok_or(ModelError::SizeOverflow { batch, seq })?;
    at_least(Buffer::Work, sizes.recompute_total, work.len())?;
    Ok(&work[sizes.logits_range(work.len())])
}
