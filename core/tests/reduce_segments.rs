//! Segments, shared slices and the per-participant segment operations,
//! checked single-threaded (each participant's call in turn).
#![cfg(not(loom))]

mod reduce_support;

use std::num::NonZeroUsize;

use cllm_core::accumulate::{AccError, AccErrorKind, F32Acc};
use cllm_core::reduce::{
    merge_owned_segments, round_owned_segments, ReduceError, Segments, SharedSlice, SEGMENT_LEN,
};
use reduce_support::ScaledAcc;

fn seg(len: usize, s: usize) -> Segments {
    Segments::with_segment_len(len, NonZeroUsize::new(s).unwrap())
}

#[test]
fn segments_cover_the_buffer_once() {
    assert_eq!(SEGMENT_LEN, 4096);
    assert_eq!(Segments::new(10_000).count(), 3);
    assert_eq!(Segments::new(10_000).range(2), 8192..10_000);
    for len in [0, 1, 5, 64, 65, 1000] {
        for s in [1, 3, 64, 2000] {
            let g = seg(len, s);
            assert_eq!(g.count(), len.div_ceil(s));
            let mut next = 0;
            for i in 0..g.count() {
                let r = g.range(i);
                assert_eq!(r.start, next);
                assert!(!r.is_empty() && r.len() <= s);
                next = r.end;
            }
            assert_eq!(next, len);
            assert_eq!(g.range(g.count()), len..len);
            assert_eq!(g.range(usize::MAX), len..len);
            for n in 1..=7 {
                let mut owner = vec![usize::MAX; g.count()];
                for p in 0..n {
                    let owned = g.owned(p, n);
                    assert_eq!(owned.len(), owned.clone().count());
                    for i in owned {
                        assert_eq!(owner[i], usize::MAX, "segment {i} owned twice");
                        owner[i] = p;
                        assert_eq!(g.owner(i, n), Some(p));
                    }
                }
                assert!(owner.iter().all(|&o| o < n), "every segment has an owner");
                // Balanced: counts differ by at most one.
                let counts: Vec<usize> = (0..n).map(|p| g.owned(p, n).count()).collect();
                assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
            }
            assert_eq!(g.owned(3, 3).count(), 0);
            assert_eq!(g.owned(0, 0).count(), 0);
            assert_eq!(g.owner(0, 0), None);
        }
    }
}

#[test]
fn boundaries_do_not_depend_on_participants() {
    let g = seg(1000, 64);
    let all: Vec<_> = (0..g.count()).map(|i| g.range(i)).collect();
    for n in 1..=9 {
        let mut got: Vec<_> = (0..n).flat_map(|p| g.owned_ranges(p, n)).collect();
        got.sort_by_key(|r| r.start);
        assert_eq!(got, all);
    }
}

#[test]
fn merge_in_turn_equals_a_whole_merge() {
    let len = 103;
    let g = seg(len, 8);
    let srcs: Vec<Vec<f32>> = (0..3)
        .map(|k| (0..len).map(|i| (i * 7 + k * 1000) as f32).collect())
        .collect();
    for n in 1..=5 {
        let mut dst: Vec<f32> = (0..len).map(|i| i as f32 * 0.5).collect();
        let mut src_store = srcs.clone();
        let expected: Vec<f32> = (0..len)
            .map(|i| dst[i] + srcs[0][i] + srcs[1][i] + srcs[2][i])
            .collect();
        {
            let d = SharedSlice::new(&mut dst);
            let s: Vec<SharedSlice<f32>> =
                src_store.iter_mut().map(|v| SharedSlice::new(v)).collect();
            for p in 0..n {
                // SAFETY: one participant at a time.
                unsafe { merge_owned_segments(&F32Acc, &g, p, n, &d, &s) }.unwrap();
            }
        }
        assert_eq!(dst, expected, "{n} participants");
        assert_eq!(src_store, srcs, "sources are read only");
    }
}

#[test]
fn merge_errors_carry_whole_buffer_indices() {
    let g = seg(50, 8);
    let mut dst = vec![0.0f32; 50];
    let mut a = vec![1.0f32; 50];
    a[37] = f32::NAN;
    let mut short = vec![0.0f32; 49];
    let d = SharedSlice::new(&mut dst);
    let s = [SharedSlice::new(&mut a)];
    // Segment 4 (32..40) belongs to participant 0 of 2.
    let err = unsafe { merge_owned_segments(&F32Acc, &g, 0, 2, &d, &s) }.unwrap_err();
    assert_eq!(
        err,
        ReduceError::Acc(AccError::new(AccErrorKind::NonFinite, 37))
    );
    assert!(err.to_string().contains("37"));
    // Participant 1 does not own it.
    unsafe { merge_owned_segments(&F32Acc, &g, 1, 2, &d, &s) }.unwrap();
    let bad = [SharedSlice::new(&mut short)];
    let err = unsafe { merge_owned_segments(&F32Acc, &g, 0, 2, &d, &bad) }.unwrap_err();
    assert_eq!(
        err,
        ReduceError::BufferLength {
            expected: 50,
            got: 49
        }
    );
}

#[test]
fn merging_a_buffer_into_itself_is_refused() {
    let g = seg(16, 4);
    let mut v = [vec![1i64; 16], vec![2i64; 16]];
    let s: Vec<SharedSlice<i64>> = v.iter_mut().map(|x| SharedSlice::new(x)).collect();
    let err = unsafe { merge_owned_segments(&ScaledAcc, &g, 0, 1, &s[0], &s) }.unwrap_err();
    assert_eq!(err, ReduceError::Aliased { src: 0 });
    let err = unsafe { merge_owned_segments(&ScaledAcc, &g, 0, 1, &s[1], &s) }.unwrap_err();
    assert_eq!(err, ReduceError::Aliased { src: 1 });
    let mut f = vec![0.0f32; 16];
    let fs = SharedSlice::new(&mut f);
    let err = unsafe { round_owned_segments(&F32Acc, &g, 0, 1, &fs, &fs) }.unwrap_err();
    assert_eq!(err, ReduceError::Aliased { src: 0 });
}

#[test]
fn rounding_by_segment() {
    let g = seg(21, 4);
    let mut cells: Vec<i64> = (0..21).map(|i| (i as i64) << 19).collect(); // i / 2
    let mut out = vec![f32::NAN; 21];
    {
        let c = SharedSlice::new(&mut cells);
        let o = SharedSlice::new(&mut out);
        for p in 0..3 {
            unsafe { round_owned_segments(&ScaledAcc, &g, p, 3, &c, &o) }.unwrap();
        }
    }
    assert_eq!(out, (0..21).map(|i| i as f32 / 2.0).collect::<Vec<_>>());
}

#[test]
fn shared_slice_hands_out_ranges() {
    let mut v = vec![0u32; 10];
    {
        let mut s = SharedSlice::new(&mut v);
        assert_eq!(s.len(), 10);
        unsafe {
            let a = s.range_mut(0..4);
            let b = s.range_mut(4..10);
            a.fill(1);
            b.fill(2);
            assert_eq!(s.range(3..5), &[1, 2]);
            assert!(s.range(10..10).is_empty());
        }
        s.as_mut_slice()[9] = 3;
    }
    assert_eq!(v, [1, 1, 1, 1, 2, 2, 2, 2, 2, 3]);
}

#[test]
#[should_panic(expected = "out of a shared slice of 10 elements")]
fn shared_slice_checks_bounds() {
    let mut v = vec![0u32; 10];
    let s = SharedSlice::new(&mut v);
    let _ = unsafe { s.range(5..11) };
}
