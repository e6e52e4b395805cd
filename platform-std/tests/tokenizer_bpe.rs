//! The bpe tokenizer: training, exact byte round trips, the three ways of
//! loading it (cllm run dir, Hugging Face `tokenizer.json`, GPT-2's
//! `vocab.json` + `merges.txt`), spooled ids, and bad files.

use std::fs;
use std::path::Path;

use cllm_std::data::{load_corpus, LoadOptions, TokenStore};
use cllm_std::tokenizer::{
    Tokenizer, TokenizerKind, END_OF_TEXT, GPT2_MERGES_FILE, GPT2_VOCAB_FILE, SPECIAL_TOKENS_FILE,
    TOKENIZER_CONFIG_FILE, TOKENIZER_FILE,
};
use serde_json::Value;

/// A few hundred KB of English-like text with some awkward bytes.
fn text() -> Vec<u8> {
    let shared =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/tinyshakespeare/input.txt");
    let mut t = match fs::read(&shared) {
        Ok(b) => b[..200_000.min(b.len())].to_vec(),
        Err(_) => generated_text(200_000),
    };
    t.extend_from_slice(b"\ninvalid \xff\xfe bytes, caf\xc3\xa9, \xe2\x82 cut\n<|endoftext|>\n");
    t
}

/// Deterministic English-like text for clones without the shared data: a
/// few thousand made-up words in Zipf-like frequencies, so that BPE training
/// finds as many merges as on real text.
fn generated_text(len: usize) -> Vec<u8> {
    const ONSETS: [&str; 16] = [
        "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "th", "w", "st",
    ];
    const NUCLEI: [&str; 8] = ["a", "e", "i", "o", "u", "ea", "ou", "ai"];
    const CODAS: [&str; 8] = ["", "n", "r", "s", "t", "ll", "nd", "ng"];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let words: Vec<String> = (0..3000)
        .map(|_| {
            (0..1 + next() % 3)
                .map(|_| {
                    [
                        ONSETS[next() % ONSETS.len()],
                        NUCLEI[next() % NUCLEI.len()],
                        CODAS[next() % CODAS.len()],
                    ]
                    .concat()
                })
                .collect()
        })
        .collect();
    let mut t = Vec::with_capacity(len + 64);
    let mut in_line = 0;
    while t.len() < len {
        // The square of a uniform pick leans towards the first words.
        let r = next() % 3000;
        let w = &words[r * r / 3000];
        t.extend_from_slice(w.as_bytes());
        in_line += 1;
        t.extend_from_slice(match (in_line % 9 == 0, next() % 7) {
            (true, _) => b".\n",
            (false, 0) => b", ",
            _ => b" ",
        });
    }
    t
}

fn trained(vocab: usize) -> Tokenizer {
    Tokenizer::train(TokenizerKind::Bpe, &text(), vocab).unwrap()
}

fn ids(tok: &Tokenizer, s: &str) -> Vec<u32> {
    tok.encode(s).unwrap()
}

#[test]
fn trains_to_the_requested_size_with_endoftext_last() {
    let tok = trained(600);
    assert_eq!(tok.kind(), TokenizerKind::Bpe);
    assert_eq!(tok.vocab_size(), 600);
    assert_eq!(tok.eos_id(), Some(599));
    assert_eq!(tok.bos_id(), Some(599));
    let t = text();
    let lossy = String::from_utf8_lossy(&t).into_owned();
    let enc = tok.encode_bytes(&t).unwrap();
    assert!(
        enc.len() * 2 < t.len(),
        "{} ids for {} bytes",
        enc.len(),
        t.len()
    );
    assert_eq!(tok.decode_bytes(&enc).unwrap(), lossy.as_bytes());
    assert_eq!(tok.decode(&enc).unwrap(), lossy);
    // Any byte sequence the ids spell comes back exactly, even cut UTF-8.
    let one = ids(&tok, "caf\u{e9}");
    let bytes: Vec<u8> = one
        .iter()
        .flat_map(|&i| tok.decode_bytes(&[i]).unwrap())
        .collect();
    assert_eq!(bytes, "caf\u{e9}".as_bytes());
    assert!(tok
        .decode(&[600])
        .unwrap_err()
        .to_string()
        .contains("outside"));
}

#[test]
fn training_is_deterministic() {
    assert_eq!(trained(400), trained(400));
}

#[test]
fn vocab_size_below_the_byte_alphabet_is_an_error() {
    let e = Tokenizer::train(TokenizerKind::Bpe, &text(), 256).unwrap_err();
    assert_eq!(
        e.to_string(),
        "BPE vocabulary size 256 is too small: at least 257 (the 256 byte tokens and \
         <|endoftext|>) is needed"
    );
    assert!(Tokenizer::train(TokenizerKind::Bpe, &text(), 257).is_ok());
}

#[test]
fn saves_hugging_face_files_and_loads_them_back() {
    let tok = trained(500);
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    for f in tok.file_names() {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    assert_eq!(
        tok.file_names(),
        [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE]
    );
    let doc: Value =
        serde_json::from_slice(&fs::read(dir.path().join(TOKENIZER_FILE)).unwrap()).unwrap();
    assert_eq!(doc["model"]["type"], "BPE");
    assert_eq!(doc["added_tokens"][0]["content"], END_OF_TEXT);
    let cfg: Value =
        serde_json::from_slice(&fs::read(dir.path().join(TOKENIZER_CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(cfg["eos_token"], END_OF_TEXT);
    assert_eq!(cfg["clean_up_tokenization_spaces"], false);

    let back = Tokenizer::load(dir.path()).unwrap();
    assert_eq!(back, tok);
    let file = Tokenizer::load_path(&dir.path().join(TOKENIZER_FILE)).unwrap();
    assert_eq!(file, tok);
    let s = "Whether 'tis nobler in the mind to suffer\n";
    assert_eq!(ids(&back, s), ids(&tok, s));
}

/// GPT-2's own files, written from a trained tokenizer's vocabulary and
/// merges, give the same ids.
#[test]
fn loads_gpt2_vocab_and_merges() {
    let tok = trained(450);
    let Tokenizer::Bpe(b) = &tok else {
        unreachable!()
    };
    let doc: Value = serde_json::from_str(b.json()).unwrap();
    let mut vocab = doc["model"]["vocab"].as_object().unwrap().clone();
    vocab.insert(END_OF_TEXT.to_string(), Value::from(449));
    let mut merges = String::from("#version: 0.2\n");
    for m in doc["model"]["merges"].as_array().unwrap() {
        let line = match m {
            Value::String(s) => s.clone(),
            Value::Array(p) => format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
            other => panic!("{other}"),
        };
        merges.push_str(&line);
        merges.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(GPT2_VOCAB_FILE),
        serde_json::to_vec(&vocab).unwrap(),
    )
    .unwrap();
    fs::write(dir.path().join(GPT2_MERGES_FILE), merges).unwrap();
    let gpt2 = Tokenizer::load(dir.path()).unwrap();
    assert_eq!(gpt2.kind(), TokenizerKind::Bpe);
    assert_eq!(gpt2.vocab_size(), 450);
    assert_eq!(gpt2.eos_id(), Some(449));
    let s = String::from_utf8_lossy(&text()).into_owned();
    assert_eq!(ids(&gpt2, &s), ids(&tok, &s));
}

#[test]
fn spooled_ids_match_the_in_memory_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corpus.txt");
    fs::write(&file, text()).unwrap();
    let tok = trained(700);
    let mapped = load_corpus(&file, &LoadOptions::default())
        .unwrap()
        .into_tokens(&tok)
        .unwrap();
    assert!(matches!(mapped, TokenStore::MappedU16(_)), "{mapped:?}");
    let mut got = vec![0u32; mapped.len()];
    assert!(mapped.window(0, &mut got));
    let want = tok.encode_bytes(&text()).unwrap();
    assert_eq!(got, want);
}

#[test]
fn bad_tokenizer_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let missing = Tokenizer::load(p).unwrap_err().to_string();
    assert!(missing.contains("tokenizer.json is missing"), "{missing}");

    let word_level = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
        "normalizer":null,"pre_tokenizer":null,"post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"a":0,"[UNK]":1},"unk_token":"[UNK]"}}"#;
    let broken_bpe = r#"{"version":"1.0","added_tokens":[],"model":{"type":"BPE","vocab":{"a":0},
        "merges":["a b"]}}"#;
    let cases = [
        (
            word_level,
            "the model is WordLevel but cllm reads BPE tokenizers only",
        ),
        (broken_bpe, "invalid tokenizer file"),
        ("{\"model\": 3", "is not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ];
    for (json, want) in cases {
        fs::write(p.join(TOKENIZER_FILE), json).unwrap();
        let e = Tokenizer::load(p).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
    fs::remove_file(p.join(TOKENIZER_FILE)).unwrap();
    fs::write(p.join(GPT2_VOCAB_FILE), r#"{"a": 0, "b": 1}"#).unwrap();
    fs::write(p.join(GPT2_MERGES_FILE), "#version: 0.2\na c\n").unwrap();
    let e = Tokenizer::load(p).unwrap_err().to_string();
    assert!(e.contains("vocab.json") && !e.contains('\n'), "{e}");
}

/// Random damage to a Hugging Face `tokenizer.json` is an error or a
/// usable tokenizer, never a panic.
#[test]
fn random_corruption_of_a_hugging_face_file_never_panics() {
    let tok = trained(300);
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    let json = fs::read(dir.path().join(TOKENIZER_FILE)).unwrap();
    let mut x: u64 = 0x5eed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut errors = 0;
    for _ in 0..400 {
        let mut j = json.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % j.len() as u64) as usize;
            j[at] = match next() % 4 {
                0 => b'"',
                1 => b'0' + (next() % 10) as u8,
                2 => b'}',
                _ => next() as u8,
            };
        }
        match Tokenizer::from_bytes(&j, None) {
            Ok(t) => {
                let _ = t.encode("the fox");
                let _ = t.decode(&[0, 1, 2]);
            }
            Err(e) => {
                errors += 1;
                assert!(!e.to_string().contains('\n'), "{e}");
            }
        }
    }
    assert!(errors > 100, "only {errors} of 400 corruptions detected");
}
