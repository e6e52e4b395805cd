//! Text generation with the KV cache: the library side of
//! `examples/generate.rs` and of the sample the trainer prints at the end.

use std::fmt;
use std::path::{Path, PathBuf};

use cllm_core::kernels::Kernels;
use cllm_core::model::{self, GptConfig, ModelError};
use cllm_core::rng::Rng;
use cllm_core::sample::{self, Candidate, SampleError};

use crate::checkpoint::{self, CkptError, MODEL_FILE};
use crate::tokenizer::{Tokenizer, TokenizerError};

use super::tensors::{gpt_config, Layout};

/// Sampling settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleSettings {
    /// Tokens to generate after the prompt.
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the `k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Nucleus threshold in `(0, 1]` (1 = off).
    pub top_p: f32,
    /// Seed of the sampling RNG.
    pub seed: u64,
}

impl Default for SampleSettings {
    fn default() -> Self {
        SampleSettings {
            max_new_tokens: 200,
            temperature: 0.8,
            top_k: 0,
            top_p: 1.0,
            seed: 1337,
        }
    }
}

/// Why generation failed (one line).
#[derive(Debug)]
pub enum GenerateError {
    /// Loading the model failed.
    Checkpoint(CkptError),
    /// The prompt cannot be encoded, or an id cannot be decoded.
    Tokenizer(TokenizerError),
    /// The model rejected an input.
    Model(ModelError),
    /// Bad sampling settings.
    Sample(SampleError),
    /// Anything else (message).
    Other(String),
}

impl fmt::Display for GenerateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenerateError::Checkpoint(e) => write!(f, "{e}"),
            GenerateError::Tokenizer(e) => write!(f, "{e}"),
            GenerateError::Model(e) => write!(f, "model error: {e}"),
            GenerateError::Sample(e) => write!(f, "sampling: {e}"),
            GenerateError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for GenerateError {}

impl From<CkptError> for GenerateError {
    fn from(e: CkptError) -> Self {
        GenerateError::Checkpoint(e)
    }
}
impl From<TokenizerError> for GenerateError {
    fn from(e: TokenizerError) -> Self {
        GenerateError::Tokenizer(e)
    }
}
impl From<ModelError> for GenerateError {
    fn from(e: ModelError) -> Self {
        GenerateError::Model(e)
    }
}
impl From<SampleError> for GenerateError {
    fn from(e: SampleError) -> Self {
        GenerateError::Sample(e)
    }
}

/// A model ready to generate: config, flat parameters, tokenizer.
#[derive(Clone, Debug)]
pub struct LoadedGpt {
    /// Where it was read from.
    pub dir: PathBuf,
    /// The model config.
    pub config: GptConfig,
    /// Flat parameters in buffer order.
    pub params: Vec<f32>,
    /// The tokenizer saved with it.
    pub tokenizer: Tokenizer,
}

/// Loads a model from a model directory (the top of a finished run, or a
/// `checkpoint-N` directory); a run directory without a final model (a run
/// that was interrupted) falls back to its newest complete checkpoint.
pub fn load_gpt(dir: &Path) -> Result<LoadedGpt, GenerateError> {
    let mut dir = dir.to_path_buf();
    if dir.is_dir() && !dir.join(MODEL_FILE).exists() {
        if let Some(ck) = checkpoint::latest_checkpoint(&dir)? {
            dir = ck;
        }
    }
    let loaded = checkpoint::load_model_dir(&dir)?;
    let config = gpt_config(&loaded.config);
    config
        .validate()
        .map_err(|e| GenerateError::Other(format!("{}: {e}", dir.display())))?;
    let params = Layout::new(&config).flatten(&dir.join(MODEL_FILE), &loaded.model)?;
    Ok(LoadedGpt {
        dir,
        config,
        params,
        tokenizer: loaded.tokenizer,
    })
}

/// The ids a generation starts from: the prompt's, or — for an empty prompt
/// — BOS (word) or a newline (byte, char), which is not printed.
pub fn prompt_ids(tokenizer: &Tokenizer, prompt: &str) -> Result<Vec<u32>, GenerateError> {
    let ids = tokenizer.encode(prompt)?;
    if !ids.is_empty() {
        return Ok(ids);
    }
    if let Some(bos) = tokenizer.bos_id() {
        return Ok(vec![bos]);
    }
    match tokenizer.encode("\n") {
        Ok(nl) if !nl.is_empty() => Ok(nl),
        _ => Err(GenerateError::Other(
            "the prompt is empty and the vocabulary has no newline to start from; give --prompt"
                .to_string(),
        )),
    }
}

/// Generates up to `settings.max_new_tokens` tokens after `prompt`, calling
/// `on_token` with each new id as soon as it is chosen (for streaming), and
/// returns the new ids.
///
/// When the context fills up, the cache is rebuilt from the last half of the
/// context, so generation can go on past `n_positions` tokens.
pub fn generate<K: Kernels<f32>>(
    kernels: &K,
    cfg: &GptConfig,
    params: &[f32],
    prompt: &[u32],
    settings: &SampleSettings,
    mut on_token: impl FnMut(u32) -> Result<(), GenerateError>,
) -> Result<Vec<u32>, GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::Other("empty prompt".to_string()));
    }
    let ctx = cfg.n_positions;
    let mut cache = vec![0.0f32; cfg.kv_cache_len()];
    let mut work = vec![0.0f32; cfg.infer_work_len()];
    let mut logits = vec![0.0f32; cfg.vocab_size];
    let mut scratch = vec![Candidate::default(); cfg.vocab_size];
    let mut rng = Rng::new(settings.seed);
    let mut hist: Vec<u32> = prompt.to_vec();
    let mut out = Vec::with_capacity(settings.max_new_tokens);
    if settings.max_new_tokens == 0 {
        return Ok(out);
    }

    let mut feed = |window: &[u32], first_pos: usize, cache: &mut [f32], logits: &mut [f32]| {
        for (i, &t) in window.iter().enumerate() {
            model::forward_cached(
                kernels,
                cfg,
                params,
                cache,
                &mut work,
                t,
                first_pos + i,
                logits,
            )?;
        }
        Ok::<(), GenerateError>(())
    };
    let start = hist.len().saturating_sub(ctx);
    feed(&hist[start..], 0, &mut cache, &mut logits)?;
    let mut pos = hist.len() - start;
    loop {
        let next = sample::sample(
            &logits,
            settings.temperature,
            settings.top_k,
            settings.top_p,
            &mut rng,
            &mut scratch,
        )?;
        on_token(next)?;
        out.push(next);
        hist.push(next);
        if out.len() == settings.max_new_tokens {
            return Ok(out);
        }
        if pos < ctx {
            feed(&[next], pos, &mut cache, &mut logits)?;
            pos += 1;
        } else {
            let keep = (ctx / 2).max(1);
            feed(&hist[hist.len() - keep..], 0, &mut cache, &mut logits)?;
            pos = keep;
        }
    }
}
