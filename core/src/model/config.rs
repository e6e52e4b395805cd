//! Model hyper-parameters and the buffer sizes they imply.

use core::fmt;

use super::layout::Tensors;
use super::work::ActSizes;

/// LayerNorm epsilon (GPT-2's `layer_norm_epsilon`).
pub const LN_EPS: f64 = 1e-5;

/// GPT-2 hyper-parameters (the names of Hugging Face's `GPT2Config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GptConfig {
    /// Number of token ids; tokens are `u32` in `0..vocab_size`.
    pub vocab_size: usize,
    /// Context length: the longest sequence and the number of learned positions.
    pub n_positions: usize,
    /// Width of the residual stream (`C`).
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; must divide `n_embd`.
    pub n_head: usize,
    /// The output projection is its own `lm_head.weight` `[vocab, C]` (at
    /// the end of the parameter buffer) instead of the token embeddings
    /// (`false`, GPT-2's tied head).
    pub untied_head: bool,
}

/// A [`GptConfig`] that cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A size is zero (`field` names it).
    Zero {
        /// The field that is zero.
        field: &'static str,
    },
    /// `n_embd` is not a multiple of `n_head`.
    HeadsDoNotDivide {
        /// The configured width.
        n_embd: usize,
        /// The configured head count.
        n_head: usize,
    },
    /// Token ids are `u32`, so the vocabulary cannot exceed 2³².
    VocabTooLarge {
        /// The configured vocabulary size.
        vocab_size: usize,
    },
    /// A buffer length (`what`) does not fit in `usize`.
    Overflow {
        /// Which buffer.
        what: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::Zero { field } => write!(f, "{field} must be at least 1, got 0"),
            ConfigError::HeadsDoNotDivide { n_embd, n_head } => {
                write!(f, "n_embd {n_embd} is not divisible by n_head {n_head}")
            }
            ConfigError::VocabTooLarge { vocab_size } => {
                write!(
                    f,
                    "vocab_size {vocab_size} exceeds 2^32 (token ids are u32)"
                )
            }
            ConfigError::Overflow { what } => write!(f, "the {what} length overflows usize"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}

impl GptConfig {
    /// GPT-2 small (124M parameters), the Hugging Face `gpt2` checkpoint.
    pub const GPT2_SMALL: GptConfig = GptConfig {
        vocab_size: 50257,
        n_positions: 1024,
        n_embd: 768,
        n_layer: 12,
        n_head: 12,
        untied_head: false,
    };

    /// Checks every size: no zero, `n_head` divides `n_embd`, vocabulary fits
    /// `u32`, and the parameter, KV-cache, inference and one-sequence
    /// activation buffers all have lengths that fit in `usize`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        #[allow(clippy::manual_is_multiple_of)] // is_multiple_of is newer than our MSRV (1.80)
        if self.n_embd % self.n_head != 0 {
            return Err(ConfigError::HeadsDoNotDivide {
                n_embd: self.n_embd,
                n_head: self.n_head,
            });
        }
        if self.vocab_size as u64 > 1u64 << 32 {
            return Err(ConfigError::VocabTooLarge {
                vocab_size: self.vocab_size,
            });
        }
        let overflow = |what| ConfigError::Overflow { what };
        self.checked_num_params().ok_or(overflow("parameter"))?;
        self.checked_kv_cache_len().ok_or(overflow("KV cache"))?;
        self.checked_infer_work_len()
            .ok_or(overflow("inference workspace"))?;
        ActSizes::new(self, 1, self.n_positions).ok_or(overflow("activation"))?;
        Ok(())
    }

    /// Width of one attention head (`n_embd / n_head`).
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// Parameters in one transformer block: `12·C² + 13·C`.
    pub fn layer_params(&self) -> usize {
        self.checked_layer_params().unwrap_or(usize::MAX)
    }

    /// Total number of parameters (and of gradients; and of AdamW's `m`, `v`
    /// each). Saturates at `usize::MAX` for a config that fails
    /// [`GptConfig::validate`].
    pub fn num_params(&self) -> usize {
        self.checked_num_params().unwrap_or(usize::MAX)
    }

    /// Elements of the per-unit workspace that [`forward`](super::forward)
    /// and [`backward`](super::backward) need for `batch` sequences of `seq`
    /// tokens: stored activations plus the backward scratch. Saturates at
    /// `usize::MAX` on overflow (no buffer is that long, so the model
    /// functions then report the problem).
    ///
    /// Per block it stores `10·C·BT + 4·BT` values (`BT = batch·seq`):
    /// LayerNorm outputs, the GELU output and the attention probabilities
    /// are recomputed in backward rather than stored, and one set of
    /// gradient-of-activation buffers (`10·C·BT + 2·T²`) is shared by all
    /// blocks.
    pub fn activation_len(&self, batch: usize, seq: usize) -> usize {
        ActSizes::new(self, batch, seq).map_or(usize::MAX, |s| s.total)
    }

    /// A longer workspace, [`activation_len`](Self::activation_len) plus
    /// `L·(6·C·BT + B·H·T²)`, in which a forward pass with targets also
    /// keeps every block's LayerNorm outputs, GELU output, GELU derivative
    /// and attention probabilities, so backward does not compute them again
    /// (faster, for the memory). Any workspace at least this long is used this way; the
    /// gradients are bitwise the same as with the short one.
    pub fn activation_len_kept(&self, batch: usize, seq: usize) -> usize {
        ActSizes::new(self, batch, seq).map_or(usize::MAX, |s| s.kept_total)
    }

    /// A shorter workspace: [`activation_len`](Self::activation_len) less
    /// `(L−1)` blocks' activations plus `L·B·T·C` (each block's output).
    /// Forward stores only the blocks' outputs; backward runs each block's
    /// forward again from its input before going back through it (about a
    /// third more block arithmetic, for roughly `9·L·B·T·C` fewer floats).
    /// Any workspace at least this long and shorter than `activation_len` is
    /// used this way; the results are bitwise the same. With one block it
    /// equals `activation_len` (nothing to save).
    pub fn activation_len_recompute(&self, batch: usize, seq: usize) -> usize {
        ActSizes::new(self, batch, seq).map_or(usize::MAX, |s| s.recompute_total)
    }

    /// Elements of the KV cache for [`forward_cached`](super::forward_cached):
    /// keys and values of every block for every position, `2·L·n_positions·C`.
    pub fn kv_cache_len(&self) -> usize {
        self.checked_kv_cache_len().unwrap_or(usize::MAX)
    }

    /// Elements of the scratch [`forward_cached`](super::forward_cached)
    /// needs: `15·C + n_positions + 2`.
    pub fn infer_work_len(&self) -> usize {
        self.checked_infer_work_len().unwrap_or(usize::MAX)
    }

    /// The parameter tensors in buffer order (Hugging Face GPT-2 order).
    pub fn tensors(&self) -> Tensors {
        Tensors::new(*self)
    }

    fn checked_layer_params(&self) -> Option<usize> {
        let c = self.n_embd;
        c.checked_mul(c)?
            .checked_mul(12)?
            .checked_add(c.checked_mul(13)?)
    }

    fn checked_num_params(&self) -> Option<usize> {
        let c = self.n_embd;
        let emb = self
            .vocab_size
            .checked_add(self.n_positions)?
            .checked_mul(c)?;
        let blocks = self.checked_layer_params()?.checked_mul(self.n_layer)?;
        let head = if self.untied_head {
            self.vocab_size.checked_mul(c)?
        } else {
            0
        };
        emb.checked_add(blocks)?
            .checked_add(c.checked_mul(2)?)?
            .checked_add(head)
    }

    fn checked_kv_cache_len(&self) -> Option<usize> {
        self.n_layer
            .checked_mul(2)?
            .checked_mul(self.n_positions)?
            .checked_mul(self.n_embd)
    }

    fn checked_infer_work_len(&self) -> Option<usize> {
        self.n_embd
            .checked_mul(15)?
            .checked_add(self.n_positions)?
            .checked_add(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_has_124m_parameters() {
        // 124,439,808: the count Hugging Face reports for `gpt2`.
        assert_eq!(GptConfig::GPT2_SMALL.num_params(), 124_439_808);
        assert_eq!(GptConfig::GPT2_SMALL.validate(), Ok(()));
    }

    #[test]
    fn buffer_lengths_follow_the_documented_formulas() {
        let cfg = GptConfig {
            vocab_size: 11,
            n_positions: 8,
            n_embd: 8,
            n_layer: 2,
            n_head: 2,
            untied_head: false,
        };
        let (b, t) = (3, 5);
        let (c, l, v, bt) = (8, 2, 11, b * t);
        let per_layer = 10 * c * bt + 4 * bt;
        assert_eq!(
            cfg.activation_len(b, t),
            l * per_layer + (v + 11 * c + 3) * bt + 2 * t * t + 1
        );
        assert_eq!(
            cfg.activation_len_kept(b, t),
            cfg.activation_len(b, t) + l * (6 * c * bt + b * 2 * t * t)
        );
        assert_eq!(cfg.activation_len_kept(usize::MAX, 2), usize::MAX);
        assert_eq!(cfg.kv_cache_len(), 2 * l * 8 * c);
        assert_eq!(cfg.infer_work_len(), 15 * c + 8 + 2);
        assert_eq!(cfg.activation_len(usize::MAX, 2), usize::MAX);
    }

    #[test]
    fn invalid_configs_are_errors_with_numbers() {
        let ok = GptConfig {
            vocab_size: 11,
            n_positions: 8,
            n_embd: 8,
            n_layer: 2,
            n_head: 2,
            untied_head: false,
        };
        assert_eq!(ok.validate(), Ok(()));
        let e = GptConfig { n_head: 3, ..ok }.validate().unwrap_err();
        assert_eq!(
            e,
            ConfigError::HeadsDoNotDivide {
                n_embd: 8,
                n_head: 3
            }
        );
        let e = GptConfig { n_layer: 0, ..ok }.validate().unwrap_err();
        assert_eq!(e, ConfigError::Zero { field: "n_layer" });
        let e = GptConfig {
            vocab_size: usize::MAX / 2,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert!(matches!(
            e,
            ConfigError::VocabTooLarge { .. } | ConfigError::Overflow { .. }
        ));
        let e = GptConfig {
            n_embd: usize::MAX / 4,
            n_head: 1,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert!(matches!(e, ConfigError::Overflow { .. }), "{e:?}");
    }
}
