//! The run's shape report and the memory estimate checked before anything
//! large is allocated.

use std::fmt::Write as _;

use cllm_core::accumulate::{Accumulator, ExactAcc, FixedAcc};
use cllm_core::model::GptConfig;
use cllm_core::tree::Shape;

use crate::data::human_bytes;
use crate::exec::{reduction_buffers, work_len, ExecConfig};

use super::config::{AccumulatorKind, ConfigError};

/// Bytes of one accumulator cell, heap parts included.
fn cell_bytes(kind: AccumulatorKind, precision: u32) -> u128 {
    match kind {
        AccumulatorKind::F32 => 4,
        AccumulatorKind::Fixed => std::mem::size_of::<<FixedAcc as Accumulator>::Cell>() as u128,
        AccumulatorKind::Exact => std::mem::size_of::<<ExactAcc as Accumulator>::Cell>() as u128,
        // An MPFR float: its header plus the significand limbs on the heap
        // (and the allocator's bookkeeping).
        AccumulatorKind::BigFloat => 32 + 16 + (precision as u128).div_ceil(64) * 8,
    }
}

/// What the hierarchy's buffers will take, in bytes: parameters, AdamW's two
/// moments, the reduction buffers (f32: the fold plan's slots, which grow
/// with depth; associative: each thread's unit buffers and accumulator; the
/// gradient lives in one of them) and each thread's activations, with the
/// number of reduction buffers. Mirrors
/// [`Hierarchy::memory_bytes`](crate::exec::Hierarchy::memory_bytes) and
/// [`Hierarchy::gradient_buffers`](crate::exec::Hierarchy::gradient_buffers).
pub fn estimate_memory(
    model: &GptConfig,
    exec: &ExecConfig,
    kind: AccumulatorKind,
    precision: u32,
) -> (u128, usize) {
    let p = model.num_params() as u128;
    let t = exec.threads as u128;
    let assoc = kind != AccumulatorKind::F32;
    let (slots, accs) = reduction_buffers(exec, assoc, model.num_params());
    let work = work_len(model, exec) as u128;
    let io = 2 * (exec.micro_batch * exec.seq_len) as u128 * 4;
    let bytes = 3 * p * 4
        + slots as u128 * p * 4
        + accs as u128 * p * cell_bytes(kind, precision)
        + t * (work * 4 + io);
    (bytes, slots + accs)
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (`None` where there is no
/// such file).
pub fn mem_available() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn human(n: u128) -> String {
    human_bytes(u64::try_from(n).unwrap_or(u64::MAX))
}

/// Errors when the estimate exceeds the available memory.
pub fn check_memory(
    model: &GptConfig,
    exec: &ExecConfig,
    kind: AccumulatorKind,
    precision: u32,
) -> Result<u128, ConfigError> {
    let (need, buffers) = estimate_memory(model, exec, kind, precision);
    if let Some(avail) = mem_available() {
        if need > avail {
            return Err(ConfigError(format!(
                "the run needs an estimated {} ({} parameters: weights, gradients, optimizer \
                 state, {buffers} reduction buffers for depth {} and {} threads, activations) but \
                 only {} is available; use a smaller model, a smaller depth, fewer --threads or \
                 a smaller --micro-batch",
                human(need),
                model.num_params(),
                exec.shape.depth(),
                exec.threads,
                human(avail)
            )));
        }
    }
    Ok(need)
}

/// Everything the shape report shows.
pub struct ShapeInfo<'a> {
    /// The tree.
    pub shape: Shape,
    /// The executor settings.
    pub exec: &'a ExecConfig,
    /// The model.
    pub model: &'a GptConfig,
    /// Accumulator name.
    pub accumulator: &'a str,
    /// Kernel description.
    pub kernels: &'a str,
    /// Optimizer name.
    pub optimizer: &'a str,
    /// Bytes the hierarchy holds.
    pub memory: usize,
    /// Steps to run and the first one.
    pub steps: (u64, u64),
}

/// The multi-line report printed at start.
pub fn shape_report(s: &ShapeInfo<'_>) -> String {
    let sh = s.shape;
    let mut r = String::new();
    let _ = writeln!(
        r,
        "hierarchy: depth {}, branching {}, {} sphere{}",
        sh.depth(),
        sh.branching(),
        sh.sphere_count(),
        if sh.sphere_count() == 1 { "" } else { "s" }
    );
    for l in 0..=sh.depth() {
        let n = sh.level_len(l);
        let role = match (l, l == sh.depth()) {
            (0, true) => "root, the only worker",
            (0, false) => "root",
            (_, true) => "workers",
            _ => "control",
        };
        let _ = writeln!(
            r,
            "  level {l}: {n} sphere{} ({role})",
            if n == 1 { "" } else { "s" }
        );
    }
    let leaves = sh.leaf_count() as usize;
    let units = s.exec.units;
    let (lo, hi) = (units / leaves, units.div_ceil(leaves));
    let per_worker = if lo == hi {
        format!("{lo}")
    } else {
        format!("{lo}-{hi}")
    };
    let _ = writeln!(
        r,
        "workers (leaves): {leaves}; units per step: {units} ({} sequence{} x {} tokens each); \
         units per worker: {per_worker}",
        s.exec.micro_batch,
        if s.exec.micro_batch == 1 { "" } else { "s" },
        s.exec.seq_len
    );
    let _ = writeln!(
        r,
        "threads: {}; accumulator: {}; kernels: {}; optimizer: {}",
        s.exec.threads, s.accumulator, s.kernels, s.optimizer
    );
    let m = s.model;
    let _ = writeln!(
        r,
        "model: {} layers, {} heads, n_embd {}, context {}, vocab {}: {} parameters ({:.2}M)",
        m.n_layer,
        m.n_head,
        m.n_embd,
        m.n_positions,
        m.vocab_size,
        m.num_params(),
        m.num_params() as f64 / 1e6
    );
    let _ = writeln!(
        r,
        "memory: {} (weights, gradients, optimizer state, reduction buffers, activations)",
        human_bytes(s.memory as u64)
    );
    let (first, total) = s.steps;
    let _ = write!(
        r,
        "steps: {total}{}",
        if first > 0 {
            format!(" (resuming after step {first})")
        } else {
            String::new()
        }
    );
    r
}
