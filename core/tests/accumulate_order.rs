//! Associative accumulators give the same bits whatever the order of
//! additions, the grouping into partial sums and the merge tree.

mod accumulate_support;

use accumulate_support::Rng;
use cllm_core::accumulate::{Accumulator, ExactAcc, F32Acc, FixedAcc};

const WIDTH: usize = 6;

/// Rows of gradients with wildly mixed magnitudes (so that f32 addition
/// visibly depends on the order) but bounded by `2^max_exp`.
fn rows(rng: &mut Rng, n: usize, max_biased_exp: u32) -> Vec<[f32; WIDTH]> {
    (0..n)
        .map(|_| core::array::from_fn(|_| rng.with_exponent(1, max_biased_exp)))
        .collect()
}

fn sequential<A: Accumulator>(acc: &A, rows: &[[f32; WIDTH]]) -> [u32; WIDTH]
where
    A::Cell: Clone,
{
    let mut cells = vec![acc.zero_cell(); WIDTH];
    for r in rows {
        acc.add(&mut cells, r).unwrap();
    }
    let mut out = [0.0f32; WIDTH];
    acc.round(&cells, &mut out).unwrap();
    out.map(f32::to_bits)
}

/// Shuffle the rows, split them into random groups, sum each group into its
/// own buffer, then merge the partial buffers in a random binary tree.
fn scrambled<A: Accumulator>(acc: &A, rows: &[[f32; WIDTH]], rng: &mut Rng) -> [u32; WIDTH]
where
    A::Cell: Clone,
{
    let mut order: Vec<usize> = (0..rows.len()).collect();
    rng.shuffle(&mut order);
    let mut partials: Vec<Vec<A::Cell>> = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let len = 1 + rng.below(order.len() - i);
        let mut cells = vec![acc.zero_cell(); WIDTH];
        for &r in &order[i..i + len] {
            acc.add(&mut cells, &rows[r]).unwrap();
        }
        partials.push(cells);
        i += len;
    }
    while partials.len() > 1 {
        let a = partials.swap_remove(rng.below(partials.len()));
        let b = rng.below(partials.len());
        acc.merge(&mut partials[b], &a).unwrap();
    }
    let mut out = [0.0f32; WIDTH];
    acc.round(&partials[0], &mut out).unwrap();
    out.map(f32::to_bits)
}

fn check_order_independent<A: Accumulator>(acc: &A, max_biased_exp: u32, seed: u64)
where
    A::Cell: Clone,
{
    assert!(A::ASSOCIATIVE);
    let mut rng = Rng(seed);
    for _ in 0..30 {
        let n = 1 + rng.below(60);
        let rows = rows(&mut rng, n, max_biased_exp);
        let want = sequential(acc, &rows);
        for _ in 0..5 {
            assert_eq!(scrambled(acc, &rows, &mut rng), want, "{}", acc.name());
        }
    }
}

#[test]
fn exact_is_order_independent() {
    check_order_independent(&ExactAcc, 247, 1);
}

#[test]
fn fixed_is_order_independent() {
    // |x| < 2^20 keeps 60 terms inside the ±2^31 range of 32 fractional bits;
    // smaller values get rounded on input, which must not matter either.
    check_order_independent(&FixedAcc::default(), 127 + 19, 2);
    check_order_independent(&FixedAcc::new(100).unwrap(), 127 - 45, 3);
}

#[cfg(feature = "bigfloat")]
#[test]
fn bigfloat_is_order_independent() {
    use cllm_core::accumulate::BigFloatAcc;
    check_order_independent(
        &BigFloatAcc::new(BigFloatAcc::EXACT_PRECISION).unwrap(),
        247,
        4,
    );
}

/// The test data really does make f32 order dependent, so the checks above
/// could fail for a non-associative accumulator.
#[test]
fn the_data_separates_f32() {
    const { assert!(!F32Acc::ASSOCIATIVE) };
    let mut rng = Rng(1);
    let mut differs = false;
    for _ in 0..30 {
        let n = 2 + rng.below(60);
        let rows = rows(&mut rng, n, 140);
        let want = sequential(&F32Acc, &rows);
        differs |= (0..5).any(|_| scrambled(&F32Acc, &rows, &mut rng) != want);
    }
    assert!(differs);
}
