//! Checkpoint and model-directory readers under arbitrary bytes.
//!
//! The first byte picks the reader, the rest is its input:
//!
//! | byte % 6 | input |
//! |---|---|
//! | 0 | `model.safetensors` bytes (`parse_safetensors`) |
//! | 1 | `config.json` (`HfGpt2Config::from_json`) |
//! | 2 | `trainer_state.json` (`TrainerState::from_json`) |
//! | 3 | parts `tokenizer.json`, `vocab.txt` (`Tokenizer::from_bytes`) |
//! | 4 | parts config, tokenizer.json, vocab.txt, model.safetensors, checked together in memory |
//! | 5 | parts config, tokenizer.json, vocab.txt, trainer_state, model, optimizer written to a `checkpoint-7/` directory and read back with `load_checkpoint` / `resolve_resume` |
//!
//! Parts are `u16` little-endian length + bytes, the last part is the rest.
//!
//! Every reader must return `Ok` or an error, never panic, and never make
//! an allocation out of proportion to its input: a counting allocator
//! fails the input if one allocation exceeds [`MAX_ALLOCATION`] (the files
//! are at most a few KiB; a length field claiming gigabytes must be
//! rejected before anything is allocated). Accepted inputs are checked for
//! consistency and survive a save/load round trip.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use cllm_std::checkpoint::{
    check_gpt2_tensors, gpt2_tensor_shapes, limits, load_checkpoint, parse_safetensors,
    resolve_resume, HfGpt2Config, NamedTensor, TrainerState,
};
use cllm_std::tokenizer::{Tokenizer, TokenizerError, TokenizerKind, MAX_VOCAB};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// No reader may allocate this much at once from a fuzz input (inputs are
/// a few KiB; the largest legitimate buffers are the parsed tensors, at
/// most a few times the input).
const MAX_ALLOCATION: usize = 64 << 20;

/// Records the largest single allocation since the last reset.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and fails if it made one allocation above `limit` bytes.
fn bounded<T>(what: &str, limit: usize, f: impl FnOnce() -> T) -> T {
    LARGEST.store(0, Ordering::Relaxed);
    let out = f();
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= limit,
        "{what}: one allocation of {largest} bytes (limit {limit})"
    );
    out
}

/// Splits `data` into `N` parts: `N - 1` length-prefixed ones, then the rest.
fn parts<const N: usize>(mut data: &[u8]) -> [&[u8]; N] {
    let mut out = [&[][..]; N];
    for part in out.iter_mut().take(N - 1) {
        let len = match data {
            [a, b, rest @ ..] => {
                data = rest;
                usize::from(u16::from_le_bytes([*a, *b]))
            }
            _ => std::mem::take(&mut data).len(),
        };
        let (p, rest) = data.split_at(len.min(data.len()));
        *part = p;
        data = rest;
    }
    out[N - 1] = data;
    out
}

// ---------------------------------------------------------------------------
// Single readers
// ---------------------------------------------------------------------------

/// Tensors as (name, shape, bit patterns): f32 `==` would call two NaN
/// payloads different even when the bytes read back are the same.
fn bits(ts: &[NamedTensor]) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    ts.iter()
        .map(|t| {
            let data = t.data.iter().map(|x| x.to_bits()).collect();
            (t.name.clone(), t.shape.clone(), data)
        })
        .collect()
}

fn safetensors(bytes: &[u8]) -> Option<Vec<NamedTensor>> {
    let tensors = parse_safetensors(Path::new("model.safetensors"), bytes).ok()?;
    let mut names = std::collections::HashSet::new();
    let mut data_bytes = 0usize;
    for t in &tensors {
        assert!(
            names.insert(t.name.as_str()),
            "tensor {:?} returned twice",
            t.name
        );
        let n = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        assert_eq!(n, Some(t.data.len()), "tensor {:?}: shape vs data", t.name);
        data_bytes += 4 * t.data.len();
    }
    // Every value comes from the file: nothing is invented.
    assert!(
        data_bytes <= bytes.len(),
        "{data_bytes} data bytes from a {}-byte file",
        bytes.len()
    );
    Some(tensors)
}

fn json(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

/// Serializes like the writers do (pretty JSON) and parses the text back.
fn through_text(doc: &Value) -> Value {
    let text = serde_json::to_vec_pretty(doc).expect("a JSON value serializes");
    serde_json::from_slice(&text).expect("serde_json reads its own output")
}

fn config(bytes: &[u8]) -> Option<HfGpt2Config> {
    let path = Path::new("config.json");
    let cfg = HfGpt2Config::from_json(path, &json(bytes)?).ok()?;
    assert_eq!(cfg.validate(), Ok(()), "an accepted config must be valid");
    let n = cfg.param_count().expect("validated");
    assert!(n <= limits::MAX_PARAMS);
    assert!(cfg.vocab_size <= MAX_VOCAB && cfg.n_positions <= limits::MAX_POSITIONS);
    assert!(cfg.n_embd <= limits::MAX_EMBD && cfg.n_layer <= limits::MAX_LAYERS);
    let again = HfGpt2Config::from_json(path, &through_text(&cfg.to_json()));
    assert_eq!(again.ok().as_ref(), Some(&cfg), "config.json round trip");
    // Listing the tensors is linear in n_layer (at most 4096 layers):
    // skip the big ones to keep executions fast.
    if cfg.n_layer <= 64 {
        let shapes = gpt2_tensor_shapes(&cfg);
        assert_eq!(shapes.len(), 4 + 12 * cfg.n_layer);
        let total: u64 = shapes
            .iter()
            .map(|(_, s)| s.iter().map(|&d| d as u64).product::<u64>())
            .sum();
        assert_eq!(total, n, "tensor shapes vs param_count");
    }
    Some(cfg)
}

fn trainer_state(bytes: &[u8]) -> Option<TrainerState> {
    let path = Path::new("trainer_state.json");
    let st = TrainerState::from_json(path, &json(bytes)?).ok()?;
    assert!(st.elapsed_s.is_finite() && st.elapsed_s >= 0.0);
    // Resume must see exactly what was saved, through the JSON text.
    let again = TrainerState::from_json(path, &through_text(&st.to_json()));
    assert_eq!(
        again.ok().as_ref(),
        Some(&st),
        "trainer_state.json round trip"
    );
    Some(st)
}

/// Word vocabularies can be large; checking every id is linear, so only
/// the first ones are.
const CHECKED_IDS: usize = 512;

fn tokenizer(json: &[u8], vocab: &[u8]) -> Option<Tokenizer> {
    let vocab = (!vocab.is_empty()).then_some(vocab);
    let tok = Tokenizer::from_bytes(json, vocab);
    let without = Tokenizer::from_bytes(json, None);
    match (&tok, &without) {
        (Ok(t), Ok(w)) => {
            assert_ne!(t.kind(), TokenizerKind::Word, "word needs vocab.txt");
            assert_eq!(t, w, "vocab.txt changed a {} tokenizer", t.kind());
        }
        (Ok(t), Err(TokenizerError::MissingFile { .. })) => {
            assert_eq!(t.kind(), TokenizerKind::Word, "only word reads vocab.txt")
        }
        (Err(e), Ok(w)) => panic!("a {} tokenizer failed only with vocab.txt: {e}", w.kind()),
        _ => {}
    }
    let tok = tok.ok()?;
    let n = tok.vocab_size();
    assert!((1..=MAX_VOCAB).contains(&n));
    match &tok {
        Tokenizer::Byte => assert_eq!(n, 256),
        Tokenizer::Char(_) | Tokenizer::Bpe(_) => {}
        Tokenizer::Word(v) => {
            assert!(n >= 5);
            assert_eq!(tok.bos_id(), Some(2));
            assert_eq!(v.words()[..5], cllm_std::tokenizer::WORD_SPECIALS);
        }
    }
    // Every token decodes, and encoding the decoded text gives it back:
    // char ids are distinct characters, word tokens hold no whitespace and
    // are their own lowercase.
    for id in 0..n.min(CHECKED_IDS) as u32 {
        let text = tok.decode(&[id]).expect("id below vocab_size");
        match tok.kind() {
            // A lone byte >= 0x80 decodes to U+FFFD; the bytes are exact.
            TokenizerKind::Byte => assert_eq!(tok.decode_bytes(&[id]).unwrap(), [id as u8]),
            // A BPE token's text need not encode back to it (merges decide),
            // so only check that every id decodes.
            TokenizerKind::Bpe => {
                tok.decode_bytes(&[id]).expect("id below vocab_size");
            }
            _ => assert_eq!(tok.encode(&text).unwrap(), [id], "token {id} ({text:?})"),
        }
    }
    assert!(matches!(
        tok.decode(&[n as u32]),
        Err(TokenizerError::IdOutOfRange { .. })
    ));
    Some(tok)
}

// ---------------------------------------------------------------------------
// Whole directories
// ---------------------------------------------------------------------------

/// What `load_model_dir` checks, from bytes in memory.
fn model_dir(data: &[u8]) {
    let [cfg, tok_json, vocab, model] = parts::<4>(data);
    let (Some(cfg), Some(tok), Some(model)) =
        (config(cfg), tokenizer(tok_json, vocab), safetensors(model))
    else {
        return;
    };
    let fits = tok.vocab_size() <= cfg.vocab_size;
    let matches = check_gpt2_tensors(
        Path::new("model.safetensors"),
        model.iter().map(|t| (t.name.as_str(), t.shape.as_slice())),
        &cfg,
    );
    if matches.is_ok() && fits && cfg.n_layer <= 64 {
        // Accepted: exactly the GPT-2 tensors (plus an optional tied
        // lm_head.weight), each with the shape the config implies.
        let want = gpt2_tensor_shapes(&cfg);
        let extra = model.iter().filter(|t| t.name == "lm_head.weight").count();
        assert_eq!(model.len(), want.len() + extra);
        for (name, shape) in want {
            let t = model
                .iter()
                .find(|t| t.name == name)
                .expect("checked present");
            assert_eq!(t.shape, shape, "tensor {name}");
        }
    }
}

/// A per-process scratch directory (run.sh points TMPDIR at a directory it
/// deletes afterwards).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::temp_dir().join(format!("cllm-fuzz-checkpoint-{}", std::process::id()))
    })
}

fn checkpoint_dir(data: &[u8]) {
    let [cfg, tok_json, vocab, state, model, optim] = parts::<6>(data);
    let run = scratch();
    let _ = fs::remove_dir_all(run);
    let dir = run.join("checkpoint-7");
    fs::create_dir_all(&dir).expect("scratch directory");
    let files: [(&str, &[u8]); 6] = [
        ("config.json", cfg),
        ("tokenizer.json", tok_json),
        ("vocab.txt", vocab),
        ("trainer_state.json", state),
        ("model.safetensors", model),
        ("optimizer.safetensors", optim),
    ];
    for (name, bytes) in files {
        // An empty vocab part means "no vocab.txt", as in `tokenizer`.
        if name != "vocab.txt" || !bytes.is_empty() {
            fs::write(dir.join(name), bytes).expect("write scratch file");
        }
    }
    let loaded = load_checkpoint(&dir);
    // The run directory resolves to this checkpoint exactly when it is
    // complete, whatever its content.
    match resolve_resume(run) {
        Ok(p) => assert_eq!(p, dir),
        Err(e) => panic!("resolve_resume({}) failed: {e}", run.display()),
    }
    let Ok(ck) = loaded else {
        return;
    };
    // A loaded checkpoint is what the in-memory readers make of each file,
    // and its parts agree with each other.
    let m = &ck.model;
    assert_eq!(config(cfg).as_ref(), Some(&m.config));
    assert_eq!(tokenizer(tok_json, vocab).as_ref(), Some(&m.tokenizer));
    assert_eq!(safetensors(model).map(|t| bits(&t)), Some(bits(&m.model)));
    assert_eq!(safetensors(optim).map(|t| bits(&t)), Some(bits(&ck.optimizer)));
    assert_eq!(trainer_state(state).as_ref(), Some(&ck.state));
    assert_eq!(ck.state.step, 7, "directory name and state step must agree");
    assert!(m.tokenizer.vocab_size() <= m.config.vocab_size);
    check_gpt2_tensors(
        &dir,
        m.model
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice())),
        &m.config,
    )
    .expect("loaded tensors match the config");
}

// ---------------------------------------------------------------------------
// Hostile length fields, checked once per process
// ---------------------------------------------------------------------------

/// A safetensors file: 8-byte little-endian header length, header, data.
fn st_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    f.resize(f.len() + data_len, 0);
    f
}

fn hostile_lengths() {
    let st = |what: &str, bytes: &[u8]| {
        let r = bounded(what, 1 << 20, || {
            parse_safetensors(Path::new("hostile.safetensors"), bytes).map(|_| ())
        });
        assert!(r.is_err(), "{what}: accepted");
    };
    // Header lengths of 1 GiB and 2^62 bytes in a 16-byte file.
    let mut f = (1u64 << 30).to_le_bytes().to_vec();
    f.extend_from_slice(b"{}      ");
    st("1 GiB header", &f);
    f[..8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    st("2^62 header", &f);
    // A 16 GiB tensor whose offsets claim the data is there.
    let h = r#"{"w":{"dtype":"F32","shape":[1073741824,4],"data_offsets":[0,17179869184]}}"#;
    st("16 GiB tensor", &st_file(h, 16));
    // Shapes whose product overflows, with small offsets.
    let h = r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#;
    st("overflowing shape", &st_file(h, 16));
    // A config asking for 2^40-wide embeddings or 2^30 layers is refused
    // before anything is sized from it.
    for (field, value) in [
        ("n_embd", 1u64 << 40),
        ("n_layer", 1 << 30),
        ("vocab_size", 1 << 40),
    ] {
        let mut doc = HfGpt2Config::new(256, 64, 64, 2, 4).to_json();
        doc[field] = Value::from(value);
        let r = bounded(field, 1 << 20, || {
            HfGpt2Config::from_json(Path::new("config.json"), &doc).map(|_| ())
        });
        assert!(r.is_err(), "config with {field} = {value} accepted");
    }
    // A tokenizer declaring 2^40 tokens with a short list.
    let doc = br#"{"format":"cllm-tokenizer","version":1,"kind":"char","vocab_size":1099511627776,"chars":["a"]}"#;
    let r = bounded("tokenizer vocab_size", 1 << 20, || {
        Tokenizer::from_bytes(doc, None).map(|_| ())
    });
    assert!(r.is_err(), "tokenizer with a false vocab_size accepted");
}

fuzz_target!(|data: &[u8]| {
    static HOSTILE: Once = Once::new();
    HOSTILE.call_once(hostile_lengths);
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    bounded("reader", MAX_ALLOCATION, || match which % 6 {
        0 => drop(safetensors(rest)),
        1 => drop(config(rest)),
        2 => drop(trainer_state(rest)),
        3 => {
            let [j, v] = parts::<2>(rest);
            drop(tokenizer(j, v));
        }
        4 => model_dir(rest),
        _ => checkpoint_dir(rest),
    });
});
