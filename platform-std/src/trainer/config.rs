//! The run configuration: every trainer flag, its default, its validation and
//! the rules for merging a resumed run's saved configuration with the flags
//! given again on the command line.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use cllm_core::reduce::{MAX_DEPTH, MAX_WIDTH};
use cllm_core::tree::{Shape, MAX_BRANCHING};

use crate::tokenizer::TokenizerKind;

/// Defaults of every flag, so the CLI's `--help` and the library agree.
pub mod defaults {
    /// Vocabulary size of the word and bpe tokenizers.
    pub const VOCAB_SIZE: usize = 8192;
    /// Residual width.
    pub const EMBED_DIM: usize = 128;
    /// Transformer blocks.
    pub const NUM_LAYERS: usize = 4;
    /// Attention heads.
    pub const NUM_HEADS: usize = 4;
    /// Tokens per training sequence.
    pub const SEQ_LEN: usize = 64;
    /// Sequences per optimizer step.
    pub const BATCH_SIZE: usize = 12;
    /// Sequences per work unit (one unit = one gradient computed by one worker).
    pub const MICRO_BATCH: usize = 1;
    /// Peak learning rate.
    pub const LEARNING_RATE: f64 = 1e-3;
    /// AdamW first-moment decay.
    pub const BETA1: f64 = 0.9;
    /// AdamW second-moment decay (nanoGPT's small-model setting).
    pub const BETA2: f64 = 0.99;
    /// SGD momentum.
    pub const MOMENTUM: f64 = 0.9;
    /// Decoupled weight decay (2-D weights only).
    pub const WEIGHT_DECAY: f64 = 0.1;
    /// Global gradient-norm clip (0 = off).
    pub const GRAD_CLIP: f64 = 1.0;
    /// Linear warmup steps.
    pub const WARMUP_STEPS: u64 = 100;
    /// Optimizer steps when neither `--steps` nor `--epochs` is given: a
    /// few minutes of the default model on two threads of a 2-core machine
    /// with the SIMD kernels (3,000 steps took 168 s there).
    pub const STEPS: u64 = 3000;
    /// Seed of the initialisation and of the batch order.
    pub const SEED: u64 = 1337;
    /// Branching of the sphere tree (the kissing number).
    pub const BRANCHING: u32 = 12;
    /// Significand bits of the bigfloat accumulator: enough that no sum of
    /// `f32` gradients ever rounds, so the result is order-independent.
    pub const PRECISION: u32 = 512;
    /// Fraction of the tokens held out for validation.
    pub const VAL_FRACTION: f64 = 0.1;
    /// Steps between validation evaluations (0 = only at the end).
    pub const EVAL_EVERY: u64 = 500;
    /// Validation windows (sequences) per evaluation.
    pub const EVAL_WINDOWS: usize = 512;
    /// Steps between checkpoints (0 = only at the end).
    pub const SAVE_EVERY: u64 = 500;
    /// Intermediate checkpoints kept.
    pub const KEEP_CHECKPOINTS: usize = 3;
    /// Steps between metrics records and progress lines.
    pub const LOG_EVERY: u64 = 10;
    /// Files found in a directory larger than this are skipped.
    pub const MAX_FILE_BYTES: u64 = crate::data::DEFAULT_MAX_FILE_BYTES;
}

/// An invalid configuration, with the flag and the numbers (one line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

macro_rules! choice_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// Every value, in `--help` order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// The command-line spelling.
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = ConfigError;
            fn from_str(s: &str) -> Result<Self, ConfigError> {
                $name::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    let all: Vec<&str> = $name::ALL.iter().map(|v| v.name()).collect();
                    ConfigError(format!("unknown value {s:?}; expected one of {}", all.join(", ")))
                })
            }
        }
    };
}

choice_enum!(
    /// How gradients are summed (`--accumulator`).
    AccumulatorKind {
        /// Plain f32 in the canonical tree order.
        F32 => "f32",
        /// Fixed-point integers (order-independent).
        Fixed => "fixed",
        /// Exact (Kulisch) registers (order-independent).
        Exact => "exact",
        /// Arbitrary-precision floats (feature `bigfloat`).
        BigFloat => "bigfloat",
    }
);

choice_enum!(
    /// `--optimizer`.
    OptimizerKind {
        /// AdamW with decoupled weight decay.
        AdamW => "adamw",
        /// SGD with optional momentum.
        Sgd => "sgd",
    }
);

choice_enum!(
    /// `--tokenizer`.
    TokenizerChoice {
        /// One token per byte (vocabulary 256).
        Byte => "byte",
        /// One token per character of the training text.
        Char => "char",
        /// Lowercased whitespace words with specials.
        Word => "word",
        /// Byte-level BPE (GPT-2 style), trained on the data.
        Bpe => "bpe",
    }
);

choice_enum!(
    /// `--kernels`: which math kernels run (see
    /// [`dispatch_kernels`](super::dispatch_kernels)).
    KernelSelection {
        /// The fastest kernels for this CPU.
        Auto => "auto",
        /// The portable scalar kernels (bit-identical on every platform).
        Portable => "portable",
        /// The AVX2+FMA kernels, also on a CPU with AVX-512 (to measure or
        /// reproduce that path anywhere).
        Avx2 => "avx2",
        /// The AVX-512F kernels (what `auto` picks where the CPU has them).
        Avx512 => "avx512",
        /// AVX-512 with the large GEMMs on AMX-BF16 tiles in three bf16
        /// terms: faster, with about 16 significant bits per GEMM operand
        /// ([`Isa::Amx`](crate::kernels::Isa::Amx)).
        Amx => "amx",
    }
);

impl KernelSelection {
    /// An error naming what is missing when this CPU cannot run the choice.
    pub fn check(self) -> Result<(), ConfigError> {
        use crate::kernels::Isa;
        for (sel, isa, needs) in [
            (KernelSelection::Avx2, Isa::Avx2Fma, "AVX2 and FMA"),
            (KernelSelection::Avx512, Isa::Avx512, "AVX-512F"),
        ] {
            if self == sel && !isa.supported() {
                return Err(ConfigError(format!(
                    "--kernels {} needs {needs}, which this CPU lacks (use --kernels auto)",
                    self.name()
                )));
            }
        }
        if self == KernelSelection::Amx && !crate::kernels::Isa::Amx.supported() {
            return Err(ConfigError(
                "--kernels amx needs AVX-512 BF16 and AMX-BF16 and Linux's permission to use \
                 the tile registers; this machine lacks one of them (use --kernels auto)"
                    .to_string(),
            ));
        }
        Ok(())
    }
}

impl From<TokenizerChoice> for TokenizerKind {
    fn from(c: TokenizerChoice) -> Self {
        match c {
            TokenizerChoice::Byte => TokenizerKind::Byte,
            TokenizerChoice::Char => TokenizerKind::Char,
            TokenizerChoice::Word => TokenizerKind::Word,
            TokenizerChoice::Bpe => TokenizerKind::Bpe,
        }
    }
}

impl From<TokenizerKind> for TokenizerChoice {
    fn from(k: TokenizerKind) -> Self {
        match k {
            TokenizerKind::Byte => TokenizerChoice::Byte,
            TokenizerKind::Char => TokenizerChoice::Char,
            TokenizerKind::Word => TokenizerChoice::Word,
            TokenizerKind::Bpe => TokenizerChoice::Bpe,
        }
    }
}

/// `--recursive-depth`: a number or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Depth {
    /// The smallest depth with at least one leaf per unit
    /// ([`optimal_depth`](cllm_core::tree::optimal_depth)).
    #[default]
    Auto,
    /// A fixed depth.
    Fixed(u32),
}

impl fmt::Display for Depth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Depth::Auto => f.write_str("auto"),
            Depth::Fixed(d) => write!(f, "{d}"),
        }
    }
}

impl FromStr for Depth {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        if s == "auto" {
            return Ok(Depth::Auto);
        }
        s.parse::<u32>().map(Depth::Fixed).map_err(|_| {
            ConfigError(format!(
                "recursive depth must be a non-negative integer or \"auto\", got {s:?}"
            ))
        })
    }
}

// Serialized as the command-line spelling ("auto" or a number) so the saved
// configuration reads like the flags.
impl Serialize for Depth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Depth::Auto => s.serialize_str("auto"),
            Depth::Fixed(d) => s.serialize_u32(*d),
        }
    }
}

impl<'de> Deserialize<'de> for Depth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            Value::Number(n) => n
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Depth::Fixed)
                .ok_or_else(|| serde::de::Error::custom("depth out of range")),
            other => Err(serde::de::Error::custom(format!(
                "depth must be \"auto\" or a number, got {other}"
            ))),
        }
    }
}

/// Every trainer flag. Saved in each checkpoint's `trainer_state.json` (under
/// `config`), so a resumed run knows exactly how it was started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    /// Corpus: a text file or a directory read recursively.
    pub data: Option<PathBuf>,
    /// `--tokenizer`: the kind trained on the data (or, with
    /// `tokenizer_path`, the kind of the tokenizer loaded from there).
    pub tokenizer: TokenizerChoice,
    /// `--tokenizer PATH`: load the tokenizer (a `tokenizer.json`, or a
    /// directory with one or with GPT-2's `vocab.json` + `merges.txt`)
    /// instead of training one.
    pub tokenizer_path: Option<PathBuf>,
    /// `--init-from DIR`: start from the weights of a GPT-2 model directory
    /// (Hugging Face layout) and its tokenizer, keeping its architecture.
    pub init_from: Option<PathBuf>,
    /// Vocabulary size of the word and bpe tokenizers (byte is 256, char is the
    /// characters of the data).
    pub vocab_size: usize,
    /// Files found in a directory larger than this are skipped.
    pub max_file_bytes: u64,
    /// Fraction of the tokens held out for validation (0 = none).
    pub val_fraction: f64,
    /// `--embed-dim` (`n_embd`).
    pub embed_dim: usize,
    /// `--num-layers` (`n_layer`).
    pub num_layers: usize,
    /// `--num-heads` (`n_head`).
    pub num_heads: usize,
    /// Model context (`n_positions`); `None` = `seq_len`.
    pub context: Option<usize>,
    /// Tokens per training sequence.
    pub seq_len: usize,
    /// Sequences per optimizer step.
    pub batch_size: usize,
    /// Sequences per work unit.
    pub micro_batch: usize,
    /// `--recompute-blocks`: store only the blocks' outputs, recompute the
    /// blocks in backward (same bits).
    pub recompute_blocks: bool,
    /// `--optimizer`.
    pub optimizer: OptimizerKind,
    /// Peak learning rate (warmup to it, cosine decay to a tenth of it).
    pub learning_rate: f64,
    /// AdamW β₁.
    pub beta1: f64,
    /// AdamW β₂.
    pub beta2: f64,
    /// SGD momentum (0 = plain SGD).
    pub momentum: f64,
    /// Weight decay on the 2-D weight matrices.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// Optimizer steps (`None`: from `epochs`, else the default).
    pub steps: Option<u64>,
    /// Passes over the training tokens, converted to steps.
    pub epochs: Option<f64>,
    /// Seed of the initialisation and of the batch order.
    pub seed: u64,
    /// Worker threads (`None` = one per CPU).
    pub threads: Option<usize>,
    /// Depth of the sphere tree.
    pub recursive_depth: Depth,
    /// Children per sphere, 1..=12.
    pub branching: u32,
    /// `--accumulator`.
    pub accumulator: AccumulatorKind,
    /// Bigfloat significand bits.
    pub precision: u32,
    /// `--kernels`.
    pub kernels: KernelSelection,
    /// Steps between evaluations (0 = only at the end).
    pub eval_every: u64,
    /// Validation windows per evaluation.
    pub eval_windows: usize,
    /// Steps between checkpoints (0 = only at the end).
    pub save_every: u64,
    /// Intermediate checkpoints kept.
    pub keep_checkpoints: usize,
    /// Steps between metrics records / progress lines.
    pub log_every: u64,
    /// Run directory.
    pub out: Option<PathBuf>,
    /// Run or checkpoint directory to resume from.
    pub resume: Option<PathBuf>,
}

impl Default for RunConfig {
    fn default() -> Self {
        use defaults as d;
        RunConfig {
            data: None,
            tokenizer: TokenizerChoice::Byte,
            tokenizer_path: None,
            init_from: None,
            vocab_size: d::VOCAB_SIZE,
            max_file_bytes: d::MAX_FILE_BYTES,
            val_fraction: d::VAL_FRACTION,
            embed_dim: d::EMBED_DIM,
            num_layers: d::NUM_LAYERS,
            num_heads: d::NUM_HEADS,
            context: None,
            seq_len: d::SEQ_LEN,
            batch_size: d::BATCH_SIZE,
            micro_batch: d::MICRO_BATCH,
            recompute_blocks: false,
            optimizer: OptimizerKind::AdamW,
            learning_rate: d::LEARNING_RATE,
            beta1: d::BETA1,
            beta2: d::BETA2,
            momentum: d::MOMENTUM,
            weight_decay: d::WEIGHT_DECAY,
            grad_clip: d::GRAD_CLIP,
            warmup_steps: d::WARMUP_STEPS,
            steps: None,
            epochs: None,
            seed: d::SEED,
            threads: None,
            recursive_depth: Depth::Auto,
            branching: d::BRANCHING,
            accumulator: AccumulatorKind::F32,
            precision: d::PRECISION,
            kernels: KernelSelection::Auto,
            eval_every: d::EVAL_EVERY,
            eval_windows: d::EVAL_WINDOWS,
            save_every: d::SAVE_EVERY,
            keep_checkpoints: d::KEEP_CHECKPOINTS,
            log_every: d::LOG_EVERY,
            out: None,
            resume: None,
        }
    }
}

/// Fields a resumed run may change: how the work is executed and reported,
/// and how long it goes on. Everything else fixes the training trajectory
/// and must match the checkpoint.
pub const RESUME_OVERRIDABLE: &[&str] = &[
    "data",
    "threads",
    "recursive_depth",
    "branching",
    "kernels",
    "recompute_blocks",
    "eval_every",
    "eval_windows",
    "save_every",
    "keep_checkpoints",
    "log_every",
    "out",
    "resume",
    "steps",
    "epochs",
    "max_file_bytes",
];

/// `--some-flag` for field `some_flag`.
pub fn flag_name(field: &str) -> String {
    if field == "tokenizer_path" {
        return "--tokenizer".to_string();
    }
    format!("--{}", field.replace('_', "-"))
}

fn positive(field: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError(format!(
            "{} must be positive, got 0",
            flag_name(field)
        )));
    }
    Ok(())
}

fn finite_in(
    field: &str,
    v: f64,
    lo: f64,
    lo_open: bool,
    hi: Option<f64>,
) -> Result<(), ConfigError> {
    let ok = v.is_finite() && if lo_open { v > lo } else { v >= lo } && hi.iter().all(|&h| v < h);
    if ok {
        return Ok(());
    }
    let range = match (lo_open, hi) {
        (true, None) => format!("positive (> {lo})"),
        (false, None) => format!(">= {lo}"),
        (true, Some(h)) => format!("in ({lo}, {h})"),
        (false, Some(h)) => format!("in [{lo}, {h})"),
    };
    Err(ConfigError(format!(
        "{} must be {range}, got {v}",
        flag_name(field)
    )))
}

impl RunConfig {
    /// Units (work items) per optimizer step.
    pub fn units(&self) -> usize {
        self.batch_size / self.micro_batch.max(1)
    }

    /// The model context (`n_positions`).
    pub fn context_len(&self) -> usize {
        self.context.unwrap_or(self.seq_len)
    }

    /// Worker threads after resolving "one per CPU".
    pub fn resolved_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// The tree depth after resolving `auto`.
    pub fn resolved_depth(&self) -> Result<u32, ConfigError> {
        match self.recursive_depth {
            Depth::Fixed(d) => Ok(d),
            Depth::Auto => cllm_core::tree::optimal_depth(self.units(), self.branching, MAX_DEPTH)
                .map_err(|e| ConfigError(format!("--branching: {e}"))),
        }
    }

    /// The sphere tree this run uses.
    pub fn shape(&self) -> Result<Shape, ConfigError> {
        let depth = self.resolved_depth()?;
        let shape = Shape::new(depth, self.branching).map_err(|e| {
            ConfigError(format!(
                "--recursive-depth {depth} with --branching {} cannot be represented: {e}",
                self.branching
            ))
        })?;
        if depth > MAX_DEPTH {
            return Err(ConfigError(format!(
                "--recursive-depth {depth} exceeds the supported maximum {MAX_DEPTH}"
            )));
        }
        Ok(shape)
    }

    /// Checks everything that does not need the data: one line per problem,
    /// naming the flag and the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("embed_dim", self.embed_dim as u64),
            ("num_layers", self.num_layers as u64),
            ("num_heads", self.num_heads as u64),
            ("seq_len", self.seq_len as u64),
            ("batch_size", self.batch_size as u64),
            ("micro_batch", self.micro_batch as u64),
            ("keep_checkpoints", self.keep_checkpoints as u64),
            ("log_every", self.log_every),
            ("max_file_bytes", self.max_file_bytes),
        ] {
            positive(field, v)?;
        }
        if matches!(self.tokenizer, TokenizerChoice::Word | TokenizerChoice::Bpe)
            && self.tokenizer_path.is_none()
        {
            positive("vocab_size", self.vocab_size as u64)?;
        }
        if let Some(c) = self.context {
            positive("context", c as u64)?;
        }
        if let Some(t) = self.threads {
            positive("threads", t as u64)?;
            if t > MAX_WIDTH {
                return Err(ConfigError(format!(
                    "--threads {t} exceeds the supported maximum {MAX_WIDTH}"
                )));
            }
        }
        #[allow(clippy::manual_is_multiple_of)] // MSRV 1.80
        if self.embed_dim % self.num_heads != 0 {
            return Err(ConfigError(format!(
                "--embed-dim {} is not divisible by --num-heads {}",
                self.embed_dim, self.num_heads
            )));
        }
        if self.seq_len > self.context_len() {
            return Err(ConfigError(format!(
                "--seq-len {} exceeds the model context {} (--context)",
                self.seq_len,
                self.context_len()
            )));
        }
        #[allow(clippy::manual_is_multiple_of)] // MSRV 1.80
        if self.batch_size % self.micro_batch != 0 {
            return Err(ConfigError(format!(
                "--batch-size {} is not a multiple of --micro-batch {}",
                self.batch_size, self.micro_batch
            )));
        }
        finite_in("learning_rate", self.learning_rate, 0.0, true, None)?;
        finite_in("weight_decay", self.weight_decay, 0.0, false, None)?;
        finite_in("grad_clip", self.grad_clip, 0.0, false, None)?;
        finite_in("beta1", self.beta1, 0.0, false, Some(1.0))?;
        finite_in("beta2", self.beta2, 0.0, false, Some(1.0))?;
        finite_in("momentum", self.momentum, 0.0, false, Some(1.0))?;
        finite_in("val_fraction", self.val_fraction, 0.0, false, Some(1.0))?;
        if let Some(e) = self.epochs {
            finite_in("epochs", e, 0.0, true, None)?;
            if self.steps.is_some() {
                return Err(ConfigError(
                    "give either --steps or --epochs, not both".to_string(),
                ));
            }
        }
        if !(1..=MAX_BRANCHING).contains(&self.branching) {
            return Err(ConfigError(format!(
                "--branching must be in 1..={MAX_BRANCHING}, got {}",
                self.branching
            )));
        }
        if self.accumulator == AccumulatorKind::BigFloat {
            if !cfg!(feature = "bigfloat") {
                return Err(ConfigError(
                    "--accumulator bigfloat needs the bigfloat feature: rebuild with \
                     `--features bigfloat` (the first build compiles GMP/MPFR and needs m4)"
                        .to_string(),
                ));
            }
            positive("precision", self.precision as u64)?;
        }
        self.kernels.check()?;
        self.shape()?;
        Ok(())
    }

    /// The configuration of a resumed run: the checkpoint's `saved`
    /// configuration, with the flags named in `explicit` (field names) taken
    /// from `given` when they are in [`RESUME_OVERRIDABLE`]; any other
    /// explicit flag must repeat the saved value.
    pub fn merge_resumed(
        saved: &RunConfig,
        given: &RunConfig,
        explicit: &[&str],
    ) -> Result<RunConfig, ConfigError> {
        let to_map = |c: &RunConfig| match serde_json::to_value(c) {
            Ok(Value::Object(m)) => m,
            _ => unreachable!("a RunConfig serializes to an object"),
        };
        let mut merged = to_map(saved);
        let given_map = to_map(given);
        for &field in explicit {
            let Some(g) = given_map.get(field) else {
                continue;
            };
            if RESUME_OVERRIDABLE.contains(&field) {
                merged.insert(field.to_string(), g.clone());
                // --steps and --epochs are alternatives: the one given wins.
                match field {
                    "steps" => {
                        merged.insert("epochs".to_string(), Value::Null);
                    }
                    "epochs" => {
                        merged.insert("steps".to_string(), Value::Null);
                    }
                    _ => {}
                }
            } else if merged.get(field) != Some(g) {
                return Err(ConfigError(format!(
                    "{} {} differs from the checkpoint's {}: a resumed run keeps its training \
                     configuration (only {} may change)",
                    flag_name(field),
                    show(g),
                    merged.get(field).map_or("(unset)".to_string(), show),
                    "threads, depth, branching, kernels, steps/epochs, eval/save/log settings"
                )));
            }
        }
        serde_json::from_value(Value::Object(merged))
            .map_err(|e| ConfigError(format!("cannot merge the resumed configuration: {e}")))
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(unset)".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        RunConfig::default().validate().unwrap();
    }

    #[test]
    fn each_invalid_config_names_its_flag() {
        type Case = (fn(&mut RunConfig), &'static str);
        let cases: Vec<Case> = vec![
            (
                |c| c.num_heads = 3,
                "--embed-dim 128 is not divisible by --num-heads 3",
            ),
            (
                |c| c.context = Some(32),
                "--seq-len 64 exceeds the model context 32",
            ),
            (
                |c| c.micro_batch = 5,
                "--batch-size 12 is not a multiple of --micro-batch 5",
            ),
            (|c| c.batch_size = 0, "--batch-size must be positive"),
            (
                |c| c.learning_rate = -1e-3,
                "--learning-rate must be positive",
            ),
            (
                |c| c.learning_rate = 0.0,
                "--learning-rate must be positive",
            ),
            (|c| c.branching = 13, "--branching must be in 1..=12"),
            (|c| c.branching = 0, "--branching must be in 1..=12"),
            (
                |c| {
                    c.recursive_depth = Depth::Fixed(17);
                    c.branching = 2;
                },
                "exceeds the supported maximum 16",
            ),
            (
                |c| c.recursive_depth = Depth::Fixed(40),
                "cannot be represented",
            ),
            (|c| c.val_fraction = 1.0, "--val-fraction must be in [0, 1)"),
            (
                |c| {
                    c.steps = Some(3);
                    c.epochs = Some(1.0)
                },
                "not both",
            ),
        ];
        for (f, want) in cases {
            let mut c = RunConfig::default();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = RunConfig {
            recursive_depth: Depth::Fixed(2),
            steps: Some(7),
            ..RunConfig::default()
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["recursive_depth"], 2);
        assert_eq!(serde_json::from_value::<RunConfig>(v).unwrap(), c);
    }

    #[test]
    fn resume_merge_keeps_the_trajectory() {
        let saved = RunConfig::default();
        let mut given = RunConfig {
            threads: Some(3),
            steps: Some(50),
            ..RunConfig::default()
        };
        let m = RunConfig::merge_resumed(&saved, &given, &["threads", "steps"]).unwrap();
        assert_eq!((m.threads, m.steps), (Some(3), Some(50)));
        given.learning_rate = 0.5;
        let e = RunConfig::merge_resumed(&saved, &given, &["learning_rate"]).unwrap_err();
        assert!(e.0.contains("--learning-rate 0.5 differs"), "{e}");
        // Repeating the saved value is fine.
        let m = RunConfig::merge_resumed(&saved, &RunConfig::default(), &["learning_rate"]);
        assert!(m.is_ok());
    }
}
