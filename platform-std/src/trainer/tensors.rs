//! Flat parameter / optimizer buffers ↔ named Hugging Face tensors.

use std::ops::Range;
use std::path::Path;

use cllm_core::model::GptConfig;

use crate::checkpoint::{CkptError, HfGpt2Config, NamedTensor, TensorRef};
use crate::tokenizer::Tokenizer;

/// Names of the optimizer-state tensors (PyTorch's names), each one flat
/// vector over all parameters.
pub const EXP_AVG: &str = "exp_avg";
/// AdamW second moment.
pub const EXP_AVG_SQ: &str = "exp_avg_sq";
/// SGD momentum buffer.
pub const MOMENTUM_BUFFER: &str = "momentum_buffer";

/// The tensors of a model, computed once per run.
#[derive(Clone, Debug)]
pub struct Layout {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    ranges: Vec<Range<usize>>,
    num_params: usize,
}

impl Layout {
    /// The Hugging Face GPT-2 tensors of `cfg`, in buffer order.
    pub fn new(cfg: &GptConfig) -> Layout {
        let (mut names, mut shapes, mut ranges) = (Vec::new(), Vec::new(), Vec::new());
        for t in cfg.tensors() {
            names.push(t.to_string());
            shapes.push(t.shape().to_vec());
            ranges.push(t.range());
        }
        Layout {
            names,
            shapes,
            ranges,
            num_params: cfg.num_params(),
        }
    }

    /// Views of `params` under their names.
    pub fn refs<'a>(&'a self, params: &'a [f32]) -> Vec<TensorRef<'a>> {
        (0..self.names.len())
            .map(|i| {
                TensorRef::new(
                    &self.names[i],
                    &self.shapes[i],
                    &params[self.ranges[i].clone()],
                )
            })
            .collect()
    }

    /// The flat parameter vector from named tensors (any order); `path`
    /// names the file for messages.
    pub fn flatten(&self, path: &Path, tensors: &[NamedTensor]) -> Result<Vec<f32>, CkptError> {
        let mut params = vec![0.0f32; self.num_params];
        let mut seen = vec![false; self.names.len()];
        for t in tensors {
            if t.name == "lm_head.weight" && !self.names.iter().any(|n| n == "lm_head.weight") {
                continue; // tied: wte is the head (canonical_gpt2_tensors checked it)
            }
            let Some(i) = self.names.iter().position(|n| *n == t.name) else {
                return Err(CkptError::Tensor {
                    path: path.to_path_buf(),
                    name: t.name.clone(),
                    reason: "is not a tensor of this model".to_string(),
                });
            };
            if t.shape != self.shapes[i] {
                return Err(CkptError::Tensor {
                    path: path.to_path_buf(),
                    name: t.name.clone(),
                    reason: format!("has shape {:?}, expected {:?}", t.shape, self.shapes[i]),
                });
            }
            params[self.ranges[i].clone()].copy_from_slice(&t.data);
            seen[i] = true;
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(CkptError::Tensor {
                path: path.to_path_buf(),
                name: self.names[i].clone(),
                reason: "is missing".to_string(),
            });
        }
        Ok(params)
    }
}

/// The `config.json` of a model.
pub fn hf_config(cfg: &GptConfig, tokenizer: &Tokenizer) -> HfGpt2Config {
    HfGpt2Config {
        vocab_size: cfg.vocab_size,
        n_positions: cfg.n_positions,
        n_embd: cfg.n_embd,
        n_layer: cfg.n_layer,
        n_head: cfg.n_head,
        bos_token_id: tokenizer.bos_id(),
        eos_token_id: tokenizer.eos_id(),
        untied_head: cfg.untied_head,
    }
}

/// The model config of a `config.json`.
pub fn gpt_config(hf: &HfGpt2Config) -> GptConfig {
    GptConfig {
        vocab_size: hf.vocab_size,
        n_positions: hf.n_positions,
        n_embd: hf.n_embd,
        n_layer: hf.n_layer,
        n_head: hf.n_head,
        untied_head: hf.untied_head,
    }
}

/// Reads one flat optimizer-state vector of `len` values from the tensors of
/// `optimizer.safetensors`.
pub fn optimizer_vector(
    path: &Path,
    tensors: &[NamedTensor],
    name: &str,
    len: usize,
) -> Result<Vec<f32>, CkptError> {
    let t = tensors
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| CkptError::Tensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            reason: "is missing".to_string(),
        })?;
    if t.shape != [len] {
        return Err(CkptError::Tensor {
            path: path.to_path_buf(),
            name: name.to_string(),
            reason: format!("has shape {:?}, the model needs [{len}]", t.shape),
        });
    }
    Ok(t.data.clone())
}
