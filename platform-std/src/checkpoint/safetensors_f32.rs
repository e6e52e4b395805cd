//! F32 safetensors files: writing (atomically) and validated reading.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};

use super::CkptError;
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
    let file = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CkptError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            CkptError::Io(FsError::new("read", path, e))
        }
    })?;
    // Mapped, not read: a 124M-parameter model is 500 MB, and only the f32
    // copy needs to be in memory. Safety: cllm replaces model files by
    // renaming, never rewrites them in place; another program truncating
    // the file while it is read is outside what a reader can guard against.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| CkptError::Io(FsError::new("map", path, e)))?;
    parse_safetensors(path, &map)
}

/// IEEE half precision to f32 (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        // Subnormal: frac · 2^-24, exact in f32.
        (0, f) => {
            let v = f as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, f) => sign | 0x7fc0_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
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
        let width = match view.dtype() {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(CkptError::Tensor {
                    path: path.to_path_buf(),
                    name,
                    reason: format!("dtype {other:?} is not supported (F32, F16 or BF16)"),
                })
            }
        };
        let shape = view.shape().to_vec();
        let data = view.data();
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n.and_then(|n| n.checked_mul(width)) != Some(data.len()) {
            return Err(CkptError::Tensor {
                path: path.to_path_buf(),
                name,
                reason: format!("shape {shape:?} does not match {} data bytes", data.len()),
            });
        }
        let values = match view.dtype() {
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            _ => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        out.push(NamedTensor {
            name,
            shape,
            data: values,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn f16_converts_exactly() {
        use super::f16_to_f32;
        for (h, want) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x0001, 2f32.powi(-24)),
            (0x8001, -(2f32.powi(-24))),
            (0x03ff, 1023.0 * 2f32.powi(-24)),
            (0x7bff, 65504.0),
            (0x7c00, f32::INFINITY),
            (0x0000, 0.0),
        ] {
            assert_eq!(f16_to_f32(h).to_bits(), want.to_bits(), "{h:#06x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
