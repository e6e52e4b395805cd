//! The protocol on real threads: f32 bitwise equal to the sequential
//! reference for 1..=4 threads, associative accumulators equal across all
//! shapes and thread counts, and barriers that abort instead of hanging.
#![cfg(not(loom))]

mod reduce_support;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use cllm_core::accumulate::{AccErrorKind, Accumulator, F32Acc};
use cllm_core::reduce::{
    accumulate_sequential, fold_sequential, merge_owned_segments, replay_owned_segments,
    round_owned_segments, Aborted, FoldPlan, ReduceError, Segments, SharedSlice, SpinBarrier,
    SEGMENT_LEN,
};
use cllm_core::tree::Shape;
use reduce_support::{
    bits, canonical_root, tame, unit_grads, wild, with_timeout, ScaledAcc, Yield,
};

fn seg(len: usize, s: usize) -> Segments {
    Segments::with_segment_len(len, NonZeroUsize::new(s).unwrap())
}

/// The f32 protocol on `threads` threads: each builds its own plan; per
/// round, thread k computes unit k into its buffer, barrier, every thread
/// replays the additions on its own segments, barrier.
fn f32_threaded(shape: Shape, grads: &[Vec<f32>], threads: usize, segments: Segments) -> Vec<f32> {
    let p = segments.len();
    let units = grads.len();
    let mut storage = vec![vec![f32::NAN; p]; FoldPlan::buffers_for(shape.depth(), threads)];
    let bufs: Vec<SharedSlice<f32>> = storage.iter_mut().map(|b| SharedSlice::new(b)).collect();
    let barrier = SpinBarrier::<Yield>::with_relax(threads);
    let roots: Vec<Option<usize>> = thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (bufs, barrier, segments) = (&bufs, &barrier, &segments);
                s.spawn(move || -> Result<Option<usize>, ReduceError> {
                    let guard = barrier.abort_on_drop();
                    let mut plan = FoldPlan::new(shape, units, threads)?;
                    while let Some(round) = plan.next_round() {
                        if let Some((u, b)) = round.unit_buffers().nth(t) {
                            // SAFETY: unit buffers are distinct; ours until the barrier.
                            unsafe { bufs[b].range_mut(0..p) }.copy_from_slice(&grads[u]);
                        }
                        barrier.wait()?;
                        // SAFETY: each thread replays its own segments only.
                        unsafe {
                            replay_owned_segments(&F32Acc, &round, segments, t, threads, bufs)
                        }?;
                        barrier.wait()?;
                    }
                    guard.disarm();
                    Ok(plan.root())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap().unwrap())
            .collect()
    });
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "threads disagree on the root buffer"
    );
    drop(bufs);
    match roots[0] {
        Some(r) => storage[r].clone(),
        None => vec![0.0; p],
    }
}

fn f32_sequential(shape: Shape, grads: &[Vec<f32>], p: usize) -> Vec<f32> {
    let mut bufs = vec![0.0; FoldPlan::buffers_for(shape.depth(), 1) * p];
    let mut out = vec![0.0; p];
    fold_sequential(
        &F32Acc,
        shape,
        grads.len(),
        1,
        &mut bufs,
        &mut out,
        |u, g| g.copy_from_slice(&grads[u]),
    )
    .unwrap();
    out
}

#[test]
fn f32_threads_match_the_sequential_reference_bitwise() {
    with_timeout(120, || {
        let p = 200;
        for (d, b) in [(0, 12), (1, 12), (2, 3), (3, 2), (2, 12), (3, 1), (1, 5)] {
            let shape = Shape::new(d, b).unwrap();
            for units in [1, 7, 40] {
                let grads = unit_grads(units, p, |u, i| wild(d as u64 * 100 + b as u64, u, i));
                let reference = bits(&f32_sequential(shape, &grads, p));
                assert_eq!(reference, bits(&canonical_root(&shape, &grads, p)));
                for threads in 1..=4 {
                    let got = f32_threaded(shape, &grads, threads, seg(p, 7));
                    assert_eq!(
                        bits(&got),
                        reference,
                        "d={d} b={b} units={units} threads={threads}"
                    );
                }
            }
        }
    });
}

#[test]
fn f32_threads_with_the_real_segment_length() {
    with_timeout(120, || {
        let p = 2 * SEGMENT_LEN + 123; // three segments, the last one short
        let shape = Shape::new(2, 12).unwrap();
        let grads = unit_grads(30, p, |u, i| wild(99, u, i));
        let reference = bits(&f32_sequential(shape, &grads, p));
        for threads in 1..=4 {
            assert_eq!(
                bits(&f32_threaded(shape, &grads, threads, Segments::new(p))),
                reference
            );
        }
    });
}

/// The associative protocol: threads grab leaves dynamically (so which
/// thread sums which units depends on timing), add them into thread-local
/// cells, then merge and round by owned segment.
fn assoc_threaded<A: Accumulator>(
    acc: &A,
    shape: Shape,
    grads: &[Vec<f32>],
    threads: usize,
    segments: Segments,
) -> Result<Vec<f32>, Vec<ReduceError>> {
    let p = segments.len();
    let units = grads.len();
    let mut cells: Vec<Vec<A::Cell>> = (0..threads)
        .map(|_| (0..p).map(|_| acc.zero_cell()).collect())
        .collect();
    let mut out = vec![f32::NAN; p];
    let next_leaf = AtomicU32::new(0);
    let barrier = SpinBarrier::<Yield>::with_relax(threads);
    let results: Vec<Result<(), ReduceError>> = {
        let cs: Vec<SharedSlice<A::Cell>> = cells.iter_mut().map(|c| SharedSlice::new(c)).collect();
        let o = SharedSlice::new(&mut out);
        thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (cs, o, barrier, next_leaf, segments) =
                        (&cs, &o, &barrier, &next_leaf, &segments);
                    s.spawn(move || -> Result<(), ReduceError> {
                        let guard = barrier.abort_on_drop();
                        {
                            // SAFETY: each thread's cells are its own until the barrier.
                            let mine = unsafe { cs[t].range_mut(0..p) };
                            acc.zero(mine);
                            loop {
                                let j = next_leaf.fetch_add(1, Ordering::Relaxed);
                                if j >= shape.leaf_count() {
                                    break;
                                }
                                for u in shape.leaf_units(j, units) {
                                    acc.add(mine, &grads[u])?;
                                }
                            }
                        }
                        barrier.wait()?;
                        // SAFETY: owned segments only, all threads past the barrier.
                        unsafe {
                            merge_owned_segments(acc, segments, t, threads, &cs[0], &cs[1..])?;
                            round_owned_segments(acc, segments, t, threads, &cs[0], o)?;
                        }
                        guard.disarm();
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        })
    };
    let errors: Vec<ReduceError> = results.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[test]
fn associative_results_are_equal_for_all_shapes_and_thread_counts() {
    with_timeout(300, || {
        let p = 150;
        for units in [1, 13, 40] {
            let grads = unit_grads(units, p, |u, i| tame(units as u64, u, i));
            let mut cells = vec![0i64; p];
            let mut scratch = vec![0.0; p];
            let mut reference = vec![0.0; p];
            accumulate_sequential(
                &ScaledAcc,
                units,
                &mut cells,
                &mut scratch,
                &mut reference,
                |u, g| g.copy_from_slice(&grads[u]),
            )
            .unwrap();
            let reference = bits(&reference);
            for d in 0..=3 {
                for b in 1..=12 {
                    let shape = Shape::new(d, b).unwrap();
                    for threads in 1..=4 {
                        let got =
                            assoc_threaded(&ScaledAcc, shape, &grads, threads, seg(p, 16)).unwrap();
                        assert_eq!(
                            bits(&got),
                            reference,
                            "units={units} d={d} b={b} threads={threads}"
                        );
                    }
                }
            }
        }
    });
}

#[test]
fn a_failing_thread_releases_the_others() {
    with_timeout(60, || {
        let p = 64;
        let shape = Shape::new(2, 3).unwrap();
        let mut grads = unit_grads(20, p, |u, i| tame(5, u, i));
        grads[11][17] = f32::NAN;
        for threads in 1..=4 {
            let errors = assoc_threaded(&ScaledAcc, shape, &grads, threads, seg(p, 8)).unwrap_err();
            let nonfinite = errors
                .iter()
                .filter(|e| matches!(e, ReduceError::Acc(a) if a.kind == AccErrorKind::NonFinite && a.index == 17))
                .count();
            assert_eq!(nonfinite, 1, "{errors:?}");
            assert_eq!(
                errors.len(),
                threads,
                "the others see the abort: {errors:?}"
            );
            assert!(
                errors
                    .iter()
                    .filter(|e| **e == ReduceError::Aborted)
                    .count()
                    == threads - 1
            );
        }
    });
}

#[test]
fn barrier_orders_data_across_many_phases() {
    with_timeout(120, || {
        let threads = 4;
        let mut slots = vec![0u64; threads];
        let shared = SharedSlice::new(&mut slots);
        let barrier = SpinBarrier::<Yield>::with_relax(threads);
        thread::scope(|s| {
            for t in 0..threads {
                let (shared, barrier) = (&shared, &barrier);
                s.spawn(move || {
                    for phase in 1..=2000u64 {
                        // SAFETY: slot t is written only by thread t, between barriers.
                        unsafe { shared.range_mut(t..t + 1)[0] = phase };
                        barrier.wait().unwrap();
                        // SAFETY: nobody writes until the next barrier.
                        let seen = unsafe { shared.range(0..threads) };
                        assert!(seen.iter().all(|&x| x == phase), "phase {phase}: {seen:?}");
                        barrier.wait().unwrap();
                    }
                });
            }
        });
    });
}

#[test]
fn abort_releases_waiters_and_reset_makes_the_barrier_usable() {
    with_timeout(30, || {
        let mut barrier = SpinBarrier::<Yield>::with_relax(4);
        let results: Vec<Result<(), Aborted>> = thread::scope(|s| {
            let waiters: Vec<_> = (0..3).map(|_| s.spawn(|| barrier.wait())).collect();
            thread::sleep(Duration::from_millis(50));
            assert!(!barrier.is_aborted());
            barrier.abort();
            waiters.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(results, vec![Err(Aborted); 3]);
        assert!(barrier.is_aborted());
        assert_eq!(barrier.wait(), Err(Aborted), "later waits fail at once");
        barrier.reset();
        assert!(!barrier.is_aborted());
        let results: Vec<_> = thread::scope(|s| {
            let all: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (barrier.wait(), barrier.wait())))
                .collect();
            all.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(results, vec![(Ok(()), Ok(())); 4]);
    });
}

#[test]
fn a_panicking_participant_aborts_through_its_guard() {
    with_timeout(30, || {
        let barrier = SpinBarrier::<Yield>::with_relax(3);
        thread::scope(|s| {
            let waiters: Vec<_> = (0..2).map(|_| s.spawn(|| barrier.wait())).collect();
            let failing = s.spawn(|| {
                let _guard = barrier.abort_on_drop();
                panic!("worker failed (expected by the test)");
            });
            assert!(failing.join().is_err());
            for w in waiters {
                assert_eq!(w.join().unwrap(), Err(Aborted));
            }
        });
        // A disarmed guard does not abort.
        let one = SpinBarrier::new(1);
        one.abort_on_drop().disarm();
        assert!(!one.is_aborted());
        assert_eq!(one.wait(), Ok(()));
        assert_eq!(
            SpinBarrier::new(0).wait(),
            Ok(()),
            "0 participants acts as 1"
        );
        assert_eq!(SpinBarrier::new(0).participants(), 1);
    });
}
