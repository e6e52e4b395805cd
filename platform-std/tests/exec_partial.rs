//! The hooks for executors that span processes: a step split into blocks of
//! leaves computed by separate hierarchies (stand-ins for MPI ranks), their
//! sums combined outside, finished and applied segment range by segment
//! range, must reproduce `train_step` bit for bit for associative
//! accumulators; for f32 each block is the canonical fold of its units.

use std::ops::Range;
use std::sync::Arc;

use cllm_core::accumulate::{Accumulator, ExactAcc, F32Acc, FixedAcc};
use cllm_core::kernels::Portable;
use cllm_core::model::GptConfig;
use cllm_core::reduce::Segments;
use cllm_core::tree::Shape;
use cllm_std::exec::{
    leaf_block_units, ExecConfig, ExecError, Hierarchy, UnitSource, UpdateSettings,
};

mod common;
use common::{
    adamw, bits, exec_config, hashed_token, sequential_sum, small_gpt, spread_params, update_at,
    Hashed,
};

/// Large enough for several segments (SEGMENT_LEN = 4096).
const MODEL: GptConfig = small_gpt(13, 32, 1);
const SEQ: usize = 6;
const MB: usize = 1;

fn hierarchy<A: Accumulator + Send + 'static>(
    acc: A,
    c: ExecConfig,
    p: Vec<f32>,
) -> Hierarchy<A, Portable>
where
    A::Cell: 'static,
{
    Hierarchy::new(MODEL, p, acc, Portable, Arc::new(HASHED), c).unwrap()
}

const HASHED: Hashed = Hashed::new(hashed_token, MODEL.vocab_size, 0);

fn params() -> Vec<f32> {
    spread_params(&MODEL)
}

fn cfg(shape: Shape, threads: usize, units: usize) -> ExecConfig {
    exec_config(shape, threads, units, MB, SEQ)
}

fn update(t: u64) -> UpdateSettings {
    update_at(adamw(0.1), 0.5, t)
}

/// Contiguous blocks of the leaves, as ranks get them.
fn blocks(leaves: u32, n: u32) -> Vec<Range<u32>> {
    (0..n)
        .map(|r| r * leaves / n..(r + 1) * leaves / n)
        .collect()
}

/// Train `steps` steps with the step split over `ranks` simulated ranks
/// (each with its own hierarchy and thread count), the optimizer sharded by
/// contiguous segment blocks — each rank holds optimizer state for its own
/// block only (ZeRO stage 1); returns (params, m, v, losses).
fn split_run<A: Accumulator + Send + Clone + 'static>(
    acc: &A,
    shape: Shape,
    units: usize,
    ranks: u32,
    steps: u64,
) -> (Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>)
where
    A::Cell: Clone + 'static,
{
    let segments = Segments::new(MODEL.num_params());
    let nseg = segments.count();
    let seg_blocks: Vec<Range<usize>> = (0..ranks as usize)
        .map(|r| r * nseg / ranks as usize..(r + 1) * nseg / ranks as usize)
        .collect();
    // range(nseg) is the empty range at the end of the buffer.
    let elements =
        |segs: &Range<usize>| segments.range(segs.start).start..segments.range(segs.end).start;
    let mut hs: Vec<_> = (0..ranks)
        .map(|r| {
            let c = cfg(shape, 1 + r as usize % 3, units);
            let shard = elements(&seg_blocks[r as usize]);
            let h = Hierarchy::with_optimizer_shard(
                MODEL,
                params(),
                acc.clone(),
                Portable,
                Arc::new(HASHED),
                c,
                shard.clone(),
            )
            .unwrap();
            assert_eq!(h.optimizer_state().0.len(), shard.len());
            h
        })
        .collect();
    let leaf_blocks = blocks(shape.leaf_count(), ranks);
    let mut losses = Vec::new();
    for step in 0..steps {
        let mut unit_losses = vec![0.0f32; units];
        for (h, leaves) in hs.iter_mut().zip(&leaf_blocks) {
            h.compute_partial(step, leaves.clone()).unwrap();
            let us = h.leaf_units(leaves.clone());
            unit_losses[us.clone()].copy_from_slice(&h.unit_losses()[us]);
        }
        // The "all-reduce": merge every rank's cells in reverse order (any
        // order gives the same bits).
        let mut total: Vec<A::Cell> = hs[0].merged_cells().to_vec();
        acc.zero(&mut total);
        for h in hs.iter().rev() {
            acc.merge(&mut total, h.merged_cells()).unwrap();
        }
        let mut norms = vec![0.0f64; nseg];
        for (h, segs) in hs.iter_mut().zip(&seg_blocks) {
            // range(nseg) is the empty range at the end of the buffer.
            let r = h.segments().range(segs.start).start..h.segments().range(segs.end).start;
            h.merged_cells_mut()[r.clone()].clone_from_slice(&total[r]);
            let n = h.finish_gradients(segs.clone()).unwrap();
            norms[segs.clone()].copy_from_slice(n);
        }
        let norm = norms.iter().sum::<f64>().sqrt();
        let mut new_params = vec![0.0f32; MODEL.num_params()];
        for (h, segs) in hs.iter_mut().zip(&seg_blocks) {
            h.apply_update(segs.clone(), norm, update(step + 1))
                .unwrap();
            for s in segs.clone() {
                let r = h.segments().range(s);
                new_params[r.clone()].copy_from_slice(&h.params()[r]);
            }
        }
        for h in &mut hs {
            h.params_mut().copy_from_slice(&new_params);
        }
        let mean = unit_losses.iter().map(|&x| x as f64).sum::<f64>() / units as f64;
        losses.push((mean as f32).to_bits());
    }
    // Gather the optimizer shards.
    let (mut m, mut v) = (
        vec![0.0f32; MODEL.num_params()],
        vec![0.0f32; MODEL.num_params()],
    );
    for (h, segs) in hs.iter().zip(&seg_blocks) {
        let r = elements(segs);
        assert_eq!(h.optimizer_shard(), r);
        m[r.clone()].copy_from_slice(h.optimizer_state().0);
        v[r].copy_from_slice(h.optimizer_state().1);
    }
    (bits(hs[0].params()), bits(&m), bits(&v), losses)
}

fn whole_run<A: Accumulator + Send + Clone + 'static>(
    acc: &A,
    shape: Shape,
    units: usize,
    steps: u64,
) -> (Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>)
where
    A::Cell: 'static,
{
    let mut h = hierarchy(acc.clone(), cfg(shape, 2, units), params());
    let mut losses = Vec::new();
    for step in 0..steps {
        losses.push(h.train_step(step, update(step + 1)).unwrap().loss.to_bits());
    }
    let (m, v) = h.optimizer_state();
    (bits(h.params()), bits(m), bits(v), losses)
}

#[test]
fn model_has_several_segments() {
    let h = hierarchy(
        FixedAcc::default(),
        cfg(Shape::new(1, 4).unwrap(), 1, 4),
        params(),
    );
    assert!(h.segments().count() >= 4, "{}", h.segments().count());
}

#[test]
fn exact_split_over_ranks_matches_one_hierarchy() {
    for (shape, units) in [
        (Shape::new(1, 12).unwrap(), 12),
        (Shape::new(2, 3).unwrap(), 7),
    ] {
        let one = whole_run(&ExactAcc, shape, units, 3);
        for ranks in [1, 2, 3, 4] {
            assert!(
                split_run(&ExactAcc, shape, units, ranks, 3) == one,
                "{shape:?} units {units} ranks {ranks}"
            );
        }
    }
}

#[test]
fn fixed_split_over_ranks_matches_one_hierarchy() {
    let shape = Shape::new(2, 2).unwrap();
    let one = whole_run(&FixedAcc::default(), shape, 6, 3);
    for ranks in [2, 4, 5] {
        assert!(split_run(&FixedAcc::default(), shape, 6, ranks, 3) == one);
    }
}

#[test]
fn full_partial_then_finish_equals_compute_gradients() {
    let shape = Shape::new(2, 3).unwrap();
    for threads in [1, 2, 4] {
        let mut a = hierarchy(F32Acc, cfg(shape, threads, 11), params());
        let mut b = hierarchy(F32Acc, cfg(shape, 1, 11), params());
        a.compute_gradients(5).unwrap();
        b.compute_partial(5, 0..shape.leaf_count()).unwrap();
        let n = b.segments().count();
        b.finish_gradients(0..n).unwrap();
        assert_eq!(
            bits(a.gradients()),
            bits(b.gradients()),
            "threads {threads}"
        );
    }
}

/// f32: a block's sum is the canonical fold of its units over the same
/// shape, whatever the thread count.
#[test]
fn f32_block_is_the_fold_of_its_units() {
    let shape = Shape::new(1, 4).unwrap();
    let units = 10;
    let p = params();
    for leaves in [0..2, 2..4, 1..3, 3..3] {
        let us = leaf_block_units(shape, units, leaves.clone());
        let want = if us.is_empty() {
            vec![0.0f32; p.len()]
        } else {
            sequential_sum(
                &F32Acc,
                &MODEL,
                &p,
                shape,
                us.len(),
                (MB, SEQ),
                |u, tok, tgt| HASHED.fill_train(3, us.start + u, tok, tgt),
            )
        };
        for threads in [1, 3] {
            let mut h = hierarchy(F32Acc, cfg(shape, threads, units), p.clone());
            let s = h.compute_partial(3, leaves.clone()).unwrap();
            assert_eq!(
                bits(h.gradients()),
                bits(&want),
                "{leaves:?} threads {threads}"
            );
            assert_eq!(s.grad_norm, 0.0);
            assert_eq!(bits(h.params()), bits(&p), "parameters untouched");
        }
    }
}

#[test]
fn ranges_outside_the_tree_are_errors() {
    let shape = Shape::new(1, 4).unwrap();
    let mut h = hierarchy(ExactAcc, cfg(shape, 2, 4), params());
    assert!(matches!(
        h.compute_partial(0, 2..5),
        Err(ExecError::Config(_))
    ));
    let n = h.segments().count();
    assert!(matches!(
        h.finish_gradients(0..n + 1),
        Err(ExecError::Config(_))
    ));
    assert!(matches!(
        h.apply_update(n..n + 1, 0.0, update(1)),
        Err(ExecError::Config(_))
    ));
    // Rejected arguments do not poison the hierarchy.
    h.compute_partial(0, 1..3).unwrap();
    assert_eq!(h.merged_cells().len(), MODEL.num_params());
}

#[test]
fn a_sharded_hierarchy_updates_only_its_shard() {
    let shape = Shape::new(1, 4).unwrap();
    let seg = Segments::new(MODEL.num_params());
    let shard = seg.range(1).start..seg.range(3).start;
    let build = |shard: Range<usize>| {
        Hierarchy::with_optimizer_shard(
            MODEL,
            params(),
            ExactAcc,
            Portable,
            Arc::new(HASHED),
            cfg(shape, 2, 4),
            shard,
        )
    };
    // Not a block of whole segments.
    for bad in [1..seg.range(1).end, 0..MODEL.num_params() + 1] {
        assert!(matches!(build(bad), Err(ExecError::Config(_))));
    }
    let mut h = build(shard.clone()).unwrap();
    assert_eq!(h.optimizer_state().0.len(), shard.len());
    // A whole-model step and segments outside the shard need state it
    // does not hold: clear errors, and the hierarchy stays usable.
    assert!(matches!(
        h.train_step(0, update(1)),
        Err(ExecError::Config(_))
    ));
    h.compute_partial(0, 0..4).unwrap();
    h.finish_gradients(0..seg.count()).unwrap();
    assert!(matches!(
        h.apply_update(0..2, 1.0, update(1)),
        Err(ExecError::Config(_))
    ));
    h.apply_update(1..3, 1.0, update(1)).unwrap();
    assert!(h.optimizer_state().1.iter().any(|&x| x != 0.0));
}
