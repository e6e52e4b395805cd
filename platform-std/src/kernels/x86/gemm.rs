//! GEMM micro-kernels for AVX2+FMA (6×16) and AVX-512F (8×32), and their
//! `#[target_feature]` entry points around the shared blocking driver.
//!
//! Shapes: both keep 12 resp. 16 accumulator registers — enough independent
//! FMA chains to cover 4-cycle latency on two FMA ports — and need fewer
//! loads than FMAs per step (AVX-512: 8 broadcasts + 2 loads per 16 FMAs),
//! so they are FMA-bound rather than load-bound.

use super::super::gemm::{drive, pack_panel_t_scalar, Args, MicroKernel, Panels, Tile};
use super::lanes16;
use std::arch::x86_64::*;

pub(in crate::kernels) struct Avx512Kernel;

impl MicroKernel for Avx512Kernel {
    const MR: usize = 8;
    const NR: usize = 32;

    #[inline(always)]
    unsafe fn run(p: Panels, t: Tile) {
        const MR: usize = Avx512Kernel::MR;
        prefetch_c_tile(t.c, t.rsc, t.csc, t.mr, t.nr);
        // Unit row stride (packed panels, transposed views) gets its own
        // loop so the broadcasts use constant displacements.
        // A panel of at most 16 valid columns (the n tail) skips the
        // all-zero upper half of B̃.
        // Long panels prefetch B̃ ahead (+3.6 % on the small model's step,
        // `bench/ab_pair.py`); short ones (attention, k ≤ 64) lost by it.
        let acc = match (p.a_rs == 1, t.nr <= 16, p.kc >= PF_MIN_KC) {
            (true, false, true) => product_512::<MR, 2, true, true>(p),
            (false, false, true) => product_512::<MR, 2, false, true>(p),
            (true, true, true) => product_512::<MR, 1, true, true>(p),
            (false, true, true) => product_512::<MR, 1, false, true>(p),
            (true, false, false) => product_512::<MR, 2, true, false>(p),
            (false, false, false) => product_512::<MR, 2, false, false>(p),
            (true, true, false) => product_512::<MR, 1, true, false>(p),
            (false, true, false) => product_512::<MR, 1, false, false>(p),
        };
        if t.csc == 1 {
            let (m0, m1) = (lanes16(t.nr), lanes16(t.nr.saturating_sub(16)));
            for (i, row) in acc.iter().enumerate().take(t.mr) {
                let p = t.c.add(i * t.rsc);
                let (mut v0, mut v1) = (row[0], row[1]);
                if t.load_c {
                    v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, p), v0);
                    v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, p.add(16)), v1);
                } else if !t.bias.is_null() {
                    v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, t.bias), v0);
                    v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, t.bias.add(16)), v1);
                }
                _mm512_mask_storeu_ps(p, m0, v0);
                _mm512_mask_storeu_ps(p.add(16), m1, v1);
            }
        } else {
            debug_assert!(t.bias.is_null(), "bias epilogue needs a row-major C");
            let mut tmp = [0.0f32; 32];
            for (i, row) in acc.iter().enumerate().take(t.mr) {
                _mm512_storeu_ps(tmp.as_mut_ptr(), row[0]);
                _mm512_storeu_ps(tmp.as_mut_ptr().add(16), row[1]);
                store_row(t.c.add(i * t.rsc), t.csc, &tmp[..t.nr], t.load_c);
            }
        }
    }

    #[inline(always)]
    unsafe fn pack_panel_t(kc: usize, nr: usize, b: *const f32, csb: usize, dst: *mut f32) {
        pack_panel_t_avx::<{ Self::NR }>(kc, nr, b, csb, dst)
    }
}

pub(in crate::kernels) struct Avx2Kernel;

/// `MASK8[8 - n..16 - n]` enables the first `n` of 8 lanes.
static MASK8: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

impl MicroKernel for Avx2Kernel {
    const MR: usize = 6;
    const NR: usize = 16;

    #[inline(always)]
    unsafe fn run(p: Panels, t: Tile) {
        const MR: usize = Avx2Kernel::MR;
        prefetch_c_tile(t.c, t.rsc, t.csc, t.mr, t.nr);
        let acc = match (p.a_rs == 1, t.nr <= 8) {
            (true, false) => product_256::<MR, 2, true>(p),
            (false, false) => product_256::<MR, 2, false>(p),
            (true, true) => product_256::<MR, 1, true>(p),
            (false, true) => product_256::<MR, 1, false>(p),
        };
        if t.csc == 1 && t.nr == 16 {
            // Full tile: plain loads and stores. vmaskmovps stores are
            // microcoded on AMD Zen (several cycles each), which showed at
            // the 12 per tile; the bits are the same either way.
            for (i, row) in acc.iter().enumerate().take(t.mr) {
                let p = t.c.add(i * t.rsc);
                let (mut v0, mut v1) = (row[0], row[1]);
                if t.load_c {
                    v0 = _mm256_add_ps(_mm256_loadu_ps(p), v0);
                    v1 = _mm256_add_ps(_mm256_loadu_ps(p.add(8)), v1);
                } else if !t.bias.is_null() {
                    v0 = _mm256_add_ps(_mm256_loadu_ps(t.bias), v0);
                    v1 = _mm256_add_ps(_mm256_loadu_ps(t.bias.add(8)), v1);
                }
                _mm256_storeu_ps(p, v0);
                _mm256_storeu_ps(p.add(8), v1);
            }
        } else if t.csc == 1 {
            let n0 = t.nr.min(8);
            let n1 = t.nr.saturating_sub(8);
            let m0 = _mm256_loadu_si256(MASK8.as_ptr().add(8 - n0).cast());
            let m1 = _mm256_loadu_si256(MASK8.as_ptr().add(8 - n1).cast());
            for (i, row) in acc.iter().enumerate().take(t.mr) {
                let p = t.c.add(i * t.rsc);
                let (mut v0, mut v1) = (row[0], row[1]);
                if t.load_c {
                    v0 = _mm256_add_ps(_mm256_maskload_ps(p, m0), v0);
                    v1 = _mm256_add_ps(_mm256_maskload_ps(p.add(8), m1), v1);
                } else if !t.bias.is_null() {
                    v0 = _mm256_add_ps(_mm256_maskload_ps(t.bias, m0), v0);
                    v1 = _mm256_add_ps(_mm256_maskload_ps(t.bias.add(8), m1), v1);
                }
                _mm256_maskstore_ps(p, m0, v0);
                _mm256_maskstore_ps(p.add(8), m1, v1);
            }
        } else {
            debug_assert!(t.bias.is_null(), "bias epilogue needs a row-major C");
            let mut tmp = [0.0f32; 16];
            for (i, row) in acc.iter().enumerate().take(t.mr) {
                _mm256_storeu_ps(tmp.as_mut_ptr(), row[0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), row[1]);
                store_row(t.c.add(i * t.rsc), t.csc, &tmp[..t.nr], t.load_c);
            }
        }
    }

    #[inline(always)]
    unsafe fn pack_panel_t(kc: usize, nr: usize, b: *const f32, csb: usize, dst: *mut f32) {
        pack_panel_t_avx::<{ Self::NR }>(kc, nr, b, csb, dst)
    }
}

/// B̃ rows ahead that the AVX-512 kernel prefetches into L1.
const PF: usize = 8;
/// Shortest panel (reduction steps) the AVX-512 kernel prefetches for.
const PF_MIN_KC: usize = 128;

/// The MR×32 register tile of `A·B̃` over `kc` steps (A at
/// `a + i*a_rs + p*a_cs`; `UNIT_RS` promises `a_rs == 1`; row `p` of B̃ at
/// `b + p*b_rs`), computing only
/// the first `H` (1 or 2) vectors of 16 columns; the rest stay zero.
/// `PREFETCH` asks for the B̃ rows [`PF`] steps ahead (prefetches never
/// fault, so the last steps' reach past the panel is harmless).
#[inline(always)]
unsafe fn product_512<
    const MR: usize,
    const H: usize,
    const UNIT_RS: bool,
    const PREFETCH: bool,
>(
    p: Panels,
) -> [[__m512; 2]; MR] {
    let (kc, a_rs, a_cs, b_rs) = (p.kc, p.a_rs, p.a_cs, p.b_rs);
    let (a, mut b) = (p.a, p.b);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    if UNIT_RS || a_cs != 1 {
        let mut a = a;
        for _ in 0..kc {
            if PREFETCH {
                _mm_prefetch::<_MM_HINT_T0>(b.add(PF * b_rs) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(b.add(PF * b_rs + 16) as *const i8);
            }
            let bv = [_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16 * (H - 1)))];
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(if UNIT_RS { i } else { i * a_rs }));
                for h in 0..H {
                    row[h] = _mm512_fmadd_ps(ai, bv[h], row[h]);
                }
            }
            a = a.add(a_cs);
            b = b.add(b_rs);
        }
    } else {
        // A read in place (unit column stride): one base register per row
        // and a shared step index, so each broadcast is one base+index
        // load. `black_box` hides that the rows are evenly spaced; knowing
        // it, the compiler walks a single pointer down them instead, an
        // extra add per broadcast in a loop that is issue-bound.
        let rows: [*const f32; MR] = std::array::from_fn(|i| a.add(i * a_rs));
        let rows = std::hint::black_box(rows);
        for off in 0..kc {
            if PREFETCH {
                _mm_prefetch::<_MM_HINT_T0>(b.add(PF * b_rs) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(b.add(PF * b_rs + 16) as *const i8);
            }
            let bv = [_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16 * (H - 1)))];
            for (row, r) in acc.iter_mut().zip(rows) {
                let ai = _mm512_set1_ps(*r.add(off));
                for h in 0..H {
                    row[h] = _mm512_fmadd_ps(ai, bv[h], row[h]);
                }
            }
            b = b.add(b_rs);
        }
    }
    acc
}

/// The MR×16 register tile, as [`product_512`] with vectors of 8.
#[inline(always)]
unsafe fn product_256<const MR: usize, const H: usize, const UNIT_RS: bool>(
    p: Panels,
) -> [[__m256; 2]; MR] {
    let (kc, a_rs, a_cs, b_rs) = (p.kc, p.a_rs, p.a_cs, p.b_rs);
    let (a, mut b) = (p.a, p.b);
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    if UNIT_RS || a_cs != 1 {
        let mut a = a;
        for _ in 0..kc {
            let bv = [_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8 * (H - 1)))];
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.add(if UNIT_RS { i } else { i * a_rs }));
                for h in 0..H {
                    row[h] = _mm256_fmadd_ps(ai, bv[h], row[h]);
                }
            }
            a = a.add(a_cs);
            b = b.add(b_rs);
        }
    } else {
        // One base register per row, as in `product_512`.
        let rows: [*const f32; MR] = std::array::from_fn(|i| a.add(i * a_rs));
        let rows = std::hint::black_box(rows);
        for off in 0..kc {
            let bv = [_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8 * (H - 1)))];
            for (row, r) in acc.iter_mut().zip(rows) {
                let ai = _mm256_broadcast_ss(&*r.add(off));
                for h in 0..H {
                    row[h] = _mm256_fmadd_ps(ai, bv[h], row[h]);
                }
            }
            b = b.add(b_rs);
        }
    }
    acc
}

/// [`MicroKernel::pack_panel_t`] with 8×8 in-register transposes (AVX):
/// eight columns of B are read along p, eight floats at a time, and written
/// as eight panel rows; the edges fall back to scalar copies.
///
/// # Safety
/// As for `pack_panel_t`, and the CPU has AVX.
#[inline(always)]
unsafe fn pack_panel_t_avx<const NR: usize>(
    kc: usize,
    nr: usize,
    b: *const f32,
    csb: usize,
    dst: *mut f32,
) {
    let (kc8, nr8) = (kc - kc % 8, nr - nr % 8);
    for j in (0..nr8).step_by(8) {
        let src = b.add(j * csb);
        for p in (0..kc8).step_by(8) {
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * csb + p)));
            for (q, v) in transpose8(r).into_iter().enumerate() {
                _mm256_storeu_ps(dst.add((p + q) * NR + j), v);
            }
        }
    }
    // Steps past the last multiple of 8, for the transposed columns.
    pack_panel_t_scalar_cols(NR, kc8, kc, 0, nr8, b, csb, dst);
    // Remaining columns (and the zero padding) for every step.
    pack_panel_t_scalar(NR, 0, kc, nr8, nr, b, csb, dst);
}

/// Columns `j0..j1` (all valid) over steps `p0..kc`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pack_panel_t_scalar_cols(
    nr_full: usize,
    p0: usize,
    kc: usize,
    j0: usize,
    j1: usize,
    b: *const f32,
    csb: usize,
    dst: *mut f32,
) {
    for j in j0..j1 {
        let src = b.add(j * csb);
        for p in p0..kc {
            *dst.add(p * nr_full + j) = *src.add(p);
        }
    }
}

/// Transposes an 8×8 block held as eight rows.
#[inline(always)]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// Starts loading the C tile into L1 before the k loop. The tile is read (or
/// written) only after the loop, in program order, too far ahead for
/// out-of-order execution to overlap: when C sits in L3 — a weight
/// gradient accumulated over several KC blocks, a large activation — each
/// tile would otherwise stall on a dozen cache misses at the end of every
/// call.
#[inline(always)]
unsafe fn prefetch_c_tile(c: *mut f32, rsc: usize, csc: usize, mr: usize, nr: usize) {
    if csc != 1 {
        return;
    }
    let last = nr - 1;
    for i in 0..mr {
        let row = c.add(i * rsc);
        _mm_prefetch::<_MM_HINT_T0>(row.cast());
        _mm_prefetch::<_MM_HINT_T0>(row.add(last).cast());
    }
}

/// Writes (or adds) one tile row into a strided C row.
#[inline(always)]
unsafe fn store_row(c: *mut f32, csc: usize, vals: &[f32], load_c: bool) {
    for (j, &v) in vals.iter().enumerate() {
        let p = c.add(j * csc);
        *p = if load_c { *p + v } else { v };
    }
}

/// # Safety
/// `g` satisfies the `Args` invariants and the CPU has AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(in crate::kernels) unsafe fn sgemm_avx512(g: &Args) {
    drive::<Avx512Kernel>(g)
}

/// # Safety
/// `g` satisfies the `Args` invariants and the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(in crate::kernels) unsafe fn sgemm_avx2(g: &Args) {
    drive::<Avx2Kernel>(g)
}
