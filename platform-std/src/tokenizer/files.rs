//! Tokenizer files: Hugging Face's (`tokenizer.json` of the `tokenizers`
//! library, written for byte, char and bpe, or GPT-2's `vocab.json` +
//! `merges.txt`, read for bpe) and cllm's own (`tokenizer.json` with
//! `"format": "cllm-tokenizer"`, written for word with its `vocab.txt`, and
//! read for every kind, so runs of earlier versions load): writing, reading,
//! validating.
//!
//! Byte and char are expressed in the library's terms as a BPE without
//! merges: byte with GPT-2's byte-level pre-tokenizer and decoder and the 256
//! byte characters at their byte values, char with no pre-tokenizer, one
//! vocabulary entry per character and the `Fuse` decoder. Reading such a file
//! gives the byte or char tokenizer back (not a BPE), so a run resumes as
//! the kind it was.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::bpe::BpeTokenizer;
use super::char::CharVocab;
use super::word::WordVocab;
use super::{
    Tokenizer, TokenizerError, TokenizerKind, MAX_VOCAB, TOKENIZER_FILE, TOKENIZER_FORMAT,
    TOKENIZER_VERSION, VOCAB_FILE, WORD_SPECIALS,
};

/// Hugging Face's tokenizer settings file, written next to a bpe
/// `tokenizer.json`.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// Hugging Face's special-token file, written next to a bpe `tokenizer.json`.
pub const SPECIAL_TOKENS_FILE: &str = "special_tokens_map.json";
/// GPT-2's vocabulary file (token → id), read with [`GPT2_MERGES_FILE`].
pub const GPT2_VOCAB_FILE: &str = "vocab.json";
/// GPT-2's merges file.
pub const GPT2_MERGES_FILE: &str = "merges.txt";

fn write_json(path: &Path, doc: &Value) -> Result<(), TokenizerError> {
    let mut bytes = serde_json::to_vec_pretty(doc).expect("a JSON value always serializes");
    bytes.push(b'\n');
    write_atomic(path, &bytes).map_err(TokenizerError::Io)
}

fn save_bpe(b: &BpeTokenizer, dir: &Path) -> Result<(), TokenizerError> {
    let mut json = b.json().as_bytes().to_vec();
    json.push(b'\n');
    write_atomic(&dir.join(TOKENIZER_FILE), &json).map_err(TokenizerError::Io)?;
    let eot = b
        .eos_id()
        .and_then(|id| b.inner().id_to_token(id))
        .map_or(Value::Null, Value::String);
    let class = if b.is_byte_level() {
        "GPT2Tokenizer"
    } else {
        "PreTrainedTokenizerFast"
    };
    save_hf_configs(dir, class, eot)
}

/// A `tokenizer.json` of the `tokenizers` library: a BPE without merges
/// over `vocab`, with these pre-tokenizer and decoder.
fn hf_no_merges(vocab: serde_json::Map<String, Value>, pre: Value, decoder: Value) -> Value {
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": null,
        "decoder": decoder,
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": []
        }
    })
}

fn byte_level(add_prefix_space: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": true, "use_regex": true})
}

/// The byte tokenizer in the library's format: byte `b` is id `b`.
fn hf_byte_doc() -> Value {
    let vocab = super::byte_chars()
        .into_iter()
        .enumerate()
        .map(|(b, c)| (c.to_string(), json!(b)))
        .collect();
    hf_no_merges(vocab, byte_level(false), byte_level(true))
}

/// A char tokenizer in the library's format: `chars[i]` is id `i`.
fn hf_char_doc(chars: &[char]) -> Value {
    let vocab = chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), json!(i)))
        .collect();
    hf_no_merges(vocab, Value::Null, json!({"type": "Fuse"}))
}

/// The byte or char tokenizer a library-format document describes, if it is
/// one of the two as [`hf_byte_doc`] and [`hf_char_doc`] write them (a BPE
/// without merges, added tokens or normalizer, whose vocabulary is the 256
/// byte characters at their byte values, or single characters with ids
/// `0..n`); None for anything else, which is read as a BPE.
fn hf_byte_or_char(doc: &Value) -> Option<Tokenizer> {
    let model = doc.get("model")?;
    let plain = model.get("type").and_then(Value::as_str) == Some("BPE")
        && model.get("merges")?.as_array()?.is_empty()
        && doc
            .get("added_tokens")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        && doc.get("normalizer").is_none_or(Value::is_null)
        && doc.get("post_processor").is_none_or(Value::is_null)
        && model.get("unk_token").is_none_or(Value::is_null);
    if !plain {
        return None;
    }
    let vocab = model.get("vocab")?.as_object()?;
    let pre = doc.get("pre_tokenizer").unwrap_or(&Value::Null);
    let decoder = doc.get("decoder").unwrap_or(&Value::Null);
    let kind = |v: &Value| v.get("type").and_then(Value::as_str).map(str::to_string);
    if kind(pre).as_deref() == Some("ByteLevel") && kind(decoder).as_deref() == Some("ByteLevel") {
        let bytes = super::byte_chars();
        let exact = vocab.len() == 256
            && bytes
                .iter()
                .enumerate()
                .all(|(b, c)| vocab.get(&c.to_string()).and_then(Value::as_u64) == Some(b as u64));
        return exact.then_some(Tokenizer::Byte);
    }
    if pre.is_null() && kind(decoder).as_deref() == Some("Fuse") && vocab.len() <= MAX_VOCAB {
        let mut chars = vec![None; vocab.len()];
        for (token, id) in vocab {
            let id = usize::try_from(id.as_u64()?).ok()?;
            let mut it = token.chars();
            let (Some(c), None) = (it.next(), it.next()) else {
                return None;
            };
            if chars.get_mut(id)?.replace(c).is_some() {
                return None;
            }
        }
        let chars: Option<Vec<char>> = chars.into_iter().collect();
        return CharVocab::new(chars?).ok().map(Tokenizer::Char);
    }
    None
}

/// `tokenizer_config.json` and `special_tokens_map.json`, so that
/// `AutoTokenizer.from_pretrained(dir)` loads the directory's
/// `tokenizer.json` as `class`, with `eot` as its beginning, end and unknown
/// token (or no special tokens when it is null).
fn save_hf_configs(dir: &Path, class: &str, eot: Value) -> Result<(), TokenizerError> {
    let mut config = json!({
        "tokenizer_class": class,
        "add_prefix_space": false,
        // Decoded text must be what `generate` prints, unchanged.
        "clean_up_tokenization_spaces": false,
        "model_max_length": 1u64 << 30,
    });
    let mut specials = json!({});
    if !eot.is_null() {
        for key in ["bos_token", "eos_token", "unk_token"] {
            config[key] = eot.clone();
            specials[key] = eot.clone();
        }
    }
    write_json(&dir.join(TOKENIZER_CONFIG_FILE), &config)?;
    write_json(&dir.join(SPECIAL_TOKENS_FILE), &specials)
}
use crate::fsutil::{write_atomic, FsError};

impl Tokenizer {
    /// Writes the tokenizer's files into `dir` (each atomically).
    pub fn save(&self, dir: &Path) -> Result<(), TokenizerError> {
        let hf = match self {
            Tokenizer::Bpe(b) => return save_bpe(b, dir),
            Tokenizer::Byte => Some(hf_byte_doc()),
            Tokenizer::Char(v) => Some(hf_char_doc(&v.chars)),
            Tokenizer::Word(_) => None,
        };
        if let Some(doc) = hf {
            write_json(&dir.join(TOKENIZER_FILE), &doc)?;
            return save_hf_configs(dir, "PreTrainedTokenizerFast", Value::Null);
        }
        let mut doc = json!({
            "format": TOKENIZER_FORMAT,
            "version": TOKENIZER_VERSION,
            "kind": self.kind().name(),
            "vocab_size": self.vocab_size(),
        });
        match self {
            Tokenizer::Byte | Tokenizer::Bpe(_) | Tokenizer::Char(_) => {}
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
        write_json(&dir.join(TOKENIZER_FILE), &doc)
    }

    /// Reads the tokenizer saved in `dir`, validating it: `tokenizer.json`
    /// (cllm's format or the `tokenizers` library's), or, without one,
    /// GPT-2's `vocab.json` + `merges.txt`.
    pub fn load(dir: &Path) -> Result<Tokenizer, TokenizerError> {
        let path = dir.join(TOKENIZER_FILE);
        let (vocab, merges) = (dir.join(GPT2_VOCAB_FILE), dir.join(GPT2_MERGES_FILE));
        if !path.exists() && vocab.is_file() && merges.is_file() {
            return BpeTokenizer::from_vocab_merges(&vocab, &merges).map(Tokenizer::Bpe);
        }
        let json = read_bytes(&path)?;
        // vocab.txt is only read when tokenizer.json says the kind is word.
        Self::parse(&path, &json, || {
            let vpath = dir.join(VOCAB_FILE);
            read_bytes(&vpath).map(|b| (vpath, b))
        })
    }

    /// Reads a tokenizer from `path`: a directory (as [`Tokenizer::load`])
    /// or a `tokenizer.json` file (a word tokenizer's `vocab.txt` is read
    /// from the same directory).
    pub fn load_path(path: &Path) -> Result<Tokenizer, TokenizerError> {
        if path.is_dir() {
            return Self::load(path);
        }
        let json = read_bytes(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(path, &json, || {
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
        if !obj.contains_key("format") && obj.contains_key("model") {
            if let Some(t) = hf_byte_or_char(&doc) {
                return Ok(t);
            }
            return BpeTokenizer::from_json(&path, text).map(Tokenizer::Bpe);
        }
        match obj.get("format").and_then(Value::as_str) {
            Some(TOKENIZER_FORMAT) => {}
            other => {
                return Err(invalid(format!(
                    "\"format\" must be \"{TOKENIZER_FORMAT}\" (or the file must be a Hugging Face \
                     tokenizer.json with a \"model\"), found {}",
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
            TokenizerKind::Bpe => {
                return Err(invalid(
                    "bpe tokenizers are stored in the Hugging Face format, not cllm's".to_string(),
                ))
            }
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
            _ => &[TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE],
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
