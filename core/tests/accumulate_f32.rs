//! The plain `f32` accumulator: error reporting of the chunked finite check.

use cllm_core::accumulate::{AccError, AccErrorKind, Accumulator, F32Acc};

#[test]
fn adds_elementwise_in_order() {
    let mut cells = vec![1.0f32, 2.0, 3.0];
    F32Acc.add(&mut cells, &[0.5, -2.0, 1e-8]).unwrap();
    assert_eq!(cells, vec![1.5, 0.0, 3.0 + 1e-8]);
    let src = cells.clone();
    F32Acc.merge(&mut cells, &src).unwrap();
    assert_eq!(cells, vec![3.0, 0.0, 2.0 * (3.0 + 1e-8)]);
}

#[test]
fn first_non_finite_index_in_any_chunk_and_all_cells_added() {
    for n in [1usize, 255, 256, 257, 1000] {
        for bad_at in [0, n / 2, n - 1] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut cells = vec![1.0f32; n];
                let mut xs = vec![1.0f32; n];
                xs[bad_at] = bad;
                if bad_at + 7 < n {
                    xs[bad_at + 7] = f32::NAN; // a later one must not win
                }
                let r = F32Acc.add(&mut cells, &xs);
                assert_eq!(
                    r,
                    Err(AccError::new(AccErrorKind::NonFinite, bad_at)),
                    "n={n} at={bad_at}"
                );
                assert!(cells
                    .iter()
                    .enumerate()
                    .all(|(i, c)| !c.is_finite() || (*c == 2.0 && i != bad_at)));
                assert_eq!(cells[n - 1] == 2.0, bad_at != n - 1 && bad_at + 7 != n - 1);
            }
        }
    }
}

#[test]
fn overflow_to_infinity_is_reported() {
    let mut cells = vec![0.0f32; 600];
    cells[300] = f32::MAX;
    let mut xs = vec![0.0f32; 600];
    xs[300] = f32::MAX;
    assert_eq!(
        F32Acc.add(&mut cells, &xs),
        Err(AccError::new(AccErrorKind::NonFinite, 300))
    );
}

#[test]
fn length_mismatch_changes_nothing() {
    let mut cells = vec![1.0f32; 3];
    assert_eq!(
        F32Acc.add(&mut cells, &[1.0; 2]),
        Err(AccError::new(AccErrorKind::LengthMismatch, 2))
    );
    assert_eq!(cells, vec![1.0; 3]);
}
