//! The desktop trainer, as a library: configuration and its validation, data
//! set-up, the training loop over the sphere [`Hierarchy`], checkpoints with
//! exact resume, metrics, and generation. `examples/train.rs` and
//! `examples/generate.rs` are thin command-line shells over this module.
//!
//! Bitwise resume: everything a step depends on is either saved in the
//! checkpoint (parameters, AdamW moments, the step number) or a pure function
//! of the configuration and the step (the batch windows, the learning rate),
//! so continuing from `checkpoint-N` replays steps `N..` exactly.
//!
//! I/O happens only between steps: the executor's step neither allocates nor
//! locks nor touches files.

pub mod config;
pub mod generate;
mod report;
mod source;
pub mod tensors;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use cllm_core::accumulate::{ExactAcc, F32Acc, FixedAcc};
use cllm_core::kernels::{Kernels, Portable};
use cllm_core::model::{self, GptConfig};
use cllm_core::optim::{self, LrSchedule};

use crate::checkpoint::{self, Checkpoint, CkptError, LoadedCheckpoint, LoadedModel, TrainerState};
use crate::data::{self, DataError, LoadOptions};
use crate::dist::{
    self, all_ok, Collectives, CrossRank, DistError, DistSettings, DistStepStats, RankLayout,
    Reduction, Scratch, Solo,
};
use crate::exec::{ExecConfig, ExecError, FailureInjection, Hierarchy, Optimizer, UpdateSettings};
use crate::fsutil::{create_dir_all_durable, FsError};
use crate::metrics::{MetricsError, MetricsRecord, MetricsWriter};
use crate::plot;
use crate::tokenizer::{Tokenizer, TokenizerError, MIN_BPE_VOCAB};

pub use config::{
    defaults, AccumulatorKind, ConfigError, Depth, KernelSelection, OptimizerKind, RunConfig,
    TokenizerChoice,
};
pub use generate::{generate, load_gpt, prompt_ids, GenerateError, LoadedGpt, SampleSettings};
pub use report::{estimate_memory, mem_available};
pub use source::{fingerprint, CorpusSource};

/// Name of the loss plot in the run directory.
pub const LOSS_PLOT: &str = "loss.svg";

/// Units recomputed after a worker failure before the step gives up.
pub const MAX_RETRIES: u32 = 2;

/// Why training stopped (one line each).
#[derive(Debug)]
pub enum TrainError {
    /// An invalid configuration.
    Config(ConfigError),
    /// The corpus cannot be used.
    Data(DataError),
    /// Building or using the tokenizer failed.
    Tokenizer(TokenizerError),
    /// Reading or writing a checkpoint failed.
    Checkpoint(CkptError),
    /// `metrics.jsonl` cannot be written or read.
    Metrics(MetricsError),
    /// Other file-system failure.
    Io(FsError),
    /// A checkpoint does not fit this run.
    Resume(String),
    /// A training step failed.
    Step {
        /// The 1-based step that failed.
        step: u64,
        /// Why (in one process always [`DistError::Exec`]).
        error: DistError,
        /// The newest intact checkpoint.
        last_checkpoint: Option<PathBuf>,
    },
    /// Another rank of a multi-process run failed (it reports why).
    OtherRank(usize),
    /// The ranks of a multi-process run did not set up the same run
    /// (different files or flags).
    Disagree(String),
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Config(e) => write!(f, "{e}"),
            TrainError::Data(e) => write!(f, "{e}"),
            TrainError::Tokenizer(e) => write!(f, "{e}"),
            TrainError::Checkpoint(e) => write!(f, "{e}"),
            TrainError::Metrics(e) => write!(f, "{e}"),
            TrainError::Io(e) => write!(f, "{e}"),
            TrainError::Resume(s) => f.write_str(s),
            TrainError::OtherRank(r) => write!(f, "rank {r} failed (its message says why)"),
            TrainError::Disagree(s) => f.write_str(s),
            TrainError::Step {
                step,
                error,
                last_checkpoint,
            } => {
                write!(f, "training step {step} failed: {error}; ")?;
                match last_checkpoint {
                    Some(p) => write!(
                        f,
                        "the last checkpoint {} is intact (continue with --resume {})",
                        p.display(),
                        p.display()
                    ),
                    None => write!(f, "no checkpoint had been written yet"),
                }
            }
        }
    }
}

impl std::error::Error for TrainError {}

macro_rules! from_err {
    ($t:ty, $v:ident) => {
        impl From<$t> for TrainError {
            fn from(e: $t) -> Self {
                TrainError::$v(e)
            }
        }
    };
}
from_err!(ConfigError, Config);
from_err!(DataError, Data);
from_err!(TokenizerError, Tokenizer);
from_err!(CkptError, Checkpoint);
from_err!(MetricsError, Metrics);
from_err!(FsError, Io);

/// Per-step figures for progress displays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepEvent {
    /// Steps done (1-based index of the step just finished).
    pub step: u64,
    /// Steps of the whole run.
    pub total: u64,
    /// The step's mean loss.
    pub loss: f32,
    /// The step's learning rate.
    pub lr: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Tokens per second of this step.
    pub tokens_per_s: f64,
    /// Wall time of this step, in seconds.
    pub seconds: f64,
    /// Units recomputed after a worker failure.
    pub retried_units: u32,
    /// The cross-rank figures of a multi-process step (`None` in one
    /// process).
    pub dist: Option<DistStepStats>,
}

/// Receives the trainer's reports. Every method has an empty default.
pub trait Observer {
    /// Informational text (corpus summary, shape report, notes); may span
    /// lines.
    fn message(&mut self, _text: &str) {}
    /// Training begins at step `first` (0 unless resumed) of `total`.
    fn started(&mut self, _first: u64, _total: u64) {}
    /// A step finished.
    fn step(&mut self, _e: &StepEvent) {}
    /// A metrics record was written.
    fn record(&mut self, _r: &MetricsRecord) {}
    /// A checkpoint was written.
    fn saved(&mut self, _step: u64, _path: &Path) {}
    /// Training is over.
    fn finished(&mut self) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// Test hooks and other options that are not part of the run configuration.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Make a unit's computation panic (see [`FailureInjection`]).
    pub inject_failure: Option<FailureInjection>,
    /// Sleep this long after each step (tests use it to kill a run at a
    /// predictable point); `None` in normal runs.
    pub step_delay: Option<std::time::Duration>,
}

/// The result of a finished run.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The configuration it ran with (resumed runs: after merging).
    pub config: RunConfig,
    /// Steps done in total.
    pub steps: u64,
    /// Mean loss of the last step run (`None` when no step ran now).
    pub train_loss: Option<f32>,
    /// Last validation loss (`None` without validation data or steps).
    pub val_loss: Option<f32>,
    /// It in bits per byte of text (byte, char and bpe tokenizers).
    pub val_bits_per_byte: Option<f64>,
    /// Wall time of this invocation's training loop, in seconds.
    pub train_seconds: f64,
    /// The final model.
    pub model: LoadedGpt,
}

// ---------------------------------------------------------------------------
// Kernel and accumulator dispatch.

/// Work generic over the kernels (see [`dispatch_kernels`]).
pub trait KernelTask {
    /// What the work returns.
    type Output;
    /// Runs with `kernels`; `label` describes them for reports.
    fn run<K: Kernels<f32> + Send + Sync + 'static>(
        self,
        kernels: K,
        label: String,
    ) -> Self::Output;
}

/// The one place where `--kernels` becomes a type. Call
/// [`KernelSelection::check`] first (`RunConfig::validate` does).
pub fn dispatch_kernels<T: KernelTask>(sel: KernelSelection, task: T) -> T::Output {
    match sel {
        KernelSelection::Auto => {
            let k = crate::kernels::SimdKernels::auto();
            task.run(k, k.describe())
        }
        // The core's plain-Rust kernels: the same bits on every platform.
        KernelSelection::Portable => task.run(Portable, "portable".to_string()),
        KernelSelection::Avx2 | KernelSelection::Avx512 | KernelSelection::Amx => {
            use crate::kernels::KernelChoice;
            let choice = match sel {
                KernelSelection::Avx2 => KernelChoice::Avx2,
                KernelSelection::Avx512 => KernelChoice::Avx512,
                _ => KernelChoice::Amx,
            };
            let k = crate::kernels::SimdKernels::new(choice)
                .expect("--kernels is checked by KernelSelection::check first");
            task.run(k, k.describe())
        }
    }
}

/// Work generic over the accumulator (see [`dispatch_accumulator`]).
pub trait AccTask {
    /// What the work returns.
    type Output;
    /// Runs with `acc`.
    fn run<A>(self, acc: A) -> Self::Output
    where
        A: CrossRank,
        A::Cell: 'static;
}

/// The one place where `--accumulator` becomes a type.
pub fn dispatch_accumulator<T: AccTask>(
    kind: AccumulatorKind,
    precision: u32,
    task: T,
) -> Result<T::Output, ConfigError> {
    let _ = precision; // only bigfloat has a precision
    Ok(match kind {
        AccumulatorKind::F32 => task.run(F32Acc),
        AccumulatorKind::Fixed => task.run(FixedAcc::default()),
        AccumulatorKind::Exact => task.run(ExactAcc),
        #[cfg(feature = "bigfloat")]
        AccumulatorKind::BigFloat => {
            let acc = cllm_core::accumulate::BigFloatAcc::new(precision)
                .map_err(|e| ConfigError(format!("--precision: {e}")))?;
            task.run(acc)
        }
        #[cfg(not(feature = "bigfloat"))]
        AccumulatorKind::BigFloat => {
            return Err(ConfigError(
                "--accumulator bigfloat needs the bigfloat feature: rebuild with \
                 `--features bigfloat`"
                    .to_string(),
            ))
        }
    })
}

// ---------------------------------------------------------------------------
// Set-up.

/// Everything prepared before the hierarchy starts.
struct Prepared {
    cfg: RunConfig,
    /// `cfg` plus corpus fingerprint and resolved values, as saved.
    saved_config: Value,
    run_dir: PathBuf,
    model: GptConfig,
    tokenizer: Tokenizer,
    source: Arc<CorpusSource>,
    exec: ExecConfig,
    total_steps: u64,
    resumed: Option<LoadedCheckpoint>,
    /// `--init-from`: the pretrained model to start from.
    pretrained: Option<LoadedModel>,
    /// Converts the validation loss to bits per byte.
    bpb_per_nat: Option<f64>,
    start_step: u64,
    elapsed_before: f64,
    inject: Option<FailureInjection>,
    step_delay: Option<std::time::Duration>,
    /// Fingerprint of what the ranks of a multi-process run must agree on
    /// (configuration, corpus, tokenized length).
    agreement: u64,
}

fn corpus_json(bytes: usize, fp: u64) -> Value {
    json!({ "bytes": bytes, "fingerprint": format!("{fp:016x}") })
}

/// The run directory a `--resume PATH` belongs to: PATH itself, or its
/// parent when PATH is a `checkpoint-N` directory.
fn run_dir_of(resume: &Path, ckpt: &Path) -> PathBuf {
    if resume == ckpt {
        ckpt.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    } else {
        resume.to_path_buf()
    }
}

fn default_run_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("run-{secs}"))
}

/// The tokenizer: the checkpoint's when resuming (it must be the kind the
/// configuration names), the pretrained model's with `--init-from`, the one
/// at `--tokenizer PATH`, or one trained on `text`.
fn choose_tokenizer(
    cfg: &mut RunConfig,
    resumed: &Option<LoadedCheckpoint>,
    pretrained: &Option<LoadedModel>,
    text: &[u8],
    obs: &mut dyn Observer,
) -> Result<Tokenizer, TrainError> {
    Ok(match (resumed, pretrained) {
        (None, Some(m)) => m.tokenizer.clone(),
        (Some(ck), _) => {
            let t = ck.model.tokenizer.clone();
            if t.kind() != cfg.tokenizer.into() {
                return Err(TrainError::Resume(format!(
                    "checkpoint {} has a {} tokenizer but its configuration says {}",
                    ck.dir.display(),
                    t.kind(),
                    cfg.tokenizer
                )));
            }
            t
        }
        (None, None) => match &cfg.tokenizer_path {
            Some(path) => {
                let t = Tokenizer::load_path(path)?;
                cfg.tokenizer = t.kind().into();
                obs.message(&format!(
                    "tokenizer: {} ({}, {} ids)",
                    path.display(),
                    t.kind(),
                    t.vocab_size()
                ));
                t
            }
            None => train_tokenizer(cfg, text, obs)?,
        },
    })
}

/// A resumed checkpoint's `config.json` must describe the model the run
/// configuration builds.
fn check_resumed_model(
    ck: &LoadedCheckpoint,
    model: &GptConfig,
    tokenizer: &Tokenizer,
) -> Result<(), TrainError> {
    let hf = tensors::hf_config(model, tokenizer);
    if ck.model.config != hf {
        return Err(TrainError::Resume(format!(
            "checkpoint {}: config.json ({} layers, {} heads, n_embd {}, context {}, vocab {}) \
             does not match the run configuration ({} layers, {} heads, n_embd {}, context {}, \
             vocab {})",
            ck.dir.display(),
            ck.model.config.n_layer,
            ck.model.config.n_head,
            ck.model.config.n_embd,
            ck.model.config.n_positions,
            ck.model.config.vocab_size,
            hf.n_layer,
            hf.n_head,
            hf.n_embd,
            hf.n_positions,
            hf.vocab_size
        )));
    }
    Ok(())
}

/// `--init-from DIR`: reads the model directory and makes `cfg` describe
/// its architecture and tokenizer. A flag given on the command line that
/// says otherwise is an error, not silently overridden.
fn init_from(
    cfg: &mut RunConfig,
    dir: &Path,
    explicit: &[&str],
    obs: &mut dyn Observer,
) -> Result<LoadedModel, TrainError> {
    let m = checkpoint::load_model_dir(dir)?;
    let c = &m.config;
    let contradicts = |field: &str, given: String, theirs: String| {
        TrainError::Config(ConfigError(format!(
            "{} {given} contradicts --init-from {} ({theirs}): fine-tuning keeps the \
             checkpoint's architecture and tokenizer; drop the flag",
            config::flag_name(field),
            dir.display()
        )))
    };
    for (field, given, theirs, name) in [
        ("embed_dim", cfg.embed_dim, c.n_embd, "n_embd"),
        ("num_layers", cfg.num_layers, c.n_layer, "n_layer"),
        ("num_heads", cfg.num_heads, c.n_head, "n_head"),
        ("context", cfg.context_len(), c.n_positions, "n_positions"),
        ("vocab_size", cfg.vocab_size, c.vocab_size, "vocab_size"),
    ] {
        if explicit.contains(&field) && given != theirs {
            return Err(contradicts(
                field,
                given.to_string(),
                format!("{name} {theirs}"),
            ));
        }
    }
    for field in ["tokenizer", "tokenizer_path"] {
        if explicit.contains(&field) {
            return Err(contradicts(
                field,
                "(given)".to_string(),
                format!("its own {} tokenizer", m.tokenizer.kind()),
            ));
        }
    }
    cfg.embed_dim = c.n_embd;
    cfg.num_layers = c.n_layer;
    cfg.num_heads = c.n_head;
    cfg.context = Some(c.n_positions);
    cfg.tokenizer = m.tokenizer.kind().into();
    cfg.validate()?;
    obs.message(&format!(
        "init from {}: {} layers, {} heads, n_embd {}, context {}, vocab {} ({} tokenizer, {} ids)",
        dir.display(),
        c.n_layer,
        c.n_head,
        c.n_embd,
        c.n_positions,
        c.vocab_size,
        m.tokenizer.kind(),
        m.tokenizer.vocab_size()
    ));
    Ok(m)
}

/// Trains the tokenizer; on a long bpe training, a progress line every few
/// seconds (the training runs on a scoped thread, this one reports).
fn train_tokenizer(
    cfg: &RunConfig,
    text: &[u8],
    obs: &mut dyn Observer,
) -> Result<Tokenizer, TrainError> {
    let kind = cfg.tokenizer.into();
    if cfg.tokenizer != TokenizerChoice::Bpe {
        return Ok(Tokenizer::train(kind, text, cfg.vocab_size)?);
    }
    let read = AtomicU64::new(0);
    let start = Instant::now();
    let tok = std::thread::scope(|s| {
        let job = s.spawn(|| Tokenizer::train_with_progress(kind, text, cfg.vocab_size, &read));
        let mut last = start;
        let mut merging = false;
        while !job.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
            if last.elapsed() < Duration::from_secs(5) {
                continue;
            }
            last = Instant::now();
            let done = read.load(Ordering::Relaxed);
            if done < text.len() as u64 {
                obs.message(&format!(
                    "bpe: read {:.0} of {:.0} MiB ({:.0}%)",
                    done as f64 / (1 << 20) as f64,
                    text.len() as f64 / (1 << 20) as f64,
                    100.0 * done as f64 / text.len().max(1) as f64
                ));
            } else if !merging {
                merging = true;
                obs.message(&format!(
                    "bpe: computing {} merges",
                    cfg.vocab_size.saturating_sub(MIN_BPE_VOCAB)
                ));
            }
        }
        job.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })?;
    obs.message(&format!(
        "tokenizer: bpe, {} ids, trained in {:.1}s",
        tok.vocab_size(),
        start.elapsed().as_secs_f64()
    ));
    Ok(tok)
}

/// The run's configuration, the checkpoint it resumes (if any) and its
/// directory. Resume: the checkpoint's configuration is authoritative.
fn resolve_run(
    given: RunConfig,
    explicit: &[&str],
    obs: &mut dyn Observer,
) -> Result<(RunConfig, Option<LoadedCheckpoint>, PathBuf), TrainError> {
    match &given.resume {
        Some(path) => {
            let dir = checkpoint::resolve_resume(path)?;
            let ck = checkpoint::load_checkpoint(&dir)?;
            let saved: RunConfig =
                serde_json::from_value(ck.state.config.clone()).map_err(|e| {
                    TrainError::Resume(format!(
                        "{}: field \"config\" is not a cllm run configuration: {e}",
                        dir.join(checkpoint::TRAINER_STATE_FILE).display()
                    ))
                })?;
            let mut cfg = RunConfig::merge_resumed(&saved, &given, explicit)?;
            cfg.resume = Some(path.clone());
            cfg.validate()?;
            let run_dir = cfg.out.clone().filter(|_| explicit.contains(&"out"));
            let run_dir = run_dir.unwrap_or_else(|| run_dir_of(path, &dir));
            obs.message(&format!(
                "resuming from {} (step {})",
                dir.display(),
                ck.state.step
            ));
            Ok((cfg, Some(ck), run_dir))
        }
        None => {
            let run_dir = given.out.clone().unwrap_or_else(default_run_dir);
            if let Some(ck) = checkpoint::latest_checkpoint(&run_dir)? {
                return Err(TrainError::Resume(format!(
                    "{} already holds checkpoints ({}); continue it with --resume {} or choose \
                     another --out",
                    run_dir.display(),
                    ck.display(),
                    run_dir.display()
                )));
            }
            Ok((given, None, run_dir))
        }
    }
}

fn prepare(
    given: RunConfig,
    explicit: &[&str],
    opts: &TrainOptions,
    ranks: usize,
    overlap: bool,
    obs: &mut dyn Observer,
) -> Result<Prepared, TrainError> {
    given.validate()?;
    let (cfg, resumed, run_dir) = resolve_run(given, explicit, obs)?;
    let mut cfg = cfg;
    check_ranks(&cfg, ranks, overlap)?;
    cfg.out = Some(run_dir.clone());
    let pretrained = match (cfg.init_from.clone(), &resumed) {
        (Some(dir), None) => Some(init_from(&mut cfg, &dir, explicit, obs)?),
        _ => None,
    };

    // Data.
    let data_path = cfg.data.clone().ok_or_else(|| {
        ConfigError("no training data: give a text file or a directory".to_string())
    })?;
    let load_opts = LoadOptions {
        max_file_bytes: cfg.max_file_bytes,
        ..LoadOptions::default()
    };
    let corpus = data::load_corpus(&data_path, &load_opts)?;
    obs.message(&format!(
        "data: {}\n{}",
        data_path.display(),
        corpus.summary()
    ));
    let corpus_bytes = corpus.bytes().len();
    let fp = fingerprint(corpus.bytes());
    if let Some(ck) = &resumed {
        check_same_corpus(ck, &data_path, corpus_bytes, fp)?;
    }
    let tokenizer = choose_tokenizer(&mut cfg, &resumed, &pretrained, corpus.bytes(), obs)?;
    let store = corpus.into_tokens(&tokenizer)?;
    let n_tokens = store.len();
    data::check_len(store.len(), cfg.seq_len)?;
    let (train, val) = data::split_train_val(store.len(), cfg.val_fraction)?;
    train.check(cfg.seq_len, "training split")?;
    let eval_starts = match val {
        Some(v) if cfg.eval_windows > 0 => {
            v.check(cfg.seq_len, "validation split")?;
            data::eval_window_starts(v, cfg.seq_len, cfg.eval_windows)
        }
        _ => Vec::new(),
    };
    let total_steps = total_steps(&cfg, train.len);

    // Model and hierarchy shape.
    // A checkpoint's vocabulary may be padded beyond its tokenizer's (e.g.
    // 50,304 for GPT-2's 50,257 tokens); the checkpoint's size stands.
    // So does its head: untied only where the checkpoint's is.
    let saved = resumed
        .as_ref()
        .map(|ck| &ck.model.config)
        .or(pretrained.as_ref().map(|m| &m.config));
    let model = GptConfig {
        vocab_size: saved.map_or(tokenizer.vocab_size(), |c| c.vocab_size),
        n_positions: cfg.context_len(),
        n_embd: cfg.embed_dim,
        n_layer: cfg.num_layers,
        n_head: cfg.num_heads,
        untied_head: saved.is_some_and(|c| c.untied_head),
    };
    model
        .validate()
        .map_err(|e| ConfigError(format!("invalid model: {e}")))?;
    if let Some(ck) = &resumed {
        check_resumed_model(ck, &model, &tokenizer)?;
    }
    let shape = cfg.shape()?;
    let exec = ExecConfig {
        shape,
        threads: cfg.resolved_threads(),
        units: cfg.units(),
        micro_batch: cfg.micro_batch,
        seq_len: cfg.seq_len,
        pin_threads: false,
        max_retries: MAX_RETRIES,
        recompute_blocks: cfg.recompute_blocks,
    };
    report::check_memory(&model, &exec, cfg.accumulator, cfg.precision)?;

    let source = Arc::new(CorpusSource::new(
        store,
        train,
        eval_starts,
        cfg.seed,
        cfg.micro_batch,
        cfg.seq_len,
    ));
    let bpb_per_nat = source.bits_per_byte_per_nat(&tokenizer);
    let mut saved_config = serde_json::to_value(&cfg).expect("a RunConfig serializes");
    if let Value::Object(m) = &mut saved_config {
        m.insert("corpus".to_string(), corpus_json(corpus_bytes, fp));
        m.insert(
            "resolved".to_string(),
            json!({
                "total_steps": total_steps,
                "depth": shape.depth(),
                "threads": exec.threads,
                "units": exec.units,
            }),
        );
    }
    let (start_step, elapsed_before) = resumed
        .as_ref()
        .map_or((0, 0.0), |ck| (ck.state.step, ck.state.elapsed_s));
    let agreement = agreement(&saved_config, n_tokens, start_step);
    Ok(Prepared {
        cfg,
        saved_config,
        run_dir,
        model,
        tokenizer,
        source,
        exec,
        total_steps,
        resumed,
        pretrained,
        bpb_per_nat,
        start_step,
        elapsed_before,
        inject: opts.inject_failure,
        step_delay: opts.step_delay,
        agreement,
    })
}

/// The checks that depend on the rank count: bigfloat runs in one process,
/// and only the integer-wire accumulators overlap their exchange.
fn check_ranks(cfg: &RunConfig, ranks: usize, overlap: bool) -> Result<(), TrainError> {
    if ranks > 1 && cfg.accumulator == AccumulatorKind::BigFloat {
        return Err(ConfigError(format!(
            "--accumulator bigfloat runs in one process only (its cells have no fixed-width \
             wire form), not on {ranks} ranks; exact gives the same bits on any rank count"
        ))
        .into());
    }
    let overlaps = matches!(
        cfg.accumulator,
        AccumulatorKind::Exact | AccumulatorKind::Fixed
    );
    if ranks > 1 && overlap && !overlaps {
        return Err(ConfigError(format!(
            "--overlap needs the fixed or exact accumulator, not {} (its partial sums cross \
             ranks after backward); drop --overlap or pick --accumulator exact",
            cfg.accumulator.name()
        ))
        .into());
    }
    Ok(())
}

/// A resumed run must read the corpus its checkpoint was trained on.
fn check_same_corpus(
    ck: &LoadedCheckpoint,
    data_path: &Path,
    corpus_bytes: usize,
    fp: u64,
) -> Result<(), TrainError> {
    let saved = ck.state.config.get("corpus");
    if saved != Some(&corpus_json(corpus_bytes, fp)) {
        return Err(TrainError::Resume(format!(
            "the corpus at {} ({corpus_bytes} bytes, fingerprint {fp:016x}) is not the one \
             checkpoint {} was trained on ({}); resume with the same data",
            data_path.display(),
            ck.dir.display(),
            saved.map_or("no corpus record".to_string(), |v| v.to_string())
        )));
    }
    Ok(())
}

/// `--steps`, or `--epochs` over `train_len` training tokens, or the default.
fn total_steps(cfg: &RunConfig, train_len: usize) -> u64 {
    match (cfg.steps, cfg.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => {
            let per_step = (cfg.batch_size * cfg.seq_len) as f64;
            (e * train_len as f64 / per_step).ceil().max(1.0) as u64
        }
        (None, None) => defaults::STEPS,
    }
}

/// The fingerprint every rank must share: the saved configuration without
/// the per-process resolved values (threads may differ between machines),
/// the token count and the start step.
fn agreement(saved_config: &Value, n_tokens: usize, start_step: u64) -> u64 {
    let mut agreed = saved_config.clone();
    if let Some(r) = agreed.get_mut("resolved").and_then(Value::as_object_mut) {
        r.remove("threads");
    }
    agreed["threads"] = Value::Null;
    fingerprint(format!("{agreed} {n_tokens} {start_step}").as_bytes())
}

/// Trains as `cfg` says. `explicit` lists the fields (snake_case) the user
/// gave on the command line; it only matters with `cfg.resume`, where the
/// checkpoint's configuration is used and explicit flags may only change
/// execution settings (see [`RunConfig::merge_resumed`]).
pub fn train(
    cfg: RunConfig,
    explicit: &[&str],
    opts: &TrainOptions,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome, TrainError> {
    train_with(cfg, explicit, opts, obs, &mut Solo, DistSettings::default())
}

/// [`train`] as one rank of a multi-process run: every rank calls it with
/// the same arguments and its own `comm`. Each rank computes its block of
/// the step's units ([`RankLayout`]) and the gradients meet through `comm`
/// ([`dist::train_step`]); with one rank it is exactly [`train`] (the same
/// single-process step). Rank 0 alone writes the run directory (metrics,
/// plot, checkpoints with the gathered optimizer state, the final model)
/// and evaluates; `obs` should be [`Silent`] on the other ranks.
///
/// An error that every rank sees (a bad flag) is returned on every rank;
/// an error of one rank during set-up or a save comes back on the others as
/// [`TrainError::OtherRank`]. An error inside a step can leave the other
/// ranks waiting in a collective: the caller should end the job.
pub fn train_with(
    cfg: RunConfig,
    explicit: &[&str],
    opts: &TrainOptions,
    obs: &mut dyn Observer,
    comm: &mut dyn Collectives,
    settings: DistSettings,
) -> Result<TrainOutcome, TrainError> {
    let prep = prepare(cfg, explicit, opts, comm.size(), settings.overlap, obs);
    // Set-up is deterministic, but one rank can still fail alone (a file it
    // cannot read): agree before any rank enters a step's collectives.
    let prep = all_ok(comm, prep, TrainError::OtherRank)?;
    if !agree(comm, prep.agreement) {
        return Err(TrainError::Disagree(format!(
            "the {} ranks did not prepare the same run (different data, checkpoint or flags on \
             some machine); every rank must see the same files",
            comm.size()
        )));
    }
    let (kind, precision) = (prep.cfg.accumulator, prep.cfg.precision);
    dispatch_accumulator(
        kind,
        precision,
        AccStage {
            prep,
            obs,
            comm,
            settings,
        },
    )?
}

/// Whether every rank has the same `value` (one max-reduction of `x` and
/// `-x`).
fn agree(comm: &mut dyn Collectives, value: u64) -> bool {
    let x = (value >> 1) as i64;
    let mut max = [0i64; 2];
    comm.max_i64(&[x, -x], &mut max);
    max[0] == -max[1]
}

struct AccStage<'o> {
    prep: Prepared,
    obs: &'o mut dyn Observer,
    comm: &'o mut dyn Collectives,
    settings: DistSettings,
}

impl AccTask for AccStage<'_> {
    type Output = Result<TrainOutcome, TrainError>;
    fn run<A>(self, acc: A) -> Self::Output
    where
        A: CrossRank,
        A::Cell: 'static,
    {
        let sel = self.prep.cfg.kernels;
        dispatch_kernels(
            sel,
            KernelStage {
                prep: self.prep,
                obs: self.obs,
                comm: self.comm,
                settings: self.settings,
                acc,
            },
        )
    }
}

struct KernelStage<'o, A> {
    prep: Prepared,
    obs: &'o mut dyn Observer,
    comm: &'o mut dyn Collectives,
    settings: DistSettings,
    acc: A,
}

impl<A> KernelTask for KernelStage<'_, A>
where
    A: CrossRank,
    A::Cell: 'static,
{
    type Output = Result<TrainOutcome, TrainError>;
    fn run<K: Kernels<f32> + Send + Sync + 'static>(
        self,
        kernels: K,
        label: String,
    ) -> Self::Output {
        let dist = Dist {
            comm: self.comm,
            settings: self.settings,
        };
        run_loop(self.prep, self.acc, kernels, &label, self.obs, dist)
    }
}

// ---------------------------------------------------------------------------
// The loop.

/// Checkpoint writer bound to one run.
struct Saver<'a> {
    prep: &'a Prepared,
    layout: tensors::Layout,
    hf: checkpoint::HfGpt2Config,
}

impl Saver<'_> {
    /// Writes `checkpoint-STEP` from the parameters and the whole optimizer
    /// state (`m`, `v`).
    fn save(
        &self,
        params: &[f32],
        (m, v): (&[f32], &[f32]),
        step: u64,
        elapsed: f64,
    ) -> Result<PathBuf, TrainError> {
        let p = self.prep;
        let model = self.layout.refs(params);
        let n = [m.len()];
        let optimizer: Vec<checkpoint::TensorRef> = match p.cfg.optimizer {
            OptimizerKind::AdamW => vec![
                checkpoint::TensorRef::new(tensors::EXP_AVG, &n, m),
                checkpoint::TensorRef::new(tensors::EXP_AVG_SQ, &n, v),
            ],
            OptimizerKind::Sgd if p.cfg.momentum != 0.0 => {
                vec![checkpoint::TensorRef::new(tensors::MOMENTUM_BUFFER, &n, m)]
            }
            OptimizerKind::Sgd => Vec::new(),
        };
        let state = TrainerState {
            step,
            rng_state: vec![p.cfg.seed],
            data_position: step * p.cfg.batch_size as u64,
            elapsed_s: elapsed,
            config: p.saved_config.clone(),
        };
        let path = checkpoint::save_checkpoint(
            &p.run_dir,
            &Checkpoint {
                model: &model,
                config: &self.hf,
                tokenizer: &p.tokenizer,
                optimizer: &optimizer,
                state: &state,
            },
        )?;
        checkpoint::prune_checkpoints(&p.run_dir, p.cfg.keep_checkpoints)?;
        Ok(path)
    }

    fn final_model(&self, params: &[f32]) -> Result<(), TrainError> {
        let model = self.layout.refs(params);
        checkpoint::write_model_dir(&self.prep.run_dir, &model, &self.hf, &self.prep.tokenizer)?;
        Ok(())
    }
}

fn plot_title(cfg: &RunConfig) -> String {
    format!(
        "{} layers, n_embd {}, {} tokenizer, {} accumulator",
        cfg.num_layers, cfg.embed_dim, cfg.tokenizer, cfg.accumulator
    )
}

// Long (about 240 lines) on purpose: the step loop's locals (timers,
// running loss sums, the last checkpoint, the metrics records) are read and
// written by every phase of a step (evaluate, log, save, the injected
// delay); split up, they would travel as one struct of a dozen mutable
// fields, and the order of a step would no longer be read top to bottom.
fn run_loop<A, K>(
    mut prep: Prepared,
    acc: A,
    kernels: K,
    kernel_label: &str,
    obs: &mut dyn Observer,
    mut dist: Dist<'_>,
) -> Result<TrainOutcome, TrainError>
where
    A: CrossRank,
    A::Cell: 'static,
    K: Kernels<f32> + Send + Sync + 'static,
{
    let cfg = prep.cfg.clone();
    let (rank0, multi) = (dist.comm.rank() == 0, dist.comm.size() > 1);
    let layout = tensors::Layout::new(&prep.model);
    let p = prep.model.num_params();

    let ranks = RankLayout::new(prep.exec.shape, prep.exec.units, p, dist.comm.size());
    // Scatter-gather over several ranks: each rank keeps the optimizer
    // state of the segments it owns, and only those (ZeRO stage 1).
    let shard = match (multi, dist.settings.reduction) {
        (true, Reduction::ScatterGather) => ranks.owned_elements(dist.comm.rank()),
        _ => 0..p,
    };
    let built = build_hierarchy(&mut prep, &layout, acc, kernels, shard);
    let mut h = dist.all_ok(built)?;

    let total = prep.total_steps;
    let start = prep.start_step;
    if start > total {
        return Err(TrainError::Resume(format!(
            "the checkpoint is at step {start}, past the {total} steps this run is set to; give a \
             larger --steps"
        )));
    }
    obs.message(&report::shape_report(&report::ShapeInfo {
        shape: prep.exec.shape,
        exec: &prep.exec,
        model: &prep.model,
        accumulator: acc_name(&cfg),
        kernels: kernel_label,
        optimizer: cfg.optimizer.name(),
        memory: h.memory_bytes(),
        steps: (start, total),
    }));
    if multi {
        obs.message(&format!(
            "ranks: {} ({} reduction), units per rank {:?}",
            dist.comm.size(),
            dist.settings.reduction.name(),
            ranks.unit_lens()
        ));
    }

    let run_dir = prep.run_dir.clone();
    let opened = if rank0 {
        open_run_dir(&run_dir, prep.resumed.is_some(), start).map(Some)
    } else {
        Ok(None)
    };
    let (mut metrics, mut records) = match dist.all_ok(opened)? {
        Some((m, r)) => (Some(m), r),
        None => (None, Vec::new()),
    };
    let saver = Saver {
        prep: &prep,
        hf: tensors::hf_config(&prep.model, &prep.tokenizer),
        layout,
    };
    let title = plot_title(&cfg);

    let optimizer = match cfg.optimizer {
        OptimizerKind::AdamW => Optimizer::AdamW(optim::AdamW {
            lr: cfg.learning_rate as f32,
            beta1: cfg.beta1 as f32,
            beta2: cfg.beta2 as f32,
            eps: 1e-8,
            weight_decay: cfg.weight_decay as f32,
        }),
        OptimizerKind::Sgd => Optimizer::Sgd(optim::Sgd {
            lr: cfg.learning_rate as f32,
            momentum: cfg.momentum as f32,
            weight_decay: cfg.weight_decay as f32,
        }),
    };
    // nanoGPT's convention: warm up, then cosine down to a tenth of the peak
    // at the last step.
    let schedule = LrSchedule {
        max_lr: cfg.learning_rate as f32,
        min_lr: (cfg.learning_rate / 10.0) as f32,
        warmup_steps: cfg.warmup_steps,
        total_steps: total,
    };
    let tokens_per_step = (cfg.batch_size * cfg.seq_len) as f64;
    let has_val = prep.source.eval_windows() > 0;

    obs.started(start, total);
    let t0 = Instant::now();
    let elapsed = |t0: &Instant| prep.elapsed_before + t0.elapsed().as_secs_f64();
    let mut last_ckpt = checkpoint::latest_checkpoint(&run_dir)?;
    let resumed_at = prep.resumed.as_ref().map(|ck| ck.state.step);
    let (mut last_loss, mut last_val) = (None, None);
    // Loss and time since the last metrics record.
    let (mut sum_loss, mut n_loss, mut step_time) = (0.0f64, 0u64, 0.0f64);

    let mut scratch = Scratch::default();

    if start == total && resumed_at != Some(total) {
        // --steps 0 (or nothing left): the model as it is.
        let path = save_all(&saver, &h, &mut dist, &ranks, total, elapsed(&t0), None)?;
        last_ckpt = path.or(last_ckpt);
    }
    for step in start..total {
        let lr = schedule.lr(step);
        let ts = Instant::now();
        let update = UpdateSettings {
            optimizer,
            lr,
            grad_clip: cfg.grad_clip as f32,
            t: step + 1,
        };
        let stats = if multi || dist.settings.sync_timing {
            dist::train_step(
                &mut h,
                dist.comm,
                &ranks,
                dist.settings,
                step,
                update,
                &mut scratch,
            )
            .map(|s| StepFigures {
                loss: s.loss,
                grad_norm: s.grad_norm,
                retried_units: 0,
                dist: Some(s),
            })
        } else {
            h.train_step(step, update)
                .map(|s| StepFigures {
                    loss: s.loss,
                    grad_norm: s.grad_norm,
                    retried_units: s.retried_units,
                    dist: None,
                })
                .map_err(DistError::from)
        };
        let stats = stats.map_err(|error| TrainError::Step {
            step: step + 1,
            error,
            last_checkpoint: last_ckpt.clone(),
        })?;
        let dt = ts.elapsed().as_secs_f64();
        let done = step + 1;
        if !stats.loss.is_finite() {
            return Err(TrainError::Step {
                step: done,
                error: ExecError::Config(format!(
                    "the loss is {} (training diverged; lower --learning-rate or set --grad-clip)",
                    stats.loss
                ))
                .into(),
                last_checkpoint: last_ckpt.clone(),
            });
        }
        last_loss = Some(stats.loss);
        sum_loss += stats.loss as f64;
        n_loss += 1;
        step_time += dt;
        obs.step(&StepEvent {
            step: done,
            total,
            loss: stats.loss,
            lr,
            grad_norm: stats.grad_norm,
            tokens_per_s: tokens_per_step / dt.max(1e-9),
            seconds: dt,
            retried_units: stats.retried_units,
            dist: stats.dist,
        });

        let is_last = done == total;
        let eval_now = has_val && (is_last || (cfg.eval_every > 0 && done % cfg.eval_every == 0));
        let log_now = is_last || done % cfg.log_every == 0;
        // Every rank holds the same parameters: rank 0 evaluates for all
        // and writes the metrics; the others learn whether that worked.
        let mut io: Result<(), TrainError> = Ok(());
        let val = if eval_now && rank0 {
            match h.evaluate() {
                Ok(v) => {
                    last_val = v;
                    v
                }
                Err(error) => {
                    io = Err(TrainError::Step {
                        step: done,
                        error: error.into(),
                        last_checkpoint: last_ckpt.clone(),
                    });
                    None
                }
            }
        } else {
            None
        };
        if log_now || val.is_some() {
            let rec = MetricsRecord {
                step: done,
                train_loss: sum_loss / n_loss.max(1) as f64,
                val_loss: val.map(f64::from),
                val_bits_per_byte: val.and_then(|v| Some(f64::from(v) * prep.bpb_per_nat?)),
                lr: lr as f64,
                grad_norm: stats.grad_norm as f64,
                tokens_per_s: n_loss as f64 * tokens_per_step / step_time.max(1e-9),
                elapsed_s: elapsed(&t0),
            };
            if let (Some(m), Ok(())) = (&mut metrics, &io) {
                io = m.append(&rec).map_err(Into::into);
                obs.record(&rec);
                records.push(rec);
            }
            (sum_loss, n_loss, step_time) = (0.0, 0, 0.0);
        }
        if eval_now || log_now {
            dist.all_ok(io)?;
        }
        if is_last || (cfg.save_every > 0 && done % cfg.save_every == 0) {
            let plot = (records.as_slice(), title.as_str());
            if let Some(path) = save_all(
                &saver,
                &h,
                &mut dist,
                &ranks,
                done,
                elapsed(&t0),
                Some(plot),
            )? {
                obs.saved(done, &path);
                last_ckpt = Some(path);
            }
        }
        if let Some(d) = prep.step_delay {
            std::thread::sleep(d);
        }
    }
    let written = if rank0 {
        saver.final_model(h.params()).and_then(|()| {
            plot::write_loss_svg(&run_dir.join(LOSS_PLOT), &records, &title).map_err(Into::into)
        })
    } else {
        Ok(())
    };
    dist.all_ok(written)?;
    obs.finished();
    let train_seconds = t0.elapsed().as_secs_f64();
    let model = LoadedGpt {
        dir: run_dir.clone(),
        config: prep.model,
        // The workers stop and the parameters move out (no second copy).
        params: h.into_params(),
        tokenizer: prep.tokenizer.clone(),
    };
    Ok(TrainOutcome {
        run_dir,
        config: cfg,
        steps: total.max(start),
        train_loss: last_loss,
        val_loss: last_val,
        val_bits_per_byte: last_val.and_then(|v| Some(f64::from(v) * prep.bpb_per_nat?)),
        train_seconds,
        model,
    })
}

/// The hierarchy with the run's starting parameters and optimizer state:
/// from the checkpoint, the pretrained model or a fresh initialisation.
/// The loaded tensors are released once they are in the hierarchy: kept,
/// they would hold a second copy of the weights (and, resuming, of the
/// optimizer state) for the whole run.
fn build_hierarchy<A, K>(
    prep: &mut Prepared,
    layout: &tensors::Layout,
    acc: A,
    kernels: K,
    shard: std::ops::Range<usize>,
) -> Result<Hierarchy<A, K>, TrainError>
where
    A: CrossRank,
    A::Cell: 'static,
    K: Kernels<f32> + Send + Sync + 'static,
{
    let cfg = &prep.cfg;
    let p = prep.model.num_params();
    // Parameters and optimizer state: from the checkpoint or fresh.
    let (params, moments) = match &mut prep.resumed {
        Some(ck) => {
            let params = layout.flatten(&ck.dir.join(checkpoint::MODEL_FILE), &ck.model.model)?;
            ck.model.model = Vec::new();
            let opt_path = ck.dir.join(checkpoint::OPTIMIZER_FILE);
            let vec = |name| tensors::optimizer_vector(&opt_path, &ck.optimizer, name, p);
            let moments = match cfg.optimizer {
                OptimizerKind::AdamW => {
                    Some((vec(tensors::EXP_AVG)?, Some(vec(tensors::EXP_AVG_SQ)?)))
                }
                OptimizerKind::Sgd if cfg.momentum != 0.0 => {
                    Some((vec(tensors::MOMENTUM_BUFFER)?, None))
                }
                OptimizerKind::Sgd => None,
            };
            ck.optimizer = Vec::new();
            (params, moments)
        }
        None => match &mut prep.pretrained {
            Some(m) => {
                let from = cfg.init_from.clone().unwrap_or_default();
                let params = layout.flatten(&from.join(checkpoint::MODEL_FILE), &m.model)?;
                m.model = Vec::new();
                (params, None)
            }
            None => {
                let mut params = vec![0.0f32; p];
                model::init_params(&prep.model, &mut params, cfg.seed)
                    .map_err(|e| ConfigError(format!("invalid model: {e}")))?;
                (params, None)
            }
        },
    };
    let source: Arc<dyn crate::exec::UnitSource> = prep.source.clone();
    let mut h = Hierarchy::with_optimizer_shard(
        prep.model,
        params,
        acc,
        kernels,
        source,
        prep.exec,
        shard.clone(),
    )
    .map_err(|e| TrainError::Step {
        step: prep.start_step,
        error: e.into(),
        last_checkpoint: None,
    })?;
    if let Some((m, v)) = moments {
        let (hm, hv) = h.optimizer_state_mut();
        hm.copy_from_slice(&m[shard.clone()]);
        if let Some(v) = v {
            hv.copy_from_slice(&v[shard]);
        }
    }
    h.inject_failure(prep.inject);
    Ok(h)
}

/// The communicator of a run and how its steps cross ranks.
struct Dist<'c> {
    comm: &'c mut dyn Collectives,
    settings: DistSettings,
}

impl Dist<'_> {
    /// `r` when every rank succeeded (one collective; skipped in one
    /// process).
    fn all_ok<T>(&mut self, r: Result<T, TrainError>) -> Result<T, TrainError> {
        if self.comm.size() == 1 {
            return r;
        }
        all_ok(self.comm, r, TrainError::OtherRank)
    }
}

/// What the loop reads of a step, from either kind of step.
struct StepFigures {
    loss: f32,
    grad_norm: f32,
    retried_units: u32,
    dist: Option<DistStepStats>,
}

/// Creates (or reopens) the run directory and its metrics (rank 0 only).
fn open_run_dir(
    run_dir: &Path,
    resumed: bool,
    start: u64,
) -> Result<(MetricsWriter, Vec<MetricsRecord>), TrainError> {
    create_dir_all_durable(run_dir)?;
    checkpoint::clean_stale_temp(run_dir)?;
    Ok(if resumed {
        MetricsWriter::resume(run_dir, start)?
    } else {
        (MetricsWriter::create(run_dir)?, Vec::new())
    })
}

/// Writes `checkpoint-STEP` (and the loss plot) on rank 0 after gathering
/// the optimizer state from the segment owners. Collective: every rank
/// calls it; it returns the path on rank 0 and `None` elsewhere.
fn save_all<A, K>(
    saver: &Saver<'_>,
    h: &Hierarchy<A, K>,
    dist: &mut Dist<'_>,
    layout: &RankLayout,
    step: u64,
    elapsed: f64,
    plot: Option<(&[MetricsRecord], &str)>,
) -> Result<Option<PathBuf>, TrainError>
where
    A: CrossRank,
    A::Cell: 'static,
    K: Kernels<f32> + Send + 'static,
{
    let write = |m: &[f32], v: &[f32]| -> Result<PathBuf, TrainError> {
        let path = saver.save(h.params(), (m, v), step, elapsed)?;
        if let Some((records, title)) = plot {
            plot::write_loss_svg(&saver.prep.run_dir.join(LOSS_PLOT), records, title)?;
        }
        Ok(path)
    };
    if dist.comm.size() == 1 {
        let (m, v) = h.optimizer_state();
        return write(m, v).map(Some);
    }
    let gathered = dist::gather_optimizer_state(h, dist.comm, layout, dist.settings.reduction)
        .map_err(|error| TrainError::Step {
            step,
            error,
            last_checkpoint: None,
        })?;
    let written = match gathered {
        Some((m, v)) => write(&m, &v).map(Some),
        None => Ok(None),
    };
    dist.all_ok(written)
}

fn acc_name(cfg: &RunConfig) -> &'static str {
    match cfg.accumulator {
        AccumulatorKind::BigFloat => "bigfloat",
        k => k.name(),
    }
}
