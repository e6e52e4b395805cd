//! The one error type of the tokenizers; each `Display` is one line.

use std::fmt;
use std::path::PathBuf;

use crate::fsutil::FsError;

/// Tokenizer errors. Each `Display` is one line.
#[derive(Debug)]
pub enum TokenizerError {
    /// Reading or writing a tokenizer file failed.
    Io(FsError),
    /// A tokenizer file is missing from a model directory.
    MissingFile {
        /// The file expected.
        path: PathBuf,
    },
    /// A tokenizer file is not valid JSON.
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        source: serde_json::Error,
    },
    /// A tokenizer file is well-formed but its content is invalid.
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Not one of `byte`, `char`, `word`.
    UnknownKind {
        /// The name given.
        kind: String,
    },
    /// Text to encode contains a character outside the char vocabulary.
    UnknownChar {
        /// The character.
        ch: char,
        /// Its char index in the text.
        position: usize,
    },
    /// A token id at or above the vocabulary size.
    IdOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A word vocabulary size below the number of specials.
    VocabTooSmall {
        /// Requested size.
        requested: usize,
        /// Smallest allowed.
        min: usize,
    },
    /// A BPE vocabulary size below the byte alphabet and `<|endoftext|>`.
    BpeVocabTooSmall {
        /// Requested size.
        requested: usize,
    },
    /// The `tokenizers` library failed to train.
    Train(String),
    /// The `tokenizers` library failed to encode or decode.
    Encode(String),
    /// Training text without a single token.
    EmptyText,
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerError::Io(e) => write!(f, "{e}"),
            TokenizerError::MissingFile { path } => {
                write!(f, "tokenizer file {} is missing", path.display())
            }
            TokenizerError::Json { path, source } => {
                write!(f, "{} is not valid JSON: {source}", path.display())
            }
            TokenizerError::Invalid { path, reason } => {
                write!(f, "invalid tokenizer file {}: {reason}", path.display())
            }
            TokenizerError::UnknownKind { kind } => write!(
                f,
                "unknown tokenizer `{kind}` (expected byte, char, word or bpe)"
            ),
            TokenizerError::UnknownChar { ch, position } => write!(
                f,
                "character {ch:?} (U+{:04X}) at position {position} is not in the \
                 char tokenizer's vocabulary",
                *ch as u32
            ),
            TokenizerError::IdOutOfRange { id, vocab_size } => write!(
                f,
                "token id {id} is outside the tokenizer's vocabulary of {vocab_size}"
            ),
            TokenizerError::VocabTooSmall { requested, min } => write!(
                f,
                "word vocabulary size {requested} is too small: at least {min} \
                 (the special tokens) is needed"
            ),
            TokenizerError::BpeVocabTooSmall { requested } => write!(
                f,
                "BPE vocabulary size {requested} is too small: at least {} (the 256 byte \
                 tokens and {}) is needed",
                super::MIN_BPE_VOCAB,
                super::END_OF_TEXT
            ),
            TokenizerError::Train(e) => write!(f, "{e}"),
            TokenizerError::Encode(e) => write!(f, "tokenizer: {e}"),
            TokenizerError::EmptyText => write!(f, "no tokens in the training text"),
        }
    }
}

impl std::error::Error for TokenizerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenizerError::Io(e) => Some(e),
            TokenizerError::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}
