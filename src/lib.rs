//! `cllm` — the umbrella crate of the workspace: it re-exports the no_std core
//! and the std platform, and carries the desktop trainer and generator
//! (`examples/train.rs`, `examples/generate.rs`) and the cross-crate
//! integration tests (`tests/`).
pub use cllm_core as core;
pub use cllm_std as platform;
