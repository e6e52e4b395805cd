//! Helpers shared by the kernel integration tests.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use cllm_std::kernels::{KernelChoice, SimdKernels};

/// Every explicit instruction-set choice, AMX included.
pub const ALL_CHOICES: [KernelChoice; 4] = [
    KernelChoice::Portable,
    KernelChoice::Avx2,
    KernelChoice::Avx512,
    KernelChoice::Amx,
];

/// The kernel sets among `choices` that this CPU runs; the others are
/// reported on stderr and skipped.
pub fn available(choices: &[KernelChoice]) -> Vec<SimdKernels> {
    choices
        .iter()
        .filter_map(|&choice| match SimdKernels::new(choice) {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("skipping {choice:?}: {e}");
                None
            }
        })
        .collect()
}

/// `n` deterministic values in [-1, 1) from a xorshift stream seeded by
/// `seed`.
pub fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let scale = (1u64 << 24) as f32;
    (0..n)
        .map(|_| ((next() >> 40) as f32 / scale) * 2.0 - 1.0)
        .collect()
}

/// The first index where `a` and `b` differ in bits, over their common
/// length.
pub fn first_bit_difference(a: &[f32], b: &[f32]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x.to_bits() != y.to_bits())
}
