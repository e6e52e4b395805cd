//! Model checking of the segment protocol with loom: every interleaving of
//! 2–3 participants (bounded preemptions), tiny buffers of 3 segments.
//!
//! `SharedSlice` reports each element access to loom under `cfg(loom)`, so
//! a barrier that did not order the phases' memory would be a reported
//! causality violation, not just a wrong number (see the negative control).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p cllm-core --release --test loom_reduce`
#![cfg(loom)]

use std::num::NonZeroUsize;

use cllm_core::accumulate::F32Acc;
use cllm_core::reduce::{merge_owned_segments, Aborted, Segments, SharedSlice, SpinBarrier};
use loom::sync::Arc;
use loom::thread;

const LEN: usize = 3;

struct Team {
    barrier: SpinBarrier,
    segments: Segments,
    bufs: Vec<SharedSlice<'static, f32>>,
}

fn team(participants: usize, segment_len: usize) -> Arc<Team> {
    // loom threads need 'static data; a few leaked floats per explored
    // schedule are the price (megabytes for the whole run).
    let bufs = (0..participants)
        .map(|_| SharedSlice::new(Box::leak(vec![0.0f32; LEN].into_boxed_slice())))
        .collect();
    Arc::new(Team {
        barrier: SpinBarrier::new(participants),
        segments: Segments::with_segment_len(LEN, NonZeroUsize::new(segment_len).unwrap()),
        bufs,
    })
}

fn value(t: usize, i: usize) -> f32 {
    ((t + 1) * 10 + i) as f32
}

/// Participant `t`: fill its own buffer, (barrier), merge its segments of
/// every buffer into buffer 0, barrier.
fn participant(team: &Team, t: usize, with_first_barrier: bool) {
    let n = team.bufs.len();
    // SAFETY: buffer t is participant t's alone before the first barrier.
    let mine = unsafe { team.bufs[t].range_mut(0..LEN) };
    for (i, x) in mine.iter_mut().enumerate() {
        *x = value(t, i);
    }
    if with_first_barrier {
        team.barrier.wait().unwrap();
    }
    // SAFETY: owned segments only (and, with the barrier, all fills are done).
    unsafe {
        merge_owned_segments(
            &F32Acc,
            &team.segments,
            t,
            n,
            &team.bufs[0],
            &team.bufs[1..],
        )
    }
    .unwrap();
    team.barrier.wait().unwrap();
}

/// Explores every interleaving of `f` with at most `preemptions`
/// preemptions (`None`: unbounded).
fn check_bounded(preemptions: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = preemptions;
    builder.check(f);
}

fn merge_model(
    participants: usize,
    segment_len: usize,
    preemptions: Option<usize>,
    with_first_barrier: bool,
) {
    check_bounded(preemptions, move || {
        let team = team(participants, segment_len);
        let others: Vec<_> = (1..participants)
            .map(|t| {
                let team = team.clone();
                thread::spawn(move || participant(&team, t, with_first_barrier))
            })
            .collect();
        participant(&team, 0, with_first_barrier);
        // After the last barrier every segment is merged: read it all.
        // SAFETY: all writes happened before the barrier we passed.
        let got = unsafe { team.bufs[0].range(0..LEN) }.to_vec();
        let expected: Vec<f32> = (0..LEN)
            .map(|i| (0..participants).map(|t| value(t, i)).sum())
            .collect();
        assert_eq!(got, expected);
        for h in others {
            h.join().unwrap();
        }
    });
}

#[test]
fn two_participants_merge_three_segments() {
    merge_model(2, 1, None, true);
}

#[test]
fn three_participants_merge_three_segments() {
    merge_model(3, 1, Some(4), true);
}

#[test]
fn two_participants_uneven_segments() {
    // Segment length 2: segments {0,1} and {2}; participant 1 owns the short one.
    merge_model(2, 2, None, true);
}

#[test]
#[should_panic(expected = "Causality violation")]
fn loom_catches_a_missing_barrier() {
    // Negative control: merging before every participant has filled its
    // buffer reads memory another thread writes without ordering.
    merge_model(2, 1, Some(2), false);
}

#[test]
fn abort_releases_a_waiter() {
    loom::model(|| {
        let barrier = Arc::new(SpinBarrier::new(2));
        let b = barrier.clone();
        let aborter = thread::spawn(move || b.abort());
        assert_eq!(barrier.wait(), Err(Aborted));
        aborter.join().unwrap();
        assert!(barrier.is_aborted());
    });
}

#[test]
fn abort_releases_every_waiter_of_three() {
    check_bounded(Some(3), || {
        let barrier = Arc::new(SpinBarrier::new(3));
        let b = barrier.clone();
        let waiter = thread::spawn(move || b.wait());
        let b = barrier.clone();
        let aborter = thread::spawn(move || b.abort());
        assert_eq!(barrier.wait(), Err(Aborted));
        assert_eq!(waiter.join().unwrap(), Err(Aborted));
        aborter.join().unwrap();
    });
}

#[test]
fn abort_after_a_completed_phase() {
    // Participant 1 passes phase 1, then aborts. Phase 1 completed, so
    // participant 0 sees it as done; its next wait fails. Nobody hangs.
    check_bounded(Some(3), || {
        let barrier = Arc::new(SpinBarrier::new(2));
        let b = barrier.clone();
        let other = thread::spawn(move || {
            let first = b.wait();
            b.abort();
            first
        });
        assert_eq!(barrier.wait(), Ok(()));
        assert_eq!(barrier.wait(), Err(Aborted));
        assert_eq!(other.join().unwrap(), Ok(()));
    });
}
