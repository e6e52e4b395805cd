//! # cllm-mpi
//!
//! Scale-out of the sphere hierarchy over MPI ranks (rsmpi on the system's
//! OpenMPI). Each rank executes a contiguous block of the tree's leaves with
//! the threaded executor of `cllm-std`; gradients meet through MPI
//! collectives by segment ([`dist`]), as integers for the fixed and exact
//! accumulators ([`wire`]), so a multi-rank run is bit-identical to a
//! single-process run.
//!
//! Not part of the workspace's default members: build it with
//! `cargo build --release -p cllm-mpi` once `libopenmpi-dev openmpi-bin
//! libclang-dev` are installed (see `platform-mpi/README.md`).

pub mod dist;
pub mod layout;
pub mod net;
pub mod wire;

pub use dist::{
    gather_optimizer_state, train_step, CrossRank, DistError, DistStepStats, Reduction, Scratch,
};
pub use layout::RankLayout;
pub use net::{Net, NetStats};
