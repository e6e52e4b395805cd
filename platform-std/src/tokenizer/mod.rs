//! Tokenizers: byte, char, word and BPE (one module each where they need
//! code), and their files in a model directory (`files`).
//!
//! Files written into a model directory:
//! - byte, char, bpe: `tokenizer.json` in the Hugging Face `tokenizers`
//!   format, with `tokenizer_config.json` and `special_tokens_map.json`, so
//!   that `AutoTokenizer.from_pretrained(dir)` loads it (byte and char as a
//!   BPE without merges, see `files`);
//! - word: `tokenizer.json` in cllm's own format,
//!   `{"format": "cllm-tokenizer", "version": 1, "kind": "word",
//!   "vocab_size": N, ...}`, and `vocab.txt`, one token per line in id
//!   order, the five specials first.
//!
//! cllm's own format is read for every kind (byte; char with `"chars"`, the
//! vocabulary in id order), which is what earlier versions wrote.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::AtomicU64;

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

/// The tokenizer kinds (`--tokenizer byte|char|word|bpe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenizerKind {
    /// One token per byte; vocabulary 256.
    Byte,
    /// One token per Unicode scalar seen in the training data.
    Char,
    /// Lowercased whitespace-separated words plus specials.
    Word,
    /// Byte-level BPE (GPT-2 style) through the `tokenizers` crate.
    Bpe,
}

impl TokenizerKind {
    /// The lowercase name used on the command line and in `tokenizer.json`.
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Byte => "byte",
            TokenizerKind::Char => "char",
            TokenizerKind::Word => "word",
            TokenizerKind::Bpe => "bpe",
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
            "bpe" => Ok(TokenizerKind::Bpe),
            other => Err(TokenizerError::UnknownKind {
                kind: other.to_string(),
            }),
        }
    }
}

mod bpe;
mod char;
mod error;
mod files;
mod pieces;
mod word;

pub use bpe::{byte_chars, BpeTokenizer, END_OF_TEXT, MIN_BPE_VOCAB};
pub use char::CharVocab;
pub use error::TokenizerError;
pub use files::{GPT2_MERGES_FILE, GPT2_VOCAB_FILE, SPECIAL_TOKENS_FILE, TOKENIZER_CONFIG_FILE};
pub use pieces::{for_each_lossy_piece, STREAM_PIECE_BYTES};
pub use word::WordVocab;

use word::{count_word, word_id, WordSplitter};

/// A tokenizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tokenizer {
    /// Bytes are tokens (vocabulary 256); lossless on any input.
    Byte,
    /// Unicode scalars seen in the training text.
    Char(CharVocab),
    /// Lowercased whitespace-separated words.
    Word(WordVocab),
    /// Byte-level BPE (or any BPE loaded from a `tokenizer.json`).
    Bpe(BpeTokenizer),
}

impl Tokenizer {
    /// Builds a tokenizer of `kind` from training bytes (invalid UTF-8 is
    /// replaced by U+FFFD for char, word and bpe). `vocab_size` only matters
    /// for word and bpe.
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
        Self::train_with_progress(kind, text, vocab_size, &AtomicU64::new(0))
    }

    /// Like [`Tokenizer::train`]; `read` counts the bytes of `text` read so
    /// far (bpe only), so another thread can show progress on a long corpus.
    pub fn train_with_progress(
        kind: TokenizerKind,
        text: &[u8],
        vocab_size: usize,
        read: &AtomicU64,
    ) -> Result<Tokenizer, TokenizerError> {
        match kind {
            TokenizerKind::Bpe => BpeTokenizer::train(text, vocab_size, read).map(Tokenizer::Bpe),
            _ => Self::train_pieces(kind, text, vocab_size, STREAM_PIECE_BYTES),
        }
    }

    fn train_pieces(
        kind: TokenizerKind,
        text: &[u8],
        vocab_size: usize,
        piece_bytes: usize,
    ) -> Result<Tokenizer, TokenizerError> {
        match kind {
            TokenizerKind::Byte => Ok(Tokenizer::Byte),
            TokenizerKind::Bpe => {
                BpeTokenizer::train(text, vocab_size, &AtomicU64::new(0)).map(Tokenizer::Bpe)
            }
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

    /// Which kind this is.
    pub fn kind(&self) -> TokenizerKind {
        match self {
            Tokenizer::Byte => TokenizerKind::Byte,
            Tokenizer::Char(_) => TokenizerKind::Char,
            Tokenizer::Word(_) => TokenizerKind::Word,
            Tokenizer::Bpe(_) => TokenizerKind::Bpe,
        }
    }

    /// Number of token ids.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Byte => 256,
            Tokenizer::Char(v) => v.chars.len(),
            Tokenizer::Word(v) => v.words.len(),
            Tokenizer::Bpe(b) => b.vocab_size(),
        }
    }

    /// Beginning-of-sequence id, if the kind has one: word's `<bos>`; for
    /// bpe `<|endoftext|>`, as in GPT-2, which uses it for both.
    pub fn bos_id(&self) -> Option<u32> {
        match self {
            Tokenizer::Word(_) => Some(BOS_ID),
            Tokenizer::Bpe(b) => b.eos_id(),
            _ => None,
        }
    }

    /// End-of-sequence id, if the kind has one: word's `<eos>`; bpe's
    /// `<|endoftext|>`.
    pub fn eos_id(&self) -> Option<u32> {
        match self {
            Tokenizer::Word(_) => Some(EOS_ID),
            Tokenizer::Bpe(b) => b.eos_id(),
            _ => None,
        }
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
        if let Tokenizer::Bpe(b) = self {
            // The whole text at once: no need to look for cuts.
            return b.encode_str(text, &mut sink);
        }
        let mut enc = self.stream_encoder();
        enc.push(text, &mut sink)?;
        enc.finish(sink)
    }

    /// An encoder for text that arrives in consecutive pieces (e.g. from
    /// [`for_each_lossy_piece`]): the ids are those [`Tokenizer::encode`]
    /// gives for the concatenated text, wherever the pieces are cut.
    pub fn stream_encoder(&self) -> StreamEncoder<'_> {
        StreamEncoder {
            tokenizer: self,
            chars_seen: 0,
            words: WordSplitter::default(),
            carry: String::new(),
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

    /// Decodes ids to bytes: byte and byte-level bpe give the exact bytes
    /// back; char the UTF-8 of the characters; word the tokens joined by
    /// single spaces (specials appear as their names, e.g. `<unk>`).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        match self {
            Tokenizer::Byte => ids
                .iter()
                .map(|&id| self.check_id(id).map(|b| b as u8))
                .collect(),
            Tokenizer::Bpe(b) => b.decode_bytes(ids),
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
            Tokenizer::Bpe(b) => b.decode(ids),
        }
    }
}

/// Encodes text given in consecutive pieces (see
/// [`Tokenizer::stream_encoder`]). Call [`StreamEncoder::finish`] after the
/// last piece: a word tokenizer holds back a word that may continue in the
/// next piece, bpe the text after the last place where it may be cut.
#[derive(Debug)]
pub struct StreamEncoder<'t> {
    tokenizer: &'t Tokenizer,
    /// Characters already encoded (char positions in errors are global).
    chars_seen: usize,
    words: WordSplitter,
    /// bpe: text not encoded yet.
    carry: String,
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
            Tokenizer::Bpe(b) => {
                self.carry.push_str(piece);
                let cut = b.stream_cut(&self.carry);
                if cut > 0 {
                    b.encode_str(&self.carry[..cut], &mut sink)?;
                    self.carry.drain(..cut);
                }
            }
        }
        Ok(())
    }

    /// Emits what is held back (the last word of a word tokenizer, the text
    /// after bpe's last cut).
    pub fn finish<F: FnMut(u32)>(mut self, mut sink: F) -> Result<(), TokenizerError> {
        match self.tokenizer {
            Tokenizer::Word(v) => self.words.finish(|w| sink(word_id(v, w))),
            Tokenizer::Bpe(b) => b.encode_str(&self.carry, &mut sink)?,
            _ => {}
        }
        Ok(())
    }
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
        enc.finish(|id| got.push(id)).unwrap();
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
