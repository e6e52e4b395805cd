//! Corpus bytes through the tokenizers, the token store and the batcher.
//!
//! The corpus is arbitrary bytes (invalid UTF-8 included). Checked:
//!
//! * byte tokenizer: encodes every byte as itself and round-trips exactly;
//! * char tokenizer trained on the corpus: sorted distinct vocabulary,
//!   encodes the (lossy) text and decodes it back exactly, rejects a
//!   character outside its vocabulary at the right position;
//! * word tokenizer trained on the corpus: the vocabulary is the specials
//!   then the most frequent lowercased words (recounted here), encoding
//!   maps each word to itself or `<unk>`, and `encode(decode(ids)) == ids`;
//! * `Corpus::into_tokens` stores exactly the encoded ids (owned, `u16`,
//!   and memory-mapped stores);
//! * `split_train_val`, `fill_unit`, `eval_window_starts`, `fill_windows`
//!   and `sequence_start` with arbitrary seeds, steps, sequence lengths,
//!   splits and buffer sizes either fail with an error or return windows
//!   that lie inside the split and hold the right tokens;
//! * optionally the corpus is written to disk (one file, or two files in a
//!   directory) and loaded with `load_corpus`.

#![no_main]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use cllm_std::data::{
    check_len, eval_window_starts, fill_unit, fill_windows, load_corpus, sequence_start,
    split_train_val, Corpus, DataError, LoadOptions, Split, TokenStore, SNIFF_LEN,
};
use cllm_std::tokenizer::{Tokenizer, TokenizerError, TokenizerKind, UNK_ID, WORD_SPECIALS};
use libfuzzer_sys::fuzz_target;

/// Longer corpora only make executions slower.
const MAX_CORPUS: usize = 4096;
const MAX_SEQS: usize = 4;
const MAX_SEQ_LEN: usize = 64;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    word_vocab: u8,
    /// Which store the batches are drawn from: byte, char or word.
    store: u8,
    seed: u64,
    step: u64,
    first_seq: u64,
    n_seqs: u8,
    seq_len: u8,
    /// Raw `f64` bits (NaN, negative, >= 1), else `byte / 256`.
    val_fraction: Result<u8, u64>,
    /// A split chosen freely (possibly outside the store) instead of the
    /// training split.
    split: Option<(u16, u16)>,
    /// Nonzero: the output buffers are this much too long or short.
    buffer_error: i8,
    max_windows: u16,
    /// Arbitrary `sequence_start` arguments, beyond the store's size.
    raw_len: u64,
    raw_seq_len: u64,
    /// % 4 = 1: write the corpus to a file, 2: to two files in a directory.
    disk: u8,
    cut: u16,
    corpus: &'a [u8],
}

// ---------------------------------------------------------------------------
// Tokenizers
// ---------------------------------------------------------------------------

fn check_byte(corpus: &[u8]) -> Vec<u32> {
    let tok = Tokenizer::train(TokenizerKind::Byte, corpus, 0).expect("byte always trains");
    assert_eq!(tok, Tokenizer::Byte);
    let ids = tok.encode_bytes(corpus).unwrap();
    let want: Vec<u32> = corpus.iter().map(|&b| u32::from(b)).collect();
    assert_eq!(ids, want, "byte ids are the bytes");
    assert_eq!(tok.decode_bytes(&ids).unwrap(), corpus, "byte round trip");
    assert_eq!(tok.decode(&ids).unwrap(), String::from_utf8_lossy(corpus));
    if let Ok(text) = std::str::from_utf8(corpus) {
        assert_eq!(tok.encode(text).unwrap(), ids);
    }
    assert!(matches!(
        tok.decode_bytes(&[256]),
        Err(TokenizerError::IdOutOfRange {
            id: 256,
            vocab_size: 256
        })
    ));
    ids
}

fn check_char(corpus: &[u8]) -> Option<(Tokenizer, Vec<u32>)> {
    let text = String::from_utf8_lossy(corpus);
    let tok = match Tokenizer::train(TokenizerKind::Char, corpus, 0) {
        Ok(t) => t,
        Err(TokenizerError::EmptyText) => {
            assert!(text.is_empty(), "char training refused a non-empty text");
            return None;
        }
        Err(e) => panic!("char training failed: {e}"),
    };
    let Tokenizer::Char(vocab) = &tok else {
        panic!("train(Char) gave {:?}", tok.kind());
    };
    let chars = vocab.chars();
    assert!(
        chars.windows(2).all(|w| w[0] < w[1]),
        "vocabulary not sorted and distinct"
    );
    assert!(text.chars().all(|c| chars.binary_search(&c).is_ok()));
    assert!(
        chars.iter().all(|c| text.contains(*c)),
        "a character not in the text"
    );
    let ids = tok.encode_bytes(corpus).expect("every character is known");
    assert_eq!(ids.len(), text.chars().count());
    assert!(ids.iter().all(|&i| (i as usize) < chars.len()));
    assert_eq!(tok.decode(&ids).unwrap(), text, "char round trip");
    assert_eq!(Tokenizer::from_chars(chars.to_vec()).unwrap(), tok);
    // A character the text lacks is an error at its position.
    let absent = ['a', ' ', '\u{10ffff}', '\0', 'é']
        .into_iter()
        .find(|c| !text.contains(*c));
    if let Some(c) = absent {
        let probe = format!("{text}{c}");
        match tok.encode(&probe) {
            Err(TokenizerError::UnknownChar { ch, position }) => {
                assert_eq!((ch, position), (c, text.chars().count()));
            }
            other => panic!("encoding unknown {c:?}: {other:?}"),
        }
    }
    Some((tok, ids))
}

fn check_word(corpus: &[u8], vocab_size: usize) -> Option<(Tokenizer, Vec<u32>)> {
    let text = String::from_utf8_lossy(corpus);
    let mut counts: HashMap<String, u64> = HashMap::new();
    for w in text.split_whitespace() {
        *counts.entry(w.to_lowercase()).or_insert(0) += 1;
    }
    let tok = match Tokenizer::train(TokenizerKind::Word, corpus, vocab_size) {
        Ok(t) => t,
        Err(TokenizerError::VocabTooSmall { requested, min }) => {
            assert_eq!((requested, min), (vocab_size, WORD_SPECIALS.len()));
            assert!(vocab_size < WORD_SPECIALS.len());
            return None;
        }
        Err(TokenizerError::EmptyText) => {
            assert!(counts.is_empty(), "word training refused a text with words");
            return None;
        }
        Err(e) => panic!("word training failed on {text:?}: {e}"),
    };
    assert!(vocab_size >= WORD_SPECIALS.len());
    let Tokenizer::Word(vocab) = &tok else {
        panic!("train(Word) gave {:?}", tok.kind());
    };
    let words = vocab.words();
    assert!(words.len() <= vocab_size);
    assert_eq!(words[..WORD_SPECIALS.len()], WORD_SPECIALS);
    // The rest: the most frequent words, ties in byte order, specials not
    // repeated, and nothing better left out.
    let learned = &words[WORD_SPECIALS.len()..];
    let key = |w: &String| (std::cmp::Reverse(counts[w]), w.clone());
    let mut ranked: Vec<String> = counts
        .keys()
        .filter(|w| !WORD_SPECIALS.contains(&w.as_str()))
        .cloned()
        .collect();
    ranked.sort_by_key(key);
    ranked.truncate(vocab_size - WORD_SPECIALS.len());
    assert_eq!(learned, ranked.as_slice(), "not the most frequent words");
    let ids = tok.encode(&text).unwrap();
    let split: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(ids.len(), split.len(), "one id per word");
    for (&id, w) in ids.iter().zip(&split) {
        let lower = w.to_lowercase();
        if id == UNK_ID {
            assert!(
                lower == "<unk>" || !words.contains(&lower),
                "{w:?} is known"
            );
        } else {
            assert_eq!(words[id as usize], lower, "{w:?} encoded as {id}");
        }
    }
    let decoded = tok.decode(&ids).unwrap();
    assert_eq!(tok.encode(&decoded).unwrap(), ids, "encode(decode(ids))");
    assert_eq!(Tokenizer::from_words(words.to_vec()).unwrap(), tok);
    Some((tok, ids))
}

// ---------------------------------------------------------------------------
// Token stores and batches
// ---------------------------------------------------------------------------

fn check_store(store: &TokenStore, ids: &[u32]) {
    assert_eq!(store.len(), ids.len());
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(store.get(i), Some(id));
    }
    assert_eq!(store.get(ids.len()), None);
    let mut out = [0u32; 7];
    for start in [0, 1, ids.len().saturating_sub(7), ids.len(), usize::MAX - 3] {
        let ok = store.window(start, &mut out);
        let want = start.checked_add(7).and_then(|end| ids.get(start..end));
        assert_eq!(ok, want.is_some(), "window({start}) of {}", ids.len());
        if let Some(w) = want {
            assert_eq!(&out[..], w);
        }
    }
}

fn check_split_train_val(n: usize, vf: f64) -> Option<Split> {
    let r = split_train_val(n, vf);
    if !(0.0..1.0).contains(&vf) {
        assert!(
            matches!(r, Err(DataError::InvalidValFraction { .. })),
            "val_fraction {vf}"
        );
        return None;
    }
    let (train, val) = r.expect("valid fraction");
    assert_eq!(train.start, 0);
    match val {
        None => {
            assert_eq!(vf, 0.0);
            assert_eq!(train.len, n);
        }
        Some(v) => {
            assert_eq!(v.start, train.len);
            assert_eq!(train.len + v.len, n);
            assert_eq!(v.len, ((n as f64) * vf).floor() as usize);
        }
    }
    Some(train)
}

fn check_fill_unit(store: &TokenStore, ids: &[u32], split: Split, input: &Input<'_>) {
    let n_seqs = usize::from(input.n_seqs) % (MAX_SEQS + 1);
    let seq_len = usize::from(input.seq_len) % (MAX_SEQ_LEN + 1);
    let need = n_seqs * seq_len;
    let len = need.saturating_add_signed(isize::from(input.buffer_error));
    let mut tokens = vec![u32::MAX; len];
    let mut targets = vec![u32::MAX; len];
    let r = fill_unit(
        store,
        split,
        input.seed,
        input.step,
        input.first_seq,
        n_seqs,
        seq_len,
        &mut tokens,
        &mut targets,
    );
    let in_store = split
        .start
        .checked_add(split.len)
        .is_some_and(|e| e <= ids.len());
    let valid = seq_len > 0 && len == need && in_store && split.len > seq_len;
    match r {
        Err(e) => assert!(!valid, "fill_unit refused a valid request: {e}"),
        Ok(()) => {
            assert!(
                valid,
                "fill_unit accepted seq_len {seq_len}, {len}/{need} slots, {split:?} of {}",
                ids.len()
            );
            for (i, (inp, tgt)) in tokens
                .chunks(seq_len)
                .zip(targets.chunks(seq_len))
                .enumerate()
            {
                let idx = input.first_seq.wrapping_add(i as u64);
                let rel = sequence_start(input.seed, input.step, idx, split.len, seq_len);
                assert!(
                    rel + seq_len < split.len,
                    "window {rel}+{seq_len} leaves the split"
                );
                let s = split.start + rel;
                assert_eq!(inp, &ids[s..s + seq_len], "inputs of sequence {idx}");
                assert_eq!(
                    tgt,
                    &ids[s + 1..s + seq_len + 1],
                    "targets of sequence {idx}"
                );
            }
        }
    }
}

fn check_eval_windows(store: &TokenStore, ids: &[u32], split: Split, input: &Input<'_>) {
    let seq_len = usize::from(input.seq_len) % (MAX_SEQ_LEN + 1);
    let max = usize::from(input.max_windows);
    let starts = eval_window_starts(split, seq_len, max);
    let available = if seq_len == 0 || split.len <= seq_len {
        0
    } else {
        (split.len - 1) / seq_len
    };
    assert_eq!(starts.len(), available.min(max));
    for (k, &s) in starts.iter().enumerate() {
        assert!(
            s >= split.start && s + seq_len < split.start + split.len,
            "window {s}"
        );
        assert_eq!((s - split.start) % seq_len, 0, "windows are on the grid");
        if k > 0 {
            assert!(s >= starts[k - 1] + seq_len, "windows overlap");
        }
    }
    if starts.is_empty() {
        return;
    }
    let mut tokens = vec![0u32; starts.len() * seq_len];
    let mut targets = vec![0u32; starts.len() * seq_len];
    fill_windows(store, &starts, seq_len, &mut tokens, &mut targets).expect("windows fit");
    for (&s, (inp, tgt)) in starts
        .iter()
        .zip(tokens.chunks(seq_len).zip(targets.chunks(seq_len)))
    {
        assert_eq!(inp, &ids[s..s + seq_len]);
        assert_eq!(tgt, &ids[s + 1..s + seq_len + 1]);
    }
    // One window too far is an error, not a panic.
    let past = [ids.len() - seq_len];
    let r = fill_windows(
        store,
        &past,
        seq_len,
        &mut tokens[..seq_len],
        &mut targets[..seq_len],
    );
    assert!(r.is_err(), "a window past the end was filled");
}

fn check_batches(store: &TokenStore, ids: &[u32], input: &Input<'_>) {
    let n = ids.len();
    let vf = match input.val_fraction {
        Ok(b) => f64::from(b) / 256.0,
        Err(bits) => f64::from_bits(bits),
    };
    let Some(train) = check_split_train_val(n, vf) else {
        return;
    };
    let split = match input.split {
        Some((start, len)) => Split {
            start: usize::from(start),
            len: usize::from(len),
        },
        None => train,
    };
    check_fill_unit(store, ids, split, input);
    if split.start.checked_add(split.len).is_some_and(|e| e <= n) {
        check_eval_windows(store, ids, split, input);
    }
    let seq_len = usize::from(input.seq_len) % (MAX_SEQ_LEN + 1);
    assert_eq!(check_len(n, seq_len).is_ok(), n > seq_len);
}

/// `sequence_start` stays below the number of valid starts for any size.
fn check_sequence_start(input: &Input<'_>) {
    let (n, t) = (input.raw_len as usize, input.raw_seq_len as usize);
    let s = sequence_start(input.seed, input.step, input.first_seq, n, t);
    assert!(
        s < n.saturating_sub(t).max(1),
        "sequence_start {s} for {n} tokens, seq_len {t}"
    );
}

// ---------------------------------------------------------------------------
// Loading from disk
// ---------------------------------------------------------------------------

fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| std::env::temp_dir().join(format!("cllm-fuzz-data-{}", std::process::id())))
}

fn usable(part: &[u8]) -> bool {
    !part.is_empty() && !part[..part.len().min(SNIFF_LEN)].contains(&0)
}

fn check_disk(corpus: &[u8], input: &Input<'_>) {
    let root = scratch();
    let _ = fs::remove_dir_all(root);
    fs::create_dir_all(root).expect("scratch directory");
    let opts = LoadOptions::default();
    let single = input.disk % 4 == 1;
    let (path, want): (PathBuf, Option<Vec<u8>>) = if single {
        // A single file is memory-mapped whatever its size.
        let p = root.join("corpus.txt");
        fs::write(&p, corpus).unwrap();
        (p, usable(corpus).then(|| corpus.to_vec()))
    } else {
        // Two files in a directory, joined with a newline unless the first
        // already ends with one; unusable files are skipped.
        let cut = usize::from(input.cut) % (corpus.len() + 1);
        let (a, b) = corpus.split_at(cut);
        let dir = root.join("dir");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("a.txt"), a).unwrap();
        fs::write(dir.join("b.txt"), b).unwrap();
        let mut want: Vec<u8> = Vec::new();
        for part in [a, b].into_iter().filter(|p| usable(p)) {
            if want.last().is_some_and(|&c| c != b'\n') {
                want.push(b'\n');
            }
            want.extend_from_slice(part);
        }
        (dir, (!want.is_empty()).then_some(want))
    };
    match (load_corpus(&path, &opts), want) {
        (Ok(c), Some(w)) => {
            assert_eq!(c.bytes(), w.as_slice(), "loaded corpus");
            assert_eq!(
                c.summary().loaded_bytes as usize,
                c.files().iter().map(|f| f.len).sum::<usize>()
            );
            if single {
                assert!(c.is_mapped());
                // The byte store stays mapped and holds the bytes.
                let store = c.into_tokens(&Tokenizer::Byte).unwrap();
                assert!(matches!(store, TokenStore::Mapped(_)));
                let ids: Vec<u32> = w.iter().map(|&b| u32::from(b)).collect();
                check_store(&store, &ids);
            }
        }
        (Err(DataError::NoUsableText { .. }), None) => {}
        (got, want) => panic!("load_corpus: {got:?}, expected {want:?}"),
    }
}

fuzz_target!(|input: Input| {
    let corpus = &input.corpus[..input.corpus.len().min(MAX_CORPUS)];
    check_sequence_start(&input);

    let byte_ids = check_byte(corpus);
    let byte_store = Corpus::from_bytes(corpus.to_vec())
        .into_tokens(&Tokenizer::Byte)
        .unwrap();
    check_store(&byte_store, &byte_ids);

    let char_tok = check_char(corpus);
    let word_tok = check_word(corpus, usize::from(input.word_vocab));
    let mut stores = vec![(byte_store, byte_ids)];
    for (tok, ids) in [char_tok, word_tok].into_iter().flatten() {
        let store = Corpus::from_bytes(corpus.to_vec())
            .into_tokens(&tok)
            .unwrap();
        assert!(
            matches!(store, TokenStore::U16(_)),
            "small vocabularies are stored as u16"
        );
        check_store(&store, &ids);
        // The u32 form, as for vocabularies above 65 536.
        let wide = TokenStore::from_ids(ids.clone(), 1 << 17);
        assert!(matches!(wide, TokenStore::U32(_)));
        check_store(&wide, &ids);
        stores.push((store, ids));
    }
    let (store, ids) = &stores[usize::from(input.store) % stores.len()];
    check_batches(store, ids, &input);

    if matches!(input.disk % 4, 1 | 2) {
        check_disk(corpus, &input);
    }
});
