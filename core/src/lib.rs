//! # cllm-core
//!
//! The `no_std`, allocation-free heart of cllm: the static-arena sphere tree,
//! the GPT model math (forward and hand-written backward), optimizers, gradient
//! accumulators generic over the number type, and the fixed-segment lock-free
//! reduction protocol that executors drive.
//!
//! The caller hands the core every buffer it works in; nothing here allocates.
//! Platform crates (`cllm-std`, the bare-metal example, MPI) plug in through
//! two seams: [`kernels::Kernels`] (the math kernels) and the reduction
//! protocol in [`reduce`].
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod accumulate;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod real;
pub mod reduce;
pub mod rng;
pub mod sample;
pub mod tree;
