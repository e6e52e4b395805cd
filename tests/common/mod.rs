//! Helpers shared by the trainer's integration tests: build and run the
//! example binaries, make a small corpus, compare files.

#![allow(dead_code)] // each test file uses a different subset

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `target/<profile>` of the running test binary (`…/deps/test-hash`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The path of example `name`, built once per test binary with the profile
/// the tests run under (a no-op when `cargo test` already built it). Cargo
/// releases its build lock before running tests, so the nested build is safe.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = profile_dir();
    BUILT.get_or_init(|| {
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "test",
            Some(other) => other,
            None => "test",
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--profile", profile])
            .args(["--example", "train", "--example", "generate"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if cfg!(feature = "bigfloat") {
            cmd.args(["--features", "bigfloat"]);
        }
        let st = cmd.status().expect("run cargo build for the examples");
        assert!(st.success(), "building the examples failed");
    });
    let p = dir.join("examples").join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// Runs the trainer with `args` and extra environment variables.
pub fn train(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(example("train"));
    cmd.args(args).env_remove("CLLM_INJECT_FAILURE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn train")
}

/// Runs the generator.
pub fn generate(args: &[&str]) -> Output {
    Command::new(example("generate"))
        .args(args)
        .output()
        .expect("spawn generate")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts a run succeeded, showing its output otherwise.
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "run failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Asserts a clean failure: non-zero exit, an `error: ` line on stderr
/// containing `want`, no panic text. Returns the error line.
pub fn assert_clean_error(o: &Output, want: &str) -> String {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure containing {want:?}, got success\nstdout:\n{}",
        stdout(o)
    );
    assert!(!err.contains("panicked"), "panic text in stderr:\n{err}");
    assert!(
        !err.contains("RUST_BACKTRACE"),
        "backtrace hint in stderr:\n{err}"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error: ` line in stderr:\n{err}"))
        .to_string();
    assert!(line.contains(want), "error line {line:?} lacks {want:?}");
    line
}

/// Asserts a failure that is the trainer's own one-line error (exit 1, one
/// stderr line).
pub fn assert_one_line_error(o: &Output, want: &str) -> String {
    let line = assert_clean_error(o, want);
    assert_eq!(o.status.code(), Some(1), "exit status of {line:?}");
    let err = stderr(o);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "more than one line:\n{err}"
    );
    line
}

/// A small deterministic English-like corpus (about 24 KB).
pub fn corpus_text() -> String {
    let words = [
        "the",
        "sphere",
        "holds",
        "twelve",
        "workers",
        "and",
        "each",
        "worker",
        "learns",
        "a",
        "little",
        "more",
        "of",
        "text",
        "while",
        "root",
        "gathers",
        "their",
        "gradients",
        "in",
        "order",
        "so",
        "that",
        "every",
        "layout",
        "gives",
        "same",
        "bits",
    ];
    let mut s = String::new();
    let mut x: u64 = 0x1234_5678;
    let mut line = 0;
    while s.len() < 24_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = words[(x % words.len() as u64) as usize];
        s.push_str(w);
        line += w.len() + 1;
        if line > 60 {
            s.push_str(".\n");
            line = 0;
        } else {
            s.push(' ');
        }
    }
    s
}

/// Writes [`corpus_text`] to `dir/corpus.txt`.
pub fn write_corpus(dir: &Path) -> PathBuf {
    let p = dir.join("corpus.txt");
    fs::write(&p, corpus_text()).unwrap();
    p
}

/// Flags of a tiny, fast model (byte tokenizer, 12 units per step).
pub fn tiny() -> Vec<&'static str> {
    vec![
        "--embed-dim",
        "16",
        "--num-layers",
        "1",
        "--num-heads",
        "2",
        "--seq-len",
        "16",
        "--batch-size",
        "12",
        "--micro-batch",
        "1",
        "--warmup-steps",
        "5",
        "--eval-every",
        "0",
        "--eval-windows",
        "24",
        "--sample-tokens",
        "0",
        "--kernels",
        "portable",
        "--learning-rate",
        "0.01",
    ]
}

/// Every file under `dir` with its bytes (for "nothing was damaged").
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for (rel, bytes) in snapshot(from) {
        let p = to.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
}

/// FNV-1a of a file, for compact assertion messages.
pub fn hash_file(p: &Path) -> u64 {
    let bytes = fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Hashes of the weights and the optimizer state of `dir/checkpoint-step`.
pub fn checkpoint_hashes(run: &Path, step: u64) -> (u64, u64) {
    let ck = run.join(format!("checkpoint-{step}"));
    (
        hash_file(&ck.join("model.safetensors")),
        hash_file(&ck.join("optimizer.safetensors")),
    )
}
