//! Crash-safe file writing.
//!
//! Every file the trainer leaves behind is written so that a kill at any
//! instant leaves either the old complete file or the new complete file:
//! the bytes go to a temporary sibling, which is fsynced, renamed over the
//! destination, and then the directory itself is fsynced so the rename is
//! durable too.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An I/O failure together with what was being done and to which path.
///
/// Disk-full and permission errors surface as this type; its `Display` is a
/// single line such as `cannot write /run/x/config.json: No space left on
/// device (os error 28)`.
#[derive(Debug)]
pub struct FsError {
    /// The operation that failed, e.g. `"write"`, `"rename"`, `"fsync"`.
    pub op: &'static str,
    /// The path the operation was applied to.
    pub path: PathBuf,
    /// The operating-system error.
    pub source: io::Error,
}

impl FsError {
    /// Wraps an `io::Error` with the operation and the path it concerned.
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FsError {
            op,
            path: path.into(),
            source,
        }
    }

    /// The kind of the underlying OS error.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.op,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for FsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Prefix of every temporary file or directory this crate creates, so stale
/// ones can be recognised (and removed) after a crash.
pub const TMP_PREFIX: &str = ".tmp-";

/// The temporary sibling used while `path` is being written:
/// `DIR/.tmp-NAME-PID`.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let tmp_name = format!("{TMP_PREFIX}{name}-{}", std::process::id());
    match path.parent() {
        Some(parent) => parent.join(tmp_name),
        None => PathBuf::from(tmp_name),
    }
}

/// The directory containing `path`, as something that can be opened
/// (`"."` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a directory's entries (creations, renames, deletions) to disk.
pub fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    // Directories can be opened read-only and fsynced on Unix; that is the
    // only way to make a rename inside them durable.
    let d = File::open(dir).map_err(|e| FsError::new("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| FsError::new("fsync directory", dir, e))
}

/// Flushes a file's contents to disk.
pub fn fsync_file(path: &Path) -> Result<(), FsError> {
    let f = File::open(path).map_err(|e| FsError::new("open", path, e))?;
    f.sync_all().map_err(|e| FsError::new("fsync", path, e))
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of
/// the directory). On failure the temporary file is removed and `path` is
/// untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], but the content is produced by `fill`, which writes
/// into a buffered writer on the temporary file (so large content need not be
/// assembled in memory first).
pub fn write_atomic_with<F>(path: &Path, fill: F) -> Result<(), FsError>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let tmp = temp_sibling(path);
    let result = write_and_sync(&tmp, fill).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| FsError::new("rename into place", path, e))
    });
    if let Err(e) = result {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(parent_dir(path))
}

/// Creates (truncating) `path`, fills it through a buffered writer and
/// fsyncs it. Not atomic by itself: used for files inside a temporary
/// directory that is renamed into place as a whole.
pub fn write_and_sync<F>(path: &Path, fill: F) -> Result<(), FsError>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let file = File::create(path).map_err(|e| FsError::new("create", path, e))?;
    let mut w = io::BufWriter::with_capacity(1 << 20, file);
    fill(&mut w).map_err(|e| FsError::new("write", path, e))?;
    let file = w
        .into_inner()
        .map_err(|e| FsError::new("write", path, e.into_error()))?;
    file.sync_all().map_err(|e| FsError::new("fsync", path, e))
}

/// Creates `dir` and its missing parents, fsyncing the parent of every
/// directory created so the new directories survive a crash.
pub fn create_dir_all_durable(dir: &Path) -> Result<(), FsError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || p.is_dir() {
            break;
        }
        missing.push(p);
        cur = p.parent();
    }
    for p in missing.into_iter().rev() {
        match fs::create_dir(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => continue,
            Err(e) => return Err(FsError::new("create directory", p, e)),
        }
        fsync_dir(parent_dir(p))?;
    }
    Ok(())
}
