//! `cargo run --release --example train -- [DATA] [flags]`: train a GPT on a
//! text file or directory (default: this repository's own text files).
//!
//! The command line lives in `cllm_std::cli`, shared with cllm-mpi's
//! `train_mpi`; this program runs it in one process.

use std::path::PathBuf;
use std::process::ExitCode;

use cllm_std::cli::{self, Launch};
use cllm_std::dist::Solo;

fn main() -> ExitCode {
    cli::main(Launch {
        name: "train",
        default_data: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        comm: &mut Solo,
        multi_process: false,
    })
}
