//! # cllm-std
//!
//! The hosted platform for `cllm-core`: a persistent-thread executor of the
//! sphere hierarchy, SIMD kernels with runtime CPU detection, data loading and
//! tokenizers, and Hugging Face–compatible checkpoints.
#![warn(missing_docs)]

pub mod checkpoint;
#[cfg(feature = "cli")]
pub mod cli;
pub mod data;
pub mod dist;
pub mod exec;
pub mod fsutil;
pub mod kernels;
pub mod metrics;
pub mod plot;
pub mod tokenizer;
pub mod trainer;
