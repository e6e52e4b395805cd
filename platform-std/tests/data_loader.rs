//! Corpus loading: skip rules, summary counts, ordering and every error.

use std::fs;
use std::path::Path;

use cllm_std::data::{
    list_corpus, load_corpus, Corpus, DataError, Listing, LoadOptions, SkipReason, SNIFF_LEN,
};
use cllm_std::tokenizer::Tokenizer;

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// `load_corpus` with the default options.
fn load(path: &Path) -> Result<Corpus, DataError> {
    load_corpus(path, &LoadOptions::default())
}

/// `list_corpus` with the default options.
fn list(path: &Path) -> Result<Listing, DataError> {
    list_corpus(path, &LoadOptions::default())
}

/// A tree with one of each kind of entry the loader must handle.
fn mixed_tree(root: &Path) {
    write(root, "b.txt", b"bravo\n");
    write(root, "a.md", b"alpha");
    write(root, "sub/c.rs", b"fn main() {}\n");
    write(root, "sub/deeper/d.txt", b"delta\n");
    write(root, ".hidden.txt", b"secret\n");
    write(root, ".git/config", b"[core]\n");
    write(root, "target/debug/out.txt", b"build output\n");
    write(root, "runs/r1/metrics.jsonl", b"{}\n");
    write(root, "image.PNG", b"not really a png");
    write(root, "model.safetensors", b"xx");
    let mut bin = b"looks like text".to_vec();
    bin.push(0);
    bin.extend_from_slice(b"then a NUL");
    write(root, "blob.txt", &bin);
    write(root, "big.txt", &vec![b'x'; 2000]);
    write(root, "empty.txt", b"");
}

fn opts_small_limit() -> LoadOptions {
    LoadOptions {
        max_file_bytes: 1000,
        ..LoadOptions::default()
    }
}

#[test]
fn skip_rules_and_summary_counts() {
    let dir = tempfile::tempdir().unwrap();
    mixed_tree(dir.path());
    let corpus = load_corpus(dir.path(), &opts_small_limit()).unwrap();
    let s = corpus.summary();

    let loaded: Vec<_> = corpus
        .files()
        .iter()
        .map(|f| f.path.strip_prefix(dir.path()).unwrap().to_path_buf())
        .collect();
    assert_eq!(
        loaded,
        ["a.md", "b.txt", "sub/c.rs", "sub/deeper/d.txt"]
            .iter()
            .map(std::path::PathBuf::from)
            .collect::<Vec<_>>()
    );
    assert_eq!(s.loaded_files, 4);
    assert_eq!(s.loaded_bytes, 5 + 6 + 13 + 6);

    assert_eq!(s.skipped_count(SkipReason::Hidden), 2, "{s:?}");
    assert_eq!(s.skipped_count(SkipReason::ExcludedDir), 2);
    assert_eq!(s.skipped_count(SkipReason::BinaryExtension), 2);
    assert_eq!(s.skipped_count(SkipReason::BinaryContent), 1);
    assert_eq!(s.skipped_count(SkipReason::TooLarge), 1);
    assert_eq!(s.skipped_count(SkipReason::Empty), 1);
    assert_eq!(s.total_skipped(), 9);
    assert_eq!(s.skipped[&SkipReason::TooLarge].bytes, 2000);

    // Files are joined with a newline only where one is missing.
    assert_eq!(
        corpus.bytes(),
        b"alpha\nbravo\nfn main() {}\ndelta\n".as_slice()
    );
    // A directory is spooled into a temporary file and mapped.
    assert!(corpus.is_mapped());

    let text = s.to_string();
    assert!(text.starts_with("loaded 4 files ("), "{text}");
    assert!(text.contains("2 hidden"), "{text}");
    assert!(text.contains("1 too large (> 1000 B)"), "{text}");
    assert!(text.lines().count() <= 2, "{text}");
}

#[test]
fn order_is_sorted_and_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["z.txt", "m/a.txt", "a.txt", "m.txt", "B.txt"] {
        write(dir.path(), name, name.as_bytes());
    }
    let a = list(dir.path()).unwrap();
    let b = list(dir.path()).unwrap();
    assert_eq!(a.files(), b.files());
    let names: Vec<_> = a
        .files()
        .iter()
        .map(|f| {
            f.path
                .strip_prefix(dir.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["B.txt", "a.txt", "m/a.txt", "m.txt", "z.txt"]);
}

#[test]
fn single_file_is_mapped_and_bypasses_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(".big-hidden.bin");
    let content: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
    fs::write(&p, &content).unwrap();
    // Explicitly named: hidden name, binary extension and size are ignored.
    let corpus = load_corpus(&p, &opts_small_limit()).unwrap();
    assert!(corpus.is_mapped());
    assert_eq!(corpus.bytes(), content.as_slice());
    assert_eq!(corpus.summary().loaded_files, 1);
    let store = corpus.into_tokens(&Tokenizer::Byte).unwrap();
    assert!(matches!(store, cllm_std::data::TokenStore::Mapped(_)));
    assert_eq!(store.len(), 5000);
    assert_eq!(store.get(27), Some(u32::from(b'b')));
}

#[test]
fn single_binary_file_is_no_usable_text() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.txt");
    fs::write(&p, b"abc\0def").unwrap();
    let err = load(&p).unwrap_err();
    assert!(matches!(err, DataError::NoUsableText { .. }), "{err}");
    // The NUL check only looks at the first SNIFF_LEN bytes.
    let mut late = vec![b'a'; SNIFF_LEN];
    late.push(0);
    fs::write(&p, &late).unwrap();
    assert!(load(&p).is_ok());
}

#[test]
fn missing_path_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope");
    let err = load(&p).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }));
    assert_eq!(
        err.to_string(),
        format!("data path {} does not exist", p.display())
    );
}

#[test]
fn empty_directory_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("a/b")).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::EmptyDirectory { .. }), "{err}");
    assert!(err.to_string().contains("contains no files"));
}

#[test]
fn everything_skipped_is_no_usable_text() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".hidden", b"x");
    write(dir.path(), "a.png", b"x");
    write(dir.path(), "nul.txt", b"\0");
    // nul.txt survives listing and is rejected when read.
    let err = load(dir.path()).unwrap_err();
    match &err {
        DataError::NoUsableText { summary, .. } => {
            assert_eq!(summary.total_skipped(), 3);
            assert_eq!(summary.skipped_count(SkipReason::BinaryContent), 1);
        }
        other => panic!("unexpected {other}"),
    }
    let msg = err.to_string();
    assert!(msg.starts_with("no usable text in"), "{msg}");
    assert!(!msg.contains('\n'));
    // Nothing readable at listing time is reported at listing time.
    fs::remove_file(dir.path().join("nul.txt")).unwrap();
    let err = list(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::NoUsableText { .. }));
}

#[test]
fn file_vanishing_between_list_and_read_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a\n");
    write(dir.path(), "b.txt", b"b\n");
    let listing = list(dir.path()).unwrap();
    assert_eq!(listing.files().len(), 2);
    fs::remove_file(dir.path().join("b.txt")).unwrap();
    let err = listing.load().unwrap_err();
    match &err {
        DataError::Vanished { path } => assert!(path.ends_with("b.txt")),
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("disappeared"));

    // Same for a single explicitly named file.
    let p = dir.path().join("a.txt");
    let listing = list(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert!(matches!(listing.load(), Err(DataError::Vanished { .. })));
}

#[test]
fn symlinks_to_dirs_and_broken_links_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "real/a.txt", b"a\n");
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("loop")).unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("real/up")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("broken.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("real/a.txt"), dir.path().join("link.txt")).unwrap();
    let corpus = load(dir.path()).unwrap();
    assert_eq!(corpus.summary().loaded_files, 2, "{:?}", corpus.summary());
    assert_eq!(corpus.summary().skipped_count(SkipReason::NotRegular), 3);
}

#[test]
fn fifo_is_skipped_not_read() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a\n");
    let fifo = dir.path().join("pipe.txt");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("note: mkfifo unavailable, FIFO test skipped");
        return;
    }
    // Reading a FIFO would block forever: it must be skipped by type.
    let corpus = load(dir.path()).unwrap();
    assert_eq!(corpus.summary().skipped_count(SkipReason::NotRegular), 1);
    let err = load(&fifo).unwrap_err();
    assert!(matches!(err, DataError::Unsupported { .. }), "{err}");
}

#[test]
fn unreadable_file_is_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a\n");
    let p = dir.path().join("locked.txt");
    fs::write(&p, b"secret\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(&p).is_ok() {
        eprintln!("note: running as root (permissions not enforced); unreadable-file test skipped");
        return;
    }
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("locked.txt"));
}

#[test]
fn read_failure_after_listing_is_unreadable() {
    // Root ignores permission bits, so provoke a read error another way: the
    // listed file is replaced by a directory, which opens but cannot be read.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.txt", b"a\n");
    write(dir.path(), "b.txt", b"b\n");
    let listing = list(dir.path()).unwrap();
    fs::remove_file(dir.path().join("b.txt")).unwrap();
    fs::create_dir(dir.path().join("b.txt")).unwrap();
    let err = listing.load().unwrap_err();
    assert!(matches!(err, DataError::Unreadable { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot read ") && msg.contains("b.txt"),
        "{msg}"
    );
}

#[test]
fn custom_skip_dirs_and_extensions() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "target/a.txt", b"a\n");
    write(dir.path(), "vendor/b.txt", b"b\n");
    write(dir.path(), "c.log", b"c\n");
    let opts = LoadOptions {
        skip_dirs: vec!["vendor".into()],
        binary_extensions: vec!["log".into()],
        ..LoadOptions::default()
    };
    let corpus = load_corpus(dir.path(), &opts).unwrap();
    assert_eq!(corpus.bytes(), b"a\n");
    assert_eq!(corpus.summary().skipped_count(SkipReason::ExcludedDir), 1);
    assert_eq!(
        corpus.summary().skipped_count(SkipReason::BinaryExtension),
        1
    );
}

#[test]
fn root_named_like_an_excluded_dir_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    write(&runs, "notes.txt", b"kept\n");
    let corpus = load(&runs).unwrap();
    assert_eq!(corpus.bytes(), b"kept\n");
}

#[test]
fn invalid_utf8_is_lossy_for_char_and_exact_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "latin1.txt", b"caf\xe9\n");
    let corpus = load(dir.path()).unwrap();
    assert_eq!(corpus.text_lossy(), "caf\u{fffd}\n");
    let tok = Tokenizer::train_char(&corpus.text_lossy()).unwrap();
    let store = corpus.into_tokens(&tok).unwrap();
    assert_eq!(store.len(), 5);
    let corpus = load(dir.path()).unwrap();
    let store = corpus.into_tokens(&Tokenizer::Byte).unwrap();
    assert_eq!(store.get(3), Some(0xe9));
}

#[test]
fn loads_the_shared_tinyshakespeare_when_present() {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/tinyshakespeare/input.txt");
    if !p.exists() {
        eprintln!("note: {} not present, skipped", p.display());
        return;
    }
    let corpus = load(&p).unwrap();
    assert!(corpus.is_mapped());
    assert_eq!(corpus.bytes().len(), 1_115_394);
    let tok = Tokenizer::train_char(&corpus.text_lossy()).unwrap();
    assert_eq!(tok.vocab_size(), 65);
}
