//! The spool: a nameless temporary file written through a bounded buffer and
//! then memory-mapped. A directory's text and the char/word token ids go
//! through it, so neither needs memory proportional to the corpus.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::DataError;

/// Bytes read from a corpus file, and buffered on the way into a spool
/// file, at a time.
pub const SPOOL_BUFFER_BYTES: usize = 256 * 1024;

/// A temporary file written sequentially through a bounded buffer, then
/// memory-mapped. It is created with `O_TMPFILE` where the file system
/// supports it (no name at all) and otherwise unlinked right after creation,
/// so it disappears when the process ends, even on SIGKILL.
pub(super) struct Spool {
    pub(super) out: BufWriter<File>,
    pub(super) info: SpoolInfo,
}

/// What a spool file holds and where, for its errors.
pub(super) struct SpoolInfo {
    what: &'static str,
    dir: PathBuf,
    needed: u64,
}

impl SpoolInfo {
    pub(super) fn error(&self, op: &'static str, source: io::Error) -> DataError {
        DataError::Spool {
            what: self.what,
            op,
            dir: self.dir.clone(),
            needed: self.needed,
            source,
        }
    }
}

impl Spool {
    /// A new spool file in `dir` for `what`, which will take at most
    /// `needed` bytes (only used in error messages).
    pub(super) fn create(dir: &Path, what: &'static str, needed: u64) -> Result<Spool, DataError> {
        let info = SpoolInfo {
            what,
            dir: dir.to_path_buf(),
            needed,
        };
        let file = tempfile::tempfile_in(dir).map_err(|e| info.error("create", e))?;
        Ok(Spool {
            out: BufWriter::with_capacity(SPOOL_BUFFER_BYTES, file),
            info,
        })
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<(), DataError> {
        self.out
            .write_all(bytes)
            .map_err(|e| self.info.error("write", e))
    }

    /// Flushes the buffer and maps the file.
    pub(super) fn map(self) -> Result<Mmap, DataError> {
        let Spool { out, info } = self;
        let file = out
            .into_inner()
            .map_err(|e| info.error("write", e.into_error()))?;
        // SAFETY: the file has no name (or lost it at creation), so only this
        // process can reach it, and nothing writes to it once it is mapped:
        // the mapped bytes cannot change or shrink under the map.
        unsafe { Mmap::map(&file) }.map_err(|e| info.error("map", e))
    }
}
