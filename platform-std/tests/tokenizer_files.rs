//! Tokenizers: round-trips, vocabulary rules, saved files and their
//! validation (including random corruption, which must give errors, not
//! panics).

use std::fs;
use std::path::Path;

use cllm_std::tokenizer::{
    Tokenizer, TokenizerError, TokenizerKind, BOS_ID, EOS_ID, TOKENIZER_FILE, UNK_ID, VOCAB_FILE,
    WORD_SPECIALS,
};

mod common;
use common::Rng;

#[test]
fn byte_round_trips_arbitrary_bytes() {
    let tok = Tokenizer::Byte;
    assert_eq!(tok.vocab_size(), 256);
    assert_eq!(tok.kind(), TokenizerKind::Byte);
    let mut rng = Rng(0x1234_5678);
    for len in [0usize, 1, 2, 3, 17, 1000] {
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let ids = tok.encode_bytes(&bytes).unwrap();
        assert_eq!(ids.len(), len);
        assert_eq!(tok.decode_bytes(&ids).unwrap(), bytes);
    }
    // Every byte value, including invalid UTF-8 sequences.
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(
        tok.decode_bytes(&tok.encode_bytes(&all).unwrap()).unwrap(),
        all
    );
    // Display decoding is lossy but never fails.
    assert_eq!(tok.decode(&[0x68, 0xff, 0x69]).unwrap(), "h\u{fffd}i");
    assert!(matches!(
        tok.decode_bytes(&[256]),
        Err(TokenizerError::IdOutOfRange {
            id: 256,
            vocab_size: 256
        })
    ));
}

#[test]
fn char_vocab_is_sorted_set_and_unknown_chars_error() {
    let tok = Tokenizer::train_char("hello, wörld\nhello").unwrap();
    let Tokenizer::Char(v) = &tok else { panic!() };
    assert_eq!(
        v.chars(),
        ['\n', ' ', ',', 'd', 'e', 'h', 'l', 'o', 'r', 'w', 'ö']
    );
    let ids = tok.encode("hold wörd").unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), "hold wörd");
    assert_eq!(ids[0], 5);
    let err = tok.encode("hex").unwrap_err();
    assert!(matches!(
        err,
        TokenizerError::UnknownChar {
            ch: 'x',
            position: 2
        }
    ));
    assert_eq!(
        err.to_string(),
        "character 'x' (U+0078) at position 2 is not in the char tokenizer's vocabulary"
    );
    assert!(tok.decode(&[11]).is_err());
    assert!(matches!(
        Tokenizer::train_char(""),
        Err(TokenizerError::EmptyText)
    ));
}

#[test]
fn word_vocab_order_cap_and_specials() {
    // counts: the=4, cat=2, a=2, dog=1, zebra=1, Sat=1 (lowercased: sat)
    let text = "The cat the CAT a a the dog zebra\tSat\nthe <unk>";
    let tok = Tokenizer::train_word(text, 9).unwrap();
    let Tokenizer::Word(v) = &tok else { panic!() };
    assert_eq!(
        v.words(),
        ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>", "the", "a", "cat", "dog"]
    );
    assert_eq!(tok.vocab_size(), 9);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(BOS_ID), Some(EOS_ID)));
    let ids = tok.encode("THE  zebra\ncat <eos>").unwrap();
    assert_eq!(ids, [5, UNK_ID, 7, EOS_ID]);
    assert_eq!(tok.decode(&ids).unwrap(), "the <unk> cat <eos>");

    // A cap larger than the vocabulary keeps every word.
    let all = Tokenizer::train_word(text, 1000).unwrap();
    assert_eq!(all.vocab_size(), 5 + 6);
    // Deterministic.
    assert_eq!(all, Tokenizer::train_word(text, 1000).unwrap());
    assert!(matches!(
        Tokenizer::train_word(text, 4),
        Err(TokenizerError::VocabTooSmall {
            requested: 4,
            min: 5
        })
    ));
    assert!(matches!(
        Tokenizer::train_word(" \n\t", 10),
        Err(TokenizerError::EmptyText)
    ));
    assert_eq!(
        Tokenizer::train_word(text, 5)
            .unwrap()
            .encode("the")
            .unwrap(),
        [UNK_ID]
    );
}

#[test]
fn kind_parsing() {
    assert_eq!(
        "char".parse::<TokenizerKind>().unwrap(),
        TokenizerKind::Char
    );
    let e = "unigram".parse::<TokenizerKind>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown tokenizer `unigram` (expected byte, char, word or bpe)"
    );
}

fn save_load(tok: &Tokenizer) -> Tokenizer {
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path()).unwrap();
    for f in tok.file_names() {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    // No temporary files left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), tok.file_names().len(), "{names:?}");
    Tokenizer::load(dir.path()).unwrap()
}

#[test]
fn save_and_load_round_trip() {
    assert_eq!(save_load(&Tokenizer::Byte), Tokenizer::Byte);
    let ch = Tokenizer::train_char("a\"b\\c\n\t\u{0}é😀").unwrap();
    assert_eq!(save_load(&ch), ch);
    let w = Tokenizer::train_word("x y y z z z ünïcödé", 100).unwrap();
    assert_eq!(save_load(&w), w);

    let dir = tempfile::tempdir().unwrap();
    w.save(dir.path()).unwrap();
    let vocab = fs::read_to_string(dir.path().join(VOCAB_FILE)).unwrap();
    assert_eq!(
        vocab,
        "<pad>\n<unk>\n<bos>\n<eos>\n<mask>\nz\ny\nx\nünïcödé\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join(TOKENIZER_FILE)).unwrap())
            .unwrap();
    assert_eq!(json["kind"], "word");
    assert_eq!(json["vocab_size"], 9);
}

fn load_err(files: &[(&str, &[u8])]) -> TokenizerError {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        fs::write(dir.path().join(name), bytes).unwrap();
    }
    Tokenizer::load(dir.path()).unwrap_err()
}

/// Files (name, content) to place in a model directory.
type Files<'a> = Vec<(&'a str, &'a [u8])>;

const WORD_JSON: &[u8] = br#"{"format":"cllm-tokenizer","version":1,"kind":"word","vocab_size":6}"#;

#[test]
fn invalid_files_give_clear_errors() {
    let cases: Vec<(Files, &str)> = vec![
        (vec![], "is missing"),
        (vec![(TOKENIZER_FILE, b"")], "not valid JSON"),
        (vec![(TOKENIZER_FILE, b"{\"kind\":")], "not valid JSON"),
        (vec![(TOKENIZER_FILE, b"[1,2]")], "expected a JSON object"),
        (vec![(TOKENIZER_FILE, b"\xff\xfe")], "not UTF-8"),
        (
            vec![(TOKENIZER_FILE, br#"{"kind":"byte","vocab_size":256}"#)],
            "\"format\" must be",
        ),
        (
            vec![(
                TOKENIZER_FILE,
                br#"{"format":"cllm-tokenizer","version":2,"kind":"byte","vocab_size":256}"#,
            )],
            "unsupported \"version\"",
        ),
        (
            vec![(
                TOKENIZER_FILE,
                br#"{"format":"cllm-tokenizer","version":1,"kind":"unigram","vocab_size":256}"#,
            )],
            "unknown kind",
        ),
        (
            vec![(
                TOKENIZER_FILE,
                br#"{"format":"cllm-tokenizer","version":1,"kind":"byte","vocab_size":255}"#,
            )],
            "\"vocab_size\" is 255",
        ),
        (
            vec![(
                TOKENIZER_FILE,
                br#"{"format":"cllm-tokenizer","version":1,"kind":"char","vocab_size":0,"chars":[]}"#,
            )],
            "empty",
        ),
        (
            vec![(
                TOKENIZER_FILE,
                br#"{"format":"cllm-tokenizer","version":1,"kind":"char","vocab_size":2,"chars":["a","a"]}"#,
            )],
            "appears twice",
        ),
        (
            vec![(
                TOKENIZER_FILE,
                br#"{"format":"cllm-tokenizer","version":1,"kind":"char","vocab_size":1,"chars":["ab"]}"#,
            )],
            "not exactly one character",
        ),
        (
            vec![(
                TOKENIZER_FILE,
                br#"{"format":"cllm-tokenizer","version":1,"kind":"char","vocab_size":1,"chars":[7]}"#,
            )],
            "not a string",
        ),
        (vec![(TOKENIZER_FILE, WORD_JSON)], "vocab.txt is missing"),
        (
            vec![(TOKENIZER_FILE, WORD_JSON), (VOCAB_FILE, b"")],
            "special tokens",
        ),
        (
            vec![
                (TOKENIZER_FILE, WORD_JSON),
                (VOCAB_FILE, b"<pad>\n<unk>\n<bos>\n<eos>\n<mask>\nfoo\nfoo\n"),
            ],
            "appears twice",
        ),
        (
            vec![
                (TOKENIZER_FILE, WORD_JSON),
                (VOCAB_FILE, b"<pad>\n<unk>\n<bos>\n<eos>\n<mask>\n\nfoo\n"),
            ],
            "line 6 is empty",
        ),
        (
            vec![
                (TOKENIZER_FILE, WORD_JSON),
                (VOCAB_FILE, b"<unk>\n<pad>\n<bos>\n<eos>\n<mask>\nfoo\n"),
            ],
            "must be the special <pad>",
        ),
        (
            vec![
                (TOKENIZER_FILE, WORD_JSON),
                (VOCAB_FILE, b"<pad>\n<unk>\n<bos>\n<eos>\n<mask>\nFoo\n"),
            ],
            "not lowercase",
        ),
        (
            vec![
                (TOKENIZER_FILE, WORD_JSON),
                (VOCAB_FILE, b"<pad>\n<unk>\n<bos>\n<eos>\n<mask>\nfoo\nbar\n"),
            ],
            "\"vocab_size\" is 6 but the vocabulary has 7",
        ),
    ];
    for (files, want) in cases {
        let err = load_err(&files);
        let msg = err.to_string();
        assert!(msg.contains(want), "expected {want:?} in {msg:?}");
        assert!(!msg.contains('\n'), "multi-line error {msg:?}");
    }
    // A well-formed word vocabulary without a trailing newline is fine.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(TOKENIZER_FILE), WORD_JSON).unwrap();
    fs::write(
        dir.path().join(VOCAB_FILE),
        WORD_SPECIALS.join("\n") + "\nfoo",
    )
    .unwrap();
    assert_eq!(Tokenizer::load(dir.path()).unwrap().vocab_size(), 6);
}

fn flip_random_bytes(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let mut b = original.to_vec();
    match rng.below(4) {
        0 if !b.is_empty() => {
            let n = rng.below(b.len());
            b.truncate(n);
        }
        1 => {
            let extra = rng.below(8);
            for _ in 0..extra {
                b.push(rng.next() as u8);
            }
        }
        _ => {
            for _ in 0..1 + rng.below(4) {
                if b.is_empty() {
                    break;
                }
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
    }
    b
}

#[test]
fn random_corruption_never_panics() {
    let mut rng = Rng(0xdead_beef);
    let toks = [
        Tokenizer::Byte,
        Tokenizer::train_char("the quick brown fox\n").unwrap(),
        Tokenizer::train_word("the quick brown fox jumps over the lazy dog", 20).unwrap(),
    ];
    let mut errors = 0;
    for tok in &toks {
        let src = tempfile::tempdir().unwrap();
        tok.save(src.path()).unwrap();
        let json = fs::read(src.path().join(TOKENIZER_FILE)).unwrap();
        let vocab = fs::read(src.path().join(VOCAB_FILE)).ok();
        for _ in 0..300 {
            // Corrupt one of the saved files (in memory: same validation as
            // loading from the directory, without 900 rounds of file I/O).
            let (mut j, mut v) = (json.clone(), vocab.clone());
            match &mut v {
                Some(vb) if rng.below(2) == 0 => *vb = flip_random_bytes(&mut rng, vb),
                _ => j = flip_random_bytes(&mut rng, &j),
            }
            match Tokenizer::from_bytes(&j, v.as_deref()) {
                Ok(t) => {
                    // Whatever loads must be usable.
                    let _ = t.decode(&[0, 1, 2]);
                    let _ = t.encode("the fox");
                }
                Err(e) => {
                    errors += 1;
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }
    // Most corruptions must be detected.
    assert!(errors > 300, "only {errors} of 900 corruptions detected");
}

#[test]
fn save_into_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir");
    let err = Tokenizer::Byte.save(&missing).unwrap_err();
    assert!(matches!(err, TokenizerError::Io(_)));
    assert!(err.to_string().contains(&*missing.to_string_lossy()));
    assert!(!Path::new(&missing).exists());
}

#[test]
fn from_bytes_matches_load_and_survives_arbitrary_bytes() {
    let w = Tokenizer::train_word("a b b c", 10).unwrap();
    let dir = tempfile::tempdir().unwrap();
    w.save(dir.path()).unwrap();
    let json = fs::read(dir.path().join(TOKENIZER_FILE)).unwrap();
    let vocab = fs::read(dir.path().join(VOCAB_FILE)).unwrap();
    assert_eq!(Tokenizer::from_bytes(&json, Some(&vocab)).unwrap(), w);
    let e = Tokenizer::from_bytes(&json, None).unwrap_err();
    assert!(matches!(e, TokenizerError::MissingFile { .. }), "{e}");

    let mut rng = Rng(42);
    let prefixes: [&[u8]; 3] = [
        b"",
        br#"{"format":"cllm-tokenizer","version":1,"kind":"char","vocab_size":3,"chars":["#,
        br#"{"format":"cllm-tokenizer","version":1,"kind":"word","vocab_size":"#,
    ];
    for _ in 0..5000 {
        let mut b = prefixes[rng.below(3)].to_vec();
        for _ in 0..rng.below(40) {
            // Mostly JSON-ish characters, so parsing gets past the first byte.
            let alphabet = b"\"[]{},:0123456789abc\\ \n\xff";
            b.push(alphabet[rng.below(alphabet.len())]);
        }
        let v: Vec<u8> = (0..rng.below(30)).map(|_| rng.next() as u8).collect();
        if let Ok(t) = Tokenizer::from_bytes(&b, Some(&v)) {
            let _ = t.decode(&[0, 1, 2, 3]);
        }
    }
}

/// Byte and char run directories hold a `tokenizer.json` that the Hugging
/// Face `tokenizers` library itself reads, with the same ids and text as
/// cllm, and that cllm reads back as the same kind; the cllm format of
/// earlier versions still loads.
#[test]
fn byte_and_char_files_are_hugging_face_tokenizers_with_the_same_ids() {
    let text = "First Citizen:\nBefore we proceed, hear me speak.\t\"é\" ünï 😀 \u{0}  end\n";
    let char_tok = Tokenizer::train_char(text).unwrap();
    for tok in [Tokenizer::Byte, char_tok] {
        let dir = tempfile::tempdir().unwrap();
        tok.save(dir.path()).unwrap();
        for f in ["tokenizer_config.json", "special_tokens_map.json"] {
            assert!(dir.path().join(f).is_file(), "{:?}: {f}", tok.kind());
        }
        let hf = tokenizers::Tokenizer::from_file(dir.path().join(TOKENIZER_FILE)).unwrap();
        let ids = tok.encode(text).unwrap();
        let enc = hf.encode(text, false).unwrap();
        assert_eq!(enc.get_ids(), &ids[..], "{:?}: ids", tok.kind());
        assert_eq!(
            hf.decode(&ids, false).unwrap(),
            text,
            "{:?}: text",
            tok.kind()
        );
        assert_eq!(hf.get_vocab_size(false), tok.vocab_size());
        assert_eq!(Tokenizer::load(dir.path()).unwrap(), tok);
    }
    let old = br#"{"format":"cllm-tokenizer","version":1,"kind":"char","vocab_size":2,"chars":["a","b"]}"#;
    let t = Tokenizer::from_bytes(old, None).unwrap();
    assert_eq!(t.kind(), TokenizerKind::Char);
    assert_eq!(t.encode("ba").unwrap(), vec![1, 0]);
    let old = br#"{"format":"cllm-tokenizer","version":1,"kind":"byte","vocab_size":256}"#;
    assert_eq!(Tokenizer::from_bytes(old, None).unwrap(), Tokenizer::Byte);
}
