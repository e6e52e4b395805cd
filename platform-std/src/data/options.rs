//! The loading rules: [`LoadOptions`], its defaults, and the content sniff
//! that both sources apply to decide whether a file is text.

use std::path::PathBuf;

/// Bytes inspected for a NUL byte when deciding whether a file is binary.
pub const SNIFF_LEN: usize = 8 * 1024;

/// Default per-file size limit for files found inside a directory (16 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Directory names skipped by default, so training on a repository does not
/// eat its own build outputs and checkpoints.
pub const DEFAULT_SKIP_DIRS: &[&str] = &["target", "runs", "node_modules", "__pycache__"];

/// File extensions (lowercase, without the dot) treated as binary without
/// looking at the content.
pub const BINARY_EXTENSIONS: &[&str] = &[
    "png",
    "jpg",
    "jpeg",
    "gif",
    "bmp",
    "ico",
    "webp",
    "tif",
    "tiff",
    "svgz",
    "pdf",
    "zip",
    "gz",
    "tgz",
    "bz2",
    "xz",
    "zst",
    "7z",
    "rar",
    "tar",
    "jar",
    "so",
    "o",
    "a",
    "rlib",
    "rmeta",
    "dylib",
    "dll",
    "exe",
    "lib",
    "obj",
    "bin",
    "dat",
    "class",
    "pyc",
    "wasm",
    "safetensors",
    "pt",
    "pth",
    "ckpt",
    "npy",
    "npz",
    "onnx",
    "pkl",
    "db",
    "sqlite",
    "mp3",
    "mp4",
    "wav",
    "ogg",
    "flac",
    "avi",
    "mov",
    "mkv",
    "ttf",
    "otf",
    "woff",
    "woff2",
    "eot",
];

/// Rules for [`list_corpus`] / [`load_corpus`].
///
/// [`list_corpus`]: super::list_corpus
/// [`load_corpus`]: super::load_corpus
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Files found in a directory larger than this are skipped. A file given
    /// directly as the corpus path is used whatever its size (it is
    /// memory-mapped, not copied).
    pub max_file_bytes: u64,
    /// Directory names (exact match, any depth below the root) not descended
    /// into.
    pub skip_dirs: Vec<String>,
    /// Extensions (lowercase, no dot) skipped as binary for files found in a
    /// directory.
    pub binary_extensions: Vec<String>,
    /// Where the spool files go: the concatenated text of a directory corpus
    /// and the ids of the char and word tokenizers ([`Corpus::into_tokens`]).
    /// They need about as much free space as the corpus (the ids up to two
    /// or four bytes per byte of text). `None`: [`std::env::temp_dir`], i.e.
    /// `$TMPDIR` or `/tmp` (if that is a RAM-backed tmpfs, the spool uses
    /// RAM: point `TMPDIR` at a disk).
    ///
    /// [`Corpus::into_tokens`]: super::Corpus::into_tokens
    pub spool_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            skip_dirs: DEFAULT_SKIP_DIRS.iter().map(|s| s.to_string()).collect(),
            binary_extensions: BINARY_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            spool_dir: None,
        }
    }
}

impl LoadOptions {
    /// The directory spool files are created in.
    pub fn resolved_spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// Whether the first [`SNIFF_LEN`] bytes hold a NUL byte.
pub(super) fn looks_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(SNIFF_LEN)].contains(&0)
}
