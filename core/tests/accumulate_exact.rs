//! The exact (Kulisch) accumulator against a big-integer reference.

mod accumulate_support;

use accumulate_support::{exact_sum, round_units, units, Rng};
use cllm_core::accumulate::{AccError, AccErrorKind, Accumulator, ExactAcc, ExactCell};
use num_bigint::BigInt;
use proptest::prelude::*;

/// Sum `xs` into one cell, element by element, and round.
fn exact(xs: &[f32]) -> Result<f32, AccErrorKind> {
    let mut c = ExactCell::ZERO;
    for &x in xs {
        c.add_f32(x)?;
    }
    c.to_f32()
}

/// The register's value as a big integer (two's complement decoding written
/// here, not borrowed from the accumulator).
fn cell_value(c: &ExactCell) -> BigInt {
    let mut v = BigInt::from(0);
    for (i, &l) in c.limbs().iter().enumerate() {
        v += BigInt::from(l) << (64 * i);
    }
    if c.is_negative() {
        v -= BigInt::from(1) << 320;
    }
    v
}

/// Compare the accumulator with the reference on one stream, bit for bit,
/// and check the register holds exactly the reference sum.
fn check(xs: &[f32]) {
    let n = exact_sum(xs);
    let mut c = ExactCell::ZERO;
    for &x in xs {
        c.add_f32(x).unwrap();
    }
    assert_eq!(cell_value(&c), n, "register value for {xs:?}");
    let want = round_units(&n);
    let got = c.to_f32().ok();
    assert_eq!(
        got.map(f32::to_bits),
        want.map(f32::to_bits),
        "{xs:?}: got {got:?} want {want:?}"
    );
}

const TINY: f32 = f32::from_bits(1); // 2^-149
const MAX_SUB: f32 = f32::from_bits(0x007f_ffff);

#[test]
fn huge_cancels_exactly() {
    assert_eq!(exact(&[1e30, 1.0, -1e30]), Ok(1.0));
    assert_eq!(exact(&[1e30, TINY, -1e30]), Ok(TINY));
    assert_eq!(
        exact(&[f32::MAX, -f32::MAX, 1e-45, f32::MAX, -f32::MAX]),
        Ok(1e-45)
    );
    check(&[1e30, 1.0, -1e30]);
    check(&[3.0e38, 3.0e38, -3.0e38, -3.0e38, 2.5]);
}

#[test]
fn max_values_cancel_and_overflow() {
    // The register itself does not overflow on a few maxima; only the result does.
    assert_eq!(exact(&[f32::MAX, f32::MAX, -f32::MAX]), Ok(f32::MAX));
    assert_eq!(exact(&[f32::MAX, f32::MAX]), Err(AccErrorKind::Overflow));
    assert_eq!(exact(&[-f32::MAX, -f32::MAX]), Err(AccErrorKind::Overflow));
    // Half an ulp of MAX (2^103) is a tie; MAX's significand is odd, so the
    // tie goes up to 2^128: overflow. A hair less stays at MAX.
    let half_ulp = 2f32.powi(103);
    assert_eq!(exact(&[f32::MAX, half_ulp]), Err(AccErrorKind::Overflow));
    assert_eq!(exact(&[f32::MAX, half_ulp, -TINY]), Ok(f32::MAX));
    assert_eq!(exact(&[-f32::MAX, -half_ulp, TINY]), Ok(-f32::MAX));
    check(&[f32::MAX, half_ulp, -TINY]);
}

#[test]
fn subnormals() {
    assert_eq!(exact(&[TINY; 1000]).map(f32::to_bits), Ok(1000));
    // Stays subnormal, exactly.
    assert_eq!(exact(&[MAX_SUB, -TINY, TINY, -MAX_SUB, TINY]), Ok(TINY));
    // Crosses into the normal range.
    assert_eq!(exact(&[MAX_SUB, TINY]), Ok(f32::MIN_POSITIVE));
    assert_eq!(
        exact(&[MAX_SUB, MAX_SUB]).map(f32::to_bits),
        Ok(0x0080_0000 + 0x007f_fffe)
    );
    // Normal minus normal landing in the subnormals.
    assert_eq!(exact(&[f32::MIN_POSITIVE, -TINY]), Ok(MAX_SUB));
    check(&[MAX_SUB, MAX_SUB, MAX_SUB, -TINY]);
    let mut rng = Rng(7);
    for _ in 0..200 {
        let xs: Vec<f32> = (0..rng.below(40) + 1)
            .map(|_| rng.with_exponent(0, 2))
            .collect();
        check(&xs);
    }
}

#[test]
fn ties_to_even() {
    let p24 = 16_777_216.0f32;
    assert_eq!(exact(&[p24, 1.0]), Ok(p24)); // tie, even is 2^24
    assert_eq!(exact(&[p24, 3.0]), Ok(p24 + 4.0)); // tie, even is 2^24 + 4
    assert_eq!(exact(&[1.0, 2f32.powi(-24)]), Ok(1.0));
    // The same tie broken by a bit 173 places lower (a different limb): the
    // sticky bit must see it.
    assert_eq!(exact(&[1.0, 2f32.powi(-24), TINY]), Ok(1.0 + f32::EPSILON));
    assert_eq!(
        exact(&[-1.0, -2f32.powi(-24), -TINY]),
        Ok(-1.0 - f32::EPSILON)
    );
    assert_eq!(exact(&[1.0, 2f32.powi(-24), -TINY]), Ok(1.0));
    for xs in [
        [p24, 1.0, 0.0],
        [1.0, 2f32.powi(-24), TINY],
        [1e20, 4096.0, 1.0],
    ] {
        check(&xs);
    }
}

#[test]
fn massive_cancellation() {
    let mut rng = Rng(42);
    for round in 0..50 {
        let mut xs: Vec<f32> = (0..200).map(|_| rng.any_finite()).collect();
        let negs: Vec<f32> = xs.iter().map(|x| -x).collect();
        xs.extend(negs);
        let small = rng.with_exponent(0, 40);
        xs.push(small);
        rng.shuffle(&mut xs);
        assert_eq!(
            exact(&xs).map(f32::to_bits),
            Ok(small.to_bits()),
            "round {round}"
        );
        check(&xs);
    }
}

#[test]
fn zero_sums_are_positive_zero() {
    assert_eq!(exact(&[]).map(f32::to_bits), Ok(0));
    assert_eq!(exact(&[-0.0, -0.0]).map(f32::to_bits), Ok(0));
    assert_eq!(exact(&[-1.5, 1.5]).map(f32::to_bits), Ok(0));
}

#[test]
fn non_finite_inputs_are_reported_with_their_index() {
    let acc = ExactAcc;
    for bad in [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0xffc0_0001),
    ] {
        let mut cells = vec![acc.zero_cell(); 5];
        let xs = [1.0, 2.0, 3.0, bad, 5.0];
        assert_eq!(
            acc.add(&mut cells, &xs),
            Err(AccError::new(AccErrorKind::NonFinite, 3))
        );
        // Cells before the error were added, the rest untouched.
        let mut out = [9.0f32; 5];
        acc.round(&cells, &mut out).unwrap();
        assert_eq!(out, [1.0, 2.0, 3.0, 0.0, 0.0]);
    }
    assert_eq!(ExactCell::from_f32(f32::NAN), Err(AccErrorKind::NonFinite));
}

#[test]
fn length_mismatch_changes_nothing() {
    let acc = ExactAcc;
    let mut cells = vec![ExactCell::from_f32(1.0).unwrap(); 3];
    let before = cells.clone();
    assert_eq!(
        acc.add(&mut cells, &[1.0, 2.0]),
        Err(AccError::new(AccErrorKind::LengthMismatch, 2))
    );
    assert_eq!(
        acc.merge(&mut cells, &before[..1]),
        Err(AccError::new(AccErrorKind::LengthMismatch, 1))
    );
    let mut out = [0.0f32; 4];
    assert_eq!(
        acc.round(&cells, &mut out),
        Err(AccError::new(AccErrorKind::LengthMismatch, 3))
    );
    assert_eq!(cells, before);
    assert_eq!(out, [0.0; 4]);
}

#[test]
fn round_reports_overflow_with_index() {
    let acc = ExactAcc;
    let mut cells = vec![acc.zero_cell(); 3];
    acc.add(&mut cells, &[1.0, f32::MAX, -f32::MAX]).unwrap();
    acc.add(&mut cells, &[1.0, f32::MAX, -f32::MAX]).unwrap();
    let mut out = [0.0f32; 3];
    assert_eq!(
        acc.round(&cells, &mut out),
        Err(AccError::new(AccErrorKind::Overflow, 1))
    );
    let mut neg = vec![acc.zero_cell(); 3];
    acc.add(&mut neg, &[0.0, -f32::MAX, f32::MAX]).unwrap();
    acc.add(&mut neg, &[0.0, -f32::MAX, 0.0]).unwrap();
    acc.merge(&mut cells, &neg).unwrap();
    acc.round(&cells, &mut out).unwrap();
    assert_eq!(out, [2.0, 0.0, -f32::MAX]);
}

#[test]
fn register_overflow_is_an_error_not_a_wrap() {
    // Build a register near the top of the 320-bit range by merging many
    // copies of a maximal one (2^42 additions would take too long).
    let mut c = ExactCell::from_f32(f32::MAX).unwrap();
    let mut doublings = 0;
    loop {
        let copy = c;
        match c.add_cell(&copy) {
            Ok(()) => doublings += 1,
            Err(e) => {
                assert_eq!(e, AccErrorKind::Overflow);
                break;
            }
        }
    }
    // f32::MAX = (1 - 2^-24) 2^277 units; 42 doublings stay below 2^319.
    assert_eq!(doublings, 42);
    assert!(!c.is_negative());
    let before = c;
    let mut err = None;
    for _ in 0..(1 << 20) {
        if let Err(e) = c.add_f32(f32::MAX) {
            err = Some(e);
            break;
        }
    }
    assert_eq!(err, Some(AccErrorKind::Overflow));
    assert!(!c.is_negative(), "the register wrapped");
    assert!(cell_value(&c) > cell_value(&before));
}

#[test]
fn merge_equals_sequential() {
    let mut rng = Rng(3);
    let acc = ExactAcc;
    for _ in 0..100 {
        let len = rng.below(16) + 1;
        let a: Vec<f32> = (0..len).map(|_| rng.any_finite()).collect();
        let b: Vec<f32> = (0..len).map(|_| rng.with_exponent(100, 160)).collect();
        let mut seq = vec![acc.zero_cell(); len];
        acc.add(&mut seq, &a).unwrap();
        acc.add(&mut seq, &b).unwrap();
        let (mut ca, mut cb) = (vec![acc.zero_cell(); len], vec![acc.zero_cell(); len]);
        acc.add(&mut ca, &a).unwrap();
        acc.add(&mut cb, &b).unwrap();
        acc.merge(&mut cb, &ca).unwrap();
        assert_eq!(cb, seq);
        for i in 0..len {
            assert_eq!(cell_value(&seq[i]), units(a[i]) + units(b[i]));
        }
    }
}

#[test]
fn bytes_round_trip_and_limbs() {
    let mut rng = Rng(11);
    for _ in 0..100 {
        let mut c = ExactCell::ZERO;
        for _ in 0..5 {
            c.add_f32(rng.any_finite()).unwrap();
        }
        let b = c.to_le_bytes();
        assert_eq!(ExactCell::from_le_bytes(b), c);
        assert_eq!(ExactCell::from_limbs(c.limbs()), c);
        assert_eq!(u64::from_le_bytes(b[..8].try_into().unwrap()), c.limbs()[0]);
    }
}

fn finite_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        // Any finite value.
        any::<u32>()
            .prop_map(f32::from_bits)
            .prop_filter("finite", |x| x.is_finite()),
        // A narrow band of exponents, so that carries, cancellation and ties are common.
        (any::<u32>(), 100u32..140)
            .prop_map(|(r, e)| f32::from_bits((r & 0x807f_ffff) | (e << 23))),
        // Subnormals and the smallest normals.
        (any::<u32>(), 0u32..3).prop_map(|(r, e)| f32::from_bits((r & 0x807f_ffff) | (e << 23))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_streams_match_the_reference(xs in proptest::collection::vec(finite_f32(), 0..300)) {
        check(&xs);
    }

    #[test]
    fn random_vectors_match_the_reference(
        rows in proptest::collection::vec(proptest::collection::vec(finite_f32(), 8), 1..40)
    ) {
        let acc = ExactAcc;
        let mut cells = vec![acc.zero_cell(); 8];
        for row in &rows {
            acc.add(&mut cells, row).unwrap();
        }
        let mut out = [0.0f32; 8];
        let r = acc.round(&cells, &mut out);
        // Round stops at the first overflowing column: columns before it must
        // match the reference, and that column must really overflow.
        let done = match r {
            Ok(()) => 8,
            Err(e) => {
                prop_assert_eq!(e.kind, AccErrorKind::Overflow);
                e.index
            }
        };
        for i in 0..8.min(done + 1) {
            let col: Vec<f32> = rows.iter().map(|r| r[i]).collect();
            match round_units(&exact_sum(&col)) {
                Some(w) => {
                    prop_assert!(i < done, "spurious overflow in column {}", i);
                    prop_assert_eq!(out[i].to_bits(), w.to_bits());
                }
                None => prop_assert_eq!(i, done, "missed overflow in column {}", i),
            }
        }
    }
}
