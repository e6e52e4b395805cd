//! The state the workers share, and each worker's scratch.
//!
//! [`Shared`] holds the model's buffers (parameters, optimizer moments,
//! reduction slots, accumulators) and what coordinates a job (the control
//! block, barrier, cursors, first error). Its buffers are [`Buf`]s, cells
//! any worker may read or write; the step protocol (disjoint segments,
//! phases separated by barriers) keeps two workers off the same range at
//! once. [`Local`] is one worker's scratch, allocated once when it starts.

use std::cell::UnsafeCell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use cllm_core::accumulate::Accumulator;
use cllm_core::model::GptConfig;
use cllm_core::reduce::{Segments, SpinBarrier};

use super::pool::{Control, Yield};
use super::{ExecConfig, ExecError, UnitSource};

/// A buffer shared by the workers. Access is coordinated by the step
/// protocol (disjoint segments, phases separated by barriers), which is what
/// makes the `Sync` impl sound.
pub(super) struct Buf<T> {
    cells: Box<[UnsafeCell<T>]>,
}

unsafe impl<T: Send> Sync for Buf<T> {}

impl<T> Buf<T> {
    pub(super) fn new(len: usize, mut make: impl FnMut() -> T) -> Self {
        Self {
            cells: (0..len).map(|_| UnsafeCell::new(make())).collect(),
        }
    }
    /// Takes over `v`'s allocation (no copy).
    pub(super) fn from_vec(v: Vec<T>) -> Self {
        let raw = Box::into_raw(v.into_boxed_slice()) as *mut [UnsafeCell<T>];
        // SAFETY: UnsafeCell<T> is repr(transparent) over T, so the slice
        // has the same layout and the allocation is freed with it.
        Self {
            cells: unsafe { Box::from_raw(raw) },
        }
    }
    /// Gives the allocation back as a vector (no copy).
    pub(super) fn into_vec(self) -> Vec<T> {
        let raw = Box::into_raw(self.cells) as *mut [T];
        // SAFETY: as in `from_vec`, the other way round.
        unsafe { Box::from_raw(raw) }.into_vec()
    }
    pub(super) fn len(&self) -> usize {
        self.cells.len()
    }
    /// # Safety
    /// No one writes `r` while the returned slice lives.
    pub(super) unsafe fn get(&self, r: std::ops::Range<usize>) -> &[T] {
        let cells = &self.cells[r];
        // SAFETY: UnsafeCell<T> has the layout of T; the caller excludes writers.
        unsafe { std::slice::from_raw_parts(cells.as_ptr() as *const T, cells.len()) }
    }
    /// # Safety
    /// No one else reads or writes `r` while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn get_mut(&self, r: std::ops::Range<usize>) -> &mut [T] {
        let cells = &self.cells[r];
        // SAFETY: as above, and the caller guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(UnsafeCell::raw_get(cells.as_ptr()), cells.len()) }
    }
    /// # Safety
    /// As [`Buf::get`], for the whole buffer.
    pub(super) unsafe fn all(&self) -> &[T] {
        unsafe { self.get(0..self.len()) }
    }
    /// # Safety
    /// As [`Buf::get_mut`], for the whole buffer.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn all_mut(&self) -> &mut [T] {
        unsafe { self.get_mut(0..self.len()) }
    }
}

impl Buf<f32> {
    /// A zeroed buffer whose pages the OS provides on first touch, so a
    /// buffer a run never writes (SGD's second moment, say) takes no memory.
    pub(super) fn zeros(len: usize) -> Self {
        Self::from_vec(vec![0.0; len])
    }
}

/// A half-open index range that is `Copy` (unlike `Range`), so jobs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) start: usize,
    pub(super) end: usize,
}

impl Span {
    pub(super) fn of(r: Range<usize>) -> Self {
        Span {
            start: r.start,
            end: r.end,
        }
    }
    pub(super) fn len(self) -> usize {
        self.end - self.start
    }
}

/// What the owner of a hierarchy and its workers share (one per hierarchy).
pub(super) struct Shared<A: Accumulator, K> {
    pub(super) model: GptConfig,
    pub(super) cfg: ExecConfig,
    pub(super) acc: A,
    pub(super) kernels: K,
    pub(super) source: Arc<dyn UnitSource>,
    pub(super) segments: Segments,
    /// Units of worker `i` in the current job: `owned[i]..owned[i+1]`
    /// (written by the owner while the workers are parked).
    pub(super) owned: Buf<usize>,

    pub(super) params: Buf<f32>,
    /// The elements of the parameter vector whose optimizer state this
    /// hierarchy holds (`m`, `v` cover exactly these): all of them, or one
    /// rank's shard (ZeRO stage 1).
    pub(super) state: std::ops::Range<usize>,
    pub(super) m: Buf<f32>,
    pub(super) v: Buf<f32>,
    /// f32 mode: the FoldPlan's physical buffers; associative mode: the
    /// workers' unit gradient buffers. `slots[GRAD]` doubles as the gradient
    /// buffer (see [`GRAD`](super::reduce::GRAD)), so there is no separate one.
    pub(super) slots: Vec<Buf<f32>>,
    /// Associative mode: one accumulator per worker.
    pub(super) accs: Vec<Buf<A::Cell>>,
    /// Associative mode: unit gradient buffers per worker (`slots[id·k..]`).
    pub(super) per_worker: usize,
    /// Associative mode, per worker: unit buffers not yet added to its
    /// accumulator, and whether the accumulator holds anything this step.
    pub(super) pending: Buf<usize>,
    pub(super) flushed: Buf<bool>,
    pub(super) seg_norms: Buf<f64>,
    /// Per worker: where its time in the last training job went.
    pub(super) phases: Buf<super::PhaseTimes>,
    pub(super) unit_losses: Buf<f32>,
    pub(super) eval_losses: Buf<f32>,

    pub(super) ctl: UnsafeCell<Control>,
    pub(super) generation: AtomicU64,
    pub(super) done: AtomicUsize,
    pub(super) barrier: SpinBarrier<Yield>,
    pub(super) cursors: Vec<AtomicUsize>,
    pub(super) eval_cursor: AtomicUsize,
    /// f32 mode: the next unit of the step's fold plan to hand out.
    pub(super) fold_ticket: AtomicUsize,
    pub(super) error: Mutex<Option<ExecError>>,
    pub(super) retried: AtomicUsize,
    pub(super) stolen: AtomicUsize,
    /// Benchmark knob (`CLLM_NO_STEAL=1`): workers run only their own
    /// units, to measure what stealing gains when one thread is slowed.
    pub(super) no_steal: bool,
    /// Elements of each worker's activation workspace ([`work_len`](super::work_len)).
    pub(super) work_len: usize,
    pub(super) injected: AtomicUsize,
    /// Reduce segments while backward runs ([`stream`](super::stream)).
    pub(super) stream: AtomicBool,
    /// Streaming: per f32 slot (or, associative, per worker) the first
    /// segment of its unit's gradient that is final, tagged with the round.
    pub(super) ready: Vec<AtomicU64>,
    /// Streaming, per worker: every segment it owns from this one up is
    /// reduced (0 once all are), for an owner that takes the finished part
    /// of a partial job while it runs (reset by that owner).
    pub(super) reduced: Vec<AtomicUsize>,
}

// SAFETY: `ctl` is written only while all workers are parked (see Control).
unsafe impl<A: Accumulator, K: Sync> Sync for Shared<A, K> {}

/// Per-worker scratch, allocated once when the worker starts.
pub(super) struct Local {
    pub(super) work: Vec<f32>,
    pub(super) tokens: Vec<u32>,
    pub(super) targets: Vec<u32>,
    /// Streaming rounds this worker has run: every worker runs the same
    /// rounds, so the count names a round for `Shared::ready`.
    pub(super) tag: u32,
}
