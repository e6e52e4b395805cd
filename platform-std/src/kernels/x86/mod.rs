//! x86-64 back ends: the `Vf32` vectors for AVX2+FMA (`__m256`) and AVX-512F
//! (`__m512`), which `dispatch` instantiates the generic kernels with, and
//! the GEMM micro-kernels.

pub(in crate::kernels) mod amx;
pub(in crate::kernels) mod gemm;

use super::simd::Vf32;
use std::arch::x86_64::*;

#[derive(Clone, Copy)]
pub(in crate::kernels) struct V256(__m256);

impl Vf32 for V256 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        V256(_mm256_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        V256(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        V256(_mm256_add_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        V256(_mm256_sub_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        V256(_mm256_mul_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        V256(_mm256_div_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        V256(_mm256_fmadd_ps(self.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        V256(_mm256_max_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn min(self, o: Self) -> Self {
        V256(_mm256_min_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        V256(_mm256_sqrt_ps(self.0))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        V256(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0))
    }
    #[inline(always)]
    unsafe fn select_pos(cond: Self, a: Self, b: Self) -> Self {
        let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(cond.0, _mm256_setzero_ps());
        V256(_mm256_blendv_ps(b.0, a.0, pos))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        V256(_mm256_round_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(self.0))
    }
    #[inline(always)]
    unsafe fn scale_pow2(self, k: Self) -> Self {
        // Two factors 2^k1·2^k2, each a normal number, so results that are
        // subnormal or overflow round once, in the last multiply.
        let k = _mm256_cvtps_epi32(k.0);
        let k1 = _mm256_srai_epi32::<1>(k);
        let k2 = _mm256_sub_epi32(k, k1);
        let bias = _mm256_set1_epi32(127);
        let p1 = _mm256_slli_epi32::<23>(_mm256_add_epi32(k1, bias));
        let p2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(k2, bias));
        let y = _mm256_mul_ps(self.0, _mm256_castsi256_ps(p1));
        V256(_mm256_mul_ps(y, _mm256_castsi256_ps(p2)))
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        let s = _mm_add_ps(
            _mm256_castps256_ps128(self.0),
            _mm256_extractf128_ps::<1>(self.0),
        );
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        let s = _mm_max_ps(
            _mm256_castps256_ps128(self.0),
            _mm256_extractf128_ps::<1>(self.0),
        );
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize, fill: f32) -> Self {
        // vmaskmovps does not touch masked-off lanes, so this never reads
        // past n; faster than a trip through a stack buffer.
        let mask = lanes8(n);
        let v = _mm256_maskload_ps(p, mask);
        V256(_mm256_blendv_ps(
            _mm256_set1_ps(fill),
            v,
            _mm256_castsi256_ps(mask),
        ))
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize) {
        _mm256_maskstore_ps(p, lanes8(n), self.0)
    }
}

/// Integer lane mask enabling the first `n ≤ 8` of 8 lanes.
#[inline(always)]
unsafe fn lanes8(n: usize) -> __m256i {
    static MASK8: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
    _mm256_loadu_si256(MASK8.as_ptr().add(8 - n).cast())
}

/// Mask of the first `n` of 16 lanes (all of them from 16 on).
#[inline(always)]
pub(in crate::kernels) fn lanes16(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        (1u16 << n) - 1
    }
}

#[derive(Clone, Copy)]
pub(in crate::kernels) struct V512(__m512);

impl Vf32 for V512 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        V512(_mm512_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        V512(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        V512(_mm512_add_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        V512(_mm512_sub_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        V512(_mm512_mul_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        V512(_mm512_div_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        V512(_mm512_fmadd_ps(self.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        V512(_mm512_max_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn min(self, o: Self) -> Self {
        V512(_mm512_min_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        V512(_mm512_sqrt_ps(self.0))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        V512(_mm512_abs_ps(self.0))
    }
    #[inline(always)]
    unsafe fn select_pos(cond: Self, a: Self, b: Self) -> Self {
        let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(cond.0, _mm512_setzero_ps());
        V512(_mm512_mask_blend_ps(pos, b.0, a.0))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        V512(_mm512_roundscale_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(self.0))
    }
    #[inline(always)]
    unsafe fn scale_pow2(self, k: Self) -> Self {
        // vscalefps: x·2^k with correct rounding, overflow and underflow.
        V512(_mm512_scalef_ps(self.0, k.0))
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        let lo = _mm512_castps512_ps256(self.0);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0)));
        V256(_mm256_add_ps(lo, hi)).reduce_add()
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        let lo = _mm512_castps512_ps256(self.0);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0)));
        V256(_mm256_max_ps(lo, hi)).reduce_max()
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize, fill: f32) -> Self {
        // Masked-off lanes are not read, so this never touches memory past n.
        let mask = ((1u32 << n) - 1) as __mmask16;
        V512(_mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask, p))
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize) {
        let mask = ((1u32 << n) - 1) as __mmask16;
        _mm512_mask_storeu_ps(p, mask, self.0)
    }
}
