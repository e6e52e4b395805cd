//! The fixed-point accumulator against a big-integer reference.

mod accumulate_support;

use accumulate_support::{div_pow2_round_even, round_units, units, Rng};
use cllm_core::accumulate::{AccError, AccErrorKind, Accumulator, FixedAcc, FracBitsError};
use num_bigint::BigInt;
use proptest::prelude::*;

/// Reference conversion: `x · 2^f` rounded to nearest-even, or `None` when
/// it does not fit an `i64`.
fn ref_to_cell(x: f32, f: u32) -> Option<i64> {
    // x · 2^f = units(x) · 2^(f - 149), and f <= 149.
    let n = div_pow2_round_even(&units(x), 149 - f);
    i64::try_from(n).ok()
}

/// Reference rounding of a cell: `cell · 2^-f` as `cell · 2^(149-f)` units.
fn ref_to_f32(cell: i64, f: u32) -> f32 {
    round_units(&(BigInt::from(cell) << (149 - f))).expect("an i64 cell always fits an f32")
}

#[test]
fn constructor_checks_the_range() {
    assert_eq!(FixedAcc::default().frac_bits(), 32);
    assert_eq!(FixedAcc::new(0).map(|a| a.frac_bits()), Ok(0));
    assert_eq!(FixedAcc::new(149).map(|a| a.frac_bits()), Ok(149));
    assert_eq!(
        FixedAcc::new(150),
        Err(FracBitsError {
            frac_bits: 150,
            max: 149
        })
    );
}

#[test]
fn conversion_ties_to_even() {
    let acc = FixedAcc::new(2).unwrap(); // quarters
    let cases = [
        (0.125, 0), // half a quarter: tie, even 0
        (0.375, 2), // 1.5 quarters: tie, even 2
        (0.625, 2), // 2.5 quarters: tie, even 2
        (0.875, 4),
        (-0.375, -2),
        (-0.625, -2),
        (0.126, 1),
        (-0.124, 0),
    ];
    for (x, n) in cases {
        assert_eq!(acc.to_cell(x), Ok(n), "{x}");
        assert_eq!(ref_to_cell(x, 2), Some(n), "reference disagrees on {x}");
    }
    // The smallest subnormal at the largest resolution is exactly 1.
    let fine = FixedAcc::new(149).unwrap();
    assert_eq!(fine.to_cell(f32::from_bits(1)), Ok(1));
    assert_eq!(fine.to_cell(f32::from_bits(0x007f_ffff)), Ok(0x007f_ffff));
    // ... and at 148 fractional bits it is a tie that rounds to 0, while 3 quanta round to 2.
    let f148 = FixedAcc::new(148).unwrap();
    assert_eq!(f148.to_cell(f32::from_bits(1)), Ok(0));
    assert_eq!(f148.to_cell(f32::from_bits(3)), Ok(2));
}

#[test]
fn conversion_overflow_and_non_finite() {
    let acc = FixedAcc::default(); // range ±2^31
    let p31 = 2f32.powi(31);
    assert_eq!(
        acc.to_cell(p31),
        Err(AccError::new(AccErrorKind::Overflow, 0))
    );
    assert_eq!(acc.to_cell(-p31), Ok(i64::MIN)); // -2^63 is representable
    assert_eq!(
        acc.to_cell(-p31 * 1.000_001),
        Err(AccError::new(AccErrorKind::Overflow, 0))
    );
    assert_eq!(
        acc.to_cell(f32::MAX),
        Err(AccError::new(AccErrorKind::Overflow, 0))
    );
    assert_eq!(
        acc.to_cell(f32::NAN),
        Err(AccError::new(AccErrorKind::NonFinite, 0))
    );
    assert_eq!(
        acc.to_cell(f32::NEG_INFINITY),
        Err(AccError::new(AccErrorKind::NonFinite, 0))
    );
    // Largest value below 2^31 that fits: 2^31 - 128 (an f32 near 2^31 has ulp 128).
    assert_eq!(acc.to_cell(p31 - 128.0), Ok(((1i64 << 31) - 128) << 32));
    let zero_frac = FixedAcc::new(0).unwrap();
    assert_eq!(zero_frac.to_cell(2f32.powi(62)), Ok(1 << 62));
    assert_eq!(
        zero_frac.to_cell(2f32.powi(63)),
        Err(AccError::new(AccErrorKind::Overflow, 0))
    );
    assert_eq!(zero_frac.to_cell(0.0), Ok(0));
    assert_eq!(zero_frac.to_cell(-0.0), Ok(0));
    assert_eq!(zero_frac.to_cell(f32::from_bits(1)), Ok(0));
}

#[test]
fn add_and_merge_overflow_are_reported_not_wrapped() {
    let acc = FixedAcc::default();
    let big = 2f32.powi(30);
    let mut cells = vec![0i64; 3];
    acc.add(&mut cells, &[1.0, big, -big]).unwrap();
    let before = cells.clone();
    // 2^30 + 2^30 = 2^31 does not fit.
    assert_eq!(
        acc.add(&mut cells, &[1.0, big, -big]),
        Err(AccError::new(AccErrorKind::Overflow, 1))
    );
    assert_eq!(cells, vec![2 << 32, before[1], before[2]]);
    // -2^30 - 2^30 = -2^31 fits exactly (i64::MIN).
    assert_eq!(acc.add(&mut cells[2..], &[-big]), Ok(()));
    assert_eq!(cells[2], i64::MIN);

    let mut dst = vec![1i64, i64::MAX - 5, 0];
    let src = vec![1i64, 6, 1];
    assert_eq!(
        acc.merge(&mut dst, &src),
        Err(AccError::new(AccErrorKind::Overflow, 1))
    );
    assert_eq!(dst, vec![2, i64::MAX - 5, 0]);
    let mut dst = vec![i64::MIN];
    assert_eq!(
        acc.merge(&mut dst, &[-1]),
        Err(AccError::new(AccErrorKind::Overflow, 0))
    );

    let mut cells = vec![0i64; 4];
    assert_eq!(
        acc.add(&mut cells, &[1.0, 2.0, f32::INFINITY, 1.0]),
        Err(AccError::new(AccErrorKind::NonFinite, 2))
    );
    assert_eq!(cells, vec![1 << 32, 2 << 32, 0, 0]);
}

#[test]
fn length_mismatch_changes_nothing() {
    let acc = FixedAcc::default();
    let mut cells = vec![5i64; 3];
    assert_eq!(
        acc.add(&mut cells, &[1.0; 4]),
        Err(AccError::new(AccErrorKind::LengthMismatch, 3))
    );
    assert_eq!(
        acc.merge(&mut cells, &[1; 2]),
        Err(AccError::new(AccErrorKind::LengthMismatch, 2))
    );
    let mut out = [0.0f32; 2];
    assert_eq!(
        acc.round(&cells, &mut out),
        Err(AccError::new(AccErrorKind::LengthMismatch, 2))
    );
    assert_eq!(cells, vec![5; 3]);
    assert_eq!(out, [0.0; 2]);
}

#[test]
fn representable_values_round_trip() {
    let mut rng = Rng(5);
    for f in [0, 8, 24, 32, 60, 100, 126, 127, 140, 149] {
        let acc = FixedAcc::new(f).unwrap();
        for _ in 0..2000 {
            let x = rng.any_finite();
            // Representable: a multiple of 2^-f inside the range.
            if let (Some(n), true) = (
                ref_to_cell(x, f),
                units(x) % (BigInt::from(1) << (149 - f)) == BigInt::from(0),
            ) {
                assert_eq!(acc.to_cell(x), Ok(n));
                assert_eq!(
                    acc.to_f32(n).to_bits(),
                    (x + 0.0).to_bits(),
                    "f={f} x={x:e}"
                );
            }
        }
    }
}

#[test]
fn rounding_of_cells_matches_the_reference() {
    let mut rng = Rng(9);
    // Interesting cells: random bits, random small magnitudes, ties at 24 bits.
    for f in [0, 1, 31, 32, 64, 100, 125, 126, 127, 128, 140, 148, 149] {
        let acc = FixedAcc::new(f).unwrap();
        let mut cells = vec![
            0,
            1,
            -1,
            i64::MAX,
            i64::MIN,
            (1 << 24) + 1,
            (1 << 25) + 3,
            -((1 << 40) + (1 << 16)),
        ];
        for _ in 0..500 {
            let r = rng.next_u64() as i64;
            cells.push(r);
            cells.push(r >> rng.below(63));
        }
        let mut out = vec![0.0f32; cells.len()];
        acc.round(&cells, &mut out).unwrap();
        for (&c, &o) in cells.iter().zip(&out) {
            assert_eq!(o.to_bits(), ref_to_f32(c, f).to_bits(), "f={f} cell={c}");
        }
    }
}

#[test]
fn conversion_near_the_resolution_matches_the_reference() {
    // Exponents that put the rounding point anywhere inside the significand,
    // plus values just inside and outside the range.
    let mut rng = Rng(21);
    for f in [0u32, 1, 23, 32, 64, 100, 126, 140, 148, 149] {
        let acc = FixedAcc::new(f).unwrap();
        // biased exponent e gives shift = max(e, 1) - 150 + f.
        let lo = (150 - f as i32 - 30).max(0) as u32;
        let hi = (150 - f as i32 + 42).min(254) as u32;
        for _ in 0..3000 {
            let x = rng.with_exponent(lo, hi);
            let want = ref_to_cell(x, f).ok_or(AccError::new(AccErrorKind::Overflow, 0));
            assert_eq!(acc.to_cell(x), want, "f={f} x={x:e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn conversion_matches_the_reference(bits in any::<u32>(), f in 0u32..=149) {
        let x = f32::from_bits(bits);
        let acc = FixedAcc::new(f).unwrap();
        let got = acc.to_cell(x);
        if !x.is_finite() {
            prop_assert_eq!(got, Err(AccError::new(AccErrorKind::NonFinite, 0)));
        } else {
            match ref_to_cell(x, f) {
                Some(n) => prop_assert_eq!(got, Ok(n)),
                None => prop_assert_eq!(got, Err(AccError::new(AccErrorKind::Overflow, 0))),
            }
        }
    }

    #[test]
    fn sums_are_exact_sums_of_rounded_inputs(
        xs in proptest::collection::vec(-1.0e6f32..1.0e6, 1..200),
        f in 0u32..=32,
    ) {
        let acc = FixedAcc::new(f).unwrap();
        let mut cell = [0i64];
        let mut want = BigInt::from(0);
        for &x in &xs {
            acc.add(&mut cell, &[x]).unwrap();
            want += BigInt::from(ref_to_cell(x, f).unwrap());
        }
        prop_assert_eq!(BigInt::from(cell[0]), want);
    }
}
