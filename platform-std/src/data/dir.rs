//! A directory given as the corpus path: walked recursively under the
//! name, type and size rules, then its text files copied one after another
//! into a spool file that is mapped.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::error::{listed_err, unreadable};
use super::options::looks_binary;
use super::spool::Spool;
use super::{
    open_listed, Corpus, DataError, ListedFile, Listing, LoadOptions, LoadSummary, SkipReason,
    SourceFile, SNIFF_LEN, SPOOL_BUFFER_BYTES,
};

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

fn extension_lower(path: &Path) -> Option<String> {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// Phase one for a directory (see [`list_corpus`]).
///
/// [`list_corpus`]: super::list_corpus
pub(super) fn list(
    path: &Path,
    opts: &LoadOptions,
    mut summary: LoadSummary,
    spool_dir: PathBuf,
) -> Result<Listing, DataError> {
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(|e| listed_err(&dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| listed_err(&dir, e))?;
            let p = entry.path();
            let name = entry.file_name();
            let ft = entry.file_type().map_err(|e| listed_err(&p, e))?;
            if is_hidden(&name) {
                summary.skip(p, SkipReason::Hidden, 0);
                continue;
            }
            if ft.is_dir() {
                if opts
                    .skip_dirs
                    .iter()
                    .any(|d| d.as_str() == name.to_string_lossy())
                {
                    summary.skip(p, SkipReason::ExcludedDir, 0);
                } else {
                    stack.push(p);
                }
                continue;
            }
            // Follow a symlink only when it points at a regular file:
            // directory links can form cycles.
            let meta = match fs::metadata(&p) {
                Ok(m) if m.is_file() => m,
                Ok(_) => {
                    summary.skip(p, SkipReason::NotRegular, 0);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && ft.is_symlink() => {
                    summary.skip(p, SkipReason::NotRegular, 0);
                    continue;
                }
                Err(e) => return Err(listed_err(&p, e)),
            };
            let len = meta.len();
            let ext = extension_lower(&p);
            if ext.is_some_and(|e| opts.binary_extensions.contains(&e)) {
                summary.skip(p, SkipReason::BinaryExtension, len);
            } else if len > opts.max_file_bytes {
                summary.skip(p, SkipReason::TooLarge, len);
            } else if len == 0 {
                summary.skip(p, SkipReason::Empty, 0);
            } else {
                files.push(ListedFile { path: p, len });
            }
        }
    }
    summary.skipped_paths.sort();
    if files.is_empty() {
        // Only (nested) empty directories: nothing to skip, nothing to read.
        if summary.skipped.is_empty() {
            return Err(DataError::EmptyDirectory {
                path: path.to_path_buf(),
            });
        }
        return Err(DataError::NoUsableText {
            path: path.to_path_buf(),
            summary,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Listing {
        root: path.to_path_buf(),
        root_is_file: false,
        files,
        summary,
        spool_dir,
    })
}

/// Reads into `buf` until it is full or the file ends; returns the bytes
/// read.
fn read_up_to(f: &mut File, path: &Path, buf: &mut [u8]) -> Result<usize, DataError> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(unreadable(path, e)),
        }
    }
    Ok(n)
}

/// Phase two for a directory (see [`Listing::load`]).
pub(super) fn load(
    root: PathBuf,
    files: &[ListedFile],
    mut summary: LoadSummary,
    spool_dir: PathBuf,
) -> Result<Corpus, DataError> {
    // Each file plus the newline that may follow it.
    let needed = files
        .iter()
        .fold(0u64, |n, f| n.saturating_add(f.len).saturating_add(1));
    let mut spool = Spool::create(&spool_dir, "corpus text", needed)?;
    let mut buf = vec![0u8; SPOOL_BUFFER_BYTES.max(SNIFF_LEN)];
    // u64: on a 32-bit target a spool past 4 GiB fails to map (below),
    // so the offsets converted to usize are only used when they fit.
    let mut written = 0u64;
    let mut last_byte = None;
    let mut sources = Vec::new();
    for file in files {
        let path = &file.path;
        let mut f = open_listed(path)?;
        // The first SNIFF_LEN bytes decide whether the file is text.
        let head = read_up_to(&mut f, path, &mut buf[..SNIFF_LEN])?;
        if head == 0 {
            summary.skip(path.clone(), SkipReason::Empty, 0);
            continue;
        }
        if looks_binary(&buf[..head]) {
            // Counted like the text files: the bytes actually read.
            let rest = io::copy(&mut f, &mut io::sink()).map_err(|e| unreadable(path, e))?;
            summary.skip(path.clone(), SkipReason::BinaryContent, head as u64 + rest);
            continue;
        }
        if last_byte.is_some_and(|b| b != b'\n') {
            spool.write(b"\n")?;
            written += 1;
        }
        let offset = written;
        let mut n = head;
        loop {
            spool.write(&buf[..n])?;
            written += n as u64;
            last_byte = Some(buf[n - 1]);
            n = read_up_to(&mut f, path, &mut buf)?;
            if n == 0 {
                break;
            }
        }
        let len = written - offset;
        sources.push(SourceFile {
            path: path.clone(),
            offset: offset as usize,
            len: len as usize,
        });
        summary.loaded_files += 1;
        summary.loaded_bytes += len;
    }
    summary.skipped_paths.sort();
    if sources.is_empty() {
        return Err(DataError::NoUsableText {
            path: root,
            summary,
        });
    }
    let map = spool.map()?;
    debug_assert_eq!(map.len() as u64, written);
    Ok(Corpus::mapped(map, sources, summary, spool_dir))
}
