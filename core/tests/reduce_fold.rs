//! The fold plan against the canonical definition, evaluated directly.
#![cfg(not(loom))]

mod reduce_support;

use cllm_core::accumulate::{AccErrorKind, F32Acc};
use cllm_core::reduce::{
    accumulate_sequential, fold_sequential, reduce_sequential, sequential_cell_len,
    sequential_f32_len, FoldPlan, ReduceError, MAX_DEPTH, MAX_WIDTH,
};
use cllm_core::tree::Shape;
use proptest::prelude::*;
use reduce_support::{bits, canonical_root, tame, unit_grads, wild, ScaledAcc};

const P: usize = 6;

/// Replays the plan with `width` units per round.
fn fold(shape: Shape, grads: &[Vec<f32>], width: usize) -> Vec<f32> {
    let p = grads.first().map_or(P, Vec::len);
    let mut bufs = vec![f32::NAN; FoldPlan::buffers_for(shape.depth(), width) * p];
    let mut out = vec![f32::NAN; p];
    fold_sequential(
        &F32Acc,
        shape,
        grads.len(),
        width,
        &mut bufs,
        &mut out,
        |u, g| {
            assert!(g.iter().all(|&x| x == 0.0), "unit buffer not zeroed");
            g.copy_from_slice(&grads[u]);
        },
    )
    .unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn every_width_replays_the_canonical_fold(
        d in 0u32..=3, b in 1u32..=12, units in 1usize..=40, seed in any::<u64>()
    ) {
        let shape = Shape::new(d, b).unwrap();
        let grads = unit_grads(units, P, |u, i| wild(seed, u, i));
        let expected = bits(&canonical_root(&shape, &grads, P));
        for width in 1..=8 {
            prop_assert_eq!(&bits(&fold(shape, &grads, width)), &expected, "width {}", width);
        }
    }

    #[test]
    fn plan_structure(d in 0u32..=4, b in 1u32..=12, units in 0usize..=300, width in 1usize..=MAX_WIDTH) {
        let shape = Shape::new(d, b).unwrap();
        let mut plan = FoldPlan::new(shape, units, width).unwrap();
        prop_assert_eq!(plan.buffers(), width + d as usize + 1);
        prop_assert_eq!(plan.rounds(), units.div_ceil(width));
        let (mut rounds, mut adds, mut next) = (0, 0, 0);
        while let Some(round) = plan.next_round() {
            prop_assert_eq!(round.units().start, next);
            prop_assert!(!round.is_empty() && round.len() <= width);
            next = round.units().end;
            let mut seen = vec![false; plan.buffers()];
            for (k, (u, buf)) in round.unit_buffers().enumerate() {
                prop_assert_eq!(u, round.units().start + k);
                prop_assert_eq!(round.unit_buffer(k), Some(buf));
                prop_assert!(buf < plan.buffers() && !seen[buf], "unit buffers must be distinct");
                seen[buf] = true;
            }
            prop_assert_eq!(round.unit_buffer(round.len()), None);
            for op in round.ops() {
                prop_assert!(op.src != op.dst && op.src < plan.buffers() && op.dst < plan.buffers());
                adds += 1;
            }
            // ops() is repeatable.
            prop_assert_eq!(round.ops().count(), round.ops().count());
            rounds += 1;
        }
        prop_assert_eq!(next, units);
        prop_assert_eq!(rounds, plan.rounds());
        // Every addition merges two partial sums into one: n units, n - 1 adds.
        prop_assert_eq!(adds, units.saturating_sub(1));
        prop_assert_eq!(plan.root().is_some(), units > 0);
        // The sum ends where unit 0 was computed (executors keep the
        // gradient there instead of copying it out).
        prop_assert_eq!(plan.root(), (units > 0).then_some(0));
    }
}

#[test]
fn the_comparison_has_teeth() {
    // With these values the order of additions changes the bits, so the
    // canonical comparisons above would catch a plan that adds out of order.
    let shape = Shape::new(2, 3).unwrap();
    let grads = unit_grads(20, 64, |u, i| wild(7, u, i));
    let tree = bits(&canonical_root(&shape, &grads, 64));
    let flat = bits(&canonical_root(&Shape::new(0, 3).unwrap(), &grads, 64));
    assert_ne!(
        tree, flat,
        "tree order and flat order should differ somewhere"
    );
    let other = bits(&canonical_root(&Shape::new(1, 12).unwrap(), &grads, 64));
    assert_ne!(
        tree, other,
        "different shapes should give different f32 bits"
    );
    assert_eq!(bits(&fold(shape, &grads, 1)), tree);
}

#[test]
fn no_units_give_zeros_and_no_rounds() {
    let shape = Shape::new(2, 4).unwrap();
    let mut plan = FoldPlan::new(shape, 0, 3).unwrap();
    assert!(plan.next_round().is_none());
    assert_eq!(plan.root(), None);
    assert_eq!(fold(shape, &[], 3), vec![0.0; P]);
}

#[test]
fn root_is_known_only_after_the_last_round() {
    let mut plan = FoldPlan::new(Shape::new(1, 2).unwrap(), 5, 2).unwrap();
    for _ in 0..plan.rounds() {
        assert_eq!(plan.root(), None);
        assert!(plan.next_round().is_some());
    }
    assert!(plan.next_round().is_none());
    assert!(plan.root().is_some());
}

#[test]
fn lone_units_keep_their_bits() {
    // One unit: a chain of moves, no addition, so even -0.0 survives.
    let shape = Shape::new(3, 5).unwrap();
    let grads = vec![vec![-0.0, 1.5e-40, -3.0, 7.0e30, 0.1, 2.0]];
    assert_eq!(bits(&fold(shape, &grads, 1)), bits(&grads[0]));
}

#[test]
fn limits_are_errors() {
    let s = Shape::new(1, 2).unwrap();
    assert_eq!(
        FoldPlan::new(s, 3, 0).unwrap_err(),
        ReduceError::Width {
            width: 0,
            max: MAX_WIDTH
        }
    );
    assert_eq!(
        FoldPlan::new(s, 3, MAX_WIDTH + 1).unwrap_err(),
        ReduceError::Width {
            width: MAX_WIDTH + 1,
            max: MAX_WIDTH
        }
    );
    let deep = Shape::new(MAX_DEPTH + 1, 1).unwrap();
    assert_eq!(
        FoldPlan::new(deep, 3, 1).unwrap_err(),
        ReduceError::Depth {
            depth: MAX_DEPTH + 1,
            max: MAX_DEPTH
        }
    );
    assert!(FoldPlan::new(Shape::new(MAX_DEPTH, 2).unwrap(), 3, MAX_WIDTH).is_ok());
    let msg = ReduceError::Width {
        width: 0,
        max: MAX_WIDTH,
    }
    .to_string();
    assert!(msg.contains('0') && msg.contains("256"), "{msg}");
}

#[test]
fn short_buffers_and_bad_gradients_are_errors() {
    let s = Shape::new(2, 3).unwrap();
    let mut bufs = vec![0.0; FoldPlan::buffers_for(2, 2) * 4 - 1];
    let mut out = [0.0; 4];
    let err = fold_sequential(&F32Acc, s, 5, 2, &mut bufs, &mut out, |_, _| {}).unwrap_err();
    assert_eq!(
        err,
        ReduceError::BufferLength {
            expected: 20,
            got: 19
        }
    );

    // A NaN in a unit that is only ever moved (the only unit) is still reported.
    let mut bufs = vec![0.0; FoldPlan::buffers_for(2, 1) * 4];
    let err = fold_sequential(&F32Acc, s, 1, 1, &mut bufs, &mut out, |_, g| {
        g[2] = f32::NAN
    })
    .unwrap_err();
    assert_eq!(
        err,
        ReduceError::Acc(cllm_core::accumulate::AccError::new(
            AccErrorKind::NonFinite,
            2
        ))
    );
    // And one that is added.
    let err = fold_sequential(&F32Acc, s, 9, 1, &mut bufs, &mut out, |u, g| {
        if u == 4 {
            g[3] = f32::INFINITY
        }
    })
    .unwrap_err();
    assert!(
        matches!(err, ReduceError::Acc(e) if e.kind == AccErrorKind::NonFinite && e.index == 3)
    );
}

#[test]
fn reduce_sequential_picks_the_path_by_associativity() {
    let shape = Shape::new(2, 3).unwrap();
    let units = 17;
    let p = 32;
    let grads = unit_grads(units, p, |u, i| wild(11, u, i));
    // f32: the canonical tree order, in (depth + 2) * P floats.
    let mut bufs = vec![0.0; sequential_f32_len::<F32Acc>(2, p)];
    assert_eq!(bufs.len(), 4 * p);
    assert_eq!(sequential_cell_len::<F32Acc>(p), 0);
    let mut out = vec![0.0; p];
    reduce_sequential(
        &F32Acc,
        shape,
        units,
        &mut bufs,
        &mut [],
        &mut out,
        |u, g| g.copy_from_slice(&grads[u]),
    )
    .unwrap();
    assert_eq!(bits(&out), bits(&canonical_root(&shape, &grads, p)));

    // Associative: one accumulator, any shape gives the same bits.
    let grads = unit_grads(units, p, |u, i| tame(11, u, i));
    let mut scratch = vec![0.0; sequential_f32_len::<ScaledAcc>(2, p)];
    let mut cells = vec![0i64; sequential_cell_len::<ScaledAcc>(p)];
    assert_eq!((scratch.len(), cells.len()), (p, p));
    let mut a = vec![0.0; p];
    reduce_sequential(
        &ScaledAcc,
        shape,
        units,
        &mut scratch,
        &mut cells,
        &mut a,
        |u, g| g.copy_from_slice(&grads[u]),
    )
    .unwrap();
    let mut b = vec![0.0; p];
    accumulate_sequential(
        &ScaledAcc,
        units,
        &mut cells,
        &mut scratch,
        &mut b,
        |u, g| g.copy_from_slice(&grads[u]),
    )
    .unwrap();
    assert_eq!(bits(&a), bits(&b));
    // The exact sum (the test values are on the accumulator's grid).
    for (i, x) in a.iter().enumerate() {
        let exact: f64 = grads.iter().map(|g| g[i] as f64).sum();
        assert_eq!(*x, exact as f32);
    }
    let err = accumulate_sequential(
        &ScaledAcc,
        1,
        &mut cells[..3],
        &mut scratch,
        &mut b,
        |_, _| {},
    )
    .unwrap_err();
    assert_eq!(
        err,
        ReduceError::BufferLength {
            expected: p,
            got: 3
        }
    );
}
