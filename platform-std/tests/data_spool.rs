//! Directory corpora and char/word ids go through spool files: the corpus
//! and the ids are memory-mapped, hold exactly what the in-memory path held
//! (same bytes, same ids, same batches), leave nothing behind, and spool
//! failures are one-line errors.

use std::fs;
use std::path::{Path, PathBuf};

use cllm_std::data::{
    fill_unit, load_corpus, Corpus, DataError, LoadOptions, SkipReason, Split, TokenStore,
    SNIFF_LEN, SPOOL_BUFFER_BYTES,
};
use cllm_std::tokenizer::{Tokenizer, TokenizerKind};

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// Text of `len` bytes with words, newlines, multi-byte characters and
/// (when `invalid`) stray bytes that are not UTF-8.
fn text(len: usize, seed: u64, invalid: bool) -> Vec<u8> {
    let words: &[&[u8]] = &[
        b"the ",
        b"Sphere ",
        b"holds ",
        "caf\u{e9} ".as_bytes(),
        "\u{1f600} ".as_bytes(),
        b"twelve\n",
        "na\u{ef}ve\u{3000}".as_bytes(),
        b"workers, ",
        b"\xe9t\xe9 ",
    ];
    let n = if invalid {
        words.len()
    } else {
        words.len() - 1
    };
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % n as u64) as usize]);
    }
    out.truncate(len);
    out
}

/// The concatenation the loader documents: usable files in path order, a
/// newline between two files where the first does not end with one.
fn joined(parts: &[&[u8]]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for p in parts {
        if out.last().is_some_and(|&b| b != b'\n') {
            out.push(b'\n');
        }
        out.extend_from_slice(p);
    }
    out
}

/// A tree whose files are larger than the copy buffer and the binary sniff,
/// end with and without a newline, hold invalid UTF-8, and are mixed with
/// skipped entries.
fn tree(root: &Path) -> Vec<u8> {
    let a = text(SPOOL_BUFFER_BYTES * 2 + 123, 1, true);
    let b = text(SNIFF_LEN - 1, 2, false);
    let mut c = text(5000, 3, true);
    c.push(b'\n');
    let d = b"x".to_vec();
    write(root, "a.txt", &a);
    write(root, "b/b.md", &b);
    write(root, "b/c.rs", &c);
    write(root, "d.txt", &d);
    write(root, "empty.txt", b"");
    write(root, ".hidden", b"hidden");
    let mut bin = text(SNIFF_LEN * 3, 4, false);
    bin[SNIFF_LEN - 1] = 0;
    write(root, "blob.txt", &bin);
    joined(&[&a, &b, &c, &d])
}

fn in_spool(dir: &Path) -> LoadOptions {
    LoadOptions {
        spool_dir: Some(dir.to_path_buf()),
        ..LoadOptions::default()
    }
}

fn ids_of(store: &TokenStore) -> Vec<u32> {
    let mut out = vec![0u32; store.len()];
    assert!(store.window(0, &mut out));
    out
}

/// Batches of two stores over the same ids are identical.
fn assert_same_batches(a: &TokenStore, b: &TokenStore) {
    let seq_len = 16;
    let split = Split {
        start: 0,
        len: a.len(),
    };
    for step in 0..5 {
        let mut xa = vec![0u32; 8 * seq_len];
        let mut ya = xa.clone();
        let mut xb = xa.clone();
        let mut yb = xa.clone();
        fill_unit(a, split, 42, step, 0, 8, seq_len, &mut xa, &mut ya).unwrap();
        fill_unit(b, split, 42, step, 0, 8, seq_len, &mut xb, &mut yb).unwrap();
        assert_eq!((xa, ya), (xb, yb), "step {step}");
    }
}

/// `tree` under `corpus/` in a new temporary directory: the directory
/// (removed on drop), the tree's root and its expected bytes.
fn temp_tree() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    let want = tree(&root);
    (dir, root, want)
}

#[test]
fn directory_corpus_is_mapped_and_holds_the_same_bytes_and_ids() {
    let (_dir, root, want) = temp_tree();
    let corpus = load_corpus(&root, &LoadOptions::default()).unwrap();
    assert!(corpus.is_mapped());
    assert_eq!(corpus.bytes(), want.as_slice());

    // Summary and file offsets as before.
    let s = corpus.summary();
    assert_eq!(s.loaded_files, 4);
    assert_eq!(s.skipped_count(SkipReason::Empty), 1);
    assert_eq!(s.skipped_count(SkipReason::Hidden), 1);
    assert_eq!(s.skipped_count(SkipReason::BinaryContent), 1);
    assert_eq!(
        s.skipped[&SkipReason::BinaryContent].bytes,
        SNIFF_LEN as u64 * 3
    );
    assert_eq!(
        s.loaded_bytes,
        corpus.files().iter().map(|f| f.len as u64).sum::<u64>()
    );
    for f in corpus.files() {
        let on_disk = fs::read(&f.path).unwrap();
        assert_eq!(&corpus.bytes()[f.offset..f.offset + f.len], on_disk);
    }

    // Every tokenizer gives the ids of the in-memory path, so the batches
    // are unchanged.
    for kind in [
        TokenizerKind::Byte,
        TokenizerKind::Char,
        TokenizerKind::Word,
    ] {
        let tok = Tokenizer::train(kind, corpus.bytes(), 50).unwrap();
        let whole = Tokenizer::train(kind, &want, 50).unwrap();
        assert_eq!(tok, whole);
        let mapped = load_corpus(&root, &LoadOptions::default())
            .unwrap()
            .into_tokens(&tok)
            .unwrap();
        let owned = Corpus::from_bytes(want.clone()).into_tokens(&tok).unwrap();
        match kind {
            TokenizerKind::Byte => {
                assert!(matches!(mapped, TokenStore::Mapped(_)));
                assert!(matches!(owned, TokenStore::Bytes(_)));
            }
            _ => {
                assert!(matches!(mapped, TokenStore::MappedU16(_)), "{mapped:?}");
                assert!(matches!(owned, TokenStore::U16(_)), "{owned:?}");
            }
        }
        assert_eq!(ids_of(&mapped), ids_of(&owned), "{kind}");
        if kind != TokenizerKind::Byte {
            let lossy = String::from_utf8_lossy(&want);
            assert_eq!(ids_of(&mapped), tok.encode(&lossy).unwrap(), "{kind}");
        }
        assert_same_batches(&mapped, &owned);
    }
}

#[test]
fn single_file_char_ids_are_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("one.txt");
    let bytes = text(100_000, 9, true);
    fs::write(&p, &bytes).unwrap();
    let corpus = load_corpus(&p, &LoadOptions::default()).unwrap();
    let tok = Tokenizer::train(TokenizerKind::Char, corpus.bytes(), 0).unwrap();
    let store = corpus.into_tokens(&tok).unwrap();
    assert!(matches!(store, TokenStore::MappedU16(_)), "{store:?}");
    let want = tok.encode(&String::from_utf8_lossy(&bytes)).unwrap();
    assert_eq!(ids_of(&store), want);
    assert_eq!(store.get(want.len()), None);
    assert_eq!(store.get(7), Some(want[7]));
}

#[test]
fn vocabularies_above_u16_are_mapped_as_u32() {
    let dir = tempfile::tempdir().unwrap();
    let n = 70_000u32;
    let mut t = String::new();
    for i in 0..n {
        t.push_str(&format!("w{i}{}", if i % 10 == 9 { '\n' } else { ' ' }));
    }
    write(dir.path(), "words/a.txt", t.as_bytes());
    let corpus = load_corpus(&dir.path().join("words"), &LoadOptions::default()).unwrap();
    let tok = Tokenizer::train(TokenizerKind::Word, corpus.bytes(), 80_000).unwrap();
    assert!(tok.vocab_size() > 1 << 16);
    let store = corpus.into_tokens(&tok).unwrap();
    assert!(matches!(store, TokenStore::MappedU32(_)), "{store:?}");
    let want = tok.encode(&t).unwrap();
    assert_eq!(ids_of(&store), want);
    assert_same_batches(&store, &TokenStore::U32(want));
}

#[test]
fn spool_files_leave_nothing_behind() {
    let (dir, root, _) = temp_tree();
    let spool = dir.path().join("spool");
    fs::create_dir(&spool).unwrap();
    let corpus = load_corpus(&root, &in_spool(&spool)).unwrap();
    let tok = Tokenizer::train(TokenizerKind::Char, corpus.bytes(), 0).unwrap();
    let len = corpus.bytes().len();
    let store = corpus.into_tokens(&tok).unwrap();
    // Mapped and in use, yet not in the directory (unnamed or unlinked).
    assert!(!store.is_empty() && store.len() <= len);
    assert_eq!(fs::read_dir(&spool).unwrap().count(), 0);
    drop(store);
    assert_eq!(fs::read_dir(&spool).unwrap().count(), 0);
}

#[test]
fn spool_errors_are_one_line() {
    let (dir, root, _) = temp_tree();
    let missing = dir.path().join("no-such-dir");

    let err = load_corpus(&root, &in_spool(&missing)).unwrap_err();
    assert!(
        matches!(err, DataError::Spool { op: "create", .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot create the temporary file for the corpus text in "),
        "{msg}"
    );
    assert!(
        msg.contains("no-such-dir") && msg.contains("TMPDIR"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");

    // A single file needs no spool for its bytes, only for char/word ids.
    let file = root.join("a.txt");
    let corpus = load_corpus(&file, &in_spool(&missing)).unwrap();
    let tok = Tokenizer::train(TokenizerKind::Word, corpus.bytes(), 100).unwrap();
    let err = corpus.into_tokens(&tok).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot create the temporary file for the token ids in "),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
    let corpus = load_corpus(&file, &in_spool(&missing)).unwrap();
    assert!(corpus.into_tokens(&Tokenizer::Byte).is_ok());
}

#[test]
fn tokenizer_errors_pass_through_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "c/a.txt", b"abcabc\n");
    write(dir.path(), "c/b.txt", b"abcXabc");
    let corpus = load_corpus(&dir.path().join("c"), &LoadOptions::default()).unwrap();
    let tok = Tokenizer::train_char("abc\n").unwrap();
    let err = corpus.into_tokens(&tok).unwrap_err();
    assert!(matches!(err, DataError::Tokenizer(_)), "{err:?}");
    assert!(err.to_string().contains("position 10"), "{err}");
}
