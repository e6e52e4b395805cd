//! F32 safetensors files: writing (atomically) and validated reading.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};

use super::{read_file, CkptError};
use crate::fsutil::{fsync_dir, fsync_file, parent_dir, temp_sibling, FsError};

/// A borrowed tensor to write: `data.len()` must equal the product of
/// `shape`.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    /// Tensor name (e.g. `transformer.wte.weight`).
    pub name: &'a str,
    /// Row-major shape.
    pub shape: &'a [usize],
    /// Values in row-major order.
    pub data: &'a [f32],
}

impl<'a> TensorRef<'a> {
    /// Bundles a name, shape and data.
    pub fn new(name: &'a str, shape: &'a [usize], data: &'a [f32]) -> Self {
        TensorRef { name, shape, data }
    }
}

/// A tensor read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// Tensor name.
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

impl NamedTensor {
    /// Borrows this tensor for writing.
    pub fn as_ref(&self) -> TensorRef<'_> {
        TensorRef::new(&self.name, &self.shape, &self.data)
    }
}

struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        // safetensors is little-endian by definition. On a little-endian
        // host the values' memory already is the file's bytes: borrow it, so
        // writing a parameter-sized tensor (the optimizer's moments) does not
        // hold a second copy of it.
        if cfg!(target_endian = "little") {
            // SAFETY: every f32 is 4 initialised bytes and u8 has no
            // alignment requirement; the slice borrows `self.data`.
            return Cow::Borrowed(unsafe {
                std::slice::from_raw_parts(
                    self.data.as_ptr().cast::<u8>(),
                    std::mem::size_of_val(self.data),
                )
            });
        }
        // Elsewhere, converting explicitly keeps the file identical.
        let mut bytes = Vec::with_capacity(self.data.len() * 4);
        for v in self.data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Cow::Owned(bytes)
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

pub(super) fn check_tensors_to_write(tensors: &[TensorRef<'_>]) -> Result<(), CkptError> {
    let mut names = HashSet::with_capacity(tensors.len());
    for t in tensors {
        if !names.insert(t.name) {
            return Err(CkptError::InvalidInput {
                reason: format!("tensor name {:?} appears twice", t.name),
            });
        }
        let n = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(t.data.len()) {
            return Err(CkptError::InvalidInput {
                reason: format!(
                    "tensor {:?} has shape {:?} but {} values",
                    t.name,
                    t.shape,
                    t.data.len()
                ),
            });
        }
    }
    Ok(())
}

/// Serializes to `path` (created/truncated) and fsyncs it; not atomic.
pub(super) fn write_safetensors_plain(
    path: &Path,
    tensors: &[TensorRef<'_>],
    metadata: &[(&str, &str)],
) -> Result<(), CkptError> {
    check_tensors_to_write(tensors)?;
    let mut meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // transformers refuses safetensors files without format=pt.
    meta.insert("format".to_string(), "pt".to_string());
    let views = tensors.iter().map(|t| {
        (
            t.name,
            F32View {
                shape: t.shape,
                data: t.data,
            },
        )
    });
    safetensors::serialize_to_file(views, &Some(meta), path).map_err(|e| match e {
        SafeTensorError::IoError(io) => CkptError::Io(FsError::new("write", path, io)),
        other => CkptError::InvalidInput {
            reason: format!("safetensors serialization failed: {other}"),
        },
    })?;
    fsync_file(path)?;
    Ok(())
}

/// Writes F32 tensors to a safetensors file atomically (temporary sibling,
/// fsync, rename, fsync of the directory). The metadata always contains
/// `"format": "pt"` (required by transformers) plus `metadata`.
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorRef<'_>],
    metadata: &[(&str, &str)],
) -> Result<(), CkptError> {
    let tmp = temp_sibling(path);
    if let Err(e) = write_safetensors_plain(&tmp, tensors, metadata) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(FsError::new("rename into place", path, e).into());
    }
    fsync_dir(parent_dir(path))?;
    Ok(())
}

fn describe_st_error(e: &SafeTensorError, file_len: usize) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => {
            format!("file has {file_len} bytes, fewer than the 8-byte header length")
        }
        SafeTensorError::HeaderTooLarge => "declared header length is too large".to_string(),
        SafeTensorError::InvalidHeaderLength => format!(
            "declared header length runs past the end of the {file_len}-byte file (truncated?)"
        ),
        SafeTensorError::InvalidHeader => "header is not UTF-8".to_string(),
        SafeTensorError::InvalidHeaderStart | SafeTensorError::InvalidHeaderDeserialization => {
            "header is not a valid safetensors JSON header".to_string()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "tensor data does not exactly fill the file (truncated or padded)".to_string()
        }
        SafeTensorError::InvalidOffset(name) => format!("tensor {name:?} has invalid data offsets"),
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte length does not match its shape and dtype".to_string()
        }
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows".to_string(),
        other => other.to_string(),
    }
}

/// Reads an F32 safetensors file, in file order.
///
/// The whole file is read once; every length in the header is checked
/// against the actual file size (by the `safetensors` crate: offsets must be
/// contiguous and end exactly at the end of the file, each tensor's byte
/// length must equal its element count times the dtype size), so a hostile
/// header cannot cause an allocation beyond the file size. Only F32 tensors
/// are accepted.
pub fn read_safetensors(path: &Path) -> Result<Vec<NamedTensor>, CkptError> {
    let bytes = read_file(path)?;
    parse_safetensors(path, &bytes)
}

/// Parses safetensors bytes (see [`read_safetensors`]); `path` is only used
/// in error messages.
pub fn parse_safetensors(path: &Path, bytes: &[u8]) -> Result<Vec<NamedTensor>, CkptError> {
    let st_err = |e: SafeTensorError| CkptError::Safetensors {
        path: path.to_path_buf(),
        reason: describe_st_error(&e, bytes.len()),
    };
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(st_err)?;
    let st = SafeTensors::deserialize(bytes).map_err(st_err)?;
    let mut infos: Vec<(String, (usize, usize))> = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, info.data_offsets))
        .collect();
    infos.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = Vec::with_capacity(infos.len());
    for (name, _) in infos {
        let view = st.tensor(&name).map_err(st_err)?;
        if view.dtype() != Dtype::F32 {
            return Err(CkptError::Tensor {
                path: path.to_path_buf(),
                name,
                reason: format!("dtype {:?} is not supported (only F32)", view.dtype()),
            });
        }
        let shape = view.shape().to_vec();
        let data = view.data();
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n.and_then(|n| n.checked_mul(4)) != Some(data.len()) {
            return Err(CkptError::Tensor {
                path: path.to_path_buf(),
                name,
                reason: format!("shape {shape:?} does not match {} data bytes", data.len()),
            });
        }
        let values = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.push(NamedTensor {
            name,
            shape,
            data: values,
        });
    }
    Ok(out)
}
