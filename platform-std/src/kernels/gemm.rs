//! Single-threaded f32 GEMM: argument checking, the blocking driver shared by
//! the SIMD micro-kernels, packing, and the scalar path.
//!
//! Blocking (BLIS-style, "A-stationary" as BLIS uses on AVX-512): for each
//! block of `NC` columns and `KC` reduction steps, B is packed into panels of
//! `NR` columns (zero-padded), then for each `MR`-row panel of A (read in
//! place when A is row-major, packed otherwise) the micro-kernel sweeps all
//! B panels. The A panel (MR×KC) stays in L1, the B block (KC×NC) in L2.
//!
//! Block sizes are constants, never derived from cache detection, so the
//! summation order — hence the bits — depends only on the kernel choice:
//! per C element, one FMA chain per KC-block over its steps in order, the
//! blocks added to C in order. That order is the same for every element, so
//! `C[i,j]` depends only on row i of A, column j of B, k and the old C: not
//! on m, n or where the element falls in a tile (splitting rows across work
//! units does not change bits).

use super::dispatch::Ops;
use super::Isa;
use cllm_core::kernels::{assert_row_major, product_dims, Mat, MatMut};
use std::cell::RefCell;

/// Reduction steps per packed block: the A micro-panel (MR×KC floats) must
/// stay in L1 while the kernel sweeps every B panel.
pub(super) const KC: usize = 256;
/// Columns per packed B block: KC×NC floats (512 KiB), a quarter of a 2 MiB
/// L2, leaving room for the C tiles and A panels that stream past it.
pub(super) const NC: usize = 512;
/// Most rows for which full panels of a row-major B are read in place
/// instead of packed (see [`drive`]).
pub(super) const B_IN_PLACE_MAX_M: usize = 64;

/// The A and B̃ operands of one micro-kernel call: step `p < kc` reads A
/// at `a + i*a_rs + p*a_cs` for `i < MR` and B̃ at `b + p*b_rs + j` for
/// `j < NR` (`b_rs = NR` for a packed panel).
#[derive(Clone, Copy)]
pub(super) struct Panels {
    pub kc: usize,
    pub a: *const f32,
    pub a_rs: usize,
    pub a_cs: usize,
    pub b: *const f32,
    pub b_rs: usize,
}

/// The C tile of one micro-kernel call: `c + i*rsc + j*csc` for `i < mr`,
/// `j < nr`. Adds into C when `load_c`; otherwise stores `bias[j] + ·`
/// when `bias` is not null (only with `csc == 1`), else overwrites C.
#[derive(Clone, Copy)]
pub(super) struct Tile {
    pub c: *mut f32,
    pub rsc: usize,
    pub csc: usize,
    pub mr: usize,
    pub nr: usize,
    pub load_c: bool,
    pub bias: *const f32,
}

/// A register-blocked MR×NR micro-kernel over packed panels.
pub(super) trait MicroKernel {
    const MR: usize;
    const NR: usize;
    /// `C[0..mr, 0..nr] (+)= A·B̃` over `p.kc` steps (see [`Panels`] and
    /// [`Tile`]).
    ///
    /// # Safety
    /// The CPU supports the kernel's instruction set; the A and B reads of
    /// `p` are in bounds; `t`'s C is writable; `1 ≤ mr ≤ MR`, `1 ≤ nr ≤ NR`,
    /// `kc ≥ 1`.
    unsafe fn run(p: Panels, t: Tile);

    /// Packs one panel of a B stored by columns: `dst[p*NR + j] = b[j*csb + p]`
    /// for `p < kc, j < nr`, zero for `nr ≤ j < NR`.
    ///
    /// # Safety
    /// As for `run`; the reads are in bounds and `dst` holds `kc × NR` floats.
    #[inline(always)]
    unsafe fn pack_panel_t(kc: usize, nr: usize, b: *const f32, csb: usize, dst: *mut f32) {
        pack_panel_t_scalar(Self::NR, 0, kc, 0, nr, b, csb, dst);
    }
}

/// The scalar part of [`MicroKernel::pack_panel_t`] over steps `p0..kc` and
/// columns `j0..NR` (columns from `nr` on are zero).
///
/// # Safety
/// As for `pack_panel_t`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn pack_panel_t_scalar(
    nr_full: usize,
    p0: usize,
    kc: usize,
    j0: usize,
    nr: usize,
    b: *const f32,
    csb: usize,
    dst: *mut f32,
) {
    for j in j0..nr_full {
        if j < nr {
            let src = b.add(j * csb);
            for p in p0..kc {
                *dst.add(p * nr_full + j) = *src.add(p);
            }
        } else {
            for p in p0..kc {
                *dst.add(p * nr_full + j) = 0.0;
            }
        }
    }
}

/// Highest index a `rows×cols` view with strides `rs, cs` touches, or `None`
/// on overflow. Only called with `rows, cols ≥ 1`.
fn max_index(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)
}

fn check_view(name: &str, v: &Mat<'_, f32>) {
    let Mat {
        data,
        rows,
        cols,
        rs,
        cs,
    } = *v;
    let len = data.len();
    match max_index(rows, cols, rs, cs) {
        Some(last) if last < len => {}
        _ => panic!(
            "gemm: {name} view {rows}×{cols} with strides ({rs}, {cs}) does not fit a slice of {len}"
        ),
    }
}

/// [`super::sgemm`] on an explicit instruction set.
///
/// Panics if the shapes do not agree, if a view does not fit its slice, or if
/// `isa` is not supported by this CPU (the check is one cached CPUID lookup,
/// negligible next to a GEMM).
pub fn sgemm_with(
    isa: Isa,
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    c: MatMut<'_, f32>,
    accumulate: bool,
) {
    let (m, k, n) = product_dims("gemm", &a, &b, &c);
    if m == 0 || n == 0 {
        return;
    }
    check_view("C", &c.as_mat());
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c.data[i * c.rs + j * c.cs] = 0.0;
                }
            }
        }
        return;
    }
    // Column-major C: compute Cᵀ = Bᵀ·Aᵀ so the kernel's vector stores run
    // along contiguous memory.
    let (a, b, c) = if c.cs != 1 && c.rs == 1 {
        (b.t(), a.t(), c.t())
    } else {
        (a, b, c)
    };
    let bias = std::ptr::null();
    run_checked(isa, a, b, c, accumulate, bias, Epilogue::None);
}

/// Whether the SIMD driver can produce a row-major C itself, adding a bias or
/// applying an epilogue as it stores: a SIMD ISA, at least one product step,
/// and rows that do not overlap. Otherwise the callers fall back to the
/// plain GEMM and a separate pass, with the same bits.
fn kernel_writes_row_major(isa: Isa, m: usize, k: usize, n: usize, rsc: usize) -> bool {
    isa != Isa::Scalar && k > 0 && (m == 1 || rsc >= n)
}

/// `C = bias + A·B` with `bias` (`n` floats) added to every row of a
/// row-major C (`c.cs == 1`). Bit for bit the same as filling each row of C
/// with `bias` and calling [`sgemm_with`] with `accumulate`, without the
/// extra pass over C: the SIMD kernels add the bias as they store the first
/// block of each tile.
///
/// Panics as [`sgemm_with`] does, or if `c.cs != 1` or `bias` is shorter
/// than `n`.
pub fn sgemm_bias_with(
    isa: Isa,
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    bias: &[f32],
    c: MatMut<'_, f32>,
) {
    let (m, k, n) = product_dims("gemm_bias", &a, &b, &c);
    assert_row_major("gemm_bias", &c);
    assert!(
        bias.len() >= n,
        "gemm: bias of {} for {n} columns",
        bias.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    check_view("C", &c.as_mat());
    let rsc = c.rs;
    if !kernel_writes_row_major(isa, m, k, n, rsc) {
        for i in 0..m {
            c.data[i * rsc..i * rsc + n].copy_from_slice(&bias[..n]);
        }
        return sgemm_with(isa, a, b, c, true);
    }
    let bias = bias.as_ptr();
    run_checked(isa, a, b, c, false, bias, Epilogue::None);
}

/// What [`drive`] does to each finished strip of a row-major C (the rows of
/// one MR panel, the columns of one NC block) right after its last KC block,
/// while the strip is in L1: one pass over C less than running the
/// elementwise kernel afterwards, with the same bits (the same per-element
/// operations on the same ISA).
///
/// Only the product pays: fusing GELU measured no faster on the small
/// model's c_fc and 5 % slower on the medium one's (`bench_gemm`,
/// interleaved), so GELU stays a separate pass.
#[derive(Clone, Copy)]
pub(super) enum Epilogue {
    None,
    /// `C = C ∘ F`, `F` with C's row stride.
    Mul {
        f: *const f32,
    },
}

impl Epilogue {
    /// Applies the epilogue to `rows` rows of `len` floats of C (row stride
    /// `rsc`) from `off` floats past C's start (the same offset into `F`),
    /// a call of `ops`'s kernel per row: out of line, since inlined into
    /// [`drive`] an elementwise body would crowd the registers of the
    /// micro-kernel loop around it.
    ///
    /// # Safety
    /// Those rows of C are writable and the matching ones of `F` valid.
    pub(super) unsafe fn apply(
        self,
        ops: &Ops,
        c: *mut f32,
        off: usize,
        rows: usize,
        len: usize,
        rsc: usize,
    ) {
        if let Epilogue::Mul { f } = self {
            for o in (0..rows).map(|i| off + i * rsc) {
                let row = std::slice::from_raw_parts_mut(c.add(o), len);
                ops.mul_in_place(row, std::slice::from_raw_parts(f.add(o), len));
            }
        }
    }
}

/// `C = (A·B) ∘ F` for a row-major C (`c.cs == 1`; `F` is `m×n` with C's
/// row stride), not accumulating. Bit for bit [`sgemm_with`] followed by the
/// elementwise product on the same ISA; the SIMD paths multiply each strip
/// of C while it is in cache.
///
/// Panics as [`sgemm_with`] does, or if `c.cs != 1` or `f` does not hold
/// the view.
pub(super) fn sgemm_mul_with(
    isa: Isa,
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    f: &[f32],
    mut c: MatMut<'_, f32>,
) {
    let (m, k, n) = product_dims("gemm_mul", &a, &b, &c);
    assert_row_major("gemm_mul", &c);
    if m == 0 || n == 0 {
        return;
    }
    let rsc = c.rs;
    check_view("C", &c.as_mat());
    check_view("F", &Mat::new(f, m, n, rsc, 1));
    if !kernel_writes_row_major(isa, m, k, n, rsc) {
        sgemm_with(isa, a, b, c.reborrow(), false);
        let ops = Ops::of(isa);
        for i in 0..m {
            let row = i * rsc..i * rsc + n;
            ops.mul_in_place(&mut c.data[row.clone()], &f[row]);
        }
        return;
    }
    let epilogue = Epilogue::Mul { f: f.as_ptr() };
    let bias = std::ptr::null();
    run_checked(isa, a, b, c, false, bias, epilogue);
}

/// Checks A, B and `isa`, then runs the blocked kernels. The caller checked
/// C and the shapes, and handled `m`, `n` or `k` of zero; `bias` is null or
/// holds `n` floats (then C is row-major and `accumulate` false).
fn run_checked(
    isa: Isa,
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    c: MatMut<'_, f32>,
    accumulate: bool,
    bias: *const f32,
    epilogue: Epilogue,
) {
    check_view("A", &a);
    check_view("B", &b);
    let ops = Ops::of(isa);
    let args = Args {
        ops,
        m: a.rows,
        k: a.cols,
        n: b.cols,
        a: a.data.as_ptr(),
        rsa: a.rs,
        csa: a.cs,
        b: b.data.as_ptr(),
        rsb: b.rs,
        csb: b.cs,
        c: c.data.as_mut_ptr(),
        rsc: c.rs,
        csc: c.cs,
        accumulate,
        bias,
        epilogue,
    };
    // SAFETY: the caller checked C, A and B were checked above, and a
    // non-null bias holds `n` floats.
    unsafe { ops.gemm(&args) }
}

/// Checked GEMM arguments as raw pointers; `m, n, k ≥ 1` and every view
/// fits its allocation.
pub(super) struct Args {
    /// The kernels of the ISA that runs (for the epilogue).
    pub ops: &'static Ops,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: *const f32,
    pub rsa: usize,
    pub csa: usize,
    pub b: *const f32,
    pub rsb: usize,
    pub csb: usize,
    pub c: *mut f32,
    pub rsc: usize,
    pub csc: usize,
    pub accumulate: bool,
    /// Null, or `n` floats added to every row of C (`accumulate` false, C
    /// row-major).
    pub bias: *const f32,
    /// Applied to the finished C (only with a row-major C, `accumulate`
    /// false, and a SIMD kernel: the scalar path never sees one).
    pub epilogue: Epilogue,
}

/// Plain loops, i-p-j order so the inner loop runs along B's and C's rows.
///
/// # Safety
/// `args` satisfies the [`Args`] invariants.
pub(super) unsafe fn gemm_scalar(g: &Args) {
    for i in 0..g.m {
        let crow = g.c.add(i * g.rsc);
        if !g.accumulate {
            for j in 0..g.n {
                *crow.add(j * g.csc) = 0.0;
            }
        }
        for p in 0..g.k {
            let aip = *g.a.add(i * g.rsa + p * g.csa);
            let brow = g.b.add(p * g.rsb);
            for j in 0..g.n {
                *crow.add(j * g.csc) += aip * *brow.add(j * g.csb);
            }
        }
    }
}

/// 64-byte aligned float storage, so packed panels start on cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// Per-thread packing buffers: they only grow, so steady-state calls do not
/// allocate.
#[derive(Default)]
struct PackBufs {
    a: Vec<Line>,
    b: Vec<Line>,
}

thread_local! {
    static BUFS: RefCell<PackBufs> = RefCell::new(PackBufs::default());
}

fn grow(v: &mut Vec<Line>, floats: usize) -> *mut f32 {
    let lines = floats.div_ceil(16);
    if v.len() < lines {
        v.resize(lines, Line([0.0; 16]));
    }
    v.as_mut_ptr().cast::<f32>()
}

/// The blocking loops around micro-kernel `K`. Inlined into each ISA's
/// `#[target_feature]` entry point so the packing loops are compiled (and
/// auto-vectorised) for that ISA too.
///
/// # Safety
/// `g` satisfies the [`Args`] invariants and the CPU supports `K`.
#[inline(always)]
pub(super) unsafe fn drive<K: MicroKernel>(g: &Args) {
    let kc_max = g.k.min(KC);
    let nc_max = g.n.min(NC).next_multiple_of(K::NR);
    // No closure around the loops: a closure would be compiled without the
    // caller's target features, and the intrinsics would not inline.
    let (apack, bpack) = pack_buffers(kc_max * K::MR, kc_max * nc_max);
    // Full A panels of a row-major A are read in place: the panel is MR
    // sequential row segments, which stay in L1 while the kernel sweeps B.
    // Any other layout is packed. For a transposed A (rsa == 1) the panel's
    // steps lie `csa` floats apart, and when that is a multiple of a large
    // power of two (e.g. 384 or 1536 columns) they crowd into a few L1 sets
    // and evict each other on every sweep; packing is a contiguous copy.
    let a_in_place = g.csa == 1;
    // A product with few rows (attention blocks, single-sequence units)
    // reuses each B panel only a few times, so copying it costs about as
    // much as the multiply: full panels of a row-major B are then read in
    // place (row stride `rsb`), and only a partial last panel is packed.
    let b_in_place = g.csb == 1 && g.m <= B_IN_PLACE_MAX_M;
    for jc in (0..g.n).step_by(NC) {
        let nc = (g.n - jc).min(NC);
        let full = nc - nc % K::NR;
        for pc in (0..g.k).step_by(KC) {
            let kc = (g.k - pc).min(KC);
            let load_c = g.accumulate || pc > 0;
            let b0 = g.b.add(pc * g.rsb + jc * g.csb);
            if !b_in_place {
                pack_b::<K>(kc, nc, b0, g.rsb, g.csb, bpack);
            } else if full < nc {
                pack_b::<K>(kc, nc - full, b0.add(full), g.rsb, 1, bpack.add(full * kc));
            }
            for ir in (0..g.m).step_by(K::MR) {
                let mr = (g.m - ir).min(K::MR);
                let a0 = g.a.add(ir * g.rsa + pc * g.csa);
                let (ap, a_rs, a_cs) = if a_in_place && mr == K::MR {
                    (a0, g.rsa, g.csa)
                } else {
                    pack_a::<K>(kc, mr, a0, g.rsa, g.csa, apack);
                    (apack as *const f32, 1, K::MR)
                };
                for jr in (0..nc).step_by(K::NR) {
                    let nr = (nc - jr).min(K::NR);
                    let c = g.c.add(ir * g.rsc + (jc + jr) * g.csc);
                    let (bp, b_rs) = if b_in_place && jr < full {
                        (b0.add(jr), g.rsb)
                    } else {
                        (bpack.add(jr * kc) as *const f32, K::NR)
                    };
                    let bias = if load_c || g.bias.is_null() {
                        std::ptr::null()
                    } else {
                        g.bias.add(jc + jr)
                    };
                    K::run(
                        Panels {
                            kc,
                            a: ap,
                            a_rs,
                            a_cs,
                            b: bp,
                            b_rs,
                        },
                        Tile {
                            c,
                            rsc: g.rsc,
                            csc: g.csc,
                            mr,
                            nr,
                            load_c,
                            bias,
                        },
                    );
                }
                if pc + kc == g.k {
                    // This strip of C is final and still in L1.
                    g.epilogue.apply(g.ops, g.c, ir * g.rsc + jc, mr, nc, g.rsc);
                }
            }
        }
    }
}

/// This thread's packing buffers, grown to at least `a` and `b` floats.
///
/// The pointers stay valid until the next call on this thread; a GEMM
/// neither recurses nor yields, so nothing else touches them meanwhile.
fn pack_buffers(a: usize, b: usize) -> (*mut f32, *mut f32) {
    BUFS.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let PackBufs { a: abuf, b: bbuf } = &mut *bufs;
        (grow(abuf, a), grow(bbuf, b))
    })
}

/// Packs `B[0..kc, 0..nc]` into column panels of `NR`: panel `q` holds
/// `kc` rows of `NR` floats (zero beyond `nc`).
///
/// # Safety
/// The view is in bounds and `out` holds `kc × nc.next_multiple_of(NR)`.
#[inline(always)]
unsafe fn pack_b<K: MicroKernel>(
    kc: usize,
    nc: usize,
    b: *const f32,
    rsb: usize,
    csb: usize,
    out: *mut f32,
) {
    for jr in (0..nc).step_by(K::NR) {
        let nr = (nc - jr).min(K::NR);
        let dst = out.add(jr * kc);
        if csb == 1 {
            for p in 0..kc {
                let src = b.add(p * rsb + jr);
                let d = dst.add(p * K::NR);
                if nr == K::NR {
                    // A constant-length copy compiles to a few vector moves.
                    // (A variable one is a libc call per row, and an
                    // element loop stays scalar: the compiler cannot rule
                    // out that `d` overlaps `src`.)
                    std::ptr::copy_nonoverlapping(src, d, K::NR);
                } else {
                    std::ptr::copy_nonoverlapping(src, d, nr);
                    for j in nr..K::NR {
                        *d.add(j) = 0.0;
                    }
                }
            }
        } else if rsb == 1 {
            K::pack_panel_t(kc, nr, b.add(jr * csb), csb, dst);
        } else {
            // General strides: gather column by column.
            for j in 0..K::NR {
                if j < nr {
                    let src = b.add((jr + j) * csb);
                    for p in 0..kc {
                        *dst.add(p * K::NR + j) = *src.add(p * rsb);
                    }
                } else {
                    for p in 0..kc {
                        *dst.add(p * K::NR + j) = 0.0;
                    }
                }
            }
        }
    }
}

/// Packs an `mr`-row panel of A (`mr ≤ MR`) as `kc` steps of `MR` floats,
/// zero-padding the missing rows.
///
/// # Safety
/// The view is in bounds and `out` holds `kc × MR` floats.
#[inline(always)]
unsafe fn pack_a<K: MicroKernel>(
    kc: usize,
    mr: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    out: *mut f32,
) {
    if rsa == 1 {
        for p in 0..kc {
            let d = out.add(p * K::MR);
            if mr == K::MR {
                // Constant length: vector moves (see `pack_b`).
                std::ptr::copy_nonoverlapping(a.add(p * csa), d, K::MR);
            } else {
                std::ptr::copy_nonoverlapping(a.add(p * csa), d, mr);
                for i in mr..K::MR {
                    *d.add(i) = 0.0;
                }
            }
        }
    } else {
        for i in 0..K::MR {
            if i < mr {
                let src = a.add(i * rsa);
                for p in 0..kc {
                    *out.add(p * K::MR + i) = *src.add(p * csa);
                }
            } else {
                for p in 0..kc {
                    *out.add(p * K::MR + i) = 0.0;
                }
            }
        }
    }
}
