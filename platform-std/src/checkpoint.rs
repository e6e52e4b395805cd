//! Hugging Face–compatible checkpoints and run-directory management.
//!
//! A model directory holds `model.safetensors` (GPT-2 tensor names, F32),
//! `config.json` (a GPT-2 config) and the tokenizer files, so
//! `transformers.GPT2LMHeadModel.from_pretrained(DIR)` loads it. A checkpoint
//! directory `RUN/checkpoint-STEP/` adds `trainer_state.json` and
//! `optimizer.safetensors`.
//!
//! Crash safety: a checkpoint is assembled in `RUN/.tmp-checkpoint-STEP-PID/`,
//! every file and the directory are fsynced, then it is renamed to its final
//! name and `RUN` is fsynced. A directory under the final name is therefore
//! complete; older checkpoints are only deleted after a newer one exists.
//! One trainer per run directory: stale `.tmp-*` entries are deleted by
//! [`clean_stale_temp`] at start.

mod gpt2_config;
mod pretrained;
mod safetensors_f32;
mod trainer_state;

pub use gpt2_config::{
    check_gpt2_tensors, gpt2_tensor_shapes, limits, read_config, write_config, HfGpt2Config,
    LAYER_NORM_EPSILON,
};
pub use pretrained::canonical_gpt2_tensors;
pub use safetensors_f32::{
    parse_safetensors, read_safetensors, write_safetensors, NamedTensor, TensorRef,
};
pub use trainer_state::{
    read_trainer_state, write_trainer_state, TrainerState, TRAINER_STATE_FORMAT,
    TRAINER_STATE_VERSION,
};

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::fsutil::{create_dir_all_durable, fsync_dir, write_and_sync, FsError, TMP_PREFIX};
use crate::tokenizer::{Tokenizer, TokenizerError};
use safetensors_f32::{check_tensors_to_write, write_safetensors_plain};

/// Model weights file name.
pub const MODEL_FILE: &str = "model.safetensors";
/// GPT-2 config file name.
pub const CONFIG_FILE: &str = "config.json";
/// Training state file name.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
/// Optimizer state file name.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Files whose presence makes a `checkpoint-N` directory complete.
pub const CHECKPOINT_FILES: [&str; 5] = [
    MODEL_FILE,
    CONFIG_FILE,
    crate::tokenizer::TOKENIZER_FILE,
    TRAINER_STATE_FILE,
    OPTIMIZER_FILE,
];
/// Prefix of checkpoint directory names (`checkpoint-STEP`).
pub const CHECKPOINT_PREFIX: &str = "checkpoint-";

/// Checkpoint, config and state errors. Each `Display` is one line.
#[derive(Debug)]
pub enum CkptError {
    /// An I/O operation failed (includes disk full).
    Io(FsError),
    /// A path that should exist does not.
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// A safetensors file is corrupt, truncated or empty.
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor has the wrong dtype, shape or name.
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A JSON file does not parse.
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        source: serde_json::Error,
    },
    /// A JSON field is missing or has a bad type or value.
    Field {
        /// The file.
        path: PathBuf,
        /// The field name.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Tokenizer files failed to load or save.
    Tokenizer(TokenizerError),
    /// A `checkpoint-N` directory lacks required files.
    Incomplete {
        /// The directory.
        path: PathBuf,
        /// The missing files.
        missing: Vec<&'static str>,
    },
    /// A run directory holds no complete checkpoint.
    NoCheckpoint {
        /// The run directory.
        path: PathBuf,
    },
    /// Files of one checkpoint disagree with each other.
    Mismatch {
        /// The directory.
        path: PathBuf,
        /// What disagrees, with the numbers.
        reason: String,
    },
    /// The caller passed inconsistent data to a writer.
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for CkptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CkptError::Io(e) => write!(f, "{e}"),
            CkptError::NotFound { path } => write!(f, "{} does not exist", path.display()),
            CkptError::Safetensors { path, reason } => {
                write!(
                    f,
                    "{} is not a valid safetensors file: {reason}",
                    path.display()
                )
            }
            CkptError::Tensor { path, name, reason } => {
                write!(f, "{}: tensor {name:?}: {reason}", path.display())
            }
            CkptError::Json { path, source } => {
                write!(f, "{} is not valid JSON: {source}", path.display())
            }
            CkptError::Field {
                path,
                field,
                reason,
            } => write!(f, "{}: field \"{field}\" {reason}", path.display()),
            CkptError::Tokenizer(e) => write!(f, "{e}"),
            CkptError::Incomplete { path, missing } => write!(
                f,
                "checkpoint {} is incomplete: missing {}",
                path.display(),
                missing.join(", ")
            ),
            CkptError::NoCheckpoint { path } => write!(
                f,
                "{} contains no complete checkpoint-N directory to resume from",
                path.display()
            ),
            CkptError::Mismatch { path, reason } => {
                write!(f, "checkpoint {} is inconsistent: {reason}", path.display())
            }
            CkptError::InvalidInput { reason } => write!(f, "cannot save checkpoint: {reason}"),
        }
    }
}

impl std::error::Error for CkptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CkptError::Io(e) => Some(e),
            CkptError::Json { source, .. } => Some(source),
            CkptError::Tokenizer(e) => Some(e),
            _ => None,
        }
    }
}

impl From<FsError> for CkptError {
    fn from(e: FsError) -> Self {
        CkptError::Io(e)
    }
}

impl From<TokenizerError> for CkptError {
    fn from(e: TokenizerError) -> Self {
        CkptError::Tokenizer(e)
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, CkptError> {
    fs::read(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            CkptError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            CkptError::Io(FsError::new("read", path, e))
        }
    })
}

fn json_bytes(doc: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(doc).expect("a JSON value always serializes");
    bytes.push(b'\n');
    bytes
}

fn read_json(path: &Path) -> Result<Value, CkptError> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|source| CkptError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// What [`save_checkpoint`] writes.
#[derive(Clone, Copy, Debug)]
pub struct Checkpoint<'a> {
    /// Model weights (GPT-2 names and shapes of `config`).
    pub model: &'a [TensorRef<'a>],
    /// The model's config.
    pub config: &'a HfGpt2Config,
    /// The tokenizer.
    pub tokenizer: &'a Tokenizer,
    /// Optimizer state tensors (names chosen by the caller).
    pub optimizer: &'a [TensorRef<'a>],
    /// Step, RNG, data position, run configuration. `state.step` names the
    /// directory.
    pub state: &'a TrainerState,
}

/// A model directory's content.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// Weights in file order.
    pub model: Vec<NamedTensor>,
    /// The config.
    pub config: HfGpt2Config,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
}

/// A checkpoint directory's content.
#[derive(Clone, Debug)]
pub struct LoadedCheckpoint {
    /// The directory it was read from.
    pub dir: PathBuf,
    /// Weights, config and tokenizer.
    pub model: LoadedModel,
    /// Optimizer tensors in file order.
    pub optimizer: Vec<NamedTensor>,
    /// Training state.
    pub state: TrainerState,
}

fn check_model_input(
    cfg: &HfGpt2Config,
    tokenizer: &Tokenizer,
    model: &[TensorRef<'_>],
) -> Result<(), CkptError> {
    cfg.validate().map_err(|(f, r)| CkptError::InvalidInput {
        reason: format!("config field {f} {r}"),
    })?;
    if tokenizer.vocab_size() > cfg.vocab_size {
        return Err(CkptError::InvalidInput {
            reason: format!(
                "tokenizer has {} tokens but the model's vocab_size is {}",
                tokenizer.vocab_size(),
                cfg.vocab_size
            ),
        });
    }
    check_tensors_to_write(model)?;
    check_gpt2_tensors(
        Path::new(MODEL_FILE),
        model.iter().map(|t| (t.name, t.shape)),
        cfg,
    )
    .map_err(|e| CkptError::InvalidInput {
        reason: e.to_string(),
    })
}

/// Writes `model.safetensors`, `config.json` and the tokenizer files into
/// `dir` (created if needed), each file atomically. This is the final model
/// at the top of a run directory; the set is not atomic as a whole (resume
/// reads `checkpoint-N` directories, which are).
pub fn write_model_dir(
    dir: &Path,
    model: &[TensorRef<'_>],
    config: &HfGpt2Config,
    tokenizer: &Tokenizer,
) -> Result<(), CkptError> {
    check_model_input(config, tokenizer, model)?;
    create_dir_all_durable(dir)?;
    write_safetensors(&dir.join(MODEL_FILE), model, &[])?;
    write_config(&dir.join(CONFIG_FILE), config)?;
    tokenizer.save(dir)?;
    Ok(())
}

/// Reads a model directory (weights, config, tokenizer) and checks they
/// agree: the tensors match the config, the tokenizer fits the vocabulary.
/// Any GPT-2 directory in the Hugging Face layout reads, not only cllm's:
/// tensor names with or without `transformer.`, mask buffers, a tied or untied
/// `lm_head.weight`, F16/BF16 weights (see [`canonical_gpt2_tensors`]), and
/// GPT-2's `vocab.json` + `merges.txt` instead of `tokenizer.json`.
pub fn load_model_dir(dir: &Path) -> Result<LoadedModel, CkptError> {
    if !dir.is_dir() {
        return Err(CkptError::NotFound {
            path: dir.to_path_buf(),
        });
    }
    let config = read_config(&dir.join(CONFIG_FILE))?;
    let tokenizer = Tokenizer::load(dir)?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(CkptError::Mismatch {
            path: dir.to_path_buf(),
            reason: format!(
                "the tokenizer has {} tokens but config.json's vocab_size is {}",
                tokenizer.vocab_size(),
                config.vocab_size
            ),
        });
    }
    let model_path = dir.join(MODEL_FILE);
    let model = canonical_gpt2_tensors(
        &model_path,
        read_safetensors(&model_path)?,
        !config.untied_head,
    )?;
    check_gpt2_tensors(
        &model_path,
        model.iter().map(|t| (t.name.as_str(), t.shape.as_slice())),
        &config,
    )?;
    Ok(LoadedModel {
        model,
        config,
        tokenizer,
    })
}

/// `checkpoint-STEP`.
pub fn checkpoint_dir_name(step: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{step}")
}

/// The step of a `checkpoint-STEP` name (canonical decimal: no sign, no
/// leading zeros), else `None`.
pub fn parse_checkpoint_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHECKPOINT_PREFIX)?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// The required files missing from checkpoint directory `dir`.
pub fn missing_checkpoint_files(dir: &Path) -> Vec<&'static str> {
    CHECKPOINT_FILES
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect()
}

fn read_dir_names(dir: &Path) -> Result<Option<Vec<String>>, CkptError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::new("list", dir, e).into()),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| FsError::new("list", dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(Some(names))
}

/// Complete checkpoints of `run_dir`, oldest first, as `(step, path)`.
/// Temporary directories and `checkpoint-N` directories lacking a required
/// file are ignored. A missing `run_dir` has none.
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>, CkptError> {
    let Some(names) = read_dir_names(run_dir)? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<(u64, PathBuf)> = names
        .iter()
        .filter_map(|n| parse_checkpoint_name(n).map(|s| (s, run_dir.join(n))))
        .filter(|(_, p)| p.is_dir() && missing_checkpoint_files(p).is_empty())
        .collect();
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint of `run_dir`, by step number.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>, CkptError> {
    Ok(list_checkpoints(run_dir)?.pop().map(|(_, p)| p))
}

/// Renames `path` to a temporary name, makes that durable, then deletes it:
/// a kill mid-deletion leaves a `.tmp-*` directory (cleaned at next start),
/// never a half-deleted `checkpoint-N`.
fn remove_dir_durably(run_dir: &Path, path: &Path, what: &str) -> Result<(), CkptError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doomed = run_dir.join(format!("{TMP_PREFIX}{what}-{name}-{}", std::process::id()));
    fs::rename(path, &doomed).map_err(|e| FsError::new("rename for deletion", path, e))?;
    fsync_dir(run_dir)?;
    fs::remove_dir_all(&doomed).map_err(|e| FsError::new("delete", &doomed, e))?;
    Ok(())
}

/// Deletes all but the newest `keep` complete checkpoints (at least the
/// newest one is always kept, whatever `keep`). Returns the deleted paths.
pub fn prune_checkpoints(run_dir: &Path, keep: usize) -> Result<Vec<PathBuf>, CkptError> {
    let all = list_checkpoints(run_dir)?;
    let keep = keep.max(1);
    let n_delete = all.len().saturating_sub(keep);
    let mut deleted = Vec::new();
    for (_, path) in all.into_iter().take(n_delete) {
        remove_dir_durably(run_dir, &path, "delete")?;
        deleted.push(path);
    }
    Ok(deleted)
}

/// Deletes `path` whether it is a directory or a file; absent is fine.
fn remove_any(path: &Path) -> Result<(), FsError> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(|e| FsError::new("delete", path, e))
}

/// Deletes `.tmp-*` files and directories left in `run_dir` by an
/// interrupted save or deletion. Call at start, before writing; assumes no
/// other trainer uses `run_dir`. Returns what was removed.
pub fn clean_stale_temp(run_dir: &Path) -> Result<Vec<PathBuf>, CkptError> {
    let Some(names) = read_dir_names(run_dir)? else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for name in names.into_iter().filter(|n| n.starts_with(TMP_PREFIX)) {
        let p = run_dir.join(&name);
        remove_any(&p)?;
        removed.push(p);
    }
    if !removed.is_empty() {
        fsync_dir(run_dir)?;
    }
    Ok(removed)
}

fn write_checkpoint_files(dir: &Path, ck: &Checkpoint<'_>) -> Result<(), CkptError> {
    write_safetensors_plain(&dir.join(MODEL_FILE), ck.model, &[])?;
    write_safetensors_plain(&dir.join(OPTIMIZER_FILE), ck.optimizer, &[])?;
    let config = json_bytes(&ck.config.to_json());
    write_and_sync(&dir.join(CONFIG_FILE), |w| w.write_all(&config))?;
    let state = json_bytes(&ck.state.to_json());
    write_and_sync(&dir.join(TRAINER_STATE_FILE), |w| w.write_all(&state))?;
    ck.tokenizer.save(dir)?;
    fsync_dir(dir)?;
    Ok(())
}

/// Saves `RUN/checkpoint-STEP` (STEP = `ck.state.step`) atomically and
/// returns its path. An existing directory of that name is replaced only
/// after the new one is complete on disk; other checkpoints are untouched.
pub fn save_checkpoint(run_dir: &Path, ck: &Checkpoint<'_>) -> Result<PathBuf, CkptError> {
    check_model_input(ck.config, ck.tokenizer, ck.model)?;
    check_tensors_to_write(ck.optimizer)?;
    create_dir_all_durable(run_dir)?;
    let step = ck.state.step;
    let name = checkpoint_dir_name(step);
    let tmp = run_dir.join(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
    remove_any(&tmp)?;
    fs::create_dir(&tmp).map_err(|e| FsError::new("create directory", &tmp, e))?;
    if let Err(e) = write_checkpoint_files(&tmp, ck) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let fin = run_dir.join(&name);
    // An existing checkpoint of the same step (a run resumed from an
    // earlier one) is moved aside only now that the new one is complete,
    // and put back if the new one cannot take its place.
    let replaced = if fs::symlink_metadata(&fin).is_ok() {
        let old = run_dir.join(format!(
            "{TMP_PREFIX}replaced-{name}-{}",
            std::process::id()
        ));
        let moved = remove_any(&old).and_then(|()| {
            fs::rename(&fin, &old).map_err(|e| FsError::new("rename aside", &fin, e))
        });
        if let Err(e) = moved {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e.into());
        }
        Some(old)
    } else {
        None
    };
    if let Err(e) = fs::rename(&tmp, &fin) {
        let _ = fs::remove_dir_all(&tmp);
        if let Some(old) = &replaced {
            let _ = fs::rename(old, &fin);
        }
        return Err(FsError::new("rename into place", &fin, e).into());
    }
    fsync_dir(run_dir)?;
    if let Some(old) = replaced {
        remove_any(&old)?;
    }
    Ok(fin)
}

/// Loads a complete checkpoint directory and checks its parts agree
/// (tensors vs config, tokenizer vs vocabulary, state step vs directory
/// name).
pub fn load_checkpoint(dir: &Path) -> Result<LoadedCheckpoint, CkptError> {
    if !dir.is_dir() {
        return Err(CkptError::NotFound {
            path: dir.to_path_buf(),
        });
    }
    let missing = missing_checkpoint_files(dir);
    if !missing.is_empty() {
        return Err(CkptError::Incomplete {
            path: dir.to_path_buf(),
            missing,
        });
    }
    let model = load_model_dir(dir)?;
    let optimizer = read_safetensors(&dir.join(OPTIMIZER_FILE))?;
    let state = read_trainer_state(&dir.join(TRAINER_STATE_FILE))?;
    let dir_step = dir
        .file_name()
        .and_then(|n| parse_checkpoint_name(&n.to_string_lossy()));
    if let Some(s) = dir_step {
        if s != state.step {
            return Err(CkptError::Mismatch {
                path: dir.to_path_buf(),
                reason: format!(
                    "directory name says step {s} but trainer_state.json says {}",
                    state.step
                ),
            });
        }
    }
    Ok(LoadedCheckpoint {
        dir: dir.to_path_buf(),
        model,
        optimizer,
        state,
    })
}

/// The checkpoint `--resume PATH` means: PATH itself when it is a checkpoint
/// directory (it holds `trainer_state.json`; it must be complete), else the
/// newest complete checkpoint of the run directory PATH.
pub fn resolve_resume(path: &Path) -> Result<PathBuf, CkptError> {
    let meta = fs::metadata(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            CkptError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            CkptError::Io(FsError::new("inspect", path, e))
        }
    })?;
    if !meta.is_dir() {
        return Err(CkptError::NoCheckpoint {
            path: path.to_path_buf(),
        });
    }
    if path.join(TRAINER_STATE_FILE).exists() {
        let missing = missing_checkpoint_files(path);
        if !missing.is_empty() {
            return Err(CkptError::Incomplete {
                path: path.to_path_buf(),
                missing,
            });
        }
        return Ok(path.to_path_buf());
    }
    latest_checkpoint(path)?.ok_or_else(|| CkptError::NoCheckpoint {
        path: path.to_path_buf(),
    })
}
