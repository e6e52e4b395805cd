//! A run killed with SIGKILL and resumed ends bitwise identical to an
//! uninterrupted run with the same flags.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const STEPS: &str = "24";

fn flags<'a>(data: &'a Path, out: &'a Path, acc: &'a str) -> Vec<&'a str> {
    let mut a = vec![
        s(data),
        "--out",
        s(out),
        "--steps",
        STEPS,
        "--save-every",
        "4",
        "--keep-checkpoints",
        "2",
        "--eval-every",
        "8",
        "--accumulator",
        acc,
        "--threads",
        "2",
    ];
    a.extend(tiny());
    a
}

fn killed_and_resumed_matches_uninterrupted(acc: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_corpus(tmp.path());

    let straight = tmp.path().join("straight");
    assert_ok(&train(&flags(&data, &straight, acc), &[]));

    // The same run, slowed down between steps so that it is surely killed
    // mid-run: after checkpoint-8 exists and before it finishes.
    let killed = tmp.path().join("killed");
    let mut child = Command::new(example("train"))
        .args(flags(&data, &killed, acc))
        .env("CLLM_TEST_STEP_DELAY_MS", "40")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !killed.join("checkpoint-8").exists() {
        assert!(Instant::now() < deadline, "checkpoint-8 never appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(70));
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it was killed");
    assert!(!killed.join("model.safetensors").exists());

    let mut resume = flags(&data, &killed, acc);
    resume.extend(["--resume", s(&killed)]);
    let o = train(&resume, &[]);
    assert_ok(&o);
    assert!(stdout(&o).contains("resuming from"), "{}", stdout(&o));

    for file in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert_eq!(
            hash_file(&straight.join(file)),
            hash_file(&killed.join(file)),
            "{acc}: {file} differs after kill + resume"
        );
    }
    assert_eq!(
        checkpoint_hashes(&straight, 24),
        checkpoint_hashes(&killed, 24),
        "{acc}: final checkpoint differs"
    );
    // The metrics describe exactly the steps the weights went through.
    let m = cllm_std::metrics::read_metrics(&killed.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = m.iter().map(|r| r.step).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert_eq!(steps.last(), Some(&24));
}

#[test]
fn exact_accumulator_resumes_bitwise() {
    killed_and_resumed_matches_uninterrupted("exact");
}

#[test]
fn f32_accumulator_resumes_bitwise() {
    killed_and_resumed_matches_uninterrupted("f32");
}

#[test]
fn steps_zero_writes_the_initial_model_and_can_be_continued() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_corpus(tmp.path());
    let run = tmp.path().join("zero");
    let mut a = vec![s(&data), "--out", s(&run), "--steps", "0"];
    a.extend(tiny());
    assert_ok(&train(&a, &[]));
    assert!(run.join("model.safetensors").exists());
    assert!(run
        .join("checkpoint-0")
        .join("optimizer.safetensors")
        .exists());
    // Continuing from step 0 gives the run that never stopped.
    let mut b = vec![s(&data), "--resume", s(&run), "--steps", "3"];
    b.extend(tiny());
    assert_ok(&train(&b, &[]));
    let straight = tmp.path().join("straight");
    let mut c = vec![s(&data), "--out", s(&straight), "--steps", "3"];
    c.extend(tiny());
    assert_ok(&train(&c, &[]));
    assert_eq!(
        hash_file(&run.join("model.safetensors")),
        hash_file(&straight.join("model.safetensors"))
    );
}
