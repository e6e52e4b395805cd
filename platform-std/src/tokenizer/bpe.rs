//! Byte-level BPE through the Hugging Face `tokenizers` crate: training on
//! a corpus streamed piece by piece, GPT-2's `vocab.json` + `merges.txt`, and
//! any BPE `tokenizer.json` in the library's own format.
//!
//! A corpus is cut only where the pre-tokenizer would split anyway (see
//! [`last_safe_cut`]), so training and encoding piece by piece give the same
//! merges and ids as the whole text at once, without holding it in memory.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Model};

use super::pieces::piece_end;
use super::{TokenizerError, MAX_VOCAB};

/// GPT-2's end-of-text token: the one special token of a trained BPE, at
/// the last id (as in GPT-2, where it is 50256).
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Smallest BPE vocabulary: the 256 byte tokens and [`END_OF_TEXT`].
pub const MIN_BPE_VOCAB: usize = 257;

/// Text held back by a streaming encoder while it waits for a safe cut.
/// Past this (a "line" of 64 MiB), the text is encoded anyway, and the ids
/// at that one place may differ from encoding the whole text at once.
const MAX_CARRY_BYTES: usize = 64 << 20;

/// A BPE tokenizer of the `tokenizers` library with what cllm needs from it
/// precomputed: the vocabulary size, the end-of-text id, and the byte table
/// that decodes ids to exact bytes.
#[derive(Clone)]
pub struct BpeTokenizer {
    inner: Box<tokenizers::Tokenizer>,
    /// The library's serialization: what `tokenizer.json` holds, and what
    /// equality compares.
    json: String,
    vocab_size: usize,
    eos: Option<u32>,
    /// Token id → the bytes it stands for, where the decoder is byte-level.
    bytes: Option<Vec<Vec<u8>>>,
    /// Whether text may be cut at [`last_safe_cut`] (no normalizer, no
    /// prefix space added per call, no special token spanning a newline).
    streamable: bool,
}

impl fmt::Debug for BpeTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BpeTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

impl PartialEq for BpeTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}
impl Eq for BpeTokenizer {}

/// GPT-2's `bytes_to_unicode`: the printable character that stands for each
/// byte in a byte-level vocabulary.
pub fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("below the surrogates");
            next += 1;
            c
        };
    }
    table
}

fn lib_err(path: &Path, e: impl fmt::Display) -> TokenizerError {
    TokenizerError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl BpeTokenizer {
    /// Trains a byte-level BPE of at most `vocab_size` ids (GPT-2
    /// pre-tokenization, no prefix space) on the lossy UTF-8 of `text`, read
    /// piece by piece; `read` counts the bytes consumed so far (for a
    /// progress line). [`END_OF_TEXT`] gets the last id.
    pub fn train(
        text: &[u8],
        vocab_size: usize,
        read: &AtomicU64,
    ) -> Result<BpeTokenizer, TokenizerError> {
        Self::train_pieces(text, vocab_size, read, super::STREAM_PIECE_BYTES)
    }

    fn train_pieces(
        text: &[u8],
        vocab_size: usize,
        read: &AtomicU64,
        piece_bytes: usize,
    ) -> Result<BpeTokenizer, TokenizerError> {
        if vocab_size < MIN_BPE_VOCAB {
            return Err(TokenizerError::BpeVocabTooSmall {
                requested: vocab_size,
            });
        }
        if vocab_size > MAX_VOCAB {
            return Err(TokenizerError::Invalid {
                path: "--vocab-size".into(),
                reason: format!("{vocab_size} exceeds {MAX_VOCAB}"),
            });
        }
        let mut tok = gpt2_pipeline(BPE::default());
        let alphabet: HashSet<char> = byte_chars().into_iter().collect();
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size - 1)
            .min_frequency(0)
            .show_progress(false)
            .initial_alphabet(alphabet)
            .build()
            .into();
        let chunks = SafeChunks {
            text,
            pos: 0,
            carry: String::new(),
            read,
            piece_bytes,
        };
        let train_err = |e| TokenizerError::Train(format!("BPE training failed: {e}"));
        tok.train(&mut trainer, chunks).map_err(train_err)?;
        tok.add_special_tokens([AddedToken::from(END_OF_TEXT, true)])
            .map_err(train_err)?;
        Self::new(tok, Path::new("(trained BPE)"))
    }

    /// GPT-2's two files: `vocab.json` (token → id) and `merges.txt`, with
    /// GPT-2's byte-level pre-tokenizer and decoder; [`END_OF_TEXT`] is the
    /// special token when the vocabulary has it.
    pub fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<BpeTokenizer, TokenizerError> {
        let (Some(v), Some(m)) = (vocab.to_str(), merges.to_str()) else {
            return Err(lib_err(vocab, "the path is not UTF-8"));
        };
        let model = BPE::from_file(v, m)
            .build()
            .map_err(|e| lib_err(vocab, format!("with {}: {e}", merges.display())))?;
        let has_eot = model.token_to_id(END_OF_TEXT).is_some();
        let mut tok = gpt2_pipeline(model);
        if has_eot {
            tok.add_special_tokens([AddedToken::from(END_OF_TEXT, true)])
                .map_err(|e| lib_err(vocab, e))?;
        }
        Self::new(tok, vocab)
    }

    /// A `tokenizer.json` in the `tokenizers` library's format (`path` names
    /// it in errors). Only BPE models are accepted.
    pub fn from_json(path: &Path, json: &str) -> Result<BpeTokenizer, TokenizerError> {
        let doc: Value = serde_json::from_str(json).map_err(|source| TokenizerError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let model_type = doc.pointer("/model/type").and_then(Value::as_str);
        // GPT-2's file predates the "type" key; a "merges" list means BPE.
        let is_bpe = model_type == Some("BPE")
            || (model_type.is_none() && doc.pointer("/model/merges").is_some());
        if !is_bpe {
            return Err(lib_err(
                path,
                format!(
                    "the model is {} but cllm reads BPE tokenizers only",
                    model_type.unwrap_or("of no known type")
                ),
            ));
        }
        let tok =
            tokenizers::Tokenizer::from_bytes(json.as_bytes()).map_err(|e| lib_err(path, e))?;
        Self::new(tok, path)
    }

    fn new(tok: tokenizers::Tokenizer, path: &Path) -> Result<BpeTokenizer, TokenizerError> {
        let json = tok.to_string(true).map_err(|e| lib_err(path, e))?;
        let doc: Value = serde_json::from_str(&json).map_err(|e| lib_err(path, e))?;
        let vocab = tok.get_vocab(true);
        let vocab_size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        if vocab_size == 0 {
            return Err(lib_err(path, "the vocabulary is empty"));
        }
        if vocab_size > MAX_VOCAB {
            return Err(lib_err(
                path,
                format!("{vocab_size} ids exceed {MAX_VOCAB}"),
            ));
        }
        let specials: Vec<String> = tok
            .get_added_tokens_decoder()
            .values()
            .filter(|t| t.special)
            .map(|t| t.content.clone())
            .collect();
        let eos = tok.token_to_id(END_OF_TEXT);
        let decoder_type = doc.pointer("/decoder/type").and_then(Value::as_str);
        let bytes =
            (decoder_type == Some("ByteLevel")).then(|| byte_table(&vocab, vocab_size, &tok));
        let streamable = doc.get("normalizer").is_none_or(Value::is_null)
            && !adds_prefix(doc.get("pre_tokenizer").unwrap_or(&Value::Null))
            && !specials.iter().any(|s| s.contains('\n'));
        Ok(BpeTokenizer {
            inner: Box::new(tok),
            json,
            vocab_size,
            eos,
            bytes,
            streamable,
        })
    }

    /// Number of ids (one above the largest).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Id of [`END_OF_TEXT`], if the vocabulary has it.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the decoder is byte-level (GPT-2's), so ids decode to exact
    /// bytes.
    pub fn is_byte_level(&self) -> bool {
        self.bytes.is_some()
    }

    /// The `tokenizer.json` text (the library's format).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The library's tokenizer, for anything cllm does not wrap.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Encodes `text` (special tokens written in the text, such as
    /// `<|endoftext|>`, become their ids, as in Hugging Face's tokenizers).
    pub fn encode_str<F: FnMut(u32)>(
        &self,
        text: &str,
        sink: &mut F,
    ) -> Result<(), TokenizerError> {
        if text.is_empty() {
            return Ok(());
        }
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        enc.get_ids().iter().for_each(|&id| sink(id));
        Ok(())
    }

    /// Decodes to text as the library does (invalid UTF-8 becomes U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.check(ids)?;
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Decodes to the exact bytes where the decoder is byte-level, else to
    /// the UTF-8 of [`BpeTokenizer::decode`].
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        self.check(ids)?;
        match &self.bytes {
            Some(table) => Ok(ids
                .iter()
                .flat_map(|&id| table[id as usize].iter().copied())
                .collect()),
            None => self.decode(ids).map(String::into_bytes),
        }
    }

    fn check(&self, ids: &[u32]) -> Result<(), TokenizerError> {
        match ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            Some(&id) => Err(TokenizerError::IdOutOfRange {
                id,
                vocab_size: self.vocab_size,
            }),
            None => Ok(()),
        }
    }

    /// Where text handed over piece by piece may be encoded up to: the last
    /// safe cut of `text`, `text.len()` past [`MAX_CARRY_BYTES`], and 0
    /// (hold everything back) for a tokenizer that cannot be cut.
    pub(super) fn stream_cut(&self, text: &str) -> usize {
        if !self.streamable {
            return 0;
        }
        match last_safe_cut(text) {
            0 if text.len() > MAX_CARRY_BYTES => text.len(),
            c => c,
        }
    }
}

/// GPT-2's pipeline around `model`: byte-level pre-tokenizer (GPT-2's
/// regex, no prefix space), byte-level post-processor and decoder.
fn gpt2_pipeline(model: BPE) -> tokenizers::Tokenizer {
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_post_processor(Some(ByteLevel::new(false, false, true)));
    tok.with_decoder(Some(ByteLevel::new(false, true, true)));
    tok
}

/// Whether a pre-tokenizer (JSON) prepends a space or a marker to each
/// encoded text, which would make a cut visible in the ids.
fn adds_prefix(pre: &Value) -> bool {
    match pre {
        Value::Object(o) => {
            o.get("add_prefix_space").and_then(Value::as_bool) == Some(true)
                || o.get("type").and_then(Value::as_str) == Some("Metaspace")
                || o.values().any(adds_prefix)
        }
        Value::Array(a) => a.iter().any(adds_prefix),
        _ => false,
    }
}

fn byte_table(
    vocab: &HashMap<String, u32>,
    vocab_size: usize,
    tok: &tokenizers::Tokenizer,
) -> Vec<Vec<u8>> {
    let mut of_char = HashMap::new();
    for (b, c) in byte_chars().into_iter().enumerate() {
        of_char.insert(c, b as u8);
    }
    let added = tok.get_added_tokens_decoder();
    let mut table = vec![Vec::new(); vocab_size];
    for (token, &id) in vocab {
        table[id as usize] = match added.get(&id) {
            // Added tokens are stored as their text, not in byte characters.
            Some(t) => t.content.as_bytes().to_vec(),
            None => token
                .chars()
                .flat_map(|c| match of_char.get(&c) {
                    Some(&b) => vec![b],
                    None => c.to_string().into_bytes(),
                })
                .collect(),
        };
    }
    table
}

/// The last position of `text` at which GPT-2-style pre-tokenizers (GPT-2's
/// regex, and the `\s*[\r\n]+` families of later models) split whatever
/// follows: just after a `\n` that follows a non-space character and is
/// followed by one. No pre-token spans it (a run of whitespace ends at the
/// `\n`, since the next character is not whitespace; punctuation followed
/// by newlines ends there too), and what comes after starts the same way as
/// at the beginning of a text. 0 when there is none.
pub(super) fn last_safe_cut(text: &str) -> usize {
    let b = text.as_bytes();
    let mut end = b.len();
    while let Some(nl) = b[..end].iter().rposition(|&c| c == b'\n') {
        let after = text[nl + 1..].chars().next();
        let before = text[..nl].chars().next_back();
        if let (Some(a), Some(p)) = (after, before) {
            if !a.is_whitespace() && !p.is_whitespace() {
                return nl + 1;
            }
        }
        end = nl;
    }
    0
}

/// The corpus as owned pieces cut at [`last_safe_cut`], for the trainer
/// (which wants an iterator it can send to its threads).
struct SafeChunks<'a> {
    text: &'a [u8],
    pos: usize,
    carry: String,
    read: &'a AtomicU64,
    piece_bytes: usize,
}

impl Iterator for SafeChunks<'_> {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        while self.pos < self.text.len() {
            let end = piece_end(self.text, self.pos, self.piece_bytes);
            self.carry
                .push_str(&String::from_utf8_lossy(&self.text[self.pos..end]));
            self.pos = end;
            self.read.store(end as u64, Ordering::Relaxed);
            let cut = match last_safe_cut(&self.carry) {
                0 if self.carry.len() > MAX_CARRY_BYTES => self.carry.len(),
                c => c,
            };
            if cut > 0 {
                let rest = self.carry.split_off(cut);
                return Some(std::mem::replace(&mut self.carry, rest));
            }
        }
        (!self.carry.is_empty()).then(|| std::mem::take(&mut self.carry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{for_each_lossy_piece, Tokenizer};

    fn corpus() -> Vec<u8> {
        let mut text = Vec::new();
        let lines: &[&[u8]] = &[
            b"First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
            b"All:\nSpeak, speak.  \n\n  Indented line\r\nwindows line\r\n",
            "caf\u{e9} na\u{ef}ve \u{1f600}\u{3000}wide\n".as_bytes(),
            b"bad \xe2\x82 bytes \xff\n<|endoftext|>\nnext 123 4567 it's we'll\n",
            b"\t\ttabs\n\n\n\nx\n",
        ];
        let mut x: u64 = 11;
        for _ in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.extend_from_slice(lines[(x % lines.len() as u64) as usize]);
        }
        text
    }

    #[test]
    fn safe_cuts_follow_a_lone_newline_between_words() {
        assert_eq!(last_safe_cut("ab\ncd"), 3);
        assert_eq!(last_safe_cut("ab\ncd\nef"), 6);
        assert_eq!(last_safe_cut("ab\n\ncd"), 0);
        assert_eq!(last_safe_cut("ab\n cd"), 0);
        assert_eq!(last_safe_cut("ab \ncd"), 0);
        assert_eq!(last_safe_cut("ab\r\ncd"), 0);
        assert_eq!(last_safe_cut("\ncd"), 0);
        assert_eq!(last_safe_cut("ab\n"), 0);
        assert_eq!(last_safe_cut("\u{e9}\n\u{e9}"), 3);
    }

    #[test]
    fn training_and_encoding_in_pieces_match_the_whole_text() {
        let text = corpus();
        let read = AtomicU64::new(0);
        let whole = BpeTokenizer::train_pieces(&text, 300, &read, usize::MAX).unwrap();
        assert_eq!(read.load(Ordering::Relaxed), text.len() as u64);
        assert_eq!(whole.vocab_size(), 300);
        assert_eq!(whole.eos_id(), Some(299));
        let tok = Tokenizer::Bpe(whole.clone());
        let lossy = String::from_utf8_lossy(&text).into_owned();
        let want = tok.encode(&lossy).unwrap();
        for piece in [4, 5, 7, 13, 64, 1000] {
            let got = BpeTokenizer::train_pieces(&text, 300, &read, piece).unwrap();
            assert!(got == whole, "training in pieces of {piece}");
            let mut ids = Vec::new();
            let mut enc = tok.stream_encoder();
            for_each_lossy_piece(&text, piece, |p| enc.push(p, |id| ids.push(id))).unwrap();
            enc.finish(|id| ids.push(id)).unwrap();
            assert_eq!(ids, want, "encoding in pieces of {piece}");
        }
        // Byte-level: the ids give back the exact (lossy) bytes.
        assert_eq!(tok.decode_bytes(&want).unwrap(), lossy.as_bytes());
        assert_eq!(tok.decode(&want).unwrap(), lossy);
        assert!(
            want.contains(&299),
            "<|endoftext|> in the text is the special id"
        );
        assert!(
            want.len() < lossy.len() * 2 / 3,
            "{} ids for {} bytes",
            want.len(),
            lossy.len()
        );
    }

    #[test]
    fn byte_chars_is_gpt2s_table() {
        let t = byte_chars();
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[b' ' as usize], '\u{120}'); // GPT-2's "Ġ"
        assert_eq!(t[b'\n' as usize], '\u{10a}'); // "Ċ"
        let set: HashSet<char> = t.into_iter().collect();
        assert_eq!(set.len(), 256);
    }
}
