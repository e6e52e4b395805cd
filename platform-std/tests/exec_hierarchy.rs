//! The threaded executor against the core's sequential reference: same bits
//! for every thread count (f32: for a fixed shape; associative accumulators:
//! for every shape), failure recovery, and no hang when a worker dies.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use cllm_core::accumulate::{Accumulator, F32Acc, FixedAcc};
use cllm_core::kernels::Portable;
use cllm_core::model::GptConfig;
use cllm_core::tree::Shape;
use cllm_std::exec::{
    reduction_buffers, ExecConfig, ExecError, FailureInjection, Hierarchy, Optimizer, StepStats,
    UnitSource,
};

mod common;
use common::{
    adamw, bits, exec_config, hashed_token, sequential_sum, small_gpt, spread_params, update_at,
    Hashed,
};

const MODEL: GptConfig = small_gpt(13, 8, 1);
const SEQ: usize = 6;
const MB: usize = 2;

const HASHED: Hashed = Hashed::new(hashed_token, MODEL.vocab_size, 3);

fn params() -> Vec<f32> {
    spread_params(&MODEL)
}

fn cfg(depth: u32, branching: u32, threads: usize, units: usize) -> ExecConfig {
    exec_config(
        Shape::new(depth, branching).unwrap(),
        threads,
        units,
        MB,
        SEQ,
    )
}

/// A hierarchy over `params()` and `Hashed`.
fn hierarchy<A: Accumulator + Send + 'static>(acc: A, c: ExecConfig) -> Hierarchy<A, Portable>
where
    A::Cell: 'static,
{
    Hierarchy::new(MODEL, params(), acc, Portable, Arc::new(HASHED), c).unwrap()
}

/// The mean gradient computed on one core by the core's reference driver.
fn sequential<A: Accumulator>(acc: &A, shape: Shape, units: usize, step: u64) -> Vec<f32> {
    let out = sequential_sum(
        acc,
        &MODEL,
        &params(),
        shape,
        units,
        (MB, SEQ),
        |u, tok, tgt| HASHED.fill_train(step, u, tok, tgt),
    );
    let inv = 1.0 / units as f32;
    out.iter().map(|x| x * inv).collect()
}

fn parallel<A: Accumulator + Send + Clone + 'static>(acc: &A, c: ExecConfig, step: u64) -> Vec<f32>
where
    A::Cell: 'static,
{
    let mut h = hierarchy(acc.clone(), c);
    h.compute_gradients(step).unwrap();
    let after = h.gradients().to_vec();
    // Reduced while backward runs: the same bits.
    h.set_streaming(true);
    h.compute_gradients(step).unwrap();
    assert!(bits(h.gradients()) == bits(&after), "streamed {c:?}");
    after
}

#[test]
fn f32_matches_sequential_for_every_thread_count() {
    for (d, b, units) in [
        (0, 12, 5),
        (1, 12, 12),
        (1, 3, 7),
        (2, 2, 9),
        (3, 12, 6),
        (2, 5, 30),
    ] {
        let shape = Shape::new(d, b).unwrap();
        let want = bits(&sequential(&F32Acc, shape, units, 3));
        for threads in 1..=4 {
            let got = bits(&parallel(&F32Acc, cfg(d, b, threads, units), 3));
            assert!(
                got == want,
                "f32 depth {d} branching {b} units {units} threads {threads}"
            );
        }
    }
}

#[test]
fn f32_depends_on_the_shape() {
    // The control: if the tree did not matter, the f32 test above proves little.
    let a = bits(&sequential(&F32Acc, Shape::new(0, 12).unwrap(), 30, 1));
    let b = bits(&sequential(&F32Acc, Shape::new(2, 3).unwrap(), 30, 1));
    assert_ne!(a, b);
}

#[test]
fn fixed_point_is_identical_for_every_shape_and_thread_count() {
    let shapes: Vec<(u32, u32)> = (0..=3u32)
        .flat_map(|d| [1u32, 2, 5, 12].map(|b| (d, b)))
        .collect();
    same_for_every_shape(&FixedAcc::default(), "fixed", 11, 5, &shapes, &[1, 2, 3]);
}

/// An associative accumulator's parallel gradient has the bits of the
/// sequential one over a flat tree, for every shape and thread count given.
fn same_for_every_shape<A: Accumulator + Send + Clone + 'static>(
    acc: &A,
    name: &str,
    units: usize,
    step: u64,
    shapes: &[(u32, u32)],
    thread_counts: &[usize],
) where
    A::Cell: 'static,
{
    let want = bits(&sequential(acc, Shape::new(0, 1).unwrap(), units, step));
    for &(d, b) in shapes {
        for &threads in thread_counts {
            let got = bits(&parallel(acc, cfg(d, b, threads, units), step));
            assert!(
                got == want,
                "{name} depth {d} branching {b} threads {threads}"
            );
        }
    }
}

#[test]
fn train_step_updates_parameters_identically() {
    let opt = adamw(0.1);
    let run = |threads: usize| {
        let mut h = hierarchy(F32Acc, cfg(1, 4, threads, 8));
        let mut losses = Vec::new();
        for step in 0..5u64 {
            let s = h.train_step(step, update_at(opt, 1.0, step + 1)).unwrap();
            losses.push(s.loss.to_bits());
        }
        let eval = h.evaluate().unwrap().unwrap();
        (bits(h.params()), losses, eval.to_bits())
    };
    let one = run(1);
    assert_ne!(one.0, bits(&params()), "parameters moved");
    for threads in 2..=3 {
        assert!(run(threads) == one, "threads {threads}");
    }
}

#[test]
fn into_params_hands_back_the_trained_parameters() {
    let mut h = hierarchy(F32Acc, cfg(1, 4, 2, 8));
    let sgd = Optimizer::Sgd(cllm_core::optim::Sgd {
        lr: 1e-2,
        momentum: 0.0,
        weight_decay: 0.0,
    });
    let up = update_at(sgd, 0.0, 1);
    h.train_step(0, up).unwrap();
    let want = bits(h.params());
    assert_ne!(want, bits(&params()), "parameters moved");
    assert!(bits(&h.into_params()) == want);
}

#[test]
fn a_failed_unit_is_recomputed_with_the_same_result() {
    let c = cfg(1, 12, 2, 12);
    let want = bits(&parallel(&F32Acc, c, 2));
    let mut h = hierarchy(F32Acc, c);
    h.inject_failure(Some(FailureInjection {
        step: 2,
        unit: 5,
        times: 1,
    }));
    let s = h.compute_gradients(2).unwrap();
    assert_eq!(s.retried_units, 1);
    assert!(bits(h.gradients()) == want);
}

#[test]
fn a_repeating_failure_fails_the_step_without_hanging() {
    fn failing_twice<A: Accumulator + Send + 'static>(
        acc: A,
    ) -> (Result<StepStats, ExecError>, Result<StepStats, ExecError>)
    where
        A::Cell: 'static,
    {
        let mut h = hierarchy(acc, cfg(2, 3, 3, 9));
        h.inject_failure(Some(FailureInjection {
            step: 0,
            unit: 4,
            times: 5,
        }));
        let r = h.compute_gradients(0);
        let again = h.compute_gradients(1);
        (r, again)
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tx.send(failing_twice(F32Acc)).unwrap();
        tx.send(failing_twice(FixedAcc::default())).unwrap();
    });
    for _ in 0..2 {
        let (r, again) = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("step hung");
        match r {
            Err(ExecError::WorkerPanicked {
                unit: 4,
                attempts: 2,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(again, Err(ExecError::Poisoned));
    }
}

#[test]
fn gradient_memory_does_not_grow_with_the_tree() {
    let c = cfg(3, 12, 2, 12); // 1,885 logical spheres
    let h = hierarchy(F32Acc, c);
    // f32: `width + depth + 1`; rounds are two units per worker wide when
    // the extra buffers fit in 32 MiB (this model's do), else one.
    assert_eq!(h.gradient_buffers(), 2 * 2 + 3 + 1);
    assert_eq!(reduction_buffers(&c, false, 1 << 20), (2 * 2 + 3 + 1, 0));
    assert_eq!(reduction_buffers(&c, false, 5 << 20), (2 + 3 + 1, 0));
    let h = hierarchy(FixedAcc::default(), c);
    // Associative: per worker one accumulator plus its share of unit
    // buffers (6 units each here), whatever the depth.
    assert_eq!(h.gradient_buffers(), 2 * (1 + 6));
    let flat = cfg(0, 12, 2, 12);
    let h0 = hierarchy(FixedAcc::default(), flat);
    assert_eq!(h0.gradient_buffers(), h.gradient_buffers());
}

/// One hierarchy, several jobs: the gradient lives in a reduction buffer
/// that the next job reuses, so nothing of one step may leak into the next;
/// with fewer units than threads the spare workers have no unit buffer.
fn steps_match_sequential<A: Accumulator + Send + Clone + 'static>(acc: &A, name: &str)
where
    A::Cell: 'static,
{
    for (d, b) in [(0u32, 1u32), (1, 12), (2, 2)] {
        let shape = Shape::new(d, b).unwrap();
        for units in 1..=3 {
            for threads in [1usize, 2, 3, 5] {
                let c = cfg(d, b, threads, units);
                let mut h = hierarchy(acc.clone(), c);
                if !A::ASSOCIATIVE {
                    let width = (2 * threads).min(units) as u32;
                    assert_eq!(h.gradient_buffers(), (width + d + 1) as usize);
                }
                for (i, step) in [4u64, 5, 4, 5].into_iter().enumerate() {
                    h.set_streaming(i % 2 == 1);
                    h.compute_gradients(step).unwrap();
                    assert!(
                        bits(h.gradients()) == bits(&sequential(acc, shape, units, step)),
                        "{name} depth {d} branching {b} units {units} threads {threads} step {step}"
                    );
                    assert!(h.evaluate().unwrap().is_some());
                }
            }
        }
    }
}

#[test]
fn every_job_starts_clean_even_with_more_threads_than_units() {
    use cllm_core::accumulate::ExactAcc;
    steps_match_sequential(&F32Acc, "f32");
    steps_match_sequential(&FixedAcc::default(), "fixed");
    steps_match_sequential(&ExactAcc, "exact");
}

#[test]
fn the_trainer_memory_estimate_is_what_the_hierarchy_holds() {
    use cllm_core::accumulate::ExactAcc;
    use cllm_std::trainer::{estimate_memory, AccumulatorKind};
    fn check<A: Accumulator + Send + 'static>(acc: A, kind: AccumulatorKind, c: ExecConfig)
    where
        A::Cell: 'static,
    {
        let h = hierarchy(acc, c);
        assert_eq!(
            estimate_memory(&MODEL, &c, kind, 0),
            (h.memory_bytes() as u128, h.gradient_buffers()),
            "{kind} {c:?}"
        );
    }
    for c in [
        cfg(0, 1, 1, 1),
        cfg(1, 12, 2, 12),
        cfg(3, 2, 4, 3),
        cfg(2, 3, 3, 40),
    ] {
        check(F32Acc, AccumulatorKind::F32, c);
        check(FixedAcc::default(), AccumulatorKind::Fixed, c);
        check(ExactAcc, AccumulatorKind::Exact, c);
    }
}

#[test]
fn exact_is_identical_for_every_shape_and_thread_count() {
    use cllm_core::accumulate::ExactAcc;
    let shapes = [(0, 12), (1, 12), (2, 3), (3, 2), (1, 1)];
    same_for_every_shape(&ExactAcc, "exact", 13, 2, &shapes, &[1, 2, 3, 4]);
}

#[test]
fn bad_configs_are_errors() {
    let mut c = cfg(1, 12, 2, 12);
    c.seq_len = 9;
    assert!(matches!(
        Hierarchy::new(MODEL, params(), F32Acc, Portable, Arc::new(HASHED), c),
        Err(ExecError::Config(_))
    ));
    let c = cfg(1, 12, 0, 12);
    assert!(matches!(
        Hierarchy::new(MODEL, params(), F32Acc, Portable, Arc::new(HASHED), c),
        Err(ExecError::Config(_))
    ));
    let c = cfg(1, 12, 2, 12);
    assert!(matches!(
        Hierarchy::new(MODEL, vec![0.0; 3], F32Acc, Portable, Arc::new(HASHED), c),
        Err(ExecError::Config(_))
    ));
}

/// `HASHED`, but the worker that fetches unit 0 sleeps first, as if its vCPU
/// had been preempted.
struct SlowFirstUnit;

impl UnitSource for SlowFirstUnit {
    fn fill_train(&self, step: u64, unit: usize, tokens: &mut [u32], targets: &mut [u32]) {
        if unit == 0 {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        HASHED.fill_train(step, unit, tokens, targets)
    }
}

/// f32 rounds are two units per worker wide and their units are claimed as
/// workers go: while one worker is held up, the other computes the rest of
/// the round, and the gradient keeps the sequential driver's bits.
#[test]
fn f32_round_units_go_to_the_free_worker_with_the_same_bits() {
    let shape = Shape::new(1, 12).unwrap();
    let c = cfg(1, 12, 2, 4);
    let mut h = Hierarchy::new(
        MODEL,
        params(),
        F32Acc,
        Portable,
        Arc::new(SlowFirstUnit),
        c,
    )
    .unwrap();
    let stats = h.compute_gradients(7).unwrap();
    // Whichever worker claims unit 0 sleeps; the other computes units 1, 2
    // and 3, at least one of which the static order (unit k on worker
    // k mod 2) gives to the sleeper. Without claiming it would be 0.
    assert!(stats.stolen_units >= 1, "{stats:?}");
    assert!(bits(h.gradients()) == bits(&sequential(&F32Acc, shape, 4, 7)));
}

/// Workers keep activations for backward (the longer workspace) when that
/// adds at most 16 MiB each, as for the small benchmark model, and
/// recompute them when it would add more, as for the medium one; either
/// way the gradients are the sequential driver's (the other tests here run
/// the kept layout against a recomputing reference).
#[test]
fn workers_keep_activations_only_within_the_memory_budget() {
    use cllm_std::exec::work_len;
    let run = |model: &GptConfig, micro_batch: usize, seq_len: usize| {
        let c = ExecConfig {
            micro_batch,
            seq_len,
            ..cfg(1, 12, 2, 12)
        };
        work_len(model, &c)
    };
    if std::env::var_os("CLLM_RECOMPUTE").is_some() {
        return;
    }
    let small = GptConfig {
        vocab_size: 256,
        n_positions: 64,
        n_embd: 128,
        n_layer: 4,
        n_head: 4,
        untied_head: false,
    };
    let medium = GptConfig {
        vocab_size: 256,
        n_positions: 256,
        n_embd: 384,
        n_layer: 6,
        n_head: 6,
        untied_head: false,
    };
    assert_eq!(run(&small, 12, 64), small.activation_len_kept(12, 64));
    assert_eq!(run(&medium, 2, 256), medium.activation_len(2, 256));
    assert_eq!(run(&MODEL, MB, SEQ), MODEL.activation_len_kept(MB, SEQ));
}

#[test]
fn phase_times_account_for_each_worker_within_the_step() {
    fn check<A: Accumulator + Send + Clone + 'static>(acc: A)
    where
        A::Cell: 'static,
    {
        let mut h = hierarchy(acc, cfg(1, 4, 3, 8));
        let up = update_at(adamw(0.0), 1.0, 1);
        for step in 0..3 {
            let start = std::time::Instant::now();
            h.train_step(step, up).unwrap();
            let wall = start.elapsed();
            let times = h.phase_times();
            assert_eq!(times.len(), 3);
            for (w, p) in times.iter().enumerate() {
                assert!(
                    p.total() <= wall,
                    "worker {w}: {p:?} exceeds the step's {wall:?}"
                );
            }
            // 8 units on 3 workers: the step's compute and update are
            // charged to their counters.
            assert!(times.iter().any(|p| p.compute > Duration::ZERO));
            assert!(times.iter().any(|p| p.update > Duration::ZERO));
        }
    }
    check(F32Acc);
    check(FixedAcc::default());
}
