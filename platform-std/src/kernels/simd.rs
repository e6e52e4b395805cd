//! A minimal f32 vector abstraction and the elementwise/row kernels written
//! once over it. `dispatch` instantiates the generic kernels for each ISA
//! inside its own `#[target_feature]` functions (everything here is
//! `#[inline(always)]`, so the intrinsics are inlined into code compiled for
//! that ISA); the scalar path instantiates them with `f32` itself as a
//! one-lane vector. Each kernel checks its slices' shapes (panicking on a
//! mismatch), so its only safety condition is the ISA.

/// An f32 vector of `LANES` lanes.
///
/// # Safety
/// Every method may use instructions of the implementor's ISA: call them
/// only where the CPU supports it. Pointer methods need `LANES` (or `n`)
/// valid floats.
pub(crate) trait Vf32: Copy {
    const LANES: usize;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    unsafe fn div(self, o: Self) -> Self;
    /// `self·b + c`, fused where the ISA has FMA.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// Lane-wise max; a NaN in `o` is returned (so `splat(c).max(x)` keeps a
    /// NaN `x`).
    unsafe fn max(self, o: Self) -> Self;
    /// Lane-wise min with the same NaN rule as `max`.
    unsafe fn min(self, o: Self) -> Self;
    unsafe fn sqrt(self) -> Self;
    unsafe fn abs(self) -> Self;
    /// Lane-wise `if cond > 0 { a } else { b }` (NaN in `cond` picks `b`).
    unsafe fn select_pos(cond: Self, a: Self, b: Self) -> Self;
    /// Round to nearest, ties to even.
    unsafe fn round(self) -> Self;
    /// `self · 2^k` for integral `k` in [-300, 300], correctly rounded
    /// (overflow to ±inf, gradual underflow).
    unsafe fn scale_pow2(self, k: Self) -> Self;
    unsafe fn reduce_add(self) -> f32;
    unsafe fn reduce_max(self) -> f32;

    /// Loads `n < LANES` floats, the other lanes set to `fill`.
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize, fill: f32) -> Self {
        let mut buf = [fill; 16];
        std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
        Self::load(buf.as_ptr())
    }

    /// Stores the first `n < LANES` lanes.
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize) {
        let mut buf = [0.0f32; 16];
        self.store(buf.as_mut_ptr());
        std::ptr::copy_nonoverlapping(buf.as_ptr(), p, n);
    }
}

/// `f32` as a one-lane vector: the scalar path. `mul_add` is not fused here
/// (a software fma would be slow on CPUs without one).
impl Vf32 for f32 {
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        *p
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        *p = self
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        self - o
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        self * o
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        self / o
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        self * b + c
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        if self > o {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    unsafe fn min(self, o: Self) -> Self {
        if self < o {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        f32::abs(self)
    }
    #[inline(always)]
    unsafe fn select_pos(cond: Self, a: Self, b: Self) -> Self {
        if cond > 0.0 {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        self.round_ties_even()
    }
    #[inline(always)]
    unsafe fn scale_pow2(self, k: Self) -> Self {
        let k = k as i32;
        let k1 = k >> 1;
        let pow = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
        self * pow(k1) * pow(k - k1)
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        self
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        self
    }
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `k·LN2_HI` is exact for |k| < 2^15 (Cody–Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `exp(x)`: Cody–Waite reduction `x = k·ln2 + r`, |r| ≤ ln2/2, a degree-7
/// polynomial for `e^r` (Cephes `expf` coefficients), then `·2^k`. Inputs
/// are clamped to [-104, 89], outside which `expf` is 0 resp. inf anyway.
/// Measured ≤ 1 ulp from `libm::expf` (see tests); NaN propagates.
#[inline(always)]
pub(crate) unsafe fn exp_v<V: Vf32>(x: V) -> V {
    let x = V::splat(89.0).min(V::splat(-104.0).max(x));
    let k = x.mul(V::splat(LOG2E)).round();
    let r = k.mul_add(V::splat(-LN2_HI), x);
    let r = k.mul_add(V::splat(-LN2_LO), r);
    let z = r.mul(r);
    let mut p = V::splat(1.987_569_1e-4);
    p = p.mul_add(r, V::splat(1.398_199_9e-3));
    p = p.mul_add(r, V::splat(8.333_452e-3));
    p = p.mul_add(r, V::splat(4.166_579_6e-2));
    p = p.mul_add(r, V::splat(1.666_666_5e-1));
    p = p.mul_add(r, V::splat(0.5));
    let y = p.mul_add(z, r).add(V::splat(1.0));
    y.scale_pow2(k)
}

/// √(2/π) and √(2/π)·0.044715: gelu_new's `u = x·(C0 + C1·x²)`.
const GELU_C0: f32 = 0.797_884_6;
const GELU_C1: f32 = 0.035_677_41;

/// `(t, e^{-|t|})` for GELU's exponent `t = -2u`, `u = x·(C0 + C1·x²)`.
///
/// GELU is `0.5·x·(1 + tanh u) = x·σ(2u) = x / (1 + e^t)`: no tanh, and no
/// cancellation for negative x (where `1 + tanh u` loses all its digits in
/// f32). Evaluating `e^{-|t|}` rather than `e^t` keeps every intermediate
/// finite (the usual stable sigmoid), so tiny results underflow gradually
/// instead of collapsing to 0 when `e^t` overflows.
///
/// Accuracy is limited by rounding `t` to f32 (as in any f32 GELU): the
/// relative error grows like `|t|·2⁻²⁴` where the exponential matters (x < 0).
#[inline(always)]
unsafe fn gelu_exponent<V: Vf32>(x: V) -> (V, V) {
    let t = x
        .mul(x)
        .mul_add(V::splat(-2.0 * GELU_C1), V::splat(-2.0 * GELU_C0))
        .mul(x);
    (t, exp_v(V::splat(0.0).sub(t.abs())))
}

/// gelu(x) = x·σ(2u): `x/(1 + ea)` for t ≤ 0, `x·ea/(1 + ea)` for t > 0.
#[inline(always)]
unsafe fn gelu1<V: Vf32>(x: V) -> V {
    let (t, ea) = gelu_exponent(x);
    gelu_of(x, t, ea)
}

/// [`gelu1`] from [`gelu_exponent`]'s values.
#[inline(always)]
unsafe fn gelu_of<V: Vf32>(x: V, t: V, ea: V) -> V {
    let num = V::select_pos(t, x.mul(ea), x);
    num.div(ea.add(V::splat(1.0)))
}

/// gelu'(x) = s + 2x·s·(1-s)·u'(x) with s = σ(2u). Both s and 1 - s come
/// from `1/(1 + ea)` and `ea/(1 + ea)` (which is which depends on the sign
/// of t), so neither is formed by a cancelling subtraction.
#[inline(always)]
unsafe fn gelu_grad1<V: Vf32>(x: V) -> V {
    let (t, ea) = gelu_exponent(x);
    gelu_grad_of(x, t, ea)
}

/// [`gelu_grad1`] from [`gelu_exponent`]'s values.
#[inline(always)]
unsafe fn gelu_grad_of<V: Vf32>(x: V, t: V, ea: V) -> V {
    let inv = V::splat(1.0).div(ea.add(V::splat(1.0)));
    let small = ea.mul(inv);
    let s = V::select_pos(t, small, inv);
    let one_minus_s = V::select_pos(t, inv, small);
    let du = x.mul(x).mul_add(V::splat(3.0 * GELU_C1), V::splat(GELU_C0));
    let two_x_1ms = x.add(x).mul(one_minus_s);
    s.mul(two_x_1ms.mul_add(du, V::splat(1.0)))
}

/// Applies `f` lane-wise over `n` elements: full vectors, then one partial.
#[inline(always)]
unsafe fn map<V: Vf32>(n: usize, mut f: impl FnMut(usize, Option<usize>)) {
    let full = n - n % V::LANES;
    let mut i = 0;
    while i < full {
        f(i, None);
        i += V::LANES;
    }
    if i < n {
        f(i, Some(n - i));
    }
}

#[inline(always)]
unsafe fn ld<V: Vf32>(p: *const f32, part: Option<usize>, fill: f32) -> V {
    match part {
        None => V::load(p),
        Some(n) => V::load_partial(p, n, fill),
    }
}

#[inline(always)]
unsafe fn st<V: Vf32>(v: V, p: *mut f32, part: Option<usize>) {
    match part {
        None => v.store(p),
        Some(n) => v.store_partial(p, n),
    }
}

/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn exp<V: Vf32>(out: &mut [f32], inp: &[f32]) {
    assert_eq!(out.len(), inp.len(), "exp: length mismatch");
    let (o, x) = (out.as_mut_ptr(), inp.as_ptr());
    map::<V>(
        inp.len(),
        #[inline(always)]
        |i, part| st(exp_v(ld::<V>(x.add(i), part, 0.0)), o.add(i), part),
    );
}

/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn gelu_forward<V: Vf32>(out: &mut [f32], inp: &[f32]) {
    assert_eq!(out.len(), inp.len(), "gelu_forward: length mismatch");
    let (o, x) = (out.as_mut_ptr(), inp.as_ptr());
    map::<V>(
        inp.len(),
        #[inline(always)]
        |i, part| st(gelu1(ld::<V>(x.add(i), part, 0.0)), o.add(i), part),
    );
}

/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn gelu_backward<V: Vf32>(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    assert!(
        dinp.len() == inp.len() && dout.len() == inp.len(),
        "gelu_backward: length mismatch"
    );
    let (d, x, g) = (dinp.as_mut_ptr(), inp.as_ptr(), dout.as_ptr());
    map::<V>(
        inp.len(),
        #[inline(always)]
        |i, part| {
            let grad = gelu_grad1(ld::<V>(x.add(i), part, 0.0));
            st(grad.mul(ld(g.add(i), part, 0.0)), d.add(i), part)
        },
    );
}

/// `out = gelu(x)`, `x = gelu'(x)` from one exponential: the same bits as
/// [`gelu_forward`] and as the factor [`gelu_backward`] applies.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn gelu_forward_grad<V: Vf32>(out: &mut [f32], x: &mut [f32]) {
    assert_eq!(out.len(), x.len(), "gelu_forward_grad: length mismatch");
    let (o, xp) = (out.as_mut_ptr(), x.as_mut_ptr());
    map::<V>(
        x.len(),
        #[inline(always)]
        |i, part| {
            let xv = ld::<V>(xp.add(i), part, 0.0);
            let (t, ea) = gelu_exponent(xv);
            st(gelu_of(xv, t, ea), o.add(i), part);
            st(gelu_grad_of(xv, t, ea), xp.add(i), part)
        },
    );
}

/// Sum of a row: lane-wise partial sums, then the lanes.
#[inline(always)]
unsafe fn row_sum<V: Vf32>(n: usize, mut term: impl FnMut(usize, Option<usize>) -> V) -> f32 {
    let mut acc = V::splat(0.0);
    map::<V>(
        n,
        #[inline(always)]
        |i, part| acc = acc.add(term(i, part)),
    );
    acc.reduce_add()
}

pub(crate) const LN_EPS: f32 = 1e-5;

/// Rows in a `rows × c` buffer, after checking it is whole rows.
fn rows_of(what: &str, len: usize, c: usize) -> usize {
    assert!(c > 0, "{what}: zero-width rows");
    assert_eq!(len % c, 0, "{what}: length {len} is not whole rows of {c}");
    len / c
}

/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn layernorm_forward<V: Vf32>(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
) {
    let c = weight.len();
    let rows = rows_of("layernorm_forward", inp.len(), c);
    assert!(
        bias.len() == c && out.len() == inp.len() && mean.len() == rows && rstd.len() == rows,
        "layernorm_forward: shape mismatch"
    );
    let (w, b) = (weight.as_ptr(), bias.as_ptr());
    for (r, (orow, xrow)) in out.chunks_exact_mut(c).zip(inp.chunks_exact(c)).enumerate() {
        let (o, x) = (orow.as_mut_ptr(), xrow.as_ptr());
        let m = row_sum::<V>(
            c,
            #[inline(always)]
            |i, part| ld(x.add(i), part, 0.0),
        ) / c as f32;
        let mv = V::splat(m);
        // Padding lanes load m so they contribute (m - m)² = 0.
        let var = row_sum::<V>(
            c,
            #[inline(always)]
            |i, part| {
                let d = ld::<V>(x.add(i), part, m).sub(mv);
                d.mul(d)
            },
        ) / c as f32;
        let s = 1.0 / (var + LN_EPS).sqrt();
        let sv = V::splat(s);
        map::<V>(
            c,
            #[inline(always)]
            |i, part| {
                let norm = ld::<V>(x.add(i), part, 0.0).sub(mv).mul(sv);
                let y = norm.mul_add(ld(w.add(i), part, 0.0), ld(b.add(i), part, 0.0));
                st(y, o.add(i), part)
            },
        );
        mean[r] = m;
        rstd[r] = s;
    }
}

/// # Safety
/// The CPU supports `V`'s instruction set.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) unsafe fn layernorm_backward<V: Vf32>(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
) {
    let c = weight.len();
    let n_rows = rows_of("layernorm_backward", inp.len(), c);
    assert!(
        dweight.len() == c
            && dbias.len() == c
            && dinp.len() == inp.len()
            && dout.len() == inp.len()
            && mean.len() == n_rows
            && rstd.len() == n_rows,
        "layernorm_backward: shape mismatch"
    );
    let w = weight.as_ptr();
    let (dw, db) = (dweight.as_mut_ptr(), dbias.as_mut_ptr());
    let rows = dinp
        .chunks_exact_mut(c)
        .zip(dout.chunks_exact(c))
        .zip(inp.chunks_exact(c));
    for (r, ((dxrow, gyrow), xrow)) in rows.enumerate() {
        let (dx, gy, x) = (dxrow.as_mut_ptr(), gyrow.as_ptr(), xrow.as_ptr());
        let (mv, sv) = (V::splat(mean[r]), V::splat(rstd[r]));
        // Closures here would not be `#[inline(always)]` (see `map`).
        #[inline(always)]
        unsafe fn norm<V: Vf32>(x: *const f32, mv: V, sv: V, i: usize, part: Option<usize>) -> V {
            ld::<V>(x.add(i), part, 0.0).sub(mv).mul(sv)
        }
        #[inline(always)]
        unsafe fn dnorm<V: Vf32>(
            w: *const f32,
            gy: *const f32,
            i: usize,
            part: Option<usize>,
        ) -> V {
            ld::<V>(w.add(i), part, 0.0).mul(ld(gy.add(i), part, 0.0))
        }
        let dnorm_mean = row_sum::<V>(
            c,
            #[inline(always)]
            |i, part| dnorm(w, gy, i, part),
        ) / c as f32;
        let dnorm_norm_mean = row_sum::<V>(
            c,
            #[inline(always)]
            |i, part| dnorm::<V>(w, gy, i, part).mul(norm(x, mv, sv, i, part)),
        ) / c as f32;
        let (dm, dnm) = (V::splat(dnorm_mean), V::splat(dnorm_norm_mean));
        map::<V>(
            c,
            #[inline(always)]
            |i, part| {
                let g = ld::<V>(gy.add(i), part, 0.0);
                let n = norm(x, mv, sv, i, part);
                st(ld::<V>(db.add(i), part, 0.0).add(g), db.add(i), part);
                st(n.mul_add(g, ld(dw.add(i), part, 0.0)), dw.add(i), part);
                let dval = dnorm::<V>(w, gy, i, part).sub(dm).sub(n.mul(dnm)).mul(sv);
                st(ld::<V>(dx.add(i), part, 0.0).add(dval), dx.add(i), part);
            },
        );
    }
}

/// `ln Σ exp(x[i])` (max subtracted first); `-∞`/`+∞`/NaN maxima are
/// returned as they are, like the portable kernel.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn logsumexp<V: Vf32>(inp: &[f32]) -> f32 {
    let n = inp.len();
    let x = inp.as_ptr();
    let mut mx = V::splat(f32::NEG_INFINITY);
    map::<V>(
        n,
        #[inline(always)]
        |i, part| mx = mx.max(ld(x.add(i), part, f32::NEG_INFINITY)),
    );
    let m = mx.reduce_max();
    if !m.is_finite() {
        // Also catches a NaN anywhere: `max` keeps the NaN operand.
        return if inp.iter().any(|v| v.is_nan()) {
            f32::NAN
        } else {
            m
        };
    }
    let mv = V::splat(m);
    // Padding lanes load -∞, whose exp is exactly 0.
    let sum = row_sum::<V>(
        n,
        #[inline(always)]
        |i, part| exp_v(ld::<V>(x.add(i), part, f32::NEG_INFINITY).sub(mv)),
    );
    m + sum.ln()
}

/// `row[i] = exp(row[i] − lse)·inv_n` (the caller then subtracts `inv_n` at
/// the target).
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn exp_shift_scale<V: Vf32>(row: &mut [f32], shift: f32, scale: f32) {
    let o = row.as_mut_ptr();
    let (sv, cv) = (V::splat(shift), V::splat(scale));
    map::<V>(
        row.len(),
        #[inline(always)]
        |i, part| {
            let e = exp_v(ld::<V>(o.add(i), part, 0.0).sub(sv)).mul(cv);
            st(e, o.add(i), part)
        },
    );
}

/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn softmax_row<V: Vf32>(out: &mut [f32], inp: &[f32]) {
    assert_eq!(out.len(), inp.len(), "softmax_row: length mismatch");
    if inp.is_empty() {
        return;
    }
    let n = inp.len();
    let (o, x) = (out.as_mut_ptr(), inp.as_ptr());
    let mut mx = V::splat(f32::NEG_INFINITY);
    map::<V>(
        n,
        #[inline(always)]
        |i, part| mx = mx.max(ld(x.add(i), part, f32::NEG_INFINITY)),
    );
    softmax_finish::<V>(o, x, n, mx.reduce_max());
}

/// `row = softmax(row·scale)`, in place: the bits of multiplying by `scale`
/// and then [`softmax_row`], in one call and with no copy of the row.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn scaled_softmax_row<V: Vf32>(row: &mut [f32], scale: f32) {
    if row.is_empty() {
        return;
    }
    let n = row.len();
    let o = row.as_mut_ptr();
    let sv = V::splat(scale);
    let mut mx = V::splat(f32::NEG_INFINITY);
    map::<V>(
        n,
        #[inline(always)]
        |i, part| {
            let xs = ld::<V>(o.add(i), part, 0.0).mul(sv);
            st(xs, o.add(i), part);
            // Padding lanes must not take part in the max.
            mx = mx.max(match part {
                None => xs,
                Some(k) => V::load_partial(o.add(i), k, f32::NEG_INFINITY),
            });
        },
    );
    softmax_finish::<V>(o, o, n, mx.reduce_max());
}

/// [`scaled_softmax_row`] over the causal prefix of each row of a `t×t`
/// head (row `i`: its first `i + 1` entries), exact zeros after it.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn causal_softmax<V: Vf32>(p: &mut [f32], t: usize, scale: f32) {
    assert!(
        p.len() >= t * t,
        "causal_softmax: {} floats for {t}×{t}",
        p.len()
    );
    for i in 0..t {
        let (live, masked) = p[i * t..(i + 1) * t].split_at_mut(i + 1);
        scaled_softmax_row::<V>(live, scale);
        masked.fill(0.0);
    }
}

/// [`softmax_backward_row`] over the causal prefix of each row of a `t×t`
/// head, exact zeros after it.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn causal_softmax_backward<V: Vf32>(
    d: &mut [f32],
    p: &[f32],
    t: usize,
    scale: f32,
) {
    assert!(
        d.len() >= t * t && p.len() >= t * t,
        "causal_softmax_backward: {} and {} floats for {t}×{t}",
        d.len(),
        p.len()
    );
    for i in 0..t {
        let (live, masked) = d[i * t..(i + 1) * t].split_at_mut(i + 1);
        softmax_backward_row::<V>(live, &p[i * t..i * t + i + 1], scale);
        masked.fill(0.0);
    }
}

/// The rest of a softmax once the row maximum `m` is known: `o[i] =
/// exp(x[i] − m) / Σ`. `o` may be `x` (each element is read before it is
/// written).
#[inline(always)]
unsafe fn softmax_finish<V: Vf32>(o: *mut f32, x: *const f32, n: usize, m: f32) {
    let mv = V::splat(m);
    let sum = row_sum::<V>(
        n,
        #[inline(always)]
        |i, part| {
            let e = exp_v(ld::<V>(x.add(i), part, 0.0).sub(mv));
            st(e, o.add(i), part);
            // The padding lanes hold exp(0 - max): mask them out of the sum.
            match part {
                None => e,
                Some(k) => V::load_partial(o.add(i), k, 0.0),
            }
        },
    );
    let inv = V::splat(1.0 / sum);
    map::<V>(
        n,
        #[inline(always)]
        |i, part| st(ld::<V>(o.add(i), part, 0.0).mul(inv), o.add(i), part),
    );
}

/// `out = a + b`.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn add<V: Vf32>(out: &mut [f32], a: &[f32], b: &[f32]) {
    zip_with::<V>(
        "add",
        out,
        a,
        b,
        #[inline(always)]
        |x, y| x.add(y),
    );
}

/// `out = a ∘ b`.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn mul<V: Vf32>(out: &mut [f32], a: &[f32], b: &[f32]) {
    zip_with::<V>(
        "mul",
        out,
        a,
        b,
        #[inline(always)]
        |x, y| x.mul(y),
    );
}

/// `out[i] = op(a[i], b[i])`, a vector at a time (`what` names the caller
/// in the length check).
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn zip_with<V: Vf32>(
    what: &str,
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    op: impl Fn(V, V) -> V,
) {
    assert!(
        out.len() == a.len() && a.len() == b.len(),
        "{what}: lengths {} {} {}",
        out.len(),
        a.len(),
        b.len()
    );
    let (o, x, y) = (out.as_mut_ptr(), a.as_ptr(), b.as_ptr());
    map::<V>(
        out.len(),
        #[inline(always)]
        |i, part| {
            let s = op(ld::<V>(x.add(i), part, 0.0), ld(y.add(i), part, 0.0));
            st(s, o.add(i), part)
        },
    );
}

/// `acc = acc ∘ f` (the bits of [`mul`]: multiplication commutes).
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn mul_in_place<V: Vf32>(acc: &mut [f32], f: &[f32]) {
    assert_eq!(acc.len(), f.len(), "mul_in_place: length mismatch");
    let (o, y) = (acc.as_mut_ptr(), f.as_ptr());
    map::<V>(
        acc.len(),
        #[inline(always)]
        |i, part| {
            let s = ld::<V>(o.add(i), part, 0.0).mul(ld(y.add(i), part, 0.0));
            st(s, o.add(i), part)
        },
    );
}

/// `acc[j] += Σ_r m[r][j]`, each column summed in row order (the portable
/// order, so the same bits). Four vectors of columns at a time go down all
/// the rows in registers: four independent add chains, and `acc` is loaded
/// and stored once.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn add_rows<V: Vf32>(acc: &mut [f32], m: &[f32]) {
    let c = acc.len();
    assert!(
        m.len().is_multiple_of(c),
        "add_rows: {} elements are not whole rows of {c}",
        m.len()
    );
    if c == 0 {
        return;
    }
    const BLOCK: usize = 4;
    let rows = m.len() / c;
    let (a, x) = (acc.as_mut_ptr(), m.as_ptr());
    let mut j = 0;
    while j + BLOCK * V::LANES <= c {
        let mut s = [V::splat(0.0); BLOCK];
        for (q, v) in s.iter_mut().enumerate() {
            *v = V::load(a.add(j + q * V::LANES));
        }
        for r in 0..rows {
            let row = x.add(r * c + j);
            for (q, v) in s.iter_mut().enumerate() {
                *v = v.add(V::load(row.add(q * V::LANES)));
            }
        }
        for (q, v) in s.iter().enumerate() {
            v.store(a.add(j + q * V::LANES));
        }
        j += BLOCK * V::LANES;
    }
    while j < c {
        let part = (c - j < V::LANES).then_some(c - j);
        let mut v = ld::<V>(a.add(j), part, 0.0);
        for r in 0..rows {
            v = v.add(ld(x.add(r * c + j), part, 0.0));
        }
        st(v, a.add(j), part);
        j += V::LANES;
    }
}

/// `d = p ∘ (d − ⟨p, d⟩)·scale`; the dot product in lane-wise partial sums.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn softmax_backward_row<V: Vf32>(d: &mut [f32], p: &[f32], scale: f32) {
    assert_eq!(d.len(), p.len(), "softmax_backward_row: length mismatch");
    let (dp, pp) = (d.as_mut_ptr(), p.as_ptr());
    let n = d.len();
    let dot = row_sum::<V>(
        n,
        #[inline(always)]
        |i, part| ld::<V>(pp.add(i), part, 0.0).mul(ld(dp.add(i), part, 0.0)),
    );
    let (dv, sv) = (V::splat(dot), V::splat(scale));
    map::<V>(
        n,
        #[inline(always)]
        |i, part| {
            let g = ld::<V>(pp.add(i), part, 0.0)
                .mul(ld::<V>(dp.add(i), part, 0.0).sub(dv))
                .mul(sv);
            st(g, dp.add(i), part)
        },
    );
}

/// AdamW hyper-parameters for one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    /// Learning rate of this step (the scheduled value, not the peak).
    pub lr: f32,
    /// First-moment decay `β1`.
    pub beta1: f32,
    /// Second-moment decay `β2`.
    pub beta2: f32,
    /// `ε`, added to `√v̂` so the denominator is never zero.
    pub eps: f32,
    /// Decoupled weight decay `wd` (0 for tensors that are not decayed).
    pub weight_decay: f32,
    /// `1 - beta1^t` for the step number `t ≥ 1`.
    pub bias_correction1: f32,
    /// `1 - beta2^t`.
    pub bias_correction2: f32,
    /// Multiplies every gradient (the clipping factor; 1 for none).
    pub grad_scale: f32,
}

impl AdamW {
    /// Hyper-parameters for step `t` (1-based), bias corrections included.
    pub fn at_step(lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, t: u32) -> Self {
        let t = t.max(1) as i32;
        AdamW {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            bias_correction1: 1.0 - beta1.powi(t),
            bias_correction2: 1.0 - beta2.powi(t),
            grad_scale: 1.0,
        }
    }
}

/// With `g = grad·grad_scale`: `m ← β1·m + (1-β1)·g`, `v ← β2·v + (1-β2)·g²`,
/// `p ← p − lr·(m̂/(√v̂ + ε) + wd·p)` with `m̂ = m/bc1`, `v̂ = v/bc2`.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn adamw<V: Vf32>(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    hp: &AdamW,
) {
    let n = params.len();
    assert!(
        grads.len() == n && m.len() == n && v.len() == n,
        "adamw: length mismatch"
    );
    let (p, g, mp, vp) = (
        params.as_mut_ptr(),
        grads.as_ptr(),
        m.as_mut_ptr(),
        v.as_mut_ptr(),
    );
    let (b1, b2) = (V::splat(hp.beta1), V::splat(hp.beta2));
    let (ob1, ob2) = (V::splat(1.0 - hp.beta1), V::splat(1.0 - hp.beta2));
    let (bc1, bc2) = (V::splat(hp.bias_correction1), V::splat(hp.bias_correction2));
    let (lr, eps, wd) = (V::splat(hp.lr), V::splat(hp.eps), V::splat(hp.weight_decay));
    let scale = V::splat(hp.grad_scale);
    map::<V>(
        params.len(),
        #[inline(always)]
        |i, part| {
            let gi = ld::<V>(g.add(i), part, 0.0).mul(scale);
            let mi = b1.mul_add(ld(mp.add(i), part, 0.0), ob1.mul(gi));
            let vi = b2.mul_add(ld(vp.add(i), part, 0.0), ob2.mul(gi.mul(gi)));
            let pi = ld::<V>(p.add(i), part, 0.0);
            let mhat = mi.div(bc1);
            let vhat = vi.div(bc2);
            let upd = mhat.div(vhat.sqrt().add(eps)).add(wd.mul(pi));
            st(mi, mp.add(i), part);
            st(vi, vp.add(i), part);
            st(pi.sub(lr.mul(upd)), p.add(i), part);
        },
    );
}
