//! # cllm-mpi
//!
//! Scale-out of the sphere hierarchy over MPI ranks (rsmpi on the system's
//! OpenMPI). The distributed step, the rank layout and the integer wire
//! formats live in `cllm_std::dist`, behind its `Collectives` trait; this
//! crate implements that trait over MPI ([`Net`]) and runs the shared
//! trainer command line on every rank (`train_mpi`).
//!
//! Not part of the workspace's default members: build it with
//! `cargo build --release -p cllm-mpi` once `libopenmpi-dev openmpi-bin
//! libclang-dev` are installed (see `platform-mpi/README.md`).

#![warn(missing_docs)]

pub mod net;

pub use net::{Net, NetStats};
