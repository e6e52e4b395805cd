//! The kernel set the firmware trains with.

use cllm_core::kernels::{gemm, product_dims, Kernels, Mat, MatMut};

/// cllm-core's portable kernels, except that `gemm` never packs `B`.
///
/// The portable gemm copies a non-contiguous `B` block (`b.cs != 1`) into a
/// `KC × NC` f32 stack buffer (8 KiB) so its micro-kernel can stream rows.
/// The model asks for such operands on every step (the tied head `wteᵀ`,
/// `Kᵀ` in attention, `wᵀ` in each matmul backward), so with the portable
/// kernels the stack must hold 8 KiB more than this firmware otherwise needs,
/// an eighth of the board's RAM. At these sizes (k, n ≤ 64) a plain loop
/// costs little. It adds in the order the portable gemm documents
/// (`c + a₀b₀ + a₁b₁ + …`, left to right, no FMA), so the results are the
/// same bits: the `portable-gemm` feature swaps [`cllm_core::kernels::Portable`]
/// back in and the run prints identical losses and parameter checksum.
#[derive(Clone, Copy, Debug, Default)]
// Unused only in the `portable-gemm` comparison build.
#[cfg_attr(feature = "portable-gemm", allow(dead_code))]
pub struct Unpacked;

impl Kernels<f32> for Unpacked {
    fn gemm(&self, a: Mat<'_, f32>, b: Mat<'_, f32>, c: MatMut<'_, f32>, accumulate: bool) {
        if b.cs == 1 {
            // Contiguous rows of B: the portable gemm does not pack them.
            gemm::gemm(a, b, c, accumulate);
            return;
        }
        let (m, k, n) = product_dims("gemm", &a, &b, &c);
        for i in 0..m {
            for j in 0..n {
                let at = i * c.rs + j * c.cs;
                // The portable gemm zero-fills C first when not accumulating;
                // starting from +0.0 keeps the same bits (including -0.0 cases).
                let mut s = if accumulate { c.data[at] } else { 0.0 };
                for p in 0..k {
                    s += a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs];
                }
                c.data[at] = s;
            }
        }
    }
}

/// The kernels `main` trains with.
#[cfg(not(feature = "portable-gemm"))]
pub type Active = Unpacked;
/// The kernels `main` trains with.
#[cfg(feature = "portable-gemm")]
pub type Active = cllm_core::kernels::Portable;
