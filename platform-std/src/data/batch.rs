//! Token storage, train/validation splits and deterministic batches.

use std::fmt;
use std::marker::PhantomData;

use memmap2::Mmap;

use super::DataError;

/// A token stream in its most compact form.
///
/// Cheap random access is all batching needs; the byte form is the raw text
/// (memory-mapped for loaded corpora), ids below 65 536 are stored as `u16`.
/// Char and word ids of a loaded corpus are memory-mapped from a spool file
/// (`MappedU16`, `MappedU32`); every form gives the same tokens for the same
/// ids.
pub enum TokenStore {
    /// Bytes of a memory-mapped file (byte tokenizer).
    Mapped(Mmap),
    /// Bytes in memory (byte tokenizer).
    Bytes(Vec<u8>),
    /// Ids of a vocabulary of at most 65 536 tokens.
    U16(Vec<u16>),
    /// Ids of a larger vocabulary.
    U32(Vec<u32>),
    /// Memory-mapped ids of a vocabulary of at most 65 536 tokens.
    MappedU16(MappedIds<u16>),
    /// Memory-mapped ids of a larger vocabulary.
    MappedU32(MappedIds<u32>),
}

/// Token ids of type `u16` or `u32` in a memory-mapped file, written by this
/// process (native-endian) and mapped read-only.
pub struct MappedIds<T> {
    map: Mmap,
    len: usize,
    _ids: PhantomData<T>,
}

/// Reinterprets the first `len` ids of the map. Only instantiated for `u16`
/// and `u32`.
fn ids_of<T: Copy>(map: &Mmap, len: usize) -> &[T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: `MappedIds::new` checked that the map starts at an address
    // aligned for `T` (maps are page-aligned) and holds at least `len` ids;
    // every bit pattern is a valid `u16`/`u32`; the map is read-only and
    // lives as long as the returned slice borrows it.
    unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<T>(), len) }
}

impl<T: Copy> MappedIds<T> {
    /// `len` ids at the start of `map`; `None` unless the map holds them and
    /// is aligned for `T`.
    pub(crate) fn new(map: Mmap, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let aligned = map.as_ptr().cast::<T>().is_aligned();
        (map.len() >= bytes && (aligned || len == 0)).then_some(MappedIds {
            map,
            len,
            _ids: PhantomData,
        })
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no ids.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl MappedIds<u16> {
    /// The ids.
    pub fn as_slice(&self) -> &[u16] {
        ids_of(&self.map, self.len)
    }
}

impl MappedIds<u32> {
    /// The ids.
    pub fn as_slice(&self) -> &[u32] {
        ids_of(&self.map, self.len)
    }
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            TokenStore::Mapped(_) => "Mapped",
            TokenStore::Bytes(_) => "Bytes",
            TokenStore::U16(_) => "U16",
            TokenStore::U32(_) => "U32",
            TokenStore::MappedU16(_) => "MappedU16",
            TokenStore::MappedU32(_) => "MappedU32",
        };
        write!(f, "TokenStore::{kind}(len {})", self.len())
    }
}

impl TokenStore {
    /// Stores `ids` as `u16` when `vocab_size <= 65536`, else as `u32`.
    /// Ids must be below `vocab_size` (true of any tokenizer output).
    pub fn from_ids(ids: Vec<u32>, vocab_size: usize) -> TokenStore {
        if vocab_size <= 1 << 16 && ids.iter().all(|&i| i < 1 << 16) {
            TokenStore::U16(ids.into_iter().map(|i| i as u16).collect())
        } else {
            TokenStore::U32(ids)
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        match self {
            TokenStore::Mapped(m) => m.len(),
            TokenStore::Bytes(v) => v.len(),
            TokenStore::U16(v) => v.len(),
            TokenStore::U32(v) => v.len(),
            TokenStore::MappedU16(m) => m.len(),
            TokenStore::MappedU32(m) => m.len(),
        }
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<u32> {
        match self {
            TokenStore::Mapped(m) => m.get(i).map(|&b| b as u32),
            TokenStore::Bytes(v) => v.get(i).map(|&b| b as u32),
            TokenStore::U16(v) => v.get(i).map(|&t| t as u32),
            TokenStore::U32(v) => v.get(i).copied(),
            TokenStore::MappedU16(m) => m.as_slice().get(i).map(|&t| t as u32),
            TokenStore::MappedU32(m) => m.as_slice().get(i).copied(),
        }
    }

    /// Copies tokens `start .. start + out.len()` into `out`. Returns `false`
    /// (and leaves `out` untouched) when the range is out of bounds.
    pub fn window(&self, start: usize, out: &mut [u32]) -> bool {
        let Some(end) = start.checked_add(out.len()) else {
            return false;
        };
        if end > self.len() {
            return false;
        }
        // One match per window, then a tight widening loop the compiler
        // vectorises.
        match self {
            TokenStore::Mapped(m) => widen(&m[start..end], out),
            TokenStore::Bytes(v) => widen(&v[start..end], out),
            TokenStore::U16(v) => widen(&v[start..end], out),
            TokenStore::U32(v) => out.copy_from_slice(&v[start..end]),
            TokenStore::MappedU16(m) => widen(&m.as_slice()[start..end], out),
            TokenStore::MappedU32(m) => out.copy_from_slice(&m.as_slice()[start..end]),
        }
        true
    }
}

fn widen<T: Copy + Into<u32>>(src: &[T], out: &mut [u32]) {
    for (o, &s) in out.iter_mut().zip(src) {
        *o = s.into();
    }
}

/// A contiguous part of a [`TokenStore`]: `start .. start + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// First token.
    pub start: usize,
    /// Number of tokens.
    pub len: usize,
}

impl Split {
    /// Errors with [`DataError::TooShort`] naming `part` unless the split
    /// holds at least one window (`seq_len + 1` tokens).
    pub fn check(&self, seq_len: usize, part: &'static str) -> Result<(), DataError> {
        check_len_of(self.len, seq_len, part)
    }
}

fn check_len_of(tokens: usize, seq_len: usize, part: &'static str) -> Result<(), DataError> {
    let needed = seq_len.saturating_add(1);
    if tokens < needed {
        return Err(DataError::TooShort {
            part,
            tokens,
            needed,
        });
    }
    Ok(())
}

/// Errors with [`DataError::TooShort`] unless `n_tokens` holds one window of
/// `seq_len` inputs plus the shifted target (`seq_len + 1` tokens).
pub fn check_len(n_tokens: usize, seq_len: usize) -> Result<(), DataError> {
    check_len_of(n_tokens, seq_len, "text")
}

/// Splits `n_tokens` into training and validation parts: the last
/// `floor(n_tokens * val_fraction)` tokens are validation. `val_fraction`
/// 0 gives no validation split (`None`).
pub fn split_train_val(
    n_tokens: usize,
    val_fraction: f64,
) -> Result<(Split, Option<Split>), DataError> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(DataError::InvalidValFraction {
            value: val_fraction,
        });
    }
    if val_fraction == 0.0 {
        return Ok((
            Split {
                start: 0,
                len: n_tokens,
            },
            None,
        ));
    }
    let n_val = ((n_tokens as f64) * val_fraction).floor() as usize;
    let n_val = n_val.min(n_tokens);
    let n_train = n_tokens - n_val;
    Ok((
        Split {
            start: 0,
            len: n_train,
        },
        Some(Split {
            start: n_train,
            len: n_val,
        }),
    ))
}

/// Version of the batch-selection hash. Any change to [`sequence_start`]'s
/// outputs must bump it (and the pinned values in the tests), because
/// resuming a run across versions would otherwise silently see other data.
pub const BATCH_HASH_VERSION: u32 = 1;

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 finalizer (Steele, Lea & Flood 2014): a bijective 64-bit
/// mixer with full avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Start (relative to the split) of sequence `seq_index` of optimizer step
/// `step`, for a split of `n_tokens` tokens and windows of `seq_len` inputs
/// (plus one target token).
///
/// Definition (version [`BATCH_HASH_VERSION`] = 1), with `γ =
/// 0x9e3779b97f4a7c15` and wrapping arithmetic:
///
/// ```text
/// h = mix64(seed + γ)
/// h = mix64(h ^ (step + 2γ))
/// h = mix64(h ^ (seq_index + 3γ))
/// count = n_tokens - seq_len          (number of valid starts, at least 1)
/// start = (h * count) >> 64           (128-bit product)
/// ```
///
/// It depends on nothing else, so the windows are the same for any thread
/// count or tree shape. Callers check `n_tokens > seq_len` first (see
/// [`Split::check`]); otherwise the result is 0.
pub fn sequence_start(
    seed: u64,
    step: u64,
    seq_index: u64,
    n_tokens: usize,
    seq_len: usize,
) -> usize {
    let count = n_tokens.saturating_sub(seq_len).max(1) as u64;
    let mut h = mix64(seed.wrapping_add(GOLDEN_GAMMA));
    h = mix64(h ^ step.wrapping_add(GOLDEN_GAMMA.wrapping_mul(2)));
    h = mix64(h ^ seq_index.wrapping_add(GOLDEN_GAMMA.wrapping_mul(3)));
    ((h as u128 * count as u128) >> 64) as usize
}

fn check_buffers(
    store: &TokenStore,
    split: Split,
    n_seqs: usize,
    seq_len: usize,
    tokens_out: &[u32],
    targets_out: &[u32],
) -> Result<(), DataError> {
    if seq_len == 0 {
        return Err(DataError::InvalidBatch {
            reason: "seq_len is 0".to_string(),
        });
    }
    let need = n_seqs
        .checked_mul(seq_len)
        .ok_or_else(|| DataError::InvalidBatch {
            reason: format!("{n_seqs} sequences of {seq_len} tokens overflow"),
        })?;
    if tokens_out.len() != need || targets_out.len() != need {
        return Err(DataError::InvalidBatch {
            reason: format!(
                "buffers hold {} inputs and {} targets, need {need} ({n_seqs} x {seq_len})",
                tokens_out.len(),
                targets_out.len()
            ),
        });
    }
    let in_store = matches!(split.start.checked_add(split.len), Some(end) if end <= store.len());
    if !in_store {
        return Err(DataError::InvalidBatch {
            reason: format!(
                "split {}..+{} exceeds the {} stored tokens",
                split.start,
                split.len,
                store.len()
            ),
        });
    }
    Ok(())
}

/// Fills one work unit: sequences `first_seq .. first_seq + n_seqs` of step
/// `step`. `tokens_out` and `targets_out` hold `n_seqs * seq_len` ids each;
/// the targets are the inputs shifted by one token. Allocates nothing.
#[allow(clippy::too_many_arguments)]
pub fn fill_unit(
    store: &TokenStore,
    split: Split,
    seed: u64,
    step: u64,
    first_seq: u64,
    n_seqs: usize,
    seq_len: usize,
    tokens_out: &mut [u32],
    targets_out: &mut [u32],
) -> Result<(), DataError> {
    check_buffers(store, split, n_seqs, seq_len, tokens_out, targets_out)?;
    split.check(seq_len, "training split")?;
    let rows = tokens_out
        .chunks_exact_mut(seq_len)
        .zip(targets_out.chunks_exact_mut(seq_len));
    for (i, (inp, tgt)) in rows.enumerate() {
        // Sequence indices are hash inputs: wrap like the hash does rather
        // than overflow (a panic in debug builds) for first_seq near u64::MAX.
        let seq = first_seq.wrapping_add(i as u64);
        let s = split.start + sequence_start(seed, step, seq, split.len, seq_len);
        // Both ranges lie inside the split, which lies inside the store
        // (checked above), so these cannot fail.
        let ok = store.window(s, inp) && store.window(s + 1, tgt);
        debug_assert!(ok);
    }
    Ok(())
}

/// Starts of the evaluation windows of `split`: the split is cut into
/// non-overlapping windows (`(len - 1) / seq_len` of them) and at most
/// `max_windows` of those are taken, evenly spaced, so the evaluation covers
/// the whole split and is the same at every evaluation.
pub fn eval_window_starts(split: Split, seq_len: usize, max_windows: usize) -> Vec<usize> {
    if seq_len == 0 || split.len <= seq_len {
        return Vec::new();
    }
    let available = (split.len - 1) / seq_len;
    let take = available.min(max_windows);
    (0..take)
        .map(|k| {
            // Evenly spaced indices in 0..available (exact integer maths).
            let idx = (k as u128 * available as u128 / take as u128) as usize;
            split.start + idx * seq_len
        })
        .collect()
}

/// Fills windows at absolute `starts` (e.g. from [`eval_window_starts`]):
/// `tokens_out`/`targets_out` hold `starts.len() * seq_len` ids each.
pub fn fill_windows(
    store: &TokenStore,
    starts: &[usize],
    seq_len: usize,
    tokens_out: &mut [u32],
    targets_out: &mut [u32],
) -> Result<(), DataError> {
    let whole = Split {
        start: 0,
        len: store.len(),
    };
    check_buffers(store, whole, starts.len(), seq_len, tokens_out, targets_out)?;
    let rows = tokens_out
        .chunks_exact_mut(seq_len)
        .zip(targets_out.chunks_exact_mut(seq_len));
    for (&s, (inp, tgt)) in starts.iter().zip(rows) {
        if !(store.window(s, inp) && store.window(s + 1, tgt)) {
            return Err(DataError::InvalidBatch {
                reason: format!(
                    "window at {s} of {seq_len}+1 tokens exceeds the {} stored tokens",
                    store.len()
                ),
            });
        }
    }
    Ok(())
}
