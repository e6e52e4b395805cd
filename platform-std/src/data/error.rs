//! [`DataError`], the one error type of loading, spooling and batching, and
//! the helpers that turn an I/O error on a path into it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::{human_bytes, LoadSummary};
use crate::tokenizer::TokenizerError;

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
    ///
    /// [`LoadOptions::spool_dir`]: super::LoadOptions::spool_dir
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

pub(super) fn unreadable(path: &Path, source: io::Error) -> DataError {
    DataError::Unreadable {
        path: path.to_path_buf(),
        source,
    }
}

/// An I/O error on something already seen: `NotFound` means it vanished.
pub(super) fn listed_err(path: &Path, source: io::Error) -> DataError {
    if source.kind() == io::ErrorKind::NotFound {
        DataError::Vanished {
            path: path.to_path_buf(),
        }
    } else {
        unreadable(path, source)
    }
}
