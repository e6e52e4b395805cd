//! Errors of the model functions: values with the offending numbers in them.

use core::fmt;

use super::config::ConfigError;

/// Which buffer a length error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    /// The parameter buffer (`num_params`).
    Params,
    /// The gradient buffer (`num_params`).
    Grads,
    /// The activation workspace (`activation_len`) or inference scratch (`infer_work_len`).
    Work,
    /// The KV cache (`kv_cache_len`).
    Cache,
    /// The logits output (`vocab_size`).
    Logits,
    /// The token ids (`batch·seq`).
    Tokens,
    /// The target ids (`batch·seq`).
    Targets,
}

/// What went wrong in a model call. Nothing is computed when one is returned
/// (buffers are untouched), except where a variant says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// The configuration itself is invalid.
    Config(ConfigError),
    /// `batch` or `seq` is zero.
    EmptyBatch {
        /// Sequences requested.
        batch: usize,
        /// Tokens per sequence requested.
        seq: usize,
    },
    /// `seq` exceeds the context length.
    SeqTooLong {
        /// Tokens per sequence requested.
        seq: usize,
        /// The context length.
        n_positions: usize,
    },
    /// A KV-cache position is beyond the context.
    PositionOutOfRange {
        /// The position requested.
        pos: usize,
        /// The context length.
        n_positions: usize,
    },
    /// A token id is not below `vocab_size`.
    TokenOutOfRange {
        /// Index in the token slice.
        index: usize,
        /// The id.
        token: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A target id is not below `vocab_size`.
    TargetOutOfRange {
        /// Index in the target slice.
        index: usize,
        /// The id.
        target: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A buffer that must have an exact length does not.
    BufferLength {
        /// Which buffer.
        buffer: Buffer,
        /// Required length.
        expected: usize,
        /// Length given.
        actual: usize,
    },
    /// A buffer is shorter than needed (longer is fine).
    BufferTooSmall {
        /// Which buffer.
        buffer: Buffer,
        /// Required length.
        needed: usize,
        /// Length given.
        actual: usize,
    },
    /// `batch·seq` makes a workspace length overflow `usize`.
    SizeOverflow {
        /// Sequences requested.
        batch: usize,
        /// Tokens per sequence requested.
        seq: usize,
    },
    /// `backward` was called on a workspace that holds no forward pass with
    /// targets (never run, run without targets, or already consumed by a
    /// backward pass, which overwrites the logits).
    NoForward,
}

impl From<ConfigError> for ModelError {
    fn from(e: ConfigError) -> Self {
        ModelError::Config(e)
    }
}

impl fmt::Display for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Buffer::Params => "parameter",
            Buffer::Grads => "gradient",
            Buffer::Work => "workspace",
            Buffer::Cache => "KV cache",
            Buffer::Logits => "logits",
            Buffer::Tokens => "token",
            Buffer::Targets => "target",
        })
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ModelError::Config(e) => write!(f, "invalid config: {e}"),
            ModelError::EmptyBatch { batch, seq } => {
                write!(f, "empty batch: batch {batch}, seq {seq}")
            }
            ModelError::SeqTooLong { seq, n_positions } => {
                write!(f, "sequence length {seq} exceeds the context {n_positions}")
            }
            ModelError::PositionOutOfRange { pos, n_positions } => {
                write!(f, "position {pos} is outside the context {n_positions}")
            }
            ModelError::TokenOutOfRange {
                index,
                token,
                vocab_size,
            } => {
                write!(
                    f,
                    "token {token} at index {index} is not below vocab_size {vocab_size}"
                )
            }
            ModelError::TargetOutOfRange {
                index,
                target,
                vocab_size,
            } => {
                write!(
                    f,
                    "target {target} at index {index} is not below vocab_size {vocab_size}"
                )
            }
            ModelError::BufferLength {
                buffer,
                expected,
                actual,
            } => {
                write!(
                    f,
                    "{buffer} buffer has {actual} elements, expected {expected}"
                )
            }
            ModelError::BufferTooSmall {
                buffer,
                needed,
                actual,
            } => {
                write!(
                    f,
                    "{buffer} buffer has {actual} elements, needs at least {needed}"
                )
            }
            ModelError::SizeOverflow { batch, seq } => {
                write!(f, "workspace for batch {batch} x seq {seq} overflows usize")
            }
            ModelError::NoForward => write!(
                f,
                "backward needs a forward pass with targets on the same workspace"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ModelError {}

/// `Err(BufferLength)` unless `actual == expected`.
pub(crate) fn exact(buffer: Buffer, expected: usize, actual: usize) -> Result<(), ModelError> {
    if actual == expected {
        Ok(())
    } else {
        Err(ModelError::BufferLength {
            buffer,
            expected,
            actual,
        })
    }
}

/// `Err(BufferTooSmall)` unless `actual >= needed`.
pub(crate) fn at_least(buffer: Buffer, needed: usize, actual: usize) -> Result<(), ModelError> {
    if actual >= needed {
        Ok(())
    } else {
        Err(ModelError::BufferTooSmall {
            buffer,
            needed,
            actual,
        })
    }
}
