//! `mpirun -np N train_mpi [DATA] [train's flags]`: the trainer of
//! `examples/train.rs` on N MPI ranks. Every rank runs the shared command
//! line of `cllm_std::cli` with an MPI communicator plugged in: each
//! computes its block of every step's units with the threaded executor and
//! SIMD kernels (`--kernels`), gradients meet by segment through MPI
//! collectives (`--reduce`), and rank 0 writes the run directory. With
//! `--accumulator exact` or `fixed` the checkpoints are byte-identical for
//! every rank count.
//!
//! Test hook: `CLLM_MPI_FAIL=RANK:STEP[:abort]` makes rank RANK exit(1) (or
//! abort) when it has finished step STEP.

use std::path::PathBuf;
use std::process::ExitCode;

use mpi::Threading;

use cllm_mpi::Net;
use cllm_std::cli::{self, Launch};

fn main() -> ExitCode {
    // Only the main thread calls MPI; the executor's workers never do.
    let Some((universe, _)) = mpi::initialize_with_threading(Threading::Funneled) else {
        eprintln!("train_mpi: MPI was already initialized");
        return ExitCode::from(2);
    };
    let mut net = Net::new(universe.world());
    let code = cli::main(Launch {
        name: "train_mpi",
        // The repository's text files, as for `train`.
        default_data: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
        comm: &mut net,
        multi_process: true,
    });
    // `universe` finalizes MPI when it drops, after the last collective.
    drop(universe);
    code
}
