//! The trainer's command line (feature `cli`): clap flags, a progress bar
//! or plain lines, one-line errors, the final sample. `examples/train.rs`
//! runs it in one process and cllm-mpi's `train_mpi` on every MPI rank, so
//! both programs have the same flags, output and run directories.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use cllm_core::kernels::Kernels;

use crate::dist::{Collectives, DistSettings, DistStepStats, F32Order, Reduction, OVERLAP_BUCKET};
use crate::exec::FailureInjection;
use crate::metrics::MetricsRecord;
use crate::trainer::{
    self, defaults as d, AccumulatorKind, Depth, KernelSelection, KernelTask, Observer,
    OptimizerKind, RunConfig, SampleSettings, StepEvent, TokenizerChoice, TrainError, TrainOptions,
};

/// A `--flag` whose values are the spellings of a library enum.
macro_rules! choice {
    ($t:ty) => {
        PossibleValuesParser::new(<$t>::ALL.iter().map(|v| v.name()))
            .map(|s| s.parse::<$t>().expect("checked by the possible values"))
    };
}

/// Train a small GPT on the recursive sphere hierarchy.
///
/// DATA is a text file or a directory (read recursively; hidden, binary and
/// over-large files are skipped). Without DATA the trainer uses this
/// repository's own text files for a few minutes and prints a sample.
/// Checkpoints go to DIR/checkpoint-STEP/ (Hugging Face layout), the final
/// model to DIR itself; --resume DIR continues a run exactly.
#[derive(Parser, Debug)]
#[command(name = "train", version, about, long_about = None, args_override_self = true)]
struct Args {
    /// Text file or directory to train on [default: this repository's text files]
    data: Option<PathBuf>,

    /// Tokenizer: byte (256 ids, lossless), char (characters of the data), word (lowercased
    /// words + specials), bpe (byte-level BPE trained on the data, GPT-2 style), or PATH: a
    /// tokenizer.json (Hugging Face or cllm) or a directory with one or with GPT-2's
    /// vocab.json + merges.txt
    #[arg(long, default_value = "byte", value_name = "byte|char|word|bpe|PATH", value_parser = tokenizer_arg)]
    tokenizer: TokenizerArg,
    /// Vocabulary size of the word and bpe tokenizers (byte and char ignore it)
    #[arg(long, default_value_t = d::VOCAB_SIZE)]
    vocab_size: usize,
    /// Files found in a directory larger than this many bytes are skipped
    #[arg(long, default_value_t = d::MAX_FILE_BYTES)]
    max_file_bytes: u64,
    /// Fraction of the tokens held out for validation (0 = no validation)
    #[arg(long, default_value_t = d::VAL_FRACTION, allow_negative_numbers = true)]
    val_fraction: f64,

    /// Width of the residual stream (n_embd)
    #[arg(long, default_value_t = d::EMBED_DIM)]
    embed_dim: usize,
    /// Transformer blocks (n_layer)
    #[arg(long, default_value_t = d::NUM_LAYERS)]
    num_layers: usize,
    /// Attention heads per block (must divide --embed-dim)
    #[arg(long, default_value_t = d::NUM_HEADS)]
    num_heads: usize,
    /// Model context, n_positions [default: --seq-len]
    #[arg(long)]
    context: Option<usize>,
    /// Tokens per training sequence (at most --context)
    #[arg(long, default_value_t = d::SEQ_LEN)]
    seq_len: usize,
    /// Sequences per optimizer step
    #[arg(long, default_value_t = d::BATCH_SIZE)]
    batch_size: usize,
    /// Sequences per work unit (divides --batch-size; units per step = batch / micro-batch)
    #[arg(long, default_value_t = d::MICRO_BATCH)]
    micro_batch: usize,
    /// Store only each block's output and compute the block again in backward: less activation
    /// memory (about 9 floats per token, width and block) for about a third more block
    /// arithmetic; the bits are the same
    #[arg(long)]
    recompute_blocks: bool,

    /// Optimizer
    #[arg(long, default_value = "adamw", value_parser = choice!(OptimizerKind))]
    optimizer: OptimizerKind,
    /// Peak learning rate: linear warmup to it, cosine decay to a tenth of it at the last step
    #[arg(long, default_value_t = d::LEARNING_RATE, allow_negative_numbers = true)]
    learning_rate: f64,
    /// AdamW beta1
    #[arg(long, default_value_t = d::BETA1, allow_negative_numbers = true)]
    beta1: f64,
    /// AdamW beta2
    #[arg(long, default_value_t = d::BETA2, allow_negative_numbers = true)]
    beta2: f64,
    /// SGD momentum (0 = plain SGD)
    #[arg(long, default_value_t = d::MOMENTUM, allow_negative_numbers = true)]
    momentum: f64,
    /// Weight decay on the 2-D weight matrices
    #[arg(long, default_value_t = d::WEIGHT_DECAY, allow_negative_numbers = true)]
    weight_decay: f64,
    /// Clip the global gradient norm to this value (0 = off)
    #[arg(long, default_value_t = d::GRAD_CLIP, allow_negative_numbers = true)]
    grad_clip: f64,
    /// Steps of linear learning-rate warmup
    #[arg(long, default_value_t = d::WARMUP_STEPS)]
    warmup_steps: u64,
    /// Optimizer steps; 0 writes the initial model and exits (ignored when --epochs is given)
    #[arg(long, default_value_t = d::STEPS)]
    steps: u64,
    /// Passes over the training tokens, converted to steps (alternative to --steps)
    #[arg(long, allow_negative_numbers = true)]
    epochs: Option<f64>,
    /// Seed of the initialisation and the batch order
    #[arg(long, default_value_t = d::SEED)]
    seed: u64,

    /// Worker threads [default: one per CPU]
    #[arg(long)]
    threads: Option<usize>,
    /// Depth of the sphere tree, or "auto" (the smallest depth with a leaf per unit)
    #[arg(long, default_value = "auto")]
    recursive_depth: Depth,
    /// Children per sphere, 1..=12
    #[arg(long, default_value_t = d::BRANCHING)]
    branching: u32,
    /// Gradient accumulator: f32 (fast), fixed/exact/bigfloat (bitwise identical for any layout)
    #[arg(long, default_value = "f32", value_parser = choice!(AccumulatorKind))]
    accumulator: AccumulatorKind,
    /// Significand bits of the bigfloat accumulator
    #[arg(long, default_value_t = d::PRECISION)]
    precision: u32,
    /// Math kernels: auto (fastest full-f32 kernels for this CPU), portable (bit-identical
    /// everywhere), avx2 or avx512 (force that path), or amx (GEMMs on AMX-BF16 tiles in
    /// three bf16 terms: faster, ~16-bit operands)
    #[arg(long, default_value = "auto", value_parser = choice!(KernelSelection))]
    kernels: KernelSelection,

    /// Evaluate the validation loss every N steps (0 = only at the end)
    #[arg(long, default_value_t = d::EVAL_EVERY)]
    eval_every: u64,
    /// Validation windows (sequences) per evaluation
    #[arg(long, default_value_t = d::EVAL_WINDOWS)]
    eval_windows: usize,
    /// Write DIR/checkpoint-STEP every N steps (0 = only at the end)
    #[arg(long, default_value_t = d::SAVE_EVERY)]
    save_every: u64,
    /// Intermediate checkpoints kept (the newest always is)
    #[arg(long, default_value_t = d::KEEP_CHECKPOINTS)]
    keep_checkpoints: usize,
    /// Write a metrics record (and a progress line off a terminal) every N steps
    #[arg(long, default_value_t = d::LOG_EVERY)]
    log_every: u64,
    /// Run directory [default: runs/<UTC timestamp>; with --resume, the resumed run's directory]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Fine-tune: start from a GPT-2 model directory in the Hugging Face layout (config.json,
    /// model.safetensors, tokenizer.json or vocab.json + merges.txt), keeping its architecture
    /// and tokenizer
    #[arg(long, value_name = "DIR")]
    init_from: Option<PathBuf>,
    /// Continue a run: a run directory (its newest complete checkpoint) or a checkpoint directory
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Tokens of the sample printed at the end (0 = none)
    #[arg(long, default_value_t = 200)]
    sample_tokens: usize,

    /// How gradients meet across ranks: scatter-gather (reduce-scatter by segment, sharded
    /// optimizer update, all-gather of parameters) or allreduce (replicated update); the bits
    /// are the same
    #[arg(long, default_value = "scatter-gather", value_parser = choice!(Reduction))]
    reduce: Reduction,
    /// How f32 gradients from different ranks are added: canonical (the single-process tree's
    /// order: the same bits on any rank count, more traffic) or rank (one partial sum per rank,
    /// in rank order: the bits depend on the rank count)
    #[arg(long, default_value = "canonical", value_parser = choice!(F32Order))]
    f32_order: F32Order,
    /// Measurement aid: time each step's phases apart (compute, waiting for the slowest rank
    /// behind a barrier, reduce, update); on one rank this runs the distributed step too
    #[arg(long)]
    sync_timing: bool,
    /// Reduce each 1 MiB piece of the gradient across ranks as soon as this rank's backward has
    /// finished it, while backward goes on (fixed and exact accumulators; the bits are the same)
    #[arg(long)]
    overlap: bool,
    /// Segments of 4,096 gradient elements per piece of an overlapped reduction
    #[arg(long, default_value_t = OVERLAP_BUCKET as u64, value_parser = clap::value_parser!(u64).range(1..))]
    overlap_bucket: u64,
}

/// Flags that only matter with several processes (hidden in `train`).
const MULTI_PROCESS_FLAGS: [&str; 5] = [
    "reduce",
    "f32_order",
    "sync_timing",
    "overlap",
    "overlap_bucket",
];

/// `--tokenizer`: a kind to train, or a path to load.
#[derive(Clone, Debug)]
enum TokenizerArg {
    Train(TokenizerChoice),
    Load(PathBuf),
}

fn tokenizer_arg(s: &str) -> Result<TokenizerArg, String> {
    if let Ok(c) = s.parse::<TokenizerChoice>() {
        return Ok(TokenizerArg::Train(c));
    }
    let path = PathBuf::from(s);
    if path.exists() {
        Ok(TokenizerArg::Load(path))
    } else {
        Err(
            "neither a tokenizer kind (byte, char, word, bpe) nor an existing file or directory"
                .to_string(),
        )
    }
}

impl Args {
    /// `steps_given`: whether --steps was on the command line (its default
    /// yields to --epochs).
    fn run_config(&self, steps_given: bool) -> RunConfig {
        RunConfig {
            data: self.data.clone(),
            tokenizer: match &self.tokenizer {
                TokenizerArg::Train(c) => *c,
                // The kind of the loaded tokenizer replaces this.
                TokenizerArg::Load(_) => TokenizerChoice::Bpe,
            },
            tokenizer_path: match &self.tokenizer {
                TokenizerArg::Train(_) => None,
                TokenizerArg::Load(p) => Some(p.clone()),
            },
            vocab_size: self.vocab_size,
            max_file_bytes: self.max_file_bytes,
            val_fraction: self.val_fraction,
            embed_dim: self.embed_dim,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            context: self.context,
            seq_len: self.seq_len,
            batch_size: self.batch_size,
            micro_batch: self.micro_batch,
            recompute_blocks: self.recompute_blocks,
            optimizer: self.optimizer,
            learning_rate: self.learning_rate,
            beta1: self.beta1,
            beta2: self.beta2,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            warmup_steps: self.warmup_steps,
            steps: (steps_given || self.epochs.is_none()).then_some(self.steps),
            epochs: self.epochs,
            seed: self.seed,
            threads: self.threads,
            recursive_depth: self.recursive_depth,
            branching: self.branching,
            accumulator: self.accumulator,
            precision: self.precision,
            kernels: self.kernels,
            eval_every: self.eval_every,
            eval_windows: self.eval_windows,
            save_every: self.save_every,
            keep_checkpoints: self.keep_checkpoints,
            log_every: self.log_every,
            out: self.out.clone(),
            resume: self.resume.clone(),
            init_from: self.init_from.clone(),
        }
    }
}

/// Progress on stdout: a bar on a terminal, plain lines otherwise. The bar
/// and the lines printed above it go to stdout too (indicatif's default is
/// stderr, which would hide both when only stderr is redirected).
struct Progress {
    bar: Option<ProgressBar>,
    start: Instant,
    /// Rank 0 reports; the other ranks of a multi-process run stay quiet.
    quiet: bool,
    /// Draw a bar on a terminal. Not under mpirun, which hands every rank a
    /// pseudo-terminal even when its own output goes to a file.
    bar_allowed: bool,
    /// This rank (for the failure test hook).
    rank: usize,
    /// Per-step wall time and cross-rank figures, for the `summary` line.
    steps: Vec<(f64, Option<DistStepStats>)>,
}

impl Progress {
    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(s),
            None => {
                println!("{s}");
                let _ = std::io::stdout().flush();
            }
        }
    }
}

impl Observer for Progress {
    fn message(&mut self, text: &str) {
        self.line(text);
    }
    fn started(&mut self, first: u64, total: u64) {
        self.start = Instant::now();
        if self.bar_allowed && std::io::stdout().is_terminal() && total > first {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} step {pos}/{len} {msg} [{elapsed_precise}, ETA {eta}]",
                )
                .expect("a valid template"),
            );
            bar.set_position(first);
            bar.reset_eta();
            bar.enable_steady_tick(Duration::from_millis(250));
            self.bar = Some(bar);
        }
    }
    fn step(&mut self, e: &StepEvent) {
        rank_failure_hook(self.rank, e.step);
        self.steps.push((e.seconds, e.dist));
        if let Some(b) = &self.bar {
            b.set_position(e.step);
            b.set_message(format!("loss {:.4} | {:.0} tok/s", e.loss, e.tokens_per_s));
        }
        if e.retried_units > 0 {
            self.line(&format!(
                "step {}: {} unit(s) recomputed after a worker failure; result unchanged",
                e.step, e.retried_units
            ));
        }
    }
    fn record(&mut self, r: &MetricsRecord) {
        let bpb = r
            .val_bits_per_byte
            .map_or(String::new(), |b| format!(" ({b:.3} bits/byte)"));
        let val = r
            .val_loss
            .map_or(String::new(), |v| format!(" | val {v:.4}{bpb}"));
        let text = format!(
            "step {} | loss {:.4}{val} | lr {:.2e} | grad norm {:.3} | {:.0} tok/s | {:.1}s",
            r.step, r.train_loss, r.lr, r.grad_norm, r.tokens_per_s, r.elapsed_s
        );
        // On a terminal the bar shows the loss; keep only the evaluations.
        if self.bar.is_none() || r.val_loss.is_some() {
            self.line(&text);
        }
    }
    fn saved(&mut self, _step: u64, path: &Path) {
        self.line(&format!("saved {}", path.display()));
    }
    fn finished(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let _ = self.start;
    }
}

/// `CLLM_INJECT_FAILURE=STEP:UNIT:TIMES` (test hook, not in --help): the
/// computation of UNIT at data step STEP (0-based) panics TIMES times.
fn injected_failure() -> Result<Option<FailureInjection>, String> {
    let Ok(v) = std::env::var("CLLM_INJECT_FAILURE") else {
        return Ok(None);
    };
    let parts: Vec<&str> = v.split(':').collect();
    let bad = || format!("CLLM_INJECT_FAILURE={v:?} must be STEP:UNIT:TIMES");
    if parts.len() != 3 {
        return Err(bad());
    }
    Ok(Some(FailureInjection {
        step: parts[0].parse().map_err(|_| bad())?,
        unit: parts[1].parse().map_err(|_| bad())?,
        times: parts[2].parse().map_err(|_| bad())?,
    }))
}

struct Sample<'a> {
    model: &'a trainer::LoadedGpt,
    settings: SampleSettings,
}

impl KernelTask for Sample<'_> {
    type Output = Result<String, String>;
    fn run<K: Kernels<f32> + Send + Sync + 'static>(self, k: K, _label: String) -> Self::Output {
        let m = self.model;
        let prompt = trainer::prompt_ids(&m.tokenizer, "").map_err(|e| e.to_string())?;
        let ids = trainer::generate(
            &k,
            &m.config,
            &m.params,
            &prompt,
            &self.settings,
            |_| Ok(()),
        )
        .map_err(|e| e.to_string())?;
        let bytes = m.tokenizer.decode_bytes(&ids).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// `CLLM_MPI_FAIL=RANK:STEP[:abort]` (test hook, not in --help): rank RANK
/// exits with status 1 (or aborts) once it has finished step STEP, as a
/// machine that dies mid-run would.
fn rank_failure_hook(rank: usize, step: u64) {
    let Ok(spec) = std::env::var("CLLM_MPI_FAIL") else {
        return;
    };
    let mut it = spec.split(':');
    let r: Option<usize> = it.next().and_then(|x| x.parse().ok());
    let s: Option<u64> = it.next().and_then(|x| x.parse().ok());
    if r == Some(rank) && s == Some(step) {
        eprintln!("rank {rank}: CLLM_MPI_FAIL: dying at step {step}");
        if it.next() == Some("abort") {
            std::process::abort();
        }
        std::process::exit(1);
    }
}

/// How a program runs the trainer's command line.
pub struct Launch<'a> {
    /// The program's name (in `--help` and usage errors).
    pub name: &'static str,
    /// What to train on when no DATA is given (the repository's own text).
    pub default_data: PathBuf,
    /// The transport between the processes of the run
    /// ([`Solo`](crate::dist::Solo) for one process).
    pub comm: &'a mut dyn Collectives,
    /// Show the multi-process flags and print a `summary` JSON line at the
    /// end (per-step medians, bytes sent), for benchmarks.
    pub multi_process: bool,
}

fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The `summary` line: medians over the steps after the first (which warms
/// caches and faults buffers in) and the traffic of the busiest rank.
fn summary(
    p: &Progress,
    comm: &mut dyn Collectives,
    args: &Args,
    cfg: &RunConfig,
    cfg_params: usize,
) -> String {
    let timed = if p.steps.len() > 1 {
        &p.steps[1..]
    } else {
        &p.steps[..]
    };
    let n = timed.len().max(1) as f64;
    let phase =
        |f: fn(&DistStepStats) -> f64| median(timed.iter().filter_map(|s| s.1.as_ref().map(f)));
    let bytes: u64 = timed.iter().filter_map(|s| s.1.map(|d| d.bytes)).sum();
    let mut max_bytes = [0i64];
    comm.max_i64(&[bytes as i64], &mut max_bytes);
    let wire = timed
        .iter()
        .find_map(|s| s.1.map(|d| d.wire_bytes))
        .unwrap_or(0);
    let rss = peak_rss_bytes().unwrap_or(0) as i64;
    // [max, -min] in one reduction.
    let mut max_rss = [0i64; 2];
    comm.max_i64(&[rss, -rss], &mut max_rss);
    let mib = |b: i64| (b as f64 / (1u64 << 20) as f64 * 10.0).round() / 10.0;
    json!({
        "ranks": comm.size(),
        "threads": cfg.resolved_threads(),
        "accumulator": cfg.accumulator.name(),
        "kernels": cfg.kernels.name(),
        "reduce": if comm.size() > 1 || args.sync_timing { args.reduce.name() } else { "local" },
        "overlap": args.overlap,
        "units": cfg.units(),
        "timed_steps": timed.len(),
        "params": cfg_params,
        "step_s": timed.iter().map(|s| s.0).sum::<f64>() / n,
        "step_s_median": median(timed.iter().map(|s| s.0)),
        "compute_s_median": phase(|d| d.compute_s),
        "reduce_s_median": phase(|d| d.reduce_s),
        "update_s_median": phase(|d| d.update_s),
        "wait_s_median": phase(|d| d.wait_s),
        "bytes_per_step_rank0": bytes as f64 / n,
        "bytes_per_step_max_rank": max_bytes[0] as f64 / n,
        "wire_bytes_per_param": wire,
        "peak_rss_mib_rank0": mib(rss),
        "peak_rss_mib_max_rank": mib(max_rss[0]),
        "peak_rss_mib_min_rank": mib(-max_rss[1]),
    })
    .to_string()
}

/// This process's peak resident set (`VmHWM`, Linux only).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A run-directory name every rank agrees on: the UTC time of the latest
/// rank's start.
fn default_out(comm: &mut dyn Collectives) -> PathBuf {
    let now = chrono::Utc::now().timestamp();
    let mut latest = [now];
    comm.max_i64(&[now], &mut latest);
    let stamp = chrono::DateTime::from_timestamp(latest[0], 0)
        .unwrap_or_default()
        .format("%Y%m%d-%H%M%S");
    PathBuf::from("runs").join(stamp.to_string())
}

fn run(launch: &mut Launch<'_>) -> Result<(), TrainError> {
    let usage = |e: String| TrainError::Config(trainer::ConfigError(e));
    let mut command = Args::command().name(launch.name).bin_name(launch.name);
    if !launch.multi_process {
        for f in MULTI_PROCESS_FLAGS {
            command = command.mut_arg(f, |a| a.hide(true));
        }
    }
    let matches = match command.try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            // --help, --version and usage errors: clap's own text, from
            // rank 0 only.
            if launch.comm.rank() == 0 {
                let _ = e.print();
            }
            std::process::exit(e.exit_code());
        }
    };
    let args = Args::from_arg_matches(&matches).map_err(|e| usage(e.to_string()))?;
    let explicit: Vec<String> = Args::command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .collect();
    let mut explicit: Vec<&str> = explicit.iter().map(String::as_str).collect();
    if let TokenizerArg::Load(_) = args.tokenizer {
        // A path names the tokenizer itself; its kind is whatever it holds.
        explicit.retain(|&f| f != "tokenizer");
        explicit.push("tokenizer_path");
    }
    let quiet = launch.comm.rank() != 0;
    let say = |s: &str| {
        if !quiet {
            println!("{s}");
        }
    };
    let mut cfg = args.run_config(explicit.contains(&"steps"));
    if cfg.resume.is_none() {
        if cfg.data.is_none() {
            say(&format!(
                "no DATA given: training on this repository's own text files ({})",
                launch.default_data.display()
            ));
            cfg.data = Some(launch.default_data.clone());
        }
        if cfg.out.is_none() {
            cfg.out = Some(default_out(launch.comm));
        }
    }
    // Test hook (not in --help): pause after each step so a test can kill
    // the run at a known point.
    let step_delay = std::env::var("CLLM_TEST_STEP_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let opts = TrainOptions {
        inject_failure: injected_failure().map_err(usage)?,
        step_delay,
    };
    let mut progress = Progress {
        bar: None,
        start: Instant::now(),
        quiet,
        bar_allowed: !quiet && !launch.multi_process,
        rank: launch.comm.rank(),
        steps: Vec::new(),
    };
    let settings = DistSettings {
        reduction: args.reduce,
        f32_order: args.f32_order,
        sync_timing: args.sync_timing,
        overlap: args.overlap,
        overlap_bucket: usize::try_from(args.overlap_bucket).unwrap_or(usize::MAX),
    };
    let outcome = trainer::train_with(cfg, &explicit, &opts, &mut progress, launch.comm, settings)?;
    let bpb = outcome
        .val_bits_per_byte
        .map_or(String::new(), |b| format!(" ({b:.3} bits/byte)"));
    let val = outcome
        .val_loss
        .map_or(String::new(), |v| format!(", val loss {v:.4}{bpb}"));
    let train_loss = outcome
        .train_loss
        .map_or(String::new(), |v| format!(", train loss {v:.4}"));
    say(&format!(
        "done: {} steps{train_loss}{val} in {:.1}s; model in {}",
        outcome.steps,
        outcome.train_seconds,
        outcome.run_dir.display()
    ));
    if launch.multi_process {
        let line = summary(
            &progress,
            launch.comm,
            &args,
            &outcome.config,
            outcome.model.config.num_params(),
        );
        say(&format!("summary {line}"));
    }
    if args.sample_tokens > 0 && outcome.steps > 0 && !quiet {
        let settings = SampleSettings {
            max_new_tokens: args.sample_tokens,
            ..SampleSettings::default()
        };
        let text = trainer::dispatch_kernels(
            outcome.config.kernels,
            Sample {
                model: &outcome.model,
                settings,
            },
        )
        .map_err(usage)?;
        println!(
            "--- sample ({} tokens) ---\n{text}\n---",
            args.sample_tokens
        );
    }
    Ok(())
}

/// Worker panics are caught by the executor, which recomputes the unit (up
/// to `trainer::MAX_RETRIES` times) or fails the step with a clear error;
/// report each one in one line instead of the default backtrace text, and
/// any other panic as an internal error.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".to_string());
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("main");
        if name.starts_with("sphere-worker") {
            eprintln!("warning: {name} failed ({msg})");
        } else {
            let at = info
                .location()
                .map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
            eprintln!("error: internal error in {name}: {msg}{at}");
        }
    }));
}

/// Runs the trainer's command line: parses the flags, trains, reports.
/// Errors are one line on stderr (`error: ...`, prefixed with the rank in a
/// multi-process run) and exit status 1. In a multi-process run an error
/// inside a step ends the whole job through [`Collectives::abort`], since
/// the other ranks may be waiting in a collective this one will never join.
pub fn main(mut launch: Launch<'_>) -> ExitCode {
    install_panic_hook();
    let (rank, ranks) = (launch.comm.rank(), launch.comm.size());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut launch)));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            let who = if ranks > 1 {
                format!("rank {rank}: ")
            } else {
                String::new()
            };
            match &e {
                // The failing rank says why; a disagreement, rank 0.
                TrainError::OtherRank(_) | TrainError::Disagree(_) if rank != 0 => {}
                _ => eprintln!("{who}error: {e}"),
            }
            if ranks > 1 && matches!(e, TrainError::Step { .. }) {
                launch.comm.abort(1);
            }
            ExitCode::from(1)
        }
        Err(_) => {
            if ranks > 1 {
                launch.comm.abort(1);
            }
            ExitCode::from(1)
        }
    }
}
