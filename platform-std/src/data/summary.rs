//! What a load kept and left out: [`SkipReason`], [`LoadSummary`] and its
//! one-paragraph `Display`, shared by the listing and both sources.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Why a file or directory was left out of the corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// Name starts with `.` (file or directory).
    Hidden,
    /// A directory in [`LoadOptions::skip_dirs`].
    ///
    /// [`LoadOptions::skip_dirs`]: super::LoadOptions::skip_dirs
    ExcludedDir,
    /// Extension in the binary list.
    BinaryExtension,
    /// A NUL byte in the first [`SNIFF_LEN`] bytes.
    ///
    /// [`SNIFF_LEN`]: super::SNIFF_LEN
    BinaryContent,
    /// Larger than [`LoadOptions::max_file_bytes`].
    ///
    /// [`LoadOptions::max_file_bytes`]: super::LoadOptions::max_file_bytes
    TooLarge,
    /// Zero bytes long.
    Empty,
    /// A symlink to a directory, a broken symlink, a FIFO, socket or device.
    NotRegular,
}

impl SkipReason {
    /// Short human label used in the summary.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Hidden => "hidden",
            SkipReason::ExcludedDir => "excluded directory",
            SkipReason::BinaryExtension => "binary extension",
            SkipReason::BinaryContent => "binary content",
            SkipReason::TooLarge => "too large",
            SkipReason::Empty => "empty",
            SkipReason::NotRegular => "not a regular file",
        }
    }
}

/// Count and size of the entries skipped for one reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipCount {
    /// Entries skipped (files or directories).
    pub entries: usize,
    /// Bytes of the skipped files (directories count 0).
    pub bytes: u64,
}

/// What a load kept and left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Files whose text is in the corpus.
    pub loaded_files: usize,
    /// Total bytes of those files.
    pub loaded_bytes: u64,
    /// Skipped entries, by reason.
    pub skipped: BTreeMap<SkipReason, SkipCount>,
    /// Every skipped entry, in path order.
    pub skipped_paths: Vec<(PathBuf, SkipReason)>,
    /// Size limit that was in force (for the summary line).
    pub max_file_bytes: u64,
}

impl LoadSummary {
    pub(super) fn skip(&mut self, path: PathBuf, reason: SkipReason, bytes: u64) {
        let c = self.skipped.entry(reason).or_default();
        c.entries += 1;
        c.bytes += bytes;
        self.skipped_paths.push((path, reason));
    }

    /// Number of entries skipped for `reason`.
    pub fn skipped_count(&self, reason: SkipReason) -> usize {
        self.skipped.get(&reason).map_or(0, |c| c.entries)
    }

    /// Total number of skipped entries.
    pub fn total_skipped(&self) -> usize {
        self.skipped.values().map(|c| c.entries).sum()
    }
}

/// Formats a byte count with a binary unit (`1.5 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loaded {} file{} ({})",
            self.loaded_files,
            if self.loaded_files == 1 { "" } else { "s" },
            human_bytes(self.loaded_bytes)
        )?;
        if self.skipped.is_empty() {
            return write!(f, "; nothing skipped");
        }
        write!(f, "\nskipped {}:", self.total_skipped())?;
        let mut first = true;
        for (reason, c) in &self.skipped {
            write!(
                f,
                "{} {} {}",
                if first { "" } else { "," },
                c.entries,
                reason.label()
            )?;
            if *reason == SkipReason::TooLarge {
                write!(f, " (> {})", human_bytes(self.max_file_bytes))?;
            }
            first = false;
        }
        Ok(())
    }
}
