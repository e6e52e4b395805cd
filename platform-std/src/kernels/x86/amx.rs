//! GEMM on AMX-BF16 tiles with each f32 operand split into two bf16 terms
//! ("bf16x3").
//!
//! A tile multiply (`tdpbf16ps`) takes bf16 inputs and accumulates in f32.
//! Each f32 `x` is split as `hi = bf16(x)`, `lo = bf16(x − hi)` (round to
//! nearest even both times), so `hi + lo` carries 16 significant bits, and
//! `a·b ≈ hi_a·hi_b + hi_a·lo_b + lo_a·hi_b`; the dropped `lo_a·lo_b` and the
//! two splitting errors are each ≤ 2⁻¹⁸·|a·b|. The three products cost three
//! tile multiplies, still several times the f32 FMA rate of AVX-512 (about
//! 2.9 TFLOP/s of bf16 tile arithmetic per core here against 150 GFLOP/s of
//! f32 FMAs). Sums accumulate in f32.
//!
//! Accuracy: `|C − C_ref| ≤ 4e-5 · (Σ_p |A_ip||B_pj| + |C0_ij|)`, against
//! AVX-512's 1e-5 (see the module docs of `kernels` and
//! `tests/kernels_gemm.rs`); bf16 tiles treat subnormal inputs as zero, and
//! an infinite input may come out as NaN instead of ±∞ (its `lo` is NaN).
//!
//! Blocking: C is computed in 32×32 blocks (four 16×16 f32 tiles, two A and
//! two B tiles: all eight tile registers). For each block of `NCB` columns
//! and `KCB` reduction steps B is packed, split and VNNI-interleaved, then
//! the block is swept by each 32-row panel of A (packed and split on the
//! first column block, kept for the others). Block sizes are constants and
//! every element sees the same sequence of tile multiplies, so `C[i,j]`
//! depends only on row i of A, column j of B, k
//! and the old C, as with the f32 kernels.

use super::super::gemm::Args;
use super::lanes16;
use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Reduction steps per packed block, a multiple of the 32 bf16 of a tile
/// row. 512 measured faster than 256 (fewer round trips of C through the
/// tiles; the split A panel, 64 KiB, is read from L2) and than 1024.
const KCB: usize = 512;
/// Columns per packed B block: 2 × KCB × NCB bf16 = 1 MiB, in L2 (1024
/// and 1536 measured slower).
const NCB: usize = 512;
/// Rows of A packed at a time: bounds the packed copy of A (4 bytes per
/// element) at `MC × k`, 12 MiB for k = 1536, however many rows a caller
/// passes (an evaluation pass can pass thousands), while every product of
/// the medium model's training step (at most 1,536 rows) packs A once.
const MC: usize = 2048;
/// bf16 per tile (16 rows of 64 bytes).
const TILE: usize = 512;

/// One 16×32-bf16 tile, aligned to a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Tile([u16; TILE]);

#[derive(Default)]
struct Bufs {
    a: Vec<Tile>,
    b: Vec<Tile>,
}

thread_local! {
    static BUFS: RefCell<Bufs> = RefCell::new(Bufs::default());
}

fn grow(v: &mut Vec<Tile>, tiles: usize) -> *mut u16 {
    if v.len() < tiles {
        v.resize(tiles, Tile([0; TILE]));
    }
    v.as_mut_ptr().cast()
}

/// CPUID leaf 7: AMX-TILE (EDX bit 24) and AMX-BF16 (EDX bit 22).
/// (`is_x86_feature_detected!` does not take these names on stable Rust.)
pub(in crate::kernels) fn cpu_has_amx_bf16() -> bool {
    // Leaf 7 exists: the caller has seen AVX-512, reported by the same leaf.
    let r = __cpuid_count(7, 0);
    r.edx & (1 << 24) != 0 && r.edx & (1 << 22) != 0
}

/// Asks Linux for the AMX tile state (once per process); `false` if it is
/// refused, and then no tile instruction may run.
pub(in crate::kernels) fn request_tile_state() -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GRANTED.get_or_init(|| {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these arguments only changes the
        // process's permission to use the AMX register state.
        let r = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        r == 0
    })
}

/// Palette 1, all eight tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn full() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        TileConfig(c)
    }
}

macro_rules! tile_load {
    ($t:literal, $p:expr, $stride:expr) => {
        asm!(concat!("tileloadd tmm", $t, ", [{p} + {s}*1]"),
            p = in(reg) $p, s = in(reg) $stride, options(nostack, readonly))
    };
}
macro_rules! tile_store {
    ($t:literal, $p:expr, $stride:expr) => {
        asm!(concat!("tilestored [{p} + {s}*1], tmm", $t),
            p = in(reg) $p, s = in(reg) $stride, options(nostack))
    };
}
macro_rules! tile_dot {
    ($c:literal, $a:literal, $b:literal) => {
        asm!(
            concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b),
            options(nomem, nostack)
        )
    };
}

/// How a 32×32 block of C starts.
#[derive(Clone, Copy)]
enum Init {
    /// From C itself.
    Load,
    /// From zero.
    Zero,
    /// From the bias row (32 floats) repeated down the rows.
    Bias(*const f32),
}

/// `C[32×32] = init + Σ_kt (Aₕᵢ·Bₗₒ + Aₕᵢ·Bₕᵢ + Aₗₒ·Bₕᵢ)` over `kt_n` tile
/// steps. `a` holds the A panel's hi tiles `[kt][half]` then its lo tiles,
/// `b` likewise for one 32-column B panel; C rows are `cs` bytes apart.
///
/// # Safety
/// Tile state granted and configured by [`TileConfig::full`]; `a` and `b`
/// hold `4·kt_n` tiles each; C (32 rows of 32 floats) is readable and
/// writable, and a bias row holds 32 floats.
#[inline(always)]
unsafe fn block(kt_n: usize, a: *const u16, b: *const u16, c: *mut f32, cs: usize, init: Init) {
    let c1 = c.add(16);
    let c2 = c.cast::<u8>().add(16 * cs).cast::<f32>();
    let c3 = c2.add(16);
    match init {
        Init::Load => {
            tile_load!(0, c, cs);
            tile_load!(1, c1, cs);
            tile_load!(2, c2, cs);
            tile_load!(3, c3, cs);
        }
        Init::Zero => asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nomem, nostack)
        ),
        Init::Bias(bias) => {
            // A zero stride loads the same row into all 16.
            tile_load!(0, bias, 0usize);
            tile_load!(1, bias.add(16), 0usize);
            tile_load!(2, bias, 0usize);
            tile_load!(3, bias.add(16), 0usize);
        }
    }
    let row = 64usize;
    let a_lo = a.add(2 * kt_n * TILE);
    let b_lo = b.add(2 * kt_n * TILE);
    for kt in 0..kt_n {
        let o = 2 * kt * TILE;
        tile_load!(4, a.add(o), row);
        tile_load!(5, a.add(o + TILE), row);
        tile_load!(6, b_lo.add(o), row);
        tile_load!(7, b_lo.add(o + TILE), row);
        tile_dot!(0, 4, 6);
        tile_dot!(1, 4, 7);
        tile_dot!(2, 5, 6);
        tile_dot!(3, 5, 7);
        tile_load!(6, b.add(o), row);
        tile_load!(7, b.add(o + TILE), row);
        tile_dot!(0, 4, 6);
        tile_dot!(1, 4, 7);
        tile_dot!(2, 5, 6);
        tile_dot!(3, 5, 7);
        tile_load!(4, a_lo.add(o), row);
        tile_load!(5, a_lo.add(o + TILE), row);
        tile_dot!(0, 4, 6);
        tile_dot!(1, 4, 7);
        tile_dot!(2, 5, 6);
        tile_dot!(3, 5, 7);
    }
    tile_store!(0, c, cs);
    tile_store!(1, c1, cs);
    tile_store!(2, c2, cs);
    tile_store!(3, c3, cs);
}

/// Splits 16 floats into their bf16 `hi` and `lo` terms.
#[inline(always)]
unsafe fn split(x: __m512) -> (__m256i, __m256i) {
    let hi: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(x));
    let hi_f = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(hi)));
    let lo: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_sub_ps(x, hi_f)));
    (hi, lo)
}

/// Two rows of bf16 (16 each) as 16 VNNI pairs: lane `j` holds
/// `first[j]` in its low half and `second[j]` in its high half.
#[inline(always)]
unsafe fn pairs(first: __m256i, second: __m256i) -> __m512i {
    _mm512_or_si512(
        _mm512_cvtepu16_epi32(first),
        _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(second)),
    )
}

/// Two consecutive steps (16 lanes each) as VNNI pairs of their hi terms
/// and of their lo terms.
#[inline(always)]
unsafe fn split_pairs(first: __m512, second: __m512) -> (__m512i, __m512i) {
    let (h0, l0) = split(first);
    let (h1, l1) = split(second);
    (pairs(h0, h1), pairs(l0, l1))
}

/// Transposes a 16×16 matrix of 32-bit lanes in registers (64 shuffles:
/// 32-bit and 64-bit interleaves within 128-bit lanes, then two rounds of
/// 128-bit lane shuffles).
#[inline(always)]
unsafe fn transpose16(r: &mut [__m512i; 16]) {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // u[4i+j], 128-bit lane L: column 4L+j of rows 4i..4i+3.
    let mut u = [_mm512_setzero_si512(); 16];
    for i in 0..4 {
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for j in 0..4 {
        let x01 = _mm512_shuffle_i32x4::<0b01_00_01_00>(u[j], u[4 + j]);
        let x23 = _mm512_shuffle_i32x4::<0b11_10_11_10>(u[j], u[4 + j]);
        let y01 = _mm512_shuffle_i32x4::<0b01_00_01_00>(u[8 + j], u[12 + j]);
        let y23 = _mm512_shuffle_i32x4::<0b11_10_11_10>(u[8 + j], u[12 + j]);
        r[j] = _mm512_shuffle_i32x4::<0b10_00_10_00>(x01, y01);
        r[4 + j] = _mm512_shuffle_i32x4::<0b11_01_11_01>(x01, y01);
        r[8 + j] = _mm512_shuffle_i32x4::<0b10_00_10_00>(x23, y23);
        r[12 + j] = _mm512_shuffle_i32x4::<0b11_01_11_01>(x23, y23);
    }
}

/// Stores 16 rows of 64 bytes at `out`, one tile.
#[inline(always)]
unsafe fn store_tile(out: *mut u16, r: &[__m512i; 16]) {
    for (i, v) in r.iter().enumerate() {
        _mm512_storeu_si512(out.add(i * 32).cast(), *v);
    }
}

/// Packs rows `0..mr` (zero rows up to 32) and steps `0..kc` (zero steps up
/// to `32·kt_n`) of A into hi tiles `[kt][half]` followed by lo tiles.
///
/// # Safety
/// The view is in bounds; `out` holds `4·kt_n` tiles; AVX-512 BF16.
#[inline(always)]
unsafe fn pack_a(
    kt_n: usize,
    mr: usize,
    kc: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    out: *mut u16,
) {
    let lo_out = out.add(2 * kt_n * TILE);
    if csa == 1 {
        // Rows run along memory: 16 steps per load.
        for i in 0..32 {
            let t = (i / 16) * TILE + (i % 16) * 32;
            for kt in 0..kt_n {
                let o = 2 * kt * TILE + t;
                for q in 0..2 {
                    let k0 = kt * 32 + q * 16;
                    let x = if i < mr && k0 < kc {
                        _mm512_maskz_loadu_ps(lanes16(kc - k0), a.add(i * rsa + k0))
                    } else {
                        _mm512_setzero_ps()
                    };
                    let (hi, lo) = split(x);
                    _mm256_storeu_si256(out.add(o + q * 16).cast(), hi);
                    _mm256_storeu_si256(lo_out.add(o + q * 16).cast(), lo);
                }
            }
        }
    } else {
        // General strides: gather 16 rows of one step at a time, then
        // scatter them into the tile rows.
        let mut hi16 = [0u16; 16];
        let mut lo16 = [0u16; 16];
        for half in 0..2 {
            let i0 = half * 16;
            let rows = mr.saturating_sub(i0).min(16);
            for kt in 0..kt_n {
                let o = (2 * kt + half) * TILE;
                for kk in 0..32 {
                    let k = kt * 32 + kk;
                    let mut col = [0f32; 16];
                    if k < kc {
                        for (r, v) in col.iter_mut().enumerate().take(rows) {
                            *v = *a.add((i0 + r) * rsa + k * csa);
                        }
                    }
                    let (hi, lo) = split(_mm512_loadu_ps(col.as_ptr()));
                    _mm256_storeu_si256(hi16.as_mut_ptr().cast(), hi);
                    _mm256_storeu_si256(lo16.as_mut_ptr().cast(), lo);
                    for r in 0..16 {
                        *out.add(o + r * 32 + kk) = hi16[r];
                        *lo_out.add(o + r * 32 + kk) = lo16[r];
                    }
                }
            }
        }
    }
}

/// Packs columns `0..nc` (zero columns up to 32) and steps `0..kc` of a B
/// whose columns are not contiguous into VNNI hi tiles `[kt][half]`
/// followed by lo tiles: tile row `r` holds steps `2r, 2r+1` of each of its
/// 16 columns side by side.
///
/// # Safety
/// The view is in bounds; `out` holds `4·kt_n` tiles; AVX-512 BF16.
#[inline(always)]
unsafe fn pack_b(
    kt_n: usize,
    nc: usize,
    kc: usize,
    b: *const f32,
    rsb: usize,
    csb: usize,
    out: *mut u16,
) {
    let lo_out = out.add(2 * kt_n * TILE);
    // Columns (or nothing) run along memory: 32 steps of one column are 16
    // VNNI pairs, one per tile row; 16 columns transposed are the tile's
    // rows. (A row-major B is packed by `pack_b_block`.)
    for half in 0..2 {
        for kt in 0..kt_n {
            let o = (2 * kt + half) * TILE;
            let k0 = kt * 32;
            let mut hi = [_mm512_setzero_si512(); 16];
            let mut lo = [_mm512_setzero_si512(); 16];
            for jj in 0..16 {
                let j = half * 16 + jj;
                let mut v = [_mm512_setzero_ps(); 2];
                if j < nc && k0 < kc {
                    for (q, vq) in v.iter_mut().enumerate() {
                        let kq = k0 + q * 16;
                        if kq >= kc {
                            break;
                        }
                        *vq = if rsb == 1 {
                            _mm512_maskz_loadu_ps(lanes16(kc - kq), b.add(j * csb + kq))
                        } else {
                            let mut col = [0f32; 16];
                            for (p, x) in col.iter_mut().enumerate().take(kc - kq) {
                                *x = *b.add((kq + p) * rsb + j * csb);
                            }
                            _mm512_loadu_ps(col.as_ptr())
                        };
                    }
                }
                let (h0, l0) = split(v[0]);
                let (h1, l1) = split(v[1]);
                hi[jj] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(h0), h1);
                lo[jj] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(l0), l1);
            }
            transpose16(&mut hi);
            transpose16(&mut lo);
            store_tile(out.add(o), &hi);
            store_tile(lo_out.add(o), &lo);
        }
    }
}

/// Packs steps `0..kc` of all `m` rows of A, panel `p` (rows `32p..`) at
/// `out + p·stride`, as [`pack_a`] lays out one panel.
///
/// A transposed A (`rsa == 1`, the weight gradients' `doutᵀ`) is packed
/// one tile step (32 rows of memory) at a time across all panels, so memory
/// is read row after row; panel by panel, each step would read 64 bytes
/// from each of 32 rows far apart, which the prefetchers do not follow.
///
/// # Safety
/// The view is in bounds; `out` holds the panels; AVX-512 BF16.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_a_block(
    kt_n: usize,
    m: usize,
    kc: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    out: *mut u16,
    stride: usize,
) {
    if rsa != 1 || csa == 1 {
        for (p, ir) in (0..m).step_by(32).enumerate() {
            pack_a(
                kt_n,
                (m - ir).min(32),
                kc,
                a.add(ir * rsa),
                rsa,
                csa,
                out.add(p * stride),
            );
        }
        return;
    }
    // One load is one step of 16 rows; two steps make a vector of 16 pairs
    // (one per row), and 16 such vectors transposed are a tile's rows.
    let groups = m.div_ceil(32) * 2;
    for kt in 0..kt_n {
        for g16 in 0..groups {
            let i0 = g16 * 16;
            let mask = lanes16(m.saturating_sub(i0));
            let o = (g16 / 2) * stride + (2 * kt + g16 % 2) * TILE;
            let mut hi = [_mm512_setzero_si512(); 16];
            let mut lo = [_mm512_setzero_si512(); 16];
            for p in 0..16 {
                let k = kt * 32 + 2 * p;
                let load = |k: usize| {
                    if k < kc && i0 < m {
                        _mm512_maskz_loadu_ps(mask, a.add(i0 + k * csa))
                    } else {
                        _mm512_setzero_ps()
                    }
                };
                (hi[p], lo[p]) = split_pairs(load(k), load(k + 1));
            }
            transpose16(&mut hi);
            transpose16(&mut lo);
            store_tile(out.add(o), &hi);
            store_tile(out.add(o + 2 * kt_n * TILE), &lo);
        }
    }
}

/// Packs columns `0..nc` (in 32-column panels, panel `q` at
/// `out + q·stride`) and steps `0..kc` of B, as [`pack_b`] lays out one
/// panel. A row-major B is read row after row across all panels (see
/// [`pack_a_block`]).
///
/// # Safety
/// The view is in bounds; `out` holds the panels; AVX-512 BF16.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pack_b_block(
    kt_n: usize,
    nc: usize,
    kc: usize,
    b: *const f32,
    rsb: usize,
    csb: usize,
    out: *mut u16,
    stride: usize,
) {
    if csb != 1 {
        for (q, jr) in (0..nc).step_by(32).enumerate() {
            pack_b(
                kt_n,
                (nc - jr).min(32),
                kc,
                b.add(jr * csb),
                rsb,
                csb,
                out.add(q * stride),
            );
        }
        return;
    }
    // Two rows of B make one VNNI row of a tile.
    let groups = nc.div_ceil(32) * 2;
    for kt in 0..kt_n {
        for r in 0..16 {
            let k = kt * 32 + 2 * r;
            for g16 in 0..groups {
                let j0 = g16 * 16;
                let mask = lanes16(nc.saturating_sub(j0));
                let load = |k: usize| {
                    if k < kc && j0 < nc {
                        _mm512_maskz_loadu_ps(mask, b.add(k * rsb + j0))
                    } else {
                        _mm512_setzero_ps()
                    }
                };
                let (hi, lo) = split_pairs(load(k), load(k + 1));
                let o = (g16 / 2) * stride + (2 * kt + g16 % 2) * TILE + r * 32;
                _mm512_storeu_si512(out.add(o).cast(), hi);
                _mm512_storeu_si512(out.add(o + 2 * kt_n * TILE).cast(), lo);
            }
        }
    }
}

/// [`block`] for an `mr×nr` corner of C (or a C with strided columns),
/// through the 32×32 buffer `tmp`.
///
/// # Safety
/// As for [`block`], with C's `mr×nr` view at strides `rsc, csc` instead of
/// 32 full rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn edge_block(
    kt_n: usize,
    a: *const u16,
    b: *const u16,
    c: *mut f32,
    rsc: usize,
    csc: usize,
    mr: usize,
    nr: usize,
    init: Init,
    tmp: &mut [f32; 32 * 32],
) {
    let init = match init {
        Init::Load => {
            for i in 0..32 {
                for j in 0..32 {
                    tmp[i * 32 + j] = if i < mr && j < nr {
                        *c.add(i * rsc + j * csc)
                    } else {
                        0.0
                    };
                }
            }
            Init::Load
        }
        Init::Bias(bias) => {
            for i in 0..32 {
                for j in 0..32 {
                    tmp[i * 32 + j] = if j < nr { *bias.add(j) } else { 0.0 };
                }
            }
            Init::Load
        }
        Init::Zero => Init::Zero,
    };
    block(kt_n, a, b, tmp.as_mut_ptr(), 128, init);
    for i in 0..mr {
        for j in 0..nr {
            *c.add(i * rsc + j * csc) = tmp[i * 32 + j];
        }
    }
}

/// # Safety
/// `g` satisfies the `Args` invariants; the CPU has AVX-512F, AVX-512 BF16,
/// AMX-TILE and AMX-BF16, and [`request_tile_state`] returned true.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
pub(in crate::kernels) unsafe fn sgemm_amx(g: &Args) {
    let kt_max = g.k.min(KCB).div_ceil(32);
    let panels_max = g.n.min(NCB).div_ceil(32);
    // A chunk of up to MC rows of A is packed once, on the first column
    // block, and reused by the others.
    let a_panel = 4 * kt_max * TILE;
    let k_blocks = g.k.div_ceil(KCB);
    let (apack, bpack) = BUFS.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let Bufs { a, b } = &mut *bufs;
        (
            grow(a, 4 * kt_max * k_blocks * g.m.min(MC).div_ceil(32)),
            grow(b, 4 * kt_max * panels_max),
        )
    });
    let cfg = TileConfig::full();
    asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
    // Where a block of C cannot be read and written in place (edges, or a C
    // whose columns are not contiguous) it goes through this buffer.
    let mut tmp = [0f32; 32 * 32];
    let direct = g.csc == 1;
    for ic in (0..g.m).step_by(MC) {
        let mc = (g.m - ic).min(MC);
        for jc in (0..g.n).step_by(NCB) {
            let nc = (g.n - jc).min(NCB);
            for pc in (0..g.k).step_by(KCB) {
                let kc = (g.k - pc).min(KCB);
                let kt_n = kc.div_ceil(32);
                let first = pc == 0;
                let last = pc + kc == g.k;
                let b0 = g.b.add(pc * g.rsb + jc * g.csb);
                pack_b_block(kt_n, nc, kc, b0, g.rsb, g.csb, bpack, 4 * kt_n * TILE);
                let a_block = apack.add((pc / KCB) * a_panel);
                if jc == 0 {
                    let a0 = g.a.add(ic * g.rsa + pc * g.csa);
                    pack_a_block(kt_n, mc, kc, a0, g.rsa, g.csa, a_block, k_blocks * a_panel);
                }
                for ir in (0..mc).step_by(32) {
                    let mr = (mc - ir).min(32);
                    let ap = a_block.add((ir / 32) * k_blocks * a_panel);
                    let row = ic + ir;
                    for (q, jr) in (0..nc).step_by(32).enumerate() {
                        let nr = (nc - jr).min(32);
                        let c = g.c.add(row * g.rsc + (jc + jr) * g.csc);
                        let init = if !first || g.accumulate {
                            Init::Load
                        } else if !g.bias.is_null() {
                            Init::Bias(g.bias.add(jc + jr))
                        } else {
                            Init::Zero
                        };
                        let bp = bpack.add(q * 4 * kt_n * TILE);
                        if direct && mr == 32 && nr == 32 {
                            block(kt_n, ap, bp, c, 4 * g.rsc, init);
                        } else {
                            edge_block(kt_n, ap, bp, c, g.rsc, g.csc, mr, nr, init, &mut tmp);
                        }
                    }
                    if last {
                        g.epilogue
                            .apply(g.ops, g.c, row * g.rsc + jc, mr, nc, g.rsc);
                    }
                }
            }
        }
    }
    asm!("tilerelease", options(nomem, nostack));
}

#[cfg(test)]
mod tests {
    use super::{Bufs, BUFS, KCB, MC};
    use crate::kernels::{KernelChoice, SimdKernels};
    use cllm_core::kernels::{Kernels, Mat, MatMut};

    /// The packing buffers hold what one call needs and no more: A's chunk
    /// of at most `MC` rows and one B block (a size slip here once made
    /// them 512× too large, gigabytes of zeroed memory).
    #[test]
    fn packing_buffers_are_sized_in_tiles() {
        let Ok(kern) = SimdKernels::new(KernelChoice::Amx) else {
            return;
        };
        let (m, k, n) = (MC + 100, KCB + 64, 96);
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let (a, b) = (Mat::row_major(&a, m, k), Mat::row_major(&b, k, n));
        kern.gemm(a, b, MatMut::row_major(&mut c, m, n), false);
        assert_eq!(c[0], 0.125 * k as f32);
        let kt_max = KCB / 32;
        let (a_tiles, b_tiles) = BUFS.with(|b| {
            let b = b.borrow();
            let Bufs { a, b } = &*b;
            (a.len(), b.len())
        });
        assert_eq!(a_tiles, 4 * kt_max * 2 * (MC / 32));
        assert_eq!(b_tiles, 4 * kt_max * 3);
    }
}
