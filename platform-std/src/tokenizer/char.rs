//! The char tokenizer: one token per Unicode scalar seen in the training text.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use super::{Tokenizer, TokenizerError};

/// Char vocabulary: id `i` is `chars[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharVocab {
    pub(super) chars: Vec<char>,
    // ASCII is by far the common case: a table avoids hashing it.
    ascii: Box<[u32; 128]>,
    other: HashMap<char, u32>,
}

const NO_ID: u32 = u32::MAX;

impl CharVocab {
    pub(super) fn new(chars: Vec<char>) -> Result<Self, String> {
        if chars.is_empty() {
            return Err("the char vocabulary is empty".to_string());
        }
        let mut ascii = Box::new([NO_ID; 128]);
        let mut other = HashMap::new();
        for (i, &c) in chars.iter().enumerate() {
            let id = i as u32;
            let dup = if (c as u32) < 128 {
                std::mem::replace(&mut ascii[c as usize], id) != NO_ID
            } else {
                other.insert(c, id).is_some()
            };
            if dup {
                return Err(format!("character {c:?} appears twice (id {i})"));
            }
        }
        Ok(CharVocab {
            chars,
            ascii,
            other,
        })
    }

    pub(super) fn id(&self, c: char) -> Option<u32> {
        if (c as u32) < 128 {
            Some(self.ascii[c as usize]).filter(|&i| i != NO_ID)
        } else {
            self.other.get(&c).copied()
        }
    }

    /// The characters in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }
}

impl Tokenizer {
    /// Builds a char tokenizer whose vocabulary is the sorted set of
    /// characters of `text`.
    pub fn train_char(text: &str) -> Result<Tokenizer, TokenizerError> {
        Self::char_from_set(text.chars().collect())
    }

    pub(super) fn char_from_set(set: BTreeSet<char>) -> Result<Tokenizer, TokenizerError> {
        if set.is_empty() {
            return Err(TokenizerError::EmptyText);
        }
        let vocab =
            CharVocab::new(set.into_iter().collect()).map_err(|_| TokenizerError::EmptyText)?;
        Ok(Tokenizer::Char(vocab))
    }

    /// A char tokenizer with exactly this vocabulary (in id order).
    pub fn from_chars(chars: Vec<char>) -> Result<Tokenizer, TokenizerError> {
        CharVocab::new(chars)
            .map(Tokenizer::Char)
            .map_err(|reason| TokenizerError::Invalid {
                path: PathBuf::new(),
                reason,
            })
    }
}
