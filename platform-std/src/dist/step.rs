//! One training step spread over ranks: compute this rank's units, reduce
//! the partial sums across ranks by segment, finish and update, exchange
//! parameters.
//!
//! * [`Reduction::ScatterGather`] (default): the partial sums are
//!   reduce-scattered by segment block, each rank finishes and updates the
//!   segments it owns (the optimizer state is sharded: a rank only keeps the
//!   moments of its own segments current), the per-segment norms are
//!   all-gathered so every rank clips with the same global norm, and the
//!   updated parameters are all-gathered.
//! * [`Reduction::AllReduce`]: the partial sums are all-reduced and every
//!   rank finishes and updates the whole vector (replicated optimizer state).
//!
//! Fixed and exact accumulators cross ranks as integers ([`super::wire`]),
//! so the result is bit-identical to `Hierarchy::train_step` in one process
//! for every rank count, thread count and reduction. f32 by default
//! ([`F32Order::Canonical`]) sends the value of every subtree of the split
//! level apart and the owner folds them in the tree's order: also
//! bit-identical to one process. [`F32Order::Rank`] sends one partial sum
//! per rank, added in rank order: the bits are a function of (shape, units,
//! ranks), independent of threads and of the reduction, and equal to the
//! single-process result for one rank.

use std::fmt;
use std::time::Instant;

use crate::exec::{ExecError, Hierarchy, UpdateSettings};
use cllm_core::accumulate::{AccError, Accumulator, ExactAcc, ExactCell, F32Acc, FixedAcc};
use cllm_core::kernels::Kernels;

use super::layout::RankLayout;
use super::wire::{ExactWindow, FixedWire};
use super::{Collectives, CountOverflow};

/// How gradients meet across ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Reduce-scatter by segment, sharded update, all-gather of parameters.
    ScatterGather,
    /// All-reduce of the gradient, replicated update.
    AllReduce,
}

impl Reduction {
    /// Every reduction, in `--reduce`'s order.
    pub const ALL: [Reduction; 2] = [Reduction::ScatterGather, Reduction::AllReduce];

    /// The `--reduce` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Reduction::ScatterGather => "scatter-gather",
            Reduction::AllReduce => "allreduce",
        }
    }
}

/// The value of `all` whose `name` is `s`, or an error listing the names.
fn parse_named<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
    s: &str,
) -> Result<T, String> {
    all.iter().copied().find(|&v| name(v) == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|&v| name(v)).collect();
        format!("unknown {what} {s:?} ({})", names.join(" or "))
    })
}

impl std::str::FromStr for Reduction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named(&Reduction::ALL, Reduction::name, "reduction", s)
    }
}

/// In which order f32 partial sums from different ranks are added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F32Order {
    /// The single-process tree's order: every split-level subtree's value
    /// crosses apart and the owner folds them as one process would, so the
    /// bits are the same on any number of ranks (up to `b^ℓ / R` times the
    /// traffic of [`F32Order::Rank`], and one `compute_partial` per subtree).
    Canonical,
    /// One partial sum per rank, added in rank order: less traffic, but the
    /// bits depend on the rank count (not on threads or the reduction).
    Rank,
}

impl F32Order {
    /// Every order, in `--f32-order`'s order.
    pub const ALL: [F32Order; 2] = [F32Order::Canonical, F32Order::Rank];

    /// The `--f32-order` spelling.
    pub fn name(self) -> &'static str {
        match self {
            F32Order::Canonical => "canonical",
            F32Order::Rank => "rank",
        }
    }
}

impl std::str::FromStr for F32Order {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named(&F32Order::ALL, F32Order::name, "f32 order", s)
    }
}

/// How a distributed step runs (execution only: with exact or fixed
/// accumulators, and with f32 in [`F32Order::Canonical`], the bits do not
/// depend on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DistSettings {
    /// How gradients meet across ranks.
    pub reduction: Reduction,
    /// How f32 partial sums are combined across ranks.
    pub f32_order: F32Order,
    /// Measurement aid: wait at a barrier before the exchange, so that
    /// waiting for the slowest rank is timed apart from the exchange itself.
    /// The trainer then runs this step on one rank too (instead of the
    /// executor's own), so that one-rank figures have the same phases.
    pub sync_timing: bool,
    /// Send each piece of the gradient (`overlap_bucket` segments) as
    /// soon as this rank's backward has finished it, while backward goes on
    /// (fixed and exact accumulators; the bits are the same).
    pub overlap: bool,
    /// Segments per piece of an overlapped reduction ([`OVERLAP_BUCKET`]
    /// by default).
    pub overlap_bucket: usize,
}

impl Default for DistSettings {
    fn default() -> Self {
        DistSettings {
            reduction: Reduction::ScatterGather,
            f32_order: F32Order::Canonical,
            sync_timing: false,
            overlap: false,
            overlap_bucket: OVERLAP_BUCKET,
        }
    }
}

/// Segments per piece of an overlapped reduction by default: 64 segments, 1 MiB of
/// f32 gradient (about 2–3 MiB on the wire with exact lanes), like DDP's
/// default bucket order of magnitude: large enough that a collective's
/// latency is paid rarely, small enough to start early.
pub const OVERLAP_BUCKET: usize = 64;

/// Why a distributed step failed. Any of these leaves the ranks out of step,
/// so the caller ends the job.
#[derive(Debug, Clone, PartialEq)]
pub enum DistError {
    /// The local executor failed.
    Exec(ExecError),
    /// The cross-rank sum left the accumulator's range (element index).
    Accumulate(AccError),
    /// A collective's count overflowed.
    Count(CountOverflow),
    /// This accumulator cannot cross ranks (its name).
    Unsupported(&'static str),
    /// This accumulator cannot overlap its reduction with backward.
    NoOverlap,
}

impl fmt::Display for DistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DistError::Exec(e) => write!(f, "{e}"),
            DistError::Accumulate(e) => write!(f, "cross-rank gradient reduction failed: {e}"),
            DistError::Count(e) => write!(f, "{e}"),
            DistError::Unsupported(acc) => write!(
                f,
                "the {acc} accumulator cannot cross ranks; use exact, fixed or f32 with more \
                 than one rank"
            ),
            DistError::NoOverlap => write!(
                f,
                "--overlap needs the fixed or exact accumulator (f32 and bigfloat reduce after \
                 backward); drop --overlap or pick --accumulator exact"
            ),
        }
    }
}

impl std::error::Error for DistError {}

impl From<ExecError> for DistError {
    fn from(e: ExecError) -> Self {
        DistError::Exec(e)
    }
}

impl From<CountOverflow> for DistError {
    fn from(e: CountOverflow) -> Self {
        DistError::Count(e)
    }
}

/// Reusable buffers of the reduction (allocated once, grown as needed).
#[derive(Default)]
pub struct Scratch {
    send: Vec<i64>,
    recv: Vec<i64>,
    send_f32: Vec<f32>,
    recv_f32: Vec<f32>,
    norms: Vec<f64>,
    lens: Vec<usize>,
    losses: Vec<f32>,
    params: Vec<f32>,
    /// f32: where each sphere's value of the level being folded lives.
    folds: Vec<Option<usize>>,
}

fn sized<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    if v.len() < n {
        v.resize(n, T::default());
    }
    &mut v[..n]
}

/// An accumulator whose partial sums can be combined across ranks.
pub trait CrossRank: Accumulator + Send + Sized + 'static
where
    Self::Cell: 'static,
{
    /// This rank's share of the step: its block of leaves, summed into the
    /// merged cells (f32: the gradient buffer) by `compute_partial`.
    fn compute<K: Kernels<f32> + Send + 'static>(
        h: &mut Hierarchy<Self, K>,
        layout: &RankLayout,
        rank: usize,
        step: u64,
        _settings: DistSettings,
        _scratch: &mut Scratch,
    ) -> Result<(), DistError> {
        h.compute_partial(step, layout.leaves(rank))?;
        Ok(())
    }

    /// This rank's share of the step and the cross-rank reduction at once
    /// ([`DistSettings::overlap`]): each piece of the partial sum crosses as
    /// soon as it is final. Returns the bytes per element that crossed and
    /// the seconds spent communicating (inside the computation's time).
    fn compute_overlapped<K: Kernels<f32> + Send + 'static>(
        _h: &mut Hierarchy<Self, K>,
        _net: &mut dyn Collectives,
        _layout: &RankLayout,
        _settings: DistSettings,
        _step: u64,
        _scratch: &mut Scratch,
    ) -> Result<(usize, f64), DistError> {
        Err(DistError::NoOverlap)
    }

    /// After every rank's `compute_partial`: make this rank's merged cells
    /// (f32: gradient buffer) hold the sum over all ranks for the elements of
    /// its owned segments (`ScatterGather`) or for all elements
    /// (`AllReduce`). Returns the bytes per element that crossed (the
    /// agreed wire width).
    fn cross_reduce<K: Kernels<f32> + Send + 'static>(
        h: &mut Hierarchy<Self, K>,
        net: &mut dyn Collectives,
        layout: &RankLayout,
        settings: DistSettings,
        scratch: &mut Scratch,
    ) -> Result<usize, DistError>;
}

/// Integer cells with a lane encoding agreed per step.
trait IntWire: Accumulator {
    type Wire: Copy + Send + Sync;
    fn need(cells: &[Self::Cell]) -> [i64; 2];
    fn agree(max_need: [i64; 2], ranks: usize) -> Self::Wire;
    fn lanes(w: Self::Wire) -> usize;
    fn encode(w: Self::Wire, cells: &[Self::Cell], out: &mut [i64]);
    fn decode(w: Self::Wire, lanes: &[i64], out: &mut [Self::Cell]) -> Result<(), AccError>;
}

impl IntWire for ExactAcc {
    type Wire = ExactWindow;
    fn need(cells: &[ExactCell]) -> [i64; 2] {
        ExactWindow::need(cells)
    }
    fn agree(max_need: [i64; 2], _ranks: usize) -> ExactWindow {
        ExactWindow::agree(max_need)
    }
    fn lanes(w: ExactWindow) -> usize {
        w.lanes()
    }
    fn encode(w: ExactWindow, cells: &[ExactCell], out: &mut [i64]) {
        w.encode(cells, out)
    }
    fn decode(w: ExactWindow, lanes: &[i64], out: &mut [ExactCell]) -> Result<(), AccError> {
        w.decode(lanes, out)
    }
}

impl IntWire for FixedAcc {
    type Wire = FixedWire;
    fn need(cells: &[i64]) -> [i64; 2] {
        [FixedWire::need(cells), 0]
    }
    fn agree(max_need: [i64; 2], ranks: usize) -> FixedWire {
        FixedWire::agree(max_need[0], ranks)
    }
    fn lanes(w: FixedWire) -> usize {
        w.lanes()
    }
    fn encode(w: FixedWire, cells: &[i64], out: &mut [i64]) {
        w.encode(cells, out)
    }
    fn decode(w: FixedWire, lanes: &[i64], out: &mut [i64]) -> Result<(), AccError> {
        w.decode(lanes, out)
    }
}

/// Below this many cells per thread, spawning costs more than it saves.
const PAR_MIN_CELLS: usize = 1 << 15;

/// Contiguous chunks of `n` items for up to `threads` threads.
fn chunk_len(n: usize, threads: usize) -> usize {
    let t = threads.min(n / PAR_MIN_CELLS).max(1);
    n.div_ceil(t).max(1)
}

/// [`IntWire::need`] over the cells, on up to `threads` threads (the
/// executor's workers are parked meanwhile, so their cores are free).
fn par_need<A: IntWire>(cells: &[A::Cell], threads: usize) -> [i64; 2] {
    let c = chunk_len(cells.len(), threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = cells
            .chunks(c)
            .map(|ch| s.spawn(move || A::need(ch)))
            .collect();
        parts.into_iter().fold([0, 0], |m, p| {
            let p = p.join().expect("need() does not panic");
            [m[0].max(p[0]), m[1].max(p[1])]
        })
    })
}

fn par_encode<A: IntWire>(w: A::Wire, cells: &[A::Cell], out: &mut [i64], threads: usize) {
    let lanes = A::lanes(w);
    let c = chunk_len(cells.len(), threads);
    std::thread::scope(|s| {
        for (ch, o) in cells.chunks(c).zip(out.chunks_mut(c * lanes)) {
            s.spawn(move || A::encode(w, ch, o));
        }
    })
}

fn par_decode<A: IntWire>(
    w: A::Wire,
    lanes: &[i64],
    out: &mut [A::Cell],
    threads: usize,
) -> Result<(), AccError> {
    let n = A::lanes(w);
    let c = chunk_len(out.len(), threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = out
            .chunks_mut(c)
            .zip(lanes.chunks(c * n))
            .enumerate()
            .map(|(k, (o, l))| s.spawn(move || A::decode(w, l, o).map_err(|e| e.offset(k * c))))
            .collect();
        // The first failing chunk has the lowest failing index.
        parts
            .into_iter()
            .map(|p| p.join().expect("decode() does not panic"))
            .collect::<Result<Vec<()>, AccError>>()
            .map(|_| ())
    })
}

fn int_cross_reduce<A: IntWire + Send + 'static, K: Kernels<f32> + Send + 'static>(
    h: &mut Hierarchy<A, K>,
    net: &mut dyn Collectives,
    layout: &RankLayout,
    mode: Reduction,
    sc: &mut Scratch,
) -> Result<usize, DistError>
where
    A::Cell: 'static,
{
    let ranks = net.size();
    if ranks == 1 {
        // The merged cells already are the total.
        return Ok(0);
    }
    let threads = h.config().threads;
    // One tiny MAX-reduction fixes the lanes every rank uses this step.
    let need = par_need::<A>(h.merged_cells(), threads);
    let mut max = [0i64; 2];
    net.max_i64(&need, &mut max);
    let wire = A::agree([max[0], max[1]], ranks);
    let lanes = A::lanes(wire);
    match mode {
        Reduction::AllReduce => {
            let n = h.merged_cells().len() * lanes;
            par_encode::<A>(wire, h.merged_cells(), sized(&mut sc.send, n), threads);
            net.sum_all_i64(&sc.send[..n], sized(&mut sc.recv, n))?;
            par_decode::<A>(wire, &sc.recv[..n], h.merged_cells_mut(), threads)
                .map_err(DistError::Accumulate)?;
        }
        Reduction::ScatterGather => {
            // Owned blocks are contiguous and in rank order, so the lanes
            // of all cells in parameter order are the send buffer.
            let n = h.merged_cells().len() * lanes;
            par_encode::<A>(wire, h.merged_cells(), sized(&mut sc.send, n), threads);
            let mine = layout.owned_elements(net.rank());
            sc.lens.clear();
            sc.lens
                .extend(layout.element_lens().iter().map(|&e| e * lanes));
            net.sum_scatter_i64(
                &sc.send[..n],
                &sc.lens,
                sized(&mut sc.recv, mine.len() * lanes),
            )?;
            let got = &sc.recv[..mine.len() * lanes];
            par_decode::<A>(wire, got, &mut h.merged_cells_mut()[mine.clone()], threads)
                .map_err(|e| DistError::Accumulate(e.offset(mine.start)))?;
        }
    }
    Ok(8 * lanes)
}

/// [`CrossRank::compute_overlapped`] for integer wires: per piece, the lanes
/// are agreed (a tiny MAX-reduction), the piece is encoded and summed
/// across ranks (all-reduce, or reduce-scatter into each owner's part of
/// the piece), and decoded in place, while the workers go on with backward.
/// The sums are exact, so the bits are those of [`int_cross_reduce`].
fn int_overlapped<A: IntWire + Send + 'static, K: Kernels<f32> + Send + 'static>(
    h: &mut Hierarchy<A, K>,
    net: &mut dyn Collectives,
    layout: &RankLayout,
    settings: DistSettings,
    step: u64,
    sc: &mut Scratch,
) -> Result<(usize, f64), DistError>
where
    A::Cell: 'static,
{
    let (rank, ranks, mode) = (net.rank(), net.size(), settings.reduction);
    let (mut err, mut lanes_max, mut comm_s) = (None, 0, 0.0);
    let leaves = layout.leaves(rank);
    let mut piece = |r: std::ops::Range<usize>, cells: &mut [A::Cell]| {
        if ranks == 1 || err.is_some() {
            return;
        }
        let t0 = Instant::now();
        let mut max = [0i64; 2];
        net.max_i64(&A::need(cells), &mut max);
        let wire = A::agree(max, ranks);
        let lanes = A::lanes(wire);
        lanes_max = lanes_max.max(lanes);
        let n = cells.len() * lanes;
        A::encode(wire, cells, sized(&mut sc.send, n));
        let clip =
            |e: std::ops::Range<usize>| e.start.clamp(r.start, r.end)..e.end.clamp(r.start, r.end);
        let r2 = match mode {
            Reduction::AllReduce => net
                .sum_all_i64(&sc.send[..n], sized(&mut sc.recv, n))
                .map_err(DistError::from)
                .and_then(|()| {
                    A::decode(wire, &sc.recv[..n], cells)
                        .map_err(|e| DistError::Accumulate(e.offset(r.start)))
                }),
            Reduction::ScatterGather => {
                let mine = clip(layout.owned_elements(rank));
                sc.lens.clear();
                sc.lens
                    .extend((0..ranks).map(|q| clip(layout.owned_elements(q)).len() * lanes));
                let m = mine.len() * lanes;
                net.sum_scatter_i64(&sc.send[..n], &sc.lens, sized(&mut sc.recv, m))
                    .map_err(DistError::from)
                    .and_then(|()| {
                        let out = &mut cells[mine.start - r.start..mine.end - r.start];
                        A::decode(wire, &sc.recv[..m], out)
                            .map_err(|e| DistError::Accumulate(e.offset(mine.start)))
                    })
            }
        };
        err = r2.err();
        comm_s += t0.elapsed().as_secs_f64();
    };
    h.compute_partial_overlapped(step, leaves, settings.overlap_bucket, &mut piece)?;
    match err {
        Some(e) => Err(e),
        None => Ok((8 * lanes_max, comm_s)),
    }
}

/// The integer-wire accumulators cross ranks the same way.
macro_rules! int_cross_rank {
    ($($acc:ty),*) => {$(
        impl CrossRank for $acc {
            fn compute_overlapped<K: Kernels<f32> + Send + 'static>(
                h: &mut Hierarchy<Self, K>,
                net: &mut dyn Collectives,
                layout: &RankLayout,
                settings: DistSettings,
                step: u64,
                sc: &mut Scratch,
            ) -> Result<(usize, f64), DistError> {
                int_overlapped(h, net, layout, settings, step, sc)
            }

            fn cross_reduce<K: Kernels<f32> + Send + 'static>(
                h: &mut Hierarchy<Self, K>,
                net: &mut dyn Collectives,
                layout: &RankLayout,
                settings: DistSettings,
                scratch: &mut Scratch,
            ) -> Result<usize, DistError> {
                int_cross_reduce(h, net, layout, settings.reduction, scratch)
            }
        }
    )*};
}

int_cross_rank!(ExactAcc, FixedAcc);

impl CrossRank for F32Acc {
    /// Rounding depends on the order of additions, so the value of every
    /// split-level subtree is computed apart (`compute_partial` of one
    /// subtree is exactly that sphere's canonical value) and laid out in the
    /// all-to-all send buffer, owner by owner.
    fn compute<K: Kernels<f32> + Send + 'static>(
        h: &mut Hierarchy<Self, K>,
        layout: &RankLayout,
        rank: usize,
        step: u64,
        settings: DistSettings,
        sc: &mut Scratch,
    ) -> Result<(), DistError> {
        let ranks = layout.ranks();
        if ranks == 1 || settings.f32_order == F32Order::Rank {
            h.compute_partial(step, layout.leaves(rank))?;
            return Ok(());
        }
        let (slot, per) = (layout.max_block(), max_subtrees(layout));
        let send = sized(&mut sc.send_f32, ranks * per * slot);
        for (i, k) in layout.subtrees(rank).enumerate() {
            if layout.subtree_units(k).is_empty() {
                continue;
            }
            h.compute_partial(step, layout.subtree_leaves(k))?;
            for q in 0..ranks {
                let e = layout.owned_elements(q);
                let at = (q * per + i) * slot;
                send[at..at + e.len()].copy_from_slice(&h.gradients()[e]);
            }
        }
        Ok(())
    }

    /// Each owner receives every split-level subtree's value of its block
    /// (all-to-all) and folds them as the single-process tree does: each
    /// sphere in child order over its non-empty children, starting from the
    /// first, level by level up to the root. So the bits are those of one
    /// process for every rank count (and thread count, and reduction).
    fn cross_reduce<K: Kernels<f32> + Send + 'static>(
        h: &mut Hierarchy<Self, K>,
        net: &mut dyn Collectives,
        layout: &RankLayout,
        settings: DistSettings,
        sc: &mut Scratch,
    ) -> Result<usize, DistError> {
        if net.size() == 1 {
            return Ok(0);
        }
        match settings.f32_order {
            F32Order::Canonical => canonical_f32_reduce(h, net, layout, sc)?,
            F32Order::Rank => rank_order_f32_reduce(h, net, layout, sc)?,
        }
        if settings.reduction == Reduction::AllReduce {
            let mine = layout.owned_elements(net.rank());
            let own = sized(&mut sc.send_f32, mine.len());
            own.copy_from_slice(&h.gradients()[mine.clone()]);
            net.all_gather_f32(
                &sc.send_f32[..mine.len()],
                layout.element_lens(),
                h.gradients_mut(),
            )?;
        }
        Ok(4)
    }
}

/// [`F32Order::Rank`]: each owner receives every rank's partial sum of its
/// block (all-to-all) and adds them in rank order, skipping ranks without
/// units (as the canonical fold skips empty children).
fn rank_order_f32_reduce<K: Kernels<f32> + Send + 'static>(
    h: &mut Hierarchy<F32Acc, K>,
    net: &mut dyn Collectives,
    layout: &RankLayout,
    sc: &mut Scratch,
) -> Result<(), DistError> {
    let ranks = net.size();
    let slot = layout.max_block();
    let send = sized(&mut sc.send_f32, slot * ranks);
    for r in 0..ranks {
        let e = layout.owned_elements(r);
        let s = &mut send[r * slot..(r + 1) * slot];
        s[..e.len()].copy_from_slice(&h.gradients()[e.clone()]);
        s[e.len()..].fill(0.0);
    }
    net.all_to_all_f32(
        &sc.send_f32[..slot * ranks],
        sized(&mut sc.recv_f32, slot * ranks),
    )?;
    let mine = layout.owned_elements(net.rank());
    let out = &mut h.gradients_mut()[mine.clone()];
    let mut first = true;
    for q in (0..ranks).filter(|&q| !layout.units(q).is_empty()) {
        let part = &sc.recv_f32[q * slot..q * slot + mine.len()];
        if first {
            out.copy_from_slice(part);
            first = false;
        } else {
            F32Acc
                .merge(out, part)
                .map_err(|e| DistError::Accumulate(e.offset(mine.start)))?;
        }
    }
    Ok(())
}

/// [`F32Order::Canonical`] (after [`CrossRank::compute`] laid out every
/// subtree's value): see [`F32Acc`]'s `cross_reduce`.
fn canonical_f32_reduce<K: Kernels<f32> + Send + 'static>(
    h: &mut Hierarchy<F32Acc, K>,
    net: &mut dyn Collectives,
    layout: &RankLayout,
    sc: &mut Scratch,
) -> Result<(), DistError> {
    let ranks = net.size();
    let (slot, per) = (layout.max_block(), max_subtrees(layout));
    let n = ranks * per * slot;
    net.all_to_all_f32(&sc.send_f32[..n], sized(&mut sc.recv_f32, n))?;
    let mine = layout.owned_elements(net.rank());
    // Fold level by level, in place in the receive buffer: `vals[k]` is
    // where sphere k's value of this level lives (None: empty).
    let vals = &mut sc.folds;
    vals.clear();
    for q in 0..ranks {
        for (i, k) in layout.subtrees(q).enumerate() {
            debug_assert_eq!(vals.len(), k);
            let nonempty = !layout.subtree_units(k).is_empty();
            vals.push(nonempty.then_some((q * per + i) * slot));
        }
    }
    let b = layout.branching();
    let recv = &mut sc.recv_f32[..n];
    let m = mine.len();
    while vals.len() > 1 {
        let groups = vals.len().div_ceil(b);
        for g in 0..groups {
            let group = g * b..((g + 1) * b).min(vals.len());
            let mut present = vals[group].iter().flatten().copied();
            let first = present.next();
            if let Some(dst) = first {
                for src in present {
                    // Disjoint slots of one buffer: dst += src.
                    let (d, s) = two_slots(recv, dst, src, m);
                    F32Acc
                        .merge(d, s)
                        .map_err(|e| DistError::Accumulate(e.offset(mine.start)))?;
                }
            }
            // The parent's value; group g + 1 starts past index g.
            vals[g] = first;
        }
        vals.truncate(groups);
    }
    let out = &mut h.gradients_mut()[mine.clone()];
    match vals.first().copied().flatten() {
        Some(at) => out.copy_from_slice(&recv[at..at + m]),
        None => out.fill(0.0),
    }
    Ok(())
}

/// The most split-level subtrees any rank executes.
fn max_subtrees(layout: &RankLayout) -> usize {
    (0..layout.ranks())
        .map(|r| layout.subtrees(r).len())
        .max()
        .unwrap_or(0)
}

/// `(&mut buf[dst..dst + len], &buf[src..src + len])` for disjoint ranges.
fn two_slots(buf: &mut [f32], dst: usize, src: usize, len: usize) -> (&mut [f32], &[f32]) {
    if dst < src {
        let (a, b) = buf.split_at_mut(src);
        (&mut a[dst..dst + len], &b[..len])
    } else {
        let (a, b) = buf.split_at_mut(dst);
        (&mut b[..len], &a[src..src + len])
    }
}

#[cfg(feature = "bigfloat")]
impl CrossRank for cllm_core::accumulate::BigFloatAcc {
    /// Arbitrary-precision cells have no fixed-width wire form (yet): one
    /// rank only.
    fn cross_reduce<K: Kernels<f32> + Send + 'static>(
        _h: &mut Hierarchy<Self, K>,
        net: &mut dyn Collectives,
        _layout: &RankLayout,
        _settings: DistSettings,
        _scratch: &mut Scratch,
    ) -> Result<usize, DistError> {
        match net.size() {
            1 => Ok(0),
            _ => Err(DistError::Unsupported("bigfloat")),
        }
    }
}

/// What one distributed step measured (this rank's view).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DistStepStats {
    /// Mean loss over all units of the step (summed in unit order: the same
    /// figure as a single process).
    pub loss: f32,
    /// Global norm of the mean gradient before clipping.
    pub grad_norm: f32,
    /// Seconds computing this rank's units.
    pub compute_s: f64,
    /// Seconds waiting for the slowest rank (only measured apart with
    /// [`DistSettings::sync_timing`]; otherwise it is part of `reduce_s`).
    pub wait_s: f64,
    /// Seconds reducing gradients across ranks (encode, collective, decode).
    /// With [`DistSettings::overlap`] most of it runs inside `compute_s`,
    /// while the workers compute.
    pub reduce_s: f64,
    /// Seconds finishing, updating and exchanging parameters.
    pub update_s: f64,
    /// Bytes this rank's collectives sent.
    pub bytes: u64,
    /// Bytes per gradient element in the reduction (8 × integer lanes, or 4
    /// for f32; 0 on one rank, where nothing crosses).
    pub wire_bytes: usize,
}

/// One optimizer step across all ranks. Every rank must call it with the
/// same arguments. After it returns, every rank holds the same parameters;
/// with [`Reduction::ScatterGather`] a rank's optimizer state is current only
/// on its own segments ([`gather_optimizer_state`] assembles it).
pub fn train_step<A: CrossRank + Send + 'static, K: Kernels<f32> + Send + 'static>(
    h: &mut Hierarchy<A, K>,
    net: &mut dyn Collectives,
    layout: &RankLayout,
    settings: DistSettings,
    step: u64,
    update: UpdateSettings,
    sc: &mut Scratch,
) -> Result<DistStepStats, DistError>
where
    A::Cell: 'static,
{
    let (rank, ranks) = (net.rank(), net.size());
    let bytes0 = net.bytes_sent();
    let mode = settings.reduction;
    let t0 = Instant::now();
    let (wire_bytes, overlapped_s) = if settings.overlap {
        A::compute_overlapped(h, net, layout, settings, step, sc)?
    } else {
        A::compute(h, layout, rank, step, settings, sc)?;
        (0, 0.0)
    };
    let tc = Instant::now();
    if settings.sync_timing && !settings.overlap {
        net.barrier();
    }
    let t1 = Instant::now();

    let wire_bytes = match settings.overlap {
        true => wire_bytes,
        false => A::cross_reduce(h, net, layout, settings, sc)?,
    };
    // Unit losses, in unit order, for the same mean as one process.
    let units = layout.units(rank);
    let n_units = layout.units(ranks - 1).end;
    let own = &h.unit_losses()[units.clone()];
    net.all_gather_f32(own, layout.unit_lens(), sized(&mut sc.losses, n_units))?;
    let loss =
        (sc.losses[..n_units].iter().map(|&x| x as f64).sum::<f64>() / n_units as f64) as f32;
    let t2 = Instant::now();

    let segs = match mode {
        Reduction::ScatterGather => layout.owned_segments(rank),
        Reduction::AllReduce => 0..layout.segments().count(),
    };
    let local = h.finish_gradients(segs.clone())?;
    let norms = sized(&mut sc.norms, layout.segments().count());
    let norm = match mode {
        Reduction::AllReduce => local.iter().sum::<f64>().sqrt(),
        Reduction::ScatterGather => {
            net.all_gather_f64(local, layout.segment_lens(), norms)?;
            // Summed in segment order, as the single-process executor does.
            norms.iter().sum::<f64>().sqrt()
        }
    };
    h.apply_update(segs, norm, update)?;
    if mode == Reduction::ScatterGather {
        let mine = layout.owned_elements(rank);
        let own = sized(&mut sc.params, mine.len());
        own.copy_from_slice(&h.params()[mine.clone()]);
        net.all_gather_f32(
            &sc.params[..mine.len()],
            layout.element_lens(),
            h.params_mut(),
        )?;
    }
    let t3 = Instant::now();
    Ok(DistStepStats {
        loss,
        grad_norm: norm as f32,
        compute_s: (tc - t0).as_secs_f64(),
        wait_s: (t1 - tc).as_secs_f64(),
        reduce_s: (t2 - t1).as_secs_f64() + overlapped_s,
        update_s: (t3 - t2).as_secs_f64(),
        bytes: net.bytes_sent() - bytes0,
        wire_bytes,
    })
}

/// AdamW's first and second moments over the whole parameter vector.
pub type Moments = (Vec<f32>, Vec<f32>);

/// Assemble the full optimizer state (`m`, `v`) on rank 0 from the segment
/// owners (after [`Reduction::ScatterGather`] steps). Collective; returns
/// `Some` on rank 0 only.
pub fn gather_optimizer_state<A, K>(
    h: &Hierarchy<A, K>,
    net: &mut dyn Collectives,
    layout: &RankLayout,
    mode: Reduction,
) -> Result<Option<Moments>, DistError>
where
    A: Accumulator + Send + 'static,
    A::Cell: 'static,
    K: Kernels<f32> + Send + 'static,
{
    let (m, v) = h.optimizer_state();
    let (shard, p) = (h.optimizer_shard(), h.params().len());
    if mode == Reduction::AllReduce || net.size() == 1 {
        // Replicated: rank 0's copy is complete.
        return Ok((net.rank() == 0).then(|| (m.to_vec(), v.to_vec())));
    }
    let mine = layout.owned_elements(net.rank());
    if mine.start < shard.start || mine.end > shard.end {
        return Err(DistError::Exec(ExecError::Config(format!(
            "rank {} owns elements {mine:?} but holds optimizer state for {shard:?}",
            net.rank()
        ))));
    }
    let local = mine.start - shard.start..mine.end - shard.start;
    let (mut gm, mut gv) = if net.rank() == 0 {
        (vec![0.0f32; p], vec![0.0f32; p])
    } else {
        (Vec::new(), Vec::new())
    };
    net.gather_root_f32(&m[local.clone()], layout.element_lens(), &mut gm)?;
    net.gather_root_f32(&v[local], layout.element_lens(), &mut gv)?;
    Ok((net.rank() == 0).then_some((gm, gv)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threaded wire helpers give the single-threaded results, errors
    /// included (with whole-buffer indices).
    #[test]
    fn parallel_wire_matches_serial() {
        let n = 3 * PAR_MIN_CELLS + 17;
        let mut cells = vec![ExactCell::ZERO; n];
        let xs: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 2001) as f32 * 1e-4 - 0.1)
            .collect();
        ExactAcc.add(&mut cells, &xs).unwrap();
        for threads in [1, 2, 3, 8] {
            let need = par_need::<ExactAcc>(&cells, threads);
            assert_eq!(need, ExactWindow::need(&cells));
            let w = ExactWindow::agree(need);
            let mut serial = vec![0i64; n * w.lanes()];
            w.encode(&cells, &mut serial);
            let mut lanes = vec![0i64; n * w.lanes()];
            par_encode::<ExactAcc>(w, &cells, &mut lanes, threads);
            assert_eq!(lanes, serial);
            let mut out = vec![ExactCell::ZERO; n];
            par_decode::<ExactAcc>(w, &lanes, &mut out, threads).unwrap();
            assert_eq!(out, cells);
        }
        let fixed: Vec<i64> = (0..n as i64).map(|i| i - 5).collect();
        let mut lanes = vec![0i64; 2 * n];
        par_encode::<FixedAcc>(FixedWire::Split, &fixed, &mut lanes, 3);
        lanes[2 * (n - 2) + 1] = i64::MAX; // total out of i64 at n - 2
        let mut out = vec![0i64; n];
        let e = par_decode::<FixedAcc>(FixedWire::Split, &lanes, &mut out, 3).unwrap_err();
        assert_eq!(e.index, n - 2);
    }
}
