//! Helpers shared by the reduction tests: an associative test accumulator,
//! a seeded generator of order-sensitive gradients, the canonical fold
//! evaluated directly from its definition, and a timeout guard.
#![allow(dead_code)] // each test file uses a different subset

use std::sync::mpsc;
use std::time::Duration;

use cllm_core::accumulate::{AccError, AccErrorKind, Accumulator};
use cllm_core::tree::Shape;

/// Fixed point with 20 fractional bits in an `i64`: integer addition is
/// associative, so every grouping gives the same bits. (The real
/// `FixedAcc`/`ExactAcc` join these tests once merged.)
pub struct ScaledAcc;

const SCALE: f64 = (1u64 << 20) as f64;

/// The length-mismatch error, at the shorter length, unless `a == b`.
fn same_len(a: usize, b: usize) -> Result<(), AccError> {
    if a == b {
        Ok(())
    } else {
        Err(AccError::new(AccErrorKind::LengthMismatch, a.min(b)))
    }
}

impl Accumulator for ScaledAcc {
    type Cell = i64;
    const ASSOCIATIVE: bool = true;

    fn name(&self) -> &'static str {
        "scaled-test"
    }
    fn zero_cell(&self) -> i64 {
        0
    }
    fn zero(&self, cells: &mut [i64]) {
        cells.fill(0);
    }
    fn add(&self, cells: &mut [i64], xs: &[f32]) -> Result<(), AccError> {
        same_len(cells.len(), xs.len())?;
        for (i, (c, &x)) in cells.iter_mut().zip(xs).enumerate() {
            if !x.is_finite() {
                return Err(AccError::new(AccErrorKind::NonFinite, i));
            }
            let v = (x as f64 * SCALE).round();
            if v.abs() >= 9.0e18 {
                return Err(AccError::new(AccErrorKind::Overflow, i));
            }
            *c = c
                .checked_add(v as i64)
                .ok_or(AccError::new(AccErrorKind::Overflow, i))?;
        }
        Ok(())
    }
    fn merge(&self, dst: &mut [i64], src: &[i64]) -> Result<(), AccError> {
        same_len(dst.len(), src.len())?;
        for (i, (d, &s)) in dst.iter_mut().zip(src).enumerate() {
            *d = d
                .checked_add(s)
                .ok_or(AccError::new(AccErrorKind::Overflow, i))?;
        }
        Ok(())
    }
    fn round(&self, cells: &[i64], out: &mut [f32]) -> Result<(), AccError> {
        same_len(cells.len(), out.len())?;
        for (o, &c) in out.iter_mut().zip(cells) {
            *o = (c as f64 / SCALE) as f32;
        }
        Ok(())
    }
}

/// splitmix64: a tiny seeded generator so failures reproduce.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Gradient element `i` of unit `u`: random sign and magnitude in
/// 1e-8..1e8, so f32 sums depend on the order of additions.
pub fn wild(seed: u64, u: usize, i: usize) -> f32 {
    let r = mix(seed ^ mix((u as u64) << 32 | i as u64));
    let exp = (r % 17) as i32 - 8; // 1e-8 ..= 1e8
    let mant = 1.0 + ((r >> 8) % 1000) as f32 / 1000.0;
    let sign = if (r >> 40) & 1 == 1 { -1.0 } else { 1.0 };
    sign * mant * 10f32.powi(exp)
}

/// Gradient element `i` of unit `u` on the ScaledAcc grid with a bounded
/// magnitude, so the test accumulator neither rounds nor overflows.
pub fn tame(seed: u64, u: usize, i: usize) -> f32 {
    let r = mix(seed ^ mix((u as u64) << 32 | i as u64));
    ((r % 2_000_001) as f32 - 1_000_000.0) / 1024.0
}

/// Unit gradients as vectors.
pub fn unit_grads(units: usize, p: usize, g: impl Fn(usize, usize) -> f32) -> Vec<Vec<f32>> {
    (0..units)
        .map(|u| (0..p).map(|i| g(u, i)).collect())
        .collect()
}

fn fold(values: impl Iterator<Item = Vec<f32>>) -> Option<Vec<f32>> {
    values.reduce(|mut acc, v| {
        for (a, x) in acc.iter_mut().zip(&v) {
            *a += *x;
        }
        acc
    })
}

/// The canonical value of sphere `id`, straight from the definition: the
/// fold of its non-empty children in child order starting from the first
/// (a leaf folds its units in order); `None` when its subtree has no unit.
pub fn canonical(shape: &Shape, grads: &[Vec<f32>], id: u32) -> Option<Vec<f32>> {
    if let Some(leaf) = shape.leaf_index(id) {
        let r = shape.leaf_units(leaf, grads.len());
        return fold(r.map(|u| grads[u].clone()));
    }
    fold(
        shape
            .children(id)
            .filter_map(|c| canonical(shape, grads, c)),
    )
}

/// The canonical reduction of the whole tree (zeros when there is no unit).
pub fn canonical_root(shape: &Shape, grads: &[Vec<f32>], p: usize) -> Vec<f32> {
    canonical(shape, grads, 0).unwrap_or_else(|| vec![0.0; p])
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `f` on its own thread and fails the test if it does not finish in
/// `secs` seconds (a hung barrier then fails instead of hanging the suite).
pub fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("timed out after {secs} s: a barrier is probably stuck"),
    }
}

/// Relax strategy for tests: more threads than cores must yield, not spin.
pub struct Yield;

impl cllm_core::reduce::RelaxStrategy for Yield {
    fn relax() {
        std::thread::yield_now();
    }
}
