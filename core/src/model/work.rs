//! The per-unit workspace: named regions of the caller's flat buffer.
//!
//! ```text
//! encoded                         C·BT     x₀ = wte[tok] + wpe[t]
//! block l (×L):
//!   ln1_mean, ln1_rstd            BT each
//!   qkv                           3C·BT    [q | k | v] per token
//!   atty                          C·BT     attention output, before c_proj
//!   res_mid                       C·BT     x + attn
//!   ln2_mean, ln2_rstd            BT each
//!   fch                           4C·BT    c_fc output, before GELU
//!   res_out                       C·BT     block output
//! lnf_mean, lnf_rstd              BT each
//! logits                          V·BT     (overwritten by their gradient in backward)
//! lse                             BT       log-sum-exp per position (for the loss)
//! scratch shared by all blocks:
//!   s_ln                          C·BT     LayerNorm output (recomputed in backward), projections
//!   s_a, s_b                      4C·BT each  GELU output / activation gradients
//!   dres                          C·BT     gradient of the residual stream
//!   probs                         T²       attention probabilities of one head
//!                                          (0 above the diagonal; recomputed in backward)
//!   dpre                          T²       attention score gradients of one head
//! flag                            1        1 after a forward with targets
//!                                          (2 when it also kept the region below)
//! optional, only in a workspace of at least `kept_total` (block l, ×L):
//!   ln1, ln2                      C·BT each  LayerNorm outputs
//!   gelu                          4C·BT    GELU output (fch then holds gelu')
//!   att_probs                     B·H·T²   attention probabilities, per head
//! ```
//! LayerNorm outputs, the GELU output and the attention probabilities are
//! cheap to recompute, so by default backward recomputes them instead of
//! keeping `L` copies (the probabilities alone would be `B·H·T²` per block,
//! more than the rest of a block at long contexts): peak memory is what
//! limits batch size on small machines. A caller with memory to spare hands
//! over a workspace that also holds the optional region, and backward then
//! reads the LayerNorm outputs, the GELU output, its derivative and the
//! probabilities instead of computing them again. Both ways give the same bits: the kept values are
//! produced by the same kernels from the same inputs.

use super::config::GptConfig;
use super::layout::split_mut;

/// Lengths of the workspace regions for one `(batch, seq)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActSizes {
    pub b: usize,
    pub t: usize,
    pub bt: usize,
    /// Elements of one block's stored activations.
    pub layer_len: usize,
    /// Elements of the whole workspace.
    pub total: usize,
    /// Elements of the workspace with the optional kept region.
    pub kept_total: usize,
    /// Elements of the workspace that stores only each block's output and
    /// one block's activations, recomputed in backward (`total` when that
    /// would not be shorter, i.e. with one block).
    pub recompute_total: usize,
    layer: [usize; 9],
    top: [usize; 13],
    /// One block's kept LayerNorm outputs, GELU output and attention
    /// probabilities.
    kept: [usize; 4],
}

impl ActSizes {
    /// Sizes for `b` sequences of `t` tokens, or `None` when a length
    /// overflows `usize`.
    pub fn new(cfg: &GptConfig, b: usize, t: usize) -> Option<Self> {
        let c = cfg.n_embd;
        let bt = b.checked_mul(t)?;
        let cbt = c.checked_mul(bt)?;
        let tt = t.checked_mul(t)?;
        let layer = [
            bt,
            bt,
            cbt.checked_mul(3)?,
            cbt,
            cbt,
            bt,
            bt,
            cbt.checked_mul(4)?,
            cbt,
        ];
        let layer_len = layer.iter().try_fold(0usize, |a, &x| a.checked_add(x))?;
        let top = [
            cbt,
            layer_len.checked_mul(cfg.n_layer)?,
            bt,
            bt,
            cfg.vocab_size.checked_mul(bt)?,
            bt,
            cbt,
            cbt.checked_mul(4)?,
            cbt.checked_mul(4)?,
            cbt,
            tt,
            tt,
            1,
        ];
        let total = top.iter().try_fold(0usize, |a, &x| a.checked_add(x))?;
        let kept = [
            cbt,
            cbt,
            cbt.checked_mul(4)?,
            tt.checked_mul(b)?.checked_mul(cfg.n_head)?,
        ];
        let kept_total = kept
            .iter()
            .try_fold(0usize, |a, &x| a.checked_add(x))?
            .checked_mul(cfg.n_layer)?
            .checked_add(total)?;
        // The blocks' region shrinks from L blocks to L outputs + 1 block.
        let recompute_layers = cbt.checked_mul(cfg.n_layer)?.checked_add(layer_len)?;
        let recompute_total = (total - top[1]).checked_add(recompute_layers)?.min(total);
        Some(Self {
            b,
            t,
            bt,
            layer_len,
            total,
            kept_total,
            recompute_total,
            layer,
            top,
            kept,
        })
    }

    /// Where [`Work::carve`] puts the logits in a workspace of `len`.
    pub fn logits_range(&self, len: usize) -> core::ops::Range<usize> {
        let mut start: usize = self.top[..4].iter().sum();
        if len < self.total {
            start -= self.total - self.recompute_total;
        }
        start..start + self.top[4]
    }
}

/// One block's stored activations.
pub(crate) struct LayerActs<'a, R> {
    pub ln1_mean: &'a mut [R],
    pub ln1_rstd: &'a mut [R],
    pub qkv: &'a mut [R],
    pub atty: &'a mut [R],
    pub res_mid: &'a mut [R],
    pub ln2_mean: &'a mut [R],
    pub ln2_rstd: &'a mut [R],
    pub fch: &'a mut [R],
    pub res_out: &'a mut [R],
}

/// The whole workspace, carved.
pub(crate) struct Work<'a, R> {
    pub encoded: &'a mut [R],
    /// `n_layer` blocks of `layer_len` (see [`block`]), or, recomputing,
    /// `n_layer` block outputs and one block (see [`block_recomputed`]).
    pub layers: &'a mut [R],
    /// The workspace is [`ActSizes::recompute_total`] long: backward
    /// computes each block's forward again from its stored input.
    pub recompute: bool,
    pub lnf_mean: &'a mut [R],
    pub lnf_rstd: &'a mut [R],
    pub logits: &'a mut [R],
    pub lse: &'a mut [R],
    pub s_ln: &'a mut [R],
    pub s_a: &'a mut [R],
    pub s_b: &'a mut [R],
    pub dres: &'a mut [R],
    pub probs: &'a mut [R],
    pub dpre: &'a mut [R],
    pub flag: &'a mut [R],
    /// The optional kept region (`n_layer` blocks of [`KeptActs`]), when
    /// the buffer is long enough for it.
    pub kept: Option<&'a mut [R]>,
}

/// One block's kept LayerNorm outputs, GELU output and attention
/// probabilities.
pub(crate) struct KeptActs<'a, R> {
    pub ln1: &'a mut [R],
    pub ln2: &'a mut [R],
    pub gelu: &'a mut [R],
    pub probs: &'a mut [R],
}

impl<'a, R> Work<'a, R> {
    /// Carves `buf` (at least `sizes.recompute_total` long; the caller
    /// checked): recomputing when it is shorter than `sizes.total`, with the
    /// kept region when it holds `sizes.kept_total`.
    pub fn carve(sizes: &ActSizes, buf: &'a mut [R]) -> Self {
        let recompute = buf.len() < sizes.total;
        let mut top = sizes.top;
        if recompute {
            top[1] = sizes.recompute_total - (sizes.total - top[1]);
        }
        let main_len: usize = top.iter().sum();
        let (main, rest) = buf.split_at_mut(main_len);
        let kept = rest
            .get_mut(..sizes.kept_total - sizes.total)
            .filter(|_| !recompute);
        let [encoded, layers, lnf_mean, lnf_rstd, logits, lse, s_ln, s_a, s_b, dres, probs, dpre, flag] =
            split_mut(main, top);
        Self {
            encoded,
            layers,
            recompute,
            lnf_mean,
            lnf_rstd,
            logits,
            lse,
            s_ln,
            s_a,
            s_b,
            dres,
            probs,
            dpre,
            flag,
            kept,
        }
    }
}

/// Block `l`'s part of the kept region.
pub(crate) fn kept_block<'w, R>(sizes: &ActSizes, kept: &'w mut [R], l: usize) -> KeptActs<'w, R> {
    let len: usize = sizes.kept.iter().sum();
    let [ln1, ln2, gelu, probs] = split_mut(&mut kept[l * len..(l + 1) * len], sizes.kept);
    KeptActs {
        ln1,
        ln2,
        gelu,
        probs,
    }
}

/// One block's activations in a region of `sizes.layer_len`.
fn carve_block<'w, R>(sizes: &ActSizes, region: &'w mut [R]) -> LayerActs<'w, R> {
    let [ln1_mean, ln1_rstd, qkv, atty, res_mid, ln2_mean, ln2_rstd, fch, res_out] =
        split_mut(&mut region[..sizes.layer_len], sizes.layer);
    LayerActs {
        ln1_mean,
        ln1_rstd,
        qkv,
        atty,
        res_mid,
        ln2_mean,
        ln2_rstd,
        fch,
        res_out,
    }
}

/// Block `l`'s input (the embeddings or the previous block's output) and its
/// stored activations, borrowed from the workspace at once.
pub(crate) fn block<'w, R>(
    sizes: &ActSizes,
    encoded: &'w [R],
    layers: &'w mut [R],
    l: usize,
) -> (&'w [R], LayerActs<'w, R>) {
    let (done, rest) = layers.split_at_mut(l * sizes.layer_len);
    let x_in: &[R] = if l == 0 {
        encoded
    } else {
        &done[done.len() - sizes.layer[8]..]
    };
    (x_in, carve_block(sizes, rest))
}

/// Recomputing: block `l`'s input (the embeddings or the previous block's
/// stored output) and its activations, all in the one block's region except
/// `res_out`, which is block `l`'s stored output.
pub(crate) fn block_recomputed<'w, R>(
    sizes: &ActSizes,
    encoded: &'w [R],
    layers: &'w mut [R],
    l: usize,
) -> (&'w [R], LayerActs<'w, R>) {
    let out = sizes.layer[8];
    let (outputs, one) = layers.split_at_mut(layers.len() - sizes.layer_len);
    let (done, rest) = outputs.split_at_mut(l * out);
    let x_in: &[R] = if l == 0 {
        encoded
    } else {
        &done[(l - 1) * out..]
    };
    let mut la = carve_block(sizes, one);
    la.res_out = &mut rest[..out];
    (x_in, la)
}

/// Block `l`'s input and activations, in whichever layout `recompute` says.
pub(crate) fn block_acts<'w, R>(
    sizes: &ActSizes,
    encoded: &'w [R],
    layers: &'w mut [R],
    l: usize,
    recompute: bool,
) -> (&'w [R], LayerActs<'w, R>) {
    if recompute {
        block_recomputed(sizes, encoded, layers, l)
    } else {
        block(sizes, encoded, layers, l)
    }
}

/// The last block's output (the input of `ln_f`).
pub(crate) fn last_output<'w, R>(sizes: &ActSizes, layers: &'w [R], recompute: bool) -> &'w [R] {
    let out = sizes.layer[8];
    if recompute {
        let end = layers.len() - sizes.layer_len;
        &layers[end - out..end]
    } else {
        &layers[layers.len() - out..]
    }
}
