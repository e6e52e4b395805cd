//! Every bad input of issue 5 gets a one-line error and a non-zero exit, no
//! panic text, and leaves existing checkpoints untouched.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `train DATA tiny-flags extra…` into a fresh out dir under `tmp`.
fn train_into(tmp: &Path, data: &Path, extra: &[&str]) -> std::process::Output {
    let out = tmp.join("run");
    let mut args = vec![s(data), "--out", s(&out), "--threads", "1"];
    if !extra.contains(&"--epochs") {
        args.extend(["--steps", "2"]);
    }
    args.extend(tiny());
    args.extend(extra);
    train(&args, &[])
}

#[test]
fn missing_data_path() {
    let tmp = tempfile::tempdir().unwrap();
    let o = train_into(tmp.path(), &tmp.path().join("nope"), &[]);
    assert_one_line_error(&o, "does not exist");
}

#[test]
fn empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("empty");
    fs::create_dir_all(d.join("sub")).unwrap();
    let o = train_into(tmp.path(), &d, &[]);
    assert_one_line_error(&o, "contains no files");
}

#[test]
fn no_usable_text() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("bin");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("blob.txt"), b"ab\0cd").unwrap();
    fs::write(d.join("image.png"), b"not really").unwrap();
    fs::write(d.join(".hidden"), b"hidden text").unwrap();
    let o = train_into(tmp.path(), &d, &[]);
    assert_one_line_error(&o, "no usable text");
}

#[test]
fn text_shorter_than_one_window() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("short.txt");
    fs::write(&f, "only a few bytes").unwrap();
    let o = train_into(tmp.path(), &f, &[]);
    assert_one_line_error(&o, "one window needs");
    // The validation split can be the short part.
    let f = tmp.path().join("medium.txt");
    fs::write(&f, "x".repeat(100)).unwrap();
    let o = train_into(tmp.path(), &f, &["--val-fraction", "0.1"]);
    assert_one_line_error(&o, "validation split");
}

#[test]
fn unreadable_entries() {
    // Root ignores permission bits, so use entries that cannot be read by
    // anyone: a symlink loop inside the corpus, and a FIFO given as DATA.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("loop");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("a.txt"), corpus_text()).unwrap();
    std::os::unix::fs::symlink("self.txt", d.join("self.txt")).unwrap();
    let o = train_into(tmp.path(), &d, &[]);
    assert_one_line_error(&o, "cannot read");

    let fifo = tmp.path().join("pipe");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let o = train_into(tmp.path(), &fifo, &[]);
        assert_one_line_error(&o, "neither a regular file nor a directory");
    } else {
        eprintln!("note: mkfifo unavailable; FIFO case skipped");
    }
}

#[test]
fn invalid_configurations() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_corpus(tmp.path());
    let cases: &[(&[&str], &str)] = &[
        (
            &["--embed-dim", "18", "--num-heads", "4"],
            "--embed-dim 18 is not divisible by --num-heads 4",
        ),
        (
            &["--seq-len", "32", "--context", "16"],
            "--seq-len 32 exceeds the model context 16",
        ),
        (
            &["--batch-size", "12", "--micro-batch", "5"],
            "--batch-size 12 is not a multiple of --micro-batch 5",
        ),
        (&["--batch-size", "0"], "--batch-size must be positive"),
        (&["--seq-len", "0"], "--seq-len must be positive"),
        (&["--embed-dim", "0"], "--embed-dim must be positive"),
        (&["--num-layers", "0"], "--num-layers must be positive"),
        (&["--micro-batch", "0"], "--micro-batch must be positive"),
        (&["--threads", "0"], "--threads must be positive"),
        (
            &["--learning-rate", "0"],
            "--learning-rate must be positive",
        ),
        (
            &["--learning-rate", "-0.001"],
            "--learning-rate must be positive",
        ),
        (&["--weight-decay", "-1"], "--weight-decay must be >= 0"),
        (&["--grad-clip", "-1"], "--grad-clip must be >= 0"),
        (
            &["--val-fraction", "1.5"],
            "--val-fraction must be in [0, 1)",
        ),
        (&["--epochs", "-2"], "--epochs must be positive"),
        (
            &["--epochs", "1", "--steps", "3"],
            "give either --steps or --epochs, not both",
        ),
        (&["--branching", "0"], "--branching must be in 1..=12"),
        (&["--branching", "13"], "--branching must be in 1..=12"),
        (
            &["--recursive-depth", "40", "--branching", "12"],
            "cannot be represented",
        ),
        (
            &["--recursive-depth", "17", "--branching", "2"],
            "exceeds the supported maximum 16",
        ),
        // A hierarchy whose buffers cannot fit: the error gives the estimate.
        (
            &[
                "--embed-dim",
                "16384",
                "--num-heads",
                "16",
                "--num-layers",
                "400",
            ],
            "the run needs an estimated",
        ),
    ];
    for (extra, want) in cases {
        let o = train_into(tmp.path(), &data, extra);
        let line = assert_one_line_error(&o, want);
        if want.starts_with("the run needs") {
            assert!(line.contains("TiB") || line.contains("GiB"), "{line}");
            assert!(line.contains("available"), "{line}");
        }
        assert!(!tmp.path().join("run").join("checkpoint-0").exists());
    }
    if !cfg!(feature = "bigfloat") {
        let o = train_into(tmp.path(), &data, &["--accumulator", "bigfloat"]);
        assert_one_line_error(&o, "--features bigfloat");
    }
    // Usage errors are clap's (exit 2), still without a panic.
    for extra in [
        &["--batch-size", "-4"][..],
        &["--accumulator", "f16"],
        &["--recursive-depth", "deep"],
    ] {
        let o = train_into(tmp.path(), &data, extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"));
    }
}

/// A finished tiny run with checkpoints at steps 2 and 4, made once and
/// copied by each test that damages it.
fn reference_run() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    RUN.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let data = write_corpus(tmp.path());
        let run = tmp.path().join("ref");
        let mut args = vec![
            s(&data),
            "--out",
            s(&run),
            "--steps",
            "4",
            "--save-every",
            "2",
        ];
        args.extend(tiny());
        args.extend(["--threads", "1"]);
        let o = train(&args, &[]);
        assert_ok(&o);
        let (d, r) = (data.clone(), run.clone());
        (tmp, d, r)
    })
}

/// Copies the reference run, lets `damage` change it, then resumes it and
/// expects `want`; the directory must be byte-for-byte unchanged afterwards.
fn resume_damaged(name: &str, damage: impl FnOnce(&Path), want: &str) {
    resume_damaged_at(name, "", damage, want)
}

/// As [`resume_damaged`], resuming from `copy/sub`.
fn resume_damaged_at(name: &str, sub: &str, damage: impl FnOnce(&Path), want: &str) {
    let (_keep, data, run) = reference_run();
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join(name);
    copy_dir(run, &copy);
    damage(&copy);
    let before = snapshot(&copy);
    let target = copy.join(sub);
    let mut args = vec![s(data), "--resume", s(&target), "--steps", "6"];
    args.extend(tiny());
    args.extend(["--threads", "1"]);
    let o = train(&args, &[]);
    assert_one_line_error(&o, want);
    assert!(
        snapshot(&copy) == before,
        "{name}: the failed resume changed the run directory"
    );
}

fn ck4(run: &Path, file: &str) -> PathBuf {
    run.join("checkpoint-4").join(file)
}

#[test]
fn corrupt_truncated_empty_and_mismatched_checkpoints() {
    let truncate = |p: PathBuf| {
        let b = fs::read(&p).unwrap();
        fs::write(&p, &b[..b.len() / 2]).unwrap();
    };
    resume_damaged(
        "model-truncated",
        |r| truncate(ck4(r, "model.safetensors")),
        "model.safetensors is not a valid safetensors file",
    );
    resume_damaged(
        "model-empty",
        |r| fs::write(ck4(r, "model.safetensors"), b"").unwrap(),
        "model.safetensors is not a valid safetensors file",
    );
    resume_damaged(
        "model-garbage",
        |r| fs::write(ck4(r, "model.safetensors"), [0xffu8; 300]).unwrap(),
        "model.safetensors is not a valid safetensors file",
    );
    resume_damaged(
        "optimizer-truncated",
        |r| truncate(ck4(r, "optimizer.safetensors")),
        "optimizer.safetensors is not a valid safetensors file",
    );
    resume_damaged(
        "config-empty",
        |r| fs::write(ck4(r, "config.json"), b"").unwrap(),
        "config.json is not valid JSON",
    );
    resume_damaged(
        "config-corrupt",
        |r| fs::write(ck4(r, "config.json"), b"{\"n_embd\": 16,").unwrap(),
        "config.json is not valid JSON",
    );
    // A config.json that disagrees with the weights.
    resume_damaged(
        "config-mismatched",
        |r| {
            let p = ck4(r, "config.json");
            let t = fs::read_to_string(&p).unwrap();
            fs::write(&p, t.replace("\"n_embd\": 16", "\"n_embd\": 32")).unwrap();
        },
        "model.safetensors: tensor",
    );
    resume_damaged(
        "state-truncated",
        |r| truncate(ck4(r, "trainer_state.json")),
        "trainer_state.json is not valid JSON",
    );
    resume_damaged(
        "state-empty",
        |r| fs::write(ck4(r, "trainer_state.json"), b"").unwrap(),
        "trainer_state.json is not valid JSON",
    );
    resume_damaged(
        "state-not-ours",
        |r| fs::write(ck4(r, "trainer_state.json"), b"{\"step\": 4}").unwrap(),
        "trainer_state.json: field \"format\"",
    );
    resume_damaged(
        "tokenizer-corrupt",
        |r| fs::write(ck4(r, "tokenizer.json"), b"[1, 2").unwrap(),
        "tokenizer.json",
    );
    // A checkpoint directory missing a file (a run directory would skip it
    // and use the previous complete checkpoint).
    resume_damaged_at(
        "incomplete",
        "checkpoint-4",
        |r| fs::remove_file(ck4(r, "optimizer.safetensors")).unwrap(),
        "is incomplete: missing optimizer.safetensors",
    );
}

#[test]
fn mismatched_model_weights() {
    // Weights of a wider model under a config that says otherwise.
    let (_keep, data, _run) = reference_run();
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("wide");
    let mut args = vec![s(data), "--out", s(&other), "--steps", "0"];
    args.extend(tiny());
    args.extend(["--embed-dim", "32"]);
    assert_ok(&train(&args, &[]));
    let wide = other.join("model.safetensors");
    resume_damaged(
        "model-mismatched",
        |r| {
            fs::copy(&wide, ck4(r, "model.safetensors")).unwrap();
        },
        "has shape",
    );
}

#[test]
fn resume_refuses_changed_training_settings_and_data() {
    let (_keep, data, run) = reference_run();
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy");
    copy_dir(run, &copy);
    let before = snapshot(&copy);
    let mut args = vec![s(data), "--resume", s(&copy), "--steps", "6"];
    args.extend(tiny());
    args.extend(["--learning-rate", "0.5"]);
    let o = train(&args, &[]);
    assert_one_line_error(&o, "--learning-rate 0.5 differs from the checkpoint's 0.01");

    let other = tmp.path().join("other.txt");
    fs::write(&other, corpus_text().replace("sphere", "circle")).unwrap();
    let mut args = vec![s(&other), "--resume", s(&copy), "--steps", "6"];
    args.extend(tiny());
    let o = train(&args, &[]);
    assert_one_line_error(&o, "is not the one checkpoint");

    // Missing and empty resume paths.
    let o = train(&["--resume", s(&tmp.path().join("missing"))], &[]);
    assert_one_line_error(&o, "does not exist");
    let empty = tmp.path().join("empty-run");
    fs::create_dir(&empty).unwrap();
    let o = train(&["--resume", s(&empty)], &[]);
    assert_one_line_error(&o, "contains no complete checkpoint");
    assert!(snapshot(&copy) == before);
}

#[test]
fn fresh_run_refuses_a_directory_with_checkpoints() {
    let (_keep, data, run) = reference_run();
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy");
    copy_dir(run, &copy);
    let before = snapshot(&copy);
    let mut args = vec![s(data), "--out", s(&copy), "--steps", "2"];
    args.extend(tiny());
    let o = train(&args, &[]);
    assert_one_line_error(&o, "already holds checkpoints");
    assert!(snapshot(&copy) == before);
}

/// A tiny tmpfs mounted for the test, unmounted on drop.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(SmallFs(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn disk_full_while_saving() {
    let (_keep, data, run) = reference_run();
    // Room for one checkpoint and a half: the second save runs out of space.
    let ck_bytes: usize = snapshot(&run.join("checkpoint-2"))
        .values()
        .map(Vec::len)
        .sum();
    let size = format!("{}k", ck_bytes * 3 / 2 / 1024 + 8);
    let Some(fs_small) = SmallFs::mount(&size) else {
        eprintln!("note: cannot mount a tmpfs (needs root/CAP_SYS_ADMIN); disk-full test skipped");
        return;
    };
    let out = fs_small.0.path().join("run");
    let mut args = vec![
        s(data),
        "--out",
        s(&out),
        "--steps",
        "6",
        "--save-every",
        "2",
    ];
    args.extend(tiny());
    args.extend(["--keep-checkpoints", "1"]);
    let o = train(&args, &[]);
    assert_one_line_error(&o, "No space left on device");
    // The checkpoint written before the disk filled up is complete and loads.
    let latest = cllm_std::checkpoint::latest_checkpoint(&out)
        .unwrap()
        .expect("a checkpoint survived");
    cllm_std::checkpoint::load_checkpoint(&latest).unwrap();
    assert!(latest.ends_with("checkpoint-2"), "{}", latest.display());
    drop(fs_small);
}

/// A directory corpus of `bytes` bytes in three files under `tmp/dir`.
fn corpus_dir(tmp: &Path, bytes: usize) -> PathBuf {
    let d = tmp.join("dir");
    fs::create_dir_all(&d).unwrap();
    let text = corpus_text();
    let per_file = bytes / 3;
    for i in 0..3 {
        let body: String = text.chars().cycle().take(per_file).collect();
        fs::write(d.join(format!("part{i}.txt")), body).unwrap();
    }
    d
}

/// Runs the trainer with its spool files (`TMPDIR`) in `spool`.
fn train_spooling_in(
    tmp: &Path,
    data: &Path,
    spool: &Path,
    extra: &[&str],
) -> std::process::Output {
    let out = tmp.join("run");
    let mut args = vec![s(data), "--out", s(&out), "--threads", "1", "--steps", "2"];
    args.extend(tiny());
    args.extend(extra);
    let o = train(&args, &[("TMPDIR", s(spool))]);
    assert!(!out.exists(), "the failed run created {}", out.display());
    o
}

#[test]
fn disk_full_while_spooling_the_corpus_or_its_ids() {
    let Some(fs_small) = SmallFs::mount("64k") else {
        eprintln!("note: cannot mount a tmpfs (needs root/CAP_SYS_ADMIN); disk-full test skipped");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // The directory's text does not fit in the spool directory.
    let dir = corpus_dir(tmp.path(), 300_000);
    let o = train_spooling_in(tmp.path(), &dir, fs_small.0.path(), &[]);
    let line = assert_one_line_error(&o, "No space left on device");
    assert!(
        line.contains("temporary file for the corpus text") && line.contains("TMPDIR"),
        "{line}"
    );
    // A single file is mapped in place, but its char ids (two bytes each)
    // are spooled too.
    let file = tmp.path().join("one.txt");
    fs::write(&file, corpus_text().repeat(4)).unwrap();
    let o = train_spooling_in(
        tmp.path(),
        &file,
        fs_small.0.path(),
        &["--tokenizer", "char"],
    );
    let line = assert_one_line_error(&o, "No space left on device");
    assert!(line.contains("temporary file for the token ids"), "{line}");
    // Nothing is left in the spool directory.
    assert_eq!(fs::read_dir(fs_small.0.path()).unwrap().count(), 0);
    drop(fs_small);
}

#[test]
fn spool_write_failure_without_root() {
    // The file-size limit makes the spool's writes fail (EFBIG) the way a
    // full disk does; SIGXFSZ is ignored so the write returns the error.
    let exe = example("train");
    let tmp = tempfile::tempdir().unwrap();
    let dir = corpus_dir(tmp.path(), 300_000);
    let spool = tmp.path().join("spool");
    fs::create_dir(&spool).unwrap();
    let out = tmp.path().join("run");
    let mut args = vec![s(&dir), "--out", s(&out), "--threads", "1", "--steps", "2"];
    args.extend(tiny());
    let o = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -f 64 && trap '' XFSZ && exec "$0" "$@""#)
        .arg(&exe)
        .args(&args)
        .env("TMPDIR", &spool)
        .env_remove("CLLM_INJECT_FAILURE")
        .output()
        .unwrap();
    let line = assert_one_line_error(&o, "cannot write the temporary file for the corpus text");
    assert!(line.contains("File too large"), "{line}");
    assert!(!out.exists());
    assert_eq!(fs::read_dir(&spool).unwrap().count(), 0);
}
