//! Training corpus: finding text files, reading them, the token store and
//! deterministic batches.
//!
//! Loading is two-phase so each failure is attributable: [`list_corpus`]
//! walks the path and applies the name/size rules, [`Listing::load`] reads
//! the survivors and applies the content rule. A file that disappears between
//! the two phases is an error ([`DataError::Vanished`]), never a silent skip.
//!
//! Batches are a pure function of `(seed, step, sequence index)` (see
//! [`sequence_start`]), so the same run sees the same windows whatever the
//! thread count, tree depth or branching, and a resumed run continues with
//! exactly the windows an uninterrupted one would have used.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::tokenizer::{Tokenizer, TokenizerError};

mod batch;

pub use batch::{
    check_len, eval_window_starts, fill_unit, fill_windows, mix64, sequence_start, split_train_val,
    Split, TokenStore, BATCH_HASH_VERSION,
};

/// Bytes inspected for a NUL byte when deciding whether a file is binary.
pub const SNIFF_LEN: usize = 8 * 1024;

/// Default per-file size limit for files found inside a directory (16 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Directory names skipped by default, so training on a repository does not
/// eat its own build outputs and checkpoints.
pub const DEFAULT_SKIP_DIRS: &[&str] = &["target", "runs", "node_modules", "__pycache__"];

/// File extensions (lowercase, without the dot) treated as binary without
/// looking at the content.
pub const BINARY_EXTENSIONS: &[&str] = &[
    "png",
    "jpg",
    "jpeg",
    "gif",
    "bmp",
    "ico",
    "webp",
    "tif",
    "tiff",
    "svgz",
    "pdf",
    "zip",
    "gz",
    "tgz",
    "bz2",
    "xz",
    "zst",
    "7z",
    "rar",
    "tar",
    "jar",
    "so",
    "o",
    "a",
    "rlib",
    "rmeta",
    "dylib",
    "dll",
    "exe",
    "lib",
    "obj",
    "bin",
    "dat",
    "class",
    "pyc",
    "wasm",
    "safetensors",
    "pt",
    "pth",
    "ckpt",
    "npy",
    "npz",
    "onnx",
    "pkl",
    "db",
    "sqlite",
    "mp3",
    "mp4",
    "wav",
    "ogg",
    "flac",
    "avi",
    "mov",
    "mkv",
    "ttf",
    "otf",
    "woff",
    "woff2",
    "eot",
];

/// Rules for [`list_corpus`] / [`load_corpus`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Files found in a directory larger than this are skipped. A file given
    /// directly as the corpus path is used whatever its size (it is
    /// memory-mapped, not copied).
    pub max_file_bytes: u64,
    /// Directory names (exact match, any depth below the root) not descended
    /// into.
    pub skip_dirs: Vec<String>,
    /// Extensions (lowercase, no dot) skipped as binary for files found in a
    /// directory.
    pub binary_extensions: Vec<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            skip_dirs: DEFAULT_SKIP_DIRS.iter().map(|s| s.to_string()).collect(),
            binary_extensions: BINARY_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Why a file or directory was left out of the corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// Name starts with `.` (file or directory).
    Hidden,
    /// A directory in [`LoadOptions::skip_dirs`].
    ExcludedDir,
    /// Extension in the binary list.
    BinaryExtension,
    /// A NUL byte in the first [`SNIFF_LEN`] bytes.
    BinaryContent,
    /// Larger than [`LoadOptions::max_file_bytes`].
    TooLarge,
    /// Zero bytes long.
    Empty,
    /// A symlink to a directory, a broken symlink, a FIFO, socket or device.
    NotRegular,
}

impl SkipReason {
    /// Short human label used in the summary.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Hidden => "hidden",
            SkipReason::ExcludedDir => "excluded directory",
            SkipReason::BinaryExtension => "binary extension",
            SkipReason::BinaryContent => "binary content",
            SkipReason::TooLarge => "too large",
            SkipReason::Empty => "empty",
            SkipReason::NotRegular => "not a regular file",
        }
    }
}

/// Count and size of the entries skipped for one reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipCount {
    /// Entries skipped (files or directories).
    pub entries: usize,
    /// Bytes of the skipped files (directories count 0).
    pub bytes: u64,
}

/// What a load kept and left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Files whose text is in the corpus.
    pub loaded_files: usize,
    /// Total bytes of those files.
    pub loaded_bytes: u64,
    /// Skipped entries, by reason.
    pub skipped: BTreeMap<SkipReason, SkipCount>,
    /// Every skipped entry, in path order.
    pub skipped_paths: Vec<(PathBuf, SkipReason)>,
    /// Size limit that was in force (for the summary line).
    pub max_file_bytes: u64,
}

impl LoadSummary {
    fn skip(&mut self, path: PathBuf, reason: SkipReason, bytes: u64) {
        let c = self.skipped.entry(reason).or_default();
        c.entries += 1;
        c.bytes += bytes;
        self.skipped_paths.push((path, reason));
    }

    /// Number of entries skipped for `reason`.
    pub fn skipped_count(&self, reason: SkipReason) -> usize {
        self.skipped.get(&reason).map_or(0, |c| c.entries)
    }

    /// Total number of skipped entries.
    pub fn total_skipped(&self) -> usize {
        self.skipped.values().map(|c| c.entries).sum()
    }
}

/// Formats a byte count with a binary unit (`1.5 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loaded {} file{} ({})",
            self.loaded_files,
            if self.loaded_files == 1 { "" } else { "s" },
            human_bytes(self.loaded_bytes)
        )?;
        if self.skipped.is_empty() {
            return write!(f, "; nothing skipped");
        }
        write!(f, "\nskipped {}:", self.total_skipped())?;
        let mut first = true;
        for (reason, c) in &self.skipped {
            write!(
                f,
                "{} {} {}",
                if first { "" } else { "," },
                c.entries,
                reason.label()
            )?;
            if *reason == SkipReason::TooLarge {
                write!(f, " (> {})", human_bytes(self.max_file_bytes))?;
            }
            first = false;
        }
        Ok(())
    }
}

/// Errors of corpus loading and batching. Each `Display` is one line.
#[derive(Debug)]
pub enum DataError {
    /// The corpus path does not exist.
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// The corpus path is neither a regular file nor a directory.
    Unsupported {
        /// The path given.
        path: PathBuf,
    },
    /// The directory (recursively) holds no file at all.
    EmptyDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// Files exist but every one was skipped.
    NoUsableText {
        /// The corpus path.
        path: PathBuf,
        /// What was skipped and why.
        summary: LoadSummary,
    },
    /// A file or directory could not be read (permissions, I/O error).
    Unreadable {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file listed in the first phase was gone when it was read.
    Vanished {
        /// The file.
        path: PathBuf,
    },
    /// A token stream too short for one training window.
    TooShort {
        /// Which stream (`"text"`, `"training split"`, `"validation split"`).
        part: &'static str,
        /// Tokens available.
        tokens: usize,
        /// Tokens needed (`seq_len + 1`).
        needed: usize,
    },
    /// `val_fraction` outside `[0, 1)`.
    InvalidValFraction {
        /// The value given.
        value: f64,
    },
    /// Bad arguments to the batch functions (a caller bug or a bad flag).
    InvalidBatch {
        /// What is wrong, with the numbers.
        reason: String,
    },
    /// Tokenizing the corpus failed.
    Tokenizer(TokenizerError),
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Missing { path } => write!(f, "data path {} does not exist", path.display()),
            DataError::Unsupported { path } => write!(
                f,
                "data path {} is neither a regular file nor a directory",
                path.display()
            ),
            DataError::EmptyDirectory { path } => {
                write!(f, "data directory {} contains no files", path.display())
            }
            DataError::NoUsableText { path, summary } => write!(
                f,
                "no usable text in {}: all {} entries were skipped ({})",
                path.display(),
                summary.total_skipped(),
                summary
                    .skipped
                    .iter()
                    .map(|(r, c)| format!("{} {}", c.entries, r.label()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            DataError::Unreadable { path, source } => {
                write!(f, "cannot read {}: {}", path.display(), source)
            }
            DataError::Vanished { path } => write!(
                f,
                "file {} disappeared while the corpus was being loaded",
                path.display()
            ),
            DataError::TooShort {
                part,
                tokens,
                needed,
            } => write!(
                f,
                "the {part} has {tokens} tokens but one window needs {needed} (seq-len + 1); \
                 use more data, a shorter --seq-len or a smaller --val-fraction"
            ),
            DataError::InvalidValFraction { value } => {
                write!(f, "val-fraction must be in [0, 1), got {value}")
            }
            DataError::InvalidBatch { reason } => write!(f, "invalid batch request: {reason}"),
            DataError::Tokenizer(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataError::Unreadable { source, .. } => Some(source),
            DataError::Tokenizer(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TokenizerError> for DataError {
    fn from(e: TokenizerError) -> Self {
        DataError::Tokenizer(e)
    }
}

/// A file chosen by [`list_corpus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedFile {
    /// Its path.
    pub path: PathBuf,
    /// Its size when listed.
    pub len: u64,
}

/// Result of the first loading phase: the files to read, in sorted path
/// order, and the entries already skipped by name, type or size.
#[derive(Clone, Debug)]
pub struct Listing {
    root: PathBuf,
    root_is_file: bool,
    files: Vec<ListedFile>,
    summary: LoadSummary,
}

fn unreadable(path: &Path, source: io::Error) -> DataError {
    DataError::Unreadable {
        path: path.to_path_buf(),
        source,
    }
}

/// An I/O error on something already seen: `NotFound` means it vanished.
fn listed_err(path: &Path, source: io::Error) -> DataError {
    if source.kind() == io::ErrorKind::NotFound {
        DataError::Vanished {
            path: path.to_path_buf(),
        }
    } else {
        unreadable(path, source)
    }
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

fn extension_lower(path: &Path) -> Option<String> {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// Phase one: walk `path` (a file or a directory, recursively) and decide
/// which files to read.
///
/// The root itself is never skipped by name. Inside a directory: hidden
/// entries, [`LoadOptions::skip_dirs`], binary extensions, files over the
/// size limit, empty files and non-regular entries (including symlinks to
/// directories, which could loop) are skipped and counted.
pub fn list_corpus(path: &Path, opts: &LoadOptions) -> Result<Listing, DataError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => DataError::Missing {
            path: path.to_path_buf(),
        },
        _ => unreadable(path, e),
    })?;
    let mut summary = LoadSummary {
        max_file_bytes: opts.max_file_bytes,
        ..LoadSummary::default()
    };
    if meta.is_file() {
        return Ok(Listing {
            root: path.to_path_buf(),
            root_is_file: true,
            files: vec![ListedFile {
                path: path.to_path_buf(),
                len: meta.len(),
            }],
            summary,
        });
    }
    if !meta.is_dir() {
        return Err(DataError::Unsupported {
            path: path.to_path_buf(),
        });
    }

    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(|e| listed_err(&dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| listed_err(&dir, e))?;
            let p = entry.path();
            let name = entry.file_name();
            let ft = entry.file_type().map_err(|e| listed_err(&p, e))?;
            if is_hidden(&name) {
                summary.skip(p, SkipReason::Hidden, 0);
                continue;
            }
            if ft.is_dir() {
                if opts
                    .skip_dirs
                    .iter()
                    .any(|d| d.as_str() == name.to_string_lossy())
                {
                    summary.skip(p, SkipReason::ExcludedDir, 0);
                } else {
                    stack.push(p);
                }
                continue;
            }
            // Follow a symlink only when it points at a regular file:
            // directory links can form cycles.
            let meta = match fs::metadata(&p) {
                Ok(m) if m.is_file() => m,
                Ok(_) => {
                    summary.skip(p, SkipReason::NotRegular, 0);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && ft.is_symlink() => {
                    summary.skip(p, SkipReason::NotRegular, 0);
                    continue;
                }
                Err(e) => return Err(listed_err(&p, e)),
            };
            let len = meta.len();
            let ext = extension_lower(&p);
            if ext.is_some_and(|e| opts.binary_extensions.contains(&e)) {
                summary.skip(p, SkipReason::BinaryExtension, len);
            } else if len > opts.max_file_bytes {
                summary.skip(p, SkipReason::TooLarge, len);
            } else if len == 0 {
                summary.skip(p, SkipReason::Empty, 0);
            } else {
                files.push(ListedFile { path: p, len });
            }
        }
    }
    summary.skipped_paths.sort();
    if files.is_empty() {
        // Only (nested) empty directories: nothing to skip, nothing to read.
        if summary.skipped.is_empty() {
            return Err(DataError::EmptyDirectory {
                path: path.to_path_buf(),
            });
        }
        return Err(DataError::NoUsableText {
            path: path.to_path_buf(),
            summary,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Listing {
        root: path.to_path_buf(),
        root_is_file: false,
        files,
        summary,
    })
}

/// Reads a whole file, mapping `NotFound` to [`DataError::Vanished`].
fn read_listed(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut f = open_listed(path)?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|e| unreadable(path, e))?;
    Ok(buf)
}

fn open_listed(path: &Path) -> Result<File, DataError> {
    File::open(path).map_err(|e| listed_err(path, e))
}

fn looks_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(SNIFF_LEN)].contains(&0)
}

impl Listing {
    /// The files that will be read, in order.
    pub fn files(&self) -> &[ListedFile] {
        &self.files
    }

    /// What has been skipped so far.
    pub fn summary(&self) -> &LoadSummary {
        &self.summary
    }

    /// Phase two: read the listed files, skip those whose first
    /// [`SNIFF_LEN`] bytes contain a NUL, and concatenate the rest.
    ///
    /// A corpus made of a single file is memory-mapped rather than copied,
    /// so a byte-tokenized corpus larger than memory works. Between files a
    /// `\n` is inserted when the previous one does not end with one, so the
    /// last word of a file never fuses with the first of the next.
    pub fn load(self) -> Result<Corpus, DataError> {
        let Listing {
            root,
            root_is_file,
            files,
            mut summary,
        } = self;
        if root_is_file {
            let file = &files[0];
            let f = open_listed(&file.path)?;
            let len = f.metadata().map_err(|e| unreadable(&file.path, e))?.len();
            if len == 0 {
                summary.skip(file.path.clone(), SkipReason::Empty, 0);
                return Err(DataError::NoUsableText {
                    path: root,
                    summary,
                });
            }
            // SAFETY: the map is read-only and private to this process. If
            // another process truncates the file while it is mapped, reads
            // past the new end fault (SIGBUS); that is the accepted price of
            // not copying corpora larger than memory, and is documented for
            // users ("do not modify the corpus while training").
            let map = unsafe { Mmap::map(&f) }.map_err(|e| unreadable(&file.path, e))?;
            if looks_binary(&map) {
                summary.skip(file.path.clone(), SkipReason::BinaryContent, len);
                return Err(DataError::NoUsableText {
                    path: root,
                    summary,
                });
            }
            summary.loaded_files = 1;
            summary.loaded_bytes = len;
            return Ok(Corpus {
                bytes: CorpusBytes::Mapped(map),
                files: vec![SourceFile {
                    path: file.path.clone(),
                    offset: 0,
                    len: len as usize,
                }],
                summary,
            });
        }

        let mut bytes = Vec::new();
        let mut sources = Vec::new();
        for file in &files {
            let content = read_listed(&file.path)?;
            if content.is_empty() {
                summary.skip(file.path.clone(), SkipReason::Empty, 0);
                continue;
            }
            if looks_binary(&content) {
                summary.skip(
                    file.path.clone(),
                    SkipReason::BinaryContent,
                    content.len() as u64,
                );
                continue;
            }
            if bytes.last().is_some_and(|&b| b != b'\n') {
                bytes.push(b'\n');
            }
            sources.push(SourceFile {
                path: file.path.clone(),
                offset: bytes.len(),
                len: content.len(),
            });
            summary.loaded_files += 1;
            summary.loaded_bytes += content.len() as u64;
            bytes.extend_from_slice(&content);
        }
        summary.skipped_paths.sort();
        if sources.is_empty() {
            return Err(DataError::NoUsableText {
                path: root,
                summary,
            });
        }
        Ok(Corpus {
            bytes: CorpusBytes::Owned(bytes),
            files: sources,
            summary,
        })
    }
}

/// Lists and loads a corpus in one call (see [`list_corpus`] and
/// [`Listing::load`]).
pub fn load_corpus(path: &Path, opts: &LoadOptions) -> Result<Corpus, DataError> {
    list_corpus(path, opts)?.load()
}

/// Where one source file's text sits in [`Corpus::bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// The file.
    pub path: PathBuf,
    /// Byte offset of its first byte in the concatenated corpus.
    pub offset: usize,
    /// Its length in bytes.
    pub len: usize,
}

enum CorpusBytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

/// The loaded corpus: the concatenated bytes of every loaded file.
pub struct Corpus {
    bytes: CorpusBytes,
    files: Vec<SourceFile>,
    summary: LoadSummary,
}

impl fmt::Debug for Corpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Corpus")
            .field("len", &self.bytes().len())
            .field("mapped", &self.is_mapped())
            .field("files", &self.files)
            .finish()
    }
}

impl Corpus {
    /// Builds a corpus from bytes already in memory (tests, built-in text).
    pub fn from_bytes(bytes: Vec<u8>) -> Corpus {
        let len = bytes.len();
        Corpus {
            bytes: CorpusBytes::Owned(bytes),
            files: Vec::new(),
            summary: LoadSummary {
                loaded_bytes: len as u64,
                ..LoadSummary::default()
            },
        }
    }

    /// The concatenated text (possibly not valid UTF-8).
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            CorpusBytes::Mapped(m) => m,
            CorpusBytes::Owned(v) => v,
        }
    }

    /// The text as UTF-8, invalid sequences replaced by U+FFFD (what the
    /// char and word tokenizers see).
    pub fn text_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.bytes())
    }

    /// Whether the bytes are memory-mapped rather than held in memory.
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, CorpusBytes::Mapped(_))
    }

    /// The loaded files and their place in [`Corpus::bytes`].
    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// What was loaded and skipped.
    pub fn summary(&self) -> &LoadSummary {
        &self.summary
    }

    /// Turns the corpus into a token stream. The byte tokenizer reuses the
    /// bytes (a mapped corpus stays mapped, nothing is copied); char and word
    /// tokenize the lossy UTF-8 text.
    pub fn into_tokens(self, tokenizer: &Tokenizer) -> Result<TokenStore, DataError> {
        if let Tokenizer::Byte = tokenizer {
            return Ok(match self.bytes {
                CorpusBytes::Mapped(m) => TokenStore::Mapped(m),
                CorpusBytes::Owned(v) => TokenStore::Bytes(v),
            });
        }
        let text = self.text_lossy();
        // Straight into the narrow type: the corpus may be large.
        if tokenizer.vocab_size() <= 1 << 16 {
            let mut ids = Vec::new();
            tokenizer.encode_with(&text, |id| ids.push(id as u16))?;
            Ok(TokenStore::U16(ids))
        } else {
            Ok(TokenStore::U32(tokenizer.encode(&text)?))
        }
    }
}
