//! `cargo run --release --example generate -- DIR [flags]`: write text with a
//! trained model. Prints the prompt followed by the continuation, streaming
//! tokens as they are chosen.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Parser;

use cllm_core::kernels::Kernels;
use cllm_std::tokenizer::Tokenizer;
use cllm_std::trainer::{self, GenerateError, KernelSelection, KernelTask, SampleSettings};

/// Generate text with a model trained by `train`.
///
/// DIR is a run directory (its final model, or its newest checkpoint if the
/// run did not finish) or a checkpoint directory.
#[derive(Parser, Debug)]
#[command(name = "generate", version, about, long_about = None, args_override_self = true)]
struct Args {
    /// Model directory: a run directory or a checkpoint-N directory
    dir: PathBuf,
    /// Text to continue (empty: start from a newline, or BOS for the word tokenizer)
    #[arg(long, default_value = "")]
    prompt: String,
    /// Tokens to generate
    #[arg(long, default_value_t = 200)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 = greedy (always the most likely token)
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample among the K most likely tokens only (0 = all)
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches P (1 = off)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// Seed of the sampling RNG
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Math kernels: auto or portable
    #[arg(long, default_value = "auto", value_parser = PossibleValuesParser::new(KernelSelection::ALL.iter().map(|v| v.name())).map(|s| s.parse::<KernelSelection>().expect("checked")))]
    kernels: KernelSelection,
}

struct Run<'a> {
    model: &'a trainer::LoadedGpt,
    prompt: Vec<u32>,
    settings: SampleSettings,
}

/// Writes each token's bytes as soon as it is chosen. Byte tokens may split
/// a UTF-8 character; writing raw bytes lets the terminal reassemble it.
fn emit(tokenizer: &Tokenizer, out: &mut impl Write, id: u32) -> Result<(), GenerateError> {
    let mut bytes = tokenizer.decode_bytes(&[id])?;
    if matches!(tokenizer, Tokenizer::Word(_)) {
        bytes.insert(0, b' ');
    }
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| GenerateError::Other(format!("cannot write to stdout: {e}")))
}

impl KernelTask for Run<'_> {
    type Output = Result<(), GenerateError>;
    fn run<K: Kernels<f32> + Send + Sync + 'static>(self, k: K, _label: String) -> Self::Output {
        let m = self.model;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        trainer::generate(
            &k,
            &m.config,
            &m.params,
            &self.prompt,
            &self.settings,
            |id| emit(&m.tokenizer, &mut out, id),
        )?;
        let _ = writeln!(out);
        Ok(())
    }
}

fn run(args: Args) -> Result<(), GenerateError> {
    args.kernels
        .check()
        .map_err(|e| GenerateError::Other(e.to_string()))?;
    let model = trainer::load_gpt(&args.dir)?;
    let settings = SampleSettings {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    // Check the settings before printing anything.
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        return Err(GenerateError::Other(format!(
            "--temperature must be >= 0, got {}",
            args.temperature
        )));
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        return Err(GenerateError::Other(format!(
            "--top-p must be in (0, 1], got {}",
            args.top_p
        )));
    }
    let prompt = trainer::prompt_ids(&model.tokenizer, &args.prompt)?;
    print!("{}", args.prompt);
    let _ = std::io::stdout().flush();
    trainer::dispatch_kernels(
        args.kernels,
        Run {
            model: &model,
            prompt,
            settings,
        },
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
