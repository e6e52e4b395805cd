//! SIMD kernels for x86-64 (AVX2+FMA, AVX-512, and opt-in AMX-BF16 GEMMs)
//! with runtime CPU detection and a scalar fallback.
//!
//! [`SimdKernels`] picks an instruction set once, at construction, and every
//! call dispatches on that choice, so one instance always runs the same code
//! and gives the same bits for the same inputs. Nothing here spawns threads or
//! allocates in steady state: the executor runs one kernel call per thread, and
//! the GEMM packing buffers are thread-local and only grow.
//!
//! Accuracy (checked by `platform-std/tests/kernels_*.rs`, which print the
//! measured maxima with `--nocapture`):
//! - GEMM: `|C - C_ref| ≤ 1e-5 · (Σ_p |A_ip||B_pj| + |C0_ij|)` for k ≤ 4096
//!   (blocked FMA chains in a fixed order). Bits of `C[i,j]` depend only on
//!   row i of A, column j of B, k and the old C — not on m, n or tiling.
//! - GEMM on AMX ([`Isa::Amx`], bf16x3): `|C - C_ref| ≤ 4e-5 · (Σ_p
//!   |A_ip||B_pj| + |C0_ij|)`; the same bits for the same inputs, and bits
//!   of `C[i,j]` independent of m and n among products that run on tiles
//!   ([`amx_pays`]).
//! - `exp`: ≤ 1 ulp from `libm::expf` over a dense sweep of [-104, 89]
//!   (Cody–Waite reduction, degree-7 polynomial); the tests allow 2.
//! - GELU forward: ≤ 1.9 ulp of the exact value for x ≥ 0; for x < 0 the f32
//!   rounding of the exponent `-2u(x)` (shared by every f32 GELU, tanh-based
//!   ones included) adds about `|2u|` ulp; differs from the
//!   `0.5·x·(1 + libm::tanhf(u))` formula by ≤ 1.9e-7·max(|x|, 1).
//! - Layernorm, softmax, AdamW, GELU backward: a few ulp of the magnitudes
//!   involved; the exact bounds are in `tests/kernels_elementwise.rs`.
//!
//! AVX-512 is chosen over AVX2 where the CPU has both: GEMM ≈ 1.5×, GELU and
//! softmax ≈ 1.7–2×, layernorm ≈ 1.1×, AdamW equal (memory-bound), measured
//! with `cargo run --release -p cllm-std --example bench_gemm`.
//! `Auto` never picks AMX, which trades operand precision (about 16
//! significant bits instead of 24) for GEMMs 2–3× faster than AVX-512 on the
//! model's shapes (same benchmark); `KernelChoice::Amx` asks for it.

mod dispatch;
mod gemm;
mod peak;
mod seam;
mod simd;
#[cfg(target_arch = "x86_64")]
mod x86;

/// The GEMM operand views, from the core (what [`sgemm`] takes).
pub use cllm_core::kernels::{Mat, MatMut};
pub use gemm::{sgemm_bias_with, sgemm_with};
pub use peak::fma_peak_gflops;
pub use simd::AdamW;

/// Which code path to run. `Auto` picks the widest instruction set the CPU
/// has; `Portable` forces the scalar code (for comparisons and for
/// `--kernels portable`); the explicit ISAs exist so tests and benchmarks can
/// pit the paths against each other on one machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelChoice {
    /// Whatever [`Isa::detect`] finds: AVX-512, AVX2 + FMA, or scalar.
    Auto,
    /// The scalar code, [`Isa::Scalar`], on any CPU.
    Portable,
    /// [`Isa::Avx2Fma`]; an error on a CPU without AVX2 and FMA.
    Avx2,
    /// [`Isa::Avx512`]; an error on a CPU without AVX-512F.
    Avx512,
    /// AVX-512 with the GEMMs on AMX-BF16 tiles in three bf16 terms: several
    /// times faster products, about 16 significant bits per operand instead
    /// of 24 (see [`Isa::Amx`]). Never picked by `Auto`.
    Amx,
}

/// The instruction set a [`SimdKernels`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust loops (whatever the compiler makes of them for the
    /// baseline target).
    Scalar,
    /// AVX2 + FMA (256-bit).
    Avx2Fma,
    /// AVX-512F (512-bit); implies AVX2 + FMA.
    Avx512,
    /// AVX-512 for everything but large GEMMs, which run on AMX-BF16 tiles
    /// with each f32 operand split into two bf16 terms and three tile
    /// products per step ("bf16x3", accumulating in f32). Small products
    /// ([`amx_pays`] false) stay on AVX-512, so a row computed alone (as
    /// KV-cached generation does) can differ in its last bits from the same
    /// row inside a large product. Opt-in: the GEMM error bound is 4e-5
    /// instead of 1e-5 (module docs).
    Amx,
}

/// Smallest m, n and k for which [`Isa::Amx`] runs a product on tiles
/// (see [`amx_pays`]).
pub const AMX_MIN_DIM: usize = 32;
/// Smallest `m·k·n` for which [`Isa::Amx`] runs a product on tiles.
pub const AMX_MIN_VOLUME: usize = 1 << 17;

/// Whether [`Isa::Amx`] runs an `m×k×n` product on tiles rather than on
/// AVX-512: every dimension at least [`AMX_MIN_DIM`] and the volume at
/// least [`AMX_MIN_VOLUME`]. Below that, packing and splitting cost more than
/// the tiles save: the small model's 32-row attention blocks (32×32×64 and
/// the like) ran 6 % slower end to end on tiles, the medium model's
/// (32×64×256 and the like) faster.
pub fn amx_pays(m: usize, k: usize, n: usize) -> bool {
    m >= AMX_MIN_DIM
        && k >= AMX_MIN_DIM
        && n >= AMX_MIN_DIM
        && m.saturating_mul(k).saturating_mul(n) >= AMX_MIN_VOLUME
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let fma = std::arch::is_x86_feature_detected!("fma");
            let avx2 = std::arch::is_x86_feature_detected!("avx2");
            let avx512 = std::arch::is_x86_feature_detected!("avx512f");
            if avx512 && avx2 && fma {
                return Isa::Avx512;
            }
            if avx2 && fma {
                return Isa::Avx2Fma;
            }
        }
        Isa::Scalar
    }

    /// Whether this CPU can run `self`. For [`Isa::Amx`] the first call
    /// also asks the kernel for the tile register state.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2Fma => Isa::detect() != Isa::Scalar,
            Isa::Avx512 => Isa::detect() == Isa::Avx512,
            Isa::Amx => amx_supported(),
        }
    }

    /// Short name for logs: "avx512f+fma", "avx2+fma" or "portable".
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "portable",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Avx512 => "avx512f+fma",
            Isa::Amx => "avx512f+amx-bf16x3",
        }
    }
}

/// AVX-512 with BF16 conversions, AMX tiles with BF16 products, and Linux's
/// permission to use the tile registers. Cached: CPUID traps to the
/// hypervisor in a VM, and every GEMM asks.
fn amx_supported() -> bool {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMX.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if Isa::detect() == Isa::Avx512
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512bf16")
                && x86::amx::cpu_has_amx_bf16()
            {
                return x86::amx::request_tile_state();
            }
        }
        false
    })
}

/// The requested instruction set is not available on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsupported(pub Isa);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "this CPU does not support {}", self.0.name())
    }
}

impl std::error::Error for Unsupported {}

/// Kernel implementations bound to one instruction set, chosen at
/// construction. Cheap to copy and `Sync`: share one across threads.
///
/// ```
/// use cllm_core::kernels::{Kernels, Mat, MatMut}; // the core's seam
/// use cllm_std::kernels::{KernelChoice, SimdKernels};
///
/// let k = SimdKernels::new(KernelChoice::Auto).unwrap();
/// // C[2×2] = A[2×3]·B[3×2], all row-major.
/// let a = Mat::row_major(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
/// let b = Mat::row_major(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 3, 2);
/// let mut c = [0.0; 4];
/// k.gemm(a, b, MatMut::row_major(&mut c, 2, 2), false);
/// assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
/// // The same B as the transpose of its 2×3 transpose (strides 1 and 3).
/// let bt = Mat::row_major(&[1.0, 0.0, 1.0, 0.0, 1.0, 1.0], 2, 3);
/// k.gemm(a, bt.t(), MatMut::row_major(&mut c, 2, 2), true);
/// assert_eq!(c, [8.0, 10.0, 20.0, 22.0]);
/// println!("kernels: {}", k.describe());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimdKernels {
    isa: Isa,
}

impl Default for SimdKernels {
    fn default() -> Self {
        SimdKernels::auto()
    }
}

impl SimdKernels {
    /// The best path for this CPU.
    pub fn auto() -> Self {
        SimdKernels { isa: Isa::detect() }
    }

    /// The scalar path.
    pub fn portable() -> Self {
        SimdKernels { isa: Isa::Scalar }
    }

    /// A specific path; an explicit ISA the CPU lacks is an error rather than
    /// a silent fallback, so a benchmark never mislabels what it measured.
    pub fn new(choice: KernelChoice) -> Result<Self, Unsupported> {
        let isa = match choice {
            KernelChoice::Auto => Isa::detect(),
            KernelChoice::Portable => Isa::Scalar,
            KernelChoice::Avx2 => Isa::Avx2Fma,
            KernelChoice::Avx512 => Isa::Avx512,
            KernelChoice::Amx => Isa::Amx,
        };
        if isa.supported() {
            Ok(SimdKernels { isa })
        } else {
            Err(Unsupported(isa))
        }
    }

    /// The instruction set these kernels run (fixed at construction).
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// This instance's kernels (its ISA was checked at construction).
    fn ops(&self) -> &'static dispatch::Ops {
        dispatch::Ops::of(self.isa)
    }

    /// What runs, for logs: "avx512f+fma", "avx2+fma" or "portable".
    pub fn describe(&self) -> String {
        self.isa.name().to_string()
    }

    /// Layer norm over rows of length `c = weight.len()`:
    /// `out = (x - mean)·rstd·weight + bias` with `rstd = 1/√(var + 1e-5)`
    /// (biased variance); `mean` and `rstd` receive one value per row.
    pub fn layernorm_forward(
        &self,
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        weight: &[f32],
        bias: &[f32],
    ) {
        self.ops()
            .layernorm_forward(out, mean, rstd, inp, weight, bias);
    }

    /// `out = softmax(inp)` over one row (max-subtracted).
    pub fn softmax_row(&self, out: &mut [f32], inp: &[f32]) {
        self.ops().softmax_row(out, inp);
    }

    /// Row softmax over consecutive rows of length `cols`.
    pub fn softmax_rows(&self, out: &mut [f32], inp: &[f32], cols: usize) {
        assert_eq!(out.len(), inp.len(), "softmax_rows: length mismatch");
        if cols == 0 {
            return;
        }
        assert_eq!(inp.len() % cols, 0, "softmax_rows: not whole rows");
        let ops = self.ops();
        for (o, i) in out.chunks_exact_mut(cols).zip(inp.chunks_exact(cols)) {
            ops.softmax_row(o, i);
        }
    }

    /// `row[i] = exp(row[i] − shift)·scale`.
    pub fn exp_shift_scale(&self, row: &mut [f32], shift: f32, scale: f32) {
        self.ops().exp_shift_scale(row, shift, scale)
    }

    /// One AdamW step over a slice of parameters (see [`AdamW`]).
    pub fn adamw(
        &self,
        params: &mut [f32],
        grads: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        hp: &AdamW,
    ) {
        self.ops().adamw(params, grads, m, v, hp);
    }

    /// `out[i] = exp(inp[i])`; exposed so the approximation's accuracy can be
    /// checked against libm.
    pub fn exp(&self, out: &mut [f32], inp: &[f32]) {
        self.ops().exp(out, inp);
    }
}

/// Single-threaded f32 GEMM on the best path for this CPU (detected once).
/// Same contract as [`Kernels::gemm`](cllm_core::kernels::Kernels::gemm).
pub fn sgemm(a: Mat<'_, f32>, b: Mat<'_, f32>, c: MatMut<'_, f32>, accumulate: bool) {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    let isa = *ISA.get_or_init(Isa::detect);
    gemm::sgemm_with(isa, a, b, c, accumulate);
}
