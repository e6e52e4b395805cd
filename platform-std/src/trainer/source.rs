//! The executor's view of the corpus: work units over the token store.

use crate::data::{self, Split, TokenStore};
use crate::exec::UnitSource;
use crate::tokenizer::Tokenizer;

/// Training and evaluation units of a token store.
///
/// Unit `u` of step `s` holds sequences `u·micro_batch ..` of that step, whose
/// windows are a pure function of `(seed, s, sequence index)`: any worker
/// computes the same tokens for it, whatever the layout.
#[derive(Debug)]
pub struct CorpusSource {
    store: TokenStore,
    train: Split,
    /// Absolute starts of the evaluation windows (a multiple of
    /// `micro_batch` of them).
    eval_starts: Vec<usize>,
    seed: u64,
    micro_batch: usize,
    seq_len: usize,
}

impl CorpusSource {
    /// A source over `store`. `train` must hold at least one window (checked
    /// by the caller with [`Split::check`]); `eval_starts` is cut down to a
    /// whole number of units.
    pub fn new(
        store: TokenStore,
        train: Split,
        mut eval_starts: Vec<usize>,
        seed: u64,
        micro_batch: usize,
        seq_len: usize,
    ) -> Self {
        let whole = eval_starts.len() / micro_batch * micro_batch;
        eval_starts.truncate(whole);
        CorpusSource {
            store,
            train,
            eval_starts,
            seed,
            micro_batch,
            seq_len,
        }
    }

    /// Validation windows evaluated.
    pub fn eval_windows(&self) -> usize {
        self.eval_starts.len()
    }

    /// Bits per byte of text for each nat of mean evaluation loss: the
    /// target tokens of the evaluation windows over their bytes, over ln 2.
    /// `None` without windows or for the word tokenizer, whose decoding
    /// does not give the text back.
    pub fn bits_per_byte_per_nat(&self, tokenizer: &Tokenizer) -> Option<f64> {
        if matches!(tokenizer, Tokenizer::Word(_)) || self.eval_starts.is_empty() {
            return None;
        }
        let n = self.eval_starts.len() * self.seq_len;
        let (mut tokens, mut targets) = (vec![0u32; n], vec![0u32; n]);
        data::fill_windows(
            &self.store,
            &self.eval_starts,
            self.seq_len,
            &mut tokens,
            &mut targets,
        )
        .ok()?;
        let bytes = tokenizer.decode_bytes(&targets).ok()?.len();
        (bytes > 0).then(|| n as f64 / (bytes as f64 * std::f64::consts::LN_2))
    }
}

impl UnitSource for CorpusSource {
    fn fill_train(&self, step: u64, unit: usize, tokens: &mut [u32], targets: &mut [u32]) {
        let first = (unit * self.micro_batch) as u64;
        // The buffers and the split were checked when the run was set up, so
        // an error here is a bug; the executor turns the panic into an error.
        data::fill_unit(
            &self.store,
            self.train,
            self.seed,
            step,
            first,
            self.micro_batch,
            self.seq_len,
            tokens,
            targets,
        )
        .expect("training unit within the checked split");
    }

    fn eval_units(&self) -> usize {
        self.eval_starts.len() / self.micro_batch
    }

    fn fill_eval(&self, unit: usize, tokens: &mut [u32], targets: &mut [u32]) {
        let starts = &self.eval_starts[unit * self.micro_batch..(unit + 1) * self.micro_batch];
        data::fill_windows(&self.store, starts, self.seq_len, tokens, targets)
            .expect("evaluation windows within the store");
    }
}

/// A cheap 64-bit fingerprint of the corpus bytes (SplitMix64 over 8-byte
/// words, length mixed in), saved with each checkpoint so that a resumed run
/// refuses to continue on different data.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = data::mix64(bytes.len() as u64 ^ 0x636c_6c6d_6461_7461);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = data::mix64(h ^ w).wrapping_add(0x9e37_79b9_7f4a_7c15);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    data::mix64(h ^ u64::from_le_bytes(tail))
}
