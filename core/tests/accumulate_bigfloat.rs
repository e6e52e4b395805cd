//! The arbitrary-precision accumulator against the big-integer reference
//! (only with `--features bigfloat`).
#![cfg(feature = "bigfloat")]

mod accumulate_support;

use accumulate_support::{exact_sum, round_units, Rng};
use cllm_core::accumulate::{AccError, AccErrorKind, Accumulator, BigFloatAcc};
use proptest::prelude::*;

fn exact_acc() -> BigFloatAcc {
    BigFloatAcc::new(BigFloatAcc::EXACT_PRECISION).unwrap()
}

/// Sum one column and round it.
fn sum(acc: &BigFloatAcc, xs: &[f32]) -> Result<f32, AccError> {
    let mut cell = [acc.zero_cell()];
    for &x in xs {
        acc.add(&mut cell, &[x])?;
    }
    let mut out = [0.0f32];
    acc.round(&cell, &mut out)?;
    Ok(out[0])
}

fn check(xs: &[f32]) {
    let want = round_units(&exact_sum(xs));
    let got = sum(&exact_acc(), xs);
    match want {
        Some(w) => assert_eq!(got.map(f32::to_bits), Ok(w.to_bits()), "{xs:?}"),
        None => assert_eq!(
            got.map_err(|e| e.kind),
            Err(AccErrorKind::Overflow),
            "{xs:?}"
        ),
    }
}

const TINY: f32 = f32::from_bits(1);

#[test]
fn adversarial_sums_at_512_bits() {
    let acc = exact_acc();
    assert_eq!(sum(&acc, &[1e30, 1.0, -1e30]), Ok(1.0));
    assert_eq!(sum(&acc, &[f32::MAX, TINY, -f32::MAX]), Ok(TINY));
    assert_eq!(
        sum(&acc, &[1.0, 2f32.powi(-24), TINY]),
        Ok(1.0 + f32::EPSILON)
    );
    assert_eq!(sum(&acc, &[1.0, 2f32.powi(-24)]), Ok(1.0));
    assert_eq!(
        sum(&acc, &[f32::from_bits(0x007f_ffff), TINY]),
        Ok(f32::MIN_POSITIVE)
    );
    assert_eq!(
        sum(&acc, &[f32::MAX, f32::MAX]),
        Err(AccError::new(AccErrorKind::Overflow, 0))
    );
    assert_eq!(
        sum(&acc, &[f32::MAX, 2f32.powi(103)]),
        Err(AccError::new(AccErrorKind::Overflow, 0))
    );
    for xs in [
        &[1e30, 1.0, -1e30][..],
        &[f32::MAX, 2f32.powi(103), -TINY],
        &[f32::from_bits(0x007f_ffff); 7],
        &[16_777_216.0, 1.0],
        &[16_777_216.0, 3.0],
    ] {
        check(xs);
    }
}

#[test]
fn subnormal_results_round_once() {
    // MPFR's get_flt must round subnormal results to the subnormal grid
    // directly; compare against the reference on sums that land there.
    let mut rng = Rng(17);
    for _ in 0..300 {
        let xs: Vec<f32> = (0..1 + rng.below(20))
            .map(|_| rng.with_exponent(0, 3))
            .collect();
        check(&xs);
    }
}

#[test]
fn low_precision_reports_inexact() {
    let acc = BigFloatAcc::new(24).unwrap();
    let mut cells = vec![acc.zero_cell(); 2];
    acc.add(&mut cells, &[1e30, 1.0]).unwrap();
    assert_eq!(
        acc.add(&mut cells, &[1.0, 1e30]),
        Err(AccError::new(AccErrorKind::Inexact, 0))
    );
    // Merging partial sums that do not fit 24 bits is caught too.
    let mut a = vec![acc.zero_cell()];
    let mut b = vec![acc.zero_cell()];
    acc.add(&mut a, &[1.0]).unwrap();
    acc.add(&mut b, &[2f32.powi(30)]).unwrap();
    assert_eq!(
        acc.merge(&mut a, &b),
        Err(AccError::new(AccErrorKind::Inexact, 0))
    );
    // Sums that fit are fine at 24 bits.
    let mut c = vec![acc.zero_cell()];
    acc.add(&mut c, &[1.5]).unwrap();
    acc.add(&mut c, &[2.25]).unwrap();
    let mut out = [0.0f32];
    acc.round(&c, &mut out).unwrap();
    assert_eq!(out, [3.75]);
}

#[test]
fn non_finite_and_length_errors() {
    let acc = exact_acc();
    let mut cells = vec![acc.zero_cell(); 3];
    assert_eq!(
        acc.add(&mut cells, &[1.0, f32::NAN, 2.0]),
        Err(AccError::new(AccErrorKind::NonFinite, 1))
    );
    assert_eq!(
        acc.add(&mut cells, &[1.0, 1.0, f32::NEG_INFINITY]),
        Err(AccError::new(AccErrorKind::NonFinite, 2))
    );
    assert_eq!(
        acc.add(&mut cells, &[1.0]),
        Err(AccError::new(AccErrorKind::LengthMismatch, 1))
    );
    let mut out = [0.0f32; 3];
    acc.round(&cells, &mut out).unwrap();
    assert_eq!(out, [2.0, 1.0, 0.0]);
    assert!(BigFloatAcc::new(0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_streams_match_the_reference(bits in proptest::collection::vec(any::<u32>(), 0..200)) {
        let xs: Vec<f32> = bits.into_iter().map(f32::from_bits).filter(|x| x.is_finite()).collect();
        check(&xs);
    }
}
