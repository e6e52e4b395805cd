//! Training corpus: finding text files, reading them, the token store and
//! deterministic batches.
//!
//! Loading is two-phase so each failure is attributable: [`list_corpus`]
//! walks the path and applies the name/size rules, [`Listing::load`] reads
//! the survivors and applies the content rule. A file that disappears between
//! the two phases is an error ([`DataError::Vanished`]), never a silent skip.
//!
//! The corpus never needs memory proportional to its size: a single file is
//! memory-mapped, the files of a directory are copied into a temporary
//! spool file (written through a bounded buffer, then mapped), and the ids
//! of the char and word tokenizers are spooled and mapped the same way (see
//! [`LoadOptions::spool_dir`]). Spool files have no name in the file system
//! (or lose it as soon as they are created), so they vanish with the process
//! however it ends.
//!
//! Batches are a pure function of `(seed, step, sequence index)` (see
//! [`sequence_start`]), so the same run sees the same windows whatever the
//! thread count, tree depth or branching, and a resumed run continues with
//! exactly the windows an uninterrupted one would have used.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::tokenizer::{for_each_lossy_piece, Tokenizer, TokenizerError, STREAM_PIECE_BYTES};

mod batch;

pub use batch::{
    check_len, eval_window_starts, fill_unit, fill_windows, mix64, sequence_start, split_train_val,
    MappedIds, Split, TokenStore, BATCH_HASH_VERSION,
};

/// Bytes inspected for a NUL byte when deciding whether a file is binary.
pub const SNIFF_LEN: usize = 8 * 1024;

/// Bytes read from a corpus file, and buffered on the way into a spool
/// file, at a time.
pub const SPOOL_BUFFER_BYTES: usize = 256 * 1024;

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
    /// Where the spool files go: the concatenated text of a directory corpus
    /// and the ids of the char and word tokenizers ([`Corpus::into_tokens`]).
    /// They need about as much free space as the corpus (the ids up to two
    /// or four bytes per byte of text). `None`: [`std::env::temp_dir`], i.e.
    /// `$TMPDIR` or `/tmp` (if that is a RAM-backed tmpfs, the spool uses
    /// RAM: point `TMPDIR` at a disk).
    pub spool_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            skip_dirs: DEFAULT_SKIP_DIRS.iter().map(|s| s.to_string()).collect(),
            binary_extensions: BINARY_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            spool_dir: None,
        }
    }
}

impl LoadOptions {
    /// The directory spool files are created in.
    pub fn resolved_spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(std::env::temp_dir)
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
    /// A spool file (see [`LoadOptions::spool_dir`]) could not be created,
    /// written or mapped, e.g. because the disk is full.
    Spool {
        /// What was being spooled (`"corpus text"`, `"token ids"`).
        what: &'static str,
        /// The operation that failed (`"create"`, `"write"`, `"map"`).
        op: &'static str,
        /// The spool directory.
        dir: PathBuf,
        /// Bytes the spool file needs at most.
        needed: u64,
        /// The OS error.
        source: io::Error,
    },
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
            DataError::Spool {
                what,
                op,
                dir,
                needed,
                source,
            } => write!(
                f,
                "cannot {op} the temporary file for the {what} in {} (up to {} needed): \
                 {source}; free space there or set TMPDIR to a directory with room",
                dir.display(),
                human_bytes(*needed)
            ),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataError::Unreadable { source, .. } | DataError::Spool { source, .. } => Some(source),
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
    spool_dir: PathBuf,
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
    let spool_dir = opts.resolved_spool_dir();
    if meta.is_file() {
        return Ok(Listing {
            root: path.to_path_buf(),
            root_is_file: true,
            files: vec![ListedFile {
                path: path.to_path_buf(),
                len: meta.len(),
            }],
            summary,
            spool_dir,
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
        spool_dir,
    })
}

/// Reads into `buf` until it is full or the file ends; returns the bytes
/// read.
fn read_up_to(f: &mut File, path: &Path, buf: &mut [u8]) -> Result<usize, DataError> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(unreadable(path, e)),
        }
    }
    Ok(n)
}

/// A temporary file written sequentially through a bounded buffer, then
/// memory-mapped. It is created with `O_TMPFILE` where the file system
/// supports it (no name at all) and otherwise unlinked right after creation,
/// so it disappears when the process ends, even on SIGKILL.
struct Spool {
    out: BufWriter<File>,
    info: SpoolInfo,
}

/// What a spool file holds and where, for its errors.
struct SpoolInfo {
    what: &'static str,
    dir: PathBuf,
    needed: u64,
}

impl SpoolInfo {
    fn error(&self, op: &'static str, source: io::Error) -> DataError {
        DataError::Spool {
            what: self.what,
            op,
            dir: self.dir.clone(),
            needed: self.needed,
            source,
        }
    }
}

impl Spool {
    /// A new spool file in `dir` for `what`, which will take at most
    /// `needed` bytes (only used in error messages).
    fn create(dir: &Path, what: &'static str, needed: u64) -> Result<Spool, DataError> {
        let info = SpoolInfo {
            what,
            dir: dir.to_path_buf(),
            needed,
        };
        let file = tempfile::tempfile_in(dir).map_err(|e| info.error("create", e))?;
        Ok(Spool {
            out: BufWriter::with_capacity(SPOOL_BUFFER_BYTES, file),
            info,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), DataError> {
        self.out
            .write_all(bytes)
            .map_err(|e| self.info.error("write", e))
    }

    /// Flushes the buffer and maps the file.
    fn map(self) -> Result<Mmap, DataError> {
        let Spool { out, info } = self;
        let file = out
            .into_inner()
            .map_err(|e| info.error("write", e.into_error()))?;
        // SAFETY: the file has no name (or lost it at creation), so only this
        // process can reach it, and nothing writes to it once it is mapped:
        // the mapped bytes cannot change or shrink under the map.
        unsafe { Mmap::map(&file) }.map_err(|e| info.error("map", e))
    }
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
    /// A corpus made of a single file is memory-mapped rather than copied.
    /// The files of a directory are copied, through a buffer of
    /// [`SPOOL_BUFFER_BYTES`], into a spool file in
    /// [`LoadOptions::spool_dir`] that is then mapped; so either way a corpus
    /// larger than memory works. Between files a `\n` is inserted when the
    /// previous one does not end with one, so the last word of a file never
    /// fuses with the first of the next.
    pub fn load(self) -> Result<Corpus, DataError> {
        let Listing {
            root,
            root_is_file,
            files,
            mut summary,
            spool_dir,
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
                spool_dir: Some(spool_dir),
            });
        }

        // Each file plus the newline that may follow it.
        let needed = files
            .iter()
            .fold(0u64, |n, f| n.saturating_add(f.len).saturating_add(1));
        let mut spool = Spool::create(&spool_dir, "corpus text", needed)?;
        let mut buf = vec![0u8; SPOOL_BUFFER_BYTES.max(SNIFF_LEN)];
        // u64: on a 32-bit target a spool past 4 GiB fails to map (below),
        // so the offsets converted to usize are only used when they fit.
        let mut written = 0u64;
        let mut last_byte = None;
        let mut sources = Vec::new();
        for file in &files {
            let path = &file.path;
            let mut f = open_listed(path)?;
            // The first SNIFF_LEN bytes decide whether the file is text.
            let head = read_up_to(&mut f, path, &mut buf[..SNIFF_LEN])?;
            if head == 0 {
                summary.skip(path.clone(), SkipReason::Empty, 0);
                continue;
            }
            if looks_binary(&buf[..head]) {
                // Counted like the text files: the bytes actually read.
                let rest = io::copy(&mut f, &mut io::sink()).map_err(|e| unreadable(path, e))?;
                summary.skip(path.clone(), SkipReason::BinaryContent, head as u64 + rest);
                continue;
            }
            if last_byte.is_some_and(|b| b != b'\n') {
                spool.write(b"\n")?;
                written += 1;
            }
            let offset = written;
            let mut n = head;
            loop {
                spool.write(&buf[..n])?;
                written += n as u64;
                last_byte = Some(buf[n - 1]);
                n = read_up_to(&mut f, path, &mut buf)?;
                if n == 0 {
                    break;
                }
            }
            let len = written - offset;
            sources.push(SourceFile {
                path: path.clone(),
                offset: offset as usize,
                len: len as usize,
            });
            summary.loaded_files += 1;
            summary.loaded_bytes += len;
        }
        summary.skipped_paths.sort();
        if sources.is_empty() {
            return Err(DataError::NoUsableText {
                path: root,
                summary,
            });
        }
        let map = spool.map()?;
        debug_assert_eq!(map.len() as u64, written);
        Ok(Corpus {
            bytes: CorpusBytes::Mapped(map),
            files: sources,
            summary,
            spool_dir: Some(spool_dir),
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
    /// Where [`Corpus::into_tokens`] spools char/word ids: set for loaded
    /// (mapped) corpora, `None` for bytes given in memory.
    spool_dir: Option<PathBuf>,
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
    /// Its token ids are kept in memory too.
    pub fn from_bytes(bytes: Vec<u8>) -> Corpus {
        let len = bytes.len();
        Corpus {
            bytes: CorpusBytes::Owned(bytes),
            files: Vec::new(),
            summary: LoadSummary {
                loaded_bytes: len as u64,
                ..LoadSummary::default()
            },
            spool_dir: None,
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
    /// char and word tokenizers see). Valid UTF-8 is borrowed; otherwise the
    /// whole text is copied (the tokenizers instead decode it piece by piece,
    /// see [`for_each_lossy_piece`]).
    pub fn text_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.bytes())
    }

    /// Whether the bytes are memory-mapped rather than held in memory: true
    /// for every corpus [`Listing::load`] returns (a single file is mapped
    /// in place, a directory through a spool file), false for
    /// [`Corpus::from_bytes`].
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
    /// tokenize the lossy UTF-8 text. For a mapped corpus the text is decoded
    /// piece by piece and the ids are written to a spool file in
    /// [`LoadOptions::spool_dir`], then mapped ([`TokenStore::MappedU16`] /
    /// [`TokenStore::MappedU32`]); a corpus built with
    /// [`Corpus::from_bytes`] gets its ids in memory ([`TokenStore::U16`] /
    /// [`TokenStore::U32`]). The ids are the same either way.
    pub fn into_tokens(self, tokenizer: &Tokenizer) -> Result<TokenStore, DataError> {
        if let Tokenizer::Byte = tokenizer {
            return Ok(match self.bytes {
                CorpusBytes::Mapped(m) => TokenStore::Mapped(m),
                CorpusBytes::Owned(v) => TokenStore::Bytes(v),
            });
        }
        let narrow = tokenizer.vocab_size() <= 1 << 16;
        if let Some(dir) = &self.spool_dir {
            return if narrow {
                spool_ids::<u16>(self.bytes(), tokenizer, dir).map(TokenStore::MappedU16)
            } else {
                spool_ids::<u32>(self.bytes(), tokenizer, dir).map(TokenStore::MappedU32)
            };
        }
        let text = self.text_lossy();
        // Straight into the narrow type: the corpus may be large.
        if narrow {
            let mut ids = Vec::new();
            tokenizer.encode_with(&text, |id| ids.push(id as u16))?;
            Ok(TokenStore::U16(ids))
        } else {
            Ok(TokenStore::U32(tokenizer.encode(&text)?))
        }
    }
}

/// A token id type a spool file can hold.
trait SpoolId: Copy {
    /// Its bytes, native-endian (the spool is read back by this process
    /// only).
    fn put(id: u32, out: &mut BufWriter<File>) -> io::Result<()>;
}

impl SpoolId for u16 {
    fn put(id: u32, out: &mut BufWriter<File>) -> io::Result<()> {
        // The caller checked that the vocabulary fits in 16 bits.
        out.write_all(&(id as u16).to_ne_bytes())
    }
}

impl SpoolId for u32 {
    fn put(id: u32, out: &mut BufWriter<File>) -> io::Result<()> {
        out.write_all(&id.to_ne_bytes())
    }
}

/// Counts the ids written to a spool and keeps the first write error (the
/// tokenizer's sink cannot fail, so the error is checked after each piece).
#[derive(Default)]
struct IdSink {
    count: usize,
    failed: Option<io::Error>,
}

impl IdSink {
    fn put<T: SpoolId>(&mut self, id: u32, out: &mut BufWriter<File>) {
        if self.failed.is_none() {
            match T::put(id, out) {
                Ok(()) => self.count += 1,
                Err(e) => self.failed = Some(e),
            }
        }
    }
}

/// Encodes `bytes` (as lossy UTF-8) into a spool file of `T` ids in `dir`
/// and maps it. Memory: one decoded piece of text and the write buffer.
fn spool_ids<T: SpoolId>(
    bytes: &[u8],
    tokenizer: &Tokenizer,
    dir: &Path,
) -> Result<MappedIds<T>, DataError> {
    // At most one id per byte of text.
    let needed = (bytes.len() as u64).saturating_mul(std::mem::size_of::<T>() as u64);
    let mut spool = Spool::create(dir, "token ids", needed)?;
    let mut enc = tokenizer.stream_encoder();
    let mut sink = IdSink::default();
    for_each_lossy_piece(bytes, STREAM_PIECE_BYTES, |piece| {
        enc.push(piece, |id| sink.put::<T>(id, &mut spool.out))?;
        // A write error stops the encoding after the piece it happened in.
        match sink.failed.take() {
            Some(e) => Err(spool.info.error("write", e)),
            None => Ok(()),
        }
    })?;
    enc.finish(|id| sink.put::<T>(id, &mut spool.out));
    if let Some(e) = sink.failed {
        return Err(spool.info.error("write", e));
    }
    let count = sink.count;
    let map = spool.map()?;
    MappedIds::new(map, count).ok_or_else(|| DataError::Spool {
        what: "token ids",
        op: "map",
        dir: dir.to_path_buf(),
        needed,
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the mapped file does not hold the {count} ids written"),
        ),
    })
}
