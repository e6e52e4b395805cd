//! The flat parameter buffer: Hugging Face GPT-2 tensor names, shapes and
//! order, and the named views the model math uses.
//!
//! Order: `transformer.wte.weight`, `transformer.wpe.weight`, then for each
//! block `h.{i}` its twelve tensors ([`TensorKind::LAYER`]), then
//! `transformer.ln_f.{weight,bias}`, and, for an untied head
//! ([`GptConfig::untied_head`]), `lm_head.weight`. Matrices are row-major with GPT-2's
//! `Conv1D` convention (input-major, `[in, out]`), so a projection is
//! `out = inp · W + b` and a checkpoint maps 1:1 onto the buffer.

use core::fmt;
use core::ops::Range;

use super::config::GptConfig;

/// Which tensor of the model a [`ParamTensor`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// Token embeddings `[vocab, C]`, also the (tied) language-model head.
    Wte,
    /// Position embeddings `[n_positions, C]`.
    Wpe,
    /// `ln_1.weight` `[C]`.
    Ln1Weight,
    /// `ln_1.bias` `[C]`.
    Ln1Bias,
    /// `attn.c_attn.weight` `[C, 3C]` (columns `[q | k | v]`).
    AttnWeight,
    /// `attn.c_attn.bias` `[3C]`.
    AttnBias,
    /// `attn.c_proj.weight` `[C, C]`.
    AttnProjWeight,
    /// `attn.c_proj.bias` `[C]`.
    AttnProjBias,
    /// `ln_2.weight` `[C]`.
    Ln2Weight,
    /// `ln_2.bias` `[C]`.
    Ln2Bias,
    /// `mlp.c_fc.weight` `[C, 4C]`.
    FcWeight,
    /// `mlp.c_fc.bias` `[4C]`.
    FcBias,
    /// `mlp.c_proj.weight` `[4C, C]`.
    MlpProjWeight,
    /// `mlp.c_proj.bias` `[C]`.
    MlpProjBias,
    /// `ln_f.weight` `[C]`.
    LnfWeight,
    /// `ln_f.bias` `[C]`.
    LnfBias,
    /// `lm_head.weight` `[vocab, C]`: the output projection of a model
    /// whose head is not tied to [`TensorKind::Wte`].
    LmHead,
}

impl TensorKind {
    /// The tensors of one block, in buffer order.
    pub const LAYER: [TensorKind; 12] = [
        TensorKind::Ln1Weight,
        TensorKind::Ln1Bias,
        TensorKind::AttnWeight,
        TensorKind::AttnBias,
        TensorKind::AttnProjWeight,
        TensorKind::AttnProjBias,
        TensorKind::Ln2Weight,
        TensorKind::Ln2Bias,
        TensorKind::FcWeight,
        TensorKind::FcBias,
        TensorKind::MlpProjWeight,
        TensorKind::MlpProjBias,
    ];

    /// The name after `transformer.` (or after `transformer.h.{i}.`).
    pub const fn hf_suffix(self) -> &'static str {
        match self {
            TensorKind::Wte => "wte.weight",
            TensorKind::Wpe => "wpe.weight",
            TensorKind::Ln1Weight => "ln_1.weight",
            TensorKind::Ln1Bias => "ln_1.bias",
            TensorKind::AttnWeight => "attn.c_attn.weight",
            TensorKind::AttnBias => "attn.c_attn.bias",
            TensorKind::AttnProjWeight => "attn.c_proj.weight",
            TensorKind::AttnProjBias => "attn.c_proj.bias",
            TensorKind::Ln2Weight => "ln_2.weight",
            TensorKind::Ln2Bias => "ln_2.bias",
            TensorKind::FcWeight => "mlp.c_fc.weight",
            TensorKind::FcBias => "mlp.c_fc.bias",
            TensorKind::MlpProjWeight => "mlp.c_proj.weight",
            TensorKind::MlpProjBias => "mlp.c_proj.bias",
            TensorKind::LnfWeight => "ln_f.weight",
            TensorKind::LnfBias => "ln_f.bias",
            // Outside `transformer.` (see the `Display` of ParamTensor).
            TensorKind::LmHead => "lm_head.weight",
        }
    }

    /// AdamW decays the 2-D weight matrices only (GPT-2/nanoGPT convention):
    /// not biases, LayerNorm, nor the position embeddings.
    pub const fn weight_decay(self) -> bool {
        matches!(
            self,
            TensorKind::Wte
                | TensorKind::LmHead
                | TensorKind::AttnWeight
                | TensorKind::AttnProjWeight
                | TensorKind::FcWeight
                | TensorKind::MlpProjWeight
        )
    }

    /// Shape under `cfg` (`[rows, cols]` or `[len]`, `ndim` says which).
    /// Saturating, so an unvalidated huge config cannot panic here.
    const fn shape(self, cfg: &GptConfig) -> ([usize; 2], usize) {
        let c = cfg.n_embd;
        let (c3, c4) = (c.saturating_mul(3), c.saturating_mul(4));
        match self {
            TensorKind::Wte | TensorKind::LmHead => ([cfg.vocab_size, c], 2),
            TensorKind::Wpe => ([cfg.n_positions, c], 2),
            TensorKind::AttnWeight => ([c, c3], 2),
            TensorKind::AttnProjWeight => ([c, c], 2),
            TensorKind::FcWeight => ([c, c4], 2),
            TensorKind::MlpProjWeight => ([c4, c], 2),
            TensorKind::AttnBias => ([c3, 0], 1),
            TensorKind::FcBias => ([c4, 0], 1),
            _ => ([c, 0], 1),
        }
    }
}

/// Where one named tensor lives in the flat parameter (and gradient, and
/// optimizer-state) buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamTensor {
    /// Which tensor.
    pub kind: TensorKind,
    /// The block index for per-block tensors, `None` for wte/wpe/ln_f.
    pub layer: Option<usize>,
    /// Dimensions; only the first `ndim` are meaningful (see [`ParamTensor::shape`]).
    pub dims: [usize; 2],
    /// 1 or 2.
    pub ndim: usize,
    /// First element in the buffer.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
    /// Whether AdamW applies weight decay to it.
    pub weight_decay: bool,
}

impl ParamTensor {
    /// The shape, e.g. `[768, 2304]` for `attn.c_attn.weight` of GPT-2 small.
    pub fn shape(&self) -> &[usize] {
        &self.dims[..self.ndim]
    }

    /// The element range in the flat buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// Writes the Hugging Face name, e.g. `transformer.h.3.attn.c_attn.weight`.
impl fmt::Display for ParamTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(l) => write!(f, "transformer.h.{l}.{}", self.kind.hf_suffix()),
            None if self.kind == TensorKind::LmHead => f.write_str(self.kind.hf_suffix()),
            None => write!(f, "transformer.{}", self.kind.hf_suffix()),
        }
    }
}

/// Iterator over a config's [`ParamTensor`]s in buffer order
/// (from [`GptConfig::tensors`]).
#[derive(Clone, Debug)]
pub struct Tensors {
    cfg: GptConfig,
    index: usize,
    offset: usize,
}

impl Tensors {
    pub(crate) fn new(cfg: GptConfig) -> Self {
        Self {
            cfg,
            index: 0,
            offset: 0,
        }
    }

    fn total(&self) -> usize {
        let head = usize::from(self.cfg.untied_head);
        self.cfg.n_layer.saturating_mul(12).saturating_add(4 + head)
    }
}

impl Iterator for Tensors {
    type Item = ParamTensor;

    fn next(&mut self) -> Option<ParamTensor> {
        let n = self.total();
        if self.index >= n {
            return None;
        }
        // ln_f's two tensors end the list, or precede lm_head.
        let lnf = n - 2 - usize::from(self.cfg.untied_head);
        let (kind, layer) = match self.index {
            0 => (TensorKind::Wte, None),
            1 => (TensorKind::Wpe, None),
            i if i == lnf => (TensorKind::LnfWeight, None),
            i if i == lnf + 1 => (TensorKind::LnfBias, None),
            i if i == lnf + 2 => (TensorKind::LmHead, None),
            i => (TensorKind::LAYER[(i - 2) % 12], Some((i - 2) / 12)),
        };
        let (dims, ndim) = kind.shape(&self.cfg);
        let len = if ndim == 2 {
            dims[0].saturating_mul(dims[1])
        } else {
            dims[0]
        };
        let t = ParamTensor {
            kind,
            layer,
            dims,
            ndim,
            offset: self.offset,
            len,
            weight_decay: kind.weight_decay(),
        };
        self.index += 1;
        self.offset = self.offset.saturating_add(len);
        Some(t)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total() - self.index.min(self.total());
        (left, Some(left))
    }
}

impl ExactSizeIterator for Tensors {}

/// Element counts of one block's tensors, in [`TensorKind::LAYER`] order.
fn layer_lens(c: usize) -> [usize; 12] {
    [
        c,
        c,
        3 * c * c,
        3 * c,
        c * c,
        c,
        c,
        c,
        4 * c * c,
        4 * c,
        4 * c * c,
        c,
    ]
}

/// Splits `s` into consecutive pieces of the given lengths.
pub(crate) fn split<T, const N: usize>(s: &[T], lens: [usize; N]) -> [&[T]; N] {
    let mut rest = s;
    core::array::from_fn(|i| {
        let (head, tail) = rest.split_at(lens[i]);
        rest = tail;
        head
    })
}

/// Mutable [`split`].
pub(crate) fn split_mut<T, const N: usize>(s: &mut [T], lens: [usize; N]) -> [&mut [T]; N] {
    let mut rest = s;
    core::array::from_fn(|i| {
        let (head, tail) = core::mem::take(&mut rest).split_at_mut(lens[i]);
        rest = tail;
        head
    })
}

/// Generates the named views of one block over a slice type (`&` or `&mut`).
macro_rules! layer_view {
    ($(#[$m:meta])* $name:ident, $ref:ty, $split:ident) => {
        $(#[$m])*
        pub(crate) struct $name<'a, T> {
            pub ln1_w: $ref,
            pub ln1_b: $ref,
            pub attn_w: $ref,
            pub attn_b: $ref,
            pub proj_w: $ref,
            pub proj_b: $ref,
            pub ln2_w: $ref,
            pub ln2_b: $ref,
            pub fc_w: $ref,
            pub fc_b: $ref,
            pub mproj_w: $ref,
            pub mproj_b: $ref,
        }

        impl<'a, T> $name<'a, T> {
            /// Views block `s` (exactly `layer_params` long) of width `c`.
            pub fn new(s: $ref, c: usize) -> Self {
                let [ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, mproj_w, mproj_b] =
                    $split(s, layer_lens(c));
                Self { ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, mproj_w, mproj_b }
            }
        }
    };
}

layer_view!(
    /// Read-only views of one block's parameters.
    LayerParams, &'a [T], split
);
layer_view!(
    /// Mutable views of one block's gradients.
    LayerGrads, &'a mut [T], split_mut
);

/// Named views of a whole parameter buffer.
pub(crate) struct ParamViews<S> {
    pub wte: S,
    pub wpe: S,
    /// All blocks, `n_layer × layer_params` long.
    pub layers: S,
    pub lnf_w: S,
    pub lnf_b: S,
    /// The untied head; empty when the head is `wte`.
    pub lm_head: S,
}

fn top_lens(cfg: &GptConfig) -> [usize; 6] {
    let c = cfg.n_embd;
    [
        cfg.vocab_size * c,
        cfg.n_positions * c,
        cfg.n_layer * cfg.layer_params(),
        c,
        c,
        if cfg.untied_head {
            cfg.vocab_size * c
        } else {
            0
        },
    ]
}

impl<'a, T> ParamViews<&'a [T]> {
    /// Views `params`, which must be exactly `cfg.num_params()` long.
    pub fn new(cfg: &GptConfig, params: &'a [T]) -> Self {
        let [wte, wpe, layers, lnf_w, lnf_b, lm_head] = split(params, top_lens(cfg));
        Self {
            wte,
            wpe,
            layers,
            lnf_w,
            lnf_b,
            lm_head,
        }
    }

    /// The output projection `[vocab, C]`: `lm_head`, or `wte` when tied.
    pub fn head(&self) -> &'a [T] {
        if self.lm_head.is_empty() {
            self.wte
        } else {
            self.lm_head
        }
    }

    /// Block `l`.
    pub fn layer(&self, cfg: &GptConfig, l: usize) -> LayerParams<'a, T> {
        let n = cfg.layer_params();
        LayerParams::new(&self.layers[l * n..(l + 1) * n], cfg.n_embd)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn tensors_tile_the_buffer_in_hf_order() {
        let cfg = GptConfig {
            vocab_size: 11,
            n_positions: 8,
            n_embd: 8,
            n_layer: 2,
            n_head: 2,
            untied_head: false,
        };
        let ts: std::vec::Vec<_> = cfg.tensors().collect();
        assert_eq!(ts.len(), 4 + 24);
        assert_eq!(cfg.tensors().len(), 28);
        let mut off = 0;
        for t in &ts {
            assert_eq!(t.offset, off);
            assert_eq!(t.len, t.shape().iter().product::<usize>());
            off += t.len;
        }
        assert_eq!(off, cfg.num_params());
        assert_eq!(ts[0].to_string(), "transformer.wte.weight");
        assert_eq!(
            ts[2 + 12 + 2].to_string(),
            "transformer.h.1.attn.c_attn.weight"
        );
        assert_eq!(ts[2 + 12 + 2].shape(), &[8, 24]);
        assert_eq!(ts[2 + 10].to_string(), "transformer.h.0.mlp.c_proj.weight");
        assert_eq!(ts[2 + 10].shape(), &[32, 8]);
        assert_eq!(ts[27].to_string(), "transformer.ln_f.bias");
        let decayed: std::vec::Vec<_> = ts
            .iter()
            .filter(|t| t.weight_decay)
            .map(|t| t.to_string())
            .collect();
        assert_eq!(decayed.len(), 1 + 4 * 2);
        assert!(decayed
            .iter()
            .all(|n| n.ends_with(".weight") && !n.contains("ln_") && !n.contains("wpe")));
    }

    #[test]
    fn views_match_tensor_offsets() {
        let cfg = GptConfig {
            vocab_size: 5,
            n_positions: 3,
            n_embd: 4,
            n_layer: 2,
            n_head: 1,
            untied_head: false,
        };
        let buf: std::vec::Vec<usize> = (0..cfg.num_params()).collect();
        let v = ParamViews::new(&cfg, &buf[..]);
        let l1 = v.layer(&cfg, 1);
        let find = |k: TensorKind, l: Option<usize>| {
            cfg.tensors().find(|t| t.kind == k && t.layer == l).unwrap()
        };
        assert_eq!(l1.fc_w[0], find(TensorKind::FcWeight, Some(1)).offset);
        assert_eq!(l1.mproj_b[0], find(TensorKind::MlpProjBias, Some(1)).offset);
        assert_eq!(v.lnf_b[0], find(TensorKind::LnfBias, None).offset);
        assert_eq!(v.wpe[0], find(TensorKind::Wpe, None).offset);
    }
}
