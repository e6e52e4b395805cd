//! `metrics.jsonl`: one JSON object per logged step.
//!
//! Each record is written with a single `write` and flushed, so a kill can
//! at worst leave a partial last line; [`MetricsWriter::resume`] drops it,
//! together with every record past the step being resumed, so the file
//! always describes exactly the training that the weights went through.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::fsutil::{write_atomic, FsError};

/// File name of the metrics log inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One logged step. Non-finite numbers (a diverged loss) are written as
/// JSON `null` and read back as NaN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    /// Optimizer steps completed.
    pub step: u64,
    /// Training loss of this step's batch.
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    /// Validation loss, when evaluated at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// The validation loss in bits per byte of text (byte, char and bpe
    /// tokenizers), so that runs with different tokenizers compare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bits_per_byte: Option<f64>,
    /// Learning rate used.
    #[serde(deserialize_with = "nan_if_null")]
    pub lr: f64,
    /// Gradient global norm (before clipping).
    #[serde(deserialize_with = "nan_if_null")]
    pub grad_norm: f64,
    /// Training throughput.
    #[serde(deserialize_with = "nan_if_null")]
    pub tokens_per_s: f64,
    /// Training wall time so far, seconds.
    #[serde(deserialize_with = "nan_if_null")]
    pub elapsed_s: f64,
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Metrics log errors.
#[derive(Debug)]
pub enum MetricsError {
    /// Reading or writing failed.
    Io(FsError),
    /// A complete line is not a metrics record.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        reason: String,
    },
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::Io(e) => write!(f, "{e}"),
            MetricsError::Corrupt { path, line, reason } => write!(
                f,
                "{} line {line} is not a metrics record: {reason}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for MetricsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MetricsError::Io(e) => Some(e),
            MetricsError::Corrupt { .. } => None,
        }
    }
}

impl From<FsError> for MetricsError {
    fn from(e: FsError) -> Self {
        MetricsError::Io(e)
    }
}

/// Parses metrics text. Returns the records with their raw lines. A final
/// line without its newline is an interrupted write and is dropped; any
/// other unparsable line is an error.
fn parse_lines<'t>(
    path: &Path,
    text: &'t str,
) -> Result<Vec<(MetricsRecord, &'t str)>, MetricsError> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut out = Vec::new();
    for (i, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec: MetricsRecord = serde_json::from_str(line).map_err(|e| MetricsError::Corrupt {
            path: path.to_path_buf(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        out.push((rec, line));
    }
    Ok(out)
}

fn read_text(path: &Path) -> Result<Option<String>, MetricsError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new("read", path, e).into()),
    }
}

/// Reads every complete record of a metrics file (missing file: none).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>, MetricsError> {
    let Some(text) = read_text(path)? else {
        return Ok(Vec::new());
    };
    Ok(parse_lines(path, &text)?
        .into_iter()
        .map(|(r, _)| r)
        .collect())
}

/// Appends records to `DIR/metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    fn open_append(path: PathBuf) -> Result<Self, MetricsError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| FsError::new("open for appending", &path, e))?;
        Ok(MetricsWriter { path, file })
    }

    /// Starts a fresh log in `dir`, replacing any previous one.
    pub fn create(dir: &Path) -> Result<Self, MetricsError> {
        let path = dir.join(METRICS_FILE);
        write_atomic(&path, b"")?;
        Self::open_append(path)
    }

    /// Continues the log in `dir` after resuming at `step`: records with a
    /// larger step and a partial last line are removed (the file is
    /// rewritten atomically, kept lines byte for byte). Returns the writer
    /// and the kept records (e.g. for the plot).
    pub fn resume(dir: &Path, step: u64) -> Result<(Self, Vec<MetricsRecord>), MetricsError> {
        let path = dir.join(METRICS_FILE);
        let Some(text) = read_text(&path)? else {
            return Ok((Self::create(dir)?, Vec::new()));
        };
        let parsed = parse_lines(&path, &text)?;
        let mut kept_text = String::new();
        let mut kept = Vec::new();
        for (rec, line) in parsed {
            if rec.step <= step {
                kept_text.push_str(line);
                kept_text.push('\n');
                kept.push(rec);
            }
        }
        if kept_text != text {
            write_atomic(&path, kept_text.as_bytes())?;
        }
        Ok((Self::open_append(path)?, kept))
    }

    /// Appends one record and flushes it to the OS (not fsynced: losing the
    /// last records in a power cut is harmless, resume trims to the
    /// checkpoint anyway).
    pub fn append(&mut self, rec: &MetricsRecord) -> Result<(), MetricsError> {
        let mut line = serde_json::to_string(rec).expect("a metrics record always serializes");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| FsError::new("append to", &self.path, e).into())
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
