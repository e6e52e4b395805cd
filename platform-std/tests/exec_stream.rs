//! Streaming reduction (segments reduced while backward runs) against the
//! reduction phase after backward: the same bits for every accumulator,
//! shape, thread count and head, in whole steps and in partial jobs.

use std::sync::Arc;

use cllm_core::accumulate::{Accumulator, ExactAcc, F32Acc, FixedAcc};
use cllm_core::kernels::Portable;
use cllm_core::model::{self, GptConfig};
use cllm_core::reduce::SEGMENT_LEN;
use cllm_core::tree::Shape;
use cllm_std::exec::{ExecConfig, Hierarchy};

mod common;
use common::{adamw, bits, exec_config, small_gpt, update_at, Hashed};

/// Several blocks and about twenty segments, so that segments really are
/// reduced while lower blocks are still in backward.
const MODEL: GptConfig = small_gpt(40, 48, 3);
const SEQ: usize = 6;
const MB: usize = 2;

fn token(vocab: usize, step: u64, unit: usize, i: usize) -> u32 {
    let z = (step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (unit as u64) << 20 ^ i as u64)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((z ^ (z >> 31)) % vocab as u64) as u32
}

const HASHED: Hashed = Hashed::new(token, MODEL.vocab_size, 0);

fn hierarchy<A: Accumulator + Send + 'static>(
    model: GptConfig,
    acc: A,
    layout: (u32, u32, usize, usize),
    stream: bool,
) -> Hierarchy<A, Portable>
where
    A::Cell: 'static,
{
    hierarchy_with(model, acc, layout, stream, false)
}

fn hierarchy_with<A: Accumulator + Send + 'static>(
    model: GptConfig,
    acc: A,
    (depth, branching, threads, units): (u32, u32, usize, usize),
    stream: bool,
    recompute_blocks: bool,
) -> Hierarchy<A, Portable>
where
    A::Cell: 'static,
{
    let mut p = vec![0.0; model.num_params()];
    model::init_params(&model, &mut p, 3).unwrap();
    let cfg = ExecConfig {
        max_retries: 0,
        recompute_blocks,
        ..exec_config(
            Shape::new(depth, branching).unwrap(),
            threads,
            units,
            MB,
            SEQ,
        )
    };
    let mut h = Hierarchy::new(model, p, acc, Portable, Arc::new(HASHED), cfg).unwrap();
    h.set_streaming(stream);
    h
}

const LAYOUTS: [(u32, u32, usize, usize); 5] = [
    (1, 12, 2, 6),
    (2, 3, 3, 7),
    (0, 1, 4, 5),
    (1, 4, 5, 8),
    (3, 2, 2, 3),
];

/// Two training steps and the gradient of a third, streamed or not.
fn run<A: Accumulator + Clone + Send + 'static>(
    model: GptConfig,
    acc: &A,
    layout: (u32, u32, usize, usize),
    stream: bool,
) -> (Vec<u32>, Vec<u32>, Vec<u32>)
where
    A::Cell: 'static,
{
    run_with(hierarchy(model, acc.clone(), layout, stream))
}

fn run_with<A: Accumulator + Send + 'static>(
    mut h: Hierarchy<A, Portable>,
) -> (Vec<u32>, Vec<u32>, Vec<u32>)
where
    A::Cell: 'static,
{
    let mut losses = Vec::new();
    for step in 0..2u64 {
        let s = h
            .train_step(step, update_at(adamw(0.1), 1.0, step + 1))
            .unwrap();
        losses.push(s.loss.to_bits());
        losses.push(s.grad_norm.to_bits());
    }
    h.compute_gradients(2).unwrap();
    (bits(h.params()), bits(h.gradients()), losses)
}

fn streamed_equals_phased<A: Accumulator + Clone + Send + 'static>(acc: A, name: &str)
where
    A::Cell: 'static,
{
    for untied_head in [false, true] {
        let model = GptConfig {
            untied_head,
            ..MODEL
        };
        assert!(model.num_params() > 20 * SEGMENT_LEN);
        for layout in LAYOUTS {
            let phased = run(model, &acc, layout, false);
            let streamed = run(model, &acc, layout, true);
            assert!(
                streamed == phased,
                "{name} untied {untied_head} layout {layout:?}: streamed bits differ"
            );
        }
    }
}

#[test]
fn f32_streamed_equals_phased() {
    streamed_equals_phased(F32Acc, "f32");
}

#[test]
fn fixed_streamed_equals_phased() {
    streamed_equals_phased(FixedAcc::default(), "fixed");
}

#[test]
fn exact_streamed_equals_phased() {
    streamed_equals_phased(ExactAcc, "exact");
}

#[test]
fn partial_jobs_stream_to_the_same_sums() {
    for layout in LAYOUTS {
        let leaves = 0..Shape::new(layout.0, layout.1).unwrap().leaf_count() / 2 + 1;
        let mut f = [false, true].map(|s| hierarchy(MODEL, F32Acc, layout, s));
        let mut e = [false, true].map(|s| hierarchy(MODEL, ExactAcc, layout, s));
        for h in f.iter_mut() {
            h.compute_partial(1, leaves.clone()).unwrap();
        }
        for h in e.iter_mut() {
            h.compute_partial(1, leaves.clone()).unwrap();
        }
        assert!(
            bits(f[0].gradients()) == bits(f[1].gradients()),
            "f32 {layout:?}"
        );
        assert!(
            e[0].merged_cells() == e[1].merged_cells(),
            "exact {layout:?}"
        );
    }
}

#[test]
fn an_overlapped_partial_job_hands_out_every_piece_once_top_down() {
    let n = MODEL.num_params();
    for layout in LAYOUTS {
        let leaves = 0..Shape::new(layout.0, layout.1).unwrap().leaf_count() / 2 + 1;
        let mut a = hierarchy(MODEL, ExactAcc, layout, false);
        let sa = a.compute_partial(1, leaves.clone()).unwrap();
        let want = a.merged_cells().to_vec();
        let mut b = hierarchy(MODEL, ExactAcc, layout, false);
        let mut pieces = Vec::new();
        let sb = b
            .compute_partial_overlapped(1, leaves, 3, &mut |r, cells| {
                assert!(cells == &want[r.clone()], "{layout:?}: piece {r:?}");
                cells.fill(ExactAcc.zero_cell());
                pieces.push(r);
            })
            .unwrap();
        assert_eq!(sa.loss.to_bits(), sb.loss.to_bits());
        let mut top = n;
        for r in &pieces {
            assert_eq!(r.end, top, "{layout:?}: pieces {pieces:?}");
            assert!(r.len() <= 3 * SEGMENT_LEN && !r.is_empty());
            top = r.start;
        }
        assert_eq!(top, 0, "{layout:?}: the pieces cover the buffer");
        // What the callback wrote stays.
        assert!(b.merged_cells().iter().all(|c| *c == ExactAcc.zero_cell()));
        // The next whole step is unaffected.
        let mut c = hierarchy(MODEL, ExactAcc, layout, false);
        let (gb, gc) = (
            b.compute_gradients(2).unwrap(),
            c.compute_gradients(2).unwrap(),
        );
        assert_eq!(gb.grad_norm.to_bits(), gc.grad_norm.to_bits());
        assert!(bits(b.gradients()) == bits(c.gradients()), "{layout:?}");
    }
}

#[test]
fn a_panicking_piece_handler_waits_for_the_workers_and_leaves_the_hierarchy_usable() {
    let layout = (1, 4, 3, 8);
    let mut h = hierarchy(MODEL, ExactAcc, layout, false);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        h.compute_partial_overlapped(0, 0..4, 2, &mut |_, _| panic!("handler failed"))
    }));
    assert!(r.is_err(), "the handler's panic reaches the caller");
    let mut fresh = hierarchy(MODEL, ExactAcc, layout, false);
    h.compute_gradients(1).unwrap();
    fresh.compute_gradients(1).unwrap();
    assert!(bits(h.gradients()) == bits(fresh.gradients()));
}

#[test]
fn recomputed_blocks_train_to_the_same_bits() {
    for layout in [(1, 12, 2, 6), (2, 3, 3, 7)] {
        let plain = run(MODEL, &F32Acc, layout, false);
        let h = hierarchy_with(MODEL, F32Acc, layout, false, true);
        assert!(h.memory_bytes() < hierarchy(MODEL, F32Acc, layout, false).memory_bytes());
        assert!(run_with(h) == plain, "f32 {layout:?}");
        let exact = run(MODEL, &ExactAcc, layout, false);
        let h = hierarchy_with(MODEL, ExactAcc, layout, true, true);
        assert!(run_with(h) == exact, "exact, streamed {layout:?}");
    }
}
