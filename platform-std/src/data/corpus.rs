//! The loaded corpus ([`Corpus`]) whatever its source, and its conversion
//! into a [`TokenStore`].

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

use memmap2::Mmap;

use super::ids::spool_ids;
use super::{DataError, LoadSummary, TokenStore};
use crate::tokenizer::Tokenizer;

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
    /// A loaded corpus: `map` holds the text of `files`, and the char/word
    /// ids go to a spool file in `spool_dir`.
    pub(super) fn mapped(
        map: Mmap,
        files: Vec<SourceFile>,
        summary: LoadSummary,
        spool_dir: PathBuf,
    ) -> Corpus {
        Corpus {
            bytes: CorpusBytes::Mapped(map),
            files,
            summary,
            spool_dir: Some(spool_dir),
        }
    }

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
    ///
    /// [`for_each_lossy_piece`]: crate::tokenizer::for_each_lossy_piece
    pub fn text_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.bytes())
    }

    /// Whether the bytes are memory-mapped rather than held in memory: true
    /// for every corpus [`Listing::load`] returns (a single file is mapped
    /// in place, a directory through a spool file), false for
    /// [`Corpus::from_bytes`].
    ///
    /// [`Listing::load`]: super::Listing::load
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
    ///
    /// [`LoadOptions::spool_dir`]: super::LoadOptions::spool_dir
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
