//! Associative accumulators under arbitrary `f32` streams and tree shapes.
//!
//! One input is a stream of unit gradients (`units × params` values from raw
//! bits, so NaN, infinities and subnormals all occur), a tree shape, and an
//! assignment of units to threads. For [`FixedAcc`] and [`ExactAcc`] three
//! reductions are compared:
//!
//! * (a) sequential: `reduce::accumulate_sequential`, units in order;
//! * (b) tree: each leaf adds its units (`Shape::sphere_units`), spheres
//!   merge their non-empty children in child order, the root is rounded;
//! * (c) threads: each thread adds the units assigned to it in a shuffled
//!   order (work stealing), then the thread buffers are merged in an
//!   arbitrary order through `merge_owned_segments` / `round_owned_segments`
//!   with arbitrary segment lengths (the executor's code path).
//!
//! Every result is checked against an independent big-integer reference
//! (values are scaled through `f64`, not decoded from their bits as the
//! accumulators do, and rounded to `f32` with `BigUint` shifts).

#![no_main]

use std::num::NonZeroUsize;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use cllm_core::accumulate::{AccError, AccErrorKind, Accumulator, ExactAcc, FixedAcc};
use cllm_core::reduce::{
    accumulate_sequential, merge_owned_segments, round_owned_segments, ReduceError, Segments,
    SharedSlice,
};
use cllm_core::tree::{Shape, MAX_BRANCHING};
use libfuzzer_sys::fuzz_target;
use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{FromPrimitive, One, Signed, ToPrimitive, Zero};

/// Small caps keep one execution in the tens of microseconds.
const MAX_UNITS: usize = 64;
const MAX_PARAMS: usize = 4;
const MAX_THREADS: usize = 4;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    depth: u8,
    branching: u8,
    units: u8,
    params: u8,
    frac_bits: u8,
    threads: u8,
    thread_of: [u8; 8],
    order_seed: u64,
    merge_order: u8,
    segment_len: u8,
    /// Squeeze every exponent into `base .. base + width`: values of similar
    /// magnitude give carries, cancellation and rounding ties, which raw
    /// random bits (exponents 2^±100 apart) almost never do.
    exponent_window: Option<(u8, u8)>,
    /// The values' bits, 4 bytes each, little-endian (cycled when short).
    bits: &'a [u8],
}

/// Everything derived from an [`Input`] that the reductions share.
struct Case {
    shape: Shape,
    units: usize,
    params: usize,
    /// Unit `u`'s gradient is `grads[u * params..][..params]`.
    grads: Vec<f32>,
    threads: usize,
    /// The thread that accumulates unit `u`.
    thread_of: Vec<usize>,
    /// The order in which units are handed to threads.
    unit_order: Vec<usize>,
    /// The order in which thread buffers are merged (first = destination).
    merge_order: Vec<usize>,
    segments: Segments,
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `k`-th permutation of `0..n` (Lehmer code), so one byte picks any
/// of the 24 merge orders of four threads.
fn nth_permutation(n: usize, mut k: usize) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..n).collect();
    let mut out = Vec::with_capacity(n);
    for i in (1..=n).rev() {
        let fact: usize = (1..i).product();
        out.push(pool.remove(k / fact % i));
        k %= fact;
    }
    out
}

impl Case {
    fn new(input: &Input<'_>) -> Case {
        let depth = u32::from(input.depth % 4);
        let branching = u32::from(input.branching) % MAX_BRANCHING + 1;
        let shape = Shape::new(depth, branching).expect("depth <= 3 always fits");
        let units = usize::from(input.units) % (MAX_UNITS + 1);
        let params = usize::from(input.params) % MAX_PARAMS + 1;
        let raw: Vec<u32> = input
            .bits
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let grads = (0..units * params)
            .map(|i| {
                let Some(&b) = raw.get(i % raw.len().max(1)) else {
                    return 0.0;
                };
                match input.exponent_window {
                    None => f32::from_bits(b),
                    Some((base, width)) => {
                        let e = (u32::from(base) + ((b >> 23) & 0xff) % (u32::from(width % 8) + 1))
                            .min(0xff);
                        f32::from_bits((b & 0x807f_ffff) | (e << 23))
                    }
                }
            })
            .collect();
        let threads = usize::from(input.threads) % MAX_THREADS + 1;
        let thread_of = (0..units)
            .map(|u| usize::from(input.thread_of[u % 8]) % threads)
            .collect();
        let mut unit_order: Vec<usize> = (0..units).collect();
        unit_order.sort_by_key(|&u| mix64(input.order_seed ^ u as u64));
        let merge_order = nth_permutation(threads, usize::from(input.merge_order));
        let seg_len = NonZeroUsize::new(usize::from(input.segment_len) % params + 1).unwrap();
        Case {
            shape,
            units,
            params,
            grads,
            threads,
            thread_of,
            unit_order,
            merge_order,
            segments: Segments::with_segment_len(params, seg_len),
        }
    }

    fn unit(&self, u: usize) -> &[f32] {
        &self.grads[u * self.params..][..self.params]
    }
}

/// A reduction's result: the bits of the rounded gradient, or the error.
type Outcome = Result<Vec<u32>, AccError>;

fn bits(xs: &[f32]) -> Vec<u32> {
    xs.iter().map(|x| x.to_bits()).collect()
}

/// The reduction functions must only fail through the accumulator here: the
/// buffers are sized correctly, so any other error is a bug.
fn acc_err(e: ReduceError) -> AccError {
    match e {
        ReduceError::Acc(a) => a,
        other => panic!("unexpected reduction error {other:?}"),
    }
}

/// (a) Every unit into one accumulator, in unit order.
fn sequential<A: Accumulator>(acc: &A, case: &Case) -> Outcome
where
    A::Cell: Clone,
{
    let p = case.params;
    let mut cells = vec![acc.zero_cell(); p];
    let mut scratch = vec![0.0f32; p];
    let mut out = vec![0.0f32; p];
    accumulate_sequential(
        acc,
        case.units,
        &mut cells,
        &mut scratch,
        &mut out,
        |u, g| g.copy_from_slice(case.unit(u)),
    )
    .map_err(acc_err)?;
    Ok(bits(&out))
}

/// The value of sphere `id` (`None` when its subtree has no unit): a leaf
/// adds its units in order, an internal sphere starts from its first
/// non-empty child and merges the others in child order.
fn sphere_value<A: Accumulator>(
    acc: &A,
    case: &Case,
    id: u32,
) -> Result<Option<Vec<A::Cell>>, AccError>
where
    A::Cell: Clone,
{
    let shape = case.shape;
    let units = shape.sphere_units(id, case.units);
    if units.is_empty() {
        return Ok(None);
    }
    if shape.is_leaf(id) {
        let mut cells = vec![acc.zero_cell(); case.params];
        for u in units {
            acc.add(&mut cells, case.unit(u))?;
        }
        return Ok(Some(cells));
    }
    let mut value: Option<Vec<A::Cell>> = None;
    for child in shape.children(id) {
        if let Some(v) = sphere_value(acc, case, child)? {
            match &mut value {
                None => value = Some(v),
                Some(dst) => acc.merge(dst, &v)?,
            }
        }
    }
    Ok(value)
}

/// (b) Per-leaf accumulation merged up the tree in tree order.
fn tree<A: Accumulator>(acc: &A, case: &Case) -> Outcome
where
    A::Cell: Clone,
{
    let mut out = vec![0.0f32; case.params];
    match sphere_value(acc, case, 0)? {
        Some(root) => acc.round(&root, &mut out)?,
        // No units: the reduced gradient is zero, as for the other paths.
        None => acc.round(&vec![acc.zero_cell(); case.params], &mut out)?,
    }
    Ok(bits(&out))
}

/// (c) Thread-local accumulators filled in a shuffled unit order, merged
/// and rounded segment by segment in an arbitrary buffer order.
fn threaded<A: Accumulator>(acc: &A, case: &Case) -> Outcome
where
    A::Cell: Clone,
{
    let p = case.params;
    let mut bufs: Vec<Vec<A::Cell>> = (0..case.threads)
        .map(|_| vec![acc.zero_cell(); p])
        .collect();
    for &u in &case.unit_order {
        acc.add(&mut bufs[case.thread_of[u]], case.unit(u))?;
    }
    let mut ordered: Vec<Vec<A::Cell>> = Vec::with_capacity(case.threads);
    for &t in &case.merge_order {
        ordered.push(std::mem::take(&mut bufs[t]));
    }
    let (dst, rest) = ordered.split_first_mut().expect("at least one thread");
    let dst = SharedSlice::new(dst);
    let srcs: Vec<SharedSlice<'_, A::Cell>> =
        rest.iter_mut().map(|s| SharedSlice::new(s)).collect();
    let n = case.threads;
    for part in 0..n {
        // SAFETY: one thread plays every participant in turn, so nothing
        // else touches any buffer during a call.
        unsafe { merge_owned_segments(acc, &case.segments, part, n, &dst, &srcs) }
            .map_err(acc_err)?;
    }
    let mut out = vec![0.0f32; p];
    {
        let out_s = SharedSlice::new(&mut out);
        for part in 0..n {
            // SAFETY: as above.
            unsafe { round_owned_segments(acc, &case.segments, part, n, &dst, &out_s) }
                .map_err(acc_err)?;
        }
    }
    Ok(bits(&out))
}

// ---------------------------------------------------------------------------
// Reference arithmetic
// ---------------------------------------------------------------------------

/// `2^e` as an `f64`, for `e` in the normal range (exact by construction).
fn pow2(e: i64) -> f64 {
    assert!((-1022..=1023).contains(&e));
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// A finite `x` as an exact integer count of `2^-149` (the smallest `f32`
/// subnormal); `None` for NaN and infinities. Goes through `f64`: `x · 2^149`
/// is an integer below `2^277` with at most 24 significant bits, so the
/// product is exact, and `BigInt::from_f64` is exact on integers.
fn units_of(x: f32) -> Option<BigInt> {
    if !x.is_finite() {
        return None;
    }
    let scaled = f64::from(x) * pow2(149);
    assert_eq!(
        scaled.fract(),
        0.0,
        "reference: {x:e} · 2^149 is not an integer"
    );
    Some(BigInt::from_f64(scaled).expect("finite"))
}

/// `n / 2^shift` rounded to the nearest integer, ties to even.
fn shr_round_even(n: &BigUint, shift: u64) -> BigUint {
    if shift == 0 {
        return n.clone();
    }
    let kept = n >> shift;
    let rem = n - (&kept << shift);
    let half = BigUint::one() << (shift - 1);
    match rem.cmp(&half) {
        std::cmp::Ordering::Less => kept,
        std::cmp::Ordering::Greater => kept + 1u32,
        std::cmp::Ordering::Equal if kept.bit(0) => kept + 1u32,
        std::cmp::Ordering::Equal => kept,
    }
}

/// `n · 2^exp` rounded to the nearest `f32`, ties to even; `None` when the
/// rounded magnitude is `2^128` or more (it would be an infinity). Zero is
/// `+0.0` (an exact register has no sign of zero).
fn ref_round(n: &BigInt, exp: i64) -> Option<f32> {
    if n.is_zero() {
        return Some(0.0);
    }
    let a = n.magnitude();
    let top = exp + a.bits() as i64 - 1; // exponent of the leading bit
    let q = (top - 23).max(-149); // exponent of the result's last bit
    let m = if q <= exp {
        // Fewer than 24 significant bits: exact.
        a << (exp - q) as u64
    } else {
        shr_round_even(a, (q - exp) as u64)
    };
    let m = m.to_u64().expect("at most 2^24 after rounding");
    let m_top = q + (64 - m.leading_zeros() as i64) - 1;
    if m_top >= 128 {
        return None;
    }
    // m < 2^25 and -149 <= q <= 127: the product is exact in f64 and the
    // value is on the f32 grid, so the conversion is exact too.
    let v = m as f64 * pow2(q);
    let f = v as f32;
    assert_eq!(f64::from(f), v, "reference rounding is not exact");
    Some(if n.sign() == Sign::Minus { -f } else { f })
}

/// `x · 2^frac_bits` rounded to the nearest integer, ties to even, as an
/// `i64` (what a fixed-point cell holds).
fn ref_fixed_cell(x: f32, frac_bits: u32) -> Result<i64, AccErrorKind> {
    let n = units_of(x).ok_or(AccErrorKind::NonFinite)?;
    let mag = shr_round_even(n.magnitude(), u64::from(149 - frac_bits));
    let cell = BigInt::from_biguint(
        if n.is_negative() {
            Sign::Minus
        } else {
            Sign::Plus
        },
        mag,
    );
    cell.to_i64().ok_or(AccErrorKind::Overflow)
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

const METHODS: [&str; 3] = ["sequential", "tree", "threaded"];

fn run_all<A: Accumulator>(acc: &A, case: &Case) -> [Outcome; 3]
where
    A::Cell: Clone,
{
    [sequential(acc, case), tree(acc, case), threaded(acc, case)]
}

/// Index (within a unit) of the first non-finite value in unit order.
fn first_non_finite(case: &Case) -> Option<usize> {
    case.grads
        .iter()
        .position(|x| !x.is_finite())
        .map(|i| i % case.params)
}

fn non_finite_at(case: &Case, e: usize) -> bool {
    (0..case.units).any(|u| !case.unit(u)[e].is_finite())
}

fn check_exact(case: &Case) {
    let p = case.params;
    let mut sums = vec![BigInt::zero(); p];
    for u in 0..case.units {
        for (s, &x) in sums.iter_mut().zip(case.unit(u)) {
            if let Some(n) = units_of(x) {
                *s += n;
            }
        }
    }
    let rounded: Vec<Option<f32>> = sums.iter().map(|s| ref_round(s, -149)).collect();
    // 256 terms cannot reach the 2^319 register limit, so the only errors
    // are a non-finite input (seen by every path before rounding) and a sum
    // that rounds beyond f32::MAX.
    let expected: Result<Vec<u32>, AccErrorKind> = if first_non_finite(case).is_some() {
        Err(AccErrorKind::NonFinite)
    } else if rounded.iter().any(Option::is_none) {
        Err(AccErrorKind::Overflow)
    } else {
        Ok(rounded.iter().map(|r| r.unwrap().to_bits()).collect())
    };
    let outcomes = run_all(&ExactAcc, case);
    for (method, got) in METHODS.iter().zip(&outcomes) {
        match (got, &expected) {
            (Ok(g), Ok(want)) => assert_eq!(g, want, "exact/{method}: wrong bits"),
            (Err(e), Err(kind)) => {
                assert_eq!(e.kind, *kind, "exact/{method}: wrong error {e:?}");
                assert!(
                    e.index < p,
                    "exact/{method}: error index {e:?} out of range"
                );
                match kind {
                    AccErrorKind::NonFinite => assert!(
                        non_finite_at(case, e.index),
                        "exact/{method}: {e:?} names a finite element"
                    ),
                    _ => assert!(
                        rounded[e.index].is_none(),
                        "exact/{method}: {e:?} names an element that fits"
                    ),
                }
            }
            _ => panic!("exact/{method}: got {got:?}, expected {expected:?}"),
        }
    }
    // Paths (a) and (b) add units in unit order and round the whole slice,
    // so they must report the first offending element.
    let first = match expected {
        Ok(_) => None,
        Err(AccErrorKind::NonFinite) => first_non_finite(case),
        Err(_) => rounded.iter().position(Option::is_none),
    };
    for (method, got) in METHODS.iter().zip(&outcomes).take(2) {
        assert_eq!(
            got.as_ref().err().map(|e| e.index),
            first,
            "exact/{method}: not the first offending element"
        );
    }
}

/// Opt-in (`CLLM_FUZZ_STRICT_FIXED=1`): also require the same error/no
/// error outcome where only some orders overflow an intermediate `i64`
/// sum. `FixedAcc` uses checked `i64` additions, so today that outcome
/// depends on the order (see fuzz/regressions/README.md).
fn strict_fixed() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("CLLM_FUZZ_STRICT_FIXED").is_some_and(|v| v == "1"))
}

fn check_fixed(case: &Case, frac_bits: u32) {
    let acc = FixedAcc::new(frac_bits).expect("frac_bits <= 149");
    let p = case.params;
    // Conversion of every input against the reference: this is the only
    // place a fixed-point accumulator rounds an input.
    let mut cells: Vec<Result<i64, AccErrorKind>> = Vec::with_capacity(case.grads.len());
    for &x in &case.grads {
        let want = ref_fixed_cell(x, frac_bits);
        let got = acc.to_cell(x).map_err(|e| e.kind);
        assert_eq!(
            got,
            want,
            "fixed({frac_bits}).to_cell({x:e} = {:#010x})",
            x.to_bits()
        );
        cells.push(want);
    }
    let conversion_fails = cells.iter().any(Result::is_err);
    let conversion_overflows = cells.contains(&Err(AccErrorKind::Overflow));
    let mut totals = vec![0i128; p];
    let mut magnitudes = vec![0u128; p];
    for (i, c) in cells.iter().enumerate() {
        if let Ok(c) = c {
            totals[i % p] += i128::from(*c);
            magnitudes[i % p] += u128::from(c.unsigned_abs());
        }
    }
    let total_fits = totals.iter().all(|&t| i64::try_from(t).is_ok());
    // When the magnitudes sum below 2^63 no grouping can overflow an
    // intermediate sum, so every order must succeed.
    let no_partial_overflow = magnitudes.iter().all(|&m| m <= i64::MAX as u128);
    let expected: Vec<u32> = totals
        .iter()
        .map(|&t| {
            ref_round(&BigInt::from(t), -i64::from(frac_bits))
                .expect("|cell| < 2^64 · 2^-frac_bits fits an f32")
                .to_bits()
        })
        .collect();
    let outcomes = run_all(&acc, case);
    for (method, got) in METHODS.iter().zip(&outcomes) {
        let ctx = format!("fixed({frac_bits})/{method}");
        match got {
            Ok(g) => {
                assert!(
                    !conversion_fails && total_fits,
                    "{ctx}: succeeded although the exact result is not representable"
                );
                assert_eq!(g, &expected, "{ctx}: wrong bits");
            }
            Err(e) => {
                assert!(e.index < p, "{ctx}: error index {e:?} out of range");
                match e.kind {
                    AccErrorKind::NonFinite => assert!(
                        non_finite_at(case, e.index),
                        "{ctx}: {e:?} names a finite element"
                    ),
                    AccErrorKind::Overflow => assert!(
                        conversion_overflows || !no_partial_overflow,
                        "{ctx}: overflow {e:?} where no sum can overflow"
                    ),
                    _ => panic!("{ctx}: unexpected error {e:?}"),
                }
                assert!(
                    conversion_fails || !total_fits || !no_partial_overflow,
                    "{ctx}: failed with {e:?} where every order must succeed"
                );
            }
        }
    }
    if strict_fixed() {
        let oks: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
        assert!(
            oks.iter().all(|&o| o == oks[0]),
            "fixed({frac_bits}): the outcome depends on the order: {outcomes:?}"
        );
    }
}

fn check_constructors(frac_bits: u8) {
    let f = u32::from(frac_bits);
    match FixedAcc::new(f) {
        Ok(acc) => {
            assert!(f <= FixedAcc::MAX_FRAC_BITS);
            assert_eq!(acc.frac_bits(), f);
        }
        Err(e) => {
            assert!(f > FixedAcc::MAX_FRAC_BITS);
            assert_eq!((e.frac_bits, e.max), (f, FixedAcc::MAX_FRAC_BITS));
        }
    }
    assert_eq!(
        FixedAcc::default(),
        FixedAcc::new(FixedAcc::DEFAULT_FRAC_BITS).unwrap()
    );
}

fuzz_target!(|input: Input| {
    check_constructors(input.frac_bits);
    let case = Case::new(&input);
    check_exact(&case);
    let frac_bits = u32::from(input.frac_bits) % (FixedAcc::MAX_FRAC_BITS + 1);
    check_fixed(&case, frac_bits);
});
