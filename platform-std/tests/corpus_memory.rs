//! Loading and tokenizing a directory corpus needs no heap memory that grows
//! with the corpus: the text and the ids live in mapped spool files.
//!
//! A counting global allocator records the peak of live heap bytes; the
//! test binary holds this one test so nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use cllm_std::data::{load_corpus, LoadOptions, TokenStore};
use cllm_std::tokenizer::{Tokenizer, TokenizerKind};
use cllm_std::trainer::fingerprint;

struct PeakAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

const MIB: usize = 1 << 20;

/// Writes `files` files of `MIB` bytes of text (words, multi-byte
/// characters and a byte that is not UTF-8 on every line) under `root`.
fn make_corpus(root: &Path, files: usize) {
    let mut chunk = Vec::with_capacity(MIB + 100);
    let mut k = 0u32;
    while chunk.len() < MIB {
        chunk.extend_from_slice("the sphere holds twelve caf\u{e9} workers \u{1f600} ".as_bytes());
        chunk.extend_from_slice(format!("w{} ", k % 500).as_bytes());
        chunk.extend_from_slice(b"\xff\n");
        k += 1;
    }
    chunk.truncate(MIB);
    fs::create_dir_all(root).unwrap();
    for i in 0..files {
        fs::write(root.join(format!("part-{i:03}.txt")), &chunk).unwrap();
    }
}

/// Peak heap bytes above the starting level while the corpus at `root` is
/// loaded, fingerprinted, and tokenized with a char and a word tokenizer
/// (the trainer's set-up).
fn peak_while_loading(root: &Path, spool: &Path) -> usize {
    let opts = LoadOptions {
        spool_dir: Some(spool.to_path_buf()),
        ..LoadOptions::default()
    };
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    for kind in [TokenizerKind::Char, TokenizerKind::Word] {
        let corpus = load_corpus(root, &opts).unwrap();
        assert!(corpus.is_mapped());
        let _ = fingerprint(corpus.bytes());
        let tok = Tokenizer::train(kind, corpus.bytes(), 1000).unwrap();
        let store = corpus.into_tokens(&tok).unwrap();
        assert!(matches!(store, TokenStore::MappedU16(_)), "{store:?}");
        assert!(store.len() > MIB / 8);
    }
    PEAK.load(Ordering::Relaxed) - base
}

#[test]
fn heap_peak_does_not_grow_with_the_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    fs::create_dir(&spool).unwrap();
    let (small, large) = (dir.path().join("small"), dir.path().join("large"));
    make_corpus(&small, 4);
    make_corpus(&large, 24);

    let p_small = peak_while_loading(&small, &spool);
    let p_large = peak_while_loading(&large, &spool);
    let report = format!(
        "heap peak {:.2} MiB for a 4 MiB corpus, {:.2} MiB for a 24 MiB one",
        p_small as f64 / MIB as f64,
        p_large as f64 / MIB as f64
    );
    eprintln!("{report}");
    // Held in memory, the 24 MiB corpus alone would take 24 MiB and its u16
    // ids up to 48 MiB more. Spooled: a few buffers and one decoded piece.
    assert!(p_large < 8 * MIB, "{report}");
    assert!(p_large < p_small + MIB, "{report}");
}
