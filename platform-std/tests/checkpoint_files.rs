//! Single checkpoint files: safetensors, config.json and trainer_state.json
//! round-trips, and errors (never panics) on empty, truncated, corrupt or
//! mismatched files.

use std::fs;
use std::path::Path;

use cllm_std::checkpoint::{
    check_gpt2_tensors, gpt2_tensor_shapes, parse_safetensors, read_config, read_safetensors,
    read_trainer_state, write_config, write_safetensors, write_trainer_state, CkptError,
    HfGpt2Config, NamedTensor, TensorRef, TrainerState,
};
use serde_json::{json, Value};

mod common;
use common::Rng;

fn sample_tensors() -> Vec<NamedTensor> {
    vec![
        NamedTensor {
            name: "b.weight".into(),
            shape: vec![2, 3],
            data: vec![1.0, -2.5, 3.25, f32::MIN_POSITIVE, -0.0, 1e-30],
        },
        NamedTensor {
            name: "a.bias".into(),
            shape: vec![3],
            data: vec![f32::MAX, f32::MIN, 0.1],
        },
        NamedTensor {
            name: "scalar".into(),
            shape: vec![],
            data: vec![42.0],
        },
        NamedTensor {
            name: "empty".into(),
            shape: vec![0, 4],
            data: vec![],
        },
    ]
}

fn write_sample(path: &Path) -> Vec<NamedTensor> {
    let t = sample_tensors();
    let refs: Vec<TensorRef> = t.iter().map(NamedTensor::as_ref).collect();
    write_safetensors(path, &refs, &[("note", "test")]).unwrap();
    t
}

fn by_name(mut v: Vec<NamedTensor>) -> Vec<NamedTensor> {
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

#[test]
fn safetensors_round_trip_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let t = write_sample(&p);
    let back = read_safetensors(&p).unwrap();
    assert_eq!(back.len(), 4);
    let (a, b) = (by_name(t), by_name(back));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.shape, y.shape);
        let xb: Vec<u32> = x.data.iter().map(|v| v.to_bits()).collect();
        let yb: Vec<u32> = y.data.iter().map(|v| v.to_bits()).collect();
        assert_eq!(xb, yb, "{}", x.name);
    }
    // The header carries format=pt (transformers requires it) and our entry.
    let bytes = fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["__metadata__"]["format"], "pt");
    assert_eq!(header["__metadata__"]["note"], "test");
    assert_eq!(header["a.bias"]["dtype"], "F32");
    // No temporary file left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn safetensors_writer_rejects_inconsistent_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let data = [1.0f32; 5];
    let bad_shape = [TensorRef::new("x", &[2, 3], &data)];
    let e = write_safetensors(&p, &bad_shape, &[]).unwrap_err();
    assert!(
        e.to_string().contains("has shape [2, 3] but 5 values"),
        "{e}"
    );
    let dup = [
        TensorRef::new("x", &[5], &data),
        TensorRef::new("x", &[5], &data),
    ];
    assert!(write_safetensors(&p, &dup, &[]).is_err());
    assert!(!p.exists());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

fn expect_st_error(bytes: &[u8], want: &str) {
    let e = parse_safetensors(Path::new("x.safetensors"), bytes).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(want), "expected {want:?} in {msg:?}");
}

fn raw_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.resize(b.len() + data_len, 0);
    b
}

#[test]
fn safetensors_reader_rejects_bad_files() {
    expect_st_error(b"", "fewer than the 8-byte header length");
    expect_st_error(b"\x05\0\0", "fewer than the 8-byte header length");
    // Header length pointing far past the end: must not allocate it.
    expect_st_error(&u64::MAX.to_le_bytes(), "too large");
    expect_st_error(&[0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0, b'{'], "past the end");
    let bad_headers = [
        ("not json", 0, "not a valid safetensors JSON header"),
        // Data shorter than declared (truncated).
        (
            r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            12,
            "does not exactly fill the file",
        ),
        // Shape and byte length disagree.
        (
            r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
            16,
            "does not match its shape",
        ),
        // Shape overflows.
        (
            r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#,
            16,
            "overflows",
        ),
        // Unsupported dtype (F16 and BF16 are read, converted exactly).
        (
            r#"{"w":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#,
            8,
            "dtype I32 is not supported (F32, F16 or BF16)",
        ),
    ];
    for (header, data_len, want) in bad_headers {
        expect_st_error(&raw_file(header, data_len), want);
    }
    let mut half = raw_file(
        r#"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]}}"#,
        0,
    );
    half.extend_from_slice(&[0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f]); // 1.0, -2.0 | 1.0
    let t = parse_safetensors(Path::new("x.safetensors"), &half).unwrap();
    assert_eq!(
        (t[0].data.as_slice(), t[1].data.as_slice()),
        (&[1.0, -2.0][..], &[1.0][..])
    );
    // Gaps between tensors.
    expect_st_error(
        &raw_file(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            12,
        ),
        "invalid data offsets",
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.safetensors");
    assert!(matches!(
        read_safetensors(&missing),
        Err(CkptError::NotFound { .. })
    ));
    // A directory where a file is expected.
    assert!(matches!(
        read_safetensors(dir.path()),
        Err(CkptError::Io(_))
    ));
}

#[test]
fn safetensors_random_corruption_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    write_sample(&p);
    let original = fs::read(&p).unwrap();
    let mut rng = Rng(7);
    let mut detected = 0;
    let trials = 3000;
    for _ in 0..trials {
        let mut b = original.clone();
        match rng.below(3) {
            0 => b.truncate(rng.below(original.len())),
            1 => {
                // Corrupt the header region (where structure lives).
                let i = rng.below(8 + 200.min(b.len() - 8));
                b[i] ^= 1 << rng.below(8);
            }
            _ => {
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
            }
        }
        match parse_safetensors(&p, &b) {
            Ok(ts) => {
                for t in ts {
                    assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
                }
            }
            Err(_) => detected += 1,
        }
    }
    // Truncations (a third) are always detected; data-byte flips cannot be.
    assert!(detected > trials / 3, "{detected}");
}

/// A change applied to a valid JSON document, and the error it must cause.
type Edit = Box<dyn FnOnce(&mut Value)>;

/// Sets the top-level field `key` to `v`.
fn set(key: &'static str, v: Value) -> Edit {
    Box::new(move |d| d[key] = v)
}

/// Removes the top-level field `key`.
fn remove(key: &'static str) -> Edit {
    Box::new(move |d| {
        d.as_object_mut().unwrap().remove(key);
    })
}

fn tiny_config() -> HfGpt2Config {
    HfGpt2Config::new(11, 8, 6, 2, 3)
}

#[test]
fn config_round_trip_and_hf_fields() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    let mut cfg = tiny_config();
    cfg.bos_token_id = Some(2);
    cfg.eos_token_id = Some(3);
    write_config(&p, &cfg).unwrap();
    assert_eq!(read_config(&p).unwrap(), cfg);
    let doc: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    assert_eq!(doc["architectures"], json!(["GPT2LMHeadModel"]));
    assert_eq!(doc["model_type"], "gpt2");
    assert_eq!(doc["activation_function"], "gelu_new");
    assert_eq!(doc["n_ctx"], 8);
    assert_eq!(doc["n_positions"], 8);
    assert_eq!(doc["layer_norm_epsilon"], 1e-5);
    assert_eq!(doc["tie_word_embeddings"], true);
    assert_eq!(doc["torch_dtype"], "float32");
    for k in ["resid_pdrop", "embd_pdrop", "attn_pdrop"] {
        assert_eq!(doc[k], 0.0);
    }
    // Without BOS/EOS they are explicit nulls (not GPT-2's default 50256).
    write_config(&p, &tiny_config()).unwrap();
    let doc: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    assert!(doc["bos_token_id"].is_null());
    assert_eq!(read_config(&p).unwrap(), tiny_config());
    assert_eq!(
        tiny_config().param_count(),
        Some((11 + 8) * 6 + 2 * (12 * 36 + 13 * 6) + 12)
    );
}

fn config_error(edit: impl FnOnce(&mut Value)) -> String {
    let mut doc = tiny_config().to_json();
    edit(&mut doc);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    fs::write(&p, serde_json::to_vec(&doc).unwrap()).unwrap();
    let e = read_config(&p).unwrap_err();
    let msg = e.to_string();
    assert!(!msg.contains('\n'));
    msg
}

#[test]
fn config_validation_errors() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            set("model_type", json!("llama")),
            "field \"model_type\" is \"llama\"",
        ),
        (remove("model_type"), "\"model_type\" is missing"),
        (remove("n_embd"), "\"n_embd\" is missing"),
        (
            set("n_embd", json!(0)),
            "\"n_embd\" must be positive, got 0",
        ),
        (
            set("n_layer", json!(-2)),
            "\"n_layer\" must be a non-negative integer, got -2",
        ),
        (
            set("n_head", json!("3")),
            "\"n_head\" must be a non-negative integer",
        ),
        (
            set("vocab_size", json!(1.5)),
            "\"vocab_size\" must be a non-negative integer",
        ),
        (
            set("n_head", json!(4)),
            "\"n_head\" is 4 which does not divide n_embd 6",
        ),
        (
            set("n_ctx", json!(16)),
            "\"n_ctx\" is 16 but n_positions is 8",
        ),
        (
            set("activation_function", json!("relu")),
            "\"activation_function\"",
        ),
        (
            set("layer_norm_epsilon", json!(1e-6)),
            "\"layer_norm_epsilon\"",
        ),
        (
            set("tie_word_embeddings", json!("no")),
            "\"tie_word_embeddings\"",
        ),
        (set("n_inner", json!(7)), "\"n_inner\" is 7"),
        (
            set("eos_token_id", json!(11)),
            "\"eos_token_id\" is 11, outside the vocabulary of 11",
        ),
        (
            set("n_embd", json!(1u64 << 40)),
            "above the supported maximum",
        ),
        (
            Box::new(|d| {
                d["n_embd"] = json!(60000);
                d["n_head"] = json!(1);
                d["n_layer"] = json!(4000);
            }),
            "parameters",
        ),
        (Box::new(|d| *d = json!([1, 2])), "must be a JSON object"),
    ];
    for (edit, want) in cases {
        let msg = config_error(edit);
        assert!(msg.contains(want), "expected {want:?} in {msg:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    for bad in [&b""[..], b"{", b"\xff", b"null"] {
        fs::write(&p, bad).unwrap();
        assert!(read_config(&p).is_err());
    }
    fs::write(&p, b"{").unwrap();
    let msg = read_config(&p).unwrap_err().to_string();
    assert!(msg.contains("is not valid JSON"), "{msg}");
    // Writing an invalid config is refused.
    let mut bad = tiny_config();
    bad.n_head = 4;
    assert!(write_config(&p, &bad).is_err());
}

#[test]
fn gpt2_tensor_check() {
    let cfg = tiny_config();
    let shapes = gpt2_tensor_shapes(&cfg);
    assert_eq!(shapes.len(), 2 + 12 * 2 + 2);
    assert_eq!(
        shapes[0],
        ("transformer.wte.weight".to_string(), vec![11, 6])
    );
    assert_eq!(
        shapes[4],
        (
            "transformer.h.0.attn.c_attn.weight".to_string(),
            vec![6, 18]
        )
    );
    let total: usize = shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(Some(total as u64), cfg.param_count());
    let p = Path::new("model.safetensors");
    let it = || shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice()));
    check_gpt2_tensors(p, it(), &cfg).unwrap();
    let e = check_gpt2_tensors(p, it().skip(1), &cfg).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"transformer.wte.weight\": is missing"),
        "{e}"
    );
    let wrong = [7usize, 6];
    let e = check_gpt2_tensors(
        p,
        it().map(|(n, s)| {
            (
                n,
                if n.ends_with("wpe.weight") {
                    &wrong[..]
                } else {
                    s
                },
            )
        }),
        &cfg,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("has shape [7, 6], config.json implies [8, 6]"),
        "{e}"
    );
    let e = check_gpt2_tensors(p, it().chain([("extra", &[1usize][..])]), &cfg).unwrap_err();
    assert!(e.to_string().contains("not a GPT-2 tensor"));
    check_gpt2_tensors(p, it().chain([("lm_head.weight", &[11usize, 6][..])]), &cfg).unwrap();
}

fn sample_state() -> TrainerState {
    TrainerState {
        step: 1234,
        rng_state: vec![u64::MAX, 0, 1 << 63, 0x0123_4567_89ab_cdef, (1 << 53) + 1],
        data_position: u64::MAX - 1,
        elapsed_s: 12.5,
        config: json!({"lr": 1e-3, "threads": 2, "name": "run", "nested": {"a": [1, 2]}}),
    }
}

#[test]
fn trainer_state_round_trip_exact_u64() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("trainer_state.json");
    let st = sample_state();
    write_trainer_state(&p, &st).unwrap();
    assert_eq!(read_trainer_state(&p).unwrap(), st);
    let text = fs::read_to_string(&p).unwrap();
    assert!(text.contains("\"18446744073709551615\""), "{text}");
}

#[test]
fn trainer_state_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("trainer_state.json");
    let cases: Vec<(Edit, &str)> = vec![
        (
            set("step", json!(5)),
            "\"step\" must be a u64 as a decimal string",
        ),
        (set("step", json!("-1")), "\"step\" \"-1\" is not a u64"),
        (set("step", json!("18446744073709551616")), "is not a u64"),
        (
            Box::new(|d| d["rng_state"][2] = json!("x")),
            "\"rng_state[2]\"",
        ),
        (
            set("rng_state", json!("1")),
            "\"rng_state\" must be an array",
        ),
        (set("version", json!(9)), "\"version\" is 9"),
        (set("format", json!("hf")), "\"format\""),
        (remove("config"), "\"config\" is missing"),
        (remove("data_position"), "\"data_position\" is missing"),
        (set("elapsed_s", json!(-1.0)), "\"elapsed_s\""),
    ];
    for (edit, want) in cases {
        let mut doc = sample_state().to_json();
        edit(&mut doc);
        fs::write(&p, serde_json::to_vec(&doc).unwrap()).unwrap();
        let msg = read_trainer_state(&p).unwrap_err().to_string();
        assert!(msg.contains(want), "expected {want:?} in {msg:?}");
    }
    // Random corruption of the real file: errors or a parse, never a panic.
    write_trainer_state(&p, &sample_state()).unwrap();
    let original = fs::read(&p).unwrap();
    let mut rng = Rng(99);
    for _ in 0..1000 {
        let mut b = original.clone();
        if rng.below(2) == 0 {
            b.truncate(rng.below(b.len()));
        } else {
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
        }
        // Parse from memory: rewriting one file 1000 times is slow on ext4.
        if let Ok(doc) = serde_json::from_slice::<Value>(&b) {
            let _ = TrainerState::from_json(&p, &doc);
            let _ = HfGpt2Config::from_json(&p, &doc);
        }
    }
}
