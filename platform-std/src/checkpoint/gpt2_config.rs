//! The Hugging Face GPT-2 `config.json` and the GPT-2 tensor layout.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{json, Value};

use super::{json_bytes, read_json, CkptError};
use crate::fsutil::write_atomic;
use crate::tokenizer::MAX_VOCAB;

/// The layer-norm epsilon cllm computes with; configs must match it.
pub const LAYER_NORM_EPSILON: f64 = 1e-5;

/// Upper bounds accepted from a `config.json`, so a hostile file cannot make
/// the caller allocate absurd amounts.
pub mod limits {
    /// Largest `n_positions`.
    pub const MAX_POSITIONS: usize = 1 << 20;
    /// Largest `n_embd`.
    pub const MAX_EMBD: usize = 1 << 16;
    /// Largest `n_layer`.
    pub const MAX_LAYERS: usize = 1 << 12;
    /// Largest parameter count.
    pub const MAX_PARAMS: u64 = 1 << 36;
}

/// The GPT-2 hyper-parameters stored in a Hugging Face `config.json`.
///
/// Plain numbers, so this crate does not depend on the model code; convert
/// to and from `cllm_core::model::GptConfig` field by field.
#[derive(Clone, Debug, PartialEq)]
pub struct HfGpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Context length (also written as `n_ctx`).
    pub n_positions: usize,
    /// Embedding width.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// Beginning-of-sequence id, if the tokenizer has one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id, if the tokenizer has one.
    pub eos_token_id: Option<u32>,
    /// `tie_word_embeddings: false`: the model has its own
    /// `lm_head.weight` instead of projecting with `wte`.
    pub untied_head: bool,
}

impl HfGpt2Config {
    /// A config without BOS/EOS ids.
    pub fn new(
        vocab_size: usize,
        n_positions: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
    ) -> Self {
        HfGpt2Config {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            bos_token_id: None,
            eos_token_id: None,
            untied_head: false,
        }
    }

    /// Number of parameters of the GPT-2 with these sizes (and head), or
    /// `None` on overflow.
    pub fn param_count(&self) -> Option<u64> {
        let v = self.vocab_size as u128;
        let p = self.n_positions as u128;
        let c = self.n_embd as u128;
        let l = self.n_layer as u128;
        let head = if self.untied_head { v * c } else { 0 };
        let total = (v + p) * c + l * (12 * c * c + 13 * c) + 2 * c + head;
        u64::try_from(total).ok()
    }

    /// Checks sizes are positive, heads divide the width, and everything is
    /// within [`limits`]. Returns `(field, reason)` on failure.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let checks: [(&'static str, usize, usize); 5] = [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("n_positions", self.n_positions, limits::MAX_POSITIONS),
            ("n_embd", self.n_embd, limits::MAX_EMBD),
            ("n_layer", self.n_layer, limits::MAX_LAYERS),
            ("n_head", self.n_head, limits::MAX_EMBD),
        ];
        for (field, v, max) in checks {
            if v == 0 {
                return Err((field, "must be positive, got 0".to_string()));
            }
            if v > max {
                return Err((field, format!("is {v}, above the supported maximum {max}")));
            }
        }
        let remainder = self.n_embd % self.n_head;
        if remainder != 0 {
            return Err((
                "n_head",
                format!(
                    "is {} which does not divide n_embd {}",
                    self.n_head, self.n_embd
                ),
            ));
        }
        for (field, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if let Some(id) = id {
                if id as usize >= self.vocab_size {
                    return Err((
                        field,
                        format!("is {id}, outside the vocabulary of {}", self.vocab_size),
                    ));
                }
            }
        }
        match self.param_count() {
            Some(n) if n <= limits::MAX_PARAMS => Ok(()),
            _ => Err((
                "n_embd",
                format!(
                    "gives more than {} parameters with these sizes",
                    limits::MAX_PARAMS
                ),
            )),
        }
    }

    /// The `config.json` document transformers expects for GPT-2.
    pub fn to_json(&self) -> Value {
        json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "activation_function": "gelu_new",
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": null,
            "layer_norm_epsilon": LAYER_NORM_EPSILON,
            "tie_word_embeddings": !self.untied_head,
            "scale_attn_weights": true,
            "scale_attn_by_inverse_layer_idx": false,
            "reorder_and_upcast_attn": false,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "initializer_range": 0.02,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": "float32",
        })
    }

    /// Reads and validates a `config.json` document. `path` is for messages.
    pub fn from_json(path: &Path, doc: &Value) -> Result<Self, CkptError> {
        let field_err = |field: &str, reason: String| CkptError::Field {
            path: path.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        let obj = doc.as_object().ok_or_else(|| CkptError::Field {
            path: path.to_path_buf(),
            field: "(top level)".to_string(),
            reason: "must be a JSON object".to_string(),
        })?;
        let expect_str = |field: &str, want: &str, required: bool| -> Result<(), CkptError> {
            match obj.get(field) {
                None if !required => Ok(()),
                None => Err(field_err(field, format!("is missing (expected {want:?})"))),
                Some(Value::String(s)) if s == want => Ok(()),
                Some(other) => Err(field_err(
                    field,
                    format!("is {other}, but only {want:?} is supported"),
                )),
            }
        };
        expect_str("model_type", "gpt2", true)?;
        expect_str("activation_function", "gelu_new", false)?;
        let size = |field: &str| -> Result<usize, CkptError> {
            match obj.get(field) {
                None => Err(field_err(field, "is missing".to_string())),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        field_err(field, format!("must be a non-negative integer, got {v}"))
                    }),
            }
        };
        let n_positions = size("n_positions")?;
        if obj.get("n_ctx").is_some_and(|v| !v.is_null()) {
            let n_ctx = size("n_ctx")?;
            if n_ctx != n_positions {
                return Err(field_err(
                    "n_ctx",
                    format!("is {n_ctx} but n_positions is {n_positions}"),
                ));
            }
        }
        let opt_id = |field: &str| -> Result<Option<u32>, CkptError> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| {
                        field_err(field, format!("must be a token id or null, got {v}"))
                    }),
            }
        };
        let cfg = HfGpt2Config {
            vocab_size: size("vocab_size")?,
            n_positions,
            n_embd: size("n_embd")?,
            n_layer: size("n_layer")?,
            n_head: size("n_head")?,
            bos_token_id: opt_id("bos_token_id")?,
            eos_token_id: opt_id("eos_token_id")?,
            untied_head: match obj.get("tie_word_embeddings") {
                None | Some(Value::Bool(true)) => false,
                Some(Value::Bool(false)) => true,
                Some(v) => {
                    return Err(field_err(
                        "tie_word_embeddings",
                        format!("must be true or false, got {v}"),
                    ))
                }
            },
        };
        if let Some(v) = obj.get("layer_norm_epsilon") {
            match v.as_f64() {
                Some(e) if (e - LAYER_NORM_EPSILON).abs() <= 1e-12 => {}
                _ => {
                    return Err(field_err(
                        "layer_norm_epsilon",
                        format!("is {v}, but cllm computes with {LAYER_NORM_EPSILON:e}"),
                    ))
                }
            }
        }
        match obj.get("n_inner") {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64() == Some(4 * cfg.n_embd as u64) => {}
            Some(v) => {
                return Err(field_err(
                    "n_inner",
                    format!("is {v}, but cllm uses 4 * n_embd = {}", 4 * cfg.n_embd),
                ))
            }
        }
        for (field, want) in [
            ("scale_attn_weights", true),
            ("scale_attn_by_inverse_layer_idx", false),
            ("reorder_and_upcast_attn", false),
        ] {
            match obj.get(field) {
                None => {}
                Some(Value::Bool(b)) if *b == want => {}
                Some(v) => {
                    return Err(field_err(
                        field,
                        format!("is {v}, but cllm supports only {want}"),
                    ))
                }
            }
        }
        cfg.validate().map_err(|(f, r)| field_err(f, r))?;
        Ok(cfg)
    }
}

/// Writes `config.json` atomically after validating the config.
pub fn write_config(path: &Path, cfg: &HfGpt2Config) -> Result<(), CkptError> {
    cfg.validate().map_err(|(f, r)| CkptError::InvalidInput {
        reason: format!("config field {f} {r}"),
    })?;
    Ok(write_atomic(path, &json_bytes(&cfg.to_json()))?)
}

/// Reads and validates a GPT-2 `config.json`.
pub fn read_config(path: &Path) -> Result<HfGpt2Config, CkptError> {
    let doc = read_json(path)?;
    HfGpt2Config::from_json(path, &doc)
}

/// The GPT-2 tensor names and shapes for `cfg`, in the parameter order of
/// `docs/ARCHITECTURE.md` (HF names; `lm_head.weight` is tied to
/// `transformer.wte.weight` and not stored).
pub fn gpt2_tensor_shapes(cfg: &HfGpt2Config) -> Vec<(String, Vec<usize>)> {
    let (v, p, c) = (cfg.vocab_size, cfg.n_positions, cfg.n_embd);
    let mut out = vec![
        ("transformer.wte.weight".to_string(), vec![v, c]),
        ("transformer.wpe.weight".to_string(), vec![p, c]),
    ];
    for i in 0..cfg.n_layer {
        let h = format!("transformer.h.{i}");
        let layer: [(&str, Vec<usize>); 12] = [
            ("ln_1.weight", vec![c]),
            ("ln_1.bias", vec![c]),
            ("attn.c_attn.weight", vec![c, 3 * c]),
            ("attn.c_attn.bias", vec![3 * c]),
            ("attn.c_proj.weight", vec![c, c]),
            ("attn.c_proj.bias", vec![c]),
            ("ln_2.weight", vec![c]),
            ("ln_2.bias", vec![c]),
            ("mlp.c_fc.weight", vec![c, 4 * c]),
            ("mlp.c_fc.bias", vec![4 * c]),
            ("mlp.c_proj.weight", vec![4 * c, c]),
            ("mlp.c_proj.bias", vec![c]),
        ];
        out.extend(layer.into_iter().map(|(n, s)| (format!("{h}.{n}"), s)));
    }
    out.push(("transformer.ln_f.weight".to_string(), vec![c]));
    out.push(("transformer.ln_f.bias".to_string(), vec![c]));
    if cfg.untied_head {
        out.push(("lm_head.weight".to_string(), vec![v, c]));
    }
    out
}

/// Checks that `tensors` are exactly the GPT-2 tensors of `cfg` (any order)
/// with the right shapes (`lm_head.weight` among them for an untied head);
/// with a tied head an extra `lm_head.weight` of shape `[V, C]` is
/// tolerated. `path` is for messages.
pub fn check_gpt2_tensors<'a, I>(
    path: &Path,
    tensors: I,
    cfg: &HfGpt2Config,
) -> Result<(), CkptError>
where
    I: IntoIterator<Item = (&'a str, &'a [usize])>,
{
    let expected: HashMap<String, Vec<usize>> = gpt2_tensor_shapes(cfg).into_iter().collect();
    let mut seen = HashSet::new();
    let tensor_err = |name: &str, reason: String| CkptError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        reason,
    };
    for (name, shape) in tensors {
        let want = match expected.get(name) {
            Some(s) => s.as_slice(),
            None if name == "lm_head.weight" => &[cfg.vocab_size, cfg.n_embd][..],
            None => {
                return Err(tensor_err(
                    name,
                    "is not a GPT-2 tensor for this config".to_string(),
                ))
            }
        };
        if shape != want {
            return Err(tensor_err(
                name,
                format!("has shape {shape:?}, config.json implies {want:?}"),
            ));
        }
        seen.insert(name.to_string());
    }
    // Report the first missing tensor in canonical order, for a stable message.
    if let Some((name, _)) = gpt2_tensor_shapes(cfg)
        .into_iter()
        .find(|(n, _)| !seen.contains(n))
    {
        return Err(tensor_err(&name, "is missing".to_string()));
    }
    Ok(())
}
