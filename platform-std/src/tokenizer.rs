//! Tokenizers: byte, char and word, and their files in a model directory.
//!
//! Files written into a model directory:
//! - every kind: `tokenizer.json`, e.g. `{"format": "cllm-tokenizer",
//!   "version": 1, "kind": "byte", "vocab_size": 256}`;
//! - char: `tokenizer.json` also holds `"chars"`, the vocabulary in id order
//!   (one single-character string per id);
//! - word: `vocab.txt`, one token per line in id order, the five specials
//!   first.
//!
//! Note: Hugging Face's `AutoTokenizer` also looks for a file called
//! `tokenizer.json`; ours is not in its format (the `"format"` key says so).
//! `GPT2LMHeadModel.from_pretrained` does not read it.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{json, Value};

use crate::fsutil::{write_atomic, FsError};

/// Name of the tokenizer description file in a model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Name of the word vocabulary file in a model directory.
pub const VOCAB_FILE: &str = "vocab.txt";
/// Value of the `"format"` key of [`TOKENIZER_FILE`].
pub const TOKENIZER_FORMAT: &str = "cllm-tokenizer";
/// Version of the [`TOKENIZER_FILE`] layout.
pub const TOKENIZER_VERSION: u64 = 1;

/// Special tokens of the word tokenizer, at ids 0..5 in this order.
pub const WORD_SPECIALS: [&str; 5] = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>"];
/// Id of `<pad>`.
pub const PAD_ID: u32 = 0;
/// Id of `<unk>`, given to words outside the vocabulary.
pub const UNK_ID: u32 = 1;
/// Id of `<bos>`.
pub const BOS_ID: u32 = 2;
/// Id of `<eos>`.
pub const EOS_ID: u32 = 3;
/// Id of `<mask>`.
pub const MASK_ID: u32 = 4;

/// Largest vocabulary accepted from a file, so a hostile `vocab.txt` or
/// `tokenizer.json` cannot demand absurd model sizes.
pub const MAX_VOCAB: usize = 1 << 24;

/// The three tokenizer kinds (`--tokenizer byte|char|word`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenizerKind {
    /// One token per byte; vocabulary 256.
    Byte,
    /// One token per Unicode scalar seen in the training data.
    Char,
    /// Lowercased whitespace-separated words plus specials.
    Word,
}

impl TokenizerKind {
    /// The lowercase name used on the command line and in `tokenizer.json`.
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Byte => "byte",
            TokenizerKind::Char => "char",
            TokenizerKind::Word => "word",
        }
    }
}

impl fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TokenizerKind {
    type Err = TokenizerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "byte" => Ok(TokenizerKind::Byte),
            "char" => Ok(TokenizerKind::Char),
            "word" => Ok(TokenizerKind::Word),
            other => Err(TokenizerError::UnknownKind {
                kind: other.to_string(),
            }),
        }
    }
}

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
                "unknown tokenizer `{kind}` (expected byte, char or word)"
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

/// Char vocabulary: id `i` is `chars[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>,
    // ASCII is by far the common case: a table avoids hashing it.
    ascii: Box<[u32; 128]>,
    other: HashMap<char, u32>,
}

const NO_ID: u32 = u32::MAX;

impl CharVocab {
    fn new(chars: Vec<char>) -> Result<Self, String> {
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

    fn id(&self, c: char) -> Option<u32> {
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

/// Word vocabulary: id `i` is `words[i]`; ids 0..5 are [`WORD_SPECIALS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordVocab {
    words: Vec<String>,
    index: HashMap<String, u32>,
}

impl WordVocab {
    fn new(words: Vec<String>) -> Result<Self, String> {
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

/// A tokenizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tokenizer {
    /// Bytes are tokens (vocabulary 256); lossless on any input.
    Byte,
    /// Unicode scalars seen in the training text.
    Char(CharVocab),
    /// Lowercased whitespace-separated words.
    Word(WordVocab),
}

impl Tokenizer {
    /// Builds a char tokenizer whose vocabulary is the sorted set of
    /// characters of `text`.
    pub fn train_char(text: &str) -> Result<Tokenizer, TokenizerError> {
        Self::char_from_set(text.chars().collect())
    }

    fn char_from_set(set: BTreeSet<char>) -> Result<Tokenizer, TokenizerError> {
        if set.is_empty() {
            return Err(TokenizerError::EmptyText);
        }
        let vocab =
            CharVocab::new(set.into_iter().collect()).map_err(|_| TokenizerError::EmptyText)?;
        Ok(Tokenizer::Char(vocab))
    }

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

    fn check_word_vocab_size(vocab_size: usize) -> Result<(), TokenizerError> {
        if vocab_size < WORD_SPECIALS.len() {
            return Err(TokenizerError::VocabTooSmall {
                requested: vocab_size,
                min: WORD_SPECIALS.len(),
            });
        }
        Ok(())
    }

    fn word_from_counts(
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

    /// Builds a tokenizer of `kind` from training bytes (invalid UTF-8 is
    /// replaced by U+FFFD for char and word). `vocab_size` only matters for
    /// word.
    ///
    /// The text is decoded piece by piece (see [`for_each_lossy_piece`]), so
    /// a memory-mapped corpus larger than memory is never copied; the result
    /// is the same as [`Tokenizer::train_char`] / [`Tokenizer::train_word`]
    /// on the whole lossy text.
    pub fn train(
        kind: TokenizerKind,
        text: &[u8],
        vocab_size: usize,
    ) -> Result<Tokenizer, TokenizerError> {
        Self::train_pieces(kind, text, vocab_size, STREAM_PIECE_BYTES)
    }

    fn train_pieces(
        kind: TokenizerKind,
        text: &[u8],
        vocab_size: usize,
        piece_bytes: usize,
    ) -> Result<Tokenizer, TokenizerError> {
        match kind {
            TokenizerKind::Byte => Ok(Tokenizer::Byte),
            TokenizerKind::Char => {
                let mut set = BTreeSet::new();
                for_each_lossy_piece(text, piece_bytes, |piece| {
                    set.extend(piece.chars());
                    Ok::<(), Infallible>(())
                })
                .unwrap_or_else(|e| match e {});
                Tokenizer::char_from_set(set)
            }
            TokenizerKind::Word => {
                Self::check_word_vocab_size(vocab_size)?;
                let mut counts = HashMap::new();
                let mut words = WordSplitter::default();
                for_each_lossy_piece(text, piece_bytes, |piece| {
                    words.push(piece, |w| count_word(&mut counts, w));
                    Ok::<(), Infallible>(())
                })
                .unwrap_or_else(|e| match e {});
                words.finish(|w| count_word(&mut counts, w));
                Tokenizer::word_from_counts(counts, vocab_size)
            }
        }
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

    /// Which kind this is.
    pub fn kind(&self) -> TokenizerKind {
        match self {
            Tokenizer::Byte => TokenizerKind::Byte,
            Tokenizer::Char(_) => TokenizerKind::Char,
            Tokenizer::Word(_) => TokenizerKind::Word,
        }
    }

    /// Number of token ids.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Byte => 256,
            Tokenizer::Char(v) => v.chars.len(),
            Tokenizer::Word(v) => v.words.len(),
        }
    }

    /// Beginning-of-sequence id, if the kind has one (word only).
    pub fn bos_id(&self) -> Option<u32> {
        matches!(self, Tokenizer::Word(_)).then_some(BOS_ID)
    }

    /// End-of-sequence id, if the kind has one (word only).
    pub fn eos_id(&self) -> Option<u32> {
        matches!(self, Tokenizer::Word(_)).then_some(EOS_ID)
    }

    /// Encodes text. Char: a character outside the vocabulary is an error
    /// ([`TokenizerError::UnknownChar`]). Word: unknown words become
    /// `<unk>`; a word spelled like a special encodes to that special.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        self.encode_with(text, |id| ids.push(id))?;
        Ok(ids)
    }

    /// Like [`Tokenizer::encode`], but hands each id to `sink` instead of
    /// collecting them, so a large corpus can be stored in a narrower type
    /// without an intermediate `Vec<u32>`.
    pub fn encode_with<F: FnMut(u32)>(
        &self,
        text: &str,
        mut sink: F,
    ) -> Result<(), TokenizerError> {
        let mut enc = self.stream_encoder();
        enc.push(text, &mut sink)?;
        enc.finish(sink);
        Ok(())
    }

    /// An encoder for text that arrives in consecutive pieces (e.g. from
    /// [`for_each_lossy_piece`]): the ids are those [`Tokenizer::encode`]
    /// gives for the concatenated text, wherever the pieces are cut.
    pub fn stream_encoder(&self) -> StreamEncoder<'_> {
        StreamEncoder {
            tokenizer: self,
            chars_seen: 0,
            words: WordSplitter::default(),
        }
    }

    /// Encodes raw bytes: exact for byte; char and word see the bytes as
    /// UTF-8 with invalid sequences replaced by U+FFFD.
    pub fn encode_bytes(&self, bytes: &[u8]) -> Result<Vec<u32>, TokenizerError> {
        match self {
            Tokenizer::Byte => Ok(bytes.iter().map(|&b| u32::from(b)).collect()),
            _ => self.encode(&String::from_utf8_lossy(bytes)),
        }
    }

    fn check_id(&self, id: u32) -> Result<usize, TokenizerError> {
        let n = self.vocab_size();
        if (id as usize) < n {
            Ok(id as usize)
        } else {
            Err(TokenizerError::IdOutOfRange { id, vocab_size: n })
        }
    }

    /// Decodes ids to bytes: byte gives the exact bytes back; char the UTF-8
    /// of the characters; word the tokens joined by single spaces (specials
    /// appear as their names, e.g. `<unk>`).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        match self {
            Tokenizer::Byte => ids
                .iter()
                .map(|&id| self.check_id(id).map(|b| b as u8))
                .collect(),
            _ => self.decode(ids).map(String::into_bytes),
        }
    }

    /// Decodes ids to text. For byte, invalid UTF-8 (e.g. a multi-byte
    /// character cut in half) is shown as U+FFFD; use
    /// [`Tokenizer::decode_bytes`] for the exact bytes.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        match self {
            Tokenizer::Byte => {
                let bytes = self.decode_bytes(ids)?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Tokenizer::Char(v) => ids
                .iter()
                .map(|&id| self.check_id(id).map(|i| v.chars[i]))
                .collect(),
            Tokenizer::Word(v) => {
                let mut out = String::new();
                for (k, &id) in ids.iter().enumerate() {
                    let i = self.check_id(id)?;
                    if k > 0 {
                        out.push(' ');
                    }
                    out.push_str(&v.words[i]);
                }
                Ok(out)
            }
        }
    }

    /// Writes the tokenizer's files into `dir` (each atomically).
    pub fn save(&self, dir: &Path) -> Result<(), TokenizerError> {
        let mut doc = json!({
            "format": TOKENIZER_FORMAT,
            "version": TOKENIZER_VERSION,
            "kind": self.kind().name(),
            "vocab_size": self.vocab_size(),
        });
        match self {
            Tokenizer::Byte => {}
            Tokenizer::Char(v) => {
                let chars: Vec<String> = v.chars.iter().map(|c| c.to_string()).collect();
                doc["chars"] = json!(chars);
            }
            Tokenizer::Word(v) => {
                doc["vocab_file"] = json!(VOCAB_FILE);
                doc["specials"] = json!(WORD_SPECIALS);
                let mut text = String::new();
                for w in &v.words {
                    text.push_str(w);
                    text.push('\n');
                }
                write_atomic(&dir.join(VOCAB_FILE), text.as_bytes()).map_err(TokenizerError::Io)?;
            }
        }
        let mut bytes = serde_json::to_vec_pretty(&doc).expect("a JSON value always serializes");
        bytes.push(b'\n');
        write_atomic(&dir.join(TOKENIZER_FILE), &bytes).map_err(TokenizerError::Io)
    }

    /// Reads the tokenizer saved in `dir`, validating it.
    pub fn load(dir: &Path) -> Result<Tokenizer, TokenizerError> {
        let path = dir.join(TOKENIZER_FILE);
        let json = read_bytes(&path)?;
        // vocab.txt is only read when tokenizer.json says the kind is word.
        Self::parse(&path, &json, || {
            let vpath = dir.join(VOCAB_FILE);
            read_bytes(&vpath).map(|b| (vpath, b))
        })
    }

    /// Parses tokenizer files held in memory (`vocab_txt` is needed for
    /// word only), with the same validation as [`Tokenizer::load`]. Errors
    /// name the files as `tokenizer.json` / `vocab.txt`.
    pub fn from_bytes(
        tokenizer_json: &[u8],
        vocab_txt: Option<&[u8]>,
    ) -> Result<Tokenizer, TokenizerError> {
        Self::parse(Path::new(TOKENIZER_FILE), tokenizer_json, || {
            let vpath = PathBuf::from(VOCAB_FILE);
            match vocab_txt {
                Some(b) => Ok((vpath, b.to_vec())),
                None => Err(TokenizerError::MissingFile { path: vpath }),
            }
        })
    }

    fn parse<F>(path: &Path, json: &[u8], read_vocab: F) -> Result<Tokenizer, TokenizerError>
    where
        F: FnOnce() -> Result<(PathBuf, Vec<u8>), TokenizerError>,
    {
        let path = path.to_path_buf();
        let text = utf8(&path, json)?;
        let doc: Value = serde_json::from_str(text).map_err(|source| TokenizerError::Json {
            path: path.clone(),
            source,
        })?;
        let invalid = |reason: String| TokenizerError::Invalid {
            path: path.clone(),
            reason,
        };
        let obj = doc
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object".to_string()))?;
        match obj.get("format").and_then(Value::as_str) {
            Some(TOKENIZER_FORMAT) => {}
            other => {
                return Err(invalid(format!(
                    "\"format\" must be \"{TOKENIZER_FORMAT}\", found {}",
                    other.map_or("nothing".to_string(), |s| format!("{s:?}"))
                )))
            }
        }
        match obj.get("version").and_then(Value::as_u64) {
            Some(TOKENIZER_VERSION) => {}
            other => {
                return Err(invalid(format!(
                    "unsupported \"version\" {other:?} (this build reads {TOKENIZER_VERSION})"
                )))
            }
        }
        let kind_name = obj
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("missing string field \"kind\"".to_string()))?;
        let kind: TokenizerKind = kind_name
            .parse()
            .map_err(|_| invalid(format!("unknown kind {kind_name:?}")))?;
        let declared = obj
            .get("vocab_size")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid("missing integer field \"vocab_size\"".to_string()))?;

        let tok = match kind {
            TokenizerKind::Byte => Tokenizer::Byte,
            TokenizerKind::Char => {
                let list = obj
                    .get("chars")
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid("missing array field \"chars\"".to_string()))?;
                if list.len() > MAX_VOCAB {
                    return Err(invalid(format!("{} chars exceed {MAX_VOCAB}", list.len())));
                }
                let mut chars = Vec::with_capacity(list.len());
                for (i, item) in list.iter().enumerate() {
                    let s = item
                        .as_str()
                        .ok_or_else(|| invalid(format!("chars[{i}] is not a string")))?;
                    let mut it = s.chars();
                    match (it.next(), it.next()) {
                        (Some(c), None) => chars.push(c),
                        _ => {
                            return Err(invalid(format!(
                                "chars[{i}] = {s:?} is not exactly one character"
                            )))
                        }
                    }
                }
                Tokenizer::Char(CharVocab::new(chars).map_err(invalid)?)
            }
            TokenizerKind::Word => {
                let (vpath, vbytes) = read_vocab()?;
                let text = utf8(&vpath, &vbytes)?;
                let vinvalid = |reason: String| TokenizerError::Invalid {
                    path: vpath.clone(),
                    reason,
                };
                let body = text.strip_suffix('\n').unwrap_or(text);
                let lines: Vec<&str> = if body.is_empty() {
                    Vec::new()
                } else {
                    body.split('\n').collect()
                };
                if lines.len() > MAX_VOCAB {
                    return Err(vinvalid(format!(
                        "{} tokens exceed {MAX_VOCAB}",
                        lines.len()
                    )));
                }
                if let Some(i) = lines.iter().position(|l| l.is_empty()) {
                    return Err(vinvalid(format!("line {} is empty", i + 1)));
                }
                let words = lines.into_iter().map(str::to_string).collect();
                Tokenizer::Word(WordVocab::new(words).map_err(vinvalid)?)
            }
        };
        if tok.vocab_size() as u64 != declared {
            return Err(invalid(format!(
                "\"vocab_size\" is {declared} but the vocabulary has {} tokens",
                tok.vocab_size()
            )));
        }
        Ok(tok)
    }

    /// The files [`Tokenizer::save`] writes for this kind.
    pub fn file_names(&self) -> &'static [&'static str] {
        match self {
            Tokenizer::Word(_) => &[TOKENIZER_FILE, VOCAB_FILE],
            _ => &[TOKENIZER_FILE],
        }
    }
}

/// Bytes of text decoded at a time when a corpus is streamed through the
/// char and word tokenizers (see [`for_each_lossy_piece`]).
pub const STREAM_PIECE_BYTES: usize = 1 << 20;

fn is_utf8_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

/// End of the piece of `bytes` starting at `start`: about `max_piece` bytes
/// later, moved back to a place where the lossy decoding can be cut.
///
/// Every unit of `String::from_utf8_lossy` (a character, or an invalid
/// sequence replaced by one U+FFFD) starts with a byte that is not a UTF-8
/// continuation byte (`10xxxxxx`), and is at most four bytes long. So a cut
/// before a non-continuation byte never splits a unit; and if the four bytes
/// up to the cut are all continuation bytes, no unit can span it either.
fn piece_end(bytes: &[u8], start: usize, max_piece: usize) -> usize {
    let end = start.saturating_add(max_piece.max(4));
    if end >= bytes.len() {
        return bytes.len();
    }
    (end - 3..=end)
        .rev()
        .find(|&c| !is_utf8_continuation(bytes[c]))
        .unwrap_or(end)
}

/// Calls `f` with consecutive pieces of `String::from_utf8_lossy(bytes)`,
/// each decoded from at most about `max_piece` bytes, stopping at the first
/// error. The pieces concatenate to exactly the lossy text, but only one is
/// held at a time: valid UTF-8 is borrowed from `bytes`, and only a piece
/// with invalid sequences is copied. This is how the char and word
/// tokenizers read a memory-mapped corpus without copying it.
pub fn for_each_lossy_piece<E, F>(bytes: &[u8], max_piece: usize, mut f: F) -> Result<(), E>
where
    F: FnMut(&str) -> Result<(), E>,
{
    let mut start = 0;
    while start < bytes.len() {
        let end = piece_end(bytes, start, max_piece);
        f(&String::from_utf8_lossy(&bytes[start..end]))?;
        start = end;
    }
    Ok(())
}

fn count_word(counts: &mut HashMap<String, u64>, w: &str) {
    *counts.entry(w.to_lowercase()).or_insert(0) += 1;
}

fn word_id(v: &WordVocab, w: &str) -> u32 {
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
struct WordSplitter {
    carry: String,
}

impl WordSplitter {
    fn push(&mut self, piece: &str, mut f: impl FnMut(&str)) {
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

    fn finish(&mut self, mut f: impl FnMut(&str)) {
        if !self.carry.is_empty() {
            f(&self.carry);
            self.carry.clear();
        }
    }
}

/// Encodes text given in consecutive pieces (see
/// [`Tokenizer::stream_encoder`]). Call [`StreamEncoder::finish`] after the
/// last piece: a word tokenizer holds back a word that may continue in the
/// next piece.
#[derive(Debug)]
pub struct StreamEncoder<'t> {
    tokenizer: &'t Tokenizer,
    /// Characters already encoded (char positions in errors are global).
    chars_seen: usize,
    words: WordSplitter,
}

impl StreamEncoder<'_> {
    /// Encodes the next piece. Char: a character outside the vocabulary is
    /// an error whose position counts from the start of the first piece.
    pub fn push<F: FnMut(u32)>(&mut self, piece: &str, mut sink: F) -> Result<(), TokenizerError> {
        match self.tokenizer {
            Tokenizer::Byte => piece.bytes().for_each(|b| sink(u32::from(b))),
            Tokenizer::Char(v) => {
                for ch in piece.chars() {
                    let position = self.chars_seen;
                    sink(
                        v.id(ch)
                            .ok_or(TokenizerError::UnknownChar { ch, position })?,
                    );
                    self.chars_seen += 1;
                }
            }
            Tokenizer::Word(v) => self.words.push(piece, |w| sink(word_id(v, w))),
        }
        Ok(())
    }

    /// Emits what is held back (the last word of a word tokenizer).
    pub fn finish<F: FnMut(u32)>(mut self, mut sink: F) {
        if let Tokenizer::Word(v) = self.tokenizer {
            self.words.finish(|w| sink(word_id(v, w)));
        }
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    fs::read(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            TokenizerError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            TokenizerError::Io(FsError::new("read", path, e))
        }
    })
}

fn utf8<'b>(path: &Path, bytes: &'b [u8]) -> Result<&'b str, TokenizerError> {
    std::str::from_utf8(bytes).map_err(|e| TokenizerError::Invalid {
        path: path.to_path_buf(),
        reason: format!("not UTF-8 (byte {})", e.valid_up_to()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts whose lossy decoding and word splitting are easy to get wrong
    /// at a piece boundary: multi-byte characters, invalid and truncated
    /// sequences, runs of stray continuation bytes, Unicode whitespace.
    fn tricky() -> Vec<Vec<u8>> {
        let mut texts: Vec<Vec<u8>> = vec![
            b"the quick brown fox\njumps over\tthe lazy dog ".to_vec(),
            "caf\u{e9} na\u{ef}ve \u{1f600}\u{1f600} \u{3000}wide\u{3000}space\u{a0}nb\u{85}nel"
                .as_bytes()
                .to_vec(),
            b"caf\xe9 \xe2\x82 \xe2\x82\xac \xf0\x9f\x98 \xed\xa0\x80 \xc0\xaf \xff\xfe".to_vec(),
            b"\x80\x80\x80\x80\x80\x80\x80\x80x\x80\x80\x80\xbf\xbf".to_vec(),
            b"WORD Word word wOrD   \n\n  trailing".to_vec(),
            b"".to_vec(),
            b"   ".to_vec(),
        ];
        // A longer mixture.
        let mut x: u64 = 7;
        let alphabet: &[&[u8]] = &[
            b"a",
            b"B",
            b" ",
            b"\n",
            "\u{e9}".as_bytes(),
            "\u{1f600}".as_bytes(),
            "\u{3000}".as_bytes(),
            b"\xe2\x82",
            b"\x80",
            b"\xff",
            b"xyz",
        ];
        let mut long = Vec::new();
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            long.extend_from_slice(alphabet[(x % alphabet.len() as u64) as usize]);
        }
        texts.push(long);
        texts
    }

    #[test]
    fn lossy_pieces_concatenate_to_the_lossy_text() {
        for text in tricky() {
            let whole = String::from_utf8_lossy(&text).into_owned();
            for piece in [1, 4, 5, 6, 7, 13, 64, 1 << 20] {
                let mut got = String::new();
                let mut max_len = 0;
                for_each_lossy_piece(&text, piece, |p| {
                    got.push_str(p);
                    max_len = max_len.max(p.len());
                    Ok::<(), Infallible>(())
                })
                .unwrap();
                assert_eq!(got, whole, "piece {piece} of {text:?}");
                // A piece of n bytes decodes to at most 3n bytes (U+FFFD).
                assert!(max_len <= 3 * piece.max(4), "piece {piece}: {max_len}");
            }
        }
    }

    #[test]
    fn lossy_pieces_stop_at_the_first_error() {
        let mut calls = 0;
        let r = for_each_lossy_piece(b"abcdefghijkl", 4, |_| {
            calls += 1;
            if calls == 2 {
                Err("stop")
            } else {
                Ok(())
            }
        });
        assert_eq!((r, calls), (Err("stop"), 2));
    }

    #[test]
    fn streamed_training_and_encoding_match_the_whole_text() {
        for text in tricky() {
            let whole = String::from_utf8_lossy(&text).into_owned();
            let whole_char = Tokenizer::train_char(&whole);
            let whole_word = Tokenizer::train_word(&whole, 12);
            for piece in [4, 5, 7, 13, 1 << 20] {
                let c = Tokenizer::train_pieces(TokenizerKind::Char, &text, 0, piece);
                let w = Tokenizer::train_pieces(TokenizerKind::Word, &text, 12, piece);
                assert_same(&c, &whole_char);
                assert_same(&w, &whole_word);
                assert_streamed(&Tokenizer::Byte, &text, &whole, piece);
                for tok in [&whole_char, &whole_word].into_iter().flatten() {
                    assert_streamed(tok, &text, &whole, piece);
                }
            }
        }
    }

    fn assert_same(a: &Result<Tokenizer, TokenizerError>, b: &Result<Tokenizer, TokenizerError>) {
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("{a:?} vs {b:?}"),
        }
    }

    fn assert_streamed(tok: &Tokenizer, text: &[u8], whole: &str, piece: usize) {
        let want = tok.encode(whole).unwrap();
        let mut got = Vec::new();
        let mut enc = tok.stream_encoder();
        for_each_lossy_piece(text, piece, |p| enc.push(p, |id| got.push(id))).unwrap();
        enc.finish(|id| got.push(id));
        assert_eq!(got, want, "{:?} piece {piece}", tok.kind());
    }

    #[test]
    fn streamed_unknown_char_position_is_global() {
        let tok = Tokenizer::train_char("abc").unwrap();
        let text = b"abcabcabcXabc";
        let whole = tok.encode("abcabcabcXabc").unwrap_err();
        let mut enc = tok.stream_encoder();
        let streamed = for_each_lossy_piece(text, 4, |p| enc.push(p, |_| ())).unwrap_err();
        assert_eq!(streamed.to_string(), whole.to_string());
        assert!(whole.to_string().contains("position 9"), "{whole}");
    }
}
