//! The word tokenizer: lowercased whitespace-separated words plus specials.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{Tokenizer, TokenizerError, UNK_ID, WORD_SPECIALS};

/// Word vocabulary: id `i` is `words[i]`; ids 0..5 are [`WORD_SPECIALS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordVocab {
    pub(super) words: Vec<String>,
    index: HashMap<String, u32>,
}

impl WordVocab {
    pub(super) fn new(words: Vec<String>) -> Result<Self, String> {
        if words.len() < WORD_SPECIALS.len() {
            return Err(format!(
                "{} tokens, but the {} special tokens alone need that many",
                words.len(),
                WORD_SPECIALS.len()
            ));
        }
        for (i, s) in WORD_SPECIALS.iter().enumerate() {
            if words[i] != *s {
                return Err(format!(
                    "token {i} must be the special {s}, found {:?}",
                    words[i]
                ));
            }
        }
        let mut index = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            if w.is_empty() {
                return Err(format!("token {i} is empty"));
            }
            if w.chars().any(char::is_whitespace) {
                return Err(format!("token {i} ({w:?}) contains whitespace"));
            }
            if i >= WORD_SPECIALS.len() && w.to_lowercase() != *w {
                return Err(format!(
                    "token {i} ({w:?}) is not lowercase, so no text could encode to it"
                ));
            }
            if index.insert(w.clone(), i as u32).is_some() {
                return Err(format!("token {w:?} appears twice (id {i})"));
            }
        }
        Ok(WordVocab { words, index })
    }

    /// The tokens in id order.
    pub fn words(&self) -> &[String] {
        &self.words
    }
}

impl Tokenizer {
    /// Builds a word tokenizer from `text`: the specials, then the most
    /// frequent lowercased words (ties broken by byte order of the word), up
    /// to `vocab_size` tokens in all. Words spelled like a special are not
    /// added twice.
    pub fn train_word(text: &str, vocab_size: usize) -> Result<Tokenizer, TokenizerError> {
        Self::check_word_vocab_size(vocab_size)?;
        let mut counts = HashMap::new();
        text.split_whitespace()
            .for_each(|w| count_word(&mut counts, w));
        Self::word_from_counts(counts, vocab_size)
    }

    pub(super) fn check_word_vocab_size(vocab_size: usize) -> Result<(), TokenizerError> {
        if vocab_size < WORD_SPECIALS.len() {
            return Err(TokenizerError::VocabTooSmall {
                requested: vocab_size,
                min: WORD_SPECIALS.len(),
            });
        }
        Ok(())
    }

    pub(super) fn word_from_counts(
        counts: HashMap<String, u64>,
        vocab_size: usize,
    ) -> Result<Tokenizer, TokenizerError> {
        if counts.is_empty() {
            return Err(TokenizerError::EmptyText);
        }
        let mut ranked: Vec<(String, u64)> = counts
            .into_iter()
            .filter(|(w, _)| !WORD_SPECIALS.contains(&w.as_str()))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut words: Vec<String> = WORD_SPECIALS.iter().map(|s| s.to_string()).collect();
        words.extend(
            ranked
                .into_iter()
                .take(vocab_size - WORD_SPECIALS.len())
                .map(|(w, _)| w),
        );
        let vocab = WordVocab::new(words).map_err(|reason| TokenizerError::Invalid {
            path: PathBuf::new(),
            reason,
        })?;
        Ok(Tokenizer::Word(vocab))
    }

    /// A word tokenizer with exactly this vocabulary (in id order, specials
    /// first).
    pub fn from_words(words: Vec<String>) -> Result<Tokenizer, TokenizerError> {
        WordVocab::new(words)
            .map(Tokenizer::Word)
            .map_err(|reason| TokenizerError::Invalid {
                path: PathBuf::new(),
                reason,
            })
    }
}

pub(super) fn count_word(counts: &mut HashMap<String, u64>, w: &str) {
    *counts.entry(w.to_lowercase()).or_insert(0) += 1;
}

pub(super) fn word_id(v: &WordVocab, w: &str) -> u32 {
    // Vocabulary words equal their own lowercase, so a hit on the word as
    // written is correct and saves an allocation.
    v.index
        .get(w)
        .or_else(|| v.index.get(&w.to_lowercase()))
        .copied()
        .unwrap_or(UNK_ID)
}

/// Splits text arriving in pieces into the words `str::split_whitespace`
/// finds in the whole text: a word cut by a piece boundary is carried over
/// (so memory is bounded by the longest word, not the text).
#[derive(Debug, Default)]
pub(super) struct WordSplitter {
    carry: String,
}

impl WordSplitter {
    pub(super) fn push(&mut self, piece: &str, mut f: impl FnMut(&str)) {
        let mut rest = piece;
        if !self.carry.is_empty() {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            self.carry.push_str(&rest[..end]);
            rest = &rest[end..];
            if rest.is_empty() {
                return;
            }
            f(&self.carry);
            self.carry.clear();
        }
        // The last word stays open unless the piece ends with whitespace.
        let open = rest
            .char_indices()
            .rev()
            .find(|&(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        rest[..open].split_whitespace().for_each(&mut f);
        self.carry.push_str(&rest[open..]);
    }

    pub(super) fn finish(&mut self, mut f: impl FnMut(&str)) {
        if !self.carry.is_empty() {
            f(&self.carry);
            self.carry.clear();
        }
    }
}
