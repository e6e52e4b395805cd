//! Issue 6: with an order-independent accumulator the checkpoints do not
//! depend on depth, branching or threads; with f32 they do not depend on
//! threads for a fixed tree; a recovered worker failure changes nothing and
//! a repeating one stops the run with its last checkpoint intact.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const STEPS: u64 = 20;

fn data() -> &'static (tempfile::TempDir, PathBuf) {
    static D: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    D.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let p = write_corpus(tmp.path());
        (tmp, p)
    })
}

/// Trains `STEPS` steps with the given layout; returns the run directory
/// (inside `tmp`) and the final checkpoint's (model, optimizer) hashes.
fn run(
    tmp: &Path,
    acc: &str,
    (depth, branching, threads): (u32, u32, usize),
    env: &[(&str, &str)],
) -> (PathBuf, (u64, u64)) {
    let (_, data) = data();
    let out = tmp.join(format!(
        "{acc}-d{depth}-b{branching}-t{threads}-{}",
        env.len()
    ));
    let (d, b, t) = (
        depth.to_string(),
        branching.to_string(),
        threads.to_string(),
    );
    let mut a = vec![
        s(data),
        "--out",
        s(&out),
        "--steps",
        "20",
        "--save-every",
        "4",
        "--keep-checkpoints",
        "100",
        "--accumulator",
        acc,
        "--recursive-depth",
        &d,
        "--branching",
        &b,
        "--threads",
        &t,
    ];
    a.extend(tiny());
    let o = train(&a, env);
    assert_ok(&o);
    let h = checkpoint_hashes(&out, STEPS);
    (out, h)
}

const LAYOUTS: [(u32, u32, usize); 6] = [
    (0, 12, 1),
    (1, 12, 2),
    (2, 3, 3),
    (3, 2, 2),
    (1, 1, 1),
    (2, 12, 4),
];

fn invariant_across_layouts(acc: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (_, first) = run(tmp.path(), acc, LAYOUTS[0], &[]);
    for layout in &LAYOUTS[1..] {
        let (_, h) = run(tmp.path(), acc, *layout, &[]);
        assert_eq!(
            h, first,
            "{acc}: layout {layout:?} gives different checkpoint bits"
        );
    }
}

#[test]
fn exact_is_layout_invariant() {
    invariant_across_layouts("exact");
}

/// The same with the AMX kernels, on a model wide enough (64) and units long
/// enough (64 tokens) for its products to run on tiles. Tile products' bits
/// depend on the product's shape, and every layout gives a unit the same
/// shapes.
#[test]
fn exact_is_layout_invariant_with_amx_kernels() {
    if !cllm_std::kernels::Isa::Amx.supported() {
        eprintln!("skipping: this machine cannot run --kernels amx");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_, data) = data();
    let mut first = None;
    for (depth, branching, threads) in [(0u32, 12u32, 1usize), (1, 12, 2), (2, 3, 3)] {
        let out = tmp
            .path()
            .join(format!("amx-d{depth}-b{branching}-t{threads}"));
        let (d, b, t) = (
            depth.to_string(),
            branching.to_string(),
            threads.to_string(),
        );
        let a = [
            s(data),
            "--out",
            s(&out),
            "--steps",
            "6",
            "--accumulator",
            "exact",
            "--kernels",
            "amx",
            "--embed-dim",
            "64",
            "--num-layers",
            "1",
            "--num-heads",
            "2",
            "--seq-len",
            "64",
            "--batch-size",
            "4",
            "--micro-batch",
            "1",
            "--eval-every",
            "0",
            "--eval-windows",
            "4",
            "--sample-tokens",
            "0",
            "--recursive-depth",
            &d,
            "--branching",
            &b,
            "--threads",
            &t,
        ];
        let o = train(&a, &[]);
        assert_ok(&o);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("amx-bf16x3"),
            "the run reports the AMX kernels"
        );
        let h = checkpoint_hashes(&out, 6);
        match first {
            None => first = Some(h),
            Some(f) => assert_eq!(
                h, f,
                "amx: layout ({depth}, {branching}, {threads}) gives different bits"
            ),
        }
    }
}

#[test]
fn fixed_is_layout_invariant() {
    invariant_across_layouts("fixed");
}

#[test]
fn f32_is_thread_invariant_for_a_fixed_tree() {
    let tmp = tempfile::tempdir().unwrap();
    for (depth, branching) in [(1, 12), (2, 3)] {
        let (_, one) = run(tmp.path(), "f32", (depth, branching, 1), &[]);
        for threads in [2, 3, 5] {
            let (_, h) = run(tmp.path(), "f32", (depth, branching, threads), &[]);
            assert_eq!(
                h, one,
                "f32 depth {depth} branching {branching}: {threads} threads differ"
            );
        }
    }
}

#[test]
fn a_recovered_worker_failure_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for acc in ["exact", "f32"] {
        let (_, clean) = run(tmp.path(), acc, (1, 12, 2), &[]);
        // Unit 5 of data step 6 fails once and is recomputed.
        let (_, h) = run(
            tmp.path(),
            acc,
            (1, 12, 2),
            &[("CLLM_INJECT_FAILURE", "6:5:1")],
        );
        assert_eq!(h, clean, "{acc}: a recovered failure changed the result");
    }
}

#[test]
fn a_repeating_failure_stops_the_run_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (clean_dir, _) = run(tmp.path(), "exact", (1, 12, 2), &[]);
    let (_, data) = data();
    let out = tmp.path().join("failing");
    let mut a = vec![
        s(data),
        "--out",
        s(&out),
        "--steps",
        "20",
        "--save-every",
        "4",
        "--keep-checkpoints",
        "100",
        "--accumulator",
        "exact",
        "--recursive-depth",
        "1",
        "--threads",
        "2",
    ];
    a.extend(tiny());
    // Data step 9 is the 10th step: checkpoints 4 and 8 exist by then.
    let o = train(&a, &[("CLLM_INJECT_FAILURE", "9:3:1000")]);
    let line = assert_clean_error(&o, "training step 10 failed");
    assert_eq!(o.status.code(), Some(1));
    assert!(line.contains("unit 3"), "{line}");
    assert!(line.contains("checkpoint-8 is intact"), "{line}");
    assert!(!out.join("checkpoint-12").exists());
    assert!(!out.join("model.safetensors").exists());
    // The last checkpoint is the one an undisturbed run wrote at step 8, and
    // it loads.
    assert_eq!(checkpoint_hashes(&out, 8), checkpoint_hashes(&clean_dir, 8));
    cllm_std::checkpoint::load_checkpoint(&out.join("checkpoint-8")).unwrap();
    // Resuming without the failure finishes like the undisturbed run.
    let mut r = a.clone();
    r.extend(["--resume", s(&out)]);
    assert_ok(&train(&r, &[]));
    assert_eq!(
        checkpoint_hashes(&out, STEPS),
        checkpoint_hashes(&clean_dir, STEPS)
    );
}

/// `--kernels avx2` and `--kernels avx512` force their path (the run says
/// which), each keeps the layout guarantee, and `auto` is the widest one.
#[test]
fn forced_simd_paths_are_layout_invariant_and_auto_is_the_widest() {
    use cllm_std::kernels::Isa;
    let tmp = tempfile::tempdir().unwrap();
    let (_, data) = data();
    let mut by_path = Vec::new();
    for (sel, isa, label) in [
        ("avx2", Isa::Avx2Fma, "avx2+fma"),
        ("avx512", Isa::Avx512, "avx512f+fma"),
        ("auto", Isa::detect(), Isa::detect().name()),
    ] {
        if !isa.supported() || isa == Isa::Scalar {
            eprintln!("skipping --kernels {sel}: this CPU cannot run it");
            continue;
        }
        let mut first = None;
        for (depth, threads) in [(0u32, 1usize), (1, 2)] {
            let out = tmp.path().join(format!("{sel}-d{depth}-t{threads}"));
            let (d, t) = (depth.to_string(), threads.to_string());
            let a = [
                s(data),
                "--out",
                s(&out),
                "--steps",
                "4",
                "--accumulator",
                "exact",
                "--kernels",
                sel,
                "--embed-dim",
                "32",
                "--num-layers",
                "1",
                "--num-heads",
                "2",
                "--seq-len",
                "16",
                "--batch-size",
                "4",
                "--micro-batch",
                "1",
                "--eval-every",
                "0",
                "--eval-windows",
                "4",
                "--sample-tokens",
                "0",
                "--recursive-depth",
                &d,
                "--threads",
                &t,
            ];
            let o = train(&a, &[]);
            assert_ok(&o);
            assert!(
                String::from_utf8_lossy(&o.stdout).contains(label),
                "--kernels {sel} reports {label}"
            );
            let h = checkpoint_hashes(&out, 4);
            match &first {
                None => first = Some(h),
                Some(f) => assert_eq!(&h, f, "{sel}: depth {depth}, {threads} threads differ"),
            }
        }
        by_path.push((sel, isa, first.unwrap()));
    }
    if let Some((_, auto_isa, auto)) = by_path.iter().find(|p| p.0 == "auto") {
        for (sel, isa, h) in &by_path {
            if isa == auto_isa {
                assert_eq!(
                    h, auto,
                    "--kernels {sel} is what auto picked, with other bits"
                );
            }
        }
    }
}

#[test]
fn recomputed_blocks_and_a_streamed_reduction_change_no_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, data) = data();
    // Three blocks, so that there is something to recompute.
    let mut model = tiny();
    let at = model.iter().position(|&x| x == "--num-layers").unwrap();
    model[at + 1] = "3";
    for acc in ["f32", "exact"] {
        let train_with = |name: &str, extra: &[&str], env: &[(&str, &str)]| {
            let out = tmp.path().join(format!("{acc}-{name}"));
            let mut a = vec![
                s(data),
                "--out",
                s(&out),
                "--steps",
                "20",
                "--accumulator",
                acc,
            ];
            a.extend(["--recursive-depth", "1", "--threads", "2"]);
            a.extend(extra);
            a.extend(model.iter().copied());
            assert_ok(&train(&a, env));
            checkpoint_hashes(&out, STEPS)
        };
        let want = train_with("plain", &[], &[]);
        let streamed = train_with("streamed", &[], &[("CLLM_STREAM", "1")]);
        assert_eq!(streamed, want, "{acc}: CLLM_STREAM=1 changes the bits");
        let recomputed = train_with("recomputed", &["--recompute-blocks"], &[]);
        assert_eq!(
            recomputed, want,
            "{acc}: --recompute-blocks changes the bits"
        );
    }
}
