//! `--init-from DIR` and `generate DIR` on GPT-2 checkpoints in the Hugging
//! Face layout, built here with random weights (nothing is downloaded):
//! names with and without `transformer.`, mask buffers, tied heads, GPT-2's
//! `vocab.json` + `merges.txt` with the full 50,257-token vocabulary, and a
//! GPT-2 124M-shaped model. Plus the bad inputs of issue 16.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use common::*;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;

use cllm_std::checkpoint::{canonical_gpt2_tensors, read_safetensors};
use cllm_std::tokenizer::byte_chars;

const GPT2_VOCAB: usize = 50_257;

/// Tensors as written: name, shape, values.
type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

#[derive(Clone, Copy)]
struct Shape {
    n_layer: usize,
    n_embd: usize,
    n_head: usize,
    n_positions: usize,
    vocab: usize,
}

/// How the checkpoint is written.
#[derive(Clone, Copy)]
struct Style {
    /// `transformer.h.0...` (as `GPT2LMHeadModel.save_pretrained`) or
    /// `h.0...` (as the `gpt2` files on the Hub).
    prefix: bool,
    /// The causal-mask buffers `h.N.attn.bias` of older `transformers`.
    buffers: bool,
    /// A stored `lm_head.weight`: `Some(true)` a copy of wte, `Some(false)`
    /// different values.
    lm_head: Option<bool>,
    /// config.json's `tie_word_embeddings`.
    tie: bool,
}

const HUB: Style = Style {
    prefix: false,
    buffers: true,
    lm_head: None,
    tie: true,
};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// GPT-2-like `vocab.json` + `merges.txt` of `vocab` ids: the 256 byte
/// characters, then two-character merges, then `<|endoftext|>` last.
fn write_gpt2_tokenizer(dir: &Path, vocab: usize) {
    let chars = byte_chars();
    let mut map = serde_json::Map::new();
    for (i, c) in chars.iter().enumerate() {
        map.insert(c.to_string(), json!(i));
    }
    let mut merges = String::from("#version: 0.2\n");
    // Printable pairs first, so ordinary text merges.
    let order: Vec<char> = " etaoinshrdlucmfwypvbgkjqxzETAOINSHRDLUCMFWYPVBGKJQXZ.,;:!?'\n-"
        .chars()
        .map(|c| chars[c as usize])
        .chain(chars.iter().copied())
        .collect();
    'outer: for &a in &order {
        for &b in &order {
            if map.len() + 1 >= vocab {
                break 'outer;
            }
            let tok = format!("{a}{b}");
            if map.contains_key(&tok) {
                continue;
            }
            map.insert(tok, json!(map.len()));
            merges.push_str(&format!("{a} {b}\n"));
        }
    }
    map.insert("<|endoftext|>".to_string(), json!(map.len()));
    assert_eq!(map.len(), vocab);
    fs::write(dir.join("vocab.json"), serde_json::to_vec(&map).unwrap()).unwrap();
    fs::write(dir.join("merges.txt"), merges).unwrap();
}

fn tensor_shapes(sh: Shape, style: Style) -> Vec<(String, Vec<usize>)> {
    let (v, p, c) = (sh.vocab, sh.n_positions, sh.n_embd);
    let pre = if style.prefix { "transformer." } else { "" };
    let mut out = vec![
        (format!("{pre}wte.weight"), vec![v, c]),
        (format!("{pre}wpe.weight"), vec![p, c]),
    ];
    for i in 0..sh.n_layer {
        for (n, s) in [
            ("ln_1.weight", vec![c]),
            ("ln_1.bias", vec![c]),
            ("attn.c_attn.weight", vec![c, 3 * c]),
            ("attn.c_attn.bias", vec![3 * c]),
            ("attn.c_proj.weight", vec![c, c]),
            ("attn.c_proj.bias", vec![c]),
            ("ln_2.weight", vec![c]),
            ("ln_2.bias", vec![c]),
            ("mlp.c_fc.weight", vec![c, 4 * c]),
            ("mlp.c_fc.bias", vec![4 * c]),
            ("mlp.c_proj.weight", vec![4 * c, c]),
            ("mlp.c_proj.bias", vec![c]),
        ] {
            out.push((format!("{pre}h.{i}.{n}"), s));
        }
        if style.buffers {
            out.push((format!("{pre}h.{i}.attn.bias"), vec![1, 1, p, p]));
        }
    }
    out.push((format!("{pre}ln_f.weight"), vec![c]));
    out.push((format!("{pre}ln_f.bias"), vec![c]));
    if style.lm_head.is_some() {
        out.push(("lm_head.weight".to_string(), vec![v, c]));
    }
    out
}

/// Deterministic weights: layer-norm gains 1, biases 0, matrices ±0.02.
fn values(name: &str, n: usize, seed: &mut u64) -> Vec<f32> {
    if name.ends_with("attn.bias") && !name.contains("c_attn") {
        return vec![1.0; n]; // mask buffer
    }
    if name.contains("ln_") && name.ends_with(".weight") {
        return vec![1.0; n];
    }
    if name.ends_with(".bias") {
        return vec![0.0; n];
    }
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
        })
        .collect()
}

fn write_weights(dir: &Path, tensors: &Tensors) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize_to_file(views, &Some(meta), &dir.join("model.safetensors")).unwrap();
}

/// A GPT-2 model directory as `transformers` writes it.
fn gpt2_dir(dir: &Path, sh: Shape, style: Style) {
    fs::create_dir_all(dir).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut tensors: Tensors = tensor_shapes(sh, style)
        .into_iter()
        .map(|(n, s)| {
            let d = values(&n, s.iter().product(), &mut seed);
            (n, s, d)
        })
        .collect();
    if let Some(tied) = style.lm_head {
        let wte = tensors[0].2.clone();
        let head = tensors.last_mut().unwrap();
        head.2 = wte;
        if !tied {
            head.2[0] += 1.0;
        }
    }
    write_weights(dir, &tensors);
    let config = json!({
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1,
        "bos_token_id": sh.vocab - 1, "eos_token_id": sh.vocab - 1,
        "initializer_range": 0.02, "layer_norm_epsilon": 1e-5,
        "model_type": "gpt2",
        "n_ctx": sh.n_positions, "n_embd": sh.n_embd, "n_head": sh.n_head,
        "n_layer": sh.n_layer, "n_positions": sh.n_positions,
        "summary_activation": null, "summary_first_dropout": 0.1,
        "summary_proj_to_labels": true, "summary_type": "cls_index",
        "summary_use_proj": true,
        "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
        "vocab_size": sh.vocab,
        "tie_word_embeddings": style.tie
    });
    fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    write_gpt2_tokenizer(dir, sh.vocab);
}

const SMALL: Shape = Shape {
    n_layer: 2,
    n_embd: 32,
    n_head: 4,
    n_positions: 128,
    vocab: GPT2_VOCAB,
};

fn fine_tune(tmp: &Path, from: &Path, extra: &[&str]) -> std::process::Output {
    let data = write_corpus(tmp);
    let out = tmp.join("ft");
    let mut args = vec![
        s(&data),
        "--init-from",
        s(from),
        "--out",
        s(&out),
        "--threads",
        "2",
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--eval-windows",
        "4",
        "--sample-tokens",
        "0",
    ];
    if !extra.contains(&"--steps") {
        args.extend(["--steps", "2"]);
    }
    args.extend(extra);
    train(&args, &[])
}

fn weights(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let p = dir.join("model.safetensors");
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
    let tied = config["tie_word_embeddings"].as_bool().unwrap_or(true);
    let mut t: Vec<(String, Vec<u32>)> =
        canonical_gpt2_tensors(&p, read_safetensors(&p).unwrap(), tied)
            .unwrap()
            .into_iter()
            .map(|t| (t.name, t.data.iter().map(|x| x.to_bits()).collect()))
            .collect();
    t.sort();
    t
}

#[test]
fn fine_tunes_every_hugging_face_layout_from_its_exact_weights() {
    let styles = [
        HUB,
        Style {
            prefix: true,
            buffers: false,
            lm_head: Some(true),
            tie: true,
        },
        Style {
            prefix: true,
            buffers: false,
            lm_head: None,
            tie: true,
        },
        // An untied head, its own lm_head.weight.
        Style {
            prefix: true,
            buffers: false,
            lm_head: Some(false),
            tie: false,
        },
    ];
    for style in styles {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("gpt2");
        gpt2_dir(&src, SMALL, style);
        // --steps 0 writes the starting model: the checkpoint's, bit for bit.
        let o = fine_tune(tmp.path(), &src, &["--steps", "0"]);
        assert_ok(&o);
        assert!(stdout(&o).contains("vocab 50257"), "{}", stdout(&o));
        let ft = tmp.path().join("ft");
        assert_eq!(weights(&ft), weights(&src));
        assert!(ft.join("tokenizer_config.json").is_file());
        fs::remove_dir_all(&ft).unwrap();
        // Two steps train and move the weights.
        let o = fine_tune(tmp.path(), &src, &[]);
        assert_ok(&o);
        assert!(stdout(&o).contains("done: 2 steps"), "{}", stdout(&o));
        assert_ne!(weights(&ft), weights(&src));
        // generate works on the plain Hugging Face directory and the run.
        for dir in [&src, &ft] {
            let g = generate(&[s(dir), "--prompt", "the ", "--max-new-tokens", "8"]);
            assert_ok(&g);
            assert!(stdout(&g).starts_with("the "), "{}", stdout(&g));
        }
        // The run resumes like any other.
        let o = train(
            &["--resume", s(&ft), "--steps", "3", "--sample-tokens", "0"],
            &[],
        );
        assert_ok(&o);
        assert!(stdout(&o).contains("done: 3 steps"), "{}", stdout(&o));
    }
}

/// GPT-2 124M's shape: 12 layers, 768 wide, 12 heads, context 1024,
/// vocabulary 50,257.
#[test]
fn fine_tunes_and_generates_a_gpt2_124m_shaped_model() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("gpt2-124m");
    let sh = Shape {
        n_layer: 12,
        n_embd: 768,
        n_head: 12,
        n_positions: 1024,
        vocab: GPT2_VOCAB,
    };
    gpt2_dir(&src, sh, HUB);
    let o = fine_tune(tmp.path(), &src, &["--steps", "1", "--batch-size", "2"]);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(out.contains("124439808 parameters"), "{out}");
    assert!(out.contains("context 1024"), "{out}");
    let g = generate(&[s(&tmp.path().join("ft")), "--max-new-tokens", "4"]);
    assert_ok(&g);
}

#[test]
fn bad_checkpoints_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    gpt2_dir(&good, SMALL, HUB);
    let variant = |name: &str, edit: &dyn Fn(&Path)| {
        let d = tmp.path().join(name);
        copy_dir(&good, &d);
        edit(&d);
        d
    };
    let set_config = |d: &Path, key: &str, v: serde_json::Value| {
        let p = d.join("config.json");
        let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        c[key] = v;
        fs::write(&p, serde_json::to_vec(&c).unwrap()).unwrap();
    };
    let llama = variant("llama", &|d| set_config(d, "model_type", json!("llama")));
    let small_vocab = variant("vocab", &|d| {
        set_config(d, "vocab_size", json!(50_000));
        set_config(d, "bos_token_id", json!(0));
        set_config(d, "eos_token_id", json!(0));
    });
    let no_tok = variant("notok", &|d| {
        fs::remove_file(d.join("vocab.json")).unwrap();
        fs::remove_file(d.join("merges.txt")).unwrap();
    });
    let bad_tok = variant("badtok", &|d| fs::write(d.join("vocab.json"), "{").unwrap());
    let rewrite = |d: &Path, f: &dyn Fn(&mut Tensors)| {
        let p = d.join("model.safetensors");
        let mut t: Tensors = read_safetensors(&p)
            .unwrap()
            .into_iter()
            .map(|t| (t.name, t.shape, t.data))
            .collect();
        f(&mut t);
        write_weights(d, &t);
    };
    let missing = variant("missing", &|d| {
        rewrite(d, &|t| t.retain(|(n, _, _)| n != "h.1.mlp.c_fc.bias"))
    });
    let misshaped = variant("misshaped", &|d| {
        rewrite(d, &|t| {
            let e = t.iter_mut().find(|(n, _, _)| n == "h.0.ln_1.bias").unwrap();
            e.1 = vec![16];
            e.2.truncate(16);
        })
    });
    let untied = variant("untied", &|d| {
        rewrite(d, &|t| {
            let mut head = t[0].clone();
            head.0 = "lm_head.weight".to_string();
            head.2[3] = 0.5;
            t.push(head);
        })
    });
    let nowhere = tmp.path().join("nowhere");
    let cases: Vec<(&Path, &str)> = vec![
        (&llama, "model_type"),
        (
            &small_vocab,
            "the tokenizer has 50257 tokens but config.json's vocab_size is 50000",
        ),
        (&no_tok, "tokenizer.json is missing"),
        (&bad_tok, "vocab.json"),
        (
            &missing,
            "tensor \"transformer.h.1.mlp.c_fc.bias\": is missing",
        ),
        (&misshaped, "has shape [16]"),
        (&untied, "untied"),
        (&nowhere, "nowhere"),
    ];
    for (dir, want) in cases {
        let o = fine_tune(tmp.path(), dir, &[]);
        assert_one_line_error(&o, want);
        let g = generate(&[s(dir), "--max-new-tokens", "2"]);
        assert_eq!(g.status.code(), Some(1), "{}", stderr(&g));
        assert!(!stderr(&g).contains("panicked"), "{}", stderr(&g));
    }
    // Flags that contradict the checkpoint.
    for (extra, want) in [
        (
            &["--num-layers", "3"][..],
            "--num-layers 3 contradicts --init-from",
        ),
        (&["--embed-dim", "64"], "--embed-dim 64 contradicts"),
        (&["--context", "256"], "--context 256 contradicts"),
        (&["--tokenizer", "bpe"], "--tokenizer (given) contradicts"),
        (&["--vocab-size", "300"], "--vocab-size 300 contradicts"),
        (
            &["--seq-len", "256"],
            "--seq-len 256 exceeds the model context 128",
        ),
    ] {
        let o = fine_tune(tmp.path(), &good, extra);
        assert_one_line_error(&o, want);
    }
}

#[test]
fn bad_tokenizer_flags_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_corpus(tmp.path());
    let out = tmp.path().join("run");
    let run = |extra: &[&str]| {
        let mut args = vec![s(&data), "--out", s(&out), "--steps", "1"];
        args.extend(tiny());
        args.extend(extra);
        train(&args, &[])
    };
    let o = run(&["--tokenizer", "bpe", "--vocab-size", "200"]);
    assert_one_line_error(&o, "BPE vocabulary size 200 is too small: at least 257");
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let o = run(&["--tokenizer", s(&empty)]);
    assert_one_line_error(&o, "tokenizer.json is missing");
    let o = run(&["--tokenizer", "/no/such/tokenizer.json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("neither a tokenizer kind"),
        "{}",
        stderr(&o)
    );
    // A trained bpe run, and a second run reusing its tokenizer by path.
    let o = run(&["--tokenizer", "bpe", "--vocab-size", "300"]);
    assert_ok(&o);
    let reuse = tmp.path().join("reuse");
    let mut args = vec![s(&data), "--out", s(&reuse), "--steps", "1"];
    args.extend(tiny());
    let tok = out.join("tokenizer.json");
    args.extend(["--tokenizer", s(&tok)]);
    let o = train(&args, &[]);
    assert_ok(&o);
    assert_eq!(
        fs::read(reuse.join("tokenizer.json")).unwrap(),
        fs::read(&tok).unwrap()
    );
}

/// A run written before `--tokenizer PATH` and `--init-from` existed (its
/// saved configuration lacks both fields) still resumes.
#[test]
fn runs_of_earlier_versions_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_corpus(tmp.path());
    let out = tmp.path().join("old");
    let mut args = vec![s(&data), "--out", s(&out), "--steps", "2", "--threads", "1"];
    args.extend(tiny());
    assert_ok(&train(&args, &[]));
    let state = out.join("checkpoint-2").join("trainer_state.json");
    let mut doc: serde_json::Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    let cfg = doc["config"].as_object_mut().unwrap();
    assert!(cfg.remove("tokenizer_path").is_some());
    assert!(cfg.remove("init_from").is_some());
    fs::write(&state, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let o = train(
        &["--resume", s(&out), "--steps", "3", "--sample-tokens", "0"],
        &[],
    );
    assert_ok(&o);
    assert!(stdout(&o).contains("done: 3 steps"), "{}", stdout(&o));
}
