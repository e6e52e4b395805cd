//! GPT-2 in the core: configuration, parameter layout (Hugging Face names,
//! shapes and order), initialisation, forward pass with loss, hand-written
//! backward pass, and KV-cache inference.
//!
//! Nothing here allocates: [`GptConfig`] reports every buffer size and the
//! caller supplies the memory. Parameters and gradients are each one flat
//! buffer (named views in [`GptConfig::tensors`]), so the sphere hierarchy can
//! cut them into fixed segments; all math is generic over [`Real`](crate::real::Real)
//! (`f32` for training, `f64` as the reference for gradient checks) and runs
//! on a [`Kernels`](crate::kernels::Kernels) implementation.
//!
//! Architecture: token + learned position embeddings; `n_layer` pre-LN blocks
//! `x += c_proj(causal_mha(ln_1(x))); x += c_proj(gelu_new(c_fc(ln_2(x))))`;
//! final `ln_f`; logits `= ln_f(x)·wteᵀ` (tied head); mean cross-entropy over
//! all positions. LayerNorm eps 1e-5 (biased variance); attention scale
//! `1/√head_dim`; masked positions get probability exactly 0.
//!
//! # Example: sizes → buffers → init → forward → backward
//! ```
//! use cllm_core::kernels::Portable;
//! use cllm_core::model::{self, GptConfig};
//!
//! let cfg = GptConfig { vocab_size: 16, n_positions: 8, n_embd: 8, n_layer: 2, n_head: 2, untied_head: false };
//! cfg.validate()?;
//! let (batch, seq) = (2, 4);
//! let mut params = vec![0.0f32; cfg.num_params()];
//! let mut grads = vec![0.0f32; cfg.num_params()];
//! let mut work = vec![0.0f32; cfg.activation_len(batch, seq)];
//! model::init_params(&cfg, &mut params, 42)?;
//!
//! let tokens = [1, 2, 3, 4, 9, 8, 7, 6];
//! let targets = [2, 3, 4, 5, 8, 7, 6, 5];
//! let loss = model::forward(&Portable, &cfg, &params, &mut work, &tokens, Some(&targets[..]), batch, seq)?;
//! assert!((loss - 16f32.ln()).abs() < 0.1); // a fresh model is close to uniform
//! let logits = model::logits(&cfg, &work, batch, seq)?; // [batch, seq, vocab]
//! assert_eq!(logits.len(), batch * seq * cfg.vocab_size);
//!
//! model::backward(&Portable, &cfg, &params, &mut grads, &mut work, &tokens, &targets, batch, seq)?;
//! assert!(grads.iter().any(|&g| g != 0.0));
//!
//! // Out-of-range tokens are errors, not panics.
//! let bad = [1, 2, 3, 99, 0, 0, 0, 0];
//! assert!(model::forward(&Portable, &cfg, &params, &mut work, &bad, None, batch, seq).is_err());
//! # Ok::<(), model::ModelError>(())
//! ```

mod config;
mod error;
mod gpt;
mod infer;
mod init;
mod layers;
mod layout;
mod work;

pub use config::{ConfigError, GptConfig, LN_EPS};
pub use error::{Buffer, ModelError};
pub use gpt::{backward, backward_into, backward_streaming, forward, logits, GradSink};
pub use infer::forward_cached;
pub use init::{init_params, INIT_STD};
pub use layout::{ParamTensor, TensorKind, Tensors};
