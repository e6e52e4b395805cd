//! The fused accumulator paths (`assign`, `add_many`, `assign_many`,
//! `sum_round`) give the same bits as the one-by-one operations, and the
//! exact ones match the big-integer reference.

mod accumulate_support;

use accumulate_support::{exact_sum, round_units, Rng};
use cllm_core::accumulate::{
    AccError, AccErrorKind, Accumulator, ExactAcc, ExactCell, F32Acc, FixedAcc,
};

/// A gradient-like stream: per element a magnitude band, and per input a
/// value in that band (so the exact `f64` pre-sums usually succeed), with
/// every kind of exception mixed in: values from far outside the band
/// (inexact pre-sums), huge values, subnormals, zeros of both signs.
fn inputs(rng: &mut Rng, n_inputs: usize, len: usize) -> Vec<Vec<f32>> {
    let band: Vec<u32> = (0..len).map(|_| 40 + rng.below(180) as u32).collect();
    (0..n_inputs)
        .map(|_| {
            (0..len)
                .map(|i| match rng.below(40) {
                    0 => rng.any_finite(),
                    1 => rng.with_exponent(0, 2),
                    2 => 0.0,
                    3 => -0.0,
                    4 => rng.with_exponent(230, 254),
                    _ => rng.with_exponent(band[i], band[i] + 3),
                })
                .collect()
        })
        .collect()
}

fn random_cells(rng: &mut Rng, len: usize) -> Vec<ExactCell> {
    (0..len)
        .map(|_| {
            let mut c = ExactCell::ZERO;
            for _ in 0..rng.below(3) {
                c.add_f32(rng.any_finite()).unwrap();
            }
            c
        })
        .collect()
}

fn slices(v: &[Vec<f32>]) -> Vec<&[f32]> {
    v.iter().map(|x| &x[..]).collect()
}

/// Lengths around the internal block size (64) and a few inputs counts.
const LENS: [usize; 6] = [0, 1, 63, 64, 65, 200];

#[test]
fn exact_fused_paths_equal_one_by_one() {
    let acc = ExactAcc;
    let mut rng = Rng(17);
    for round in 0..40 {
        for len in LENS {
            let n_inputs = round % 8;
            let xs = inputs(&mut rng, n_inputs, len);
            let xs = slices(&xs);
            let start = random_cells(&mut rng, len);
            let other = random_cells(&mut rng, len);

            let mut seq = start.clone();
            for x in &xs {
                acc.add(&mut seq, x).unwrap();
            }
            let mut fused = start.clone();
            acc.add_many(&mut fused, &xs).unwrap();
            assert_eq!(fused, seq, "add_many, {n_inputs} inputs, len {len}");

            let mut from_zero = vec![ExactCell::ZERO; len];
            for x in &xs {
                acc.add(&mut from_zero, x).unwrap();
            }
            let mut assigned = start.clone();
            acc.assign_many(&mut assigned, &xs).unwrap();
            assert_eq!(assigned, from_zero, "assign_many");
            if let Some(x) = xs.first() {
                let mut one = start.clone();
                acc.assign(&mut one, x).unwrap();
                let mut want = vec![ExactCell::ZERO; len];
                acc.add(&mut want, x).unwrap();
                assert_eq!(one, want, "assign");
            }

            // sum_round with 0, 1 or 2 cell buffers against merge + round.
            for cells in [&[][..], &[&start[..]], &[&start[..], &other[..]]] {
                let mut merged = vec![ExactCell::ZERO; len];
                for c in cells {
                    acc.merge(&mut merged, c).unwrap();
                }
                acc.add_many(&mut merged, &xs).unwrap();
                let mut want = vec![0f32; len];
                let want = acc.round(&merged, &mut want).map(|()| want);
                let mut got = vec![0f32; len];
                let got = acc.sum_round(cells, &xs, &mut got).map(|()| got);
                match (got, want) {
                    (Ok(g), Ok(w)) => {
                        let g: Vec<u32> = g.iter().map(|x| x.to_bits()).collect();
                        let w: Vec<u32> = w.iter().map(|x| x.to_bits()).collect();
                        assert_eq!(g, w, "sum_round, {} cells", cells.len());
                    }
                    (g, w) => assert_eq!(g.err(), w.err()),
                }
            }
        }
    }
}

#[test]
fn exact_sum_round_matches_the_reference() {
    let acc = ExactAcc;
    let mut rng = Rng(23);
    for n_inputs in 1..7 {
        let xs = inputs(&mut rng, n_inputs, 300);
        let mut out = vec![0f32; 300];
        // Rounding stops at the first overflow: earlier results must match
        // the reference, and that one must really overflow.
        let done = match acc.sum_round(&[], &slices(&xs), &mut out) {
            Ok(()) => out.len(),
            Err(e) => {
                assert_eq!(e.kind, AccErrorKind::Overflow);
                e.index
            }
        };
        for i in 0..out.len().min(done + 1) {
            let col: Vec<f32> = xs.iter().map(|x| x[i]).collect();
            match round_units(&exact_sum(&col)) {
                Some(w) => assert_eq!(out[i].to_bits(), w.to_bits(), "{col:?}"),
                None => assert_eq!(i, done, "missed overflow"),
            }
        }
    }
    // An exact zero is +0.0 whatever the signs of the zeros summed.
    let mut out = [1f32; 2];
    let mut out3 = [0f32; 3];
    acc.sum_round(&[], &[&[-0.0, -1.5], &[-0.0, 1.5]], &mut out)
        .unwrap();
    assert_eq!(out.map(f32::to_bits), [0, 0]);
    // Just above and below a tie: 1 + 2^-24 ± 2^-40 fits an f64 (the exact
    // pre-sum is rounded once), 1 + 2^-24 ± 2^-60 does not (the pre-sum is
    // inexact and must not be used).
    let (a, b) = (1.0f32, 2f32.powi(-24));
    for c in [2f32.powi(-40), 2f32.powi(-60)] {
        acc.sum_round(&[], &[&[a, a, a], &[b, b, b], &[c, -c, 0.0]], &mut out3)
            .unwrap();
        assert_eq!(out3, [1.0 + f32::EPSILON, 1.0, 1.0]);
    }
}

#[test]
fn exact_errors_leave_later_cells_unchanged() {
    let acc = ExactAcc;
    let mut rng = Rng(5);
    let len = 150;
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for (input, at) in [(0, 0), (1, 70), (2, 149)] {
            // Moderate values: no overflow before the bad one.
            let mut xs: Vec<Vec<f32>> = (0..3)
                .map(|_| (0..len).map(|_| rng.with_exponent(100, 140)).collect())
                .collect();
            xs[input][at] = bad;
            let xs = slices(&xs);
            let start = random_cells(&mut rng, len);
            let err = AccError::new(AccErrorKind::NonFinite, at);

            let mut want = start.clone();
            for x in &xs {
                let _ = acc.add(&mut want[..at], &x[..at]);
            }
            let mut got = start.clone();
            assert_eq!(acc.add_many(&mut got, &xs), Err(err));
            assert_eq!(got[..at], want[..at]);
            assert_eq!(got[at..], start[at..]);

            let mut got = start.clone();
            assert_eq!(acc.assign_many(&mut got, &xs), Err(err));
            let mut want = vec![ExactCell::ZERO; at];
            for x in &xs {
                acc.add(&mut want, &x[..at]).unwrap();
            }
            assert_eq!(got[..at], want[..]);
            assert_eq!(got[at..], start[at..]);

            let mut got = start.clone();
            let e = acc.assign(&mut got, xs[input]);
            assert_eq!(e, Err(err));
            assert_eq!(got[at..], start[at..]);

            let mut out = vec![7f32; len];
            assert_eq!(acc.sum_round(&[&start], &xs, &mut out), Err(err));
            assert!(out[at..].iter().all(|&o| o == 7.0));
        }
    }
    // Overflow of the rounded sum, with and without cells.
    let big = [f32::MAX, f32::MAX];
    let mut out = [0f32; 2];
    let over = Err(AccError::new(AccErrorKind::Overflow, 0));
    assert_eq!(acc.sum_round(&[], &[&big, &big], &mut out), over);
    let cells = [ExactCell::from_f32(f32::MAX).unwrap(); 2];
    assert_eq!(acc.sum_round(&[&cells], &[&big], &mut out), over);
}

#[test]
fn register_overflow_in_fused_paths() {
    let acc = ExactAcc;
    // A register one f32::MAX below the top: any further maximum overflows.
    let mut top = ExactCell::from_f32(f32::MAX).unwrap();
    while top.add_cell(&top.clone()).is_ok() {}
    let mut c = top;
    while c.add_f32(f32::MAX).is_ok() {}
    let cells = vec![ExactCell::ZERO, c, ExactCell::ZERO];
    let xs = [1.0f32, f32::MAX, 1.0];
    let mut got = cells.clone();
    assert_eq!(
        acc.add_many(&mut got, &[&xs, &xs]),
        Err(AccError::new(AccErrorKind::Overflow, 1))
    );
    assert_eq!(got[0], ExactCell::from_f32(2.0).unwrap());
    assert_eq!(got[1..], cells[1..]);
    // Within range when the smaller input comes first, as one by one.
    let mut got = cells.clone();
    acc.add_many(&mut got, &[&xs.map(|x| -x), &xs]).unwrap();
    assert_eq!(got, cells);
    // The same with inputs whose exact f64 pre-sum (zero) is in range: the
    // intermediate sum still overflows one by one, so it does here.
    let max = ExactCell::from_limbs([u64::MAX, u64::MAX, u64::MAX, u64::MAX, u64::MAX >> 1]);
    let over = Err(AccError::new(AccErrorKind::Overflow, 0));
    let mut got = [max];
    assert_eq!(acc.add_many(&mut got, &[&[1.0], &[-1.0]]), over);
    assert_eq!(got, [max]);
    acc.add_many(&mut got, &[&[-1.0], &[1.0]]).unwrap();
    assert_eq!(got, [max]);
    let mut out = [0f32];
    assert_eq!(acc.sum_round(&[&[max]], &[&[1.0], &[-1.0]], &mut out), over);
}

#[test]
fn length_mismatch_changes_nothing() {
    let acc = ExactAcc;
    let mut cells = vec![ExactCell::from_f32(1.0).unwrap(); 3];
    let before = cells.clone();
    let mismatch = |i| Err(AccError::new(AccErrorKind::LengthMismatch, i));
    assert_eq!(acc.assign(&mut cells, &[1.0, 2.0]), mismatch(2));
    assert_eq!(
        acc.add_many(&mut cells, &[&[1.0; 3], &[1.0; 4]]),
        mismatch(3)
    );
    assert_eq!(acc.assign_many(&mut cells, &[&[1.0; 2]]), mismatch(2));
    let mut out = [5f32; 3];
    assert_eq!(
        acc.sum_round(&[&before[..2]], &[&[1.0; 3]], &mut out),
        mismatch(2)
    );
    assert_eq!(acc.sum_round(&[], &[&[1.0; 4]], &mut out), mismatch(3));
    assert_eq!(cells, before);
    assert_eq!(out, [5.0; 3]);
    // The defaults too.
    let mut f = [1f32; 3];
    assert_eq!(F32Acc.assign(&mut f, &[1.0]), mismatch(1));
    assert_eq!(F32Acc.add_many(&mut f, &[&[1.0; 3], &[1.0]]), mismatch(1));
    assert_eq!(f, [1.0; 3]);
}

#[test]
fn fixed_assign_and_sum_round_equal_one_by_one() {
    let mut rng = Rng(9);
    for frac_bits in [0, 24, 32, 100, 149] {
        let acc = FixedAcc::new(frac_bits).unwrap();
        for _ in 0..50 {
            let len = 1 + rng.below(20);
            let xs: Vec<Vec<f32>> = (0..rng.below(4))
                .map(|_| (0..len).map(|_| rng.with_exponent(90, 140)).collect())
                .collect();
            let xs = slices(&xs);
            let mut a = vec![0i64; len];
            let mut b = vec![0i64; len];
            let ra = acc.add_many(&mut a, &xs);
            let rb = acc.assign_many(&mut b, &xs);
            assert_eq!(ra, rb);
            if ra.is_err() {
                continue;
            }
            assert_eq!(a, b);
            let mut want = vec![0f32; len];
            acc.round(&a, &mut want).unwrap();
            let mut got = vec![0f32; len];
            let cells = vec![1i64 << 20; len];
            acc.sum_round(&[&cells], &xs, &mut got).unwrap();
            let mut shifted = a.clone();
            acc.merge(&mut shifted, &cells).unwrap();
            acc.round(&shifted, &mut want).unwrap();
            assert_eq!(got, want);
        }
    }
    let acc = FixedAcc::new(0).unwrap();
    let mut cells = [5i64; 3];
    assert_eq!(
        acc.assign(&mut cells, &[1.5, f32::NAN, 1.0]),
        Err(AccError::new(AccErrorKind::NonFinite, 1))
    );
    assert_eq!(cells, [2, 5, 5]);
}

#[test]
fn f32_defaults_are_left_folds_from_zero() {
    let acc = F32Acc;
    let (a, b, c) = ([1e8f32, -0.0], [1.0f32, -0.0], [-1e8f32, -0.0]);
    let mut cells = [9f32; 2];
    acc.assign_many(&mut cells, &[&a, &b, &c]).unwrap();
    // (0 + 1e8 + 1) - 1e8 = 0 in f32, and 0 + -0 = +0.
    assert_eq!(cells.map(f32::to_bits), [0, 0]);
    acc.add_many(&mut cells, &[&b, &b]).unwrap();
    assert_eq!(cells, [2.0, 0.0]);
    let mut out = [0f32; 2];
    acc.sum_round(&[&cells], &[&a, &c], &mut out).unwrap();
    assert_eq!(out, [0.0, 0.0]);
    acc.assign(&mut cells, &b).unwrap();
    assert_eq!(cells, [1.0, 0.0]);
    acc.assign_many(&mut cells, &[]).unwrap();
    assert_eq!(cells, [0.0, 0.0]);
}
