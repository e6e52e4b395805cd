//! A single text file given as the corpus path: memory-mapped in place,
//! whatever its size, after the empty and binary-content checks.

use std::path::PathBuf;

use memmap2::Mmap;

use super::error::unreadable;
use super::options::looks_binary;
use super::{open_listed, Corpus, DataError, ListedFile, LoadSummary, SkipReason, SourceFile};

/// Phase two for a single file (see [`Listing::load`](super::Listing::load)).
pub(super) fn load(
    root: PathBuf,
    file: &ListedFile,
    mut summary: LoadSummary,
    spool_dir: PathBuf,
) -> Result<Corpus, DataError> {
    let f = open_listed(&file.path)?;
    let len = f.metadata().map_err(|e| unreadable(&file.path, e))?.len();
    if len == 0 {
        summary.skip(file.path.clone(), SkipReason::Empty, 0);
        return Err(DataError::NoUsableText {
            path: root,
            summary,
        });
    }
    // SAFETY: the map is read-only and private to this process. If
    // another process truncates the file while it is mapped, reads
    // past the new end fault (SIGBUS); that is the accepted price of
    // not copying corpora larger than memory, and is documented for
    // users ("do not modify the corpus while training").
    let map = unsafe { Mmap::map(&f) }.map_err(|e| unreadable(&file.path, e))?;
    if looks_binary(&map) {
        summary.skip(file.path.clone(), SkipReason::BinaryContent, len);
        return Err(DataError::NoUsableText {
            path: root,
            summary,
        });
    }
    summary.loaded_files = 1;
    summary.loaded_bytes = len;
    let files = vec![SourceFile {
        path: file.path.clone(),
        offset: 0,
        len: len as usize,
    }];
    Ok(Corpus::mapped(map, files, summary, spool_dir))
}
