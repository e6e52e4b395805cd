//! The token-id spool: the char and word ids of a mapped corpus, encoded
//! piece by piece into a spool file and mapped back as [`MappedIds`].

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::spool::Spool;
use super::{DataError, MappedIds};
use crate::tokenizer::{for_each_lossy_piece, Tokenizer, STREAM_PIECE_BYTES};

/// A token id type a spool file can hold.
pub(super) trait SpoolId: Copy {
    /// Its bytes, native-endian (the spool is read back by this process
    /// only).
    fn put(id: u32, out: &mut BufWriter<File>) -> io::Result<()>;
}

impl SpoolId for u16 {
    fn put(id: u32, out: &mut BufWriter<File>) -> io::Result<()> {
        // The caller checked that the vocabulary fits in 16 bits.
        out.write_all(&(id as u16).to_ne_bytes())
    }
}

impl SpoolId for u32 {
    fn put(id: u32, out: &mut BufWriter<File>) -> io::Result<()> {
        out.write_all(&id.to_ne_bytes())
    }
}

/// Counts the ids written to a spool and keeps the first write error (the
/// tokenizer's sink cannot fail, so the error is checked after each piece).
#[derive(Default)]
struct IdSink {
    count: usize,
    failed: Option<io::Error>,
}

impl IdSink {
    fn put<T: SpoolId>(&mut self, id: u32, out: &mut BufWriter<File>) {
        if self.failed.is_none() {
            match T::put(id, out) {
                Ok(()) => self.count += 1,
                Err(e) => self.failed = Some(e),
            }
        }
    }
}

/// Encodes `bytes` (as lossy UTF-8) into a spool file of `T` ids in `dir`
/// and maps it. Memory: one decoded piece of text and the write buffer.
pub(super) fn spool_ids<T: SpoolId>(
    bytes: &[u8],
    tokenizer: &Tokenizer,
    dir: &Path,
) -> Result<MappedIds<T>, DataError> {
    // At most one id per byte of text for char and word; bpe may give three
    // ids to the three bytes of a U+FFFD that replaced one invalid byte.
    let per_byte = if let Tokenizer::Bpe(_) = tokenizer {
        3
    } else {
        1
    };
    let needed = (bytes.len() as u64).saturating_mul((per_byte * std::mem::size_of::<T>()) as u64);
    let mut spool = Spool::create(dir, "token ids", needed)?;
    let mut enc = tokenizer.stream_encoder();
    let mut sink = IdSink::default();
    for_each_lossy_piece(bytes, STREAM_PIECE_BYTES, |piece| {
        enc.push(piece, |id| sink.put::<T>(id, &mut spool.out))?;
        // A write error stops the encoding after the piece it happened in.
        match sink.failed.take() {
            Some(e) => Err(spool.info.error("write", e)),
            None => Ok(()),
        }
    })?;
    enc.finish(|id| sink.put::<T>(id, &mut spool.out))?;
    if let Some(e) = sink.failed {
        return Err(spool.info.error("write", e));
    }
    let count = sink.count;
    let map = spool.map()?;
    MappedIds::new(map, count).ok_or_else(|| DataError::Spool {
        what: "token ids",
        op: "map",
        dir: dir.to_path_buf(),
        needed,
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the mapped file does not hold the {count} ids written"),
        ),
    })
}
