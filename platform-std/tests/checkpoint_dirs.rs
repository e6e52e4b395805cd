//! Checkpoint directories: atomic save, load with consistency checks,
//! latest/prune/clean-up/resume resolution, and disk full.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cllm_std::checkpoint::{
    clean_stale_temp, gpt2_tensor_shapes, latest_checkpoint, list_checkpoints, load_checkpoint,
    load_model_dir, parse_checkpoint_name, prune_checkpoints, resolve_resume, save_checkpoint,
    write_config, write_model_dir, Checkpoint, CkptError, HfGpt2Config, NamedTensor, TensorRef,
    TrainerState, CHECKPOINT_FILES, CONFIG_FILE, MODEL_FILE, TRAINER_STATE_FILE,
};
use cllm_std::tokenizer::Tokenizer;
use serde_json::json;

fn cfg() -> HfGpt2Config {
    HfGpt2Config::new(256, 8, 4, 1, 2)
}

/// GPT-2 tensors for `cfg` with values derived from `seed`.
fn model(cfg: &HfGpt2Config, seed: f32) -> Vec<NamedTensor> {
    gpt2_tensor_shapes(cfg)
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape))| {
            let n: usize = shape.iter().product();
            NamedTensor {
                name,
                shape,
                data: (0..n).map(|i| seed + k as f32 + i as f32 * 1e-3).collect(),
            }
        })
        .collect()
}

fn optimizer(seed: f32) -> Vec<NamedTensor> {
    vec![
        NamedTensor {
            name: "m".into(),
            shape: vec![5],
            data: vec![seed; 5],
        },
        NamedTensor {
            name: "v".into(),
            shape: vec![5],
            data: vec![seed * 2.0; 5],
        },
    ]
}

fn state(step: u64) -> TrainerState {
    TrainerState {
        step,
        rng_state: vec![u64::MAX, step],
        data_position: step,
        elapsed_s: step as f64,
        config: json!({"seq_len": 8, "seed": 1}),
    }
}

fn save(run: &Path, step: u64, tok: &Tokenizer) -> PathBuf {
    let c = cfg();
    let m = model(&c, step as f32);
    let o = optimizer(step as f32);
    let mr: Vec<TensorRef> = m.iter().map(NamedTensor::as_ref).collect();
    let or: Vec<TensorRef> = o.iter().map(NamedTensor::as_ref).collect();
    let st = state(step);
    save_checkpoint(
        run,
        &Checkpoint {
            model: &mr,
            config: &c,
            tokenizer: tok,
            optimizer: &or,
            state: &st,
        },
    )
    .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn save_and_load_round_trip() {
    let run = tempfile::tempdir().unwrap();
    let tok = Tokenizer::train_word("a b c", 100).unwrap();
    // Word vocabulary (8) is below the model's 256: allowed.
    let dir = save(run.path(), 10, &tok);
    assert_eq!(dir, run.path().join("checkpoint-10"));
    assert_eq!(
        names(run.path()),
        ["checkpoint-10"],
        "temporary left behind"
    );
    let mut files = names(&dir);
    files.retain(|f| f != "vocab.txt");
    let mut want: Vec<String> = CHECKPOINT_FILES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(files, want);

    let ck = load_checkpoint(&dir).unwrap();
    assert_eq!(ck.state, state(10));
    assert_eq!(ck.model.config, cfg());
    assert_eq!(ck.model.tokenizer, tok);
    let mut got = ck.model.model.clone();
    got.sort_by(|a, b| a.name.cmp(&b.name));
    let mut want = model(&cfg(), 10.0);
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got, want);
    assert_eq!(ck.optimizer, optimizer(10.0));
}

#[test]
fn latest_ignores_temporaries_and_incomplete_dirs() {
    let run = tempfile::tempdir().unwrap();
    let tok = Tokenizer::Byte;
    assert_eq!(latest_checkpoint(run.path()).unwrap(), None);
    assert_eq!(
        latest_checkpoint(&run.path().join("missing")).unwrap(),
        None
    );
    save(run.path(), 2, &tok);
    save(run.path(), 10, &tok);
    save(run.path(), 9, &tok);
    // Leftovers of a save killed half-way, and look-alikes.
    let tmp = run.path().join(".tmp-checkpoint-20-12345");
    fs::create_dir(&tmp).unwrap();
    fs::write(tmp.join(MODEL_FILE), b"partial").unwrap();
    let incomplete = run.path().join("checkpoint-30");
    fs::create_dir(&incomplete).unwrap();
    fs::write(incomplete.join(CONFIG_FILE), b"{}").unwrap();
    fs::create_dir(run.path().join("checkpoint-040")).unwrap();
    fs::create_dir(run.path().join("checkpoint-x")).unwrap();
    fs::write(run.path().join("checkpoint-50"), b"a file").unwrap();

    // Numeric, not lexicographic, order: 10 is newer than 9 and 2.
    assert_eq!(
        latest_checkpoint(run.path()).unwrap(),
        Some(run.path().join("checkpoint-10"))
    );
    let steps: Vec<u64> = list_checkpoints(run.path())
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, [2, 9, 10]);
    assert_eq!(parse_checkpoint_name("checkpoint-0"), Some(0));
    assert_eq!(parse_checkpoint_name("checkpoint-007"), None);
    assert_eq!(parse_checkpoint_name("checkpoint-+7"), None);
    assert_eq!(parse_checkpoint_name("checkpoint-"), None);

    // Stale temporaries are cleaned; real checkpoints are not touched.
    let removed = clean_stale_temp(run.path()).unwrap();
    assert_eq!(removed, std::slice::from_ref(&tmp));
    assert!(!tmp.exists());
    assert!(incomplete.exists());
    assert_eq!(list_checkpoints(run.path()).unwrap().len(), 3);

    // Loading an incomplete checkpoint names what is missing.
    let e = load_checkpoint(&incomplete).unwrap_err();
    assert!(matches!(e, CkptError::Incomplete { .. }));
    assert!(e.to_string().contains("missing model.safetensors"), "{e}");
}

#[test]
fn prune_keeps_the_newest() {
    let run = tempfile::tempdir().unwrap();
    let tok = Tokenizer::Byte;
    for s in [100, 5, 30, 200, 40] {
        save(run.path(), s, &tok);
    }
    let deleted = prune_checkpoints(run.path(), 2).unwrap();
    assert_eq!(
        deleted,
        [5, 30, 40].map(|s| run.path().join(format!("checkpoint-{s}")))
    );
    assert_eq!(names(run.path()), ["checkpoint-100", "checkpoint-200"]);
    // keep = 0 still keeps the newest.
    prune_checkpoints(run.path(), 0).unwrap();
    assert_eq!(names(run.path()), ["checkpoint-200"]);
    assert!(prune_checkpoints(run.path(), 3).unwrap().is_empty());
    load_checkpoint(&run.path().join("checkpoint-200")).unwrap();
}

#[test]
fn saving_an_existing_step_replaces_it_completely() {
    let run = tempfile::tempdir().unwrap();
    let tok = Tokenizer::Byte;
    let dir = save(run.path(), 7, &tok);
    fs::write(dir.join("stray.txt"), b"old").unwrap();
    save(run.path(), 7, &tok);
    assert!(!dir.join("stray.txt").exists());
    assert_eq!(names(run.path()), ["checkpoint-7"]);
    load_checkpoint(&dir).unwrap();
    // Even a stray file under the checkpoint's name is replaced.
    fs::write(run.path().join("checkpoint-8"), b"not a dir").unwrap();
    save(run.path(), 8, &tok);
    assert_eq!(names(run.path()), ["checkpoint-7", "checkpoint-8"]);
    load_checkpoint(&run.path().join("checkpoint-8")).unwrap();
}

#[test]
fn resolve_resume_accepts_run_or_checkpoint_dir() {
    let run = tempfile::tempdir().unwrap();
    let tok = Tokenizer::Byte;
    let e = resolve_resume(run.path()).unwrap_err();
    assert!(matches!(e, CkptError::NoCheckpoint { .. }));
    assert!(e.to_string().contains("no complete checkpoint"));
    let e = resolve_resume(&run.path().join("nope")).unwrap_err();
    assert!(matches!(e, CkptError::NotFound { .. }));

    let c3 = save(run.path(), 3, &tok);
    let c8 = save(run.path(), 8, &tok);
    assert_eq!(resolve_resume(run.path()).unwrap(), c8);
    assert_eq!(resolve_resume(&c3).unwrap(), c3);
    fs::remove_file(c3.join(MODEL_FILE)).unwrap();
    let e = resolve_resume(&c3).unwrap_err();
    assert!(matches!(e, CkptError::Incomplete { .. }), "{e}");
    // The damaged one is not picked from the run dir either.
    fs::remove_file(c8.join(TRAINER_STATE_FILE)).unwrap();
    assert!(resolve_resume(run.path()).is_err());
}

#[test]
fn mismatched_checkpoints_are_rejected() {
    let run = tempfile::tempdir().unwrap();
    let tok = Tokenizer::Byte;
    let dir = save(run.path(), 4, &tok);

    // Config says other sizes than the tensors have.
    let mut other = cfg();
    other.n_embd = 8;
    write_config(&dir.join(CONFIG_FILE), &other).unwrap();
    let e = load_checkpoint(&dir).unwrap_err();
    assert!(e.to_string().contains("config.json implies"), "{e}");
    write_config(&dir.join(CONFIG_FILE), &cfg()).unwrap();
    load_checkpoint(&dir).unwrap();

    // Tokenizer bigger than the model's vocabulary.
    let mut small = cfg();
    small.vocab_size = 100;
    write_config(&dir.join(CONFIG_FILE), &small).unwrap();
    let e = load_checkpoint(&dir).unwrap_err();
    assert!(matches!(e, CkptError::Mismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("the tokenizer has 256 tokens"),
        "{e}"
    );
    write_config(&dir.join(CONFIG_FILE), &cfg()).unwrap();

    // Directory renamed: step disagrees.
    let moved = run.path().join("checkpoint-5");
    fs::rename(&dir, &moved).unwrap();
    let e = load_checkpoint(&moved).unwrap_err();
    assert!(e.to_string().contains("directory name says step 5"), "{e}");

    // Truncated weights.
    let bytes = fs::read(moved.join(MODEL_FILE)).unwrap();
    fs::write(moved.join(MODEL_FILE), &bytes[..bytes.len() - 3]).unwrap();
    let e = load_model_dir(&moved).unwrap_err();
    assert!(matches!(e, CkptError::Safetensors { .. }), "{e}");
    // Empty weights.
    fs::write(moved.join(MODEL_FILE), b"").unwrap();
    assert!(load_model_dir(&moved).is_err());
}

#[test]
fn save_refuses_inconsistent_input_and_leaves_nothing() {
    let run = tempfile::tempdir().unwrap();
    let c = cfg();
    let mut m = model(&c, 1.0);
    m.pop();
    let mr: Vec<TensorRef> = m.iter().map(NamedTensor::as_ref).collect();
    let st = state(1);
    let e = save_checkpoint(
        run.path(),
        &Checkpoint {
            model: &mr,
            config: &c,
            tokenizer: &Tokenizer::Byte,
            optimizer: &[],
            state: &st,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("transformer.ln_f.bias"), "{e}");
    assert!(names(run.path()).is_empty());
}

#[test]
fn final_model_dir_round_trip() {
    let run = tempfile::tempdir().unwrap();
    let out = run.path().join("nested/out");
    let c = cfg();
    let m = model(&c, 3.0);
    let mr: Vec<TensorRef> = m.iter().map(NamedTensor::as_ref).collect();
    let tok = Tokenizer::train_char("hello").unwrap();
    write_model_dir(&out, &mr, &c, &tok).unwrap();
    let loaded = load_model_dir(&out).unwrap();
    assert_eq!(loaded.tokenizer, tok);
    assert_eq!(loaded.config, c);
    assert_eq!(loaded.model.len(), m.len());
    // The tokenizer in the Hugging Face layout, as for bpe.
    assert_eq!(
        names(&out),
        [
            CONFIG_FILE,
            MODEL_FILE,
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
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
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn disk_full_is_an_error_and_keeps_the_previous_checkpoint() {
    let Some(fs_small) = SmallFs::mount("256k") else {
        eprintln!("note: cannot mount a tmpfs (needs root/CAP_SYS_ADMIN); disk-full test skipped");
        return;
    };
    let run = fs_small.path().join("run");
    let tok = Tokenizer::Byte;
    // A small model fits; a large one does not.
    let first = save(&run, 1, &tok);
    let big = HfGpt2Config::new(256, 64, 64, 4, 4); // ~0.2M params = 0.8 MB
    let m = model(&big, 0.5);
    let mr: Vec<TensorRef> = m.iter().map(NamedTensor::as_ref).collect();
    let st = state(2);
    let e = save_checkpoint(
        &run,
        &Checkpoint {
            model: &mr,
            config: &big,
            tokenizer: &tok,
            optimizer: &[],
            state: &st,
        },
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CkptError::Io(_)), "{msg}");
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(
        msg.contains(".tmp-checkpoint-2-"),
        "path missing from {msg}"
    );
    // The earlier checkpoint is intact, the failed one left no trace.
    assert_eq!(names(&run), ["checkpoint-1"]);
    assert_eq!(latest_checkpoint(&run).unwrap(), Some(first.clone()));
    load_checkpoint(&first).unwrap();

    // Single-file atomic writes fail cleanly too.
    let e = write_model_dir(&run, &mr, &big, &tok).unwrap_err();
    assert!(e.to_string().contains("No space left on device"), "{e}");
    assert!(!run.join(MODEL_FILE).exists());
    assert_eq!(names(&run), ["checkpoint-1"]);
    drop(fs_small);
}
