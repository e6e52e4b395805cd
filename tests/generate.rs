//! `generate` prints the prompt and its continuation; greedy decoding is
//! deterministic and is what the trained model predicts.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cllm_core::kernels::Portable;
use cllm_core::model;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A trained tiny model (char tokenizer, context 32).
fn trained() -> &'static (tempfile::TempDir, PathBuf) {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    RUN.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let data = write_corpus(tmp.path());
        let run = tmp.path().join("run");
        let mut a = vec![
            s(&data),
            "--out",
            s(&run),
            "--steps",
            "30",
            "--tokenizer",
            "char",
        ];
        a.extend(tiny());
        a.extend(["--seq-len", "32"]);
        assert_ok(&train(&a, &[]));
        (tmp, run)
    })
}

/// Greedy continuation computed with the full forward pass (no KV cache):
/// the reference the cached generator must reproduce.
fn greedy_reference(dir: &Path, prompt: &str, n: usize) -> String {
    let m = cllm_std::trainer::load_gpt(dir).unwrap();
    let mut ids = m.tokenizer.encode(prompt).unwrap();
    let start = ids.len();
    for _ in 0..n {
        let t = ids.len();
        let mut work = vec![0.0f32; m.config.activation_len(1, t)];
        model::forward(&Portable, &m.config, &m.params, &mut work, &ids, None, 1, t).unwrap();
        let logits = model::logits(&m.config, &work, 1, t).unwrap();
        let last = &logits[(t - 1) * m.config.vocab_size..];
        // The first of the largest logits, as the sampler's greedy rule.
        let mut best = 0;
        for (i, &x) in last.iter().enumerate() {
            if x > last[best] {
                best = i;
            }
        }
        ids.push(best as u32);
    }
    format!("{prompt}{}", m.tokenizer.decode(&ids[start..]).unwrap())
}

#[test]
fn greedy_is_deterministic_and_matches_the_model() {
    let (_keep, run) = trained();
    let args = [
        s(run),
        "--prompt",
        "the sphere ",
        "--max-new-tokens",
        "20",
        "--temperature",
        "0",
        "--kernels",
        "portable",
    ];
    let a = generate(&args);
    assert_ok(&a);
    let b = generate(&args);
    assert_eq!(stdout(&a), stdout(&b));
    let text = stdout(&a);
    assert!(text.starts_with("the sphere "), "{text:?}");
    let expected = greedy_reference(run, "the sphere ", 20);
    assert_eq!(text.trim_end_matches('\n'), expected);
    // The final model is the last checkpoint's model.
    assert_eq!(
        hash_file(&run.join("model.safetensors")),
        hash_file(&run.join("checkpoint-30").join("model.safetensors"))
    );
}

#[test]
fn sampling_is_seeded_and_runs_past_the_context() {
    let (_keep, run) = trained();
    let go = |seed: &str| {
        let o = generate(&[
            s(run),
            "--prompt",
            "each",
            "--max-new-tokens",
            "80",
            "--temperature",
            "0.9",
            "--top-k",
            "10",
            "--top-p",
            "0.95",
            "--seed",
            seed,
        ]);
        assert_ok(&o);
        stdout(&o)
    };
    let (x, y, z) = (go("1"), go("1"), go("2"));
    assert_eq!(x, y);
    assert_ne!(x, z);
    // 4 prompt + 80 new characters exceed the context of 32.
    assert_eq!(x.trim_end_matches('\n').chars().count(), 84);
}

#[test]
fn generate_bad_input() {
    let (_keep, run) = trained();
    let tmp = tempfile::tempdir().unwrap();
    let o = generate(&[s(&tmp.path().join("none"))]);
    assert_one_line_error(&o, "does not exist");
    let o = generate(&[s(run), "--top-p", "0"]);
    assert_one_line_error(&o, "--top-p must be in (0, 1]");
    let o = generate(&[s(run), "--temperature", "-1"]);
    assert_one_line_error(&o, "--temperature must be >= 0");
    // A character the char vocabulary never saw.
    let o = generate(&[s(run), "--prompt", "Ω"]);
    assert_one_line_error(&o, "");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = generate(&[s(&empty)]);
    assert_one_line_error(&o, "");
}
