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
//!
//! One module per source and per shared piece: this one holds the listing
//! (the entry points that choose a source); `file` maps a single file,
//! `dir` walks a directory and spools its text, `ids` spools the char and
//! word token ids, `spool` is the temporary file both spools use, `corpus`
//! the loaded corpus, `options`, `summary` and `error` the shared public
//! types, and `batch` the token store and the batches.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

mod batch;
mod corpus;
mod dir;
mod error;
mod file;
mod ids;
mod options;
mod spool;
mod summary;

pub use batch::{
    check_len, eval_window_starts, fill_unit, fill_windows, mix64, sequence_start, split_train_val,
    MappedIds, Split, TokenStore, BATCH_HASH_VERSION,
};
pub use corpus::{Corpus, SourceFile};
pub use error::DataError;
pub use options::{
    LoadOptions, BINARY_EXTENSIONS, DEFAULT_MAX_FILE_BYTES, DEFAULT_SKIP_DIRS, SNIFF_LEN,
};
pub use spool::SPOOL_BUFFER_BYTES;
pub use summary::{human_bytes, LoadSummary, SkipCount, SkipReason};

use error::{listed_err, unreadable};

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
    let summary = LoadSummary {
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
    dir::list(path, opts, summary, spool_dir)
}

fn open_listed(path: &Path) -> Result<File, DataError> {
    File::open(path).map_err(|e| listed_err(path, e))
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
            summary,
            spool_dir,
        } = self;
        if root_is_file {
            file::load(root, &files[0], summary, spool_dir)
        } else {
            dir::load(root, &files, summary, spool_dir)
        }
    }
}

/// Lists and loads a corpus in one call (see [`list_corpus`] and
/// [`Listing::load`]).
pub fn load_corpus(path: &Path, opts: &LoadOptions) -> Result<Corpus, DataError> {
    list_corpus(path, opts)?.load()
}
