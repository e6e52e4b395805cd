//! The one ISA dispatch: a table of entry points per instruction set, every
//! generic kernel of `simd` (and the GEMM driver) instantiated for that
//! ISA's vector type and compiled with its target features. The tables are
//! constants; [`Ops::of`] checks the CPU and picks one, and a kernel call
//! is then a call through a function pointer (once per call of an
//! operation, never per element).

use super::gemm::Args;
use super::simd::{self, AdamW};
use super::Isa;

/// The kernels in the table, by signature: the one list the table type, its
/// safe methods and each ISA's instantiation are made from. `$rule` selects
/// what [`kernel_table`] makes of it.
macro_rules! kernels {
    ($($rule:tt)*) => {
        kernel_table! { $($rule)* {
            exp(out: &mut [f32], inp: &[f32]);
            gelu_forward(out: &mut [f32], inp: &[f32]);
            gelu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]);
            gelu_forward_grad(out: &mut [f32], x: &mut [f32]);
            layernorm_forward(
                out: &mut [f32],
                mean: &mut [f32],
                rstd: &mut [f32],
                inp: &[f32],
                weight: &[f32],
                bias: &[f32]
            );
            layernorm_backward(
                dinp: &mut [f32],
                dweight: &mut [f32],
                dbias: &mut [f32],
                dout: &[f32],
                inp: &[f32],
                weight: &[f32],
                mean: &[f32],
                rstd: &[f32]
            );
            softmax_row(out: &mut [f32], inp: &[f32]);
            scaled_softmax_row(row: &mut [f32], scale: f32);
            causal_softmax(p: &mut [f32], t: usize, scale: f32);
            causal_softmax_backward(d: &mut [f32], p: &[f32], t: usize, scale: f32);
            logsumexp(inp: &[f32]) -> f32;
            exp_shift_scale(row: &mut [f32], shift: f32, scale: f32);
            add(out: &mut [f32], a: &[f32], b: &[f32]);
            mul(out: &mut [f32], a: &[f32], b: &[f32]);
            mul_in_place(acc: &mut [f32], f: &[f32]);
            add_rows(acc: &mut [f32], m: &[f32]);
            softmax_backward_row(d: &mut [f32], p: &[f32], scale: f32);
            adamw(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], hp: &AdamW);
        }}
    };
}

macro_rules! kernel_table {
    // The table type, with a safe method per kernel.
    (@type { $($f:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)* }) => {
        /// One instruction set's kernels. The fields are private and the
        /// tables constants of this module, so an `&Ops` exists only by
        /// [`Ops::of`], which checked that this CPU runs its ISA: that is
        /// the whole safety contract of the `simd` kernels (they check
        /// their shapes themselves), so the methods calling them are safe.
        pub(super) struct Ops {
            $($f: unsafe fn($($ty),*) $(-> $ret)?,)*
            gemm: unsafe fn(&Args),
        }

        impl Ops {
            $(
                #[allow(clippy::too_many_arguments)]
                pub(super) fn $f(&self, $($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: the ISA is supported (see `Ops`).
                    unsafe { (self.$f)($($arg),*) }
                }
            )*
        }
    };
    // One ISA's table: each kernel instantiated for vector type `$v` in a
    // function compiled under `#[$attr]`, so the intrinsics inline into it.
    (@isa $v:ty, $attr:meta, $gemm:expr, { $($f:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)* }) => {{
        $(
            #[$attr]
            #[allow(clippy::too_many_arguments)]
            unsafe fn $f($($arg: $ty),*) $(-> $ret)? {
                simd::$f::<$v>($($arg),*)
            }
        )*
        Ops { $($f,)* gemm: $gemm }
    }};
}

kernels!(@type);

/// Plain Rust (`f32` as a one-lane vector).
const SCALAR: Ops = kernels!(@isa f32, inline, super::gemm::gemm_scalar,);

#[cfg(target_arch = "x86_64")]
mod x86_tables {
    use super::super::x86::{amx, gemm, V256, V512};
    use super::*;

    pub(super) const AVX2: Ops = kernels!(
        @isa V256, target_feature(enable = "avx2,fma"), gemm::sgemm_avx2,
    );
    pub(super) const AVX512: Ops = kernels!(
        @isa V512, target_feature(enable = "avx512f,avx2,fma"), gemm::sgemm_avx512,
    );
    /// AVX-512 but for the GEMMs that pay on tiles.
    pub(super) const AMX: Ops = Ops {
        gemm: gemm_amx,
        ..AVX512
    };

    /// # Safety
    /// As for `amx::sgemm_amx` (which implies AVX-512F).
    unsafe fn gemm_amx(g: &Args) {
        if super::super::amx_pays(g.m, g.k, g.n) {
            amx::sgemm_amx(g)
        } else {
            gemm::sgemm_avx512(g)
        }
    }
}

impl Ops {
    /// The table of `isa`.
    ///
    /// Panics if this CPU does not support `isa` (one cached CPUID lookup).
    pub(super) fn of(isa: Isa) -> &'static Ops {
        assert!(isa.supported(), "{} is not supported here", isa.name());
        match isa {
            Isa::Scalar => &SCALAR,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => &x86_tables::AVX2,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => &x86_tables::AVX512,
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => &x86_tables::AMX,
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 ISA reported as supported elsewhere"),
        }
    }

    /// The GEMM driver of this ISA.
    ///
    /// # Safety
    /// `g` satisfies the [`Args`] invariants.
    pub(super) unsafe fn gemm(&self, g: &Args) {
        (self.gemm)(g)
    }
}
